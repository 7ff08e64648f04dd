//! The per-instance supervisor (the containerd-shim / conmon pattern): a small detached process
//! that owns one server process, logs its output, applies the restart policy, records state,
//! bridges a stdio server to one attached client at a time, and stops the server on request.
//!
//! The orchestrator starts it as `<supervisor program> [supervisorArgs...] <instance dir>` with
//! the instance directory as its working directory, writes the server's resolved environment
//! (a JSON object `{"env": [[name, value], ...]}`) to its stdin and closes it, and waits for
//! the line `ready` on its stdout (printed once the first launch of the server has been
//! attempted). The supervisor then:
//!
//! 1. calls `setsid` so it belongs to no terminal or caller's process group and outlives the
//!    program that started it, and makes itself a child subreaper, so every process the server
//!    starts stays below it in the process tree even after a double fork or `setsid`;
//! 2. applies the memory limit as `RLIMIT_DATA` to itself, so the server inherits it, and
//!    enters the namespaces the spec needs (volumes mounted, `egress: none`'s empty network;
//!    see `sandbox.rs`), so that every run of the server starts inside them; when it cannot,
//!    it prints `refused` and the reason as JSON instead of `ready`, and exits;
//! 3. launches the server in a process group of its own, stdout and stderr piped, stdin piped
//!    for stdio servers;
//! 4. appends every output line to `logs.jsonl` with its stream, run number and a timestamp;
//! 5. on exit, records the exit code, sweeps what is left of the server's process group and of
//!    its descendants (SIGTERM, a short grace, SIGKILL; orphans are reaped as they exit), and
//!    restarts it with exponential backoff (reason `CrashLoopBackOff` while waiting) when the
//!    policy says so, or records `Succeeded`/`Failed` and exits;
//! 6. on SIGTERM or SIGINT (a stop), sends SIGTERM to the server's group and to every
//!    descendant, closes its stdin, waits the grace period from `stop.json`, sends SIGKILL to
//!    what is left, records `Stopped` and exits. SIGHUP is ignored.
//!
//! Every state change is written to `state.json` atomically.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{ExitCode, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use mcp_types::{LogStream, Phase, RunExit, Timestamp, Transport, reasons};
use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::UnixListener;
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::bridge::{Attach, accept_loop};
use crate::files::{read_json, write_json};
use crate::layout::{
    Handoff, InstancePaths, Launch, LogLimits, LogRecord, Meta, SOCKET_FILE, State, StopRequest,
};
use crate::procfs::{ProcIdentity, descendants};

/// The line the supervisor prints on stdout once it has attempted the first launch.
pub(crate) const READY: &str = "ready";
/// Grace period when a stop comes without `stop.json` (for example a plain `kill`).
const DEFAULT_GRACE: Duration = Duration::from_secs(10);
/// A run that lasted this long resets the restart backoff.
const BACKOFF_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long descendants left in the group of a server that exited by itself get after SIGTERM.
const SWEEP_GRACE: Duration = Duration::from_secs(2);
/// How long output still buffered in the pipes may take to drain after the server is gone.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(1);
const POLL: Duration = Duration::from_millis(20);

/// Runs the supervisor with `args` (the instance directory; nothing else), returning the
/// process exit code. This is the whole `mcp-process-supervisor` binary.
///
/// A program that links this crate and does not want to ship the second binary can embed the
/// supervisor: set [`crate::ProcessConfig::supervisor_path`] to the program itself and
/// [`crate::ProcessConfig::supervisor_args`] to a hidden subcommand, and at the very top of
/// `main`, before any async runtime exists, route that subcommand here:
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     let mut args = std::env::args_os().skip(1);
///     if args.next().is_some_and(|a| a == "__supervise") {
///         return mcp_process::supervisor::run(args);
///     }
///     // ... the program's normal main ...
///     std::process::ExitCode::SUCCESS
/// }
/// ```
pub fn run<I, S>(args: I) -> ExitCode
where
    I: IntoIterator<Item = S>,
    S: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let [dir] = args.as_slice() else {
        eprintln!(
            "usage: {} <instance-dir>\n\nThe per-instance supervisor of the mcp-process backend; \
             started by ProcessOrchestrator, not by hand.",
            crate::config::SUPERVISOR_BINARY
        );
        return ExitCode::from(2);
    };
    match main_inner(Path::new(dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            diag(&format!("fatal: {e}"));
            ExitCode::FAILURE
        }
    }
}

