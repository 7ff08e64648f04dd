//! `ProcessOrchestrator`: starts local commands under per-instance supervisors and answers
//! every query from the state directory, so any process (a later CLI invocation, another
//! program) sees the same instances.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mcp_orchestrator_api::connect::{self, HttpEndpoint, McpChannel, StdioChannel};
use mcp_orchestrator_api::continuation::{page_after, parse_after_token};
use mcp_orchestrator_api::secrets::{DirSecretResolver, NoSecrets, SecretResolver, resolve_env};
use mcp_orchestrator_api::{LogLines, McpOrchestrator, OrchestratorError, Result};
use mcp_types::{
    Instance, InstanceFilters, InstanceId, InstanceStatus, LogLine, LogOptions, McpServer, Page,
    Phase, ResourceRequirements, StartOptions, StreamSelector, Timestamp, Transport,
    ValidationErrors, labels, new_instance_name, reasons,
};
use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::config::{ProcessConfig, is_executable, search_path};
use crate::error::{BACKEND, ProcessError};
use crate::layout::{
    Handoff, INSTANCES, InstancePaths, Launch, LogRecord, Meta, SOCKET_FILE, State, StopRequest,
    TRASH, create_private_dir, create_private_dir_all, read_json, write_json,
};
use crate::procfs::ProcIdentity;
use crate::supervisor::{ATTACH_BANNER, READY};

/// How often log followers and stop waits look again.
const POLL: Duration = Duration::from_millis(20);
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// How long after the grace period a stop waits for the supervisor before killing it.
const SUPERVISOR_MARGIN: Duration = Duration::from_secs(5);
/// How long a killed process group may take to disappear before stop reports a timeout.
const KILL_WAIT: Duration = Duration::from_secs(5);
/// How long the stdio bridge may take to greet a client.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest `sun_path` this code passes to `connect` as is (the kernel limit is 108 bytes).
const MAX_SOCKET_PATH: usize = 100;

/// The local-process backend. Cloning shares the configuration; all state is on disk.
#[derive(Debug, Clone)]
pub struct ProcessOrchestrator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ProcessConfig,
    state_dir: PathBuf,
    secrets: Box<dyn SecretResolver>,
}

/// The processes behind an instance, as recorded in its state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceProcesses {
    /// The supervisor.
    pub supervisor: Option<ProcIdentity>,
    /// The server process (leader of its own process group) of the current run, as recorded
    /// by the supervisor (`None` between runs and after the last one). It may have died since
    /// if the supervisor did: check [`ProcIdentity::is_alive`].
    pub server: Option<ProcIdentity>,
}

/// What the state directory says about one instance right now.
struct Observed {
    meta: Meta,
    status: InstanceStatus,
    supervisor: Option<ProcIdentity>,
    server: Option<ProcIdentity>,
}

impl ProcessOrchestrator {
    /// An orchestrator over `config`'s state directory. Nothing is created until the first
    /// start, and the supervisor program is looked up at each start.
    ///
    /// # Errors
    /// [`Unavailable`](OrchestratorError::Unavailable) when no state directory is configured
    /// and none can be derived from `XDG_STATE_HOME` or `HOME`.
    pub fn new(config: ProcessConfig) -> Result<Self> {
        let dir = config.state_dir().map_err(ProcessError::Setup)?;
        let state_dir = if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir()
                .map_err(ProcessError::io("resolving the current directory", &dir))?
                .join(dir)
        };
        let secrets: Box<dyn SecretResolver> = match &config.secrets_dir {
            Some(d) => Box::new(DirSecretResolver::new(d)),
            None => Box::new(NoSecrets),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state_dir,
                secrets,
            }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &ProcessConfig {
        &self.inner.config
    }

    /// The state directory root.
    pub fn state_dir(&self) -> &Path {
        &self.inner.state_dir
    }

    /// The directory of instance `id` (whether or not it exists).
    pub fn instance_dir(&self, id: &InstanceId) -> PathBuf {
        self.inner.state_dir.join(INSTANCES).join(id.as_str())
    }

    /// The supervisor and server processes recorded for `id`.
    ///
    /// # Errors
    /// [`NotFound`](OrchestratorError::NotFound) for an unknown id; IO errors reading the state.
    pub fn processes(&self, id: &InstanceId) -> Result<InstanceProcesses> {
        let paths = self.paths(id)?;
        let obs = observe(&paths, &self.inner.config)?;
        Ok(InstanceProcesses {
            supervisor: obs.supervisor,
            server: obs.server,
        })
    }

