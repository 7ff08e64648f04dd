//! Real programs in the fake kubelet: a container whose image was registered with
//! `FakeKubeHandle::run_image_as` runs as a real child process. Its stdout and stderr lines go to
//! the log store and, as raw bytes, to attached clients; with `stdin: true` its stdin is a pipe
//! that stays open between attach sessions (closed after the first session with `stdinOnce`).
//!
//! What is modelled for stdin: one attached client writes at a time (it holds the stdin lease
//! until it detaches or closes its stdin); bytes other clients send meanwhile are dropped, so two
//! clients never interleave inside each other's messages. Every attached client gets every
//! stdout byte written from the moment it attached.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::body::Bytes;
use rustix::process::{Pid, Signal, kill_process};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, mpsc, watch};
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::logs::{LogStore, LogStream};

/// How many stdout/stderr chunks an attached client may fall behind before it is dropped.
const FANOUT_CAPACITY: usize = 1024;
/// How long the output pumps may take to drain after the process exited (a grandchild holding
/// the pipe open must not hold up the container's exit).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Images that run a real local program instead of a fixture script.
#[derive(Debug, Default)]
pub(crate) struct Programs {
    by_image: Mutex<HashMap<String, PathBuf>>,
}

impl Programs {
    pub(crate) fn register(&self, image: &str, path: &Path) {
        self.by_image
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(image.to_owned(), path.to_owned());
    }

    pub(crate) fn lookup(&self, image: &str) -> Option<PathBuf> {
        self.by_image
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(image)
            .cloned()
    }
}

/// What a container's process is doing, as attached clients see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProcessState {
    Running,
    /// Exited with this code (128 + signal when killed by a signal).
    Exited(i32),
    /// Torn down without an exit to report (pod removed, server stopped).
    Gone,
}

/// The stdio of one running container instance, shared by its attach sessions.
#[derive(Debug)]
pub(crate) struct StdioHub {
    stdin_once: bool,
    /// The pipe's writer queue; `None` once stdin is closed.
    stdin: Mutex<Option<mpsc::Sender<Bytes>>>,
    stdin_leased: AtomicBool,
    stdout: broadcast::Sender<Bytes>,
    stderr: broadcast::Sender<Bytes>,
    state: watch::Sender<ProcessState>,
}

impl StdioHub {
    fn new(stdin: Option<mpsc::Sender<Bytes>>, stdin_once: bool) -> Self {
        Self {
            stdin_once,
            stdin: Mutex::new(stdin),
            stdin_leased: AtomicBool::new(false),
            stdout: broadcast::channel(FANOUT_CAPACITY).0,
            stderr: broadcast::channel(FANOUT_CAPACITY).0,
            state: watch::channel(ProcessState::Running).0,
        }
    }

    fn stdin(&self) -> MutexGuard<'_, Option<mpsc::Sender<Bytes>>> {
        self.stdin.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The stdin lease: `None` while another client holds it or once stdin is closed.
    pub(crate) fn lease_stdin(self: &Arc<Self>) -> Option<StdinLease> {
        let sender = self.stdin().clone()?;
        if self
            .stdin_leased
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return None;
        }
        Some(StdinLease {
            hub: Arc::clone(self),
            sender: Some(sender),
        })
    }

    pub(crate) fn subscribe_stdout(&self) -> broadcast::Receiver<Bytes> {
        self.stdout.subscribe()
    }

    pub(crate) fn subscribe_stderr(&self) -> broadcast::Receiver<Bytes> {
        self.stderr.subscribe()
    }

    pub(crate) fn watch_state(&self) -> watch::Receiver<ProcessState> {
        self.state.subscribe()
    }

    fn close_stdin(&self) {
        self.stdin().take();
    }

    fn set_state(&self, state: ProcessState) {
        self.state.send_if_modified(|current| {
            if *current == ProcessState::Running {
                *current = state;
                true
            } else {
                false
            }
        });
    }
}

/// The right to write to a container's stdin, held by one attach session.
#[derive(Debug)]
pub(crate) struct StdinLease {
    hub: Arc<StdioHub>,
    sender: Option<mpsc::Sender<Bytes>>,
}

impl StdinLease {
    /// Queues bytes for the process (whole, in order); `false` once stdin is closed.
    pub(crate) async fn write(&self, bytes: Bytes) -> bool {
        match &self.sender {
            Some(sender) => sender.send(bytes).await.is_ok(),
            None => false,
        }
    }
}

