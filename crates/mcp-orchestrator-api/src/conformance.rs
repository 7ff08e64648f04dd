//! The conformance kit: one function per behaviour the trait documents. Any backend passes by
//! running [`run_all`] (or the functions one by one) against itself.
//!
//! Each function starts only servers with unique names and a unique run label, cleans up after
//! itself whether it passes or fails, and so can run concurrently with other runs on the same
//! engine. Servers are described as [`FixtureScript`]s; a [`ServerFactory`] maps a script to a
//! spec the backend can run (a command for processes, an image plus arguments for containers).
//!
//! # Errors
//! Every check returns a [`Failure`] that names the check and says what the backend did wrong.

// Documented once above: each check's only error is the behaviour it found broken.
#![allow(clippy::missing_errors_doc)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use mcp_types::{
    InstanceFilters, InstanceId, LabelSelector, LogLine, LogOptions, LogStream, McpServer, Phase,
    RestartPolicy, StartOptions, Timestamp, labels, reasons,
};

mod connect;

pub use connect::{connect_http, connect_refused, connect_stdio};

use crate::error::OrchestratorError;
use crate::ext::OrchestratorExt;
use crate::fixture::FixtureScript;
use crate::orchestrator::{LogLines, McpOrchestrator};

/// Label put on every instance a kit function starts, with a value unique to the call.
pub const RUN_LABEL: &str = "conformance.mcpctl.io/run";

/// Maps a fixture script to a server spec the backend under test can run.
pub trait ServerFactory: Send + Sync {
    /// A spec named `name` that executes `script`.
    fn server(&self, name: &str, script: &FixtureScript) -> McpServer;
}

/// Runs scripts as `program fixture ...` (process backend, in-memory backend).
#[derive(Debug, Clone)]
pub struct CommandServers {
    /// Path of a program that understands fixture scripts (the workspace's test server).
    pub program: String,
}

impl ServerFactory for CommandServers {
    fn server(&self, name: &str, script: &FixtureScript) -> McpServer {
        McpServer {
            restart_policy: RestartPolicy::Never,
            ..McpServer::command(name, &self.program, script.to_args())
        }
    }
}

/// Runs scripts as an image whose entry point understands fixture scripts (Docker, Kubernetes).
#[derive(Debug, Clone)]
pub struct ImageServers {
    /// The image reference.
    pub image: String,
}

impl ServerFactory for ImageServers {
    fn server(&self, name: &str, script: &FixtureScript) -> McpServer {
        McpServer {
            args: script.to_args(),
            restart_policy: RestartPolicy::Never,
            ..McpServer::new(name, &self.image)
        }
    }
}

/// How a backend's engine keeps a server's stdout and stderr, which decides what
/// [`logs_timestamps_and_streams`] demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum StreamSupport {
    /// Every line keeps its stream, and `StreamSelector::Stdout` / `Stderr` select one
    /// (processes, Docker, the in-memory backend). The kit checks each line's stream and that a
    /// selector returns exactly that stream's lines.
    #[default]
    Separate,
    /// The engine keeps one log with both streams merged in write order and cannot tell them
    /// apart (Kubernetes). The kit checks that every line is reported as stdout, in write order,
    /// and that selecting one stream is refused with
    /// [`NotSupported`](OrchestratorError::NotSupported) rather than answered with lines that
    /// may belong to the other stream.
    Merged,
}

/// Whether a backend keeps the previous run's logs after a restart, which decides what
/// [`logs_previous`] demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PreviousLogs {
    /// `previous: true` returns the last run's lines once the server was restarted (processes,
    /// Kubernetes, the in-memory backend).
    #[default]
    Kept,
    /// The engine keeps one log across restarts (Docker), so `previous: true` is refused with
    /// [`InvalidArgument`](OrchestratorError::InvalidArgument) even after a restart.
    Refused,
}

/// What a following log stream does when the server exits and is restarted, which decides what
/// [`follow_across_restarts`] demands. Callers must be ready for either.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum FollowAcrossRestarts {
    /// The stream stays open across the exit and yields the next run's lines (the process
    /// backend, the in-memory backend).
    #[default]
    Continues,
    /// The stream ends when the run it follows exits, even when a restart follows (Docker,
    /// Kubernetes: the engine's follow request ends with the container); follow again for the
    /// next run.
    Ends,
}

/// Where the URL that `connect` gives for an HTTP server can be reached, which decides what
/// [`connect_http`] demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum HttpConnect {
    /// From where the kit runs (a port published on loopback, a host process): the kit completes
    /// the MCP protocol through the URL with a real streamable-HTTP client.
    #[default]
    Reachable,
    /// Only from inside the engine's network (a Kubernetes Service name): the kit checks the
    /// URL's form (scheme, the server's port, the MCP path).
    InEngineNetwork,
    /// The backend has no network to serve HTTP on (the in-memory backend): `connect` to an HTTP
    /// server must answer [`NotSupported`](OrchestratorError::NotSupported).
    Unsupported,
}

/// A spec feature a backend may lack. Declared on the [`Harness`] with
/// [`Harness::with_capability`] (or [`Harness::with_secrets`]); [`spec_capabilities`],
/// [`working_dir`], [`secret_env_propagation`] and [`secret_files`] check the declarations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Capability {
    /// `workingDir`: the server runs in that directory.
    WorkingDir,
    /// `volumes`: persistent storage mounted into the server.
    Volumes,
    /// `gpu`: GPUs handed to the server.
    Gpu,
    /// `egress`: outbound network restricted to the listed destinations.
    Egress,
    /// The `watch` operation (not a spec field): a backend that declares it
    /// [`Support::Refused`] must answer [`NotSupported`](OrchestratorError::NotSupported); one
    /// that declares it [`Support::Honoured`] is held to the `watch_*` checks and gives the kit
    /// a way to break its watch connection ([`Harness::with_watch_break`]).
    Watch,
    /// `volumes[].persistent`, `list_volumes` and `remove_volume`: volumes kept per server
    /// across instances ([`persistent_volumes`] checks it).
    PersistentVolumes,
    /// `collect_garbage`: finding and removing orphans ([`garbage_collection`] checks it).
    GarbageCollection,
    /// `env` values that are `secretRef`s, resolved by the backend
    /// ([`secret_env_propagation`] checks them, with secrets from [`Harness::with_secrets`]).
    SecretEnv,
    /// `secretFiles`: secrets as read-only files ([`secret_files`] checks them, with secrets
    /// from [`Harness::with_secrets`], as [`Harness::with_secret_file_path`] and
    /// [`Harness::with_secret_file_mode`] declare).
    SecretFiles,
}

impl Capability {
    /// Every capability, in a stable order.
    pub const ALL: [Self; 9] = [
        Self::WorkingDir,
        Self::Volumes,
        Self::Gpu,
        Self::Egress,
        Self::Watch,
        Self::PersistentVolumes,
        Self::GarbageCollection,
        Self::SecretEnv,
        Self::SecretFiles,
    ];

    /// The spec field (camelCase path) or the operation (`watch`, a trait method) the capability
    /// is about.
    pub fn field(self) -> &'static str {
        match self {
            Self::WorkingDir => "workingDir",
            Self::Volumes => "volumes",
            Self::Gpu => "gpu",
            Self::Egress => "egress",
            Self::Watch => "watch",
            Self::PersistentVolumes => "volumes[].persistent",
            Self::GarbageCollection => "collect_garbage",
            Self::SecretEnv => "env[].secretRef",
            Self::SecretFiles => "secretFiles",
        }
    }
}

/// What a backend declares about a [`Capability`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Support {
    /// The backend honours the field. The kit checks what it can observe: the working
    /// directory a server sees; that a spec with volumes or egress starts and runs (what the
    /// server can then reach is left to the backend's own tests); the values of secrets the
    /// server reads; GPUs are not checked.
    Honoured,
    /// The backend cannot honour the field and refuses a spec that uses it with
    /// [`NotSupported`](OrchestratorError::NotSupported), starting nothing. The kit checks that.
    Refused,
}

