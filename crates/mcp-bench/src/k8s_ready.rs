//! Benchmark 9: start to MCP-ready on the Kubernetes backend against the fake API server, per
//! transport: `start_server` until a real client (rmcp) has completed the handshake and
//! `tools/list` through `connect`, against the same pod (the one `mcp-k8s-resources` builds)
//! created directly in the fake and reached the same way by the same client.
//!
//! The fake's kubelet runs the image as the real test server binary on this host
//! (`run_image_as`), so stdio bytes go through a real `pods/attach` WebSocket and an HTTP
//! server listens on a host port. `connect` names an HTTP server by its Service's cluster DNS
//! name, which only resolves inside a cluster; both sides reach it at `127.0.0.1` on the same
//! port, as `kubectl port-forward` would. After the rounds no pod is left in the fake and no
//! server process is left on the host.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, AttachParams, DeleteParams, PostParams};
use mcp_k8s::{CONTAINER_NAME, KubernetesOrchestrator};
use mcp_k8s_fake::FakeKubeServer;
use mcp_k8s_resources::BuildOptions;
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode};
use mcp_orchestrator_api::{McpChannel, McpOrchestrator, OrchestratorExt};
use mcp_types::{
    InstanceId, K8sConfig, McpServer, RestartPolicy, StartOptions, Timestamp, Transport,
    new_instance_name,
};
use rmcp::ServiceExt;

use crate::ready::{http_ready, mcp_ready};
use crate::report::{Row, timing_row};
use crate::stats::{Samples, Target};

const NS: &str = "mcp-bench";
/// The image the fake's kubelet runs as the test server binary.
const IMAGE: &str = "mcp-test-server:bench";
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(5);
/// How often the raw side looks at its pod while waiting for the container to run.
const POLL: Duration = Duration::from_millis(5);

