//! The proxy's Kubernetes mode ([`PodPolicy`]): one proxy per namespace serves every instance
//! whose egress policy names hosts, and tells them apart by the proxy user they present (their
//! `HTTP(S)_PROXY` is `http://<instance-id>@mcp-egress-proxy.<ns>.svc:3128`).
//!
//! | request                                              | answer                                   |
//! |------------------------------------------------------|------------------------------------------|
//! | no proxy user                                        | 407: name the instance                    |
//! | a user that is not a pod name                        | 407                                       |
//! | no such pod, or a pod the backend does not manage    | 403                                       |
//! | the connection does not come from the pod's address  | 403: the user names another pod           |
//! | the pod states no readable `mcpctl.io/egress`        | 403                                       |
//! | the pod cannot be read (API server down, RBAC)       | 503, nothing cached                       |
//! | otherwise                                            | the pod's policy, judged as for any client |
//!
//! The user is a claim; the client's address is the proof: a pod may only use its own policy,
//! because its connection must come from its own `status.podIP(s)`. A pod's facts (addresses and
//! policy) are cached for [`DEFAULT_CACHE_TTL`]; a connection from an address the cached pod
//! does not have reads the pod again (at most once per [`REFRESH_AFTER`]) before refusing, so a
//! pod whose address was not yet known is not shut out for a whole TTL. Failed reads are never
//! cached.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::StatusCode;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use mcp_types::Egress;
use mcp_types::labels::{EGRESS, MANAGED};

use crate::policy::{PolicySource, Refusal};

/// How long a pod's addresses and policy are used without reading the pod again.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);
/// The least time between two reads of one pod caused by a connection from an unknown address.
pub const REFRESH_AFTER: Duration = Duration::from_secs(1);
/// Cached pods beyond which expired entries are dropped.
const CACHE_PRUNE_AT: usize = 1024;

/// What the proxy knows about one instance's pod.
#[derive(Debug, Clone)]
struct PodFacts {
    addresses: Vec<IpAddr>,
    /// The stated policy, or why there is none.
    policy: Result<Egress, String>,
    read_at: Instant,
}

/// Policies read from the pods of one namespace, named by the proxy user (see the module).
#[derive(Clone)]
pub struct PodPolicy {
    pods: Api<Pod>,
    namespace: String,
    ttl: Duration,
    cache: Arc<Mutex<HashMap<String, PodFacts>>>,
}

impl std::fmt::Debug for PodPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodPolicy")
            .field("namespace", &self.namespace)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl PodPolicy {
    /// Reads pods of `namespace` through `client`.
    pub fn new(client: kube::Client, namespace: &str) -> Self {
        Self {
            pods: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            ttl: DEFAULT_CACHE_TTL,
            cache: Arc::default(),
        }
    }

    /// Another cache lifetime (zero: read the pod for every request).
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// In a pod: the in-cluster configuration (the pod's service account token, the API
    /// server from `KUBERNETES_SERVICE_HOST`), reading pods of `namespace` or, when `None`, of
    /// the pod's own namespace.
    ///
    /// # Errors
    /// A message naming what is missing when not running in a pod, or when no client can be
    /// built from the configuration.
    pub fn in_cluster(namespace: Option<&str>) -> Result<Self, String> {
        let config = kube::Config::incluster().map_err(|e| {
            format!(
                "--kubernetes needs the in-cluster configuration (a pod with a service account \
                 token and KUBERNETES_SERVICE_HOST): {e}"
            )
        })?;
        let namespace = namespace.map_or_else(|| config.default_namespace.clone(), str::to_owned);
        let client = kube::Client::try_from(config)
            .map_err(|e| format!("cannot build a Kubernetes client: {e}"))?;
        Ok(Self::new(client, &namespace))
    }

    /// The namespace whose pods are read.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn cached(&self, instance: &str) -> Option<PodFacts> {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(instance)
            .cloned()
    }

    fn remember(&self, instance: &str, facts: PodFacts) {
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if cache.len() >= CACHE_PRUNE_AT {
            let ttl = self.ttl;
            cache.retain(|_, f| f.read_at.elapsed() < ttl);
        }
        cache.insert(instance.to_owned(), facts);
    }

    fn forget(&self, instance: &str) {
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(instance);
    }

    /// Reads the pod; a missing or unmanaged pod is a 403, a failed read a 503.
    async fn read(&self, instance: &str) -> Result<PodFacts, Refusal> {
        let pod = match self.pods.get_opt(instance).await {
            Ok(Some(pod)) => pod,
            Ok(None) => {
                self.forget(instance);
                return Err(Refusal::forbidden(format!(
                    "proxy user {instance:?}: no instance of that name in namespace {}",
                    self.namespace
                )));
            }
            Err(e) => {
                return Err(Refusal::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot read instance {instance}'s pod: {e}"),
                ));
            }
        };
        let managed = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(MANAGED))
            .is_some_and(|v| v == "true");
        if !managed {
            self.forget(instance);
            return Err(Refusal::forbidden(format!(
                "proxy user {instance:?}: not an instance (its pod is not managed by mcpctl)"
            )));
        }
        let facts = PodFacts {
            addresses: addresses(&pod),
            policy: stated_policy(&pod),
            read_at: Instant::now(),
        };
        self.remember(instance, facts.clone());
        Ok(facts)
    }

    async fn decide(&self, peer: IpAddr, instance: &str) -> Result<Egress, Refusal> {
        let facts = match self.cached(instance) {
            Some(f) if f.read_at.elapsed() < self.ttl => {
                if f.addresses.contains(&peer) || f.read_at.elapsed() < REFRESH_AFTER {
                    f
                } else {
                    self.read(instance).await?
                }
            }
            _ => self.read(instance).await?,
        };
        if !facts.addresses.contains(&peer) {
            return Err(Refusal::forbidden(format!(
                "proxy user {instance:?}: the connection does not come from that instance's pod"
            )));
        }
        facts
            .policy
            .map_err(|why| Refusal::forbidden(format!("instance {instance}: {why}")))
    }
}

