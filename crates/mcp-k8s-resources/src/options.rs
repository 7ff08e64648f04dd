//! Inputs to the builders besides the spec: namespace, creation time and cluster settings.

use mcp_types::k8s::DEFAULT_EGRESS_PROXY_IMAGE;
use mcp_types::names::{
    check_dns1123_label, check_dns1123_subdomain, check_label_key, check_labels,
};
use mcp_types::{Egress, FieldError, K8sConfig, K8sPodMetadata, Timestamp};

/// Everything a builder needs besides the spec and the instance id.
///
/// The creation time is an input rather than read from a clock so that the same inputs always
/// produce the same objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Namespace of every namespaced object (a DNS-1123 label).
    pub namespace: String,
    /// Written to the [`mcp_types::labels::CREATED_AT`] annotation (RFC 3339).
    pub created_at: Timestamp,
    /// Service account of the server pods; [`crate::DEFAULT_SERVICE_ACCOUNT`] when `None`.
    pub service_account: Option<String>,
    /// Extra labels and annotations for every pod (the spec's own labels win on conflict).
    pub pod_metadata: K8sPodMetadata,
    /// Whether [`crate::build_instance`] produces NetworkPolicies (the instance's, and the
    /// egress proxy's).
    pub network_policy: bool,
    /// The egress policy of specs that set none.
    pub default_egress: Egress,
    /// The image of the per-namespace egress proxy ([`crate::build_egress_proxy`]).
    pub egress_proxy_image: String,
}

impl BuildOptions {
    /// Options for `namespace` with everything else at its default (network policies on).
    pub fn new(namespace: impl Into<String>, created_at: Timestamp) -> Self {
        Self {
            namespace: namespace.into(),
            created_at,
            service_account: None,
            pod_metadata: K8sPodMetadata::default(),
            network_policy: true,
            default_egress: Egress::Open,
            egress_proxy_image: DEFAULT_EGRESS_PROXY_IMAGE.to_owned(),
        }
    }

    /// Options taken from the Kubernetes backend's configuration.
    pub fn from_config(config: &K8sConfig, created_at: Timestamp) -> Self {
        Self {
            namespace: config.namespace.clone(),
            created_at,
            service_account: config.service_account.clone(),
            pod_metadata: config.pod_metadata.clone(),
            network_policy: config.network_policies,
            default_egress: config.default_egress.clone(),
            egress_proxy_image: config.egress_proxy_image.clone(),
        }
    }

    /// The service account the pods run as.
    pub fn service_account_name(&self) -> &str {
        self.service_account
            .as_deref()
            .unwrap_or(crate::DEFAULT_SERVICE_ACCOUNT)
    }

    /// Appends a [`FieldError`] (paths under `options.`) for each invalid field.
    pub(crate) fn check(&self, errors: &mut Vec<FieldError>) {
        self.default_egress.check("options.defaultEgress", errors);
        let mut push = |path: &str, r: Result<(), String>| {
            if let Err(message) = r {
                errors.push(FieldError {
                    path: format!("options.{path}"),
                    message,
                });
            }
        };
        push("namespace", check_dns1123_label(&self.namespace));
        if let Some(sa) = &self.service_account {
            push("serviceAccount", check_dns1123_subdomain(sa));
        }
        push(
            "podMetadata.labels",
            check_labels(&self.pod_metadata.labels),
        );
        push(
            "podMetadata.annotations",
            self.pod_metadata
                .annotations
                .keys()
                .try_for_each(|k| check_label_key(k)),
        );
        push(
            "egressProxyImage",
            if self.egress_proxy_image.trim().is_empty()
                || self.egress_proxy_image.chars().any(char::is_whitespace)
            {
                Err(format!(
                    "{:?} is not an image reference",
                    self.egress_proxy_image
                ))
            } else {
                Ok(())
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_config_copies_cluster_settings() {
        let config = K8sConfig {
            namespace: "team-a".into(),
            service_account: Some("runner".into()),
            network_policies: false,
            default_egress: Egress::None,
            egress_proxy_image: "registry.example/proxy:2".into(),
            ..K8sConfig::default()
        };
        let o = BuildOptions::from_config(&config, Timestamp::UNIX_EPOCH);
        assert_eq!(o.namespace, "team-a");
        assert_eq!(o.default_egress, Egress::None);
        assert_eq!(o.egress_proxy_image, "registry.example/proxy:2");
        assert_eq!(o.service_account_name(), "runner");
        assert!(!o.network_policy);
        assert_eq!(
            BuildOptions::new("x", Timestamp::UNIX_EPOCH).service_account_name(),
            "default"
        );
    }

    #[test]
    fn check_names_each_bad_field() {
        let mut o = BuildOptions::new("Bad_NS", Timestamp::UNIX_EPOCH);
        o.service_account = Some("no/slash".into());
        o.pod_metadata.labels.insert("ok".into(), "-bad".into());
        o.pod_metadata.annotations.insert("a b".into(), "v".into());
        o.default_egress = Egress::Allow(Vec::new());
        o.egress_proxy_image = String::new();
        let mut errors = Vec::new();
        o.check(&mut errors);
        let paths: Vec<_> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "options.defaultEgress.allow",
                "options.namespace",
                "options.serviceAccount",
                "options.podMetadata.labels",
                "options.podMetadata.annotations",
                "options.egressProxyImage"
            ]
        );
    }
}
