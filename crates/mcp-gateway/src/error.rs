//! The gateway's error type.

use std::net::SocketAddr;

use mcp_orchestrator_api::OrchestratorError;

/// Errors from building, running or querying the gateway.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GatewayError {
    /// A setting is unusable.
    #[error("gateway configuration: {0}")]
    Config(String),
    /// Listening beyond loopback without authentication.
    #[error(
        "refusing to listen on {0} without a bearer token: a non-loopback address needs --token-file or --token-env"
    )]
    InsecureBind(SocketAddr),
    /// Binding or serving failed.
    #[error("gateway listener: {0}")]
    Io(#[from] std::io::Error),
    /// The orchestrator refused or failed.
    #[error(transparent)]
    Orchestrator(#[from] OrchestratorError),
    /// The upstream MCP server did not complete the protocol.
    #[error("{0}")]
    Upstream(String),
    /// Waiting for Ready took too long.
    #[error("{id} was not Ready after {waited:?}: {last}")]
    NotReady {
        /// The instance.
        id: String,
        /// How long it was waited for.
        waited: std::time::Duration,
        /// The last known state.
        last: String,
    },
}
