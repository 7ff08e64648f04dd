//! Where a client's policy comes from ([`PolicySource`], [`StaticPolicy`]), how a refusal is
//! answered ([`Refusal`]), and the decision for one destination ([`Target`], [`admit`]).
//!
//! | destination                         | admitted when                                          |
//! |-------------------------------------|--------------------------------------------------------|
//! | any, policy `none`                  | never                                                  |
//! | IP literal                          | `Egress::allows_ip` (a CIDR rule, or `open` outside the metadata ranges) |
//! | host name                           | `Egress::allows_host`, then every resolved address outside the metadata ranges (or inside a CIDR rule that names them) |
//!
//! The addresses returned by [`admit`] are the ones checked: the proxy connects to exactly
//! those, so a name whose DNS answer changes between the check and the connection (DNS
//! rebinding) cannot lead anywhere unchecked.

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use futures::future::BoxFuture;
use http::StatusCode;
use mcp_types::egress::{Egress, is_metadata};

use crate::resolve::Resolve;

/// Where the proxy learns which destinations a client may reach.
///
/// `peer` is the client's address; `proxy_user` the user name of its `Proxy-Authorization:
/// Basic` header, when it sent one (a source can identify instances by it).
pub trait PolicySource: Send + Sync + 'static {
    /// The policy for this client, or the refusal to answer it with.
    fn policy<'a>(
        &'a self,
        peer: SocketAddr,
        proxy_user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Egress, Refusal>>;
}

/// One policy for every client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticPolicy(pub Egress);

impl StaticPolicy {
    /// The source answering `policy` to everyone.
    pub fn new(policy: Egress) -> Self {
        Self(policy)
    }
}

impl PolicySource for StaticPolicy {
    fn policy<'a>(
        &'a self,
        _peer: SocketAddr,
        _proxy_user: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Egress, Refusal>> {
        let policy = self.0.clone();
        Box::pin(async move { Ok(policy) })
    }
}

/// A request the proxy answers itself, with `status` and a short `reason` (sent as the
/// [`REFUSAL_HEADER`] or [`ERROR_HEADER`] and as the body, and logged with the target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The HTTP status of the answer.
    pub status: StatusCode,
    /// Why, in a few words; printable ASCII (anything else is replaced when sent).
    pub reason: String,
}

/// Header carrying the reason of a policy refusal (403, 407).
pub const REFUSAL_HEADER: &str = "mcp-egress-refused";
/// Header carrying the reason of any other answer the proxy makes itself (400, 502, 504, ...).
pub const ERROR_HEADER: &str = "mcp-egress-error";

impl Refusal {
    /// 403: the policy does not admit the destination.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, reason)
    }

    /// 407: the client must identify itself (`Proxy-Authorization: Basic`) first.
    pub fn authentication_required(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::PROXY_AUTHENTICATION_REQUIRED, reason)
    }

    /// 400: the request is not one a forward proxy can serve.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// 502: the destination was admitted but could not be resolved or reached.
    pub fn bad_gateway(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_GATEWAY, reason)
    }

    /// 504: connecting to the destination took longer than the connect timeout.
    pub fn gateway_timeout(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, reason)
    }

    /// Any status.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// Whether the policy refused (403/407), as opposed to a failure to serve an admitted
    /// request.
    pub fn is_policy_refusal(&self) -> bool {
        matches!(
            self.status,
            StatusCode::FORBIDDEN | StatusCode::PROXY_AUTHENTICATION_REQUIRED
        )
    }

    /// The reason as a header value: printable ASCII only, at most 200 characters.
    pub fn header_text(&self) -> String {
        self.reason
            .chars()
            .map(|c| {
                if c.is_ascii_graphic() || c == ' ' {
                    c
                } else {
                    '?'
                }
            })
            .take(200)
            .collect()
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.reason)
    }
}

impl std::error::Error for Refusal {}

/// A destination's host: a name (lower-cased, no trailing dot) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name.
    Name(String),
    /// An address literal (`10.0.0.1`, `[fd00::1]` without the brackets).
    Ip(IpAddr),
}

/// Where a client wants to go: host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host.
    pub host: Host,
    /// The TCP port.
    pub port: u16,
}

