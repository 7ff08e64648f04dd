//! Kubernetes quantities as the fake's admission needs them: parsed to a number (`128Mi`,
//! `500m`, `2e3`) and printed back in the apiserver's canonical form.

/// A quantity's value (`128Mi`, `500m`, `1.5`, `2e3`); unparsable text counts as 0.
pub(crate) fn parse_quantity(text: &str) -> f64 {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let Ok(number) = number.parse::<f64>() else {
        return 0.0;
    };
    let factor = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0_f64.powi(4),
        "Pi" => 1024.0_f64.powi(5),
        "Ei" => 1024.0_f64.powi(6),
        exp if exp.starts_with(['e', 'E']) => match exp[1..].parse::<i32>() {
            Ok(e) => 10f64.powi(e),
            Err(_) => return 0.0,
        },
        _ => return 0.0,
    };
    number * factor
}

/// A summed quantity in the canonical form the apiserver prints: CPU in millicores (or whole
/// cores), memory in the largest binary unit that divides it.
pub(crate) fn format_quantity(resource: &str, value: f64) -> String {
    if resource.ends_with("cpu") {
        let millis = (value * 1000.0).round();
        return if millis % 1000.0 == 0.0 {
            format!("{}", millis / 1000.0)
        } else {
            format!("{millis}m")
        };
    }
    let bytes = value.round();
    for (suffix, unit) in [
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Ki", 1024.0),
    ] {
        if bytes >= unit && bytes % unit == 0.0 {
            return format!("{}{suffix}", bytes / unit);
        }
    }
    format!("{bytes}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_and_print() {
        assert!((parse_quantity("128Mi") - 134_217_728.0).abs() < 1.0);
        assert!((parse_quantity("500m") - 0.5).abs() < 1e-9);
        assert!((parse_quantity("2e3") - 2000.0).abs() < 1e-9);
        assert!((parse_quantity("1.5") - 1.5).abs() < 1e-9);
        assert!(parse_quantity("12Zi").abs() < f64::EPSILON);
        assert_eq!(
            format_quantity("limits.memory", 134_217_728.0 * 3.0),
            "384Mi"
        );
        assert_eq!(format_quantity("requests.cpu", 0.25), "250m");
        assert_eq!(format_quantity("cpu", 2.0), "2");
    }
}
