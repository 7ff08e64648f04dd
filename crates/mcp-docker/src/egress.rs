//! Egress on Docker, as pure functions: the effective policy -> how the instance is networked
//! ([`EgressPlan`]), what that changes in its create body ([`apply`]), the companion proxy's
//! create body ([`proxy_container`]) and the posture a status reports, read back from labels
//! alone ([`posture_from_labels`]) so that listings, inspects and watches agree.
//!
//! | effective policy      | transport | networking                                        | metadata blocked |
//! |-----------------------|-----------|---------------------------------------------------|------------------|
//! | `open`                | any       | the shared bridge network (today's behaviour); HTTP published on 127.0.0.1 | no: needs host firewall rules |
//! | `none`                | stdio     | `network_mode: none` (loopback only); `connect` attaches as usual | yes |
//! | `none`                | HTTP      | a per-instance internal network, nothing else on it; the endpoint is the container's address on it | yes |
//! | `allow` (any rules)   | any       | a per-instance internal network plus a proxy container (ours) on it and on the shared network; `HTTP(S)_PROXY` point at it | yes (no route out; the proxy refuses the ranges) |
//!
//! An internal network has no route out and the engine publishes no ports on it, but the host
//! reaches a container on a Linux bridge network directly on its address (host traffic does not
//! cross the engine's forwarding rules), so an HTTP server behind an egress policy is served at
//! `http://<container address>:<port><path>` from the engine's host. Nothing enforces a CIDR rule
//! per container without privileges (no firewall of our own): CIDR rules are admitted by the
//! proxy, for clients that use it.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    RestartPolicy, RestartPolicyNameEnum,
};
use mcp_types::egress::{Egress, EgressPosture};
use mcp_types::{Transport, labels};

use crate::conventions::{NETWORK_LABEL, PIDS_LIMIT, TMP_OPTIONS};

/// Label on a server container: its effective egress policy as JSON.
pub const EGRESS_LABEL: &str = "mcpctl.io/egress";
/// Label on a server container behind an egress policy: its internal network.
pub const EGRESS_NETWORK_LABEL: &str = "mcpctl.io/egress-network";
/// Label on a server container with an allow-list: its proxy container.
pub const EGRESS_PROXY_LABEL: &str = "mcpctl.io/egress-proxy";
/// Label on companion objects (proxy container, internal network): the instance they serve.
/// Companions never carry [`labels::MANAGED`], so no listing or watch takes them for instances.
pub const COMPANION_OF_LABEL: &str = "mcpctl.io/companion-of";
/// Label on companion objects: what they are ([`PROXY_ROLE`], [`NETWORK_ROLE`]).
pub const COMPANION_LABEL: &str = "mcpctl.io/companion";
/// [`COMPANION_LABEL`] value of an egress proxy container.
pub const PROXY_ROLE: &str = "egress-proxy";
/// [`COMPANION_LABEL`] value of an instance's internal network.
pub const NETWORK_ROLE: &str = "egress-network";
/// The proxy's memory limit: it holds connection buffers only.
pub const PROXY_MEMORY_BYTES: i64 = 64 * 1024 * 1024;
/// Environment variables pointed at the proxy (both spellings: clients read one or the other).
pub const PROXY_ENV: [&str; 4] = ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"];
/// Environment variables listing what bypasses the proxy.
pub const NO_PROXY_ENV: [&str; 2] = ["NO_PROXY", "no_proxy"];

/// How an instance is networked for its effective egress policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EgressPlan {
    /// The shared bridge network (`open`).
    Bridge,
    /// No network at all (`none`, stdio).
    NoNetwork,
    /// A per-instance internal network with nothing else on it (`none`, HTTP).
    Internal {
        /// The network's name.
        network: String,
    },
    /// A per-instance internal network whose only way out is a proxy container (`allow`).
    Proxied {
        /// The network's name.
        network: String,
        /// The proxy container's name (also its host name on the network).
        proxy: String,
    },
}

/// The name of an instance's internal network.
pub fn egress_network_name(instance: &str) -> String {
    format!("{instance}-egress")
}