impl Target {
    /// Parses `host:port` (a CONNECT authority; `[v6]:port` for IPv6 literals).
    ///
    /// # Errors
    /// A 400 [`Refusal`] naming what is wrong.
    pub fn parse_authority(authority: &str) -> Result<Self, Refusal> {
        let bad = |why: &str| Refusal::bad_request(format!("target {authority:?}: {why}"));
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| bad("expected host:port"))?;
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
        Self::from_parts(host, port).map_err(|why| bad(&why))
    }

    /// A target from a host (a name, an IPv4 literal or a bracketed IPv6 literal) and a port.
    ///
    /// # Errors
    /// The reason when `host` is neither a DNS name nor an IP literal.
    pub fn from_parts(host: &str, port: u16) -> Result<Self, String> {
        if let Some(inner) = host.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| "an unclosed [ in the host".to_owned())?;
            let ip: IpAddr = inner
                .parse()
                .map_err(|_| format!("{inner:?} is not an IPv6 address"))?;
            return Ok(Self {
                host: Host::Ip(ip),
                port,
            });
        }
        if let Ok(ip) = host.parse::<IpAddr>() {
            return Ok(Self {
                host: Host::Ip(ip),
                port,
            });
        }
        let name = host.trim_end_matches('.').to_ascii_lowercase();
        mcp_types::egress::check_host(&name)?;
        if name.starts_with("*.") {
            return Err(format!("{host:?} is a wildcard, not a host"));
        }
        Ok(Self {
            host: Host::Name(name),
            port,
        })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Name(n) => write!(f, "{n}:{}", self.port),
            Host::Ip(ip) => write!(f, "{}", SocketAddr::new(*ip, self.port)),
        }
    }
}

/// Decides whether `policy` admits `target` and returns the addresses to connect to (already
/// checked). Names are resolved through `resolver`; nothing is connected to here.
///
/// # Errors
/// A 403 [`Refusal`] when the policy refuses (a name not listed, an address outside the CIDR
/// rules, a name resolving into the metadata ranges), a 502 when the name does not resolve.
pub async fn admit(
    policy: &Egress,
    target: &Target,
    resolver: &dyn Resolve,
) -> Result<Vec<SocketAddr>, Refusal> {
    let port = target.port;
    if *policy == Egress::None {
        return Err(Refusal::forbidden(format!(
            "{target}: egress is none for this client"
        )));
    }
    match &target.host {
        Host::Ip(ip) => {
            if policy.allows_ip(*ip, port) {
                Ok(vec![SocketAddr::new(*ip, port)])
            } else if is_metadata(*ip) {
                Err(Refusal::forbidden(format!(
                    "{target}: link-local/metadata addresses are denied"
                )))
            } else {
                Err(Refusal::forbidden(format!(
                    "{target}: address not in the allowed CIDRs"
                )))
            }
        }
        Host::Name(name) => {
            if !policy.allows_host(name, port) {
                return Err(Refusal::forbidden(format!("{target}: host not allowed")));
            }
            let addrs = resolver
                .resolve(name)
                .await
                .map_err(|e| Refusal::bad_gateway(format!("{target}: cannot resolve: {e}")))?;
            if addrs.is_empty() {
                return Err(Refusal::bad_gateway(format!(
                    "{target}: the name has no address"
                )));
            }
            // One bad address refuses the name: a mixed answer is what rebinding looks like.
            if let Some(ip) = addrs
                .iter()
                .find(|ip| is_metadata(**ip) && !policy.allows_ip(**ip, port))
            {
                return Err(Refusal::forbidden(format!(
                    "{target}: resolves to {ip}, a link-local/metadata address"
                )));
            }
            Ok(addrs
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect())
        }
    }
}