    /// Connects to the stdin/stdout of a running stdio server through its supervisor's bridge
    /// (`<instance dir>/stdio.sock`). Bytes written go to the server's stdin; the server's
    /// stdout comes back (and is not logged meanwhile unless `logStdioTraffic` is set; stderr
    /// is always logged). One client at a time; the server keeps running when the client
    /// disconnects, and the connection ends when the server exits or is stopped.
    ///
    /// The server sees one continuous stdin across clients, so a client that attaches after
    /// another has initialized an MCP session finds that session already initialized.
    ///
    /// # Errors
    /// - [`NotFound`](OrchestratorError::NotFound) for an unknown id.
    /// - [`NotSupported`](OrchestratorError::NotSupported) for an HTTP server (use its endpoint).
    /// - [`Unavailable`](OrchestratorError::Unavailable) when another client is attached, the
    ///   server is not running (backing off, exited) or the supervisor is gone.
    pub async fn attach_stdio(&self, id: &InstanceId) -> Result<UnixStream> {
        let paths = self.paths(id)?;
        let obs = observe(&paths, &self.inner.config)?;
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

    /// Paths of an existing instance; NotFound for ids that are not instance names (which also
    /// keeps ids from naming paths outside the state directory).
    fn paths(&self, id: &InstanceId) -> Result<InstancePaths, ProcessError> {
        if mcp_types::names::check_dns1123_label(id.as_str()).is_err() {
            return Err(ProcessError::NotFound(id.to_string()));
        }
        let paths = InstancePaths::new(self.instance_dir(id));
        if paths.meta().exists() {
            Ok(paths)
        } else {
            Err(ProcessError::NotFound(id.to_string()))
        }
    }

    fn instances_dir(&self) -> PathBuf {
        self.inner.state_dir.join(INSTANCES)
    }

    /// The environment the server gets: the inherited variables, then the spec's.
    fn server_env(&self, spec: &McpServer) -> Result<Vec<(String, String)>> {
        let resolved = resolve_env(&spec.env, self.inner.secrets.as_ref())?;
        let mut env: Vec<(String, String)> = self
            .inner
            .config
            .inherited_env_names()
            .into_iter()
            .filter(|name| !spec.env.contains_key(name))
            .filter_map(|name| std::env::var(&name).ok().map(|v| (name, v)))
            .collect();
        env.extend(
            resolved
                .into_iter()
                .map(|(k, v)| (k, v.expose().to_owned())),
        );
        Ok(env)
    }

    /// Builds what the supervisor will run, refusing specs this backend cannot honour.
    fn launch(&self, spec: &McpServer, env: &[(String, String)]) -> Result<Launch> {
        if spec.gpu.is_some() {
            return Err(not_supported("GPUs"));
        }
        if !spec.volumes.is_empty() {
            return Err(not_supported(
                "volumes (a local process sees the host file system; use workingDir)",
            ));
        }
        if spec.egress.is_some() {
            return Err(not_supported(
                "egress restrictions (a local process shares the host network)",
            ));
        }
        let Some((program, rest)) = spec.command.split_first() else {
            return Err(invalid(
                "command",
                "the process backend runs `command` (the program and its first arguments); \
                 an image alone cannot run as a local process",
            ));
        };
        let cwd = match &spec.working_dir {
            Some(d) => PathBuf::from(d),
            None => std::env::current_dir().map_err(|e| {
                invalid(
                    "workingDir",
                    format!("the current directory is unusable: {e}"),
                )
            })?,
        };
        if !cwd.is_dir() {
            return Err(invalid(
                "workingDir",
                format!("{} is not a directory", cwd.display()),
            ));
        }
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.as_str());
        let program =
            resolve_program(program, &cwd, path_var).map_err(|m| invalid("command", m))?;
        let memory_limit_bytes = if spec.resources == ResourceRequirements::default() {
            None
        } else {
            spec.resources.effective().1.memory.map(|q| q.to_bytes())
        };
        let config = &self.inner.config;
        Ok(Launch {
            program,
            args: rest.iter().chain(&spec.args).cloned().collect(),
            cwd,
            transport: spec.transport,
            restart_policy: spec.restart_policy,
            memory_limit_bytes,
            backoff_initial_ms: config.restart_backoff_initial_ms,
            backoff_max_ms: config.restart_backoff_max_ms,
            log_stdio_traffic: config.log_stdio_traffic,
        })
    }