impl Drop for StdinLease {
    fn drop(&mut self) {
        self.sender = None;
        if self.hub.stdin_once {
            // Like the container runtime: with stdinOnce, stdin closes when the first attached
            // client's stdin ends.
            self.hub.close_stdin();
        }
        self.hub.stdin_leased.store(false, Ordering::Release);
    }
}

/// The stdio hubs of running container instances, by container id.
#[derive(Debug, Default)]
pub(crate) struct StdioHubs {
    by_container: Mutex<HashMap<String, Arc<StdioHub>>>,
    added: tokio::sync::Notify,
}

impl StdioHubs {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<StdioHub>>> {
        self.by_container
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The hub of a running container instance, waiting up to `timeout` for it to be
    /// registered (the kubelet publishes `running` just before it spawns the process); `None`
    /// if it does not appear (a fixture-script container, or a failed start).
    pub(crate) async fn get(&self, container_id: &str, timeout: Duration) -> Option<Arc<StdioHub>> {
        let wait = async {
            loop {
                let added = self.added.notified();
                if let Some(hub) = self.lock().get(container_id).cloned() {
                    return hub;
                }
                added.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.ok()
    }
}

/// How to start one container instance's program.
#[derive(Debug)]
pub(crate) struct Launch<'a> {
    pub(crate) program: &'a Path,
    pub(crate) command: &'a [String],
    pub(crate) args: &'a [String],
    pub(crate) env: &'a [(String, String)],
    pub(crate) stdin: bool,
    pub(crate) stdin_once: bool,
}

impl Launch<'_> {
    /// The argument vector after the program: the image's entry point is the program, so a
    /// `command` replaces it (its first word names the binary inside the image and is dropped)
    /// and `args` follow, as the runtime joins entrypoint/command and cmd/args.
    fn argv(&self) -> Vec<&String> {
        self.command.iter().skip(1).chain(self.args).collect()
    }
}

/// A container instance running as a real child process. Dropping it kills the process
/// (SIGKILL) and ends its stdio tasks.
#[derive(Debug)]
pub(crate) struct RealProcess {
    child: Child,
    hub: Arc<StdioHub>,
    hubs: Arc<StdioHubs>,
    container_id: String,
    pumps: Vec<tokio::task::JoinHandle<()>>,
    _stop: DropGuard,
}

impl RealProcess {
    /// Spawns the program and registers its stdio hub under `container_id`.
    pub(crate) fn spawn(
        launch: &Launch<'_>,
        logs: &Arc<LogStore>,
        hubs: &Arc<StdioHubs>,
        container_id: &str,
    ) -> io::Result<Self> {
        let mut command = Command::new(launch.program);
        command
            .args(launch.argv())
            // A container sees its own environment only.
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(if launch.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let stop = CancellationToken::new();
        let (stdin_tx, stdin_rx) = mpsc::channel::<Bytes>(64);
        let stdin_pipe = child.stdin.take();
        let hub = Arc::new(StdioHub::new(
            stdin_pipe.as_ref().map(|_| stdin_tx),
            launch.stdin_once,
        ));
        let mut pumps = Vec::new();
        if let Some(pipe) = stdin_pipe {
            tokio::spawn(write_stdin(pipe, stdin_rx, stop.clone()));
        }
        if let Some(out) = child.stdout.take() {
            pumps.push(tokio::spawn(pump(
                out,
                hub.stdout.clone(),
                LogStream::Stdout,
                Arc::clone(logs),
                container_id.to_owned(),
                stop.clone(),
            )));
        }
        if let Some(err) = child.stderr.take() {
            pumps.push(tokio::spawn(pump(
                err,
                hub.stderr.clone(),
                LogStream::Stderr,
                Arc::clone(logs),
                container_id.to_owned(),
                stop.clone(),
            )));
        }
        hubs.lock()
            .insert(container_id.to_owned(), Arc::clone(&hub));
        hubs.added.notify_waiters();
        Ok(Self {
            child,
            hub,
            hubs: Arc::clone(hubs),
            container_id: container_id.to_owned(),
            pumps,
            _stop: stop.drop_guard(),
        })
    }

    /// Waits for the process to exit and its output to be drained; the exit code follows the
    /// runtime's convention (128 + signal when a signal ended it).
    pub(crate) async fn wait(&mut self) -> i32 {
        let code = match self.child.wait().await {
            Ok(status) => status
                .code()
                .or_else(|| status.signal().map(|s| 128 + s))
                .unwrap_or(128),
            Err(_) => 128,
        };
        for pump in self.pumps.drain(..) {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, pump).await;
        }
        self.hub.set_state(ProcessState::Exited(code));
        code
    }

