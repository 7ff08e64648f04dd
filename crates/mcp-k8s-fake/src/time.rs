//! Timestamps in the formats the API uses: `metav1.Time` (seconds) and the kubelet's
//! RFC3339Nano log prefixes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// The current instant.
pub(crate) fn now() -> Timestamp {
    Timestamp::now()
}

/// `2006-01-02T15:04:05Z`, as `metav1.Time` serializes.
pub(crate) fn format_seconds(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// `2006-01-02T15:04:05.000000000Z`, the fixed-width form the kubelet prefixes log lines with.
pub(crate) fn format_nanos(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S.%NZ").to_string()
}

/// Parses an RFC 3339 timestamp such as `sinceTime`.
pub(crate) fn parse(value: &str) -> Option<Timestamp> {
    value.parse().ok()
}

/// `ts` plus whole seconds (saturating).
pub(crate) fn plus_seconds(ts: Timestamp, seconds: i64) -> Timestamp {
    ts.saturating_add(SignedDuration::from_secs(seconds))
        .unwrap_or(ts)
}

/// A `metav1.Time` for `ts`.
pub(crate) fn k8s(ts: Timestamp) -> Time {
    Time(ts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        let ts: Timestamp = "2024-05-06T07:08:09.000120Z".parse().unwrap();
        assert_eq!(format_seconds(ts), "2024-05-06T07:08:09Z");
        assert_eq!(format_nanos(ts), "2024-05-06T07:08:09.000120000Z");
        assert_eq!(
            parse("2024-05-06T07:08:09Z").map(format_seconds).as_deref(),
            Some("2024-05-06T07:08:09Z")
        );
        assert_eq!(format_seconds(plus_seconds(ts, 30)), "2024-05-06T07:08:39Z");
    }
}
