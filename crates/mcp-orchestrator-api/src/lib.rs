//! The `McpOrchestrator` trait that every backend implements, the shared error, conveniences,
//! fixture scripts, an in-memory reference backend (feature `memory`) and the conformance kit
//! (feature `conformance`).

pub mod connect;
pub mod continuation;
pub mod error;
pub mod ext;
pub mod fixture;
pub mod orchestrator;
pub mod secrets;

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
#[cfg(any(test, feature = "memory"))]
pub mod memory;

pub use connect::{HttpEndpoint, McpChannel, StdioChannel, StdioClaims};
pub use error::{BoxError, OrchestratorError, Result};
pub use ext::OrchestratorExt;
pub use fixture::{FixtureScript, FixtureStep};
#[cfg(any(test, feature = "memory"))]
pub use memory::InMemoryOrchestrator;
pub use orchestrator::{DynOrchestrator, LogLines, McpOrchestrator};

pub use mcp_types;