/// One line of the supervisor's own log (its stderr is `supervisor.log`).
fn diag(msg: &str) {
    eprintln!("{} {msg}", Timestamp::now());
}

fn main_inner(dir: &Path) -> Result<(), String> {
    // Leave the starter's session and process group: nothing aimed at them reaches us.
    if let Err(e) = rustix::process::setsid() {
        diag(&format!("setsid: {e} (continuing)"));
    }
    // Orphans of the server (double forks, `setsid` daemons) are reparented to us instead of
    // init, so a stop can find and end them.
    if let Err(e) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        diag(&format!(
            "PR_SET_CHILD_SUBREAPER: {e} (continuing; daemonized descendants may escape a stop)"
        ));
    }
    std::env::set_current_dir(dir).map_err(|e| format!("cd {}: {e}", dir.display()))?;
    let paths = InstancePaths::new(std::env::current_dir().map_err(|e| e.to_string())?);
    let meta: Meta = read_json(&paths.meta())
        .map_err(|e| format!("reading meta.json: {e}"))?
        .ok_or("meta.json is missing")?;
    let handoff: Handoff = serde_json::from_reader(std::io::stdin().lock())
        .map_err(|e| format!("reading the environment from stdin: {e}"))?;
    if let Some(limit) = meta.launch.memory_limit_bytes {
        apply_memory_limit(limit)?;
    }
    if let Some(sandbox) = meta.launch.sandbox.as_ref().filter(|s| s.is_needed()) {
        // Still single-threaded: no runtime yet.
        if let Err(refusal) = sandbox.enter(&paths.sandbox_work()) {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", refusal.to_line()).and_then(|()| out.flush());
            return Err(format!("setting up the namespaces: {refusal}"));
        }
        // A new root (pivot_root) leaves the working directory in the old one; the instance
        // directory has the same path in the new root.
        std::env::set_current_dir(&paths.dir)
            .map_err(|e| format!("cd {}: {e}", paths.dir.display()))?;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let log = LogSink::open(&paths, meta.launch.log_limits())?;
        let stop = stop_signals()?;
        let reaper = Reaper::default();
        reaper.spawn()?;
        let mut supervisor = Supervisor {
            paths,
            launch: meta.launch,
            env: handoff.env,
            state: State::default(),
            log,
            attach: Attach::default(),
            stop,
            ready_sent: false,
            reaper,
        };
        supervisor.supervise().await
    })
}

/// `RLIMIT_DATA` on this process, inherited by the server (and its children).
fn apply_memory_limit(bytes: u64) -> Result<(), String> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let hard = getrlimit(Resource::Data).maximum;
    let limit = hard.map_or(bytes, |h| h.min(bytes));
    setrlimit(
        Resource::Data,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .map_err(|e| format!("setrlimit(RLIMIT_DATA, {limit}): {e}"))
}

/// A watch that turns true on SIGTERM or SIGINT; SIGHUP is swallowed.
fn stop_signals() -> Result<watch::Receiver<bool>, String> {
    use tokio::signal::unix::{SignalKind, signal};
    let err = |e: std::io::Error| format!("installing signal handlers: {e}");
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    let mut hup = signal(SignalKind::hangup()).map_err(err)?;
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {}
            }
        }
        let _ = tx.send(true);
        // Keep the sender so receivers never see a closed channel.
        std::future::pending::<()>().await;
    });
    Ok(rx)
}