    /// Sends SIGTERM (a graceful stop); the caller waits, then kills at the deadline.
    pub(crate) fn terminate(&self) {
        let pid = self
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(Pid::from_raw);
        if let Some(pid) = pid {
            let _ = kill_process(pid, Signal::TERM);
        }
    }

    /// SIGKILL, then waits for the exit (the code is 137).
    pub(crate) async fn kill(&mut self) -> i32 {
        let _ = self.child.start_kill();
        self.wait().await
    }
}

impl Drop for RealProcess {
    fn drop(&mut self) {
        // kill_on_drop sends SIGKILL; the hub tells attached clients the process is gone.
        self.hub.close_stdin();
        self.hub.set_state(ProcessState::Gone);
        self.hubs.lock().remove(&self.container_id);
    }
}

/// Writes queued stdin chunks to the pipe, each whole, until stdin is closed or stopped.
async fn write_stdin(
    mut pipe: ChildStdin,
    mut queue: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
) {
    loop {
        let chunk = tokio::select! {
            () = stop.cancelled() => return,
            chunk = queue.recv() => chunk,
        };
        let Some(chunk) = chunk else {
            // Every sender is gone: stdin is closed, the process reads EOF.
            return;
        };
        if pipe.write_all(&chunk).await.is_err() || pipe.flush().await.is_err() {
            return;
        }
    }
}

/// Copies one output pipe to attached clients (raw bytes) and to the log store (lines).
async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    fanout: broadcast::Sender<Bytes>,
    stream: LogStream,
    logs: Arc<LogStore>,
    container_id: String,
    stop: CancellationToken,
) {
    let mut buffer = vec![0_u8; 8192];
    let mut partial: Vec<u8> = Vec::new();
    loop {
        let read = tokio::select! {
            () = stop.cancelled() => break,
            read = pipe.read(&mut buffer) => read,
        };
        let n = match read {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = &buffer[..n];
        // No attached client is fine: the bytes still reach the log.
        let _ = fanout.send(Bytes::copy_from_slice(chunk));
        partial.extend_from_slice(chunk);
        if let Some(last) = partial.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = partial.drain(..=last).collect();
            logs.append(&container_id, stream, &String::from_utf8_lossy(&complete));
        }
    }
    if !partial.is_empty() {
        logs.append(&container_id, stream, &String::from_utf8_lossy(&partial));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    #[test]
    fn command_replaces_the_entrypoint_and_args_follow() {
        let command = strings(&["/mcp-test-server", "stdio"]);
        let args = strings(&["--x"]);
        let launch = Launch {
            program: Path::new("/bin/true"),
            command: &command,
            args: &args,
            env: &[],
            stdin: false,
            stdin_once: false,
        };
        assert_eq!(launch.argv(), [&command[1], &args[0]]);
        let launch = Launch {
            command: &[],
            ..launch
        };
        assert_eq!(launch.argv(), [&args[0]]);
    }

    #[test]
    fn one_stdin_lease_at_a_time_and_stdin_once_closes_after_the_first() {
        let (tx, _rx) = mpsc::channel(1);
        let hub = Arc::new(StdioHub::new(Some(tx), false));
        let lease = hub.lease_stdin().expect("free");
        assert!(hub.lease_stdin().is_none(), "a second writer must wait");
        drop(lease);
        assert!(
            hub.lease_stdin().is_some(),
            "stdin stays open after a detach"
        );

        let (tx, _rx) = mpsc::channel(1);
        let once = Arc::new(StdioHub::new(Some(tx), true));
        drop(once.lease_stdin().expect("free"));
        assert!(
            once.lease_stdin().is_none(),
            "stdinOnce: closed after one session"
        );

        let none = Arc::new(StdioHub::new(None, false));
        assert!(none.lease_stdin().is_none());
    }
}
