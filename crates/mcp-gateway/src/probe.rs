//! One live readiness check of an instance, for callers that keep no state (`mcp-orch ps`).
//!
//! No backend stores readiness: it is a property of the MCP conversation, not of the process
//! or container. [`probe`] asks now, through `connect` (the channel a client uses), with the
//! same handshake and ping as the gateway's health loop, and lets go of the channel when it
//! returns, so a client that connects next gets a clean session:
//!
//! | What `connect` gives                        | Result                                   |
//! |---------------------------------------------|------------------------------------------|
//! | a stdio channel or an HTTP URL, MCP answers | [`Probe::Ready`] with the handshake info |
//! | `Unavailable` because a client is attached  | [`Probe::Busy`] (not a false "no")       |
//! | anything else, or no answer within timeout  | [`Probe::NotReady`] with the reason      |

use std::sync::Arc;
use std::time::Duration;

use mcp_orchestrator_api::{DynOrchestrator, connect};
use mcp_types::InstanceId;

use crate::config::GatewayConfig;
use crate::gateway::{Gateway, describe};
use crate::health::{Readiness, ReadyInfo};

/// What one probe found.
#[derive(Debug, Clone, PartialEq)]
pub enum Probe {
    /// The handshake and a ping succeeded.
    Ready(ReadyInfo),
    /// The instance's stdio serves another client (a stdio server has one at a time), so its
    /// readiness cannot be checked without disturbing that client.
    Busy,
    /// No MCP answer (or the instance could not be reached); why.
    NotReady(String),
}

impl Probe {
    /// `yes`, `busy` or `no`, as `mcp-orch ps` shows it.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Ready(_) => "yes",
            Self::Busy => "busy",
            Self::NotReady(_) => "no",
        }
    }
}

/// Connects to `id` once and waits up to `timeout` for its handshake and a ping.
pub async fn probe(orch: Arc<DynOrchestrator>, id: &InstanceId, timeout: Duration) -> Probe {
    let channel = match tokio::time::timeout(timeout, orch.connect(id)).await {
        Ok(Ok(channel)) => channel,
        Ok(Err(e)) if connect::is_busy(&e) => return Probe::Busy,
        Ok(Err(e)) => return Probe::NotReady(e.to_string()),
        Err(_) => return Probe::NotReady(format!("connect took longer than {timeout:?}")),
    };
    let config = GatewayConfig {
        ping_interval: Duration::from_millis(100),
        ping_timeout: timeout,
        // The next client gets the server's stdio: do not lock it into a revision.
        initialize_first: true,
        ..GatewayConfig::default()
    };
    let gateway = match Gateway::new(orch, config) {
        Ok(g) => g,
        Err(e) => return Probe::NotReady(e.to_string()),
    };
    let served = match gateway.adopt(id, channel) {
        Ok(s) => s,
        Err(e) => return Probe::NotReady(e.to_string()),
    };
    let mut rx = served.readiness.subscribe();
    let waited = tokio::time::timeout(timeout, rx.wait_for(Readiness::is_ready)).await;
    let result = match waited {
        Ok(Ok(state)) => state.info().cloned().map_or_else(
            || Probe::NotReady("ready without handshake info".into()),
            Probe::Ready,
        ),
        Ok(Err(_)) | Err(_) => Probe::NotReady(describe(&served.readiness.borrow())),
    };
    // Lets go of the channel now, so the next client attaches to a free stdio.
    gateway.forget(id);
    result
}