/// The name of an instance's proxy container.
pub fn proxy_name(instance: &str) -> String {
    format!("{instance}-egress-proxy")
}

/// The plan for `policy` and `transport`.
pub fn plan_egress(policy: &Egress, transport: Transport, instance: &str) -> EgressPlan {
    match policy {
        Egress::Open => EgressPlan::Bridge,
        Egress::None if !transport.is_http() => EgressPlan::NoNetwork,
        Egress::None => EgressPlan::Internal {
            network: egress_network_name(instance),
        },
        Egress::Allow(_) => EgressPlan::Proxied {
            network: egress_network_name(instance),
            proxy: proxy_name(instance),
        },
    }
}

impl EgressPlan {
    /// The instance's own internal network, if it has one.
    pub fn internal_network(&self) -> Option<&str> {
        match self {
            Self::Internal { network } | Self::Proxied { network, .. } => Some(network),
            Self::Bridge | Self::NoNetwork => None,
        }
    }

    /// The proxy container, if the plan has one.
    pub fn proxy(&self) -> Option<&str> {
        match self {
            Self::Proxied { proxy, .. } => Some(proxy),
            _ => None,
        }
    }

    /// Whether an HTTP port is published on loopback (only on the shared bridge network).
    pub fn publishes_ports(&self) -> bool {
        *self == Self::Bridge
    }
}

/// Adapts a create body built for the shared network (`shared`) to `plan`, and labels it with
/// `policy` and the plan. Proxy settings in the spec's environment are replaced; `NO_PROXY`
/// keeps the spec's entries and gains the instance's own name and loopback.
pub fn apply(
    body: &mut ContainerCreateBody,
    plan: &EgressPlan,
    policy: &Egress,
    instance: &str,
    shared: &str,
) {
    let labels = body.labels.get_or_insert_with(HashMap::new);
    labels.insert(EGRESS_LABEL.to_owned(), policy_json(policy));
    labels.insert(NETWORK_LABEL.to_owned(), shared.to_owned());
    if let Some(network) = plan.internal_network() {
        labels.insert(EGRESS_NETWORK_LABEL.to_owned(), network.to_owned());
    }
    if let Some(proxy) = plan.proxy() {
        labels.insert(EGRESS_PROXY_LABEL.to_owned(), proxy.to_owned());
    }
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    match plan {
        EgressPlan::Bridge => return,
        EgressPlan::NoNetwork => {
            host.network_mode = Some("none".to_owned());
            body.networking_config = None;
        }
        EgressPlan::Internal { network } | EgressPlan::Proxied { network, .. } => {
            host.network_mode = Some(network.clone());
            body.networking_config = Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    network.clone(),
                    EndpointSettings::default(),
                )])),
            });
        }
    }
    // Nothing is published off the shared network (the engine ignores it on internal ones).
    host.port_bindings = None;
    if let Some(proxy) = plan.proxy() {
        set_proxy_env(body, proxy, instance);
    }
}

/// Points the proxy variables at `proxy` and adds the instance and loopback to `NO_PROXY`.
fn set_proxy_env(body: &mut ContainerCreateBody, proxy: &str, instance: &str) {
    let env = body.env.get_or_insert_with(Vec::new);
    let key = |entry: &String| entry.split('=').next().unwrap_or_default().to_owned();
    let mut no_proxy: Vec<String> = Vec::new();
    env.retain(|entry| {
        let k = key(entry);
        if NO_PROXY_ENV.contains(&k.as_str()) {
            let value = entry.split_once('=').map_or("", |(_, v)| v);
            no_proxy.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned),
            );
            return false;
        }
        !PROXY_ENV.contains(&k.as_str())
    });
    for own in [instance, "localhost", "127.0.0.1", "::1"] {
        if !no_proxy.iter().any(|v| v == own) {
            no_proxy.push(own.to_owned());
        }
    }
    let url = proxy_url(proxy);
    env.extend(PROXY_ENV.iter().map(|k| format!("{k}={url}")));
    let no_proxy = no_proxy.join(",");
    env.extend(NO_PROXY_ENV.iter().map(|k| format!("{k}={no_proxy}")));
}

