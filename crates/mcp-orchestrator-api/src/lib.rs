//! The `McpOrchestrator` trait that every backend implements, the shared error, conveniences,
//! fixture scripts, an in-memory reference backend (feature `memory`) and the conformance kit
//! (feature `conformance`).

pub mod connect;
pub mod continuation;
pub mod error;
pub mod ext;
pub mod filters;
pub mod fixture;
pub mod orchestrator;
pub mod secrets;
pub mod volumes;
pub mod watch;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "memory"))]
pub mod memory;

pub use connect::{HttpEndpoint, McpChannel, StdioChannel, StdioClaims};
pub use error::{BoxError, OrchestratorError, Result};
pub use ext::OrchestratorExt;
pub use filters::validate_filters;
pub use fixture::{FixtureScript, FixtureStep};
#[cfg(any(test, feature = "memory"))]
pub use memory::InMemoryOrchestrator;
pub use orchestrator::{DynOrchestrator, LogLines, McpOrchestrator};
pub use watch::{InstanceEvents, validate_watch_filters};

pub use mcp_types;

/// Re-exported so that an implementation needs no version-matched dependency of its own: the
/// trait is declared with `#[async_trait]`, and [`LogLines`] is a `futures` stream.
pub use async_trait::async_trait;
pub use futures;