/// What the kit runs against. Build it with [`Harness::new`] and the `with_*` methods; it is
/// `#[non_exhaustive]` so that new declarations can be added without breaking callers.
#[non_exhaustive]
pub struct Harness<'a> {
    /// The backend under test.
    pub orchestrator: &'a dyn McpOrchestrator,
    /// How scripts become specs.
    pub servers: &'a dyn ServerFactory,
    /// Longest wait for any single state change (start, exit, a log line).
    pub timeout: Duration,
    /// Grace period used when stopping.
    pub grace: Duration,
    /// Whether the backend keeps stdout and stderr apart.
    pub streams: StreamSupport,
    /// Whether the backend keeps the previous run's logs after a restart.
    pub previous_logs: PreviousLogs,
    /// Where an HTTP server's URL from `connect` can be reached.
    pub http_connect: HttpConnect,
    /// Whether a following log stream continues into the next run after a restart.
    pub follow_restarts: FollowAcrossRestarts,
    /// Declared spec capabilities; a capability not in the map is not checked.
    pub capabilities: BTreeMap<Capability, Support>,
    /// Breaks the backend's open watch connections (see [`Harness::with_watch_break`]).
    pub watch_break: Option<WatchBreak>,
    /// The directory under which the kit mounts volumes (`/` unless set): their mount paths
    /// are `<mount root>/<name>`.
    pub mount_root: String,
    /// Where the kit stores the secrets its specs reference (see [`Harness::with_secrets`]).
    pub secrets: Option<&'a dyn SecretStore>,
    /// Where the backend puts secret files ([`SecretFilePath::Honoured`] unless set).
    pub secret_file_path: SecretFilePath,
    /// The permission bits a server sees on its secret files, checked when set.
    pub secret_file_mode: Option<u32>,
    /// The backend's default egress policy, when it reports each instance's egress posture in
    /// its status (see [`Harness::with_egress_posture`]).
    pub egress_default: Option<mcp_types::Egress>,
}

/// A hook that makes every open watch of the backend under test lose its connection to the
/// engine (a Docker socket relay cut, the fake API server closing its watches, the process
/// backend's notifier restarted, ...), so the kit can check that nothing is lost or repeated
/// across the reconnect.
pub type WatchBreak = std::sync::Arc<dyn Fn() + Send + Sync>;

impl<'a> Harness<'a> {
    /// A harness with a 60 s timeout, a 5 s grace period, separate streams, kept previous
    /// logs, HTTP URLs reachable from the kit, following that continues across restarts, `workingDir` honoured and no other capability
    /// declared.
    pub fn new(orchestrator: &'a dyn McpOrchestrator, servers: &'a dyn ServerFactory) -> Self {
        Self {
            orchestrator,
            servers,
            timeout: Duration::from_secs(60),
            grace: Duration::from_secs(5),
            streams: StreamSupport::Separate,
            previous_logs: PreviousLogs::Kept,
            http_connect: HttpConnect::Reachable,
            follow_restarts: FollowAcrossRestarts::Continues,
            capabilities: BTreeMap::from([(Capability::WorkingDir, Support::Honoured)]),
            watch_break: None,
            mount_root: "/".to_owned(),
            secrets: None,
            secret_file_path: SecretFilePath::Honoured,
            secret_file_mode: None,
            egress_default: None,
        }
    }

    /// Gives the kit a place to store the secrets its specs reference and declares
    /// [`Capability::SecretEnv`] and [`Capability::SecretFiles`] honoured (declare either
    /// refused afterwards with [`Harness::with_capability`] where it is not).
    pub fn with_secrets(mut self, store: &'a dyn SecretStore) -> Self {
        self.secrets = Some(store);
        self.capabilities
            .insert(Capability::SecretEnv, Support::Honoured);
        self.capabilities
            .insert(Capability::SecretFiles, Support::Honoured);
        self
    }

    /// Declares where the backend puts secret files.
    pub fn with_secret_file_path(mut self, path: SecretFilePath) -> Self {
        self.secret_file_path = path;
        self
    }

    /// Declares the permission bits a server sees on its secret files (0o400 where the backend
    /// owns the file; 0o440 on Kubernetes, whose kubelet adds group read for the `fsGroup`).
    pub fn with_secret_file_mode(mut self, mode: u32) -> Self {
        self.secret_file_mode = Some(mode);
        self
    }

    /// Declares that the backend reports each instance's egress posture
    /// ([`InstanceStatus::egress`](mcp_types::InstanceStatus::egress)) in `get_status`,
    /// listings and watches, and that `default` is its configured default policy: the
    /// [`egress_posture`] check holds it to that (with [`Capability::Egress`] honoured).
    pub fn with_egress_posture(mut self, default: mcp_types::Egress) -> Self {
        self.egress_default = Some(default);
        self
    }

    /// Declares [`Capability::Watch`] honoured, with the hook that breaks the backend's watch
    /// connections for [`watch_reconnect`].
    pub fn with_watch_break(mut self, hook: WatchBreak) -> Self {
        self.capabilities
            .insert(Capability::Watch, Support::Honoured);
        self.watch_break = Some(hook);
        self
    }

    /// Sets the directory under which the kit mounts volumes, for backends that can mount only
    /// below a directory of their choosing (the workspace's backends mount anywhere and keep
    /// the default `/`): the kit's volumes are mounted at `<root>/data`, `<root>/keep` and
    /// `<root>/scratch`.
    pub fn with_mount_root(mut self, root: impl Into<String>) -> Self {
        self.mount_root = root.into();
        self
    }

    /// The mount path of the kit's volume `name`: `<mount root>/<name>`.
    pub fn mount_path(&self, name: &str) -> String {
        format!("{}/{name}", self.mount_root.trim_end_matches('/'))
    }

    /// Sets the longest wait for any single state change.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the grace period used when stopping.
    pub fn with_grace(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Declares how the backend keeps stdout and stderr.
    pub fn with_streams(mut self, streams: StreamSupport) -> Self {
        self.streams = streams;
        self
    }

    /// Declares whether the previous run's logs are kept after a restart.
    pub fn with_previous_logs(mut self, previous_logs: PreviousLogs) -> Self {
        self.previous_logs = previous_logs;
        self
    }

    /// Declares where an HTTP server's URL from `connect` can be reached.
    pub fn with_http_connect(mut self, http_connect: HttpConnect) -> Self {
        self.http_connect = http_connect;
        self
    }

    /// Declares whether a following log stream continues into the next run after a restart.
    pub fn with_follow_across_restarts(mut self, follow: FollowAcrossRestarts) -> Self {
        self.follow_restarts = follow;
        self
    }

    /// Declares what the backend does with a spec capability (replacing an earlier
    /// declaration).
    pub fn with_capability(mut self, capability: Capability, support: Support) -> Self {
        self.capabilities.insert(capability, support);
        self
    }

    /// Removes a capability's declaration: the kit does not check it.
    pub fn without_declaration(mut self, capability: Capability) -> Self {
        self.capabilities.remove(&capability);
        self
    }

    /// What the backend declared about `capability`, if anything.
    pub fn support(&self, capability: Capability) -> Option<Support> {
        self.capabilities.get(&capability).copied()
    }
}

impl fmt::Debug for Harness<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Harness")
            .field("backend", &self.orchestrator.backend_name())
            .field("timeout", &self.timeout)
            .field("grace", &self.grace)
            .field("streams", &self.streams)
            .field("previous_logs", &self.previous_logs)
            .field("http_connect", &self.http_connect)
            .field("follow_restarts", &self.follow_restarts)
            .field("capabilities", &self.capabilities)
            .field("watch_break", &self.watch_break.is_some())
            .field("mount_root", &self.mount_root)
            .field("secrets", &self.secrets.is_some())
            .field("secret_file_path", &self.secret_file_path)
            .field("secret_file_mode", &self.secret_file_mode)
            .field("egress_default", &self.egress_default)
            .finish_non_exhaustive()
    }
}

