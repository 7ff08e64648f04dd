//! `connect`: a stdio container's stdin and stdout through the engine's attach endpoint, an
//! HTTP container's URL from its labels.
//!
//! | instance state                  | answer                                              |
//! |---------------------------------|-----------------------------------------------------|
//! | unknown / not managed           | `NotFound`                                          |
//! | not running (created, exited, restarting) | `Unavailable` (`connect::not_running`)    |
//! | HTTP transport, running         | `Http` with `http://127.0.0.1:<pinned host port><path>`, or the container's address on its internal network (egress `none`/allow-lists) |
//! | stdio, another client attached  | `Unavailable` (`connect::busy`)                     |
//! | stdio, running                  | `Stdio`: attach with stdin + stdout (stderr stays in the log) |
//!
//! One client at a time is enforced within this process ([`StdioClaims`]) and across processes
//! on this host (an exclusive lock on a file named after the container in the temp directory),
//! since the engine itself lets any number of clients attach to one stdin. Detaching closes the
//! attach connection only: the container keeps its stdin open (`StdinOnce=false`).

use std::fs::{File, TryLockError};
use std::path::PathBuf;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::query_parameters::AttachContainerOptionsBuilder;
use futures::{StreamExt, TryStreamExt};
use mcp_orchestrator_api::connect::{self, HttpEndpoint, McpChannel, StdioChannel, StdioClaims};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{InstanceId, Transport};
use tokio_util::io::StreamReader;

use crate::error::BACKEND;

/// What `connect` needs to know about a running container.
pub(crate) struct Target<'a> {
    pub(crate) id: &'a InstanceId,
    pub(crate) transport: Transport,
    /// The HTTP URL the instance is served at (from its labels and inspect).
    pub(crate) endpoint: Option<&'a str>,
}

/// Connects to a running container (the caller has checked it is managed and running).
pub(crate) async fn connect(
    docker: &Docker,
    claims: &StdioClaims,
    target: Target<'_>,
    map_err: impl FnOnce(bollard::errors::Error) -> OrchestratorError,
) -> Result<McpChannel> {
    let id = target.id;
    if target.transport.is_http() {
        let url = target.endpoint.map(str::to_owned).ok_or_else(|| {
            OrchestratorError::unavailable(
                BACKEND,
                format!(
                    "{id} serves {} but has neither a pinned host port nor an address on its \
                     network (created by an older version?): restart it",
                    target.transport
                ),
                None,
            )
        })?;
        return Ok(McpChannel::Http(HttpEndpoint {
            url,
            transport: target.transport,
        }));
    }
    let claim = claims.claim(id)?;
    let host_lock = host_lock(id)?;
    let options = AttachContainerOptionsBuilder::new()
        .stdin(true)
        .stdout(true)
        .stderr(false)
        .stream(true)
        .logs(false)
        .build();
    let attached = docker
        .attach_container(id.as_str(), Some(options))
        .await
        .map_err(map_err)?;
    let stdout = attached
        .output
        .try_filter_map(|frame| async move {
            Ok(match frame {
                // Without a TTY the engine multiplexes; only stdout is the MCP channel.
                LogOutput::StdOut { message } | LogOutput::Console { message } => Some(message),
                LogOutput::StdErr { .. } | LogOutput::StdIn { .. } => None,
            })
        })
        .map_err(std::io::Error::other)
        .boxed();
    Ok(McpChannel::Stdio(
        StdioChannel::new(StreamReader::new(stdout), attached.input)
            .with_guard(claim)
            .with_guard(host_lock),
    ))
}

/// An exclusive lock on this host for `id`'s stdio, held while the file stays open.
fn host_lock(id: &InstanceId) -> Result<File> {
    let dir = lock_dir();
    let io_err = |e: std::io::Error| {
        OrchestratorError::unavailable(
            BACKEND,
            format!("cannot lock the stdio of {id} in {}: {e}", dir.display()),
            None,
        )
    };
    std::fs::create_dir_all(&dir).map_err(io_err)?;
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{id}.lock")))
        .map_err(io_err)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(connect::busy(BACKEND, id)),
        Err(TryLockError::Error(e)) => Err(io_err(e)),
    }
}

/// Removes the lock file of a removed instance (a client still holding it keeps its open file).
pub(crate) fn forget(id: &InstanceId) {
    let _ = std::fs::remove_file(lock_dir().join(format!("{id}.lock")));
}

fn lock_dir() -> PathBuf {
    std::env::var_os("XDG_RUNTIME_DIR")
        .map_or_else(std::env::temp_dir, PathBuf::from)
        .join("mcpctl-docker-attach")
}
