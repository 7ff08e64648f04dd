//! The client side of the stdio bridge: connecting to a stdio server's supervisor over
//! `<instance dir>/stdio.sock` and reading its one-line greeting (accepted, or why not).

use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use mcp_orchestrator_api::connect;
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{InstanceId, Transport};
use tokio::io::AsyncReadExt;
use tokio::net::UnixStream;

use crate::bridge::ATTACH_BANNER;
use crate::config::ProcessConfig;
use crate::error::BACKEND;
use crate::layout::{InstancePaths, SOCKET_FILE};
use crate::status::observe;

/// How long the stdio bridge may take to greet a client.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `sun_path` this code passes to `connect` as is (the kernel limit is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// Connects to the stdio bridge of instance `id` at `paths`: the stream once the bridge has
/// accepted this client (see `ProcessOrchestrator::attach_stdio` for the contract).
pub(crate) async fn attach(
    config: &ProcessConfig,
    id: &InstanceId,
    paths: &InstancePaths,
) -> Result<UnixStream> {
    let obs = observe(paths, config)?;
    if obs.meta.launch.transport != Transport::Stdio {
        return Err(OrchestratorError::NotSupported {
            backend: BACKEND,
            what: format!(
                "attaching to the stdio of a {} server (connect to {})",
                obs.meta.launch.transport,
                obs.meta.endpoint.as_deref().unwrap_or("its port")
            ),
        });
    }
    let unavailable = |why: String| {
        OrchestratorError::unavailable(
            BACKEND,
            format!("cannot attach to {id} (phase {}): {why}", obs.status.phase),
            None,
        )
    };
    let mut stream = connect_socket(&paths.dir).await.map_err(|e| {
        unavailable(format!(
            "the stdio bridge is not accepting connections: {e}"
        ))
    })?;
    let banner = tokio::time::timeout(ATTACH_TIMEOUT, read_banner(&mut stream))
        .await
        .map_err(|_| unavailable("the stdio bridge did not answer".into()))?
        .map_err(|e| unavailable(format!("reading the bridge's greeting: {e}")))?;
    match banner.strip_prefix(ATTACH_BANNER).map(str::trim) {
        Some("ok") => Ok(stream),
        Some(refusal) if refusal.starts_with("busy") => Err(connect::busy(BACKEND, id)),
        Some(refusal) => Err(unavailable(refusal.to_owned())),
        None => Err(unavailable(format!("unexpected greeting {banner:?}"))),
    }
}

/// Connects to the bridge socket, going through `/proc/self/fd` when the path is too long
/// for `sun_path`.
async fn connect_socket(dir: &Path) -> std::io::Result<UnixStream> {
    let direct = dir.join(SOCKET_FILE);
    if direct.as_os_str().len() <= MAX_SOCKET_PATH {
        return UnixStream::connect(&direct).await;
    }
    let handle = std::fs::File::open(dir)?;
    let short = format!("/proc/self/fd/{}/{SOCKET_FILE}", handle.as_raw_fd());
    let stream = UnixStream::connect(&short).await;
    drop(handle);
    stream
}

/// Reads the bridge's one-line greeting byte by byte, so no server output is consumed.
async fn read_banner(stream: &mut UnixStream) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 512 {
        if stream.read(&mut byte).await? == 0 {
            break;
        }
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}
