//! Where a server may connect: one egress model for every backend.
//!
//! In a spec (`egress:`):
//! - `none`: no network at all (the server is still reachable through `connect`);
//! - `open`: outbound allowed except the link-local / cloud-metadata ranges ([`METADATA_CIDRS`]);
//! - `{ allow: [...] }`: only the listed destinations, each a CIDR or a host name, with optional
//!   ports (no ports: every port). Host names are admitted by an egress proxy the backend runs;
//!   `*.example.com` admits every name under `example.com` (not `example.com` itself).
//! - a bare list (`[10.0.0.0/8, api.github.com:443]`) is shorthand for `allow`.
//!
//! A spec that sets nothing gets the backend's configured default (`open` unless configured
//! `none`): [`McpServer::effective_egress`](crate::McpServer::effective_egress).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::validation::FieldError;

/// Link-local ranges, cloud metadata endpoints included (169.254.169.254, fd00:ec2::254 lies
/// outside fe80::/10 and is listed on its own). Denied by `open`; reachable only when an allow
/// rule names them.
pub const METADATA_CIDRS: [&str; 3] = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128"];

/// The egress policy of a server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub enum Egress {
    /// No network at all.
    None,
    /// Outbound allowed except [`METADATA_CIDRS`].
    #[default]
    Open,
    /// Only these destinations.
    Allow(Vec<EgressRule>),
}

/// One allowed destination: exactly one of `cidr` and `host`, with optional ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EgressRule {
    /// An address range, `10.0.0.0/8` or an IPv6 CIDR.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    /// A host name (`api.github.com`) or a wildcard (`*.github.com`); never an IP literal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// TCP ports; empty means every port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

impl EgressRule {
    /// A CIDR rule.
    pub fn cidr(cidr: impl Into<String>, ports: impl IntoIterator<Item = u16>) -> Self {
        Self {
            cidr: Some(cidr.into()),
            host: None,
            ports: ports.into_iter().collect(),
        }
    }

    /// A host-name rule.
    pub fn host(host: impl Into<String>, ports: impl IntoIterator<Item = u16>) -> Self {
        Self {
            cidr: None,
            host: Some(host.into()),
            ports: ports.into_iter().collect(),
        }
    }

    /// Whether `port` is allowed by this rule's ports.
    pub fn allows_port(&self, port: u16) -> bool {
        self.ports.is_empty() || self.ports.contains(&port)
    }

    /// Whether this host rule admits `name` (lower-cased, no trailing dot). Always false for a
    /// CIDR rule.
    pub fn matches_host(&self, name: &str) -> bool {
        let Some(host) = &self.host else {
            return false;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        match host.strip_prefix("*.") {
            Some(suffix) => name
                .strip_suffix(suffix)
                .is_some_and(|head| head.len() > 1 && head.ends_with('.')),
            None => name == host,
        }
    }

    /// Whether this CIDR rule contains `ip`. Always false for a host rule.
    pub fn contains_ip(&self, ip: IpAddr) -> bool {
        self.cidr
            .as_deref()
            .and_then(parse_cidr)
            .is_some_and(|(net, len)| cidr_contains(net, len, ip))
    }

    fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        let mut push = |field: &str, message: String| {
            errors.push(FieldError {
                path: format!("{path}{field}"),
                message,
            });
        };
        match (&self.cidr, &self.host) {
            (Some(_), Some(_)) => push("", "give either cidr or host, not both".into()),
            (None, None) => push("", "give cidr or host".into()),
            (Some(cidr), None) => {
                if let Err(e) = crate::net::check_cidr(cidr) {
                    push(".cidr", e);
                }
            }
            (None, Some(host)) => {
                if let Err(e) = check_host(host) {
                    push(".host", e);
                }
            }
        }
        for (i, p) in self.ports.iter().enumerate() {
            if *p == 0 {
                push(&format!(".ports[{i}]"), "port 0 is not a port".into());
            } else if self.ports[..i].contains(p) {
                push(&format!(".ports[{i}]"), format!("port {p} is listed twice"));
            }
        }
    }
}

impl fmt::Display for EgressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.cidr.as_deref().or(self.host.as_deref()).unwrap_or("?"))?;
        if !self.ports.is_empty() {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            write!(f, ":{}", ports.join(","))?;
        }
        Ok(())
    }
}

impl Egress {
    /// The allow rules (empty for `none` and `open`).
    pub fn rules(&self) -> &[EgressRule] {
        match self {
            Self::Allow(rules) => rules,
            Self::None | Self::Open => &[],
        }
    }

