//! NetworkPolicy validation and defaulting, as `ValidateNetworkPolicySpec` and the registry's
//! create strategy do it: the pod selector, each rule's ports then peers (ingress rules first,
//! then egress), the policy types last; `ipBlock` CIDRs in strict form (as with the
//! `StrictIPCIDRValidation` feature gate on: no leading zeros, no IPv4-mapped IPv6, no bits
//! beyond the prefix length) and each `except` a strict subset of its `cidr`.
//!
//! The CIDR parser here is the fake's own, written from the apiserver's behaviour, not
//! `mcp-types`' (see the crate docs: the fake is the oracle).

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::names;
use crate::object::validate_label_selector;
use crate::pod_spec::validate_protocol;
use crate::status::FieldError;

pub(crate) fn validate_network_policy(policy: &NetworkPolicy, errors: &mut Vec<FieldError>) {
    let spec = policy.spec.clone().unwrap_or_default();
    if let Some(selector) = &spec.pod_selector {
        validate_label_selector("spec.podSelector", selector, errors);
    }
    for (i, rule) in spec.ingress.iter().flatten().enumerate() {
        let path = format!("spec.ingress[{i}]");
        validate_rule(
            &path,
            "from",
            rule.ports.as_deref(),
            rule.from.as_deref(),
            errors,
        );
    }
    for (i, rule) in spec.egress.iter().flatten().enumerate() {
        let path = format!("spec.egress[{i}]");
        validate_rule(
            &path,
            "to",
            rule.ports.as_deref(),
            rule.to.as_deref(),
            errors,
        );
    }
    let types = spec.policy_types.clone().unwrap_or_default();
    if types.len() > 2 {
        errors.push(FieldError::invalid(
            "spec.policyTypes",
            format!("{types:?}"),
            "may not specify more than two policyTypes",
        ));
        return;
    }
    for (i, policy_type) in types.iter().enumerate() {
        if !["Egress", "Ingress"].contains(&policy_type.as_str()) {
            errors.push(FieldError::not_supported(
                format!("spec.policyTypes[{i}]"),
                policy_type,
                &["Egress", "Ingress"],
            ));
        }
    }
}

fn validate_rule(
    path: &str,
    peer_field: &str,
    ports: Option<&[NetworkPolicyPort]>,
    peers: Option<&[NetworkPolicyPeer]>,
    errors: &mut Vec<FieldError>,
) {
    for (j, port) in ports.into_iter().flatten().enumerate() {
        validate_port(&format!("{path}.ports[{j}]"), port, errors);
    }
    for (j, peer) in peers.into_iter().flatten().enumerate() {
        validate_peer(&format!("{path}.{peer_field}[{j}]"), peer, errors);
    }
}

fn validate_port(path: &str, port: &NetworkPolicyPort, errors: &mut Vec<FieldError>) {
    validate_protocol(path, port.protocol.as_deref(), errors);
    let in_range = |n: i32| (1..=65535).contains(&n);
    let range_message = "must be between 1 and 65535, inclusive";
    match (&port.port, port.end_port) {
        (Some(IntOrString::Int(n)), end) => {
            if !in_range(*n) {
                errors.push(FieldError::invalid(
                    format!("{path}.port"),
                    n.to_string(),
                    range_message,
                ));
            }
            if let Some(end) = end {
                if end < *n {
                    errors.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        end.to_string(),
                        "must be greater than or equal to `port`",
                    ));
                }
                if !in_range(end) {
                    errors.push(FieldError::invalid(
                        format!("{path}.endPort"),
                        end.to_string(),
                        range_message,
                    ));
                }
            }
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                errors.push(FieldError::invalid(
                    format!("{path}.endPort"),
                    end.to_string(),
                    "may not be specified when `port` is non-numeric",
                ));
            }
            if let Err(message) = names::iana_svc_name(name) {
                errors.push(FieldError::invalid(format!("{path}.port"), name, message));
            }
        }
        (None, Some(end)) => errors.push(FieldError::invalid(
            format!("{path}.endPort"),
            end.to_string(),
            "may not be specified when `port` is not specified",
        )),
        (None, None) => {}
    }
}

