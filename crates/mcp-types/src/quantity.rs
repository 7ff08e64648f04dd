//! Kubernetes resource quantities ("128Mi", "0.5", "500m") and their conversion to bytes and millicores.
//!
//! The grammar follows `k8s.io/apimachinery/pkg/api/resource`: a decimal number followed by a
//! binary-SI suffix (`Ki`..`Ei`), a decimal-SI suffix (`n`, `u`, `m`, none, `k`, `M`..`E`) or a
//! decimal exponent (`e3`, `E-2`). Conversions round up like `Quantity.Value()` / `MilliValue()`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not a valid quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string is empty.
    #[error("quantity is empty")]
    Empty,
    /// The numeric part is missing or malformed.
    #[error(
        "{input:?} is not a quantity: expected a number such as \"128Mi\", \"0.5\" or \"500m\""
    )]
    BadNumber {
        /// The rejected input.
        input: String,
    },
    /// The suffix is not a Kubernetes unit; the message suggests the closest valid one.
    #[error("{input:?} has unit {suffix:?}, which is not a Kubernetes unit{hint}")]
    BadSuffix {
        /// The rejected input.
        input: String,
        /// The unrecognised suffix.
        suffix: String,
        /// A suggestion, starting with "; " when present.
        hint: String,
    },
    /// Resource quantities must not be negative.
    #[error("{input:?} is negative; resource quantities must be >= 0")]
    Negative {
        /// The rejected input.
        input: String,
    },
    /// The value does not fit in 64 bits once converted.
    #[error("{input:?} is too large")]
    Overflow {
        /// The rejected input.
        input: String,
    },
}

/// A parsed Kubernetes quantity, kept together with its original spelling so that manifests
/// carry exactly what the user wrote.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Quantity {
    original: String,
    /// Decimal digits of the number without the point.
    mantissa: u128,
    /// Number of digits after the decimal point.
    scale: u32,
    unit: Unit,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Unit {
    /// Multiply by 2^n.
    Binary(u32),
    /// Multiply by 10^n (n may be negative).
    Decimal(i32),
}

