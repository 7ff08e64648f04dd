//! Samples, medians and ratios: what every benchmark reports, and how a ratio is judged
//! against its target (informational: a miss never fails the run).

use std::fmt;
use std::time::Duration;

/// Repeated measurements of one quantity (seconds, bytes, pods/s, ...).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Samples(Vec<f64>);

impl Samples {
    /// No samples yet.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Adds one measurement.
    pub(crate) fn push(&mut self, value: f64) {
        self.0.push(value);
    }

    /// Adds one duration, in seconds.
    pub(crate) fn push_duration(&mut self, d: Duration) {
        self.push(d.as_secs_f64());
    }

    /// The samples in the order they were taken.
    pub(crate) fn values(&self) -> &[f64] {
        &self.0
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    /// The median (the mean of the middle two for an even count); NaN when empty.
    pub(crate) fn median(&self) -> f64 {
        let v = self.sorted();
        match v.len() {
            0 => f64::NAN,
            n if n % 2 == 1 => v[n / 2],
            n => f64::midpoint(v[n / 2 - 1], v[n / 2]),
        }
    }

    /// The smallest sample; NaN when empty.
    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    /// The largest sample; NaN when empty.
    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// What a figure is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Target {
    /// The figure must be at most this.
    AtMost(f64),
    /// The figure must be at least this.
    AtLeast(f64),
    /// Shown for context; no target.
    Info,
}

impl Target {
    /// PASS / MISS for `value` (always `info` without a target; a NaN value misses).
    pub(crate) fn verdict(self, value: f64) -> Verdict {
        match self {
            Self::Info => Verdict::Info,
            Self::AtMost(t) if value <= t => Verdict::Pass,
            Self::AtLeast(t) if value >= t => Verdict::Pass,
            _ => Verdict::Miss,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AtMost(t) => write!(f, "<= {}", number(*t)),
            Self::AtLeast(t) => write!(f, ">= {}", number(*t)),
            Self::Info => f.write_str("-"),
        }
    }
}

/// Whether a figure met its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Met.
    Pass,
    /// Missed (informational).
    Miss,
    /// No target.
    Info,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pass => "PASS",
            Self::Miss => "MISS",
            Self::Info => "info",
        })
    }
}

/// A number with about three significant digits and thousands separators for large values.
pub(crate) fn number(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".to_owned();
    }
    let a = x.abs();
    if a >= 10_000.0 {
        // Whole numbers; the cast is exact for any count this tool produces.
        #[allow(clippy::cast_possible_truncation)]
        let n = x.round() as i64;
        thousands(n)
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Seconds as a readable duration (`812 µs`, `35.2 ms`, `1.84 s`).
pub(crate) fn seconds(s: f64) -> String {
    if !s.is_finite() {
        "n/a".to_owned()
    } else if s < 1e-3 {
        format!("{} µs", number(s * 1e6))
    } else if s < 1.0 {
        format!("{} ms", number(s * 1e3))
    } else {
        format!("{} s", number(s))
    }
}

/// Bytes as MiB (or KiB below one MiB).
pub(crate) fn bytes(b: f64) -> String {
    if b < 1024.0 * 1024.0 {
        format!("{} KiB", number(b / 1024.0))
    } else {
        format!("{} MiB", number(b / 1024.0 / 1024.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(v: &[f64]) -> Samples {
        let mut s = Samples::new();
        for x in v {
            s.push(*x);
        }
        s
    }

    #[test]
    fn median_min_max() {
        let s = samples(&[3.0, 1.0, 2.0]);
        assert!((s.median() - 2.0).abs() < f64::EPSILON);
        assert!((s.min() - 1.0).abs() < f64::EPSILON);
        assert!((s.max() - 3.0).abs() < f64::EPSILON);
        assert!((samples(&[4.0, 1.0, 2.0, 3.0]).median() - 2.5).abs() < f64::EPSILON);
        assert!(Samples::new().median().is_nan());
    }

    #[test]
    fn verdicts() {
        assert_eq!(Target::AtMost(1.1).verdict(1.05), Verdict::Pass);
        assert_eq!(Target::AtMost(1.1).verdict(1.2), Verdict::Miss);
        assert_eq!(Target::AtLeast(0.9).verdict(0.95), Verdict::Pass);
        assert_eq!(Target::AtLeast(0.9).verdict(f64::NAN), Verdict::Miss);
        assert_eq!(Target::Info.verdict(3.0), Verdict::Info);
        assert_eq!(Target::AtMost(1.25).to_string(), "<= 1.25");
    }

    #[test]
    fn formatting() {
        assert_eq!(number(52_345.6), "52,346");
        assert_eq!(number(1_234_567.0), "1,234,567");
        assert_eq!(number(123.4), "123");
        assert_eq!(number(0.456), "0.46");
        assert_eq!(seconds(0.0352), "35.2 ms");
        assert_eq!(seconds(0.000_812), "812 µs");
        assert_eq!(bytes(3.0 * 1024.0 * 1024.0), "3.00 MiB");
    }
}