/// The URL clients use for the proxy.
pub fn proxy_url(proxy: &str) -> String {
    format!("http://{proxy}:{}", mcp_egress_proxy::DEFAULT_PORT)
}

fn policy_json(policy: &Egress) -> String {
    // An Egress is strings and lists of plain rules: it always serializes.
    serde_json::to_string(policy).unwrap_or_else(|_| "\"none\"".to_owned())
}

/// The labels of an instance's companion objects.
pub fn companion_labels(
    role: &str,
    instance: &str,
    server: &str,
    shared: &str,
) -> HashMap<String, String> {
    HashMap::from([
        (COMPANION_LABEL.to_owned(), role.to_owned()),
        (COMPANION_OF_LABEL.to_owned(), instance.to_owned()),
        (labels::SERVER.to_owned(), server.to_owned()),
        (NETWORK_LABEL.to_owned(), shared.to_owned()),
        (
            labels::APP_MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
    ])
}

/// The create request of an instance's internal network.
pub fn internal_network(
    network: &str,
    instance: &str,
    server: &str,
    shared: &str,
) -> NetworkCreateRequest {
    NetworkCreateRequest {
        name: network.to_owned(),
        driver: Some("bridge".to_owned()),
        internal: Some(true),
        labels: Some(companion_labels(NETWORK_ROLE, instance, server, shared)),
        ..NetworkCreateRequest::default()
    }
}

/// The create body of an instance's proxy container: `image` serving `policy`, created on the
/// shared network (its way out; the caller then connects it to the internal network), hardened
/// like a server (read-only root, no capabilities, no new privileges, small limits).
pub fn proxy_container(
    image: &str,
    policy: &Egress,
    instance: &str,
    server: &str,
    shared: &str,
) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(mcp_egress_proxy::command_args(
            policy,
            mcp_egress_proxy::DEFAULT_PORT,
        )),
        user: Some("1000:1000".to_owned()),
        labels: Some(companion_labels(PROXY_ROLE, instance, server, shared)),
        tty: Some(false),
        open_stdin: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(HostConfig {
            memory: Some(PROXY_MEMORY_BYTES),
            pids_limit: Some(PIDS_LIMIT),
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([("/tmp".to_owned(), TMP_OPTIONS.to_owned())])),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            privileged: Some(false),
            init: Some(true),
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::UNLESS_STOPPED),
                maximum_retry_count: None,
            }),
            network_mode: Some(shared.to_owned()),
            ..HostConfig::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                shared.to_owned(),
                EndpointSettings::default(),
            )])),
        }),
        ..ContainerCreateBody::default()
    }
}

/// The MCP URL of an HTTP server on its internal network: the container's address there
/// (`ip`, from an inspect or a listing), its port and path from the labels. `None` for servers
/// without an internal network or while the address is unknown (not running).
pub fn internal_endpoint(labels: &BTreeMap<String, String>, ip: Option<&str>) -> Option<String> {
    labels.get(EGRESS_NETWORK_LABEL)?;
    let port: u16 = labels.get(crate::conventions::PORT_LABEL)?.parse().ok()?;
    let ip = ip.filter(|ip| !ip.is_empty())?;
    let path = labels
        .get(crate::conventions::PATH_LABEL)
        .map_or(mcp_types::DEFAULT_HTTP_PATH, String::as_str);
    Some(mcp_types::http_url(ip, port, path))
}