/// `reps` interleaved rounds (after one warm-up) of each way, for stdio and for HTTP.
pub(crate) async fn ready(server: &Path, reps: usize) -> Result<(Vec<Row>, String)> {
    let fake = FakeKubeServer::try_start()
        .await
        .context("starting the fake API server")?;
    fake.handle().run_image_as(IMAGE, server);
    let client = fake.client_in(NS).await;
    let orchestrator = KubernetesOrchestrator::with_client(
        client.clone(),
        K8sConfig {
            namespace: NS.to_owned(),
            ..K8sConfig::default()
        },
    )
    .context("orchestrator")?;
    let pods: Api<Pod> = Api::namespaced(client, NS);
    let mut rows = Vec::new();
    for transport in [Transport::Stdio, Transport::StreamableHttp] {
        let (mut ours, mut raw) = (Samples::new(), Samples::new());
        for rep in 0..=reps {
            for k in 0..2 {
                let ours_turn = (rep + k) % 2 == 0;
                let elapsed = if ours_turn {
                    ready_ours(&orchestrator, transport).await?
                } else {
                    ready_raw(&pods, transport).await?
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
            "10 k8s ready",
            &format!(
                "{transport}: start_server to handshake+tools/list vs a pod created directly in \
                 the fake + same client"
            ),
            &ours,
            &raw,
            Target::AtMost(1.15),
        ));
    }
    let left = fake.handle().list::<Pod>(Some(NS));
    if !left.is_empty() {
        bail!("k8s ready: {} pods left in the fake", left.len());
    }
    let processes = server_processes(server);
    if !processes.is_empty() {
        bail!("k8s ready: server processes {processes:?} outlived their pods");
    }
    drop(fake);
    Ok((
        rows,
        format!(
            "k8s ready: the fake API server's kubelet runs `{}` for image {IMAGE}; stdio through \
             `pods/attach` (WebSocket), HTTP at 127.0.0.1 on the pod's port (the Service's DNS \
             name only resolves in a cluster)",
            server.display()
        ),
    ))
}

fn spec(transport: Transport) -> Result<McpServer> {
    let mut spec = McpServer::new("ready", IMAGE);
    spec.restart_policy = RestartPolicy::Never;
    let serve = if transport.is_http() {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?
            .local_addr()?
            .port();
        spec.transport = transport;
        spec.port = Some(port);
        ServeMode::Http { port }
    } else {
        ServeMode::Stdio
    };
    spec.args = FixtureScript::new().serve(serve).to_args();
    Ok(spec)
}

/// The loopback URL of an HTTP server the fake's kubelet runs on this host.
fn loopback_url(port: u16, path: &str) -> String {
    format!("http://127.0.0.1:{port}{path}")
}

async fn ready_ours(o: &KubernetesOrchestrator, transport: Transport) -> Result<Duration> {
    let spec = spec(transport)?;
    let started = Instant::now();
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .context("start_server")?;
    let outcome = async {
        if !transport.is_http() {
            return mcp_ready(o, &id, started, READY_TIMEOUT).await;
        }
        o.wait_until_running(&id, READY_TIMEOUT).await?;
        let McpChannel::Http(endpoint) = o.connect(&id).await? else {
            bail!("connect gave no HTTP endpoint for an HTTP server");
        };
        let uri: http::Uri = endpoint.url.parse().context("endpoint URL")?;
        let port = uri.port_u16().context("endpoint without a port")?;
        http_ready(&loopback_url(port, uri.path())).await?;
        Ok(started.elapsed())
    }
    .await;
    let stopped = o.stop_server(&id, GRACE).await;
    let elapsed = outcome?;
    stopped.context("stop_server")?;
    Ok(elapsed)
}

async fn ready_raw(pods: &Api<Pod>, transport: Transport) -> Result<Duration> {
    let spec = spec(transport)?;
    let id = InstanceId::new(new_instance_name("ready"));
    let pod = mcp_k8s_resources::build_pod(&spec, &id, &BuildOptions::new(NS, Timestamp::now()))
        .map_err(|e| anyhow::anyhow!("building the pod: {e}"))?;
    let name = id.as_str();
    let started = Instant::now();
    let outcome = async {
        pods.create(&PostParams::default(), &pod)
            .await
            .context("creating the pod")?;
        wait_running(pods, name).await?;
        if let Some(port) = spec.port {
            http_ready(&loopback_url(port, mcp_types::DEFAULT_HTTP_PATH)).await?;
        } else {
            let params = AttachParams::default()
                .container(CONTAINER_NAME)
                .stdin(true)
                .stdout(true)
                .stderr(false);
            let mut attached = pods.attach(name, &params).await.context("raw attach")?;
            let stdin = attached.stdin().context("attach without stdin")?;
            let stdout = attached.stdout().context("attach without stdout")?;
            let client = ().serve((stdout, stdin)).await.context("stdio handshake")?;
            client.list_all_tools().await.context("tools/list")?;
            let _ = client.cancel().await;
            attached.abort();
        }
        Ok::<_, anyhow::Error>(started.elapsed())
    }
    .await;
    delete_and_wait(pods, name).await?;
    outcome
}

/// Polls the pod until its container runs (what `Running` means on both sides).
async fn wait_running(pods: &Api<Pod>, name: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let pod = pods.get(name).await.context("reading the pod")?;
        let running = pod
            .status
            .and_then(|s| s.container_statuses)
            .into_iter()
            .flatten()
            .any(|c| c.state.is_some_and(|s| s.running.is_some()));
        if running {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("pod {name} not running after {READY_TIMEOUT:?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Deletes a raw pod with the same grace period as `stop_server` and waits until it is gone.
async fn delete_and_wait(pods: &Api<Pod>, name: &str) -> Result<()> {
    let params = DeleteParams {
        grace_period_seconds: Some(u32::try_from(GRACE.as_secs()).unwrap_or(5)),
        ..DeleteParams::default()
    };
    match pods.delete(name, &params).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 404 => {}
        Err(e) => return Err(anyhow::Error::new(e).context("deleting the pod")),
    }
    let deadline = Instant::now() + READY_TIMEOUT;
    while pods
        .get_opt(name)
        .await
        .context("reading the pod")?
        .is_some()
    {
        if Instant::now() > deadline {
            bail!("pod {name} still there {READY_TIMEOUT:?} after its deletion");
        }
        tokio::time::sleep(POLL).await;
    }
    Ok(())
}

/// Processes of this program's children running `server` (the fake's kubelet starts them).
fn server_processes(server: &Path) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == server))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
                // The parent pid is the second field after the parenthesised command name.
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok())
                    == Some(me)
            })
        })
        .collect()
}
