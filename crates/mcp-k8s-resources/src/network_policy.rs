//! The instance's NetworkPolicy: ingress only from local proxies, egress to an allow-list + DNS.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_types::labels::{COMPONENT, LOCAL_PROXY};
use mcp_types::{InstanceId, McpServer, ValidationErrors};

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
    let egress = match &spec.egress {
        // An empty rule matches every destination: egress stays open.
        None => vec![NetworkPolicyEgressRule::default()],
        Some(cidrs) => {
            let mut rules = Vec::with_capacity(2);
            if !cidrs.is_empty() {
                rules.push(NetworkPolicyEgressRule {
                    to: Some(
                        cidrs
                            .iter()
                            .map(|cidr| NetworkPolicyPeer {
                                ip_block: Some(IPBlock {
                                    cidr: cidr.clone(),
                                    except: None,
                                }),
                                ..NetworkPolicyPeer::default()
                            })
                            .collect(),
                    ),
                    ports: None,
                });
            }
            rules.push(dns_rule());
            rules
        }
    };
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
