//! Names of the objects an instance owns, all derived from the instance id.
//!
//! Every name is a DNS-1123 label (at most 63 characters) whatever the inputs. When
//! `<base>-<suffix>` would be too long, the base is shortened with
//! [`mcp_types::names::label_with_suffix`] and a hash of the full name is kept in front of the
//! suffix, so two long instance ids that share a prefix still get different names.

use mcp_types::labels::INSTANCE;
use mcp_types::names::{
    DNS1123_LABEL_MAX, check_dns1123_label, label_with_suffix, sanitize_dns1123_label,
};

/// Longest part of a suffix kept when a name has to be shortened.
const SHORT_SUFFIX_MAX: usize = 20;

/// Name of the instance's NetworkPolicy: `<instance>-np`.
pub fn network_policy_name(instance: &str) -> String {
    companion_name(instance, "np")
}

/// Name of the instance's Service: `<instance>-svc`.
///
/// Service names must also start with a letter (DNS-1035); an id starting with a digit gets a
/// `svc-` prefix.
pub fn service_name(instance: &str) -> String {
    if instance.starts_with(|c: char| c.is_ascii_lowercase()) {
        companion_name(instance, "svc")
    } else {
        companion_name(&format!("svc-{instance}"), "svc")
    }
}

/// Name of the PersistentVolumeClaim for the spec volume `volume`: `<instance>-<volume>`.
pub fn pvc_name(instance: &str, volume: &str) -> String {
    companion_name(instance, volume)
}

/// Name of the pod volume that mounts the spec volume `volume`: `pvc-<volume>`.
///
/// The prefix keeps user volumes apart from the scratch volume [`crate::TMP_VOLUME`].
pub fn pod_volume_name(volume: &str) -> String {
    companion_name("pvc", volume)
}

/// Name of the pod volume holding secret file `index` of the spec: `secret-file-<index>`
/// (apart from the `pvc-` volumes and the scratch volume).
pub fn secret_volume_name(index: usize) -> String {
    format!("secret-file-{index}")
}

/// The label selector (`mcpctl.io/instance=<instance>`) matching every object of an instance.
pub fn instance_selector(instance: &str) -> String {
    format!("{INSTANCE}={instance}")
}

/// `<base>-<suffix>` when that is a valid label, otherwise a shortened label that keeps the
/// start of `base`, a hash of the full name and the start of `suffix`.
fn companion_name(base: &str, suffix: &str) -> String {
    let full = format!("{base}-{suffix}");
    if full.len() <= DNS1123_LABEL_MAX && check_dns1123_label(&full).is_ok() {
        return full;
    }
    let hash = format!("{:016x}", fnv1a(full.as_bytes()));
    let suffix = sanitize_dns1123_label(suffix, SHORT_SUFFIX_MAX);
    label_with_suffix(base, &format!("{}-{suffix}", &hash[..8]))
}

/// 64-bit FNV-1a: tiny, and stable across Rust releases (unlike `DefaultHasher`), which keeps
/// generated names, snapshots and example manifests identical everywhere.
fn fnv1a(bytes: &[u8]) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u64::from(*b)).wrapping_mul(PRIME))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_names_are_plain() {
        assert_eq!(network_policy_name("mcp-time-abc"), "mcp-time-abc-np");
        assert_eq!(service_name("mcp-time-abc"), "mcp-time-abc-svc");
        assert_eq!(pvc_name("mcp-time-abc", "data"), "mcp-time-abc-data");
        assert_eq!(pod_volume_name("data"), "pvc-data");
        assert_eq!(secret_volume_name(3), "secret-file-3");
        assert_eq!(service_name("1abc"), "svc-1abc-svc");
        assert_eq!(instance_selector("mcp-x"), "mcpctl.io/instance=mcp-x");
    }

    #[test]
    fn fnv1a_known_vector() {
        // Published FNV-1a test vector.
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn long_ids_sharing_a_prefix_stay_distinct() {
        let a = format!("mcp-{}-aaaaaaaaaa", "s".repeat(48));
        let b = format!("mcp-{}-bbbbbbbbbb", "s".repeat(48));
        assert_ne!(network_policy_name(&a), network_policy_name(&b));
        let vol = "v".repeat(63);
        assert_ne!(pvc_name(&a, &vol), pvc_name(&b, &vol));
        assert!(network_policy_name(&a).ends_with("-np"));
    }

    proptest! {
        #[test]
        fn names_are_always_labels(instance in "\\PC{0,200}", volume in "[a-z0-9-]{0,80}") {
            for name in [
                network_policy_name(&instance),
                service_name(&instance),
                pvc_name(&instance, &volume),
                pod_volume_name(&volume),
            ] {
                prop_assert!(check_dns1123_label(&name).is_ok(), "{name}");
                prop_assert_ne!(name.as_str(), crate::TMP_VOLUME);
            }
            prop_assert!(service_name(&instance).starts_with(|c: char| c.is_ascii_lowercase()));
        }
    }
}