/// The user name of a `Proxy-Authorization: Basic` value (`None` for another scheme).
///
/// # Errors
/// A 400 [`Refusal`] when the Basic credentials do not decode to `user:password`.
pub fn basic_user(value: &str) -> Result<Option<String>, Refusal> {
    use base64::Engine as _;
    let value = value.trim();
    let Some((scheme, credentials)) = value.split_once(' ') else {
        return Ok(None);
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(None);
    }
    let bad = || Refusal::bad_request("Proxy-Authorization: malformed Basic credentials");
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials.trim())
        .map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (user, _password) = text.split_once(':').ok_or_else(bad)?;
    Ok(Some(user.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::StaticResolver;
    use mcp_types::egress::EgressRule;

    fn target(s: &str) -> Target {
        Target::parse_authority(s).unwrap()
    }

    #[test]
    fn authorities() {
        assert_eq!(
            target("Api.Example.com.:443"),
            Target {
                host: Host::Name("api.example.com".into()),
                port: 443
            }
        );
        assert_eq!(target("[::1]:80").host, Host::Ip("::1".parse().unwrap()));
        assert_eq!(target("10.1.2.3:5432").to_string(), "10.1.2.3:5432");
        for bad in [
            "example.com",
            "example.com:0",
            "example.com:x",
            "[::1:80",
            "bad_name:80",
            ":80",
            "*.x.com:80",
        ] {
            let r = Target::parse_authority(bad).unwrap_err();
            assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
            assert!(r.reason.contains("target"), "{r}");
        }
    }

    #[tokio::test]
    async fn decisions() {
        let resolver = StaticResolver::new([
            ("allowed.test", vec!["127.0.0.1".parse().unwrap()]),
            ("meta.test", vec!["169.254.169.254".parse().unwrap()]),
            (
                "mixed.test",
                vec![
                    "127.0.0.1".parse().unwrap(),
                    "169.254.169.254".parse().unwrap(),
                ],
            ),
        ]);
        let allow = Egress::Allow(vec![
            EgressRule::host("allowed.test", [443]),
            EgressRule::host("meta.test", []),
            EgressRule::cidr("10.0.0.0/8", [5432]),
        ]);
        let ok = admit(&allow, &target("allowed.test:443"), &resolver).await;
        assert_eq!(ok.unwrap(), vec!["127.0.0.1:443".parse().unwrap()]);
        for (t, want) in [
            ("allowed.test:80", "host not allowed"),
            ("other.test:443", "host not allowed"),
            ("meta.test:80", "link-local/metadata"),
            ("11.0.0.1:5432", "not in the allowed CIDRs"),
            ("10.0.0.1:22", "not in the allowed CIDRs"),
            ("169.254.169.254:80", "link-local/metadata"),
        ] {
            let r = admit(&allow, &target(t), &resolver).await.unwrap_err();
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{t}");
            assert!(r.reason.contains(want), "{t}: {r}");
        }
        assert!(
            admit(&allow, &target("10.2.3.4:5432"), &resolver)
                .await
                .is_ok()
        );

        let open = Egress::Open;
        assert!(
            admit(&open, &target("allowed.test:1"), &resolver)
                .await
                .is_ok()
        );
        for t in ["meta.test:80", "mixed.test:80", "[fe80::1]:80"] {
            let r = admit(&open, &target(t), &resolver).await.unwrap_err();
            assert_eq!(r.status, StatusCode::FORBIDDEN, "{t}");
        }
        let r = admit(&open, &target("unknown.test:80"), &resolver)
            .await
            .unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_GATEWAY);

        let r = admit(&Egress::None, &target("allowed.test:443"), &resolver).await;
        assert!(r.unwrap_err().reason.contains("egress is none"));

        // A CIDR rule that names the metadata range admits it: the rule is explicit.
        let explicit = Egress::Allow(vec![
            EgressRule::host("meta.test", []),
            EgressRule::cidr("169.254.169.254/32", []),
        ]);
        assert!(
            admit(&explicit, &target("meta.test:80"), &resolver)
                .await
                .is_ok()
        );
    }

    #[test]
    fn basic_user_names() {
        // "mcp-x-1:secret"
        assert_eq!(
            basic_user("Basic bWNwLXgtMTpzZWNyZXQ=").unwrap().as_deref(),
            Some("mcp-x-1")
        );
        assert_eq!(basic_user("Bearer abc").unwrap(), None);
        assert_eq!(basic_user("garbage").unwrap(), None);
        assert!(basic_user("Basic !!!").is_err());
        // "nocolon"
        assert!(basic_user("Basic bm9jb2xvbg==").is_err());
    }

    #[test]
    fn header_text_is_printable() {
        let r = Refusal::forbidden("a\r\nb\u{e9}");
        assert_eq!(r.header_text(), "a??b?");
    }
}
