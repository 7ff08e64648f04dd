//! Benchmark 8: start to MCP-ready on Docker, per transport, and for a burst of concurrent
//! starts: `start_server` until a real client (rmcp) has completed the handshake and
//! `tools/list` through `connect`, against raw bollard create + start of the same create body,
//! reached the same way (an attach for stdio, the published loopback port for HTTP) by the same
//! client.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bollard::container::LogOutput;
use bollard::models::PortBinding;
use bollard::query_parameters::AttachContainerOptionsBuilder;
use futures::{StreamExt, TryStreamExt};
use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode};
use mcp_types::{StartOptions, Transport};
use rmcp::ServiceExt;
use tokio_util::io::StreamReader;

use crate::docker_env::DockerEnv;
use crate::ready::{Ready, http_ready, mcp_ready};
use crate::report::{Row, timing_row};
use crate::stats::{Samples, Target};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// The port the test server listens on inside its container.
const CONTAINER_PORT: u16 = 8080;

/// `reps` interleaved rounds each way for stdio and HTTP, then `n` concurrent stdio starts.
pub(crate) async fn ready(
    env: &DockerEnv,
    reps: usize,
    n: usize,
    burst_reps: usize,
) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for transport in [Transport::Stdio, Transport::StreamableHttp] {
        let (mut ours, mut raw) = (Samples::new(), Samples::new());
        for rep in 0..=reps {
            for k in 0..2 {
                let ours_turn = (rep + k) % 2 == 0;
                let elapsed = if ours_turn {
                    ready_ours(env, transport).await?.took
                } else {
                    ready_raw(env, transport).await?.took
                };
                if rep > 0 {
                    if ours_turn {
                        ours.push_duration(elapsed);
                    } else {
                        raw.push_duration(elapsed);
                    }
                }
            }
        }
        rows.push(timing_row(
            "8 docker ready",
            &format!(
                "{transport}: start_server to handshake+tools/list vs raw bollard + same client"
            ),
            &ours,
            &raw,
            Target::AtMost(1.15),
        ));
    }
    let (mut ours, mut raw) = (Samples::new(), Samples::new());
    for rep in 0..=burst_reps {
        for k in 0..2 {
            let ours_turn = (rep + k) % 2 == 0;
            let started = Instant::now();
            let results = if ours_turn {
                futures::future::join_all((0..n).map(|_| ready_ours(env, Transport::Stdio))).await
            } else {
                futures::future::join_all((0..n).map(|_| ready_raw(env, Transport::Stdio))).await
            };
            // Until the last one answered: the stops after each answer are not timed.
            let mut last = started;
            for r in results {
                last = last.max(r?.at);
            }
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
    rows.push(timing_row(
        "8 docker ready",
        &format!("{n} concurrent stdio starts to MCP-ready vs raw bollard"),
        &ours,
        &raw,
        Target::AtMost(1.25),
    ));
    env.assert_clean("docker ready").await?;
    Ok(rows)
}

fn script(transport: Transport) -> FixtureScript {
    FixtureScript::new().serve(if transport.is_http() {
        ServeMode::Http {
            port: CONTAINER_PORT,
        }
    } else {
        ServeMode::Stdio
    })
}

async fn ready_ours(env: &DockerEnv, transport: Transport) -> Result<Ready> {
    let mut spec = env.spec(&script(transport));
    if transport.is_http() {
        spec.transport = transport;
        spec.port = Some(CONTAINER_PORT);
    }
    let o = &env.orchestrator;
    let started = Instant::now();
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .context("start_server")?;
    let outcome = mcp_ready(o, &id, started, READY_TIMEOUT)
        .await
        .map(|took| Ready::after(started, took));
    env.remove(id.as_str()).await?;
    outcome
}

async fn ready_raw(env: &DockerEnv, transport: Transport) -> Result<Ready> {
    let mut spec = env.spec(&script(transport));
    let mut host_port = None;
    if transport.is_http() {
        spec.transport = transport;
        spec.port = Some(CONTAINER_PORT);
        host_port = Some(
            std::net::TcpListener::bind(("127.0.0.1", 0))?
                .local_addr()?
                .port(),
        );
    }
    let (id, mut body) = env.plan(&spec)?;
    if let Some(port) = host_port
        && let Some(bindings) = body
            .host_config
            .as_mut()
            .and_then(|h| h.port_bindings.as_mut())
    {
        bindings.insert(
            format!("{CONTAINER_PORT}/tcp"),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".into()),
                host_port: Some(port.to_string()),
            }]),
        );
    }
    let started = Instant::now();
    let outcome = async {
        env.raw_start(&id, body).await?;
        if let Some(port) = host_port {
            http_ready(&format!("http://127.0.0.1:{port}/mcp")).await?;
        } else {
            let options = AttachContainerOptionsBuilder::new()
                .stdin(true)
                .stdout(true)
                .stream(true)
                .build();
            let attached = env
                .raw
                .attach_container(&id, Some(options))
                .await
                .context("raw attach")?;
            let stdout = attached
                .output
                .try_filter_map(|f| async move {
                    Ok(match f {
                        LogOutput::StdOut { message } => Some(message),
                        _ => None,
                    })
                })
                .map_err(std::io::Error::other)
                .boxed();
            let client =
                ().serve((StreamReader::new(stdout), attached.input))
                    .await
                    .context("stdio handshake")?;
            client.list_all_tools().await.context("tools/list")?;
            let _ = client.cancel().await;
        }
        Ok::<_, anyhow::Error>(Ready::now(started))
    }
    .await;
    env.remove(&id).await?;
    outcome
}