/// The pod's addresses (`status.podIPs`, and `status.podIP`).
fn addresses(pod: &Pod) -> Vec<IpAddr> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    let mut out: Vec<IpAddr> = status
        .pod_ips
        .iter()
        .flatten()
        .filter_map(|p| p.ip.parse().ok())
        .collect();
    if let Some(ip) = status.pod_ip.as_deref().and_then(|ip| ip.parse().ok())
        && !out.contains(&ip)
    {
        out.push(ip);
    }
    out
}

/// The policy of the pod's `mcpctl.io/egress` annotation, validated like a spec's.
fn stated_policy(pod: &Pod) -> Result<Egress, String> {
    let text = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(EGRESS))
        .ok_or_else(|| format!("its pod states no egress policy ({EGRESS})"))?;
    let policy: Egress = serde_json::from_str(text)
        .map_err(|e| format!("its pod's {EGRESS} annotation is not a policy: {e}"))?;
    let mut errors = Vec::new();
    policy.check(EGRESS, &mut errors);
    match errors.first() {
        Some(e) => Err(format!("its pod's policy is invalid: {e}")),
        None => Ok(policy),
    }
}

/// An IPv4-mapped IPv6 peer (a dual-stack listener) is the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Whether `user` can be a pod name (a DNS-1123 subdomain; instance ids are labels).
fn is_pod_name(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 253
        && user.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

impl PolicySource for PodPolicy {
    fn policy<'a>(
        &'a self,
        peer: SocketAddr,
        proxy_user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Egress, Refusal>> {
        Box::pin(async move {
            let Some(user) = proxy_user.filter(|u| !u.is_empty()) else {
                return Err(Refusal::authentication_required(
                    "name the instance as the proxy user: http://<instance-id>@<proxy>:<port>",
                ));
            };
            if !is_pod_name(user) {
                return Err(Refusal::authentication_required(format!(
                    "proxy user {user:?} is not an instance id"
                )));
            }
            self.decide(canonical(peer.ip()), user).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    #[test]
    fn addresses_names_and_annotations() {
        let pod = Pod {
            metadata: ObjectMeta {
                annotations: Some([(EGRESS.to_owned(), "\"open\"".to_owned())].into()),
                ..ObjectMeta::default()
            },
            status: Some(PodStatus {
                pod_ip: Some("10.244.0.7".into()),
                pod_ips: Some(vec![
                    PodIP {
                        ip: "10.244.0.7".into(),
                    },
                    PodIP {
                        ip: "fd00::7".into(),
                    },
                ]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        assert_eq!(
            addresses(&pod),
            [
                "10.244.0.7".parse::<IpAddr>().unwrap(),
                "fd00::7".parse().unwrap()
            ]
        );
        assert_eq!(stated_policy(&pod), Ok(Egress::Open));
        let mut bad = pod.clone();
        bad.metadata.annotations = Some([(EGRESS.to_owned(), r#"{"allow":[]}"#.to_owned())].into());
        assert!(stated_policy(&bad).unwrap_err().contains("invalid"));
        bad.metadata.annotations = None;
        assert!(
            stated_policy(&bad)
                .unwrap_err()
                .contains("states no egress policy")
        );
        assert_eq!(
            canonical("::ffff:10.0.0.1".parse().unwrap()),
            "10.0.0.1".parse::<IpAddr>().unwrap()
        );
        assert!(is_pod_name("mcp-fetch-7k2m9q4x1z"));
        for bad in ["", "Mcp", "a/b", "-a", "a..b", "a b"] {
            assert!(!is_pod_name(bad), "{bad}");
        }
    }
}
