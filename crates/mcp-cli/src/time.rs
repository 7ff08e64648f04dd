//! Durations (`10s`, `1m30s`, `500ms`) and `--since` values (a duration ago, or RFC 3339).

use std::time::Duration;

use jiff::Timestamp;

/// Parses `500ms`, `10s`, `2m`, `1h30m` or a bare number of seconds.
///
/// # Errors
/// A message saying what is accepted.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("{s:?} is not a duration; use e.g. 500ms, 10s, 2m, 1h30m");
    let s = s.trim();
    if s.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => return Err(bad()),
        };
        total = total.saturating_add(part);
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// Parses `--since`: a duration before `now`, or an RFC 3339 time.
///
/// # Errors
/// A message saying what is accepted.
pub(crate) fn parse_since(s: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t);
    }
    let d = parse_duration(s).map_err(|_| {
        format!(
            "--since {s:?}: expected a duration (10m) or an RFC 3339 time (2026-01-02T15:04:05Z)"
        )
    })?;
    let too_far = || {
        format!(
            "--since {s:?}: reaches before the earliest supported time ({}); give a shorter \
             duration or an RFC 3339 time",
            Timestamp::MIN
        )
    };
    let d = jiff::SignedDuration::try_from(d).map_err(|_| too_far())?;
    now.checked_sub(d).map_err(|_| too_far())
}

/// `3s`, `5m`, `2h`, `4d`: a compact age for tables.
pub(crate) fn age(since: Timestamp, now: Timestamp) -> String {
    let secs = now.as_second().saturating_sub(since.as_second()).max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        for bad in ["", "s", "10x", "1.5s", "-1s", "m10"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn since() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("10m", now).unwrap().to_string(),
            "2026-01-01T11:50:00Z"
        );
        assert_eq!(
            parse_since("2025-12-31T00:00:00Z", now)
                .unwrap()
                .to_string(),
            "2025-12-31T00:00:00Z"
        );
        assert!(parse_since("yesterday", now).is_err());
    }

    #[test]
    fn since_too_far_back_names_the_flag_and_the_rule() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        for far in ["999999999999h", "9999999999999999h"] {
            let err = parse_since(far, now).unwrap_err();
            assert!(
                err.starts_with(&format!("--since {far:?}: reaches before the earliest supported time (-009999-01-02T01:59:59Z)")),
                "{err}"
            );
            assert!(!err.contains("parameter") && !err.contains("Unix"), "{err}");
        }
    }

    #[test]
    fn ages() {
        let now: Timestamp = "2026-01-01T12:00:00Z".parse().unwrap();
        assert_eq!(age("2026-01-01T11:59:30Z".parse().unwrap(), now), "30s");
        assert_eq!(age("2026-01-01T11:00:00Z".parse().unwrap(), now), "60m");
        assert_eq!(age("2025-12-25T12:00:00Z".parse().unwrap(), now), "7d");
    }
}
