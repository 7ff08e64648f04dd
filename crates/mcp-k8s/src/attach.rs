//! Attaching to a stdio server's stdin/stdout: `pods/attach` over kube's WebSocket support.
//!
//! | situation                                        | `OrchestratorError`                  |
//! |--------------------------------------------------|--------------------------------------|
//! | no such (managed) pod                            | `NotFound` (the instance id)         |
//! | the instance serves HTTP                         | `NotSupported` (use its endpoint)    |
//! | the server container is not running              | `Unavailable`, naming its state      |
//! | another client of this orchestrator is attached  | `Unavailable` (`connect::busy`)      |
//! | the attach request fails                         | through `error::map_error`           |

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{AttachParams, AttachedProcess};
use mcp_k8s_resources::CONTAINER_NAME;
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{InstanceId, labels};
use tokio::io::{AsyncRead, AsyncWrite, Join, ReadBuf, ReadHalf, SimplexStream, WriteHalf};

use crate::error::{BACKEND, Target, map_error};
use crate::orchestrator::KubernetesOrchestrator;
use mcp_orchestrator_api::connect::StdioClaim;

/// The server's stdout (read) and stdin (write), keeping the attach session alive.
struct AttachedStdio {
    io: Join<ReadHalf<SimplexStream>, WriteHalf<SimplexStream>>,
    /// Dropping it ends the WebSocket session; the server keeps running.
    _process: AttachedProcess,
    _claim: StdioClaim,
}

impl AsyncRead for AttachedStdio {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for AttachedStdio {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// Why the server container cannot be attached to, or `None` when it is running.
fn not_running(pod: &Pod) -> Option<String> {
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == CONTAINER_NAME));
    let state = status.and_then(|s| s.state.clone()).unwrap_or_default();
    if state.running.is_some() {
        return None;
    }
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_else(|| "Pending".to_owned());
    Some(if let Some(waiting) = state.waiting {
        format!(
            "the server container is waiting ({}), pod phase {phase}",
            waiting.reason.unwrap_or_default()
        )
    } else if let Some(terminated) = state.terminated {
        format!(
            "the server container exited with code {}, pod phase {phase}",
            terminated.exit_code
        )
    } else {
        format!("the server container has not started, pod phase {phase}")
    })
}

impl KubernetesOrchestrator {
    /// Connects to the stdin/stdout of a running stdio server through the `pods/attach`
    /// subresource (a WebSocket, `v5.channel.k8s.io` or `v4.channel.k8s.io`). Bytes written go
    /// to the server's stdin; its stdout comes back (stderr stays in the container log). Shutting
    /// the stream down closes this client's stdin; dropping it detaches. Either way the server
    /// keeps running with its stdin open (the pod does not set `stdinOnce`), so a later client
    /// finds an MCP session the previous one initialized.
    ///
    /// One client at a time per instance through this orchestrator and its clones (other
    /// processes attaching to the same pod are not seen). Needs `get` and `create` on
    /// `pods/attach` (see `mcp_k8s_resources::build_rbac`).
    ///
    /// # Errors
    /// - [`NotFound`](OrchestratorError::NotFound) for an unknown instance.
    /// - [`NotSupported`](OrchestratorError::NotSupported) for an HTTP server (use its endpoint).
    /// - [`Unavailable`](OrchestratorError::Unavailable) when the server container is not
    ///   running (the message names its state) or another client is attached.
    /// - Errors of the attach request, mapped like every kube error of this backend.
    pub async fn attach_stdio(
        &self,
        id: &InstanceId,
    ) -> Result<impl AsyncRead + AsyncWrite + Send + Unpin + 'static> {
        let pod = self.managed_pod(id, "attach to pod").await?;
        let transport = pod
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::TRANSPORT))
            .cloned()
            .unwrap_or_default();
        if transport != mcp_types::Transport::Stdio.as_str() {
            return Err(OrchestratorError::NotSupported {
                backend: BACKEND,
                what: format!(
                    "attaching to the stdio of a {transport} server (connect to its endpoint)"
                ),
            });
        }
        if let Some(why) = not_running(&pod) {
            return Err(OrchestratorError::unavailable(
                BACKEND,
                format!("cannot attach to {id}: {why}"),
                None,
            ));
        }
        let claim = self.attached.claim(id)?;
        let params = AttachParams::default()
            .container(CONTAINER_NAME)
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let target = Target::pod("attach to pod", id.as_str()).with_argument("attach");
        let mut process = self
            .pods
            .attach(id.as_str(), &params)
            .await
            .map_err(|e| map_error(e, &target))?;
        let (Some(stdout), Some(stdin)) = (process.stdout(), process.stdin()) else {
            return Err(OrchestratorError::unavailable(
                BACKEND,
                format!("cannot attach to {id}: the attach session has no stdin/stdout"),
                None,
            ));
        };
        Ok(AttachedStdio {
            io: tokio::io::join(stdout, stdin),
            _process: process,
            _claim: claim,
        })
    }
}