impl Quantity {
    /// Parses a quantity.
    ///
    /// # Errors
    /// Returns a [`QuantityError`] saying why the text is not a non-negative Kubernetes quantity.
    pub fn parse(input: &str) -> Result<Self, QuantityError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(QuantityError::Empty);
        }
        let bad_number = || QuantityError::BadNumber {
            input: input.to_owned(),
        };
        let (negative, rest) = match s.as_bytes()[0] {
            b'-' => (true, &s[1..]),
            b'+' => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(bad_number());
        }
        let unit = parse_suffix(input, suffix)?;
        if negative {
            return Err(QuantityError::Negative {
                input: input.to_owned(),
            });
        }
        let overflow = || QuantityError::Overflow {
            input: input.to_owned(),
        };
        // Leading zeros add nothing; trailing fraction zeros only add scale.
        let frac_trimmed = frac_part.trim_end_matches('0');
        let mut mantissa: u128 = 0;
        for b in int_part.bytes().chain(frac_trimmed.bytes()) {
            mantissa = mantissa
                .checked_mul(10)
                .and_then(|m| m.checked_add(u128::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        let scale = u32::try_from(frac_trimmed.len()).map_err(|_| overflow())?;
        let q = Self {
            original: s.to_owned(),
            mantissa,
            scale,
            unit,
        };
        // Reject values that cannot be represented in whole units in a u64; finer units
        // (millis, nanos) saturate, since no machine has 2^64 millicores.
        q.scaled(0).ok_or_else(overflow)?;
        Ok(q)
    }

    /// The quantity as written.
    pub fn as_str(&self) -> &str {
        &self.original
    }

    /// The value in base units (bytes for memory), rounded up to a whole unit.
    pub fn to_bytes(&self) -> u64 {
        self.scaled(0).unwrap_or(u64::MAX)
    }

    /// The value in thousandths of a unit (millicores for CPU), rounded up; saturates at `u64::MAX`.
    pub fn to_millis(&self) -> u64 {
        self.scaled(3).unwrap_or(u64::MAX)
    }

    /// The value in billionths of a unit (Docker's `NanoCpus`), rounded up; saturates at `u64::MAX`.
    pub fn to_nanos(&self) -> u64 {
        self.scaled(9).unwrap_or(u64::MAX)
    }

    /// Value * 10^extra, rounded up; `None` when it does not fit in a `u64`.
    fn scaled(&self, extra: u32) -> Option<u64> {
        let (mut num, mut den): (u128, u128) = (self.mantissa, 10u128.checked_pow(self.scale)?);
        num = num.checked_mul(10u128.checked_pow(extra)?)?;
        match self.unit {
            Unit::Binary(p) => num = num.checked_mul(1u128.checked_shl(p)?)?,
            Unit::Decimal(e) if e >= 0 => {
                num = num.checked_mul(10u128.checked_pow(e.unsigned_abs())?)?;
            }
            Unit::Decimal(e) => den = den.checked_mul(10u128.checked_pow(e.unsigned_abs())?)?,
        }
        u64::try_from(num.div_ceil(den)).ok()
    }
}

fn parse_suffix(input: &str, suffix: &str) -> Result<Unit, QuantityError> {
    let unit = match suffix {
        "" => Unit::Decimal(0),
        "Ki" => Unit::Binary(10),
        "Mi" => Unit::Binary(20),
        "Gi" => Unit::Binary(30),
        "Ti" => Unit::Binary(40),
        "Pi" => Unit::Binary(50),
        "Ei" => Unit::Binary(60),
        "n" => Unit::Decimal(-9),
        "u" => Unit::Decimal(-6),
        "m" => Unit::Decimal(-3),
        "k" => Unit::Decimal(3),
        "M" => Unit::Decimal(6),
        "G" => Unit::Decimal(9),
        "T" => Unit::Decimal(12),
        "P" => Unit::Decimal(15),
        "E" => Unit::Decimal(18),
        s if s.starts_with(['e', 'E']) && s.len() > 1 => {
            let exp: i32 = s[1..].parse().map_err(|_| bad_suffix(input, suffix))?;
            if !(-30..=30).contains(&exp) {
                return Err(QuantityError::Overflow {
                    input: input.to_owned(),
                });
            }
            Unit::Decimal(exp)
        }
        _ => return Err(bad_suffix(input, suffix)),
    };
    Ok(unit)
}

fn bad_suffix(input: &str, suffix: &str) -> QuantityError {
    let hint = match suffix {
        "KB" | "kB" | "Kb" | "kb" | "K" => "; use \"k\" (10^3) or \"Ki\" (2^10)".to_owned(),
        s if s.len() == 2 && s.ends_with(['B', 'b']) => {
            let p = &s[..1].to_ascii_uppercase();
            format!("; use \"{p}\" (decimal, 10^n) or \"{p}i\" (binary, 2^n), e.g. 512Mi")
        }
        s if s.len() == 3 && s.ends_with("iB") => {
            format!("; drop the \"B\": \"{}\"", &s[..2])
        }
        "mi" | "gi" | "ki" => format!("; units are case-sensitive: \"{}\"", capitalize(suffix)),
        "g" | "t" => format!(
            "; units are case-sensitive: \"{}\"",
            suffix.to_ascii_uppercase()
        ),
        _ => "; valid units are Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or an exponent like e3"
            .to_owned(),
    };
    QuantityError::BadSuffix {
        input: input.to_owned(),
        suffix: suffix.to_owned(),
        hint,
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
        .unwrap_or_default()
}

impl FromStr for Quantity {
    type Err = QuantityError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

impl fmt::Debug for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Quantity({})", self.original)
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(
            self.to_nanos()
                .cmp(&other.to_nanos())
                .then_with(|| self.original.cmp(&other.original)),
        )
    }
}

impl Serialize for Quantity {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.original)
    }
}

