//! Benchmark 5: the process backend's spawn-to-Running (a detached supervisor that launches
//! the server and records it) vs a raw `tokio::process::Command` spawn of the same command
//! with the same environment, pipes and process group. Every process is checked gone after.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{McpServer, StartOptions};

use crate::report::{Row, timing_row};
use crate::stats::{Samples, Target};

const RUNNING_TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(5);

/// Runs `reps` interleaved starts of `server fixture` (idles until stopped) each way.
pub(crate) async fn spawn_to_running(server: &Path, reps: usize) -> Result<(Vec<Row>, String)> {
    let state = tempfile::tempdir().context("state directory")?;
    let config = ProcessConfig::new(state.path());
    let supervisor = config
        .supervisor_program()
        .map_err(anyhow::Error::msg)
        .context(
            "the process benchmark needs mcp-process-supervisor next to mcp-bench \
             (cargo xtask bench builds both)",
        )?;
    let orchestrator = ProcessOrchestrator::new(config).context("process orchestrator")?;
    // The same with the state directory on tmpfs: shows what the state files' writes still
    // cost on the disk (they are renamed into place, not synced: `mcp_process::layout`).
    let shm = tempfile::tempdir_in("/dev/shm").ok();
    let on_tmpfs = shm
        .as_ref()
        .map(|d| ProcessOrchestrator::new(ProcessConfig::new(d.path())))
        .transpose()
        .context("process orchestrator on tmpfs")?;
    let program = server.to_string_lossy().into_owned();
    let spec = McpServer::command("bench", program, ["fixture"]);
    // [ours, raw spawn, two raw spawns in a row, ours with the state on tmpfs]
    let mut samples = [
        Samples::new(),
        Samples::new(),
        Samples::new(),
        Samples::new(),
    ];
    let variants = if on_tmpfs.is_some() { 4 } else { 3 };
    for rep in 0..=reps {
        for k in 0..variants {
            let i = (rep + k) % variants;
            let elapsed = match (i, &on_tmpfs) {
                (0, _) => start_ours(&orchestrator, &spec).await?,
                (2, _) => start_raw_pair(server).await?,
                (3, Some(o)) => start_ours(o, &spec).await?,
                _ => start_raw(server).await?,
            };
            if rep > 0 {
                samples[i].push_duration(elapsed);
            }
        }
    }
    let [ours, raw, two, tmpfs] = samples;
    for dir in std::iter::once(state.path()).chain(shm.as_ref().map(tempfile::TempDir::path)) {
        let left = instance_dirs(&dir.join("instances"))?;
        if !left.is_empty() {
            bail!("process: instance directories left: {left:?}");
        }
    }
    let mut rows = vec![timing_row(
        "5 process start",
        "start_server+Running vs raw tokio spawn",
        &ours,
        &raw,
        // The floor is two spawns (the supervisor's and the server's) plus the supervisor's
        // runtime start and handshake: `docs/BENCHMARKS.md`, 5.
        Target::AtMost(3.0),
    )];
    // A supervisor that outlives its caller is a second program between the caller and the
    // server: its spawn, then the server's, is the floor the target is set against.
    rows.push(timing_row(
        "5 process start",
        "floor: two raw tokio spawns in a row (the supervisor's and the server's) vs one",
        &two,
        &raw,
        Target::Info,
    ));
    if on_tmpfs.is_some() {
        rows.push(timing_row(
            "5 process start",
            "same, state dir on tmpfs (no disk I/O) vs raw tokio spawn",
            &tmpfs,
            &raw,
            Target::Info,
        ));
    }
    let note = format!(
        "process: supervisor {}, server `{} fixture` (idles until SIGTERM)",
        supervisor.display(),
        server.display()
    );
    Ok((rows, note))
}

/// One start through the orchestrator (timed), then a stop (not timed) and checks that the
/// supervisor and the server are gone.
async fn start_ours(o: &ProcessOrchestrator, spec: &McpServer) -> Result<Duration> {
    let started = Instant::now();
    let id = o
        .start_server(spec, &StartOptions::default())
        .await
        .context("start_server")?;
    let running = o.wait_until_running(&id, RUNNING_TIMEOUT).await;
    let elapsed = started.elapsed();
    let procs = o.processes(&id);
    // Stopped whatever happened, so that a failed start leaves nothing running.
    let stopped = o.stop_server(&id, GRACE).await;
    running.context("wait_until_running")?;
    stopped.context("stop_server")?;
    let procs = procs.context("processes")?;
    for (what, p) in [("supervisor", procs.supervisor), ("server", procs.server)] {
        match p {
            Some(p) if p.is_alive() => {
                bail!("process: the {what} (pid {}) survived the stop", p.pid)
            }
            Some(_) => {}
            None => bail!("process: no {what} was recorded for a running instance"),
        }
    }
    Ok(elapsed)
}

/// Two raw spawns one after the other (timed together), then both killed and reaped.
async fn start_raw_pair(server: &Path) -> Result<Duration> {
    let (mut first, mut second) = (raw_command(server), raw_command(server));
    let started = Instant::now();
    let a = first.spawn().context("raw spawn")?;
    let b = second.spawn().context("raw spawn")?;
    let elapsed = started.elapsed();
    for child in [a, b] {
        reap(child).await?;
    }
    Ok(elapsed)
}

/// One raw spawn (timed: `spawn` returns once the program was executed), then kill and reap.
async fn start_raw(server: &Path) -> Result<Duration> {
    let mut cmd = raw_command(server);
    let started = Instant::now();
    let child = cmd.spawn().context("raw spawn")?;
    let elapsed = started.elapsed();
    reap(child).await?;
    Ok(elapsed)
}

/// Kills a raw child, waits for it and checks that it is gone.
pub(crate) async fn reap(mut child: tokio::process::Child) -> Result<()> {
    let pid = child.id();
    child.kill().await.context("killing the raw child")?;
    if let Some(pid) = pid
        && Path::new(&format!("/proc/{pid}")).exists()
    {
        bail!("process: raw child {pid} survived kill + wait");
    }
    Ok(())
}

/// The server as `start_server` runs it: the same environment, pipes and process group.
fn raw_command(server: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(server);
    cmd.arg("fixture")
        .env_clear()
        .envs(
            ["PATH", "HOME", "LANG"]
                .into_iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    cmd
}

fn instance_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(entries.filter_map(|e| e.ok().map(|e| e.path())).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}