async fn stop_requested(rx: &mut watch::Receiver<bool>) {
    if rx.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Plain data behind these locks stays consistent even if a holder panicked.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How one run of the server ended.
enum Outcome {
    /// It exited by itself (or could not be started: 126/127 like a shell).
    Exited {
        code: i32,
        message: Option<String>,
        ran_for: Duration,
    },
    /// A stop was requested and the server is gone.
    Stopped { code: Option<i32> },
}

struct Supervisor {
    paths: InstancePaths,
    launch: Launch,
    env: Vec<(String, String)>,
    state: State,
    log: LogSink,
    attach: Attach,
    stop: watch::Receiver<bool>,
    ready_sent: bool,
    reaper: Reaper,
}

impl Supervisor {
    fn save(&mut self) {
        self.state.updated_at = Some(Timestamp::now());
        if let Err(e) = write_json(&self.paths.state(), &self.state) {
            diag(&format!("writing state.json: {e}"));
        }
    }

    /// Tells the starter that the first launch was attempted (once).
    fn signal_ready(&mut self) {
        if !self.ready_sent {
            self.ready_sent = true;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{READY}").and_then(|()| out.flush());
        }
    }

    fn grace(&self) -> Duration {
        match read_json::<StopRequest>(&self.paths.stop_request()) {
            Ok(Some(r)) => Duration::from_millis(r.grace_ms),
            _ => DEFAULT_GRACE,
        }
    }

    async fn supervise(&mut self) -> Result<(), String> {
        // No `Pending` save: without `state.json` a live supervisor already reads as Pending
        // (`status.rs`), and the first launch records `Running` (or its failure) a moment
        // later, so a write here would only delay the server's start.
        self.state.status.phase = Phase::Pending;
        let stdio = self.launch.transport == Transport::Stdio;
        if stdio {
            let _ = std::fs::remove_file(SOCKET_FILE);
            let listener = UnixListener::bind(SOCKET_FILE)
                .map_err(|e| format!("binding {}: {e}", self.paths.socket().display()))?;
            tokio::spawn(accept_loop(listener, self.attach.clone(), diag));
        }
        let initial = Duration::from_millis(self.launch.backoff_initial_ms.max(1));
        let max = Duration::from_millis(self.launch.backoff_max_ms).max(initial);
        let mut backoff = initial;
        loop {
            let outcome = self.run_once().await;
            let now = Timestamp::now();
            self.state.server = None;
            self.state.status.finished_at = Some(now);
            let (code, message, ran_for) = match outcome {
                Outcome::Stopped { code } => {
                    let status = &mut self.state.status;
                    status.phase = Phase::Stopped;
                    status.reason = None;
                    status.message = Some("stopped on request".into());
                    status.exit_code = code;
                    break;
                }
                Outcome::Exited {
                    code,
                    message,
                    ran_for,
                } => (code, message, ran_for),
            };
            let mut exit = RunExit::under(self.launch.restart_policy, code);
            if let Some(message) = message {
                exit = exit.with_detail(message);
            }
            if !exit.after.restarts() {
                exit.apply_to(&mut self.state.status);
                break;
            }
            if ran_for >= BACKOFF_RESET_AFTER {
                backoff = initial;
            }
            exit.with_next_start(format!("in {backoff:?}"))
                .apply_to(&mut self.state.status);
            self.save();
            let mut stop = self.stop.clone();
            tokio::select! {
                () = stop_requested(&mut stop) => {
                    let status = &mut self.state.status;
                    status.phase = Phase::Stopped;
                    status.reason = None;
                    status.message = Some("stopped on request".into());
                    break;
                }
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(max);
            self.state.run += 1;
            self.state.status.restart_count += 1;
            self.log.set_run(self.state.run);
        }
        self.save();
        if stdio {
            let _ = std::fs::remove_file(SOCKET_FILE);
        }
        Ok(())
    }

    /// Launches the server once and waits for it to end or for a stop.
    async fn run_once(&mut self) -> Outcome {
        let stdio = self.launch.transport == Transport::Stdio;
        let mut cmd = Command::new(&self.launch.program);
        cmd.args(&self.launch.args)
            .current_dir(&self.launch.cwd)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .process_group(0)
            .stdin(if stdio { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let spawned = self.reaper.spawn_server(&mut cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                let code = if e.kind() == std::io::ErrorKind::PermissionDenied {
                    126
                } else {
                    127
                };
                let message = format!("cannot start {}: {e}", self.launch.program.display());
                self.log
                    .write(LogStream::Stderr, &format!("mcp-process: {message}"));
                self.signal_ready();
                return Outcome::Exited {
                    code,
                    message: Some(message),
                    ran_for: Duration::ZERO,
                };
            }
        };
        let started = Instant::now();
        let leader = child.id().and_then(ProcIdentity::of);
        {
            let status = &mut self.state.status;
            status.phase = Phase::Running;
            status.reason = None;
            status.message = None;
            // The run that ended stays visible as the last exit while this one runs.
            status.last_exit_code = status.exit_code.take().or(status.last_exit_code);
            status.finished_at = None;
            status.started_at = Some(Timestamp::now());
        }
        self.state.server = leader;
        self.save();
        self.signal_ready();

        self.attach.begin_run(child.stdin.take());
        let log_all = !stdio || self.launch.log_stdio_traffic;
        let out = child.stdout.take().map(|o| {
            tokio::spawn(pump(
                o,
                LogStream::Stdout,
                self.log.clone(),
                stdio.then(|| self.attach.clone()),
                log_all,
            ))
        });
        let err = child
            .stderr
            .take()
            .map(|e| tokio::spawn(pump(e, LogStream::Stderr, self.log.clone(), None, true)));

        let mut stop = self.stop.clone();
        let (status, stopped) = tokio::select! {
            status = child.wait() => (status, false),
            () = stop_requested(&mut stop) => (self.terminate(&mut child, leader).await, true),
        };
        self.attach.end_run();
        // What the server left behind, in its group or daemonized below us, goes with it.
        kill_tree(leader, Instant::now() + SWEEP_GRACE, &self.reaper).await;
        self.reaper.server_gone();
        for task in [out, err].into_iter().flatten() {
            let abort = task.abort_handle();
            if tokio::time::timeout(DRAIN_TIMEOUT, task).await.is_err() {
                abort.abort();
            }
        }
        let code = match &status {
            Ok(s) => Some(exit_code(*s)),
            Err(e) => {
                diag(&format!("waiting for the server: {e}"));
                None
            }
        };
        if stopped {
            Outcome::Stopped { code }
        } else {
            Outcome::Exited {
                code: code.unwrap_or(-1),
                message: None,
                ran_for: started.elapsed(),
            }
        }
    }

    /// Stop: SIGTERM to the group and EOF on stdin, the grace period, then SIGKILL.
    async fn terminate(
        &mut self,
        child: &mut Child,
        leader: Option<ProcIdentity>,
    ) -> std::io::Result<ExitStatus> {
        self.state.status.phase = Phase::Stopping;
        self.state.status.reason = Some(reasons::TERMINATING.into());
        self.save();
        let deadline = Instant::now() + self.grace();
        self.attach.end_run();
        match leader {
            Some(l) => {
                if let Err(e) = l.signal_group(Signal::TERM) {
                    diag(&format!("SIGTERM to group {}: {e}", l.pid));
                }
            }
            None => {
                let _ = child.start_kill();
            }
        }
        // Descendants that left the group (setsid) get the same grace period.
        signal_descendants(Signal::TERM);
        let status =
            if let Ok(status) = tokio::time::timeout_at(deadline.into(), child.wait()).await {
                status
            } else {
                if let Some(l) = leader {
                    let _ = l.signal_group(Signal::KILL);
                }
                let _ = child.start_kill();
                child.wait().await
            };
        kill_tree(leader, deadline, &self.reaper).await;
        status
    }
}

/// This process's pid.
fn own_pid() -> i32 {
    rustix::process::getpid().as_raw_nonzero().get()
}

/// Live processes below the supervisor (the server and everything it started).
fn live_descendants() -> Vec<ProcIdentity> {
    descendants(own_pid())
        .into_iter()
        .filter(|d| !d.dead)
        .map(|d| d.identity)
        .collect()
}

/// Sends `signal` to every live process below the supervisor.
fn signal_descendants(signal: Signal) {
    for p in live_descendants() {
        if let Err(e) = p.signal(signal) {
            diag(&format!("{signal:?} to descendant {}: {e}", p.pid));
        }
    }
}

/// Ends everything the server left behind: its process group and every process below the
/// supervisor (daemons that called `setsid` were reparented to it, the subreaper). SIGTERM
/// first, then SIGKILL once `deadline` passes; orphans are reaped, and the wait for them to
/// disappear after SIGKILL is bounded.
async fn kill_tree(leader: Option<ProcIdentity>, deadline: Instant, reaper: &Reaper) {
    let remaining = || leader.is_some_and(|l| l.group_alive()) || !live_descendants().is_empty();
    reaper.reap();
    if !remaining() {
        return;
    }
    if let Some(l) = leader {
        let _ = l.signal_group(Signal::TERM);
    }
    signal_descendants(Signal::TERM);
    while remaining() && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        reaper.reap();
    }
    let killed_at = Instant::now();
    while remaining() && killed_at.elapsed() < SWEEP_GRACE {
        if let Some(l) = leader {
            let _ = l.signal_group(Signal::KILL);
        }
        signal_descendants(Signal::KILL);
        tokio::time::sleep(POLL).await;
        reaper.reap();
    }
    if remaining() {
        diag("processes of the server survived SIGKILL");
    }
}

/// Reaps the orphans reparented to the supervisor (it is a child subreaper) as they exit, so
/// they do not linger as zombies; never the current server, whose exit status tokio collects.
#[derive(Clone, Default)]
struct Reaper {
    /// The pid of the running server; spawning and reaping are serialized by this lock, so a
    /// server that exits at once cannot be reaped before its pid is known.
    server: Arc<Mutex<Option<i32>>>,
}

impl Reaper {
    /// Reaps on every SIGCHLD, in the background.
    fn spawn(&self) -> Result<(), String> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut chld = signal(SignalKind::child())
            .map_err(|e| format!("installing the SIGCHLD handler: {e}"))?;
        let reaper = self.clone();
        tokio::spawn(async move {
            while chld.recv().await.is_some() {
                reaper.reap();
            }
        });
        Ok(())
    }

    /// Spawns the server, recording its pid under the lock.
    fn spawn_server(&self, cmd: &mut Command) -> std::io::Result<Child> {
        let mut server = lock(&self.server);
        let child = cmd.spawn()?;
        *server = child.id().and_then(|p| i32::try_from(p).ok());
        Ok(child)
    }

    /// The server's exit status has been collected.
    fn server_gone(&self) {
        *lock(&self.server) = None;
    }

    /// Reaps every zombie child of the supervisor except the server.
    fn reap(&self) {
        use rustix::process::{Pid, WaitOptions, waitpid};
        let server = lock(&self.server);
        let me = own_pid();
        for d in descendants(me) {
            if d.dead
                && d.ppid == me
                && Some(d.identity.pid) != *server
                && let Some(pid) = Pid::from_raw(d.identity.pid)
            {
                let _ = waitpid(Some(pid), WaitOptions::NOHANG);
            }
        }
    }
}

/// The exit code, or 128 + the signal number for a killed process (the shell convention).
fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

/// Reads lines from one of the server's pipes; stdout of a stdio server goes to the attached
/// client when there is one, and to the log otherwise (or always, with `log_all`).
async fn pump(
    pipe: impl AsyncRead + Unpin,
    stream: LogStream,
    log: LogSink,
    attach: Option<Attach>,
    log_all: bool,
) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut forwarded = false;
        if let Some(tx) = attach.as_ref().and_then(Attach::sender) {
            forwarded = tx.send(buf.clone()).await.is_ok();
        }
        if !forwarded || log_all {
            let mut text = String::from_utf8_lossy(&buf).into_owned();
            while text.ends_with('\n') || text.ends_with('\r') {
                text.pop();
            }
            log.write(stream, &text);
        }
    }
}