    /// Creates a fresh instance directory with a unique id (`create_dir` is atomic, so
    /// concurrent starters never share one).
    fn create_instance_dir(
        &self,
        server: &str,
    ) -> Result<(InstanceId, InstancePaths), ProcessError> {
        let root = self.instances_dir();
        create_private_dir_all(&root).map_err(ProcessError::io("creating", &root))?;
        let mut last = None;
        for _ in 0..8 {
            let id = InstanceId::new(new_instance_name(server));
            let dir = root.join(id.as_str());
            match create_private_dir(&dir) {
                Ok(()) => return Ok((id, InstancePaths::new(dir))),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => return Err(ProcessError::io("creating", &dir)(e)),
            }
        }
        Err(ProcessError::io(
            "creating a unique instance directory in",
            &root,
        )(last.unwrap_or_else(|| {
            std::io::Error::other("name collisions")
        })))
    }

    /// Spawns the supervisor, records its identity, hands it the environment and waits for it
    /// to report the first launch.
    async fn spawn_supervisor(
        &self,
        id: &InstanceId,
        paths: &InstancePaths,
        supervisor: &Path,
        handoff: &Handoff,
    ) -> Result<(), ProcessError> {
        let config = &self.inner.config;
        let log_path = paths.supervisor_log();
        let log =
            std::fs::File::create(&log_path).map_err(ProcessError::io("creating", &log_path))?;
        let mut cmd = tokio::process::Command::new(supervisor);
        cmd.args(&config.supervisor_args)
            .arg(&paths.dir)
            .current_dir(&paths.dir)
            .env_clear()
            .envs(
                ["PATH", "HOME", "LANG"]
                    .into_iter()
                    .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .kill_on_drop(false);
        let mut child = cmd
            .spawn()
            .map_err(ProcessError::io("starting the supervisor", supervisor))?;
        let identity = child.id().and_then(ProcIdentity::of);
        if let Some(identity) = identity {
            write_json(&paths.supervisor(), &identity)
                .map_err(ProcessError::io("writing", &paths.supervisor()))?;
        }
        let payload = serde_json::to_vec(handoff).map_err(|e| ProcessError::SupervisorFailed {
            id: id.to_string(),
            message: format!("encoding the environment: {e}"),
        })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A supervisor that died already shows up as EOF below, with its log.
            let _ = stdin.write_all(&payload).await;
            drop(stdin);
        }
        let Some(stdout) = child.stdout.take() else {
            return Err(ProcessError::SupervisorFailed {
                id: id.to_string(),
                message: "no stdout pipe".into(),
            });
        };
        let mut line = String::new();
        let timeout = config.start_timeout();
        let mut reader = tokio::io::BufReader::new(stdout);
        match tokio::time::timeout(timeout, reader.read_line(&mut line)).await {
            Ok(Ok(_)) if line.trim_end() == READY => Ok(()),
            Ok(_) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                Err(ProcessError::SupervisorFailed {
                    id: id.to_string(),
                    message: format!(
                        "it exited before launching the server; its log says: {}",
                        tail_of(&log_path)
                    ),
                })
            }
            Err(_) => Err(ProcessError::Timeout {
                what: format!("the supervisor of {id} to launch the server"),
                after: timeout,
            }),
        }
        // Dropping `child` leaves the supervisor running; tokio reaps it when it exits.
    }

    /// Ends whatever still runs for an instance and deletes its directory: the supervisor
    /// (SIGTERM, then SIGKILL after grace + a margin), then any server process group it left
    /// behind (SIGTERM, grace, SIGKILL), each verified by pid and start time.
    async fn kill_and_remove(
        &self,
        paths: &InstancePaths,
        grace: Duration,
    ) -> Result<(), ProcessError> {
        let supervisor: Option<ProcIdentity> = read_json(&paths.supervisor())
            .map_err(ProcessError::io("reading", &paths.supervisor()))?;
        if let Some(sup) = supervisor.filter(ProcIdentity::is_alive) {
            signal(&sup, Signal::TERM, "the supervisor")?;
            if !wait_until(|| !sup.is_alive(), grace + SUPERVISOR_MARGIN).await {
                tracing::warn!(pid = sup.pid, "supervisor ignored the stop; killing it");
                signal(&sup, Signal::KILL, "the supervisor")?;
                wait_until(|| !sup.is_alive(), KILL_WAIT).await;
            }
        }
        let state: Option<State> =
            read_json(&paths.state()).map_err(ProcessError::io("reading", &paths.state()))?;
        if let Some(server) = state
            .and_then(|s| s.server)
            .filter(ProcIdentity::group_alive)
        {
            // Orphaned: the supervisor died (or was killed above) with the server running.
            signal_group(&server, Signal::TERM)?;
            if !wait_until(|| !server.group_alive(), grace).await {
                signal_group(&server, Signal::KILL)?;
                if !wait_until(|| !server.group_alive(), KILL_WAIT).await {
                    return Err(ProcessError::Timeout {
                        what: format!("process group {} to exit after SIGKILL", server.pid),
                        after: KILL_WAIT,
                    });
                }
            }
        }
        self.remove_dir(paths)
    }

    /// Renames the instance directory into the trash (atomic: it vanishes from listings at
    /// once) and deletes it there.
    fn remove_dir(&self, paths: &InstancePaths) -> Result<(), ProcessError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let trash = self.inner.state_dir.join(TRASH);
        create_private_dir_all(&trash).map_err(ProcessError::io("creating", &trash))?;
        let name = paths
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let target = trash.join(format!(
            "{name}.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        match std::fs::rename(&paths.dir, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(ProcessError::io("moving to the trash", &paths.dir)(e)),
        }
        std::fs::remove_dir_all(&target).map_err(ProcessError::io("deleting", &target))
    }

    /// Takes the per-instance stop lock (flock), polling so the runtime is never blocked.
    async fn lock_stop(
        &self,
        id: &InstanceId,
        paths: &InstancePaths,
        wait: Duration,
    ) -> Result<std::fs::File, ProcessError> {
        let path = paths.stop_lock();
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    ProcessError::NotFound(id.to_string())
                } else {
                    ProcessError::io("opening", &path)(e)
                }
            })?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ProcessError::io("locking", &path)(e.into())),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::Timeout {
                    what: format!("another stop of {id} to finish"),
                    after: wait,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

fn not_supported(what: &str) -> OrchestratorError {
    OrchestratorError::NotSupported {
        backend: BACKEND,
        what: what.to_owned(),
    }
}

fn invalid(path: &str, message: impl Into<String>) -> OrchestratorError {
    OrchestratorError::InvalidSpec(ValidationErrors::single(path, message))
}

fn signal(p: &ProcIdentity, sig: Signal, what: &str) -> Result<(), ProcessError> {
    p.signal(sig)
        .map(drop)
        .map_err(|source| ProcessError::Signal {
            what: format!("{what} (pid {})", p.pid),
            source,
        })
}

fn signal_group(p: &ProcIdentity, sig: Signal) -> Result<(), ProcessError> {
    p.signal_group(sig)
        .map(drop)
        .map_err(|source| ProcessError::Signal {
            what: format!("process group {}", p.pid),
            source,
        })
}

/// Polls `done` until it holds or `limit` passes; returns whether it held.
async fn wait_until(done: impl Fn() -> bool, limit: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if done() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// `program` as an absolute path: with a `/` it is taken relative to the working directory,
/// otherwise it is looked up on the server's `PATH`.
fn resolve_program(program: &str, cwd: &Path, path_var: Option<&str>) -> Result<PathBuf, String> {
    if program.contains('/') {
        let p = cwd.join(program);
        if is_executable(&p) {
            Ok(p)
        } else {
            Err(format!("{} is not an executable file", p.display()))
        }
    } else {
        search_path(program, path_var.map(std::ffi::OsStr::new)).ok_or_else(|| {
            format!(
                "{program:?} was not found on the server's PATH ({})",
                path_var.unwrap_or("unset")
            )
        })
    }
}

/// The last few lines of a text file, for error messages.
fn tail_of(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
    if tail.is_empty() {
        "(nothing)".into()
    } else {
        tail
    }
}

/// How long an instance may have no recorded supervisor before it counts as abandoned.
fn startup_window(config: &ProcessConfig) -> jiff::SignedDuration {
    jiff::SignedDuration::try_from(config.start_timeout() + SUPERVISOR_MARGIN)
        .unwrap_or(jiff::SignedDuration::from_secs(60))
}

/// Reads one instance's documents and decides its status, checking the supervisor's liveness
/// *before* reading the state so that a supervisor that records its final state and exits is
/// never mistaken for a dead one.
fn observe(paths: &InstancePaths, config: &ProcessConfig) -> Result<Observed, ProcessError> {
    let meta: Meta = read_json(&paths.meta())
        .map_err(ProcessError::io("reading", &paths.meta()))?
        .ok_or_else(|| {
            ProcessError::NotFound(
                paths
                    .dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default(),
            )
        })?;
    let supervisor: Option<ProcIdentity> =
        read_json(&paths.supervisor()).map_err(ProcessError::io("reading", &paths.supervisor()))?;
    let supervisor_alive = supervisor.is_some_and(|s| s.is_alive());
    let state: Option<State> =
        read_json(&paths.state()).map_err(ProcessError::io("reading", &paths.state()))?;
    let server = state.as_ref().and_then(|s| s.server);
    let young = Timestamp::now().duration_since(meta.created_at) < startup_window(config);
    let status = match state {
        Some(s) if supervisor_alive || s.status.phase.is_terminal() => s.status,
        None if supervisor_alive || (supervisor.is_none() && young) => {
            InstanceStatus::phase(Phase::Pending)
        }
        Some(s) => {
            let sup_pid = supervisor.map_or_else(|| "?".to_owned(), |s| s.pid.to_string());
            match server.filter(ProcIdentity::group_alive) {
                Some(srv) => InstanceStatus {
                    phase: Phase::Unknown,
                    reason: Some(reasons::ORPHANED.into()),
                    message: Some(format!(
                        "the supervisor (pid {sup_pid}) is gone; the server (process group {}) \
                         still runs unsupervised and its output is no longer logged; stop the \
                         instance to end it",
                        srv.pid
                    )),
                    ..s.status
                },
                None => InstanceStatus {
                    phase: Phase::Failed,
                    reason: Some(reasons::ORPHANED.into()),
                    message: Some(format!(
                        "the supervisor (pid {sup_pid}) is gone and the server no longer runs; \
                         its exit was not recorded"
                    )),
                    ..s.status
                },
            }
        }
        None => InstanceStatus::phase(Phase::Failed)
            .with_reason(reasons::ORPHANED)
            .with_message(format!(
                "the supervisor exited before recording any state; see {}",
                paths.supervisor_log().display()
            )),
    };
    Ok(Observed {
        meta,
        status,
        supervisor,
        server,
    })
}

fn instance_of(obs: Observed) -> Instance {
    Instance {
        id: obs.meta.id,
        server: obs.meta.server,
        labels: obs.meta.labels,
        created_at: Some(obs.meta.created_at),
        status: obs.status,
        endpoint: obs.meta.endpoint,
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

/// Which log lines a reader wants.
#[derive(Debug, Clone)]
struct LogFilter {
    /// Lines of this run (exactly), or of this run and later ones when following.
    run: u32,
    later_runs: bool,
    stream: StreamSelector,
    since: Option<Timestamp>,
    timestamps: bool,
}

impl LogFilter {
    fn accept(&self, rec: LogRecord) -> Option<LogLine> {
        let run_ok = if self.later_runs {
            rec.run >= self.run
        } else {
            rec.run == self.run
        };
        (run_ok
            && self.stream.includes(rec.stream)
            && self.since.is_none_or(|since| rec.ts >= since))
        .then(|| LogLine {
            stream: rec.stream,
            timestamp: self.timestamps.then_some(rec.ts),
            text: rec.text,
        })
    }

    /// Parses complete lines of `bytes`; returns the wanted lines and how many bytes were
    /// consumed (an unfinished last line is left for later).
    fn parse(&self, bytes: &[u8], out: &mut VecDeque<LogLine>, tail: Option<usize>) -> usize {
        let mut consumed = 0;
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            if !chunk.ends_with(b"\n") {
                break;
            }
            consumed += chunk.len();
            match serde_json::from_slice::<LogRecord>(chunk) {
                Ok(rec) => {
                    if let Some(line) = self.accept(rec) {
                        out.push_back(line);
                        if tail.is_some_and(|t| out.len() > t) {
                            out.pop_front();
                        }
                    }
                }
                Err(e) => tracing::warn!("skipping a malformed log line: {e}"),
            }
        }
        consumed
    }
}

/// Reads the existing log: the wanted lines (the last `tail` of them) and the offset after
/// the last complete line.
fn read_existing(
    path: &Path,
    filter: &LogFilter,
    tail: Option<usize>,
) -> std::io::Result<(Vec<LogLine>, u64)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut reader = BufReader::new(file);
    let mut out = VecDeque::new();
    let mut offset = 0u64;
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = reader.read_until(b'\n', &mut buf)?;
        if n == 0 || !buf.ends_with(b"\n") {
            break;
        }
        offset += filter.parse(&buf, &mut out, tail) as u64;
    }
    Ok((out.into(), offset))
}

/// A follower: reads what is appended to the log until the instance ends.
struct Follow {
    config: ProcessConfig,
    paths: InstancePaths,
    file: Option<tokio::fs::File>,
    pending: Vec<u8>,
    queue: VecDeque<LogLine>,
    filter: LogFilter,
    finished: bool,
}

impl Follow {
    /// Whether no more lines will come: the instance was removed, finished for good, or lost
    /// its supervisor.
    fn ended(&self) -> bool {
        match observe(&self.paths, &self.config) {
            Ok(obs) => {
                obs.status.phase.is_terminal()
                    || obs.status.reason.as_deref() == Some(reasons::ORPHANED)
            }
            Err(_) => true,
        }
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        let mut chunk = Vec::new();
        file.read_to_end(&mut chunk).await?;
        if chunk.is_empty() {
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk);
        let consumed = self.filter.parse(&self.pending, &mut self.queue, None);
        self.pending.drain(..consumed);
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<LogLine>> {
        loop {
            if let Some(line) = self.queue.pop_front() {
                return Some(Ok(line));
            }
            if self.finished {
                return None;
            }
            // Decide "ended" before reading, so lines written before the end are still read.
            let ended = self.ended();
            if let Err(e) = self.read_more().await {
                self.finished = true;
                return Some(Err(
                    ProcessError::io("reading", &self.paths.logs())(e).into()
                ));
            }
            if !self.queue.is_empty() {
                continue;
            }
            if ended {
                self.finished = true;
                continue;
            }
            tokio::time::sleep(FOLLOW_POLL).await;
        }
    }
}

#[async_trait]
impl McpOrchestrator for ProcessOrchestrator {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId> {
        let spec = options.apply(spec)?;
        let env = self.server_env(&spec)?;
        let launch = self.launch(&spec, &env)?;
        let supervisor = self
            .inner
            .config
            .supervisor_program()
            .map_err(ProcessError::Setup)?;
        let (id, paths) = self.create_instance_dir(&spec.name)?;
        let endpoint = spec
            .port
            .filter(|_| spec.transport.is_http())
            .map(|p| mcp_types::http_url("127.0.0.1", p, spec.http_path()));
        let meta = Meta {
            id: id.clone(),
            server: spec.name.clone(),
            labels: labels::instance_labels(&spec.name, id.as_str(), &spec.labels),
            annotations: spec.annotations.clone(),
            created_at: Timestamp::now(),
            port: spec.port,
            endpoint,
            env_names: env.iter().map(|(k, _)| k.clone()).collect(),
            launch,
        };
        let prepared = write_json(&paths.meta(), &meta)
            .map_err(ProcessError::io("writing", &paths.meta()))
            .and_then(|()| {
                std::fs::File::create(paths.logs())
                    .map(drop)
                    .map_err(ProcessError::io("creating", &paths.logs()))
            });
        let started = match prepared {
            Ok(()) => {
                self.spawn_supervisor(&id, &paths, &supervisor, &Handoff { env })
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            if let Err(cleanup) = self.kill_and_remove(&paths, Duration::ZERO).await {
                tracing::warn!(%id, "cleaning up after a failed start: {cleanup}");
            }
            return Err(e.into());
        }
        tracing::debug!(%id, "started");
        Ok(id)
    }

    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let paths = self.paths(id)?;
        let _lock = self
            .lock_stop(id, &paths, grace + SUPERVISOR_MARGIN + KILL_WAIT * 2)
            .await?;
        // A stop that held the lock before us may have removed the instance.
        if !paths.meta().exists() {
            return Err(OrchestratorError::not_found(id.as_str()));
        }
        let request = StopRequest {
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        write_json(&paths.stop_request(), &request)
            .map_err(ProcessError::io("writing", &paths.stop_request()))?;
        self.kill_and_remove(&paths, grace).await?;
        tracing::debug!(%id, "stopped");
        Ok(())
    }

    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let paths = self.paths(id)?;
        Ok(observe(&paths, &self.inner.config)?.status)
    }

    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        let paths = self.paths(id)?;
        let state: Option<State> =
            read_json(&paths.state()).map_err(ProcessError::io("reading", &paths.state()))?;
        let current = state.map_or(0, |s| s.run);
        let run = if options.previous {
            current
                .checked_sub(1)
                .ok_or_else(|| OrchestratorError::InvalidArgument {
                    what: "previous",
                    message: format!("instance {id} has no previous run"),
                })?
        } else {
            current
        };
        let filter = LogFilter {
            run,
            later_runs: false,
            stream: options.stream,
            since: options.since,
            timestamps: options.timestamps,
        };
        let tail = options
            .tail
            .map(|t| usize::try_from(t).unwrap_or(usize::MAX));
        let log_path = paths.logs();
        let (lines, offset) = {
            let filter = filter.clone();
            let path = log_path.clone();
            tokio::task::spawn_blocking(move || read_existing(&path, &filter, tail))
                .await
                .map_err(|e| OrchestratorError::backend(BACKEND, e))?
                .map_err(ProcessError::io("reading", &log_path))?
        };
        let head = futures::stream::iter(lines.into_iter().map(Ok));
        if !options.follow || options.previous {
            return Ok(head.boxed());
        }
        let file = match tokio::fs::File::open(&log_path).await {
            Ok(mut f) => {
                f.seek(std::io::SeekFrom::Start(offset))
                    .await
                    .map_err(ProcessError::io("reading", &log_path))?;
                Some(f)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(ProcessError::io("opening", &log_path)(e).into()),
        };
        let follow = Follow {
            config: self.inner.config.clone(),
            paths,
            file,
            pending: Vec::new(),
            queue: VecDeque::new(),
            filter: LogFilter {
                later_runs: true,
                ..filter
            },
            finished: false,
        };
        let tail = futures::stream::unfold(follow, |mut f| async move {
            f.next().await.map(|item| (item, f))
        });
        Ok(head.chain(tail).boxed())
    }

    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let paths = self.paths(id)?;
        let obs = observe(&paths, &self.inner.config)?;
        if obs.status.phase != Phase::Running {
            return Err(connect::not_running(BACKEND, id, obs.status.phase));
        }
        let transport = obs.meta.launch.transport;
        if transport.is_http() {
            let url = obs.meta.endpoint.ok_or_else(|| {
                OrchestratorError::unavailable(
                    BACKEND,
                    format!("{id} serves {transport} but recorded no endpoint"),
                    None,
                )
            })?;
            return Ok(McpChannel::Http(HttpEndpoint { url, transport }));
        }
        let stream = self.attach_stdio(id).await?;
        Ok(McpChannel::Stdio(StdioChannel::from_stream(stream)))
    }

    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        let after = filters
            .continue_token
            .as_deref()
            .map(parse_after_token)
            .transpose()?;
        let root = self.instances_dir();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Page::last(Vec::new()));
            }
            Err(e) => return Err(ProcessError::io("listing", &root)(e).into()),
        };
        let mut matching = Vec::new();
        for entry in entries.filter_map(std::result::Result::ok) {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if mcp_types::names::check_dns1123_label(name).is_err() {
                continue;
            }
            let paths = InstancePaths::new(entry.path());
            match observe(&paths, &self.inner.config) {
                Ok(obs) => {
                    let instance = instance_of(obs);
                    if instance
                        .labels
                        .get(labels::MANAGED)
                        .is_some_and(|v| v == "true")
                        && filters.matches(&instance)
                    {
                        matching.push(instance);
                    }
                }
                // Being created (no meta yet) or being removed.
                Err(ProcessError::NotFound(_)) => {}
                Err(e) => tracing::warn!(instance = name, "skipping an unreadable instance: {e}"),
            }
        }
        Ok(page_after(matching, after.as_deref(), filters.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(run: u32) -> LogFilter {
        LogFilter {
            run,
            later_runs: false,
            stream: StreamSelector::All,
            since: None,
            timestamps: false,
        }
    }

    fn record(run: u32, stream: mcp_types::LogStream, text: &str) -> String {
        let mut s = serde_json::to_string(&LogRecord {
            ts: Timestamp::now(),
            stream,
            run,
            text: text.into(),
        })
        .unwrap();
        s.push('\n');
        s
    }

    #[test]
    fn parse_keeps_the_wanted_run_and_stream_and_leaves_partial_lines() {
        use mcp_types::LogStream::{Stderr, Stdout};
        let mut text = record(0, Stdout, "old");
        text += &record(1, Stdout, "a");
        text += &record(1, Stderr, "b");
        text += &record(1, Stdout, "c");
        let partial = &record(1, Stdout, "d")[..10];
        text += partial;
        let mut out = VecDeque::new();
        let consumed = filter(1).parse(text.as_bytes(), &mut out, None);
        assert_eq!(consumed, text.len() - partial.len());
        let texts: Vec<_> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["a", "b", "c"]);
        let mut out = VecDeque::new();
        let f = LogFilter {
            stream: StreamSelector::Stderr,
            ..filter(1)
        };
        f.parse(text.as_bytes(), &mut out, None);
        assert_eq!(out.len(), 1);
        let mut out = VecDeque::new();
        filter(1).parse(text.as_bytes(), &mut out, Some(2));
        let texts: Vec<_> = out.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["b", "c"]);
        let mut out = VecDeque::new();
        filter(1).parse(text.as_bytes(), &mut out, Some(0));
        assert!(out.is_empty());
    }

    fn meta(created_at: Timestamp) -> Meta {
        Meta {
            id: InstanceId::new("mcp-x-1"),
            server: "x".into(),
            labels: labels::instance_labels("x", "mcp-x-1", &std::collections::BTreeMap::new()),
            annotations: std::collections::BTreeMap::new(),
            created_at,
            port: None,
            endpoint: None,
            env_names: Vec::new(),
            launch: Launch {
                program: "/bin/true".into(),
                args: Vec::new(),
                cwd: "/".into(),
                transport: Transport::Stdio,
                restart_policy: mcp_types::RestartPolicy::Never,
                memory_limit_bytes: None,
                backoff_initial_ms: 1,
                backoff_max_ms: 1,
                log_stdio_traffic: false,
            },
        }
    }

    #[test]
    fn status_without_a_live_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let paths = InstancePaths::new(dir.path());
        let config = ProcessConfig::default();
        assert!(matches!(
            observe(&paths, &config),
            Err(ProcessError::NotFound(_))
        ));
        // Just created, supervisor not recorded yet: Pending.
        write_json(&paths.meta(), &meta(Timestamp::now())).unwrap();
        assert_eq!(
            observe(&paths, &config).unwrap().status.phase,
            Phase::Pending
        );
        // Created long ago and never supervised: abandoned.
        let old = Timestamp::now() - jiff::SignedDuration::from_secs(3600);
        write_json(&paths.meta(), &meta(old)).unwrap();
        let st = observe(&paths, &config).unwrap().status;
        assert_eq!(
            (st.phase, st.reason.as_deref()),
            (Phase::Failed, Some(reasons::ORPHANED))
        );
        // A dead supervisor (a start time that cannot match) with a Running state: orphaned,
        // and Failed because the recorded server is not alive either.
        let dead = ProcIdentity {
            pid: i32::try_from(std::process::id()).unwrap(),
            start_time: u64::MAX,
        };
        write_json(&paths.supervisor(), &dead).unwrap();
        let state = State {
            status: InstanceStatus::phase(Phase::Running),
            run: 0,
            server: Some(dead),
            updated_at: None,
        };
        write_json(&paths.state(), &state).unwrap();
        let st = observe(&paths, &config).unwrap().status;
        assert_eq!(
            (st.phase, st.reason.as_deref()),
            (Phase::Failed, Some(reasons::ORPHANED))
        );
        // A supervisor that recorded a final state and exited is not an orphan.
        let done = State {
            status: InstanceStatus::phase(Phase::Succeeded),
            ..state
        };
        write_json(&paths.state(), &done).unwrap();
        assert_eq!(
            observe(&paths, &config).unwrap().status.phase,
            Phase::Succeeded
        );
    }

    #[test]
    fn program_resolution() {
        let cwd = Path::new("/");
        assert!(resolve_program("sh", cwd, Some("/bin:/usr/bin")).is_ok());
        let err = resolve_program("no-such-program-xyz", cwd, Some("/bin")).unwrap_err();
        assert!(err.contains("not found"), "{err}");
        assert_eq!(
            resolve_program("bin/sh", cwd, None).unwrap(),
            Path::new("/bin/sh")
        );
        assert!(resolve_program("./nope", cwd, None).is_err());
    }
}
