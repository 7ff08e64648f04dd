//! Kubernetes-facing configuration: backend config, pod metadata, security context.

use std::collections::BTreeMap;
use std::path::PathBuf;

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::egress::Egress;
use crate::names::{check_dns1123_label, check_label_key, check_labels};
use crate::validation::{FieldError, garde_check};

/// Default namespace of the Kubernetes backend.
pub const DEFAULT_NAMESPACE: &str = "mcpctl";
/// Default uid, gid and fsGroup of every server.
pub const DEFAULT_UID: i64 = 1000;
/// Default image of the per-namespace egress proxy: the tag `mcp_egress_proxy::image` builds
/// locally (`crates/mcp-egress-proxy`); clusters that cannot see local images set their own.
pub const DEFAULT_EGRESS_PROXY_IMAGE: &str = "mcp-egress-proxy:local";

/// How the Kubernetes backend reaches its cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sConfig {
    /// Namespace for every object the backend creates (DNS-1123 label).
    #[serde(default = "default_namespace")]
    #[garde(custom(|v: &str, (): &()| garde_check(check_dns1123_label(v))))]
    pub namespace: String,
    /// Path of a kubeconfig file; the default loading chain when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub kubeconfig: Option<PathBuf>,
    /// Use the pod's service account (in-cluster config).
    #[serde(default)]
    #[garde(skip)]
    pub in_cluster: bool,
    /// Kubeconfig context; the current context when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(length(min = 1)))]
    pub context: Option<String>,
    /// Service account the servers' pods run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(|v: &str, (): &()| garde_check(crate::names::check_dns1123_subdomain(v)))))]
    pub service_account: Option<String>,
    /// Labels and annotations added to every pod.
    #[serde(default, skip_serializing_if = "K8sPodMetadata::is_empty")]
    #[garde(dive)]
    pub pod_metadata: K8sPodMetadata,
    /// Create a NetworkPolicy per instance.
    #[serde(default = "yes")]
    #[garde(skip)]
    pub network_policies: bool,
    /// Egress policy of servers whose spec sets none (`open` by default; `none` or an
    /// allow-list possible).
    #[serde(default)]
    #[garde(custom(|v: &Egress, (): &()| garde_check(check_egress(v))))]
    pub default_egress: Egress,
    /// Image of the egress proxy the backend deploys per namespace for host-name rules.
    #[serde(default = "default_egress_proxy_image")]
    #[garde(custom(|v: &str, (): &()| garde_check(check_image(v))))]
    pub egress_proxy_image: String,
}

fn default_egress_proxy_image() -> String {
    DEFAULT_EGRESS_PROXY_IMAGE.to_owned()
}

/// Every problem of a configured egress policy, in one message naming the rule.
fn check_egress(egress: &Egress) -> Result<(), String> {
    let mut errors = Vec::new();
    egress.check("", &mut errors);
    if errors.is_empty() {
        return Ok(());
    }
    let messages: Vec<String> = errors
        .iter()
        .map(|e| format!("{}: {}", e.path.trim_start_matches('.'), e.message))
        .collect();
    Err(messages.join("; "))
}

fn check_image(image: &str) -> Result<(), String> {
    if image.trim().is_empty() || image.chars().any(char::is_whitespace) {
        Err(format!("{image:?} is not an image reference"))
    } else {
        Ok(())
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

fn yes() -> bool {
    true
}

impl Default for K8sConfig {
    fn default() -> Self {
        Self {
            namespace: default_namespace(),
            kubeconfig: None,
            in_cluster: false,
            context: None,
            service_account: None,
            pod_metadata: K8sPodMetadata::default(),
            network_policies: true,
            default_egress: Egress::Open,
            egress_proxy_image: default_egress_proxy_image(),
        }
    }
}

/// Extra labels and annotations for pods.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sPodMetadata {
    /// Labels (validated as Kubernetes labels).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(|v: &BTreeMap<String, String>, (): &()| garde_check(check_labels(v))))]
    pub labels: BTreeMap<String, String>,
    /// Annotations (keys validated).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(|v: &BTreeMap<String, String>, (): &()| garde_check(v.keys().try_for_each(|k| check_label_key(k)))))]
    pub annotations: BTreeMap<String, String>,
}

impl K8sPodMetadata {
    /// Whether there is nothing to add.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty() && self.annotations.is_empty()
    }
}

/// Security settings; every field defaults to the Kubernetes restricted profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct K8sSecurityContext {
    /// User id (default 1000; 0 is refused because servers run as non-root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(range(min = 0)))]
    pub run_as_user: Option<i64>,
    /// Group id (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(range(min = 0)))]
    pub run_as_group: Option<i64>,
    /// Group owning mounted volumes (default 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(range(min = 0)))]
    pub fs_group: Option<i64>,
    /// Root filesystem read-only (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub read_only_root_filesystem: Option<bool>,
}

impl K8sSecurityContext {
    /// Effective uid.
    pub fn uid(&self) -> i64 {
        self.run_as_user.unwrap_or(DEFAULT_UID)
    }

    /// Effective gid.
    pub fn gid(&self) -> i64 {
        self.run_as_group.unwrap_or(DEFAULT_UID)
    }

    /// Effective fsGroup.
    pub fn fs_group(&self) -> i64 {
        self.fs_group.unwrap_or(DEFAULT_UID)
    }

    /// Effective read-only root filesystem flag.
    pub fn read_only_root(&self) -> bool {
        self.read_only_root_filesystem.unwrap_or(true)
    }

    pub(crate) fn check(&self, prefix: &str, errors: &mut Vec<FieldError>) {
        if self.run_as_user == Some(0) {
            errors.push(FieldError {
                path: format!("{prefix}runAsUser"),
                message: "0 (root) is not allowed: servers run as non-root (restricted profile)"
                    .into(),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::egress::EgressRule;
    use crate::validation::ValidationErrors;

    fn parse(yaml: &str) -> K8sConfig {
        serde_saphyr::from_str(yaml).unwrap()
    }

    #[test]
    fn egress_defaults_to_open_and_the_proxy_image_to_ours() {
        let c = parse("namespace: team-a\n");
        assert_eq!(c.default_egress, Egress::Open);
        assert_eq!(c.egress_proxy_image, DEFAULT_EGRESS_PROXY_IMAGE);
        assert_eq!(
            c,
            K8sConfig {
                namespace: "team-a".into(),
                ..K8sConfig::default()
            }
        );
        let c = parse("defaultEgress: none\negressProxyImage: registry.example/proxy:2\n");
        assert_eq!(c.default_egress, Egress::None);
        assert_eq!(c.egress_proxy_image, "registry.example/proxy:2");
        let c = parse("defaultEgress: [10.0.0.0/8, pypi.org:443]\n");
        assert_eq!(
            c.default_egress,
            Egress::Allow(vec![
                EgressRule::cidr("10.0.0.0/8", []),
                EgressRule::host("pypi.org", [443])
            ])
        );
        assert!(c.validate().is_ok());
    }

    #[test]
    fn a_bad_default_egress_or_image_names_the_field() {
        let c = K8sConfig {
            default_egress: Egress::Allow(vec![EgressRule::cidr("10.0.0.0/33", [])]),
            egress_proxy_image: " ".into(),
            ..K8sConfig::default()
        };
        let errors = ValidationErrors::from(c.validate().unwrap_err());
        let text = errors.to_string();
        assert!(text.contains("defaultEgress: allow[0].cidr:"), "{text}");
        assert!(text.contains("egressProxyImage:"), "{text}");
    }
}
