//! An in-memory reference backend: instances are tokio tasks that run fixture scripts.
//!
//! It implements every operation with the semantics the trait documents, so it is both the
//! executable specification the conformance kit is checked against and a fast stand-in for
//! callers' own tests. Specs whose arguments are not a fixture script run idle until stopped.
//!
//! Secrets come from the [`SecretResolver`] given to [`InMemoryOrchestrator::with_secrets`]
//! (none by default: a spec that references a secret is an invalid spec, as on the other
//! backends without a secrets directory). A secret file lives in the instance's simulated file
//! system at its `path`, read-only with mode
//! [`SECRET_FILE_MODE`](crate::secrets::SECRET_FILE_MODE).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mcp_types::{
    GcReport, Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, LogStream,
    McpServer, Page, PersistentVolume, Phase, RestartPolicy, RunExit, StartOptions, Timestamp,
    Transport, labels, new_instance_name, reasons,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::connect::{McpChannel, StdioChannel, StdioClaims, http_not_reachable, not_running};
use crate::continuation::{page_after, parse_after_token};
use crate::error::{OrchestratorError, Result};
use crate::fixture::{FixtureScript, FixtureStep, ServeMode, env_file_name, missing_line};
use crate::orchestrator::{LogLines, McpOrchestrator};
use crate::secrets::{NoSecrets, SecretResolver, resolve_env, resolve_secret_files};
use crate::watch::InstanceEvents;

const BACKEND: &str = "memory";
/// Restart backoff: first delay, doubled per restart up to the cap (like the kubelet, scaled down).
const BACKOFF_START: Duration = Duration::from_millis(50);
const BACKOFF_CAP: Duration = Duration::from_secs(1);

mod mcp;
mod volumes;
mod watch_events;

pub use watch_events::WatchBreaker;

/// The in-memory orchestrator. Cloning shares the same instances.
#[derive(Debug, Clone)]
pub struct InMemoryOrchestrator {
    instances: Arc<Mutex<BTreeMap<InstanceId, Arc<Entry>>>>,
    claims: StdioClaims,
    /// Bumped on every change of any instance, so watches re-read the state.
    any_change: Arc<watch::Sender<u64>>,
    /// The test hook that breaks every open watch's "connection" (see [`WatchBreaker`]).
    breaker: WatchBreaker,
    /// Persistent volumes by name (see `volumes.rs`).
    volumes: Arc<Mutex<volumes::Volumes>>,
    /// Where `secretRef`s and secret files are resolved.
    secrets: Arc<dyn SecretResolver>,
}

impl Default for InMemoryOrchestrator {
    fn default() -> Self {
        Self {
            instances: Arc::default(),
            claims: StdioClaims::new(BACKEND),
            any_change: Arc::new(watch::channel(0).0),
            breaker: WatchBreaker::default(),
            volumes: Arc::default(),
            secrets: Arc::new(NoSecrets),
        }
    }
}