impl<'de> Deserialize<'de> for Quantity {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept YAML numbers (`cpu: 0.5`, `cpu: 2`) as well as strings, like kubectl does.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            U(u64),
            F(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::S(s) => s,
            Raw::U(u) => u.to_string(),
            Raw::F(f) => f.to_string(),
        };
        Quantity::parse(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;

    #[rstest]
    #[case("128Mi", 134_217_728)]
    #[case("1Gi", 1_073_741_824)]
    #[case("1.5Gi", 1_610_612_736)]
    #[case("512M", 512_000_000)]
    #[case("1k", 1000)]
    #[case("1e3", 1000)]
    #[case("100", 100)]
    #[case("0.5", 1)]
    #[case("1500m", 2)]
    #[case("0", 0)]
    fn bytes(#[case] input: &str, #[case] expected: u64) {
        assert_eq!(Quantity::parse(input).unwrap().to_bytes(), expected);
    }

    #[rstest]
    #[case("500m", 500)]
    #[case("0.5", 500)]
    #[case("2", 2000)]
    #[case("100m", 100)]
    #[case("1.25", 1250)]
    #[case("250000u", 250)]
    #[case("1n", 1)]
    fn millis(#[case] input: &str, #[case] expected: u64) {
        assert_eq!(Quantity::parse(input).unwrap().to_millis(), expected);
    }

    #[test]
    fn nanos_for_docker() {
        assert_eq!(Quantity::parse("500m").unwrap().to_nanos(), 500_000_000);
        assert_eq!(Quantity::parse("1.5").unwrap().to_nanos(), 1_500_000_000);
    }

    #[test]
    fn megabytes_rejected_with_reason() {
        let err = Quantity::parse("512MB").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, QuantityError::BadSuffix { .. }));
        assert!(msg.contains("\"MB\" ") || msg.contains("\"MB\","), "{msg}");
        assert!(msg.contains("not a Kubernetes unit"), "{msg}");
        assert!(msg.contains("Mi"), "{msg}");
    }

    #[rstest]
    #[case("")]
    #[case("Mi")]
    #[case("1.2.3")]
    #[case(".")]
    #[case("12 Mi")]
    #[case("1MiB")]
    #[case("5gi")]
    #[case("-1")]
    #[case("99999999999999999999Ei")]
    fn rejected(#[case] input: &str) {
        assert!(
            Quantity::parse(input).is_err(),
            "{input} should be rejected"
        );
    }

    #[test]
    fn serde_accepts_numbers_and_strings() {
        let q: Quantity = serde_json::from_str("0.5").unwrap();
        assert_eq!(q.to_millis(), 500);
        let q: Quantity = serde_json::from_str("\"256Mi\"").unwrap();
        assert_eq!(serde_json::to_string(&q).unwrap(), "\"256Mi\"");
    }

    proptest! {
        #[test]
        fn binary_suffixes_scale_exactly(n in 0u64..1_000_000, p in 0usize..4) {
            let (suffix, shift) = [("Ki", 10), ("Mi", 20), ("Gi", 30), ("Ti", 40)][p];
            let q = Quantity::parse(&format!("{n}{suffix}")).unwrap();
            prop_assert_eq!(q.to_bytes(), n << shift);
        }

        #[test]
        fn millis_round_trip(m in 0u64..10_000_000) {
            let q = Quantity::parse(&format!("{m}m")).unwrap();
            prop_assert_eq!(q.to_millis(), m);
            prop_assert_eq!(q.to_nanos(), m * 1_000_000);
            prop_assert_eq!(q.to_bytes(), m.div_ceil(1000));
        }

        #[test]
        fn decimal_fractions_round_up(int in 0u64..100_000, frac in 0u64..1000) {
            let q = Quantity::parse(&format!("{int}.{frac:03}")).unwrap();
            prop_assert_eq!(q.to_millis(), int * 1000 + frac);
        }

        #[test]
        fn never_panics(s in "\\PC{0,24}") {
            let _ = Quantity::parse(&s);
        }

        #[test]
        fn display_is_input(n in 0u64..u64::from(u32::MAX)) {
            let text = format!("{n}Mi");
            prop_assert_eq!(Quantity::parse(&text).unwrap().to_string(), text);
        }
    }
}