/// The append-only log, shared by the stdout and stderr readers. Lines are stamped under the
/// lock, so the files are in timestamp order. Before a line would take the current file past
/// `logMaxBytes` the file is rotated: `logs.jsonl.N-1` becomes `logs.jsonl.N` (the oldest kept
/// is dropped), ..., `logs.jsonl` becomes `logs.jsonl.1`, and a new `logs.jsonl` is started.
/// Renames keep each file's inode, so a follower holding the old file reads it to its end.
#[derive(Clone)]
struct LogSink {
    inner: Arc<Mutex<LogFile>>,
}

struct LogFile {
    file: std::fs::File,
    run: u32,
    /// Bytes in the current file.
    size: u64,
    paths: InstancePaths,
    limits: LogLimits,
}

impl LogFile {
    fn open_current(paths: &InstancePaths) -> Result<(std::fs::File, u64), String> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(paths.logs())
            .map_err(|e| format!("opening {}: {e}", paths.logs().display()))?;
        let size = file
            .metadata()
            .map_err(|e| format!("reading {}: {e}", paths.logs().display()))?
            .len();
        Ok((file, size))
    }

    fn rotate(&mut self) -> Result<(), String> {
        let rename = |from: &Path, to: &Path| match std::fs::rename(from, to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("rotating {}: {e}", from.display())),
        };
        let oldest = self.paths.rotated_log(self.limits.max_files);
        match std::fs::remove_file(&oldest) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("deleting {}: {e}", oldest.display())),
        }
        for n in (1..self.limits.max_files).rev() {
            rename(&self.paths.rotated_log(n), &self.paths.rotated_log(n + 1))?;
        }
        rename(&self.paths.logs(), &self.paths.rotated_log(1))?;
        let (file, size) = Self::open_current(&self.paths)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

