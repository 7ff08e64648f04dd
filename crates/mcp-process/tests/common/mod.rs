//! Helpers shared by the integration tests: a private state directory per test, the
//! supervisor and test-server binaries, and checks that no process is left behind.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use mcp_orchestrator_api::{LogLines, McpOrchestrator, Result};
use mcp_process::{ProcIdentity, ProcessConfig, ProcessOrchestrator};
use mcp_types::{
    Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer, Page,
    StartOptions,
};

/// The supervisor binary cargo built for these tests.
pub fn supervisor() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mcp-process-supervisor"))
}

/// The workspace's real MCP test server (`stdio`, `http`, `fixture`), built once per process.
pub async fn test_server() -> PathBuf {
    tokio::task::spawn_blocking(|| {
        mcp_test_server::static_binary().expect("building mcp-test-server")
    })
    .await
    .expect("build task")
}

/// A configuration over `state_dir` with this crate's supervisor and quick restarts.
pub fn config(state_dir: &Path) -> ProcessConfig {
    ProcessConfig {
        restart_backoff_initial_ms: 50,
        restart_backoff_max_ms: 400,
        // Generous for loaded CI machines; a healthy start takes milliseconds.
        start_timeout_ms: 30_000,
        ..ProcessConfig::new(state_dir).with_supervisor(supervisor())
    }
}

/// A test's own state directory and an orchestrator over it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub orchestrator: ProcessOrchestrator,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_config(|c| c)
    }

    /// An environment whose configuration `adjust` changes (the state dir stays the test's).
    pub fn with_config(adjust: impl FnOnce(ProcessConfig) -> ProcessConfig) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let orchestrator =
            ProcessOrchestrator::new(adjust(config(dir.path()))).expect("orchestrator");
        Self { dir, orchestrator }
    }

    /// A second, independent orchestrator over the same state directory.
    pub fn fresh(&self) -> ProcessOrchestrator {
        ProcessOrchestrator::new(config(self.dir.path())).expect("orchestrator")
    }

    /// The instance directories that exist.
    pub fn instance_dirs(&self) -> Vec<String> {
        instance_dirs(self.dir.path())
    }

    /// No instance directory is left, and within 10 s no process mentions the state
    /// directory on its command line (every supervisor does).
    pub async fn assert_clean(&self) {
        assert!(
            self.instance_dirs().is_empty(),
            "{:?}",
            self.instance_dirs()
        );
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = processes_mentioning(self.dir.path());
            if left.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "supervisors left running: {left:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for TestEnv {
    /// A test that failed half-way must not leave servers running: SIGKILL every recorded
    /// supervisor and server group still alive (a passing test has stopped them all already).
    fn drop(&mut self) {
        for name in instance_dirs(self.dir.path()) {
            let Ok(p) = self.orchestrator.processes(&InstanceId::new(name)) else {
                continue;
            };
            let targets = p
                .supervisor
                .map(|s| (s, false))
                .into_iter()
                .chain(p.server.map(|s| (s, true)));
            for (proc, group) in targets {
                if proc.group_alive() {
                    let target = if group {
                        format!("-{}", proc.pid)
                    } else {
                        proc.pid.to_string()
                    };
                    let _ = std::process::Command::new("kill")
                        .args(["-KILL", "--", &target])
                        .status();
                }
            }
        }
    }
}

pub fn instance_dirs(state_dir: &Path) -> Vec<String> {
    match std::fs::read_dir(state_dir.join("instances")) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The supervisor and server recorded for `id` right now.
pub fn recorded(o: &ProcessOrchestrator, id: &InstanceId) -> Vec<ProcIdentity> {
    let p = o.processes(id).expect("processes");
    p.supervisor.into_iter().chain(p.server).collect()
}

/// Waits (up to 10 s) until none of `procs` (nor any member of the groups they lead) runs.
pub async fn assert_gone(procs: &[ProcIdentity]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<_> = procs.iter().filter(|p| p.group_alive()).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes left behind: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Processes whose command line mentions `needle` (e.g. a test's state directory: every
/// supervisor has its instance directory as its argument).
pub fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .filter_map(std::result::Result::ok)
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|pid| {
                    let stat =
                        std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                    let zombie = stat
                        .rsplit_once(')')
                        .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
                    !zombie
                        && std::fs::read(format!("/proc/{pid}/cmdline"))
                            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&needle))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wraps an orchestrator and remembers the processes of every instance it started, so a test
/// can check afterwards that all of them are gone.
#[derive(Debug)]
pub struct Recording {
    pub inner: ProcessOrchestrator,
    pub seen: Mutex<Vec<ProcIdentity>>,
}

impl Recording {
    pub fn new(inner: ProcessOrchestrator) -> Self {
        Self {
            inner,
            seen: Mutex::new(Vec::new()),
        }
    }

    pub fn seen(&self) -> Vec<ProcIdentity> {
        self.seen.lock().expect("lock").clone()
    }
}

#[async_trait]
impl McpOrchestrator for Recording {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId> {
        let id = self.inner.start_server(spec, options).await?;
        if let Ok(p) = self.inner.processes(&id) {
            let mut seen = self.seen.lock().expect("lock");
            seen.extend(p.supervisor);
            seen.extend(p.server);
        }
        Ok(id)
    }
    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        self.inner.stop_server(id, grace).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        self.inner.get_status(id).await
    }
    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        self.inner.get_logs(id, options).await
    }
    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        self.inner.list_instances(filters).await
    }
    async fn connect(&self, id: &InstanceId) -> Result<mcp_orchestrator_api::McpChannel> {
        self.inner.connect(id).await
    }
    async fn watch(
        &self,
        filters: &InstanceFilters,
    ) -> Result<mcp_orchestrator_api::InstanceEvents> {
        self.inner.watch(filters).await
    }

    async fn collect_garbage(&self, dry_run: bool) -> Result<mcp_types::GcReport> {
        self.inner.collect_garbage(dry_run).await
    }

    async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<mcp_types::PersistentVolume>> {
        self.inner.list_volumes(server).await
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.inner.remove_volume(name).await
    }
}

/// Collects a non-following log stream's texts.
pub async fn log_texts(o: &ProcessOrchestrator, id: &InstanceId, opts: &LogOptions) -> Vec<String> {
    use futures::StreamExt;
    let stream = o.get_logs(id, opts).await.expect("logs");
    stream
        .map(|l| l.expect("log line").text)
        .collect::<Vec<_>>()
        .await
}

/// Polls the logs until a line equal to `text` appears (up to 20 s).
pub async fn wait_for_line(o: &ProcessOrchestrator, id: &InstanceId, text: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let lines = log_texts(o, id, &LogOptions::default()).await;
        if lines.iter().any(|l| l == text) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no line {text:?} in the logs of {id}: {lines:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
