//! The Kubernetes backend of the `McpOrchestrator` trait, on kube-rs.
//!
//! [`KubernetesOrchestrator`] runs each MCP server instance as one pod in the configured
//! namespace, named after the instance id, together with the objects
//! [`mcp_k8s_resources::build_instance`] builds for it: a NetworkPolicy (unless turned off),
//! one PersistentVolumeClaim per volume and, for HTTP transports, a ClusterIP Service whose DNS
//! name becomes the instance's endpoint (`http://<svc>.<ns>.svc:<port>`). Every object carries
//! `mcpctl.io/instance=<id>`; stopping removes them all.
//!
//! Behaviour worth knowing, each documented where it is implemented:
//! - Logs: Kubernetes merges stdout and stderr into one container log, so every line is
//!   reported as stdout and only `StreamSelector::All` is accepted (`NotSupported` otherwise).
//!   `since` is filtered exactly on the client; `tail` counts the lines kept
//!   (documented on [`KubernetesOrchestrator`]'s `get_logs`).
//! - Status: a crash-looping container is `Pending` with reason `CrashLoopBackOff` (a restart
//!   follows, so the phase is not terminal); see [`instance_status`].
//! - Listing: the phase filter runs on the client after the API server has cut a page, so pages
//!   can be short; the continue token stays exact. Pages are decoded lean ([`decode_page`]):
//!   only the fields an instance is made of, into the same mapping as a whole pod.
//! - Errors: one function maps kube errors (401/403, 404, 409, 410, 422, 429/5xx, connection
//!   errors) to [`mcp_orchestrator_api::OrchestratorError`]; idempotent requests (get, list,
//!   delete, log reads) are retried a few times with backoff on the transient ones.
//! - Attaching: [`KubernetesOrchestrator::attach_stdio`] connects to a stdio server's
//!   stdin/stdout through `pods/attach` over a WebSocket, one client at a time per instance.
//! - Stopping deletes the pod with the grace period, waits on a watch until it is gone (forcing
//!   the deletion after grace + 10 s), then removes the companion objects.

mod attach;
mod config;
mod egress_proxy;
mod error;
mod lifecycle;
mod listing;
mod logs;
mod orchestrator;
mod posture;
#[cfg(test)]
mod request_tests;
mod status;
mod volumes;
mod watch;

pub use error::BACKEND;
pub use listing::decode_page;
pub use orchestrator::KubernetesOrchestrator;
pub use status::{instance_status, pod_instance};

/// The container whose log and status are the server's.
pub use mcp_k8s_resources::CONTAINER_NAME;