impl LogSink {
    fn open(paths: &InstancePaths, limits: LogLimits) -> Result<Self, String> {
        let (file, size) = LogFile::open_current(paths)?;
        Ok(Self {
            inner: Arc::new(Mutex::new(LogFile {
                file,
                run: 0,
                size,
                paths: paths.clone(),
                limits,
            })),
        })
    }

    fn set_run(&self, run: u32) {
        lock(&self.inner).run = run;
    }

    fn write(&self, stream: LogStream, text: &str) {
        let mut log = lock(&self.inner);
        let record = LogRecord {
            ts: Timestamp::now(),
            stream,
            run: log.run,
            text: text.to_owned(),
        };
        match serde_json::to_vec(&record) {
            Ok(mut line) => {
                line.push(b'\n');
                let len = line.len() as u64;
                if log.size > 0
                    && log.size.saturating_add(len) > log.limits.max_bytes
                    && let Err(e) = log.rotate()
                {
                    diag(&e);
                }
                match log.file.write_all(&line) {
                    Ok(()) => log.size += len,
                    Err(e) => diag(&format!("writing the log: {e}")),
                }
            }
            Err(e) => diag(&format!("encoding a log line: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(exit_code(ExitStatus::from_raw(9)), 137);
    }

    #[test]
    fn usage_error_without_a_directory() {
        assert_eq!(run(Vec::<OsString>::new()), ExitCode::from(2));
    }
}