fn validate_peer(path: &str, peer: &NetworkPolicyPeer, errors: &mut Vec<FieldError>) {
    let mut set = 0;
    if let Some(selector) = &peer.pod_selector {
        set += 1;
        validate_label_selector(&format!("{path}.podSelector"), selector, errors);
    }
    if let Some(selector) = &peer.namespace_selector {
        set += 1;
        validate_label_selector(&format!("{path}.namespaceSelector"), selector, errors);
    }
    if let Some(block) = &peer.ip_block {
        set += 1;
        validate_ip_block(&format!("{path}.ipBlock"), block, errors);
    }
    if set == 0 {
        errors.push(FieldError::required(path, "must specify a peer"));
    } else if set > 1 && peer.ip_block.is_some() {
        errors.push(FieldError::forbidden(
            path,
            "may not specify both ipBlock and another peer",
        ));
    }
}

/// `ValidateIPBlock`: a valid `cidr`, and each `except` valid and a strict subset of it.
fn validate_ip_block(path: &str, block: &IPBlock, errors: &mut Vec<FieldError>) {
    if block.cidr.is_empty() {
        errors.push(FieldError::required(format!("{path}.cidr"), ""));
        return;
    }
    let Some(cidr) = check_cidr(&format!("{path}.cidr"), &block.cidr, errors) else {
        return;
    };
    for (i, text) in block.except.iter().flatten().enumerate() {
        let field = format!("{path}.except[{i}]");
        let Some(except) = check_cidr(&field, text, errors) else {
            continue;
        };
        if !cidr.contains(except.addr) || cidr.len >= except.len {
            errors.push(FieldError::invalid(
                field,
                text,
                "must be a strict subset of `cidr`",
            ));
        }
    }
}

/// A parsed CIDR: its network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cidr {
    addr: IpAddr,
    len: u32,
}

impl Cidr {
    fn bits(addr: IpAddr) -> u32 {
        if addr.is_ipv4() { 32 } else { 128 }
    }

    /// The network of `addr` with the bits beyond `len` cleared.
    fn masked(addr: IpAddr, len: u32) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }

    /// Go's `IPNet.Contains`: an address of the other family is never contained.
    fn contains(self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && Self::masked(ip, self.len) == self.addr
    }
}

/// Parses `text` as the apiserver does (sloppily: leading zeros allowed), then applies the
/// strict checks; pushes the errors and returns the network when it parsed at all.
fn check_cidr(path: &str, text: &str, errors: &mut Vec<FieldError>) -> Option<Cidr> {
    let Some((addr_text, len_text)) = text.split_once('/') else {
        errors.push(invalid_cidr(path, text));
        return None;
    };
    let strict_addr = addr_text.parse::<IpAddr>().ok();
    let Some(addr) = strict_addr.or_else(|| sloppy_v4(addr_text).map(IpAddr::V4)) else {
        errors.push(invalid_cidr(path, text));
        return None;
    };
    let len = match len_text.parse::<u32>() {
        Ok(len) if len_text.bytes().all(|b| b.is_ascii_digit()) && len <= Cidr::bits(addr) => len,
        _ => {
            errors.push(invalid_cidr(path, text));
            return None;
        }
    };
    let network = Cidr {
        addr: Cidr::masked(addr, len),
        len,
    };
    let strict_len = len_text == len.to_string();
    if strict_addr.is_none() || !strict_len {
        errors.push(FieldError::invalid(
            path,
            text,
            "must not have leading 0s in IP or prefix length",
        ));
    } else if matches!(addr, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()) {
        errors.push(FieldError::invalid(
            path,
            text,
            "must not have an IPv4-mapped IPv6 address",
        ));
    } else if network.addr != addr {
        errors.push(FieldError::invalid(
            path,
            text,
            "must not have bits set beyond the prefix length",
        ));
    }
    Some(network)
}

fn invalid_cidr(path: &str, text: &str) -> FieldError {
    FieldError::invalid(
        path,
        text,
        "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
    )
}