    /// The CIDR rules of an allow-list.
    pub fn cidr_rules(&self) -> impl Iterator<Item = &EgressRule> {
        self.rules().iter().filter(|r| r.cidr.is_some())
    }

    /// The host-name rules of an allow-list (these need an egress proxy).
    pub fn host_rules(&self) -> impl Iterator<Item = &EgressRule> {
        self.rules().iter().filter(|r| r.host.is_some())
    }

    /// Whether the policy names hosts, so that the backend must route through a proxy.
    pub fn needs_proxy(&self) -> bool {
        self.host_rules().next().is_some()
    }

    /// Whether the server itself needs DNS: with `open`, or with CIDR rules (a name it resolves
    /// may land in an allowed range). Host-name rules alone do not: the proxy resolves them.
    pub fn needs_dns(&self) -> bool {
        match self {
            Self::None => false,
            Self::Open => true,
            Self::Allow(_) => self.cidr_rules().next().is_some(),
        }
    }

    /// Whether a connection to `ip:port` is allowed (for `open`: anything outside
    /// [`METADATA_CIDRS`]; for `allow`: a CIDR rule that contains it). Host rules never admit
    /// an IP literal: a proxy asked for an address outside the CIDR rules refuses it.
    pub fn allows_ip(&self, ip: IpAddr, port: u16) -> bool {
        match self {
            Self::None => false,
            Self::Open => !is_metadata(ip),
            Self::Allow(rules) => rules
                .iter()
                .any(|r| r.contains_ip(ip) && r.allows_port(port)),
        }
    }

    /// Whether a connection to host name `name` on `port` is allowed by name (`open` admits any
    /// name; the addresses it resolves to must still pass [`Egress::allows_ip`]).
    pub fn allows_host(&self, name: &str, port: u16) -> bool {
        match self {
            Self::None => false,
            Self::Open => true,
            Self::Allow(rules) => rules
                .iter()
                .any(|r| r.matches_host(name) && r.allows_port(port)),
        }
    }

    /// A short human-readable form: `none`, `open`, `allow 10.0.0.0/8, api.github.com:443`.
    pub fn summary(&self) -> String {
        match self {
            Self::None => "none".into(),
            Self::Open => "open (metadata denied)".into(),
            Self::Allow(rules) => {
                let rules: Vec<String> = rules.iter().map(ToString::to_string).collect();
                format!("allow {}", rules.join(", "))
            }
        }
    }

    /// Appends every problem, with paths under `path` (`egress.allow[1].host`).
    pub fn check(&self, path: &str, errors: &mut Vec<FieldError>) {
        if let Self::Allow(rules) = self {
            if rules.is_empty() {
                errors.push(FieldError {
                    path: format!("{path}.allow"),
                    message: "an empty allow-list admits nothing: write `egress: none`".into(),
                });
            }
            for (i, r) in rules.iter().enumerate() {
                r.check(&format!("{path}.allow[{i}]"), errors);
                if rules[..i].contains(r) {
                    errors.push(FieldError {
                        path: format!("{path}.allow[{i}]"),
                        message: format!("{r} is listed twice"),
                    });
                }
            }
        }
    }
}

/// Whether `ip` lies in [`METADATA_CIDRS`].
pub fn is_metadata(ip: IpAddr) -> bool {
    METADATA_CIDRS
        .iter()
        .filter_map(|c| parse_cidr(c))
        .any(|(net, len)| cidr_contains(net, len, ip))
}

/// A CIDR's network address and prefix length, `None` when it does not parse.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (addr, len) = s.split_once('/')?;
    let addr: IpAddr = addr.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    (len <= if addr.is_ipv4() { 32 } else { 128 }).then_some((addr, len))
}

fn cidr_contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    // An IPv4-mapped IPv6 address is the IPv4 address it maps.
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Checks a host rule: a DNS name (letters, digits, `-`, dots; at most 253 characters),
/// optionally `*.`-prefixed, never an IP literal.
///
/// # Errors
/// A human-readable reason.
pub fn check_host(host: &str) -> Result<(), String> {
    if host.parse::<IpAddr>().is_ok() || host.trim_matches(['[', ']']).parse::<IpAddr>().is_ok() {
        return Err(format!(
            "{host:?} is an IP address: write it as a cidr (`{host}/32`)"
        ));
    }
    let name = host.strip_prefix("*.").unwrap_or(host);
    if name.contains('*') {
        return Err(format!(
            "{host:?}: a wildcard is only allowed as the first label (`*.example.com`)"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || lower.len() > 253 {
        return Err(format!("{host:?} must be 1 to 253 characters"));
    }
    for label in lower.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "{host:?} is not a host name (labels of letters, digits and '-', separated by dots)"
            ));
        }
    }
    Ok(())
}

