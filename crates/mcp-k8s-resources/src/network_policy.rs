//! The instance's NetworkPolicy: ingress only from local proxies, egress as its policy says.
//!
//! | effective egress        | egress rules                                                        |
//! |-------------------------|---------------------------------------------------------------------|
//! | `none`                  | none (policy type Egress with no rule: nothing leaves)              |
//! | `open`                  | `0.0.0.0/0` and `::/0`, each excepting the metadata ranges           |
//! | CIDR rules              | the CIDRs, one rule per distinct port list, + DNS to kube-dns        |
//! | host-name rules         | the egress proxy's pods on 3128 + DNS (to resolve the proxy's name) |
//! | both                    | both sets                                                           |

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_types::labels::{COMPONENT, LOCAL_PROXY};
use mcp_types::{Egress, InstanceId, METADATA_CIDRS, McpServer, ValidationErrors};

use crate::egress::EGRESS_PROXY_PORT;
use crate::egress::proxy_selector;

use crate::meta::Checked;
use crate::names::network_policy_name;
use crate::{BuildOptions, DNS_NAMESPACE, DNS_POD_LABEL, NAMESPACE_NAME_LABEL};

/// Builds the NetworkPolicy isolating instance `instance` of `spec`.
///
/// Ingress is allowed only from pods labelled `mcpctl.io/component: local-proxy` in the same
/// namespace, and only on the server port for HTTP transports. Egress follows the effective
/// policy (the spec's, or [`BuildOptions::default_egress`]) as the module's table says.
///
/// # Errors
/// As [`crate::build_pod`].
pub fn build_network_policy(
    spec: &McpServer,
    instance: &InstanceId,
    opts: &BuildOptions,
) -> Result<NetworkPolicy, ValidationErrors> {
    Checked::new(spec, instance, opts).map(network_policy)
}

pub(crate) fn network_policy(c: Checked<'_>) -> NetworkPolicy {
    let spec = c.spec;
    let ingress = NetworkPolicyIngressRule {
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(match_labels([(COMPONENT, LOCAL_PROXY)])),
            ..NetworkPolicyPeer::default()
        }]),
        ports: spec
            .port
            .filter(|_| spec.transport.is_http())
            .map(|p| vec![port("TCP", i32::from(p))]),
    };
    let egress = egress_rules(&c.egress());
    NetworkPolicy {
        metadata: c.object_meta(network_policy_name(c.instance)),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(c.selector()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![ingress]),
            egress: Some(egress),
        }),
    }
}

/// The egress rules for `egress`, as the module's table says.
fn egress_rules(egress: &Egress) -> Vec<NetworkPolicyEgressRule> {
    match egress {
        Egress::None => Vec::new(),
        Egress::Open => vec![open_rule()],
        Egress::Allow(_) => {
            // One rule per distinct port list, so that ports of one CIDR do not open another.
            let mut by_ports: BTreeMap<Vec<u16>, Vec<NetworkPolicyPeer>> = BTreeMap::new();
            for rule in egress.cidr_rules() {
                let mut ports = rule.ports.clone();
                ports.sort_unstable();
                by_ports.entry(ports).or_default().push(NetworkPolicyPeer {
                    ip_block: Some(IPBlock {
                        cidr: rule.cidr.clone().unwrap_or_default(),
                        except: None,
                    }),
                    ..NetworkPolicyPeer::default()
                });
            }
            let mut rules: Vec<NetworkPolicyEgressRule> = by_ports
                .into_iter()
                .map(|(ports, to)| NetworkPolicyEgressRule {
                    to: Some(to),
                    ports: (!ports.is_empty())
                        .then(|| ports.iter().map(|p| port("TCP", i32::from(*p))).collect()),
                })
                .collect();
            if egress.needs_proxy() {
                rules.push(NetworkPolicyEgressRule {
                    to: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector {
                            match_labels: Some(proxy_selector()),
                            match_expressions: None,
                        }),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![port("TCP", i32::from(EGRESS_PROXY_PORT))]),
                });
            }
            // The proxy's Service name needs resolving too.
            if egress.needs_dns() || egress.needs_proxy() {
                rules.push(dns_rule());
            }
            rules
        }
    }
}

/// Everywhere outside the metadata ranges: `0.0.0.0/0` and `::/0`, each excepting the
/// [`METADATA_CIDRS`] of its family (an `except` must lie inside its `cidr`).
pub(crate) fn open_rule() -> NetworkPolicyEgressRule {
    let block = |cidr: &str, family_v4: bool| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: cidr.to_owned(),
            except: Some(
                METADATA_CIDRS
                    .iter()
                    .filter(|m| m.contains(':') != family_v4)
                    .map(|m| (*m).to_owned())
                    .collect(),
            ),
        }),
        ..NetworkPolicyPeer::default()
    };
    NetworkPolicyEgressRule {
        to: Some(vec![block("0.0.0.0/0", true), block("::/0", false)]),
        ports: None,
    }
}

/// Name resolution keeps working under an allow-list: UDP and TCP 53 to the kube-dns pods.
pub(crate) fn dns_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels([(NAMESPACE_NAME_LABEL, DNS_NAMESPACE)])),
            pod_selector: Some(match_labels([DNS_POD_LABEL])),
            ip_block: None,
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    }
}

pub(crate) fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(port)),
        end_port: None,
    }
}

pub(crate) fn match_labels<const N: usize>(pairs: [(&str, &str); N]) -> LabelSelector {
    LabelSelector {
        match_labels: Some(
            pairs
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect::<BTreeMap<_, _>>(),
        ),
        match_expressions: None,
    }
}
