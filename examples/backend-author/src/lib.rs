//! `ChildProcessOrchestrator`: a backend that runs each MCP server instance as a child process
//! of the calling program. It exists to show what implementing `McpOrchestrator` takes; every
//! rule the trait documents comes from the API crate's shared helpers (`RunExit` for exits and
//! restarts, `LogFilter` for logs, `continuation` for paging, `StdioClaims` and `StdioChannel`
//! for stdio, `validate_filters`), so the code here is only the engine: spawning, signalling,
//! capturing output.
//!
//! Instances live as long as the orchestrator value (no state directory); dropping it kills
//! them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use mcp_orchestrator_api::connect::not_running;
use mcp_orchestrator_api::continuation::{page_after, parse_after_token};
use mcp_orchestrator_api::futures::{self, StreamExt};
use mcp_orchestrator_api::mcp_types::{
    EnvValue, Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, LogStream,
    McpServer, Page, Phase, RestartPolicy, RunExit, StartOptions, Timestamp, labels,
    new_instance_name, reasons,
};
use mcp_orchestrator_api::{
    HttpEndpoint, LogLines, McpChannel, McpOrchestrator, OrchestratorError, Result, StdioChannel,
    StdioClaims, async_trait, validate_filters,
};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

const BACKEND: &str = "child-process";
const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// Runs MCP servers as child processes. Cloning shares the instances.
#[derive(Debug, Clone)]
pub struct ChildProcessOrchestrator {
    instances: Arc<Mutex<BTreeMap<InstanceId, Arc<Entry>>>>,
    claims: StdioClaims,
}

impl Default for ChildProcessOrchestrator {
    fn default() -> Self {
        Self {
            instances: Arc::default(),
            claims: StdioClaims::new(BACKEND),
        }
    }
}

impl ChildProcessOrchestrator {
    /// An orchestrator with no instances.
    pub fn new() -> Self {
        Self::default()
    }

    fn entry(&self, id: &InstanceId) -> Result<Arc<Entry>> {
        lock(&self.instances)
            .get(id)
            .cloned()
            .ok_or_else(|| OrchestratorError::not_found(id.as_str()))
    }
}

type Line = (LogStream, Timestamp, String);

/// What is needed to (re)start the process.
#[derive(Debug)]
struct Launch {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<PathBuf>,
    policy: RestartPolicy,
}

#[derive(Debug)]
struct Entry {
    id: InstanceId,
    server: String,
    labels: BTreeMap<String, String>,
    created_at: Timestamp,
    endpoint: Option<HttpEndpoint>,
    state: Mutex<State>,
    /// Bumped on every change so log followers wake up.
    changed: watch::Sender<u64>,
    /// Stop requested: SIGTERM now, SIGKILL when the grace period ends.
    stop: CancellationToken,
    grace: Mutex<Duration>,
    /// Cancelled when the supervising task has finished for good.
    done: CancellationToken,
    /// The current run's stdin, for an attached stdio client.
    stdin: tokio::sync::Mutex<Option<ChildStdin>>,
    /// The current run's stdout lines, for an attached stdio client.
    stdout: broadcast::Sender<String>,
}

#[derive(Debug, Default)]
struct State {
    status: InstanceStatus,
    logs: Vec<Line>,
    previous: Option<Vec<Line>>,
    finished: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Entry {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
        self.changed.send_modify(|v| *v += 1);
    }

    fn print(&self, stream: LogStream, text: String) {
        if stream == LogStream::Stdout {
            // Nobody attached is fine: the line is in the log anyway.
            let _ = self.stdout.send(text.clone());
        }
        self.update(|s| s.logs.push((stream, Timestamp::now(), text)));
    }

    /// Supervises the instance: runs, restarts under the policy, stops on request.
    async fn supervise(self: Arc<Self>, launch: Launch) {
        let mut backoff = BACKOFF_START;
        loop {
            let code = match self.spawn(&launch) {
                Ok(child) => self.run(child).await,
                Err(e) => {
                    self.print(LogStream::Stderr, format!("cannot start {}: {e}", launch.program));
                    Some(127)
                }
            };
            let Some(code) = code else { break };
            let exit = RunExit::under(launch.policy, code).with_next_start(format!("in {backoff:?}"));
            self.update(|s| {
                exit.apply_to(&mut s.status);
                s.status.finished_at = Some(Timestamp::now());
            });
            if !exit.after.restarts() {
                break;
            }
            tokio::select! {
                () = self.stop.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
            self.update(|s| {
                s.status.restart_count += 1;
                s.previous = Some(std::mem::take(&mut s.logs));
            });
        }
        self.update(|s| s.finished = true);
        self.done.cancel();
    }

    fn spawn(&self, launch: &Launch) -> std::io::Result<Child> {
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args)
            // The spec's env only: the host's environment is not the server's business.
            .env_clear()
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some(dir) = &launch.cwd {
            cmd.current_dir(dir);
        }
        cmd.spawn()
    }

