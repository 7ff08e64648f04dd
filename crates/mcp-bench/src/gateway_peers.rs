//! The four ways benchmark 9 reaches the same stdio test server, each started once for the
//! whole benchmark and torn down at its end, checked gone:
//!
//! | Way              | What runs                                                             |
//! |------------------|-----------------------------------------------------------------------|
//! | `gateway`        | a process-backend instance behind a separate `mcp-orch serve` process |
//! | `mcp-proxy`      | PyPI's `mcp-proxy` (its own venv) spawning the server on stdio        |
//! | `http`           | the server speaking streamable HTTP itself (`--serve http:PORT`)      |
//! | `stdio`          | the server spawned by the benchmark, one rmcp client on its pipes     |
//!
//! Every spawned program gets its own process group; teardown signals the group and waits until
//! no process of it is left (the server `mcp-proxy` spawns is in the proxy's group).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{InstanceId, McpServer, StartOptions};
use rmcp::service::{Peer, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{RoleClient, ServiceExt};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One way to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Way {
    Gateway,
    McpProxy,
    Http,
    Stdio,
}

impl Way {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::McpProxy => "mcp-proxy",
            Self::Http => "server's own HTTP",
            Self::Stdio => "direct stdio",
        }
    }
}

/// Programs the benchmark runs besides the test server.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    /// `mcp-orch` (its `serve` is the gateway under test).
    pub(crate) mcp_orch: PathBuf,
    /// `mcp-proxy` from its own venv, when installed.
    pub(crate) mcp_proxy: Option<PathBuf>,
    /// A Python with the MCP SDK 2.x (`target/python-tools`), when installed.
    pub(crate) python: Option<PathBuf>,
}

/// A spawned program in its own process group.
pub(crate) struct Group {
    child: tokio::process::Child,
    what: &'static str,
}

impl Group {
    fn spawn(mut cmd: tokio::process::Command, what: &'static str) -> Result<Self> {
        cmd.process_group(0).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("spawning {what}"))?;
        Ok(Self { child, what })
    }

    /// The leader's pid.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGTERM to the group, SIGKILL after 5 s; fails when a process of it survives.
    pub(crate) async fn end(mut self) -> Result<()> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let group = rustix::process::Pid::from_raw(i32::try_from(pid)?).context("pid")?;
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::TERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        while !group_members(pid).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if !group_members(pid).is_empty() {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = self.child.wait().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let left = group_members(pid);
        if !left.is_empty() {
            bail!("{}: processes {left:?} survived SIGKILL", self.what);
        }
        Ok(())
    }
}

/// Live processes whose process group is `pgid` (zombies count as gone).
fn group_members(pgid: u32) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name (which may hold spaces): state, ppid, pgrp.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let mut fields = rest.split_whitespace();
            let state = fields.next();
            let pgrp = fields.nth(1).and_then(|p| p.parse::<u32>().ok());
            state != Some("Z") && pgrp == Some(pgid)
        })
        .collect()
}

/// The resident set of `pid` in bytes (`VmRSS`).
pub(crate) fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .context("VmRSS missing")?;
    Ok(kb * 1024)
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind(("127.0.0.1", 0))?
        .local_addr()?
        .port())
}

