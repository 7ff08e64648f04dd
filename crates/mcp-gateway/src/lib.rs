//! An MCP gateway: every instance of any backend served as MCP streamable HTTP.
//!
//! - stdio servers are reached through `McpOrchestrator::connect`; the gateway holds the one
//!   session and multiplexes many clients over it ([`mux`](crate) rules in `mux.rs`);
//! - HTTP servers are forwarded to;
//! - readiness comes from the MCP handshake and periodic pings ([`Readiness`]); [`probe`] checks
//!   it once for callers that keep no state (`mcp-orch ps`);
//! - clients may speak the 2025-06-18, 2025-11-25 and stateless 2026-07-28 revisions.
//!
//! ```no_run
//! # async fn demo(orch: std::sync::Arc<mcp_orchestrator_api::DynOrchestrator>) -> Result<(), mcp_gateway::GatewayError> {
//! let gateway = mcp_gateway::Gateway::new(orch, mcp_gateway::GatewayConfig::default())?;
//! gateway.serve(tokio_util::sync::CancellationToken::new()).await
//! # }
//! ```

mod config;
mod error;
mod gateway;
mod health;
mod http_upstream;
pub mod jsonrpc;
mod metrics;
mod mux;
mod probe;

pub use config::{
    BearerToken, DEFAULT_LISTEN, DEFAULT_MAX_MESSAGE_BYTES, GatewayConfig, TokenSource,
};
pub use error::GatewayError;
pub use gateway::{Gateway, SUPPORTED_VERSIONS, wait_ready};
pub use health::{Readiness, ReadyInfo, tools_hash};
pub use probe::{Probe, probe};
pub use tokio_util::sync::CancellationToken;
