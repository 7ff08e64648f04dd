//! The instance's NetworkPolicy: ingress only from local proxies, egress to an allow-list + DNS.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_types::labels::{COMPONENT, LOCAL_PROXY};
use mcp_types::{Egress, InstanceId, METADATA_CIDRS, McpServer, ValidationErrors};

use crate::meta::Checked;
use crate::names::network_policy_name;
use crate::{BuildOptions, DNS_NAMESPACE, DNS_POD_LABEL, NAMESPACE_NAME_LABEL};

/// Builds the NetworkPolicy isolating instance `instance` of `spec`.
///
/// Ingress is allowed only from pods labelled `mcpctl.io/component: local-proxy` in the same
/// namespace, and only on the server port for HTTP transports. Egress is allowed to the spec's
/// `egress` CIDRs plus DNS (UDP and TCP 53) to kube-dns, or everywhere when `egress` is `None`.
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
    let egress = egress_rules(&spec.effective_egress(&Egress::Open));
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

/// The egress rules for `egress`: none at all for `none`; everything outside the metadata
/// ranges for `open`; the CIDR rules (grouped by their ports) plus DNS to kube-dns for an
/// allow-list.
fn egress_rules(egress: &Egress) -> Vec<NetworkPolicyEgressRule> {
    match egress {
        Egress::None => Vec::new(),
        Egress::Open => {
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
            vec![NetworkPolicyEgressRule {
                to: Some(vec![block("0.0.0.0/0", true), block("::/0", false)]),
                ports: None,
            }]
        }
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
            if egress.needs_dns() {
                rules.push(dns_rule());
            }
            rules
        }
    }
}

/// Name resolution keeps working under an allow-list: UDP and TCP 53 to the kube-dns pods.
fn dns_rule() -> NetworkPolicyEgressRule {
    NetworkPolicyEgressRule {
        to: Some(vec![NetworkPolicyPeer {
            namespace_selector: Some(match_labels([(NAMESPACE_NAME_LABEL, DNS_NAMESPACE)])),
            pod_selector: Some(match_labels([DNS_POD_LABEL])),
            ip_block: None,
        }]),
        ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
    }
}

fn port(protocol: &str, port: i32) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.to_owned()),
        port: Some(IntOrString::Int(port)),
        end_port: None,
    }
}

fn match_labels<const N: usize>(pairs: [(&str, &str); N]) -> LabelSelector {
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
