//! Configuration to orchestrator: reads `OrchestratorConfig` from YAML/JSON and `MCPCTL_*`
//! environment variables, and builds the chosen backend. Each backend is behind a cargo feature
//! (`process`, `docker`, `kubernetes`), so a binary links only the backends it needs.

pub mod config;
pub mod create;
pub mod document;
pub mod env;
pub mod error;

pub use config::{BackendKind, OrchestratorConfig, OrchestratorSection};
pub use create::{FactoryError, create_orchestrator};
pub use document::{load_document, load_server_spec, parse_document};
pub use error::{ConfigError, Format, Source};
pub use mcp_orchestrator_api;
pub use mcp_types;

/// The process backend's configuration, to point it at an embedded supervisor.
#[cfg(feature = "process")]
pub use mcp_process::ProcessConfig;
/// The process backend's supervisor entry point, for binaries that embed the supervisor instead
/// of shipping `mcp-process-supervisor` next to themselves (see `mcp-process`).
#[cfg(feature = "process")]
pub use mcp_process::supervisor::run as run_process_supervisor;
