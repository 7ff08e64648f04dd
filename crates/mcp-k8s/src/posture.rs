//! The egress posture of an instance, read from its pod: what the status reports so a control
//! plane can show how each instance's egress is held.
//!
//! | pod annotations                                  | `enforcedBy`                                       | `metadataBlocked` |
//! |--------------------------------------------------|----------------------------------------------------|-------------------|
//! | `mcpctl.io/egress` + `mcpctl.io/network-policy`  | `NetworkPolicy <name>` (`... and egress proxy` with host rules) | unless a CIDR rule opens a metadata range |
//! | `mcpctl.io/egress` only                          | `not enforced: network policies disabled in config` | false            |
//! | no (readable) `mcpctl.io/egress`                 | no posture (a pod made before postures, or edited)  | -                 |
//!
//! Both annotations are written by the builders when the pod is made, so the posture says what
//! the backend put in place (the NetworkPolicy is created before the pod and owned by it). Whether
//! the policy is enforced is up to the cluster's CNI: one without NetworkPolicy support accepts
//! the object and isolates nothing, which no API call can tell.

use k8s_openapi::api::core::v1::Pod;
use mcp_k8s_resources::NETWORK_POLICY_ANNOTATION;
use mcp_types::{Egress, EgressPosture, labels};

/// What `enforcedBy` says when the configuration turns NetworkPolicies off.
pub(crate) const NOT_ENFORCED: &str = "not enforced: network policies disabled in config";

/// The posture the pod's annotations state, `None` when it states no policy.
pub(crate) fn egress_posture(pod: &Pod) -> Option<EgressPosture> {
    let annotations = pod.metadata.annotations.as_ref()?;
    let policy: Egress = serde_json::from_str(annotations.get(labels::EGRESS)?).ok()?;
    Some(match annotations.get(NETWORK_POLICY_ANNOTATION) {
        Some(name) => EgressPosture {
            enforced_by: if policy.needs_proxy() {
                format!("NetworkPolicy {name} and egress proxy")
            } else {
                format!("NetworkPolicy {name}")
            },
            metadata_blocked: !policy.reaches_metadata(),
            policy,
        },
        None => EgressPosture {
            policy,
            enforced_by: NOT_ENFORCED.to_owned(),
            metadata_blocked: false,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use mcp_types::EgressRule;

    fn pod(annotations: &[(&str, &str)]) -> Pod {
        Pod {
            metadata: ObjectMeta {
                annotations: Some(
                    annotations
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Pod::default()
        }
    }

    #[test]
    fn the_posture_follows_the_annotations() {
        let np = (NETWORK_POLICY_ANNOTATION, "mcp-x-np");
        let open = pod(&[(labels::EGRESS, "\"open\""), np]);
        assert_eq!(
            egress_posture(&open),
            Some(EgressPosture {
                policy: Egress::Open,
                enforced_by: "NetworkPolicy mcp-x-np".into(),
                metadata_blocked: true
            })
        );
        let hosts = pod(&[
            (
                labels::EGRESS,
                r#"{"allow":[{"host":"pypi.org","ports":[443]}]}"#,
            ),
            np,
        ]);
        let p = egress_posture(&hosts).unwrap();
        assert_eq!(
            p.policy,
            Egress::Allow(vec![EgressRule::host("pypi.org", [443])])
        );
        assert_eq!(p.enforced_by, "NetworkPolicy mcp-x-np and egress proxy");
        let metadata = pod(&[
            (
                labels::EGRESS,
                r#"{"allow":[{"cidr":"169.254.169.254/32"}]}"#,
            ),
            np,
        ]);
        assert!(!egress_posture(&metadata).unwrap().metadata_blocked);
        let off = pod(&[(labels::EGRESS, "\"none\"")]);
        assert_eq!(
            egress_posture(&off),
            Some(EgressPosture {
                policy: Egress::None,
                enforced_by: NOT_ENFORCED.into(),
                metadata_blocked: false
            })
        );
        assert_eq!(egress_posture(&pod(&[np])), None);
        assert_eq!(egress_posture(&pod(&[(labels::EGRESS, "{bad")])), None);
        assert_eq!(egress_posture(&Pod::default()), None);
    }
}