impl Serialize for Egress {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Allow<'a> {
            allow: &'a [EgressRule],
        }
        match self {
            Self::None => s.serialize_str("none"),
            Self::Open => s.serialize_str("open"),
            Self::Allow(rules) => Allow { allow: rules }.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Egress {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum RawRule {
            Text(String),
            Rule(EgressRule),
        }
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Allow {
            allow: Vec<RawRule>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Word(String),
            List(Vec<RawRule>),
            Allow(Allow),
        }
        let rules = |raw: Vec<RawRule>| -> Result<Vec<EgressRule>, D::Error> {
            raw.into_iter()
                .map(|r| match r {
                    RawRule::Rule(r) => Ok(r),
                    RawRule::Text(t) => parse_rule(&t).map_err(serde::de::Error::custom),
                })
                .collect()
        };
        match Raw::deserialize(d).map_err(|_| {
            serde::de::Error::custom(
                "expected `none`, `open`, `{ allow: [...] }` or a list of CIDRs and host[:port]",
            )
        })? {
            Raw::Word(w) if w == "none" => Ok(Self::None),
            Raw::Word(w) if w == "open" => Ok(Self::Open),
            Raw::Word(w) => Err(serde::de::Error::custom(format!(
                "{w:?}: expected `none`, `open` or an allow-list"
            ))),
            Raw::List(raw) | Raw::Allow(Allow { allow: raw }) => Ok(Self::Allow(rules(raw)?)),
        }
    }
}

/// Parses the short rule form: a CIDR (`10.0.0.0/8`), a host (`api.github.com`), either with
/// `:port` (`api.github.com:443`; a bracketed IPv6 CIDR `[fd00::/8]:443`).
///
/// # Errors
/// When a port is not a number.
pub fn parse_rule(text: &str) -> Result<EgressRule, String> {
    let (target, port) = if let Some(rest) = text.strip_prefix('[') {
        match rest.split_once(']') {
            Some((inner, "")) => (inner, None),
            Some((inner, tail)) => (inner, tail.strip_prefix(':')),
            None => (text, None),
        }
    } else if text.matches(':').count() == 1 {
        let (t, p) = text.split_once(':').unwrap_or((text, ""));
        (t, Some(p))
    } else {
        (text, None)
    };
    let ports = match port {
        Some(p) => vec![
            p.parse::<u16>()
                .map_err(|_| format!("{text:?}: port {p:?} is not a number"))?,
        ],
        None => Vec::new(),
    };
    Ok(if target.contains('/') {
        EgressRule::cidr(target, ports)
    } else {
        EgressRule::host(target, ports)
    })
}

