//! What an instance's pod carries for its egress policy: the `mcpctl.io/egress` annotation
//! (the effective policy as JSON, which the egress proxy reads and the status reports), the
//! [`NETWORK_POLICY_ANNOTATION`] naming the NetworkPolicy built with it (absent when network
//! policies are off: the status says what enforces the policy from these two), and for
//! host-name rules the proxy-client label and the proxy variables.
//!
//! | effective policy             | annotation | label `mcpctl.io/egress-proxy` | `HTTP(S)_PROXY`, `NO_PROXY` |
//! |------------------------------|------------|--------------------------------|-----------------------------|
//! | `none`, `open`, CIDRs only   | yes        | no                             | no                          |
//! | with host-name rules         | yes        | `client`                       | both cases                  |

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod};

use mcp_types::labels::{APP_NAME, COMPONENT, EGRESS};
use mcp_types::{Egress, FieldError, McpServer};

use crate::BuildOptions;

/// Pod annotation naming the instance's NetworkPolicy, set when one is built with the pod.
pub const NETWORK_POLICY_ANNOTATION: &str = "mcpctl.io/network-policy";
/// Name of every object of the per-namespace egress proxy (Deployment, Service,
/// ServiceAccount, Role, RoleBinding, NetworkPolicy).
pub const EGRESS_PROXY_NAME: &str = "mcp-egress-proxy";
/// The proxy's port (the HTTP proxy convention).
pub const EGRESS_PROXY_PORT: u16 = 3128;
/// Name of the proxy's container port and Service port.
pub const EGRESS_PROXY_PORT_NAME: &str = "proxy";
/// Label on the pods that route through the proxy; the proxy's NetworkPolicy admits only them.
pub const EGRESS_PROXY_CLIENT_LABEL: (&str, &str) = ("mcpctl.io/egress-proxy", "client");
/// The proxy variables a pod with host-name rules gets, in both cases (curl and Go read the
/// lower-case ones, many others the upper-case ones).
pub const PROXY_ENV_NAMES: [&str; 6] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// The proxy URL of instance `instance` in `namespace`: the instance id is the proxy user, by
/// which the proxy finds the pod (and checks that the connection comes from its address).
pub fn proxy_url(namespace: &str, instance: &str) -> String {
    format!("http://{instance}@{EGRESS_PROXY_NAME}.{namespace}.svc:{EGRESS_PROXY_PORT}")
}

/// What the pod reaches without the proxy: loopback, and the CIDR rules (which its
/// NetworkPolicy admits directly; curl, Go and Python's requests understand CIDRs here).
pub fn no_proxy(egress: &Egress) -> String {
    let mut out = vec!["localhost", "127.0.0.1", "::1"];
    out.extend(egress.cidr_rules().filter_map(|r| r.cidr.as_deref()));
    out.join(",")
}

/// The effective policy as stored in the pod's [`EGRESS`] annotation.
pub fn egress_annotation(egress: &Egress) -> String {
    // A policy is strings and numbers only: serializing it cannot fail.
    serde_json::to_string(egress).unwrap_or_default()
}

/// Value of `mcpctl.io/component` (and `app.kubernetes.io/component`) on the proxy's objects.
pub const EGRESS_PROXY_COMPONENT: &str = "egress-proxy";

/// The labels selecting the proxy's pods.
pub fn proxy_selector() -> BTreeMap<String, String> {
    BTreeMap::from([
        (APP_NAME.to_owned(), EGRESS_PROXY_NAME.to_owned()),
        (COMPONENT.to_owned(), EGRESS_PROXY_COMPONENT.to_owned()),
    ])
}

/// Refuses a spec that sets the proxy variables itself while its policy needs the proxy: the
/// backend sets them, and a second value would be a silent conflict.
pub(crate) fn check_env(spec: &McpServer, egress: &Egress, errors: &mut Vec<FieldError>) {
    if !egress.needs_proxy() {
        return;
    }
    for name in PROXY_ENV_NAMES {
        if spec.env.contains_key(name) {
            errors.push(FieldError {
                path: format!("env.{name}"),
                message: "set by the backend for host-name egress rules (the egress proxy); \
                          remove it from the spec"
                    .into(),
            });
        }
    }
}

/// Adds the annotation, and for host-name rules the client label and the proxy variables, to
/// the pod [`crate::pod`] built.
pub(crate) fn decorate_pod(egress: &Egress, opts: &BuildOptions, instance: &str, pod: &mut Pod) {
    let annotations = pod
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(EGRESS.to_owned(), egress_annotation(egress));
    if opts.network_policy {
        annotations.insert(
            NETWORK_POLICY_ANNOTATION.to_owned(),
            crate::names::network_policy_name(instance),
        );
    }
    if !egress.needs_proxy() {
        return;
    }
    let (key, value) = EGRESS_PROXY_CLIENT_LABEL;
    pod.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(key.to_owned(), value.to_owned());
    let url = proxy_url(&opts.namespace, instance);
    let no_proxy = no_proxy(egress);
    let vars = PROXY_ENV_NAMES.map(|name| EnvVar {
        name: name.to_owned(),
        value: Some(if name.eq_ignore_ascii_case("NO_PROXY") {
            no_proxy.clone()
        } else {
            url.clone()
        }),
        value_from: None,
    });
    if let Some(container) = pod.spec.as_mut().and_then(|s| {
        s.containers
            .iter_mut()
            .find(|c| c.name == crate::CONTAINER_NAME)
    }) {
        container.env.get_or_insert_with(Vec::new).extend(vars);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_types::EgressRule;

    #[test]
    fn urls_and_no_proxy() {
        assert_eq!(
            proxy_url("team-a", "mcp-x-1"),
            "http://mcp-x-1@mcp-egress-proxy.team-a.svc:3128"
        );
        let egress = Egress::Allow(vec![
            EgressRule::host("pypi.org", [443]),
            EgressRule::cidr("10.0.0.0/8", [5432]),
        ]);
        assert_eq!(no_proxy(&egress), "localhost,127.0.0.1,::1,10.0.0.0/8");
        assert_eq!(egress_annotation(&Egress::Open), "\"open\"");
        assert_eq!(
            egress_annotation(&egress),
            r#"{"allow":[{"host":"pypi.org","ports":[443]},{"cidr":"10.0.0.0/8","ports":[5432]}]}"#
        );
    }
}