/// Connects an rmcp client over streamable HTTP, retrying while the server starts.
pub(crate) async fn http_client(url: &str) -> Result<RunningService<RoleClient, ()>> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        match ().serve(StreamableHttpClientTransport::from_uri(url.to_owned())).await {
            Ok(client) => return Ok(client),
            Err(e) if Instant::now() > deadline => bail!("no MCP answer at {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Every way, running.
pub(crate) struct Peers {
    pub(crate) gateway_url: String,
    /// The `mcp-orch serve` process (its RSS is sampled).
    pub(crate) gateway: Group,
    pub(crate) proxy_url: Option<String>,
    proxy: Option<Group>,
    pub(crate) http_url: String,
    http: Group,
    /// The one session of the direct stdio server; calls go through clones of its peer.
    pub(crate) stdio: RunningService<RoleClient, ()>,
    stdio_child: Group,
    orchestrator: ProcessOrchestrator,
    instance: InstanceId,
    state: tempfile::TempDir,
}

impl Peers {
    /// Starts every way and waits until each answers MCP.
    #[allow(clippy::too_many_lines)] // one block per way, in the table's order
    pub(crate) async fn start(server: &Path, programs: &Programs) -> Result<Self> {
        let stdio_args = FixtureScript::new().serve(ServeMode::Stdio).to_args();
        let state = tempfile::tempdir().context("state directory")?;
        let orchestrator = ProcessOrchestrator::new(ProcessConfig::new(state.path()))
            .context("process orchestrator")?;
        let spec = McpServer::command(
            "gateway-bench",
            server.to_string_lossy(),
            stdio_args.clone(),
        );
        let instance = orchestrator
            .start_server(&spec, &StartOptions::default())
            .await
            .context("start_server")?;
        orchestrator
            .wait_until_running(&instance, START_TIMEOUT)
            .await?;

        let port = free_port()?;
        let mut cmd = tokio::process::Command::new(&programs.mcp_orch);
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("MCPCTL_ORCHESTRATOR_TYPE", "process")
            .env("MCPCTL_PROCESS_STATE_DIR", state.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let gateway = Group::spawn(cmd, "mcp-orch serve")?;
        let gateway_url = format!("http://127.0.0.1:{port}/servers/{instance}/mcp");

        let (proxy, proxy_url) = match &programs.mcp_proxy {
            Some(proxy) => {
                let port = free_port()?;
                let mut cmd = tokio::process::Command::new(proxy);
                cmd.args([
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port.to_string(),
                    "--log-level",
                    "WARNING",
                    "--",
                ])
                .arg(server)
                .args(&stdio_args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
                (
                    Some(Group::spawn(cmd, "mcp-proxy")?),
                    Some(format!("http://127.0.0.1:{port}/mcp")),
                )
            }
            None => (None, None),
        };

        let port = free_port()?;
        let mut cmd = tokio::process::Command::new(server);
        cmd.args(
            FixtureScript::new()
                .serve(ServeMode::Http { port })
                .to_args(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let http = Group::spawn(cmd, "HTTP test server")?;
        let http_url = format!("http://127.0.0.1:{port}/mcp");

        let mut cmd = tokio::process::Command::new(server);
        cmd.args(&stdio_args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut stdio_child = Group::spawn(cmd, "stdio test server")?;
        let from_server = stdio_child.child.stdout.take().context("stdout pipe")?;
        let to_server = stdio_child.child.stdin.take().context("stdin pipe")?;
        let stdio = ().serve((from_server, to_server)).await.context("stdio handshake")?;

        let peers = Self {
            gateway_url,
            gateway,
            proxy_url,
            proxy,
            http_url,
            http,
            stdio,
            stdio_child,
            orchestrator,
            instance,
            state,
        };
        // Each HTTP way answers before anything is measured.
        for url in [
            Some(&peers.gateway_url),
            peers.proxy_url.as_ref(),
            Some(&peers.http_url),
        ]
        .into_iter()
        .flatten()
        {
            let client = http_client(url).await?;
            client.list_all_tools().await.context("tools/list")?;
            let _ = client.cancel().await;
        }
        Ok(peers)
    }

    /// The URL of an HTTP way.
    pub(crate) fn url(&self, way: Way) -> Option<&str> {
        match way {
            Way::Gateway => Some(&self.gateway_url),
            Way::McpProxy => self.proxy_url.as_deref(),
            Way::Http => Some(&self.http_url),
            Way::Stdio => None,
        }
    }

    /// A peer of the direct stdio session.
    pub(crate) fn stdio_peer(&self) -> Peer<RoleClient> {
        self.stdio.peer().clone()
    }

    /// Stops everything; fails when something is left.
    pub(crate) async fn teardown(self) -> Result<()> {
        let Self {
            gateway,
            proxy,
            http,
            stdio,
            stdio_child,
            orchestrator,
            instance,
            state,
            ..
        } = self;
        let _ = stdio.cancel().await;
        let mut results = vec![
            gateway.end().await,
            http.end().await,
            stdio_child.end().await,
        ];
        if let Some(proxy) = proxy {
            results.push(proxy.end().await);
        }
        results.push(
            orchestrator
                .stop_server(&instance, Duration::from_secs(5))
                .await
                .context("stop_server"),
        );
        let left = std::fs::read_dir(state.path().join("instances")).map_or(0, Iterator::count);
        if left > 0 {
            results.push(Err(anyhow::anyhow!(
                "gateway bench: {left} instance directories left"
            )));
        }
        results.into_iter().collect::<Result<Vec<()>>>()?;
        Ok(())
    }
}
