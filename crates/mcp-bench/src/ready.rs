//! Benchmark 7: start to MCP-ready on the process backend, per transport: `start_server` until a
//! real client (rmcp) has completed the handshake and `tools/list` through `connect`, against
//! the same server spawned by hand and probed by the same client (stdio over the child's pipes,
//! HTTP at the port it listens on). Every process is checked gone after each round.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode};
use mcp_orchestrator_api::{McpChannel, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{McpServer, StartOptions, Transport};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;

use crate::report::{Row, timing_row};
use crate::stats::{Samples, Target};

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(5);
/// How often a client retries while an HTTP server is still binding its port.
const RETRY: Duration = Duration::from_millis(5);

/// Runs `reps` interleaved rounds (after one warm-up) of each way, for stdio and for HTTP.
pub(crate) async fn process_ready(server: &Path, reps: usize) -> Result<(Vec<Row>, String)> {
    let state = tempfile::tempdir().context("state directory")?;
    let orchestrator = ProcessOrchestrator::new(ProcessConfig::new(state.path()))
        .context("process orchestrator")?;
    let program = server.to_string_lossy().into_owned();
    let mut rows = Vec::new();
    for transport in [Transport::Stdio, Transport::StreamableHttp] {
        let (mut ours, mut raw) = (Samples::new(), Samples::new());
        for rep in 0..=reps {
            // Alternate which goes first, so neither always runs on a warmer machine.
            for k in 0..2 {
                let elapsed = if (rep + k) % 2 == 0 {
                    ready_ours(&orchestrator, &program, transport).await?.took
                } else {
                    ready_raw(server, transport).await?.took
                };
                if rep > 0 {
                    if (rep + k) % 2 == 0 {
                        ours.push_duration(elapsed);
                    } else {
                        raw.push_duration(elapsed);
                    }
                }
            }
        }
        rows.push(timing_row(
            "7 process ready",
            &format!(
                "{transport}: start_server to handshake+tools/list vs raw spawn + same client"
            ),
            &ours,
            &raw,
            Target::AtMost(1.15),
        ));
    }
    let left = std::fs::read_dir(state.path().join("instances")).map_or(0, Iterator::count);
    if left > 0 {
        bail!("ready: {left} instance directories left");
    }
    Ok((
        rows,
        format!(
            "ready: `{} fixture --serve stdio|http:PORT` through the process backend vs the same \
             binary spawned by hand; client rmcp (stdio pipes / streamable HTTP)",
            server.display()
        ),
    ))
}

/// `n` concurrent starts to MCP-ready (stdio) each way, `reps` interleaved rounds after a
/// warm-up: the wall time until the last of them answered.
pub(crate) async fn process_ready_burst(server: &Path, n: usize, reps: usize) -> Result<Vec<Row>> {
    let state = tempfile::tempdir().context("state directory")?;
    let orchestrator = ProcessOrchestrator::new(ProcessConfig::new(state.path()))
        .context("process orchestrator")?;
    let program = server.to_string_lossy().into_owned();
    let (mut ours, mut raw) = (Samples::new(), Samples::new());
    for rep in 0..=reps {
        for k in 0..2 {
            let ours_turn = (rep + k) % 2 == 0;
            let started = Instant::now();
            // Until the last one answered; the stops come after all of them, untimed (a stop
            // running beside the starts would slow them).
            let last = if ours_turn {
                let results = futures::future::join_all(
                    (0..n).map(|_| ready_ours_running(&orchestrator, &program, Transport::Stdio)),
                )
                .await;
                let (last, ids, failed) = last_answer(started, results);
                for stopped in futures::future::join_all(
                    ids.iter().map(|id| orchestrator.stop_server(id, GRACE)),
                )
                .await
                {
                    stopped.context("stop_server")?;
                }
                failed.map_or(Ok(last), Err)?
            } else {
                let results = futures::future::join_all(
                    (0..n).map(|_| ready_raw_running(server, Transport::Stdio)),
                )
                .await;
                let (last, children, failed) = last_answer(started, results);
                for child in children {
                    crate::process::reap(child).await?;
                }
                failed.map_or(Ok(last), Err)?
            };
            let elapsed = last.duration_since(started);
            if rep > 0 {
                if ours_turn {
                    ours.push_duration(elapsed);
                } else {
                    raw.push_duration(elapsed);
                }
            }
        }
    }
    let left = std::fs::read_dir(state.path().join("instances")).map_or(0, Iterator::count);
    if left > 0 {
        bail!("ready burst: {left} instance directories left");
    }
    Ok(vec![timing_row(
        "7 process ready",
        &format!("{n} concurrent stdio starts to MCP-ready vs {n} raw spawns + same client"),
        &ours,
        &raw,
        Target::AtMost(1.25),
    )])
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

fn serve_script(transport: Transport, port: u16) -> FixtureScript {
    FixtureScript::new().serve(if transport.is_http() {
        ServeMode::Http { port }
    } else {
        ServeMode::Stdio
    })
}

/// Handshake and `tools/list` over streamable HTTP, retried until the server listens.
/// From a started instance to a completed MCP session: waits for Running, connects (retrying
/// while the backend says Unavailable) and does the handshake and `tools/list` through the
/// channel. Returns the time since `started`.
pub(crate) async fn mcp_ready(
    o: &dyn McpOrchestrator,
    id: &mcp_types::InstanceId,
    started: Instant,
    timeout: Duration,
) -> Result<Duration> {
    o.wait_until_running(id, timeout).await?;
    let channel = loop {
        match o.connect(id).await {
            Ok(c) => break c,
            Err(OrchestratorError::Unavailable { .. }) if started.elapsed() < timeout => {
                tokio::time::sleep(RETRY).await;
            }
            Err(e) => return Err(anyhow::Error::new(e)),
        }
    };
    match channel {
        McpChannel::Stdio(stdio) => {
            let client = ().serve(stdio).await.context("stdio handshake")?;
            client.list_all_tools().await.context("tools/list")?;
            let _ = client.cancel().await;
        }
        McpChannel::Http(endpoint) => http_ready(&endpoint.url).await?,
        other => bail!("unexpected channel {other:?}"),
    }
    Ok(started.elapsed())
}

/// Of a burst's results: when the last start answered, what each left running (to stop after
/// the clock), and the first error.
fn last_answer<T>(
    started: Instant,
    results: Vec<Result<(Result<Ready>, T)>>,
) -> (Instant, Vec<T>, Option<anyhow::Error>) {
    let (mut last, mut running, mut failed) = (started, Vec::new(), None);
    for r in results {
        match r {
            Ok((outcome, left)) => {
                running.push(left);
                match outcome {
                    Ok(ready) => last = last.max(ready.at),
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            Err(e) => failed = failed.or(Some(e)),
        }
    }
    (last, running, failed)
}

/// One start that answered MCP: how long it took and when (a burst's wall time ends at the
/// last answer, not after the stops that follow).
pub(crate) struct Ready {
    pub(crate) took: Duration,
    pub(crate) at: Instant,
}

impl Ready {
    pub(crate) fn after(started: Instant, took: Duration) -> Self {
        Self {
            took,
            at: started + took,
        }
    }

    pub(crate) fn now(started: Instant) -> Self {
        Self::after(started, started.elapsed())
    }
}

pub(crate) async fn http_ready(url: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match ().serve(StreamableHttpClientTransport::from_uri(url.to_owned())).await {
            Ok(client) => {
                client.list_all_tools().await.context("tools/list")?;
                let _ = client.cancel().await;
                return Ok(());
            }
            Err(e) if Instant::now() > deadline => bail!("no MCP answer at {url}: {e}"),
            Err(_) => tokio::time::sleep(RETRY).await,
        }
    }
}

/// One start to MCP-ready through the backend, then its stop (not timed).
async fn ready_ours(o: &ProcessOrchestrator, program: &str, transport: Transport) -> Result<Ready> {
    let (outcome, id) = ready_ours_running(o, program, transport).await?;
    let stopped = o.stop_server(&id, GRACE).await;
    let ready = outcome?;
    stopped.context("stop_server")?;
    Ok(ready)
}

/// One start to MCP-ready through the backend, left running (the caller stops `id`).
async fn ready_ours_running(
    o: &ProcessOrchestrator,
    program: &str,
    transport: Transport,
) -> Result<(Result<Ready>, mcp_types::InstanceId)> {
    let port = free_port()?;
    let mut spec = McpServer::command("ready", program, serve_script(transport, port).to_args());
    if transport.is_http() {
        spec.transport = transport;
        spec.port = Some(port);
    }
    let started = Instant::now();
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .context("start_server")?;
    let outcome = mcp_ready(o, &id, started, READY_TIMEOUT)
        .await
        .map(|took| Ready::after(started, took));
    Ok((outcome, id))
}

/// One raw spawn to MCP-ready, then its kill (not timed).
async fn ready_raw(server: &Path, transport: Transport) -> Result<Ready> {
    let (outcome, child) = ready_raw_running(server, transport).await?;
    crate::process::reap(child).await?;
    outcome
}

/// One raw spawn to MCP-ready, left running (the caller reaps the child).
async fn ready_raw_running(
    server: &Path,
    transport: Transport,
) -> Result<(Result<Ready>, tokio::process::Child)> {
    let port = free_port()?;
    let mut cmd = tokio::process::Command::new(server);
    cmd.args(serve_script(transport, port).to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let started = Instant::now();
    let mut child = cmd.spawn().context("raw spawn")?;
    let outcome = async {
        if transport.is_http() {
            http_ready(&format!("http://127.0.0.1:{port}/mcp")).await?;
        } else {
            let stdout = child.stdout.take().context("stdout pipe")?;
            let stdin = child.stdin.take().context("stdin pipe")?;
            let client = ().serve((stdout, stdin)).await.context("stdio handshake")?;
            client.list_all_tools().await.context("tools/list")?;
            let _ = client.cancel().await;
        }
        Ok::<_, anyhow::Error>(Ready::now(started))
    }
    .await;
    Ok((outcome, child))
}