#[derive(Debug)]
struct Entry {
    id: InstanceId,
    server: String,
    labels: BTreeMap<String, String>,
    created_at: Timestamp,
    transport: Transport,
    /// The script ends by serving MCP on stdio (an in-process rmcp server answers `connect`).
    serves_stdio: bool,
    state: Mutex<State>,
    /// The server's environment: the spec's (secret references resolved) and each secret
    /// file's variable, which `PrintEnv` steps print. The host's environment is not inherited.
    env: BTreeMap<String, String>,
    /// The secret files: path -> value, read-only (see
    /// [`SECRET_FILE_MODE`](crate::secrets::SECRET_FILE_MODE)).
    secret_files: BTreeMap<String, String>,
    /// The spec's `workingDir`, which `PrintCwd` steps print (`/` when unset).
    working_dir: Option<String>,
    /// The simulated root filesystem of file steps (path -> the one line written), kept for
    /// the instance's life: every run of the instance sees it, the next instance does not.
    files: volumes::Files,
    /// The spec's volumes: paths under them go to their stores (see `volumes.rs`).
    mounts: Vec<volumes::Mount>,
    /// Bumped on every change so log followers wake up.
    changed: watch::Sender<u64>,
    /// The orchestrator's change counter, bumped with `changed` (watches).
    any_change: Arc<watch::Sender<u64>>,
    /// SIGTERM: stops the simulated process unless its script ignores it.
    cancel: CancellationToken,
    /// SIGKILL: stops it whatever it does, when the grace period ended.
    kill: CancellationToken,
    done: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct State {
    status: InstanceStatus,
    /// Lines of the current run.
    logs: Vec<(LogStream, Timestamp, String)>,
    /// Lines of the previous run, after a restart.
    previous: Option<Vec<(LogStream, Timestamp, String)>>,
    /// Which run `logs` holds (0 for the first), so followers notice a restart even when the
    /// new run already printed as many lines as they had read of the old one.
    run: u64,
    /// The run task has finished for good.
    finished: bool,
    /// Removed by stop; followers end.
    removed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave these plain-data states half-written in a way
    // that matters more than losing the instance, so recover the data.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Entry {
    fn update(&self, f: impl FnOnce(&mut State)) {
        f(&mut lock(&self.state));
        self.changed.send_modify(|v| *v += 1);
        self.any_change.send_modify(|v| *v += 1);
    }

    fn print(&self, stream: LogStream, text: String) {
        self.update(|s| s.logs.push((stream, Timestamp::now(), text)));
    }

    /// Runs the script (with restarts) until it ends for good or is cancelled.
    async fn run(self: Arc<Self>, script: Option<FixtureScript>, policy: RestartPolicy) {
        let mut backoff = BACKOFF_START;
        loop {
            self.update(|s| {
                s.status.phase = Phase::Running;
                s.status.reason = None;
                s.status.message = None;
                s.status.started_at = Some(Timestamp::now());
                s.status.finished_at = None;
                // The previous run's code (if any) stays visible while this run is running.
                s.status.last_exit_code = s.status.exit_code.take().or(s.status.last_exit_code);
            });
            let code = if let Some(script) = &script {
                self.run_once(script).await
            } else {
                self.cancel.cancelled().await;
                None
            };
            let Some(code) = code else { break };
            let exit = RunExit::under(policy, code).with_next_start(format!("in {backoff:?}"));
            let restart = exit.after.restarts();
            self.update(|s| {
                exit.apply_to(&mut s.status);
                s.status.finished_at = Some(Timestamp::now());
            });
            if !restart {
                break;
            }
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(BACKOFF_CAP);
            self.update(|s| {
                s.status.restart_count += 1;
                s.previous = Some(std::mem::take(&mut s.logs));
                s.run += 1;
            });
        }
        self.update(|s| s.finished = true);
        self.done.notify_waiters();
    }

    /// The token that stops the current run: SIGTERM, or only the kill once SIGTERM is ignored.
    fn stop_token(&self, ignoring: bool) -> &CancellationToken {
        if ignoring { &self.kill } else { &self.cancel }
    }

    /// One run of the script: `Some(exit code)`, or `None` when cancelled.
    async fn run_once(&self, script: &FixtureScript) -> Option<i32> {
        let mut ignoring = false;
        for step in &script.steps {
            if self.stop_token(ignoring).is_cancelled() {
                return None;
            }
            match step {
                FixtureStep::PrintEnv(name) => self.print(
                    LogStream::Stdout,
                    crate::fixture::env_line(name, self.env.get(name).map(String::as_str)),
                ),
                FixtureStep::PrintCwd => self.print(
                    LogStream::Stdout,
                    self.working_dir.clone().unwrap_or_else(|| "/".to_owned()),
                ),
                FixtureStep::IgnoreSigterm => ignoring = true,
                FixtureStep::WriteFile { path, content } => {
                    let line = self.write_file(path, content);
                    self.print(LogStream::Stdout, line);
                }
                FixtureStep::PrintFile(path) => {
                    let text = self.read_file(path);
                    let line = text.unwrap_or_else(|| missing_line(path));
                    self.print(LogStream::Stdout, line);
                }
                FixtureStep::PrintEnvFile(name) => {
                    let text = self.env.get(name).and_then(|path| self.read_file(path));
                    let line = text.unwrap_or_else(|| missing_line(&env_file_name(name)));
                    self.print(LogStream::Stdout, line);
                }
                FixtureStep::PrintEnvFileMode(name) => {
                    let mode = self.env.get(name).and_then(|path| self.file_mode(path));
                    let line = mode.map_or_else(
                        || missing_line(&env_file_name(name)),
                        |m| crate::fixture::mode_line(name, m),
                    );
                    self.print(LogStream::Stdout, line);
                }
                // Instances of this backend live in the caller's process: they have no network.
                FixtureStep::Connect(target) => self.print(
                    LogStream::Stdout,
                    crate::fixture::connect_line(
                        target,
                        Some("the in-memory backend has no network"),
                    ),
                ),
                // In-process instances have no network of their own to fetch through.
                FixtureStep::Fetch(url) => self.print(
                    LogStream::Stdout,
                    crate::fixture::fetch_line(
                        url,
                        Err("the in-memory backend has no network"),
                        "(none)",
                    ),
                ),
                FixtureStep::Stdout(l) => self.print(LogStream::Stdout, l.clone()),
                FixtureStep::Stderr(l) => self.print(LogStream::Stderr, l.clone()),
                FixtureStep::StdoutLines { prefix, count } => {
                    for i in 1..=*count {
                        self.print(LogStream::Stdout, format!("{prefix}-{i}"));
                    }
                }
                FixtureStep::Sleep(d) => {
                    tokio::select! {
                        () = self.stop_token(ignoring).cancelled() => return None,
                        () = tokio::time::sleep(*d) => {}
                    }
                }
                FixtureStep::Exit(code) => return Some(*code),
                // Serving runs until stopped; `connect` reaches the in-process server.
                FixtureStep::Serve(_) => break,
            }
        }
        self.stop_token(ignoring).cancelled().await;
        None
    }

    fn instance(&self) -> Instance {
        Instance {
            id: self.id.clone(),
            server: self.server.clone(),
            labels: self.labels.clone(),
            created_at: Some(self.created_at),
            status: lock(&self.state).status.clone(),
            endpoint: None,
        }
    }
}

impl InMemoryOrchestrator {
    /// An empty orchestrator.
    pub fn new() -> Self {
        Self::default()
    }

