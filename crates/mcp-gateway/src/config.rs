//! The gateway's settings: where it listens, who may call it, limits and health timing.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::GatewayError;

/// Default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8800";
/// Default largest accepted JSON-RPC message (request body or upstream line): 4 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 4 << 20;

/// A bearer token. Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(String);

impl BearerToken {
    /// Wraps a token value (surrounding whitespace removed).
    ///
    /// # Errors
    /// [`GatewayError::Config`] for an empty token.
    pub fn new(value: &str) -> Result<Self, GatewayError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(GatewayError::Config("the bearer token is empty".into()));
        }
        Ok(Self(value.to_owned()))
    }

    /// Whether `presented` equals the token, compared in constant time for equal lengths.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }

    /// The value, for a client to send (tests, tools). Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(<redacted>)")
    }
}

/// Where the bearer token comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// The first line of a file.
    File(PathBuf),
    /// An environment variable.
    Env(String),
}

impl TokenSource {
    /// Reads the token.
    ///
    /// # Errors
    /// [`GatewayError::Config`] naming the file or variable (never the value) when it cannot be
    /// read or is empty.
    pub fn load(&self) -> Result<BearerToken, GatewayError> {
        match self {
            Self::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    GatewayError::Config(format!("reading the token file {}: {e}", path.display()))
                })?;
                BearerToken::new(text.lines().next().unwrap_or_default()).map_err(|_| {
                    GatewayError::Config(format!("the token file {} is empty", path.display()))
                })
            }
            Self::Env(var) => {
                let value = std::env::var(var).map_err(|_| {
                    GatewayError::Config(format!("the token variable {var} is not set"))
                })?;
                BearerToken::new(&value)
                    .map_err(|_| GatewayError::Config(format!("the token variable {var} is empty")))
            }
        }
    }
}

/// Everything the gateway needs besides the orchestrator.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The address to listen on. Non-loopback needs a token.
    pub listen: SocketAddr,
    /// Required `Authorization: Bearer` value, if any.
    pub token: Option<BearerToken>,
    /// Origins accepted besides loopback ones (`http://localhost:*`, `http://127.0.0.1:*`,
    /// `http://[::1]:*`), written exactly as browsers send them (`https://app.example`).
    pub allowed_origins: Vec<String>,
    /// Largest JSON-RPC message accepted from a client or from a server.
    pub max_message_bytes: usize,
    /// How often each served instance is pinged.
    pub ping_interval: Duration,
    /// How long a ping or handshake may take.
    pub ping_timeout: Duration,
    /// Consecutive failed pings that make an instance Unhealthy.
    pub failure_threshold: u32,
    /// How often the list of instances is refreshed.
    pub refresh_interval: Duration,
    /// The upstream stdio handshake order. `false` (a gateway that keeps the session):
    /// `server/discover` first, as the official SDK clients do. `true` (a one-off probe that
    /// hands the server's stdio to another client afterwards: `wait_ready`, `probe`):
    /// `initialize` first, and `server/discover` only when `initialize` is refused, because a
    /// server that answered a discover may lock its connection into the stateless revision
    /// (the Python SDK's does), which would refuse the next client's `initialize`.
    pub initialize_first: bool,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8800)),
            token: None,
            allowed_origins: Vec::new(),
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(5),
            failure_threshold: 3,
            refresh_interval: Duration::from_secs(5),
            initialize_first: false,
        }
    }
}

impl GatewayConfig {
    /// Checks the settings before anything listens.
    ///
    /// # Errors
    /// [`GatewayError::InsecureBind`] for a non-loopback address without a token, and
    /// [`GatewayError::Config`] for zero limits.
    pub fn validate(&self) -> Result<(), GatewayError> {
        if !self.listen.ip().is_loopback() && self.token.is_none() {
            return Err(GatewayError::InsecureBind(self.listen));
        }
        if self.max_message_bytes == 0 || self.failure_threshold == 0 {
            return Err(GatewayError::Config(
                "the message size limit and the failure threshold must be at least 1".into(),
            ));
        }
        if self.ping_interval.is_zero() || self.ping_timeout.is_zero() {
            return Err(GatewayError::Config(
                "the ping interval and timeout must be positive".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_without_token_is_refused() {
        let mut config = GatewayConfig {
            listen: "0.0.0.0:8800".parse().unwrap(),
            ..GatewayConfig::default()
        };
        let err = config.validate().unwrap_err();
        assert!(matches!(err, GatewayError::InsecureBind(_)), "{err}");
        assert!(err.to_string().contains("token"), "{err}");
        config.token = Some(BearerToken::new("s3cret").unwrap());
        config.validate().unwrap();
        assert!(GatewayConfig::default().validate().is_ok());
    }

    #[test]
    fn token_never_shows_and_compares_exactly() {
        let token = BearerToken::new(" s3cret\n").unwrap();
        assert!(!format!("{token:?}").contains("s3cret"));
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3creT"));
    }

    #[test]
    fn token_from_file_and_env_name_the_source_not_the_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "abc123\nignored\n").unwrap();
        assert!(
            TokenSource::File(path.clone())
                .load()
                .unwrap()
                .matches("abc123")
        );
        std::fs::write(&path, "\n").unwrap();
        let err = TokenSource::File(path).load().unwrap_err();
        assert!(err.to_string().contains("empty"), "{err}");
        let err = TokenSource::Env("MCPCTL_GATEWAY_TEST_UNSET_VARIABLE".into())
            .load()
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("MCPCTL_GATEWAY_TEST_UNSET_VARIABLE"),
            "{err}"
        );
    }
}
