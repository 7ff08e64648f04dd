//! Kubernetes-facing configuration: backend config, pod metadata, security context.

use std::collections::BTreeMap;
use std::path::PathBuf;

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::names::{check_dns1123_label, check_label_key, check_labels};
use crate::validation::{FieldError, garde_check};

/// Default namespace of the Kubernetes backend.
pub const DEFAULT_NAMESPACE: &str = "mcpctl";
/// Default uid, gid and fsGroup of every server.
pub const DEFAULT_UID: i64 = 1000;

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