    /// The test hook that makes every open watch of this orchestrator lose its "connection"
    /// and resync, as a backend's watch does after its engine connection broke.
    pub fn watch_breaker(&self) -> WatchBreaker {
        self.breaker.clone()
    }

    /// Resolves `secretRef` environment values and secret files through `resolver` (a
    /// [`DirSecretResolver`](crate::secrets::DirSecretResolver) over a secrets directory, as
    /// the local backends do, or any other store).
    #[must_use]
    pub fn with_secrets(mut self, resolver: Arc<dyn SecretResolver>) -> Self {
        self.secrets = resolver;
        self
    }

    /// Every instance as listed, unfiltered.
    fn snapshot(&self) -> Vec<Instance> {
        lock(&self.instances)
            .values()
            .map(|e| e.instance())
            .collect()
    }

    fn entry(&self, id: &InstanceId) -> Result<Arc<Entry>> {
        lock(&self.instances)
            .get(id)
            .cloned()
            .ok_or_else(|| OrchestratorError::not_found(id.as_str()))
    }
}

#[async_trait]
impl McpOrchestrator for InMemoryOrchestrator {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId> {
        let spec = options.apply(spec)?;
        let mut env: BTreeMap<String, String> = resolve_env(&spec.env, self.secrets.as_ref())?
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_owned()))
            .collect();
        let values = resolve_secret_files(&spec.secret_files, self.secrets.as_ref())?;
        let mut secret_files = BTreeMap::new();
        for (file, value) in spec.secret_files.iter().zip(values) {
            if let Some(var) = &file.env {
                env.insert(var.clone(), file.path.clone());
            }
            secret_files.insert(file.path.clone(), value.expose().to_owned());
        }
        let id = InstanceId::new(new_instance_name(&spec.name));
        let script = FixtureScript::parse_args(&spec.args).ok();
        let serves_stdio = script
            .as_ref()
            .is_some_and(|s| s.serves() == Some(ServeMode::Stdio));
        let (changed, _) = watch::channel(0);
        // Held until the instance is listed, so a concurrent `remove_volume` sees it as a user.
        let mut volumes = lock(&self.volumes);
        let entry = Arc::new(Entry {
            id: id.clone(),
            server: spec.name.clone(),
            labels: labels::instance_labels(&spec.name, id.as_str(), &spec.labels),
            created_at: Timestamp::now(),
            transport: spec.transport,
            serves_stdio,
            state: Mutex::new(State {
                status: InstanceStatus::phase(Phase::Pending),
                ..State::default()
            }),
            env,
            secret_files,
            working_dir: spec.working_dir.clone(),
            files: volumes::Files::default(),
            mounts: Self::mounts_for(&mut volumes, &spec),
            changed,
            any_change: self.any_change.clone(),
            cancel: CancellationToken::new(),
            kill: CancellationToken::new(),
            done: tokio::sync::Notify::new(),
        });
        {
            let mut map = lock(&self.instances);
            if map.contains_key(&id) {
                return Err(OrchestratorError::AlreadyExists {
                    what: format!("instance {id:?}"),
                });
            }
            map.insert(id.clone(), entry.clone());
        }
        drop(volumes);
        self.any_change.send_modify(|v| *v += 1);
        tokio::spawn(entry.run(script, spec.restart_policy));
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
        // Register interest before cancelling so the wake-up cannot be missed.
        let done = entry.done.notified();
        entry.cancel.cancel();
        if !lock(&entry.state).finished
            && tokio::time::timeout(grace, done).await.is_err()
            && !lock(&entry.state).finished
        {
            // The script ignores SIGTERM: the grace period is over, kill it.
            let killed = entry.done.notified();
            entry.kill.cancel();
            if !lock(&entry.state).finished {
                let _ = tokio::time::timeout(Duration::from_secs(1), killed).await;
            }
        }
        lock(&self.instances).remove(id);
        self.any_change.send_modify(|v| *v += 1);
        entry.update(|s| {
            s.status = InstanceStatus::phase(Phase::Stopped);
            s.removed = true;
        });
        Ok(())
    }

    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        Ok(lock(&self.entry(id)?.state).status.clone())
    }

    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        let entry = self.entry(id)?;
        let filter = options.filter();
        let accept = move |(stream, ts, text): (LogStream, Timestamp, String)| {
            filter.accept(stream, Some(ts), text)
        };
        let (existing, next_index, run) = {
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
            let lines = filter.select(source.into_iter().map(|(s, t, x)| (s, Some(t), x)));
            (lines, len, state.run)
        };
        let head = futures::stream::iter(existing.into_iter().map(Ok));
        if !options.follow || options.previous {
            return Ok(head.boxed());
        }
        let rx = entry.changed.subscribe();
        let tail = futures::stream::unfold(
            (entry, (run, next_index), rx, Vec::new()),
            move |(entry, (mut run, mut next), mut rx, mut buf)| {
                async move {
                    loop {
                        if let Some(line) = buf.pop() {
                            return Some((line, (entry, (run, next), rx, buf)));
                        }
                        let (fresh, ended) = {
                            let state = lock(&entry.state);
                            // A restart swaps the log buffer; start over in the new run.
                            if state.run != run {
                                run = state.run;
                                next = 0;
                            }
                            let fresh: Vec<_> = state.logs[next..].to_vec();
                            next = state.logs.len();
                            (fresh, state.finished || state.removed)
                        };
                        buf = fresh.into_iter().filter_map(accept).rev().collect();
                        if !buf.is_empty() {
                            continue;
                        }
                        if ended {
                            return None;
                        }
                        if rx.changed().await.is_err() {
                            return None;
                        }
                    }
                }
            },
        );
        Ok(head.chain(tail.map(Ok)).boxed())
    }

    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let entry = self.entry(id)?;
        if entry.transport.is_http() {
            return Err(http_not_reachable(BACKEND, entry.transport));
        }
        let phase = lock(&entry.state).status.phase;
        if phase != Phase::Running {
            return Err(not_running(BACKEND, id, phase));
        }
        let claim = self.claims.claim(id)?;
        let (client, server) = tokio::io::duplex(64 * 1024);
        if entry.serves_stdio {
            mcp::spawn(entry.server.clone(), server, entry.cancel.clone());
        } else {
            // A server that never reads stdin nor writes stdout: input is taken and dropped.
            let cancel = entry.cancel.clone();
            tokio::spawn(async move {
                let mut server = server;
                let mut sink = tokio::io::sink();
                tokio::select! {
                    _ = tokio::io::copy(&mut server, &mut sink) => {}
                    () = cancel.cancelled() => {}
                }
            });
        }
        Ok(McpChannel::Stdio(
            StdioChannel::from_stream(client).with_guard(claim),
        ))
    }

    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        crate::filters::validate_filters(filters)?;
        let after = filters
            .continue_token
            .as_deref()
            .map(parse_after_token)
            .transpose()?;
        let matching: Vec<Instance> = lock(&self.instances)
            .values()
            .map(|e| e.instance())
            .filter(|i| {
                i.labels.get(labels::MANAGED).is_some_and(|v| v == "true") && filters.matches(i)
            })
            .collect();
        Ok(page_after(matching, after.as_deref(), filters.limit))
    }

    async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
        crate::watch::validate_watch_filters(filters)?;
        Ok(watch_events::watch(self.clone(), filters))
    }

    async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
        self.list_persistent(server)
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        self.remove_persistent(name)
    }

    async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        Ok(Self::gc(dry_run))
    }
}
