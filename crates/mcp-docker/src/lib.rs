//! Docker backend for the `McpOrchestrator` trait: [`DockerOrchestrator`] runs each MCP
//! server instance as a hardened container through bollard.
//!
//! - [`DockerConfig`]: socket or TCP host, the network instances join, a secrets directory.
//! - [`container::build_container`]: spec -> container create body (pure, unit-tested).
//! - [`status::instance_status`]: Docker state -> `InstanceStatus` (pure, table-tested).
//! - [`egress`]: the effective egress policy -> networking, companion proxy and the posture
//!   each status reports (pure); the companions' engine side is in `companions`.
//! - Logs are re-assembled into lines per stream, with `since`/`tail` applied exactly on the
//!   client side (see the `logs` module docs).
//! - Every engine error goes through one mapping function into `OrchestratorError`.
//!
//! Secrets and logging: bollard logs whole request bodies and decoded responses through the
//! `log` crate at debug and trace level (target `bollard::*`), and a container's create body and
//! inspect response hold its environment, secret values included. A program that embeds this
//! backend and installs a logger must keep `bollard` at `info` or below whatever its users ask
//! for (`mcp-orch` drops those events in its subscriber; see its `init_tracing`). This crate
//! itself never logs environment values.
//!
//! `secretFiles` never reach the create body: see [`secret_files`] (a per-instance volume
//! filled through the archive API, each file bound read-only at its path).

mod attach;
mod companions;
pub mod config;
pub mod container;
mod conventions;
pub mod egress;
mod error;
mod gc;
mod image;
mod listing;
mod logs;
mod network;
mod orchestrator;
pub mod secret_files;
pub mod status;
mod volume;
mod watch;

pub use config::DockerConfig;
pub use orchestrator::DockerOrchestrator;
