//! DNS-1123 names, Kubernetes label keys/values, and the instance naming shared by every backend.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Longest DNS-1123 label (Kubernetes object names such as pods, services, network policies).
pub const DNS1123_LABEL_MAX: usize = 63;
/// Prefix of every instance name.
pub const INSTANCE_PREFIX: &str = "mcp-";
/// Length of the random suffix of an instance name.
pub const INSTANCE_SUFFIX_LEN: usize = 10;

/// Checks that `s` is a DNS-1123 label: 1-63 characters of `[a-z0-9-]`, starting and ending
/// with an alphanumeric character.
///
/// # Errors
/// Returns a human-readable reason.
pub fn check_dns1123_label(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be at most {DNS1123_LABEL_MAX} characters (got {})",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(format!(
            "{s:?} contains {c:?}: only lowercase letters, digits and '-' are allowed (DNS-1123 label)"
        ));
    }
    if s.starts_with('-') || s.ends_with('-') {
        return Err(format!(
            "{s:?} must start and end with a lowercase letter or digit (DNS-1123 label)"
        ));
    }
    Ok(())
}

/// Checks a DNS-1123 subdomain (dot-separated labels, at most 253 characters), as used by label
/// key prefixes and most Kubernetes object names.
///
/// # Errors
/// Returns a human-readable reason.
pub fn check_dns1123_subdomain(s: &str) -> Result<(), String> {
    if s.len() > 253 {
        return Err(format!("must be at most 253 characters (got {})", s.len()));
    }
    let rule = "lowercase letters, digits, '-' and '.' (DNS-1123 subdomain, e.g. github-token)";
    if s.is_empty() {
        return Err(format!("must not be empty: use {rule}"));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.')))
    {
        return Err(format!("{s:?} contains {c:?}: only {rule} are allowed"));
    }
    if s.starts_with('.') || s.ends_with('.') || s.contains("..") {
        return Err(format!(
            "{s:?} must not start or end with '.' or contain \"..\" (DNS-1123 subdomain)"
        ));
    }
    s.split('.')
        .try_for_each(check_dns1123_label)
        .map_err(|e| format!("{s:?} is not a DNS-1123 subdomain: {e}"))
}

/// Checks a Kubernetes label key: an optional DNS-1123 subdomain prefix and `/`, then a name of
/// at most 63 characters of `[A-Za-z0-9._-]` that starts and ends alphanumeric.
///
/// # Errors
/// Returns a human-readable reason.
pub fn check_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    if let Some(p) = prefix {
        check_dns1123_subdomain(p).map_err(|e| format!("label key {key:?}: prefix {e}"))?;
    }
    if name.is_empty() {
        return Err(format!("label key {key:?}: name part must not be empty"));
    }
    check_label_name_chars(name).map_err(|e| format!("label key {key:?}: {e}"))
}

/// Checks a Kubernetes label value: empty, or at most 63 characters of `[A-Za-z0-9._-]` that
/// start and end alphanumeric.
///
/// # Errors
/// Returns a human-readable reason.
pub fn check_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    check_label_name_chars(value).map_err(|e| format!("label value {value:?}: {e}"))
}