    /// One run: `Some(exit code)` when it exited by itself, `None` when stopped.
    async fn run(self: &Arc<Self>, mut child: Child) -> Option<i32> {
        self.update(|s| {
            s.status = InstanceStatus {
                restart_count: s.status.restart_count,
                started_at: Some(Timestamp::now()),
                ..InstanceStatus::phase(Phase::Running)
            };
        });
        *self.stdin.lock().await = child.stdin.take();
        let readers = [
            child.stdout.take().map(|o| self.read(o, LogStream::Stdout)),
            child.stderr.take().map(|e| self.read(e, LogStream::Stderr)),
        ];
        let readers = futures::future::join_all(readers.into_iter().flatten());
        let stopped = tokio::select! {
            status = child.wait() => status.ok(),
            () = self.stop.cancelled() => None,
        };
        let code = if let Some(status) = stopped {
            // Every line is in before the exit is reported.
            readers.await;
            Some(exit_code(status))
        } else {
            self.terminate(&mut child).await;
            None
        };
        *self.stdin.lock().await = None;
        code
    }

    fn read(
        self: &Arc<Self>,
        pipe: impl AsyncRead + Unpin + Send + 'static,
        stream: LogStream,
    ) -> tokio::task::JoinHandle<()> {
        let entry = Arc::clone(self);
        tokio::spawn(async move {
            let mut lines = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                entry.print(stream, line);
            }
        })
    }

    /// SIGTERM, then SIGKILL when the grace period ends.
    async fn terminate(&self, child: &mut Child) {
        let grace = *lock(&self.grace);
        if let Some(pid) = child.id() {
            // `kill -TERM` keeps this crate free of unsafe code and of a signals dependency.
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(grace, child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }

    fn instance(&self) -> Instance {
        Instance {
            id: self.id.clone(),
            server: self.server.clone(),
            labels: self.labels.clone(),
            created_at: Some(self.created_at),
            status: lock(&self.state).status.clone(),
            endpoint: self.endpoint.as_ref().map(|e| e.url.clone()),
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(-1)
}

fn not_supported(what: &str) -> OrchestratorError {
    OrchestratorError::NotSupported {
        backend: BACKEND,
        what: what.to_owned(),
    }
}

fn invalid(field: &str, message: &str) -> OrchestratorError {
    OrchestratorError::InvalidSpec(mcp_orchestrator_api::mcp_types::ValidationErrors::single(
        field, message,
    ))
}

/// The spec as a process launch, refusing what a child process cannot honour.
fn launch(spec: &McpServer) -> Result<Launch> {
    if !spec.volumes.is_empty() {
        return Err(not_supported("volumes (a child process sees the host file system)"));
    }
    if spec.gpu.is_some() {
        return Err(not_supported("GPUs"));
    }
    if spec.egress.is_some() {
        return Err(not_supported("egress restrictions (a child process shares the host network)"));
    }
    if !spec.secret_files.is_empty() {
        return Err(not_supported("secret files (this backend has no secret store)"));
    }
    let Some((program, rest)) = spec.command.split_first() else {
        return Err(invalid("command", "a child process needs `command`"));
    };
    let env = spec
        .env
        .iter()
        .map(|(k, v)| match v {
            EnvValue::Plain(value) => Ok((k.clone(), value.expose().to_owned())),
            EnvValue::Secret { .. } => Err(not_supported("secret references in env")),
        })
        .collect::<Result<_>>()?;
    Ok(Launch {
        program: program.clone(),
        args: rest.iter().chain(&spec.args).cloned().collect(),
        env,
        cwd: spec.working_dir.as_ref().map(PathBuf::from),
        policy: spec.restart_policy,
    })
}

#[async_trait]
impl McpOrchestrator for ChildProcessOrchestrator {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId> {
        let spec = options.apply(spec)?;
        let launch = launch(&spec)?;
        let id = InstanceId::new(new_instance_name(&spec.name));
        let endpoint = spec
            .port
            .filter(|_| spec.transport.is_http())
            .map(|port| HttpEndpoint {
                url: mcp_orchestrator_api::mcp_types::http_url("127.0.0.1", port, spec.http_path()),
                transport: spec.transport,
            });
        let entry = Arc::new(Entry {
            id: id.clone(),
            server: spec.name.clone(),
            labels: labels::instance_labels(&spec.name, id.as_str(), &spec.labels),
            created_at: Timestamp::now(),
            endpoint,
            state: Mutex::new(State {
                status: InstanceStatus::phase(Phase::Pending),
                ..State::default()
            }),
            changed: watch::channel(0).0,
            stop: CancellationToken::new(),
            grace: Mutex::new(Duration::ZERO),
            done: CancellationToken::new(),
            stdin: tokio::sync::Mutex::new(None),
            stdout: broadcast::channel(1024).0,
        });
        lock(&self.instances).insert(id.clone(), Arc::clone(&entry));
        tokio::spawn(entry.supervise(launch));
        Ok(id)
    }

    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let entry = self.entry(id)?;
        entry.update(|s| {
            if !s.finished {
                s.status.phase = Phase::Stopping;
                s.status.reason = Some(reasons::TERMINATING.into());
            }
        });
        *lock(&entry.grace) = grace;
        entry.stop.cancel();
        // The supervisor kills at the end of the grace period; a little more for the reaping.
        let _ = tokio::time::timeout(grace + Duration::from_secs(5), entry.done.cancelled()).await;
        lock(&self.instances).remove(id);
        entry.update(|s| s.finished = true);
        Ok(())
    }

    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        Ok(lock(&self.entry(id)?.state).status.clone())
    }

    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        let entry = self.entry(id)?;
        let filter = options.filter();
        let (existing, next) = {
            let state = lock(&entry.state);
            let source = if options.previous {
                state
                    .previous
                    .clone()
                    .ok_or_else(|| OrchestratorError::InvalidArgument {
                        what: "previous",
                        message: format!("instance {id} has no previous run"),
                    })?
            } else {
                state.logs.clone()
            };
            let len = source.len();
            (filter.select(source.into_iter().map(|(s, t, x)| (s, Some(t), x))), len)
        };
        let head = futures::stream::iter(existing.into_iter().map(Ok));
        if !options.follow || options.previous {
            return Ok(head.boxed());
        }
        let rx = entry.changed.subscribe();
        let tail = futures::stream::unfold(
            (entry, next, rx, Vec::new()),
            move |(entry, mut next, mut rx, mut buf)| async move {
                loop {
                    if let Some(line) = buf.pop() {
                        return Some((Ok(line), (entry, next, rx, buf)));
                    }
                    let (fresh, ended) = {
                        let state = lock(&entry.state);
                        // A restart starts a new log: follow continues in the new run.
                        if next > state.logs.len() {
                            next = 0;
                        }
                        let fresh = state.logs[next..].to_vec();
                        next = state.logs.len();
                        (fresh, state.finished)
                    };
                    buf = fresh
                        .into_iter()
                        .filter_map(|(s, t, x)| filter.accept(s, Some(t), x))
                        .rev()
                        .collect();
                    if buf.is_empty() {
                        if ended {
                            return None;
                        }
                        rx.changed().await.ok()?;
                    }
                }
            },
        );
        Ok(head.chain(tail).boxed())
    }

    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let entry = self.entry(id)?;
        let phase = lock(&entry.state).status.phase;
        if let Some(endpoint) = &entry.endpoint {
            if phase != Phase::Running {
                return Err(not_running(BACKEND, id, phase));
            }
            return Ok(McpChannel::Http(endpoint.clone()));
        }
        if phase != Phase::Running {
            return Err(not_running(BACKEND, id, phase));
        }
        let claim = self.claims.claim(id)?;
        let (client, server) = tokio::io::duplex(64 * 1024);
        let (from_client, mut to_client) = tokio::io::split(server);
        let mut lines = entry.stdout.subscribe();
        let to_server = Arc::clone(&entry);
        // Client -> the server's stdin, whole lines only (`StdioChannel` holds back partial ones).
        tokio::spawn(async move {
            let mut reader = BufReader::new(from_client).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let mut stdin = to_server.stdin.lock().await;
                let Some(stdin) = stdin.as_mut() else { break };
                if stdin.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                    break;
                }
            }
        });
        // The server's stdout -> client, until either side goes away.
        let stop = entry.done.clone();
        tokio::spawn(async move {
            loop {
                let line = tokio::select! {
                    line = lines.recv() => line,
                    () = stop.cancelled() => break,
                };
                match line {
                    Ok(line) => {
                        if to_client.write_all(format!("{line}\n").as_bytes()).await.is_err() {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Ok(McpChannel::Stdio(StdioChannel::from_stream(client).with_guard(claim)))
    }

    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        validate_filters(filters)?;
        let after = filters
            .continue_token
            .as_deref()
            .map(parse_after_token)
            .transpose()?;
        let matching: Vec<Instance> = lock(&self.instances)
            .values()
            .map(|e| e.instance())
            .filter(|i| filters.matches(i))
            .collect();
        Ok(page_after(matching, after.as_deref(), filters.limit))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_a_child_process_cannot_honour() {
        let spec = McpServer {
            gpu: Some(mcp_orchestrator_api::mcp_types::GpuSpec { product: None, count: 1 }),
            ..McpServer::command("s", "/bin/true", Vec::<String>::new())
        };
        assert!(matches!(launch(&spec), Err(OrchestratorError::NotSupported { .. })));
        let spec = McpServer::new("s", "some-image");
        assert!(matches!(launch(&spec), Err(OrchestratorError::InvalidSpec(_))));
    }
}