/// An IPv4 address whose parts may have leading zeros (read as decimal, as Go's sloppy
/// parser does).
fn sloppy_v4(text: &str) -> Option<Ipv4Addr> {
    let parts: Vec<u8> = text
        .split('.')
        .map(|p| {
            (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse::<u8>().ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    let [a, b, c, d] = parts[..] else {
        return None;
    };
    Some(Ipv4Addr::new(a, b, c, d))
}

pub(crate) fn default_network_policy(policy: &mut NetworkPolicy) {
    let spec = policy.spec.get_or_insert_with(Default::default);
    spec.pod_selector.get_or_insert_with(Default::default);
    if spec.policy_types.as_ref().is_none_or(Vec::is_empty) {
        let mut types = vec!["Ingress".to_owned()];
        // Like the apiserver: an empty `egress: []` does not make an egress policy.
        if spec.egress.as_ref().is_some_and(|rules| !rules.is_empty()) {
            types.push("Egress".to_owned());
        }
        spec.policy_types = Some(types);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn errors_of(spec: &Value) -> Vec<(String, String)> {
        let policy: NetworkPolicy =
            serde_json::from_value(json!({"metadata": {"name": "np"}, "spec": spec})).unwrap();
        let mut errors = Vec::new();
        validate_network_policy(&policy, &mut errors);
        errors
            .into_iter()
            .map(|e| (e.field.clone(), e.body()))
            .collect()
    }

    fn egress_blocks(blocks: &Value) -> Vec<(String, String)> {
        errors_of(&json!({"egress": [{"to": blocks}]}))
    }

    #[test]
    fn an_except_must_be_a_strict_subset_of_its_cidr() {
        let ok = egress_blocks(&json!([
            {"ipBlock": {"cidr": "0.0.0.0/0", "except": ["169.254.0.0/16"]}},
            {"ipBlock": {"cidr": "::/0", "except": ["fe80::/10", "fd00:ec2::254/128"]}},
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}},
        ]));
        assert_eq!(ok, []);
        let bad = egress_blocks(&json!([
            // Equal, outside, wider, other family.
            {"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.0.0.0/8", "11.0.0.0/16", "0.0.0.0/0", "fe80::/10"]}},
        ]));
        let fields: Vec<&str> = bad.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            (0..4)
                .map(|i| format!("spec.egress[0].to[0].ipBlock.except[{i}]"))
                .collect::<Vec<_>>()
        );
        assert!(
            bad.iter()
                .all(|(_, d)| d.contains("must be a strict subset of `cidr`"))
        );
    }

    #[test]
    fn cidrs_are_checked_in_their_strict_form() {
        let cases = [
            ("", "Required value"),
            ("10.0.0.0", "must be a valid CIDR value"),
            ("10.0.0.0/33", "must be a valid CIDR value"),
            ("example.com/8", "must be a valid CIDR value"),
            ("010.0.0.0/8", "must not have leading 0s"),
            ("10.0.0.0/08", "must not have leading 0s"),
            (
                "::ffff:10.0.0.0/104",
                "must not have an IPv4-mapped IPv6 address",
            ),
            (
                "10.0.0.1/8",
                "must not have bits set beyond the prefix length",
            ),
            (
                "2001:db8::1/32",
                "must not have bits set beyond the prefix length",
            ),
        ];
        for (cidr, want) in cases {
            let errors = egress_blocks(&json!([{"ipBlock": {"cidr": cidr}}]));
            assert_eq!(errors.len(), 1, "{cidr}: {errors:?}");
            assert_eq!(errors[0].0, "spec.egress[0].to[0].ipBlock.cidr", "{cidr}");
            assert!(errors[0].1.contains(want), "{cidr}: {errors:?}");
        }
        // A sloppy except is reported, and still compared with its cidr.
        let errors =
            egress_blocks(&json!([{"ipBlock": {"cidr": "10.0.0.0/8", "except": ["10.1.0.1/16"]}}]));
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].1.contains("bits set beyond"));
    }

    #[test]
    fn ports_then_peers_ingress_then_egress_types_last() {
        let errors = errors_of(&json!({
            "policyTypes": ["Ingress", "Egress", "Sideways"],
            "ingress": [{"from": [{}], "ports": [{"port": 0}]}],
            "egress": [{
                "to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}],
                "ports": [
                    {"port": 80, "endPort": 79},
                    {"port": "web", "endPort": 90},
                    {"endPort": 90},
                    {"port": "not a name!"}
                ]
            }]
        }));
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.ingress[0].ports[0].port",
                "spec.ingress[0].from[0]",
                "spec.egress[0].ports[0].endPort",
                "spec.egress[0].ports[1].endPort",
                "spec.egress[0].ports[2].endPort",
                "spec.egress[0].ports[3].port",
                "spec.egress[0].to[0]",
                "spec.policyTypes",
            ]
        );
    }
}