/// How an instance's egress policy is enforced, as its backend reports it in the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EgressPosture {
    /// The effective policy (the spec's, or the backend's default).
    pub policy: Egress,
    /// What enforces it, e.g. `docker network none`, `NetworkPolicy mcp-x + egress proxy`,
    /// `network namespace (no interfaces)`, or `not enforced: host network`.
    pub enforced_by: String,
    /// Whether the metadata ranges are unreachable for this instance.
    pub metadata_blocked: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn check(e: &Egress) -> Vec<String> {
        let mut errors = Vec::new();
        e.check("egress", &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[rstest]
    #[case("none", Egress::None)]
    #[case("open", Egress::Open)]
    #[case("[10.0.0.0/8]", Egress::Allow(vec![EgressRule::cidr("10.0.0.0/8", [])]))]
    #[case(
        "[api.github.com:443, '[fd00::/8]:53']",
        Egress::Allow(vec![EgressRule::host("api.github.com", [443]), EgressRule::cidr("fd00::/8", [53])])
    )]
    #[case(
        "{ allow: [ { host: '*.pypi.org', ports: [443, 80] }, 192.168.1.0/24:5432 ] }",
        Egress::Allow(vec![EgressRule::host("*.pypi.org", [443, 80]), EgressRule::cidr("192.168.1.0/24", [5432])])
    )]
    fn yaml_forms(#[case] yaml: &str, #[case] want: Egress) {
        let got: Egress = serde_saphyr::from_str(yaml).unwrap();
        assert_eq!(got, want);
        // The canonical form reads back to the same policy.
        let json = serde_json::to_string(&got).unwrap();
        assert_eq!(serde_json::from_str::<Egress>(&json).unwrap(), want);
    }

    #[rstest]
    #[case("closed")]
    #[case("{ deny: [] }")]
    #[case("[ 'h:x' ]")]
    #[case("[ { cidr: 10.0.0.0/8, bogus: 1 } ]")]
    fn yaml_refusals(#[case] yaml: &str) {
        assert!(serde_saphyr::from_str::<Egress>(yaml).is_err(), "{yaml}");
    }

    #[rstest]
    #[case(Egress::Allow(vec![]), "egress.allow: an empty allow-list")]
    #[case(Egress::Allow(vec![EgressRule::cidr("10.0.0.0/33", [])]), "egress.allow[0].cidr:")]
    #[case(Egress::Allow(vec![EgressRule::host("10.1.2.3", [])]), "egress.allow[0].host: \"10.1.2.3\" is an IP address")]
    #[case(Egress::Allow(vec![EgressRule::host("a.*.com", [])]), "egress.allow[0].host:")]
    #[case(Egress::Allow(vec![EgressRule::host("bad_name.com", [])]), "egress.allow[0].host:")]
    #[case(Egress::Allow(vec![EgressRule::host("a.com", [0])]), "egress.allow[0].ports[0]: port 0")]
    #[case(Egress::Allow(vec![EgressRule::host("a.com", [443, 443])]), "egress.allow[0].ports[1]: port 443 is listed twice")]
    #[case(Egress::Allow(vec![EgressRule { cidr: None, host: None, ports: vec![] }]), "egress.allow[0]: give cidr or host")]
    #[case(Egress::Allow(vec![EgressRule::host("a.com", []), EgressRule::host("a.com", [])]), "egress.allow[1]: a.com is listed twice")]
    fn validation_names_the_field(#[case] e: Egress, #[case] want: &str) {
        let errors = check(&e);
        assert!(errors.iter().any(|m| m.starts_with(want)), "{errors:?}");
    }

    #[test]
    fn valid_policies_pass() {
        for e in [
            Egress::None,
            Egress::Open,
            Egress::Allow(vec![
                EgressRule::host("*.github.com", [443]),
                EgressRule::cidr("10.0.0.0/8", []),
            ]),
        ] {
            assert!(check(&e).is_empty(), "{e:?}");
        }
    }

    #[test]
    fn decisions() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let open = Egress::Open;
        assert!(!open.allows_ip(ip("169.254.169.254"), 80));
        assert!(!open.allows_ip(ip("::ffff:169.254.169.254"), 80));
        assert!(!open.allows_ip(ip("fd00:ec2::254"), 80));
        assert!(open.allows_ip(ip("93.184.216.34"), 443));
        assert!(open.allows_host("example.com", 443));
        assert!(!Egress::None.allows_host("example.com", 443));
        assert!(!Egress::None.allows_ip(ip("10.0.0.1"), 443));

        let allow = Egress::Allow(vec![
            EgressRule::host("*.github.com", [443]),
            EgressRule::host("pypi.org", []),
            EgressRule::cidr("10.0.0.0/8", [5432]),
        ]);
        assert!(allow.allows_host("api.github.com", 443));
        assert!(allow.allows_host("API.GitHub.com.", 443));
        assert!(
            !allow.allows_host("github.com", 443),
            "the wildcard needs a label"
        );
        assert!(!allow.allows_host("evilgithub.com", 443));
        assert!(!allow.allows_host("api.github.com", 80));
        assert!(allow.allows_host("pypi.org", 8443));
        assert!(allow.allows_ip(ip("10.9.8.7"), 5432));
        assert!(!allow.allows_ip(ip("10.9.8.7"), 22));
        assert!(!allow.allows_ip(ip("11.0.0.1"), 5432));
        assert!(!allow.allows_ip(ip("169.254.169.254"), 80));
        assert!(allow.needs_proxy() && allow.needs_dns());
        let hosts_only = Egress::Allow(vec![EgressRule::host("pypi.org", [443])]);
        assert!(hosts_only.needs_proxy() && !hosts_only.needs_dns());
        assert_eq!(
            allow.summary(),
            "allow *.github.com:443, pypi.org, 10.0.0.0/8:5432"
        );
    }
}