/// A behaviour the backend got wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The kit function.
    pub check: &'static str,
    /// What was expected and what happened.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.check, self.message)
    }
}

impl std::error::Error for Failure {}

/// Every failure of a [`run_all`] call.
#[derive(Debug, Clone)]
pub struct Report {
    /// The checks that failed.
    pub failures: Vec<Failure>,
    /// How many checks ran.
    pub ran: usize,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} of {} conformance checks failed:",
            self.failures.len(),
            self.ran
        )?;
        for failure in &self.failures {
            writeln!(f, "  - {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Report {}

/// Result of one check.
pub type CheckResult = Result<(), Failure>;

macro_rules! ensure {
    ($check:expr, $cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(Failure { check: $check, message: format!($($msg)+) });
        }
    };
}

/// Turns an orchestrator error into a failure of `check`, saying what was being done.
fn op<T>(check: &'static str, doing: &str, r: Result<T, OrchestratorError>) -> Result<T, Failure> {
    r.map_err(|e| Failure {
        check,
        message: format!("{doing}: {e}"),
    })
}

/// The instances a check started, stopped at the end whatever happened.
struct Run<'h, 'a> {
    h: &'h Harness<'a>,
    check: &'static str,
    tag: String,
    started: std::sync::Mutex<Vec<InstanceId>>,
}

impl<'h, 'a> Run<'h, 'a> {
    fn new(h: &'h Harness<'a>, check: &'static str) -> Self {
        let tag = mcp_types::names::sanitize_dns1123_label(&mcp_types::new_instance_name("r"), 40);
        Self {
            h,
            check,
            tag,
            started: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// A server name unique to this run.
    fn name(&self, base: &str) -> String {
        mcp_types::names::sanitize_dns1123_label(
            &format!("ct-{base}-{}", &self.tag[self.tag.len() - 6..]),
            40,
        )
    }

    fn options(&self, extra: &[(&str, &str)]) -> StartOptions {
        let mut labels: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        labels.insert(RUN_LABEL.to_owned(), self.tag.clone());
        StartOptions {
            labels,
            ..StartOptions::default()
        }
    }

    fn run_selector(&self) -> LabelSelector {
        LabelSelector::from_equalities([(RUN_LABEL, self.tag.as_str())])
    }

    /// Filters selecting exactly this run's instances.
    fn run_filters(&self) -> InstanceFilters {
        InstanceFilters {
            label_selector: Some(self.run_selector()),
            ..InstanceFilters::default()
        }
    }

    /// One page listing this run's instances.
    async fn list_run(&self) -> Result<mcp_types::Page<mcp_types::Instance>, Failure> {
        op(
            self.check,
            "list",
            self.h
                .orchestrator
                .list_instances(&self.run_filters())
                .await,
        )
    }

    /// An idle server reported Running and one that exited 3, reported Failed (`prefix-run`,
    /// `prefix-fail`): what the listing checks compare.
    async fn running_and_failed(&self, prefix: &str) -> Result<(InstanceId, InstanceId), Failure> {
        let running = self
            .start(&self.name(&format!("{prefix}-run")), &idle())
            .await?;
        let failed = self
            .start(
                &self.name(&format!("{prefix}-fail")),
                &FixtureScript::new().exit(3),
            )
            .await?;
        self.running(&running).await?;
        op(
            self.check,
            "wait for Failed",
            self.h
                .orchestrator
                .wait_for(&failed, self.h.timeout, "Failed", |s| {
                    s.phase == Phase::Failed
                })
                .await,
        )?;
        Ok((running, failed))
    }

    async fn start_with(
        &self,
        name: &str,
        script: &FixtureScript,
        extra: &[(&str, &str)],
    ) -> Result<InstanceId, Failure> {
        self.start_spec(&self.h.servers.server(name, script), extra)
            .await
    }

    /// Starts `spec` with this run's label (plus `extra`), to be stopped at the end.
    async fn start_spec(
        &self,
        spec: &McpServer,
        extra: &[(&str, &str)],
    ) -> Result<InstanceId, Failure> {
        let id = op(
            self.check,
            &format!("start {}", spec.name),
            self.h
                .orchestrator
                .start_server(spec, &self.options(extra))
                .await,
        )?;
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.clone());
        Ok(id)
    }

    /// Stops tracking `id` (it was stopped by the check itself).
    fn forget(&self, id: &InstanceId) {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|s| s != id);
    }

    /// Tracks `id` for clean-up (started outside [`Run::start_spec`]).
    fn adopt(&self, id: InstanceId) {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id);
    }

    async fn start(&self, name: &str, script: &FixtureScript) -> Result<InstanceId, Failure> {
        self.start_with(name, script, &[]).await
    }

    async fn running(&self, id: &InstanceId) -> CheckResult {
        op(
            self.check,
            &format!("wait for {id} to run"),
            self.h
                .orchestrator
                .wait_until_running(id, self.h.timeout)
                .await,
        )
        .map(drop)
    }

    async fn stop(&self, id: &InstanceId) -> CheckResult {
        op(
            self.check,
            &format!("stop {id}"),
            self.h.orchestrator.stop_server(id, self.h.grace).await,
        )?;
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|s| s != id);
        Ok(())
    }

    async fn logs(&self, id: &InstanceId, opts: &LogOptions) -> Result<Vec<LogLine>, Failure> {
        let stream = op(
            self.check,
            &format!("logs of {id}"),
            self.h.orchestrator.get_logs(id, opts).await,
        )?;
        collect(self.check, stream, self.h.timeout).await
    }

    /// Polls the logs until `n` lines exist.
    async fn wait_lines(
        &self,
        id: &InstanceId,
        n: usize,
        opts: &LogOptions,
    ) -> Result<Vec<LogLine>, Failure> {
        let deadline = tokio::time::Instant::now() + self.h.timeout;
        loop {
            let lines = self.logs(id, opts).await?;
            if lines.len() >= n {
                return Ok(lines);
            }
            ensure!(
                self.check,
                tokio::time::Instant::now() < deadline,
                "{id} printed {} of {n} expected lines within {:?}: {:?}",
                lines.len(),
                self.h.timeout,
                texts(&lines)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every instance still tracked now (before a check removes what they use).
    async fn cleanup_now(&self) {
        let ids = std::mem::take(
            &mut *self
                .started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        let o = self.h.orchestrator;
        futures::future::join_all(ids.iter().map(|id| o.stop_server(id, self.h.grace))).await;
    }

    async fn cleanup(self) {
        self.cleanup_now().await;
    }
}

async fn with_run<'h, 'a, F, Fut>(h: &'h Harness<'a>, check: &'static str, body: F) -> CheckResult
where
    F: FnOnce(&'h Harness<'a>, std::sync::Arc<Run<'h, 'a>>) -> Fut,
    Fut: Future<Output = CheckResult>,
{
    let run = std::sync::Arc::new(Run::new(h, check));
    let result = body(h, run.clone()).await;
    if let Ok(run) = std::sync::Arc::try_unwrap(run) {
        run.cleanup().await;
    }
    result
}

async fn collect(
    check: &'static str,
    mut stream: LogLines,
    timeout: Duration,
) -> Result<Vec<LogLine>, Failure> {
    let mut lines = Vec::new();
    let all = async {
        while let Some(line) = stream.next().await {
            lines.push(op(check, "read a log line", line)?);
        }
        Ok::<_, Failure>(())
    };
    match tokio::time::timeout(timeout, all).await {
        Ok(r) => r.map(|()| lines),
        Err(_) => Err(Failure {
            check,
            message: format!("a non-following log stream did not end within {timeout:?}"),
        }),
    }
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

/// A script that keeps running until stopped.
fn idle() -> FixtureScript {
    FixtureScript::new().stdout("ready")
}

/// start -> Running -> stop -> status is NotFound, and stop returns only once it is gone.
pub async fn start_status_stop(h: &Harness<'_>) -> CheckResult {
    const C: &str = "start_status_stop";
    with_run(h, C, |h, run| async move {
        let id = run.start(&run.name("lifecycle"), &idle()).await?;
        ensure!(
            C,
            mcp_types::names::check_dns1123_label(id.as_str()).is_ok(),
            "instance id {id:?} is not a DNS-1123 label"
        );
        run.running(&id).await?;
        let status = op(C, "status", h.orchestrator.get_status(&id).await)?;
        ensure!(
            C,
            status.phase == Phase::Running,
            "expected Running, got {status:?}"
        );
        ensure!(
            C,
            status.started_at.is_some(),
            "a running instance has no startedAt: {status:?}"
        );
        run.stop(&id).await?;
        match h.orchestrator.get_status(&id).await {
            Err(OrchestratorError::NotFound { .. }) => Ok(()),
            other => Err(Failure {
                check: C,
                message: format!("status after stop: expected NotFound, got {other:?}"),
            }),
        }
    })
    .await
}

/// Stopping an id that never existed is NotFound.
pub async fn stop_unknown_is_not_found(h: &Harness<'_>) -> CheckResult {
    const C: &str = "stop_unknown_is_not_found";
    let id = InstanceId::new(mcp_types::new_instance_name("never-started"));
    match h.orchestrator.stop_server(&id, h.grace).await {
        Err(OrchestratorError::NotFound { .. }) => Ok(()),
        other => Err(Failure {
            check: C,
            message: format!("expected NotFound, got {other:?}"),
        }),
    }
}

/// Status (and logs) of an id that never existed is NotFound.
pub async fn status_unknown_is_not_found(h: &Harness<'_>) -> CheckResult {
    const C: &str = "status_unknown_is_not_found";
    let id = InstanceId::new(mcp_types::new_instance_name("never-started"));
    match h.orchestrator.get_status(&id).await {
        Err(OrchestratorError::NotFound { .. }) => {}
        other => {
            return Err(Failure {
                check: C,
                message: format!("status: expected NotFound, got {other:?}"),
            });
        }
    }
    match h.orchestrator.get_logs(&id, &LogOptions::default()).await {
        Err(OrchestratorError::NotFound { .. }) => Ok(()),
        Err(e) => Err(Failure {
            check: C,
            message: format!("logs: expected NotFound, got {e:?}"),
        }),
        Ok(_) => Err(Failure {
            check: C,
            message: "logs: expected NotFound, got a stream".into(),
        }),
    }
}

/// An invalid spec is refused with InvalidSpec naming the field, and nothing starts.
pub async fn invalid_spec_rejected(h: &Harness<'_>) -> CheckResult {
    const C: &str = "invalid_spec_rejected";
    with_run(h, C, |h, run| async move {
        let name = run.name("invalid");
        let mut spec = h.servers.server(&name, &idle());
        spec.resources.requests.memory = mcp_types::Quantity::parse("2Gi").ok();
        spec.resources.limits.memory = mcp_types::Quantity::parse("1Gi").ok();
        match h.orchestrator.start_server(&spec, &run.options(&[])).await {
            Err(OrchestratorError::InvalidSpec(errors)) => {
                ensure!(
                    C,
                    errors.has_path("resources.requests.memory"),
                    "error does not name the field: {errors}"
                );
            }
            other => {
                return Err(Failure {
                    check: C,
                    message: format!("request > limit: expected InvalidSpec, got {other:?}"),
                });
            }
        }
        let mut bad_name = h.servers.server("x", &idle());
        bad_name.name = "Not_A_Label".into();
        match h
            .orchestrator
            .start_server(&bad_name, &run.options(&[]))
            .await
        {
            Err(OrchestratorError::InvalidSpec(errors)) => ensure!(
                C,
                errors.has_path("name"),
                "error does not name `name`: {errors}"
            ),
            other => {
                return Err(Failure {
                    check: C,
                    message: format!("bad name: expected InvalidSpec, got {other:?}"),
                });
            }
        }
        let page = run.list_run().await?;
        ensure!(
            C,
            page.items.is_empty(),
            "invalid specs left instances behind: {:?}",
            page.items
        );
        Ok(())
    })
    .await
}

/// `tail: N` returns exactly the last N lines of a server that printed more.
pub async fn logs_tail(h: &Harness<'_>) -> CheckResult {
    const C: &str = "logs_tail";
    with_run(h, C, |_, run| async move {
        let id = run
            .start(
                &run.name("tail"),
                &FixtureScript::new().stdout_lines("line", 10),
            )
            .await?;
        run.running(&id).await?;
        let all = run.wait_lines(&id, 10, &LogOptions::default()).await?;
        let expected: Vec<String> = (1..=10).map(|i| format!("line-{i}")).collect();
        ensure!(
            C,
            texts(&all) == expected,
            "all lines: expected {expected:?}, got {:?}",
            texts(&all)
        );
        let tail = run.logs(&id, &LogOptions::tail(3)).await?;
        ensure!(
            C,
            texts(&tail) == ["line-8", "line-9", "line-10"],
            "tail 3: got {:?}",
            texts(&tail)
        );
        let zero = run.logs(&id, &LogOptions::tail(0)).await?;
        ensure!(C, zero.is_empty(), "tail 0: got {:?}", texts(&zero));
        let more = run.logs(&id, &LogOptions::tail(50)).await?;
        ensure!(
            C,
            more.len() == 10,
            "tail 50 of 10 lines: got {}",
            more.len()
        );
        Ok(())
    })
    .await
}

/// `since: T` excludes lines written before T, with sub-second precision.
pub async fn logs_since(h: &Harness<'_>) -> CheckResult {
    const C: &str = "logs_since";
    with_run(h, C, |_, run| async move {
        // Several engines store `since` with one-second precision; a 2.5 s gap keeps the test
        // meaningful for them while the backend must still filter exactly.
        let script = FixtureScript::new()
            .stdout("early")
            .sleep(Duration::from_millis(2500))
            .stdout("late");
        let id = run.start(&run.name("since"), &script).await?;
        run.running(&id).await?;
        let lines = run
            .wait_lines(
                &id,
                2,
                &LogOptions {
                    timestamps: true,
                    ..LogOptions::default()
                },
            )
            .await?;
        let (Some(early), Some(late)) = (lines[0].timestamp, lines[1].timestamp) else {
            return Err(Failure {
                check: C,
                message: "timestamps missing with timestamps: true".into(),
            });
        };
        ensure!(
            C,
            late > early,
            "line timestamps not increasing: {early} then {late}"
        );
        let mid = Timestamp::from_nanosecond(
            early.as_nanosecond() + (late.as_nanosecond() - early.as_nanosecond()) / 2,
        )
        .map_err(|e| Failure {
            check: C,
            message: e.to_string(),
        })?;
        let since = run
            .logs(
                &id,
                &LogOptions {
                    since: Some(mid),
                    ..LogOptions::default()
                },
            )
            .await?;
        ensure!(
            C,
            texts(&since) == ["late"],
            "since {mid} (between {early} and {late}): got {:?}",
            texts(&since)
        );
        // Sub-second precision: a millisecond after a line excludes it and a millisecond
        // before a line includes it, whichever whole second each falls in.
        let ms = jiff::SignedDuration::from_millis(1);
        for (since, what) in [
            (early + ms, "1 ms after \"early\""),
            (late - ms, "1 ms before \"late\""),
        ] {
            let lines = run
                .logs(
                    &id,
                    &LogOptions {
                        since: Some(since),
                        ..LogOptions::default()
                    },
                )
                .await?;
            ensure!(
                C,
                texts(&lines) == ["late"],
                "since {since} ({what}; lines at {early} and {late}): got {:?}",
                texts(&lines)
            );
        }
        let since_all = run
            .logs(
                &id,
                &LogOptions {
                    since: Some(early),
                    ..LogOptions::default()
                },
            )
            .await?;
        ensure!(
            C,
            texts(&since_all) == ["early", "late"],
            "since the first line's time: got {:?}",
            texts(&since_all)
        );
        Ok(())
    })
    .await
}

/// `timestamps` on gives every line a plausible, non-decreasing time; off gives none. Streams
/// are told apart, or, for a backend whose engine merges them ([`StreamSupport::Merged`]), every
/// line is stdout in write order and selecting one stream is `NotSupported`.
pub async fn logs_timestamps_and_streams(h: &Harness<'_>) -> CheckResult {
    const C: &str = "logs_timestamps_and_streams";
    with_run(h, C, |h, run| async move {
        let before = Timestamp::now();
        let id = run
            .start(
                &run.name("ts"),
                &FixtureScript::new()
                    .stdout("out-1")
                    .stderr("err-1")
                    .stdout("out-2"),
            )
            .await?;
        run.running(&id).await?;
        let with = run
            .wait_lines(
                &id,
                3,
                &LogOptions {
                    timestamps: true,
                    ..LogOptions::default()
                },
            )
            .await?;
        let slack = jiff::SignedDuration::from_secs(5);
        let (lo, hi) = (before - slack, Timestamp::now() + slack);
        for w in with.windows(2) {
            ensure!(
                C,
                w[0].timestamp <= w[1].timestamp,
                "timestamps decrease: {:?}",
                with
            );
        }
        for l in &with {
            ensure!(
                C,
                l.timestamp.is_some_and(|t| t >= lo && t <= hi),
                "implausible timestamp on {l:?} (expected within {lo}..{hi})"
            );
        }
        let without = run.logs(&id, &LogOptions::default()).await?;
        ensure!(
            C,
            without.iter().all(|l| l.timestamp.is_none()),
            "timestamps present without timestamps: true: {without:?}"
        );
        if h.streams == StreamSupport::Merged {
            return merged_streams(h, &run, &id, &without).await;
        }
        let mut got: Vec<_> = without
            .iter()
            .map(|l| (l.stream, l.text.as_str()))
            .collect();
        got.sort();
        let mut expected = vec![
            (LogStream::Stdout, "out-1"),
            (LogStream::Stderr, "err-1"),
            (LogStream::Stdout, "out-2"),
        ];
        expected.sort();
        ensure!(
            C,
            got == expected,
            "streams: expected {expected:?}, got {got:?}"
        );
        let only_err = run
            .logs(
                &id,
                &LogOptions {
                    stream: mcp_types::StreamSelector::Stderr,
                    ..LogOptions::default()
                },
            )
            .await?;
        ensure!(
            C,
            texts(&only_err) == ["err-1"],
            "stderr only: got {:?}",
            texts(&only_err)
        );
        let only_out = run
            .logs(
                &id,
                &LogOptions {
                    stream: mcp_types::StreamSelector::Stdout,
                    ..LogOptions::default()
                },
            )
            .await?;
        ensure!(
            C,
            texts(&only_out) == ["out-1", "out-2"],
            "stdout only: got {:?}",
            texts(&only_out)
        );
        Ok(())
    })
    .await
}

/// The stream part of [`logs_timestamps_and_streams`] for [`StreamSupport::Merged`] backends.
async fn merged_streams(
    h: &Harness<'_>,
    run: &Run<'_, '_>,
    id: &InstanceId,
    lines: &[LogLine],
) -> CheckResult {
    const C: &str = "logs_timestamps_and_streams";
    let got: Vec<_> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
    let expected = [
        (LogStream::Stdout, "out-1"),
        (LogStream::Stdout, "err-1"),
        (LogStream::Stdout, "out-2"),
    ];
    ensure!(
        C,
        got == expected,
        "merged streams: expected every line as stdout in write order {expected:?}, got {got:?}"
    );
    for selector in [
        mcp_types::StreamSelector::Stdout,
        mcp_types::StreamSelector::Stderr,
    ] {
        let opts = LogOptions {
            stream: selector,
            ..LogOptions::default()
        };
        match h.orchestrator.get_logs(id, &opts).await {
            Err(OrchestratorError::NotSupported { .. }) => {}
            Err(e) => {
                return Err(Failure {
                    check: C,
                    message: format!(
                        "merged streams: selecting {selector:?} must be NotSupported, got {e:?}"
                    ),
                });
            }
            Ok(stream) => {
                let lines = collect(run.check, stream, h.timeout).await?;
                return Err(Failure {
                    check: C,
                    message: format!(
                        "merged streams: selecting {selector:?} must be NotSupported, got lines {:?}",
                        texts(&lines)
                    ),
                });
            }
        }
    }
    Ok(())
}

/// `follow` yields lines printed after the call and ends when the instance stops; it also
/// ends by itself when the server exits.
pub async fn logs_follow(h: &Harness<'_>) -> CheckResult {
    const C: &str = "logs_follow";
    with_run(h, C, |h, run| async move {
        let script = FixtureScript::new()
            .stdout("before")
            .sleep(Duration::from_millis(1500))
            .stdout("after");
        let id = run.start(&run.name("follow"), &script).await?;
        run.running(&id).await?;
        run.wait_lines(&id, 1, &LogOptions::default()).await?;
        let mut stream = op(
            C,
            "follow",
            h.orchestrator.get_logs(&id, &LogOptions::follow()).await,
        )?;
        let mut seen = Vec::new();
        while !seen.iter().any(|t| t == "after") {
            match tokio::time::timeout(h.timeout, stream.next()).await {
                Ok(Some(line)) => seen.push(op(C, "follow line", line)?.text),
                Ok(None) => {
                    return Err(Failure {
                        check: C,
                        message: format!("stream ended before \"after\": {seen:?}"),
                    });
                }
                Err(_) => {
                    return Err(Failure {
                        check: C,
                        message: format!("no \"after\" within {:?}: {seen:?}", h.timeout),
                    });
                }
            }
        }
        ensure!(C, seen == ["before", "after"], "followed lines: {seen:?}");
        run.stop(&id).await?;
        match tokio::time::timeout(h.timeout, stream.next()).await {
            Ok(None | Some(Err(_))) => {}
            Ok(Some(Ok(line))) => {
                return Err(Failure {
                    check: C,
                    message: format!("unexpected line after stop: {line:?}"),
                });
            }
            Err(_) => {
                return Err(Failure {
                    check: C,
                    message: "follow stream stayed open after stop".into(),
                });
            }
        }
        // A server that exits on its own ends the stream too.
        let script = FixtureScript::new()
            .stdout("one")
            .sleep(Duration::from_millis(500))
            .stdout("two")
            .exit(0);
        let id = run.start(&run.name("follow-exit"), &script).await?;
        let stream = op(
            C,
            "follow",
            h.orchestrator.get_logs(&id, &LogOptions::follow()).await,
        )?;
        let Ok(lines) = tokio::time::timeout(h.timeout, stream.collect::<Vec<_>>()).await else {
            return Err(Failure {
                check: C,
                message: "follow stream did not end when the server exited".into(),
            });
        };
        let lines: Vec<String> = lines
            .into_iter()
            .map(|l| l.map(|l| l.text))
            .collect::<Result<_, _>>()
            .map_err(|e| Failure {
                check: C,
                message: e.to_string(),
            })?;
        ensure!(
            C,
            lines == ["one", "two"],
            "follow of an exiting server: {lines:?}"
        );
        Ok(())
    })
    .await
}

/// Filtering by server name and by label selector returns exactly the matching instances.
pub async fn list_filters(h: &Harness<'_>) -> CheckResult {
    const C: &str = "list_filters";
    with_run(h, C, |h, run| async move {
        let (a, b) = (run.name("list-a"), run.name("list-b"));
        let a1 = run.start_with(&a, &idle(), &[("tier", "front")]).await?;
        let a2 = run.start_with(&a, &idle(), &[("tier", "back")]).await?;
        let b1 = run.start_with(&b, &idle(), &[("tier", "front")]).await?;
        let ids = |page: mcp_types::Page<mcp_types::Instance>| {
            page.items
                .into_iter()
                .map(|i| i.id)
                .collect::<BTreeSet<_>>()
        };
        let by_server = ids(op(
            C,
            "list by server",
            h.orchestrator
                .list_instances(&InstanceFilters::server(&a))
                .await,
        )?);
        ensure!(
            C,
            by_server == BTreeSet::from([a1.clone(), a2.clone()]),
            "server={a}: got {by_server:?}"
        );
        let sel = run.run_selector().and(mcp_types::Requirement::Equals(
            "tier".into(),
            "front".into(),
        ));
        let by_label = ids(op(
            C,
            "list by label",
            h.orchestrator
                .list_instances(&InstanceFilters {
                    label_selector: Some(sel.clone()),
                    ..InstanceFilters::default()
                })
                .await,
        )?);
        ensure!(
            C,
            by_label == BTreeSet::from([a1.clone(), b1.clone()]),
            "{sel}: got {by_label:?}"
        );
        let sel = run.run_selector().and(mcp_types::Requirement::NotIn(
            "tier".into(),
            ["front".to_owned()].into(),
        ));
        let by_notin = ids(op(
            C,
            "list notin",
            h.orchestrator
                .list_instances(&InstanceFilters {
                    label_selector: Some(sel.clone()),
                    ..InstanceFilters::default()
                })
                .await,
        )?);
        ensure!(
            C,
            by_notin == BTreeSet::from([a2.clone()]),
            "{sel}: got {by_notin:?}"
        );
        let both = InstanceFilters {
            server: Some(b.clone()),
            ..run.run_filters()
        };
        let by_both = ids(op(
            C,
            "list server+label",
            h.orchestrator.list_instances(&both).await,
        )?);
        ensure!(
            C,
            by_both == BTreeSet::from([b1]),
            "server={b} + run label: got {by_both:?}"
        );
        Ok(())
    })
    .await
}

/// Paging with a small limit visits every instance exactly once, in id order. Instances coming
/// and going between pages change nothing for the others: with an instance started between
/// pages, and with a returned and a not yet returned instance stopped between pages, every
/// instance present throughout is still visited exactly once, in id order, and nothing appears
/// that never matched. Short or empty pages that carry a continue token are allowed.
pub async fn pagination(h: &Harness<'_>) -> CheckResult {
    const C: &str = "pagination";
    with_run(h, C, |h, run| async move {
        let name = run.name("page");
        let mut all = BTreeSet::new();
        for _ in 0..5 {
            all.insert(run.start(&name, &idle()).await?);
        }
        let mut listing = Listing::new(h, run.run_selector());
        listing.rest("list page").await?;
        visited(&listing.seen, &all, &all, "a listing")?;

        // Start an instance whose id sorts before every other one after the first page: the
        // rest of the listing still returns every other instance once (the new one may or may
        // not appear).
        let mut listing = Listing::new(h, run.run_selector());
        listing.first_items().await?;
        let added = run.start(&run.name("a"), &idle()).await?;
        listing.rest("list page after a start").await?;
        let with_added: BTreeSet<_> = all.iter().chain([&added]).cloned().collect();
        visited(
            &listing.seen,
            &all,
            &with_added,
            "with an instance started between pages",
        )?;

        // Stop an instance the first page returned and the next one not yet returned.
        let mut listing = Listing::new(h, run.run_selector());
        listing.first_items().await?;
        let Some(returned) = listing.seen.first().cloned() else {
            return Err(Failure {
                check: C,
                message: format!(
                    "a listing of {} instances returned none",
                    with_added.len()
                ),
            });
        };
        let next = listing.seen.last().and_then(|last| {
            with_added
                .iter()
                .find(|id| *id > last && !listing.seen.contains(id))
                .cloned()
        });
        run.stop(&returned).await?;
        if let Some(next) = &next {
            run.stop(next).await?;
        }
        listing.rest("list page after stops").await?;
        let survivors: BTreeSet<_> = with_added
            .iter()
            .filter(|id| **id != returned && Some(*id) != next.as_ref())
            .cloned()
            .collect();
        visited(
            &listing.seen,
            &survivors,
            &with_added,
            &format!(
                "with a returned ({returned}) and a not yet returned ({}) instance stopped between pages",
                next.as_ref().map_or_else(|| "none".to_owned(), ToString::to_string)
            ),
        )
    })
    .await
}

/// One listing with limit 2, page by page.
struct Listing<'h, 'a> {
    h: &'h Harness<'a>,
    filters: InstanceFilters,
    pages: usize,
    seen: Vec<InstanceId>,
    done: bool,
}

impl<'h, 'a> Listing<'h, 'a> {
    const C: &'static str = "pagination";

    fn new(h: &'h Harness<'a>, selector: LabelSelector) -> Self {
        Self {
            h,
            filters: InstanceFilters {
                label_selector: Some(selector),
                limit: Some(2),
                ..InstanceFilters::default()
            },
            pages: 0,
            seen: Vec::new(),
            done: false,
        }
    }

    async fn next(&mut self, doing: &str) -> CheckResult {
        let page = op(
            Self::C,
            doing,
            self.h.orchestrator.list_instances(&self.filters).await,
        )?;
        self.pages += 1;
        ensure!(
            Self::C,
            page.items.len() <= 2,
            "page {} has {} items with limit 2",
            self.pages,
            page.items.len()
        );
        ensure!(
            Self::C,
            self.pages <= 10,
            "more than 10 pages for at most 6 instances with limit 2"
        );
        self.seen.extend(page.items.into_iter().map(|i| i.id));
        self.done = page.continue_token.is_none();
        self.filters.continue_token = page.continue_token;
        Ok(())
    }

    /// Pages until something was returned or the listing ended.
    async fn first_items(&mut self) -> CheckResult {
        loop {
            self.next("list page").await?;
            if !self.seen.is_empty() || self.done {
                return Ok(());
            }
        }
    }

    /// Pages until the listing ends.
    async fn rest(&mut self, doing: &str) -> CheckResult {
        while !self.done {
            self.next(doing).await?;
        }
        Ok(())
    }
}

/// A listing visited each of `must` once, in id order, and nothing outside `may`.
fn visited(
    seen: &[InstanceId],
    must: &BTreeSet<InstanceId>,
    may: &BTreeSet<InstanceId>,
    when: &str,
) -> CheckResult {
    const C: &str = "pagination";
    ensure!(
        C,
        seen.windows(2).all(|w| w[0] < w[1]),
        "{when}: an instance appeared twice or out of id order: {seen:?}"
    );
    let seen: BTreeSet<_> = seen.iter().cloned().collect();
    let missing: Vec<_> = must.difference(&seen).collect();
    ensure!(
        C,
        missing.is_empty(),
        "{when}: never visited {missing:?}; visited {seen:?}"
    );
    let extra: Vec<_> = seen.difference(may).collect();
    ensure!(
        C,
        extra.is_empty(),
        "{when}: visited {extra:?}, which never matched"
    );
    Ok(())
}

/// 20 concurrent starts give 20 distinct ids, and all stop cleanly.
pub async fn concurrent_starts(h: &Harness<'_>) -> CheckResult {
    const C: &str = "concurrent_starts";
    with_run(h, C, |h, run| async move {
        let name = run.name("burst");
        let script = idle();
        let starts = (0..20).map(|_| run.start(&name, &script));
        let ids: Vec<InstanceId> = futures::future::join_all(starts)
            .await
            .into_iter()
            .collect::<Result<_, _>>()?;
        let unique: BTreeSet<_> = ids.iter().cloned().collect();
        ensure!(
            C,
            unique.len() == 20,
            "20 starts gave {} distinct ids",
            unique.len()
        );
        let page = op(
            C,
            "list",
            h.orchestrator
                .list_instances(&InstanceFilters::server(&name))
                .await,
        )?;
        let listed: BTreeSet<_> = page.items.into_iter().map(|i| i.id).collect();
        ensure!(
            C,
            listed == unique,
            "listed {} instances, started {}",
            listed.len(),
            unique.len()
        );
        let stops = ids.iter().map(|id| run.stop(id));
        futures::future::join_all(stops)
            .await
            .into_iter()
            .collect::<Result<Vec<()>, _>>()?;
        for id in &ids {
            let st = h.orchestrator.get_status(id).await;
            ensure!(
                C,
                matches!(st, Err(OrchestratorError::NotFound { .. })),
                "{id} after stop: {st:?}"
            );
        }
        Ok(())
    })
    .await
}

/// A server that exits non-zero reaches Failed with its exit code; exit 0 reaches Succeeded.
pub async fn exit_code_reaches_failed(h: &Harness<'_>) -> CheckResult {
    const C: &str = "exit_code_reaches_failed";
    with_run(h, C, |h, run| async move {
        let failing = run
            .start(
                &run.name("fail"),
                &FixtureScript::new().stdout("bye").exit(3),
            )
            .await?;
        let ok = run
            .start(&run.name("ok"), &FixtureScript::new().exit(0))
            .await?;
        let st = op(
            C,
            "wait for Failed",
            h.orchestrator
                .wait_for(&failing, h.timeout, "Failed or Succeeded", |s| {
                    s.phase.is_terminal()
                })
                .await,
        )?;
        ensure!(
            C,
            st.phase == Phase::Failed && st.exit_code == Some(3),
            "exit 3: expected Failed with exit code 3, got {st:?}"
        );
        ensure!(C, st.finished_at.is_some(), "exit 3: no finishedAt: {st:?}");
        let st = op(
            C,
            "wait for Succeeded",
            h.orchestrator
                .wait_for(&ok, h.timeout, "Failed or Succeeded", |s| {
                    s.phase.is_terminal()
                })
                .await,
        )?;
        ensure!(
            C,
            st.phase == Phase::Succeeded && st.exit_code == Some(0),
            "exit 0: expected Succeeded with exit code 0, got {st:?}"
        );
        let err = h.orchestrator.wait_until_running(&failing, h.timeout).await;
        ensure!(
            C,
            matches!(err, Err(OrchestratorError::Exited { .. })),
            "wait_until_running on a failed instance: {err:?}"
        );
        let logs = run.logs(&failing, &LogOptions::default()).await?;
        ensure!(
            C,
            texts(&logs) == ["bye"],
            "logs of an exited instance: {:?}",
            texts(&logs)
        );
        run.stop(&failing).await?;
        run.stop(&ok).await
    })
    .await
}

/// The spec's restart policy decides what follows an exit, as [`RestartPolicy`] and [`Phase`]
/// document it: `Never` ends in Failed (reason `Error`) after a non-zero exit and `OnFailure`
/// ends in Succeeded (reason `Completed`) after exit 0, both with the exit code and no restart;
/// `OnFailure` after a non-zero exit and `Always` after any exit restart the server. A server
/// that will be restarted is never reported in a terminal phase: once restarted it is seen
/// Pending with reason `CrashLoopBackOff` and the last run's exit code, and its restart count
/// never goes down.
pub async fn restart_policy(h: &Harness<'_>) -> CheckResult {
    const C: &str = "restart_policy";
    with_run(h, C, |h, run| async move {
        let spec = |base: &str, code: i32, policy: RestartPolicy| McpServer {
            restart_policy: policy,
            ..h.servers.server(
                &run.name(base),
                &FixtureScript::new().stdout("run").exit(code),
            )
        };
        let never = run
            .start_spec(&spec("never", 3, RestartPolicy::Never), &[])
            .await?;
        let succeeded = run
            .start_spec(&spec("onfailure-ok", 0, RestartPolicy::OnFailure), &[])
            .await?;
        let on_failure = run
            .start_spec(&spec("onfailure", 1, RestartPolicy::OnFailure), &[])
            .await?;
        let always = run
            .start_spec(&spec("always", 0, RestartPolicy::Always), &[])
            .await?;
        for (id, what, phase, reason, code) in [
            (&never, "Never, exit 3", Phase::Failed, reasons::ERROR, 3),
            (
                &succeeded,
                "OnFailure, exit 0",
                Phase::Succeeded,
                reasons::COMPLETED,
                0,
            ),
        ] {
            let st = op(
                C,
                &format!("{what}: wait for a terminal phase"),
                h.orchestrator
                    .wait_for(id, h.timeout, "Failed or Succeeded", |s| {
                        s.phase.is_terminal()
                    })
                    .await,
            )?;
            ensure!(
                C,
                st.phase == phase
                    && st.exit_code == Some(code)
                    && st.reason.as_deref() == Some(reason)
                    && st.restart_count == 0,
                "{what}: expected {phase} with exit code {code}, reason {reason} and no restart, \
                 got {st:?}"
            );
        }
        crash_loop(h, &on_failure, "OnFailure, exit 1", 1).await?;
        crash_loop(h, &always, "Always, exit 0", 0).await
    })
    .await
}

/// Polls a server that exits and will be restarted until it was restarted and is backing off;
/// no status on the way may be terminal or lower the restart count.
async fn crash_loop(h: &Harness<'_>, id: &InstanceId, what: &str, code: i32) -> CheckResult {
    const C: &str = "restart_policy";
    let deadline = tokio::time::Instant::now() + h.timeout;
    let mut restarts = 0;
    loop {
        let st = op(
            C,
            &format!("{what}: status"),
            h.orchestrator.get_status(id).await,
        )?;
        ensure!(
            C,
            !st.phase.is_terminal(),
            "{what}: a server that will be restarted was reported {}: {st:?}",
            st.phase
        );
        ensure!(
            C,
            st.restart_count >= restarts,
            "{what}: the restart count went down from {restarts}: {st:?}"
        );
        restarts = st.restart_count;
        if restarts >= 1 && st.reason.as_deref() == Some(reasons::CRASH_LOOP_BACKOFF) {
            ensure!(
                C,
                st.phase == Phase::Pending && st.exit_code == Some(code),
                "{what}: backing off after a restart: expected Pending with exit code {code}, \
                 got {st:?}"
            );
            return Ok(());
        }
        ensure!(
            C,
            tokio::time::Instant::now() < deadline,
            "{what}: not seen restarted and backing off (restartCount >= 1, reason \
             CrashLoopBackOff) within {:?}; last status {st:?}",
            h.timeout
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `previous: true` is [`InvalidArgument`](OrchestratorError::InvalidArgument) naming
/// `previous` while there is no previous run. After a restart it returns the last run's lines,
/// exactly once, with their streams as [`StreamSupport`] says; a backend whose engine keeps one
/// log across restarts ([`PreviousLogs::Refused`]) still refuses it.
pub async fn logs_previous(h: &Harness<'_>) -> CheckResult {
    const C: &str = "logs_previous";
    with_run(h, C, |h, run| async move {
        let first = run.start(&run.name("no-previous"), &idle()).await?;
        run.running(&first).await?;
        run.wait_lines(&first, 1, &LogOptions::default()).await?;
        no_previous_run(h, &first, "a first run").await?;
        let script = FixtureScript::new()
            .stdout("run-out")
            .stderr("run-err")
            .exit(1);
        let spec = McpServer {
            restart_policy: RestartPolicy::OnFailure,
            ..h.servers.server(&run.name("previous"), &script)
        };
        let id = run.start_spec(&spec, &[]).await?;
        op(
            C,
            "wait for two restarts",
            h.orchestrator
                .wait_for(&id, h.timeout, "restarted twice", |s| s.restart_count >= 2)
                .await,
        )?;
        if h.previous_logs == PreviousLogs::Refused {
            return no_previous_run(h, &id, "a backend that keeps one log across restarts").await;
        }
        let lines = run
            .logs(
                &id,
                &LogOptions {
                    previous: true,
                    ..LogOptions::default()
                },
            )
            .await?;
        let mut got: Vec<_> = lines.iter().map(|l| (l.stream, l.text.as_str())).collect();
        let expected = if h.streams == StreamSupport::Merged {
            vec![
                (LogStream::Stdout, "run-out"),
                (LogStream::Stdout, "run-err"),
            ]
        } else {
            // Two pipes: the order between them is not defined.
            got.sort();
            vec![
                (LogStream::Stdout, "run-out"),
                (LogStream::Stderr, "run-err"),
            ]
        };
        ensure!(
            C,
            got == expected,
            "previous after two restarts: expected the last run's lines {expected:?} once, \
             got {got:?}"
        );
        Ok(())
    })
    .await
}

/// `previous: true` on `id` must be refused as an invalid `previous`.
async fn no_previous_run(h: &Harness<'_>, id: &InstanceId, when: &str) -> CheckResult {
    const C: &str = "logs_previous";
    let opts = LogOptions {
        previous: true,
        ..LogOptions::default()
    };
    match h.orchestrator.get_logs(id, &opts).await {
        Err(OrchestratorError::InvalidArgument {
            what: "previous", ..
        }) => Ok(()),
        Err(e) => Err(Failure {
            check: C,
            message: format!(
                "previous on {when}: expected InvalidArgument for `previous`, got {e:?}"
            ),
        }),
        Ok(stream) => {
            let lines = collect(C, stream, h.timeout).await?;
            Err(Failure {
                check: C,
                message: format!(
                    "previous on {when}: expected InvalidArgument for `previous`, got lines {:?}",
                    texts(&lines)
                ),
            })
        }
    }
}

/// Instances carry the `mcpctl.io/*` and `app.kubernetes.io/*` labels, plus the spec's.
pub async fn labels_follow_conventions(h: &Harness<'_>) -> CheckResult {
    const C: &str = "labels_follow_conventions";
    with_run(h, C, |h, run| async move {
        let name = run.name("labels");
        let mut spec = h.servers.server(&name, &idle());
        spec.labels.insert("team".into(), "search".into());
        let id = op(
            C,
            "start",
            h.orchestrator.start_server(&spec, &run.options(&[])).await,
        )?;
        run.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(id.clone());
        let page = op(
            C,
            "list",
            h.orchestrator
                .list_instances(&InstanceFilters::server(&name))
                .await,
        )?;
        let [inst] = page.items.as_slice() else {
            return Err(Failure {
                check: C,
                message: format!("expected one instance, got {:?}", page.items),
            });
        };
        ensure!(C, inst.id == id && inst.server == name, "listed {inst:?}");
        let want = [
            (labels::SERVER, name.as_str()),
            (labels::MANAGED, "true"),
            (labels::INSTANCE, id.as_str()),
            (labels::APP_NAME, name.as_str()),
            (labels::APP_INSTANCE, id.as_str()),
            (labels::APP_COMPONENT, labels::COMPONENT_VALUE),
            (labels::APP_MANAGED_BY, labels::MANAGED_BY_VALUE),
            ("team", "search"),
            (RUN_LABEL, run.tag.as_str()),
        ];
        for (k, v) in want {
            ensure!(
                C,
                inst.labels.get(k).map(String::as_str) == Some(v),
                "label {k}: expected {v:?}, got {:?}",
                inst.labels.get(k)
            );
        }
        ensure!(C, inst.created_at.is_some(), "no createdAt on {inst:?}");
        Ok(())
    })
    .await
}

mod egress;
mod listing;
mod restarts;
mod secrets;
mod semantics;
mod volumes;
mod watch;

pub use egress::egress_posture;
pub use listing::list_agrees_with_status;
pub use restarts::follow_across_restarts;
pub use secrets::{
    DirSecretStore, SecretFilePath, SecretStore, secret_env_propagation, secret_files,
};
pub use volumes::{garbage_collection, persistent_volumes};

pub use semantics::{
    continue_token_malformed, env_propagation, follow_with_tail_and_since, list_phase_filter,
    spec_capabilities, stop_during_backoff, stop_escalates_to_kill, working_dir,
};
pub use watch::{watch_crash, watch_invalid_filters, watch_lifecycle, watch_reconnect};

/// Every check, in a stable order, with its name.
pub fn checks() -> Vec<&'static str> {
    vec![
        "start_status_stop",
        "stop_unknown_is_not_found",
        "status_unknown_is_not_found",
        "invalid_spec_rejected",
        "logs_tail",
        "logs_since",
        "logs_timestamps_and_streams",
        "logs_follow",
        "list_filters",
        "pagination",
        "concurrent_starts",
        "exit_code_reaches_failed",
        "restart_policy",
        "logs_previous",
        "labels_follow_conventions",
        "connect_stdio",
        "connect_http",
        "connect_refused",
        "list_phase_filter",
        "list_agrees_with_status",
        "continue_token_malformed",
        "stop_escalates_to_kill",
        "stop_during_backoff",
        "env_propagation",
        "working_dir",
        "spec_capabilities",
        "follow_with_tail_and_since",
        "follow_across_restarts",
        "watch_lifecycle",
        "watch_crash",
        "watch_invalid_filters",
        "watch_reconnect",
        "persistent_volumes",
        "garbage_collection",
        "secret_env_propagation",
        "secret_files",
        "egress_posture",
    ]
}

/// Runs one check by name.
///
/// # Errors
/// The check's failure, or a failure naming an unknown check.
pub async fn run_check(h: &Harness<'_>, name: &str) -> CheckResult {
    match name {
        "start_status_stop" => start_status_stop(h).await,
        "stop_unknown_is_not_found" => stop_unknown_is_not_found(h).await,
        "status_unknown_is_not_found" => status_unknown_is_not_found(h).await,
        "invalid_spec_rejected" => invalid_spec_rejected(h).await,
        "logs_tail" => logs_tail(h).await,
        "logs_since" => logs_since(h).await,
        "logs_timestamps_and_streams" => logs_timestamps_and_streams(h).await,
        "logs_follow" => logs_follow(h).await,
        "list_filters" => list_filters(h).await,
        "pagination" => pagination(h).await,
        "concurrent_starts" => concurrent_starts(h).await,
        "exit_code_reaches_failed" => exit_code_reaches_failed(h).await,
        "restart_policy" => restart_policy(h).await,
        "logs_previous" => logs_previous(h).await,
        "labels_follow_conventions" => labels_follow_conventions(h).await,
        "connect_stdio" => connect_stdio(h).await,
        "connect_http" => connect_http(h).await,
        "connect_refused" => connect_refused(h).await,
        "list_phase_filter" => list_phase_filter(h).await,
        "list_agrees_with_status" => list_agrees_with_status(h).await,
        "continue_token_malformed" => continue_token_malformed(h).await,
        "stop_escalates_to_kill" => stop_escalates_to_kill(h).await,
        "stop_during_backoff" => stop_during_backoff(h).await,
        "env_propagation" => env_propagation(h).await,
        "working_dir" => working_dir(h).await,
        "spec_capabilities" => spec_capabilities(h).await,
        "follow_with_tail_and_since" => follow_with_tail_and_since(h).await,
        "follow_across_restarts" => follow_across_restarts(h).await,
        "watch_lifecycle" => watch_lifecycle(h).await,
        "watch_crash" => watch_crash(h).await,
        "watch_invalid_filters" => watch_invalid_filters(h).await,
        "watch_reconnect" => watch_reconnect(h).await,
        "persistent_volumes" => persistent_volumes(h).await,
        "garbage_collection" => garbage_collection(h).await,
        "secret_env_propagation" => secret_env_propagation(h).await,
        "secret_files" => secret_files(h).await,
        "egress_posture" => egress_posture(h).await,
        other => Err(Failure {
            check: "run_check",
            message: format!("unknown check {other:?}; known: {:?}", checks()),
        }),
    }
}

/// Runs every check concurrently (they are independent by construction) and reports all
/// failures together.
///
/// # Errors
/// A [`Report`] listing each failed check.
pub async fn run_all(h: &Harness<'_>) -> Result<(), Report> {
    let names = checks();
    let results = futures::future::join_all(names.iter().map(|n| run_check(h, n))).await;
    let failures: Vec<Failure> = results.into_iter().filter_map(Result::err).collect();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(Report {
            failures,
            ran: names.len(),
        })
    }
}