/// The posture of an instance from its labels; `None` for a container made before egress was
/// recorded (or with a damaged label).
pub fn posture_from_labels(labels: &BTreeMap<String, String>) -> Option<EgressPosture> {
    let policy: Egress = serde_json::from_str(labels.get(EGRESS_LABEL)?).ok()?;
    let network = labels.get(EGRESS_NETWORK_LABEL);
    let proxy = labels.get(EGRESS_PROXY_LABEL);
    let (enforced_by, metadata_blocked) = match (network, proxy) {
        (Some(net), Some(proxy)) => (
            format!(
                "docker internal network {net} whose only way out is egress proxy {proxy}: \
                 host and CIDR rules are checked by the proxy for clients that use \
                 HTTP(S)_PROXY; no other traffic leaves (no per-container firewall without \
                 privileges)"
            ),
            true,
        ),
        (Some(net), None) => (
            format!("docker internal network {net} (no route out)"),
            true,
        ),
        (None, _) if policy == Egress::None => ("docker network none (loopback only)".into(), true),
        (None, _) => (
            format!(
                "not enforced: docker bridge network {} (outbound open; blocking the metadata \
                 ranges needs host firewall rules)",
                labels.get(NETWORK_LABEL).map_or("?", String::as_str)
            ),
            false,
        ),
    };
    Some(EgressPosture {
        policy,
        enforced_by,
        metadata_blocked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_types::egress::EgressRule;

    const ID: &str = "mcp-web-0123456789";

    fn body() -> ContainerCreateBody {
        ContainerCreateBody {
            env: Some(vec![
                "TOKEN=s3cr3t".to_owned(),
                "HTTPS_PROXY=http://elsewhere:1".to_owned(),
                "NO_PROXY=internal.example, localhost".to_owned(),
            ]),
            labels: Some(HashMap::new()),
            host_config: Some(HostConfig {
                network_mode: Some("shared".to_owned()),
                port_bindings: Some(HashMap::new()),
                ..HostConfig::default()
            }),
            networking_config: Some(NetworkingConfig::default()),
            ..ContainerCreateBody::default()
        }
    }

    fn labels_of(b: &ContainerCreateBody) -> BTreeMap<String, String> {
        b.labels.clone().unwrap().into_iter().collect()
    }

    #[test]
    fn plans() {
        let allow = Egress::Allow(vec![EgressRule::host("a.example", [443])]);
        assert_eq!(
            plan_egress(&Egress::Open, Transport::Stdio, ID),
            EgressPlan::Bridge
        );
        assert_eq!(
            plan_egress(&Egress::None, Transport::Stdio, ID),
            EgressPlan::NoNetwork
        );
        assert_eq!(
            plan_egress(&Egress::None, Transport::StreamableHttp, ID),
            EgressPlan::Internal {
                network: format!("{ID}-egress")
            }
        );
        let plan = plan_egress(&allow, Transport::Stdio, ID);
        assert_eq!(plan.proxy(), Some(format!("{ID}-egress-proxy").as_str()));
        assert!(!plan.publishes_ports() && EgressPlan::Bridge.publishes_ports());
    }

    #[test]
    fn open_keeps_the_bridge_and_reports_metadata_open() {
        let mut b = body();
        apply(&mut b, &EgressPlan::Bridge, &Egress::Open, ID, "shared");
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("shared"));
        assert!(h.port_bindings.is_some());
        let posture = posture_from_labels(&labels_of(&b)).unwrap();
        assert_eq!(posture.policy, Egress::Open);
        assert!(!posture.metadata_blocked);
        assert!(
            posture
                .enforced_by
                .starts_with("not enforced: docker bridge network shared")
        );
    }

    #[test]
    fn none_for_stdio_has_no_network() {
        let mut b = body();
        apply(&mut b, &EgressPlan::NoNetwork, &Egress::None, ID, "shared");
        let h = b.host_config.as_ref().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
        assert!(h.port_bindings.is_none() && b.networking_config.is_none());
        let posture = posture_from_labels(&labels_of(&b)).unwrap();
        assert_eq!(
            (posture.policy, posture.metadata_blocked),
            (Egress::None, true)
        );
        assert_eq!(posture.enforced_by, "docker network none (loopback only)");
    }

    #[test]
    fn allow_lists_go_through_the_proxy() {
        let allow = Egress::Allow(vec![
            EgressRule::host("a.example", [443]),
            EgressRule::cidr("10.0.0.0/8", []),
        ]);
        let plan = plan_egress(&allow, Transport::StreamableHttp, ID);
        let mut b = body();
        apply(&mut b, &plan, &allow, ID, "shared");
        let h = b.host_config.as_ref().unwrap();
        let net = format!("{ID}-egress");
        assert_eq!(h.network_mode.as_deref(), Some(net.as_str()));
        assert!(h.port_bindings.is_none());
        let endpoints = b
            .networking_config
            .as_ref()
            .unwrap()
            .endpoints_config
            .as_ref();
        assert!(endpoints.unwrap().contains_key(&net));
        let env = b.env.clone().unwrap();
        let url = format!("http://{ID}-egress-proxy:3128");
        for k in PROXY_ENV {
            assert!(env.contains(&format!("{k}={url}")), "{k}: {env:?}");
        }
        assert!(!env.iter().any(|e| e.contains("elsewhere")), "{env:?}");
        let no_proxy = format!("NO_PROXY=internal.example,localhost,{ID},127.0.0.1,::1");
        assert!(env.contains(&no_proxy), "{env:?}");
        assert!(env.contains(&"TOKEN=s3cr3t".to_owned()));
        let l = labels_of(&b);
        assert_eq!(l[EGRESS_NETWORK_LABEL], net);
        assert_eq!(l[NETWORK_LABEL], "shared");
        let posture = posture_from_labels(&l).unwrap();
        assert_eq!(posture.policy, allow);
        assert!(posture.metadata_blocked);
        assert!(
            posture
                .enforced_by
                .contains("egress proxy mcp-web-0123456789-egress-proxy")
        );
        assert!(posture.enforced_by.contains("no per-container firewall"));
    }

    #[test]
    fn none_for_http_is_an_internal_network_without_proxy() {
        let plan = plan_egress(&Egress::None, Transport::StreamableHttp, ID);
        let mut b = body();
        apply(&mut b, &plan, &Egress::None, ID, "shared");
        assert!(
            !b.env
                .clone()
                .unwrap()
                .iter()
                .any(|e| e.starts_with("HTTP_PROXY"))
        );
        let posture = posture_from_labels(&labels_of(&b)).unwrap();
        assert!(posture.enforced_by.starts_with("docker internal network"));
        assert!(posture.metadata_blocked);
    }

    #[test]
    fn companions_are_labelled_but_never_managed() {
        let allow = Egress::Allow(vec![EgressRule::host("a.example", [443])]);
        let proxy = proxy_container("mcp-egress-proxy:local", &allow, ID, "web", "shared");
        let l = proxy.labels.clone().unwrap();
        assert_eq!(l[COMPANION_OF_LABEL], ID);
        assert_eq!(l[COMPANION_LABEL], PROXY_ROLE);
        assert!(!l.contains_key(labels::MANAGED));
        let cmd = proxy.cmd.clone().unwrap();
        assert_eq!(cmd[..3], ["--listen", "0.0.0.0:3128", "--policy-json"]);
        assert_eq!(serde_json::from_str::<Egress>(&cmd[3]).unwrap(), allow);
        let h = proxy.host_config.unwrap();
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop, Some(vec!["ALL".to_owned()]));
        let net = internal_network(&egress_network_name(ID), ID, "web", "shared");
        assert_eq!(net.internal, Some(true));
        assert!(!net.labels.unwrap().contains_key(labels::MANAGED));
    }

    #[test]
    fn internal_endpoints_use_the_container_address() {
        let mut l = BTreeMap::from([
            (EGRESS_NETWORK_LABEL.to_owned(), "n".to_owned()),
            (crate::conventions::PORT_LABEL.to_owned(), "8080".to_owned()),
        ]);
        assert_eq!(
            internal_endpoint(&l, Some("172.20.0.2")).as_deref(),
            Some("http://172.20.0.2:8080/mcp")
        );
        assert_eq!(internal_endpoint(&l, Some("")), None);
        assert_eq!(internal_endpoint(&l, None), None);
        l.remove(EGRESS_NETWORK_LABEL);
        assert_eq!(internal_endpoint(&l, Some("172.20.0.2")), None);
    }

    #[test]
    fn posture_needs_the_label() {
        assert_eq!(posture_from_labels(&BTreeMap::new()), None);
        let damaged = BTreeMap::from([(EGRESS_LABEL.to_owned(), "{".to_owned())]);
        assert_eq!(posture_from_labels(&damaged), None);
    }
}
