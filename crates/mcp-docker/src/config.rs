//! `DockerConfig`: where the engine is, which network instances join, where secrets live, the
//! default egress policy and the egress proxy image.

use std::path::PathBuf;
use std::time::Duration;

use garde::Validate;
use mcp_types::Egress;
use serde::{Deserialize, Serialize};

/// The default engine socket.
pub const DEFAULT_SOCKET_PATH: &str = "/var/run/docker.sock";
/// The default network every instance joins.
pub const DEFAULT_NETWORK: &str = "mcpctl-network";
/// How long connecting to the engine (version negotiation and the network check) may take
/// before the engine counts as unavailable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long any later request may wait for the engine's response headers (a busy engine
/// creating many containers at once can be slow; a stop waits its grace period on top).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(120);

/// How to reach the Docker engine and how to run instances on it.
///
/// In YAML or JSON (camelCase, unknown fields refused):
///
/// ```yaml
/// socketPath: /var/run/docker.sock   # default
/// host: 10.0.0.5                     # TCP instead of the socket (with port)
/// port: 2375
/// network: mcpctl-network            # default; created if missing
/// secretsDir: /etc/mcpctl/secrets    # <dir>/<secret>/<key> files for secretRef env values
/// defaultEgress: open                # or none: the egress of specs that set none
/// egressProxyImage: my/proxy:1       # default: build mcp-egress-proxy:local from source
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DockerConfig {
    /// Unix socket of the engine (used unless `host` is set).
    #[serde(default = "default_socket_path")]
    #[garde(custom(absolute_socket))]
    pub socket_path: PathBuf,
    /// Engine host for plain TCP (`docker -H tcp://host:port`); the socket is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(host_name)))]
    pub host: Option<String>,
    /// Engine TCP port (default 2375 when `host` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(range(min = 1)))]
    pub port: Option<u16>,
    /// The user-defined bridge network instances join; created when missing.
    #[serde(default = "default_network")]
    #[garde(custom(network_name))]
    pub network: String,
    /// Directory of `<secret>/<key>` files used to resolve `secretRef` environment values;
    /// without it such values are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub secrets_dir: Option<PathBuf>,
    /// The egress policy of specs that set none: `open` (outbound allowed; on Docker the
    /// metadata ranges stay reachable, see `docs/DOCKER.md`) or `none` (no network).
    #[serde(default)]
    #[garde(custom(egress_policy))]
    pub default_egress: Egress,
    /// The egress proxy image run for allow-lists. Without it the backend builds
    /// `mcp-egress-proxy:local` from the `mcp-egress-proxy` crate's source with cargo (once
    /// per process, reused by content hash); deployments without a Rust toolchain name a
    /// prebuilt image here (pulled when missing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(length(min = 1)))]
    pub egress_proxy_image: Option<String>,
}

fn default_socket_path() -> PathBuf {
    PathBuf::from(DEFAULT_SOCKET_PATH)
}

fn default_network() -> String {
    DEFAULT_NETWORK.to_owned()
}

// garde hands custom rules the field and their context by reference.
#[allow(clippy::trivially_copy_pass_by_ref, clippy::ptr_arg)]
fn absolute_socket(p: &PathBuf, (): &()) -> garde::Result {
    if p.is_absolute() {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "{} must be an absolute path",
            p.display()
        )))
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn host_name(h: &str, (): &()) -> garde::Result {
    let ok = !h.is_empty()
        && h.len() <= 253
        && h.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
    if ok {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "{h:?} is not a host name or IP address (without scheme or port)"
        )))
    }
}

/// Docker's own rule for network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
#[allow(clippy::trivially_copy_pass_by_ref)]
fn network_name(n: &str, (): &()) -> garde::Result {
    let ok = n.len() <= 128
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(garde::Error::new(format!(
            "{n:?} is not a valid network name ([a-zA-Z0-9][a-zA-Z0-9_.-]*, at most 128)"
        )))
    }
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn egress_policy(e: &Egress, (): &()) -> garde::Result {
    let mut errors = Vec::new();
    e.check("defaultEgress", &mut errors);
    match errors.first() {
        None => Ok(()),
        Some(first) => Err(garde::Error::new(first.to_string())),
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        Self {
            socket_path: default_socket_path(),
            host: None,
            port: None,
            network: default_network(),
            secrets_dir: None,
            default_egress: Egress::Open,
            egress_proxy_image: None,
        }
    }
}

impl DockerConfig {
    /// The defaults with another network (tests use their own so they can remove it).
    pub fn with_network(network: impl Into<String>) -> Self {
        Self {
            network: network.into(),
            ..Self::default()
        }
    }

    /// Where the engine is, for messages: `unix:///var/run/docker.sock` or `tcp://host:port`.
    pub fn endpoint(&self) -> String {
        match &self.host {
            Some(host) => format!("tcp://{host}:{}", self.port.unwrap_or(2375)),
            None => format!("unix://{}", self.socket_path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_from_empty_document() {
        let c: DockerConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, DockerConfig::default());
        assert_eq!(c.endpoint(), "unix:///var/run/docker.sock");
        c.validate().unwrap();
    }

    #[test]
    fn camel_case_fields_and_tcp_endpoint() {
        let c: DockerConfig = serde_json::from_str(
            r#"{"socketPath":"/run/d.sock","host":"10.1.2.3","port":2376,"network":"n1","secretsDir":"/s"}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.endpoint(), "tcp://10.1.2.3:2376");
        assert_eq!(c.secrets_dir.as_deref(), Some(std::path::Path::new("/s")));
    }

    #[test]
    fn egress_settings() {
        let c: DockerConfig =
            serde_json::from_str(r#"{"defaultEgress":"none","egressProxyImage":"p:1"}"#).unwrap();
        c.validate().unwrap();
        assert_eq!(c.default_egress, Egress::None);
        assert_eq!(c.egress_proxy_image.as_deref(), Some("p:1"));
        let bad: DockerConfig = serde_json::from_str(r#"{"defaultEgress":{"allow":[]}}"#).unwrap();
        let report = bad.validate().unwrap_err().to_string();
        assert!(
            report.contains("default_egress") && report.contains("empty allow-list"),
            "{report}"
        );
        assert!(serde_json::from_str::<DockerConfig>(r#"{"defaultEgress":"closed"}"#).is_err());
    }

    #[test]
    fn unknown_fields_refused() {
        let err = serde_json::from_str::<DockerConfig>(r#"{"socket":"/x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn invalid_values_refused() {
        let c = DockerConfig {
            socket_path: "relative.sock".into(),
            network: "bad name!".into(),
            port: Some(0),
            ..DockerConfig::default()
        };
        let report = c.validate().unwrap_err().to_string();
        for field in ["socket_path", "network", "port"] {
            assert!(report.contains(field), "{field} not in {report}");
        }
    }
}
