//! How the proxy turns a host name into addresses: a pluggable [`Resolve`], with the system's
//! DNS configuration ([`SystemResolver`]: `/etc/resolv.conf` and `/etc/hosts`, read by
//! hickory-resolver, so a static binary in a `FROM scratch` image resolves without glibc's NSS
//! modules) and a fixed table ([`StaticResolver`], for tests and for pinning names).

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;

use futures::future::BoxFuture;
use hickory_resolver::TokioResolver;

/// Resolves a host name (lower-cased, no trailing dot) to its addresses.
pub trait Resolve: Send + Sync + 'static {
    /// Every address of `name` (IPv4 and IPv6); an error when the name does not resolve.
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The resolver of the machine (or container) the proxy runs on.
#[derive(Clone)]
pub struct SystemResolver {
    inner: TokioResolver,
}

impl std::fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemResolver")
    }
}

impl SystemResolver {
    /// Reads the system configuration (`/etc/resolv.conf`, `/etc/hosts`).
    ///
    /// # Errors
    /// When the configuration cannot be read or parsed.
    pub fn from_system_conf() -> io::Result<Self> {
        let inner = TokioResolver::builder_tokio()
            .and_then(hickory_resolver::ResolverBuilder::build)
            .map_err(|e| io::Error::other(format!("reading the DNS configuration: {e}")))?;
        Ok(Self { inner })
    }
}

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            // A trailing dot makes the name absolute: no search domains for a name the
            // policy matched as written (ndots:5 in a pod would otherwise try cluster suffixes).
            let fqdn = if name.contains('.') {
                format!("{name}.")
            } else {
                name.to_owned()
            };
            let lookup = self
                .inner
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e.to_string()))?;
            Ok(lookup.iter().collect())
        })
    }
}

/// A fixed table of names; any other name does not resolve.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    names: BTreeMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// The table from `(name, addresses)` pairs.
    pub fn new<N: Into<String>>(entries: impl IntoIterator<Item = (N, Vec<IpAddr>)>) -> Self {
        Self {
            names: entries
                .into_iter()
                .map(|(n, a)| (n.into().to_ascii_lowercase(), a))
                .collect(),
        }
    }
}

impl Resolve for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.names.get(name).cloned().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such name"))
        });
        Box::pin(async move { found })
    }
}