fn check_label_name_chars(s: &str) -> Result<(), String> {
    if s.len() > DNS1123_LABEL_MAX {
        return Err(format!(
            "must be at most {DNS1123_LABEL_MAX} characters (got {})",
            s.len()
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(format!(
            "contains {c:?}: only letters, digits, '-', '_' and '.' are allowed"
        ));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(s.chars().next()) || !edge_ok(s.chars().last()) {
        return Err("must start and end with a letter or digit".into());
    }
    Ok(())
}

/// Checks every key and value of a label map, naming the offending entry.
///
/// # Errors
/// Returns a human-readable reason.
pub fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    labels.iter().try_for_each(|(k, v)| {
        check_label_key(k)?;
        check_label_value(v)
    })
}

/// Turns arbitrary text into a DNS-1123 label of at most `max_len` characters: lowercased,
/// other characters replaced by '-', trimmed of '-' at both ends; a valid label short enough
/// comes back unchanged. Returns `"x"`
/// when nothing usable remains, so the result is always a valid label.
pub fn sanitize_dns1123_label(raw: &str, max_len: usize) -> String {
    let max_len = max_len.clamp(1, DNS1123_LABEL_MAX);
    let mut out = String::with_capacity(raw.len().min(max_len));
    for c in raw.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() {
            out.push('-');
        }
        if out.len() >= max_len {
            break;
        }
    }
    out.truncate(max_len);
    let trimmed = out.trim_matches('-');
    if trimmed.is_empty() {
        "x".to_owned()
    } else {
        trimmed.to_owned()
    }
}

/// Builds a DNS-1123 label `base` + `-` + `suffix`, shortening `base` so the whole fits in 63
/// characters. `suffix` must itself be a label (it is sanitised if not).
pub fn label_with_suffix(base: &str, suffix: &str) -> String {
    let suffix = sanitize_dns1123_label(suffix, DNS1123_LABEL_MAX - 2);
    let base = sanitize_dns1123_label(base, DNS1123_LABEL_MAX - 1 - suffix.len());
    format!("{base}-{suffix}")
}

/// A fresh instance name: `mcp-<server>-<suffix>`.
///
/// Always a DNS-1123 label whatever the server name (long names are shortened, odd characters
/// replaced). The 10-character suffix carries 50 random bits mixed with a process-wide counter,
/// so names do not collide across rapid or concurrent starts, in one process or many.
pub fn new_instance_name(server: &str) -> String {
    let budget = DNS1123_LABEL_MAX - INSTANCE_PREFIX.len() - 1 - INSTANCE_SUFFIX_LEN;
    let server = sanitize_dns1123_label(server, budget);
    format!("{INSTANCE_PREFIX}{server}-{}", random_suffix())
}

/// Prefix of every persistent volume name (the same as instances': `mcp-<server>-<volume>`).
pub const VOLUME_PREFIX: &str = "mcp-";
/// Length of the hash suffix that replaces the end of a persistent volume name too long to be
/// a label.
pub const VOLUME_HASH_LEN: usize = 8;

/// The name of the persistent volume `volume` of server `server` on every backend (Docker
/// volume, Kubernetes PersistentVolumeClaim, process backend directory): `mcp-<server>-<volume>`.
///
/// Always a DNS-1123 label of at most 63 characters. When the plain name is not a valid label
/// (too long, or odd characters in a name that skipped validation) it is shortened and ends with
/// `-` and [`VOLUME_HASH_LEN`] hex digits of a stable hash of the server and volume names, so
/// every orchestrator, in any process and any release, derives the same name, and two long
/// names sharing a prefix still differ.
pub fn persistent_volume_name(server: &str, volume: &str) -> String {
    let plain = format!("{VOLUME_PREFIX}{server}-{volume}");
    if check_dns1123_label(&plain).is_ok() {
        return plain;
    }
    // The separator cannot occur in either name, so ("a-b", "c") and ("a", "b-c") hash apart.
    let hash = format!(
        "{:016x}",
        stable_hash(format!("{server}/{volume}").as_bytes())
    );
    label_with_suffix(&plain, &hash[..VOLUME_HASH_LEN])
}

/// 64-bit FNV-1a: tiny, and stable across Rust releases and processes (unlike
/// `DefaultHasher`), for names that many orchestrators must derive identically.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

/// Checks a persistent volume name given to a listing or removal: a DNS-1123 label starting
/// with [`VOLUME_PREFIX`] (every name [`persistent_volume_name`] makes).
///
/// # Errors
/// Returns a human-readable reason.
pub fn check_persistent_volume_name(name: &str) -> Result<(), String> {
    check_dns1123_label(name)?;
    if !name.starts_with(VOLUME_PREFIX) {
        return Err(format!(
            "{name:?} is not a persistent volume name: they are `{VOLUME_PREFIX}<server>-<volume>`"
        ));
    }
    Ok(())
}

/// Base-32 alphabet without look-alikes (no i, l, o, u), all valid in DNS labels.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

fn random_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    // uuid v4 draws from the OS RNG; the counter makes two draws in one process differ even if
    // the RNG repeated, and it sits in the low bits so consecutive names differ at the end.
    let random = uuid::Uuid::new_v4().as_u64_pair().0;
    let mixed = random ^ COUNTER.fetch_add(1, Ordering::Relaxed);
    (0..INSTANCE_SUFFIX_LEN)
        .map(|i| char::from(ALPHABET[usize::try_from((mixed >> (5 * i)) & 31).unwrap_or(0)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rstest::rstest;
    use std::collections::HashSet;

    #[rstest]
    #[case("time")]
    #[case("a")]
    #[case("mcp-server-1")]
    #[case(&"a".repeat(63))]
    fn valid_labels(#[case] s: &str) {
        assert_eq!(check_dns1123_label(s), Ok(()));
    }

    #[rstest]
    #[case("", "empty")]
    #[case("Time", "'T'")]
    #[case("-a", "start and end")]
    #[case("a-", "start and end")]
    #[case("a_b", "'_'")]
    #[case(&"a".repeat(64), "at most 63")]
    fn invalid_labels(#[case] s: &str, #[case] why: &str) {
        let err = check_dns1123_label(s).unwrap_err();
        assert!(err.contains(why), "{err}");
    }

    #[rstest]
    #[case("mcpctl.io/server", true)]
    #[case("app.kubernetes.io/name", true)]
    #[case("tier", true)]
    #[case("My_Key.v1", true)]
    #[case("/x", false)]
    #[case("example.com/", false)]
    #[case("Example.com/x", false)]
    #[case("a b", false)]
    fn label_keys(#[case] k: &str, #[case] ok: bool) {
        assert_eq!(
            check_label_key(k).is_ok(),
            ok,
            "{k}: {:?}",
            check_label_key(k)
        );
    }

    #[rstest]
    #[case("", true)]
    #[case("true", true)]
    #[case("v1.2_3-x", true)]
    #[case("-x", false)]
    #[case("x/y", false)]
    fn label_values(#[case] v: &str, #[case] ok: bool) {
        assert_eq!(check_label_value(v).is_ok(), ok);
    }

    /// Each refusal names the rule the name breaks, never "empty" for a name that is not.
    #[rstest]
    #[case("../gh", "contains '/'")]
    #[case(".gh", "must not start or end with '.'")]
    #[case("a..b", "contain \"..\"")]
    #[case("Gh", "contains 'G'")]
    #[case("", "must not be empty")]
    fn subdomain_refusals_name_the_rule(#[case] s: &str, #[case] why: &str) {
        let err = check_dns1123_subdomain(s).unwrap_err();
        assert!(err.contains(why), "{s:?}: {err}");
        assert!(
            s.is_empty() || !err.contains("empty"),
            "{s:?} is not empty: {err}"
        );
        assert!(check_dns1123_subdomain("github-token.v1").is_ok());
    }

    #[test]
    fn instance_names_concurrent_unique() {
        let names: Vec<String> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        (0..2000)
                            .map(|_| new_instance_name("srv"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        let unique: HashSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
    }

    #[test]
    fn label_with_suffix_fits() {
        let l = label_with_suffix(&"x".repeat(200), "netpol");
        assert!(l.ends_with("-netpol") && l.len() <= 63);
        check_dns1123_label(&l).unwrap();
    }

    #[test]
    fn persistent_volume_names() {
        assert_eq!(persistent_volume_name("cache", "data"), "mcp-cache-data");
        let long = persistent_volume_name(&"s".repeat(60), "data");
        assert!(long.len() <= 63 && long.starts_with("mcp-sss"), "{long}");
        check_dns1123_label(&long).unwrap();
        assert_eq!(
            long,
            persistent_volume_name(&"s".repeat(60), "data"),
            "stable"
        );
        assert_ne!(long, persistent_volume_name(&"s".repeat(60), "datb"));
        assert_ne!(
            persistent_volume_name(&"a".repeat(40), &"b-c".repeat(10)),
            persistent_volume_name(
                &format!("{}-b", "a".repeat(40)),
                &format!("c{}", "b-c".repeat(9))
            ),
        );
        assert_eq!(stable_hash(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert!(check_persistent_volume_name("mcp-cache-data").is_ok());
        let err = check_persistent_volume_name("cache-data").unwrap_err();
        assert!(err.contains("mcp-<server>-<volume>"), "{err}");
        assert!(check_persistent_volume_name("mcp-Cache").is_err());
    }

    proptest! {
        #[test]
        fn instance_name_always_valid(server in "\\PC{0,300}") {
            let name = new_instance_name(&server);
            prop_assert!(check_dns1123_label(&name).is_ok(), "{name}");
            prop_assert!(name.starts_with(INSTANCE_PREFIX));
        }

        #[test]
        fn instance_name_keeps_valid_short_servers(server in "[a-z][a-z0-9-]{0,30}[a-z0-9]") {
            let name = new_instance_name(&server);
            let expected_prefix = format!("mcp-{server}-");
            prop_assert!(name.starts_with(&expected_prefix));
        }

        #[test]
        fn persistent_volume_name_always_valid(server in "\\PC{0,100}", volume in "[a-z0-9-]{0,80}") {
            let name = persistent_volume_name(&server, &volume);
            prop_assert!(check_persistent_volume_name(&name).is_ok(), "{name}");
        }

        #[test]
        fn sanitized_is_valid(raw in "\\PC{0,200}", max in 1usize..80) {
            let s = sanitize_dns1123_label(&raw, max);
            prop_assert!(check_dns1123_label(&s).is_ok(), "{s}");
            prop_assert!(s.len() <= max.min(63));
        }

        #[test]
        fn validator_agrees_with_grammar(s in "[a-z0-9-]{1,70}") {
            let grammar = s.len() <= 63 && !s.starts_with('-') && !s.ends_with('-');
            prop_assert_eq!(check_dns1123_label(&s).is_ok(), grammar);
        }
    }
}
