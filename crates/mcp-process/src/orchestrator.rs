//! `ProcessOrchestrator`: construction, the paths of an instance, and the `McpOrchestrator`
//! operations, each delegated to the module that implements it: `lifecycle` (start, stop),
//! `status` (status, list, recorded processes), `logs` (read and follow), `stdio` (the
//! attach bridge) and `volumes` (persistent volumes). Every operation reads the state directory, so any process (a later CLI
//! invocation, another program) sees the same instances.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
#[cfg(doc)]
use mcp_orchestrator_api::OrchestratorError;
use mcp_orchestrator_api::connect::{self, HttpEndpoint, McpChannel, StdioChannel};
use mcp_orchestrator_api::secrets::{DirSecretResolver, NoSecrets, SecretResolver};
use mcp_orchestrator_api::{InstanceEvents, LogLines, McpOrchestrator, Result};
use mcp_types::{
    GcReport, Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer,
    OrphanKind, Page, PersistentVolume, Phase, StartOptions,
};
use tokio::net::UnixStream;

use crate::config::ProcessConfig;
use crate::error::{BACKEND, ProcessError};
use crate::layout::{INSTANCES, InstancePaths};
use crate::lifecycle::Lifecycle;
use crate::status::{InstanceProcesses, observe};
use crate::volumes::{VolumeStore, remove_tree};
use crate::watch::WatchBreaker;
use crate::{logs, status, stdio};

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
    breaker: WatchBreaker,
}

impl ProcessOrchestrator {
    /// An orchestrator over `config`'s state directory. Nothing is created until the first
    /// start, and the supervisor program is looked up at each start.
    ///
    /// # Errors
    /// - [`InvalidArgument`](OrchestratorError::InvalidArgument) when
    ///   [`ProcessConfig::validate`] refuses the configuration (the message names the field).
    /// - [`Unavailable`](OrchestratorError::Unavailable) when no state directory is configured
    ///   and none can be derived from `XDG_STATE_HOME` or `HOME`.
    pub fn new(config: ProcessConfig) -> Result<Self> {
        config.validate().map_err(|message| {
            mcp_orchestrator_api::OrchestratorError::InvalidArgument {
                what: "process backend configuration",
                message,
            }
        })?;
        // Absolute: `validate` refuses a relative stateDir and the default is absolute.
        let state_dir = config.state_dir().map_err(ProcessError::Setup)?;
        let secrets: Box<dyn SecretResolver> = match &config.secrets_dir {
            Some(d) => Box::new(DirSecretResolver::new(d)),
            None => Box::new(NoSecrets),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                state_dir,
                secrets,
                breaker: WatchBreaker::default(),
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

    /// Restarts the notifier of every open watch of this orchestrator value (a test hook: the
    /// watch resyncs from a full listing, see `watch.rs`).
    pub fn watch_breaker(&self) -> WatchBreaker {
        self.inner.breaker.clone()
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
        Ok(observe(&paths, &self.inner.config)?.processes())
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
        stdio::attach(&self.inner.config, id, &paths).await
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

    fn lifecycle(&self) -> Lifecycle<'_> {
        Lifecycle {
            config: &self.inner.config,
            state_dir: &self.inner.state_dir,
            secrets: self.inner.secrets.as_ref(),
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
        self.lifecycle().start(&spec).await
    }

    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let paths = self.paths(id)?;
        self.lifecycle().stop(id, &paths, grace).await
    }

    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let paths = self.paths(id)?;
        Ok(observe(&paths, &self.inner.config)?.status)
    }

    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        let paths = self.paths(id)?;
        logs::read_logs(&self.inner.config, id, paths, options).await
    }

    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        status::list(&self.inner.state_dir, &self.inner.config, filters)
    }

    /// A stdio server's channel is the supervisor's bridge (its private greeting is read and
    /// checked here, never passed on); an HTTP server's is its recorded URL.
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let paths = self.paths(id)?;
        let obs = observe(&paths, &self.inner.config)?;
        if obs.status.phase != Phase::Running {
            return Err(connect::not_running(BACKEND, id, obs.status.phase));
        }
        let transport = obs.meta.launch.transport;
        if transport.is_http() {
            let url = obs.meta.endpoint.ok_or_else(|| {
                mcp_orchestrator_api::OrchestratorError::unavailable(
                    BACKEND,
                    format!("{id} serves {transport} but recorded no endpoint"),
                    None,
                )
            })?;
            return Ok(McpChannel::Http(HttpEndpoint { url, transport }));
        }
        let stream = stdio::attach(&self.inner.config, id, &paths).await?;
        Ok(McpChannel::Stdio(StdioChannel::from_stream(stream)))
    }

    /// Lists the state directory whenever inotify reports a change in it (from any process)
    /// and every `WATCH_RESCAN`; see `watch.rs`.
    async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
        mcp_orchestrator_api::validate_watch_filters(filters)?;
        crate::watch::watch(
            &self.inner.state_dir,
            &self.inner.config,
            filters,
            &self.inner.breaker,
        )
    }

    /// The persistent volumes under the state directory (`<state dir>/volumes/`), each with
    /// the instances whose `meta.json` names it.
    async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
        mcp_orchestrator_api::volumes::check_server_arg(server)?;
        Ok(VolumeStore::new(&self.inner.state_dir).list(server)?)
    }

    /// Refused while an instance mounts the volume; otherwise the volume is moved to the
    /// trash and deleted, under the volume lock so no start can pick it up meanwhile.
    async fn remove_volume(&self, name: &str) -> Result<()> {
        mcp_orchestrator_api::volumes::check_volume_arg(name)?;
        let store = VolumeStore::new(&self.inner.state_dir);
        let _lock = store.lock(true).await?;
        Ok(store.remove(name)?)
    }

    /// Orphans are instances whose supervisor died (`Orphaned`): nothing restarts, logs or
    /// stops them any more. Removing one is a stop (it ends what still runs of it and deletes
    /// its directory, per-instance volumes included). Persistent volumes left half-built by a
    /// starter that died (older than a minute) are orphans too.
    async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        let mut report = GcReport::new(dry_run);
        let all = status::list(
            &self.inner.state_dir,
            &self.inner.config,
            &InstanceFilters::default(),
        )?;
        for instance in all.items {
            if instance.status.reason.as_deref() != Some(mcp_types::reasons::ORPHANED) {
                continue;
            }
            if !dry_run {
                match self.stop_server(&instance.id, Duration::ZERO).await {
                    Ok(()) | Err(mcp_orchestrator_api::OrchestratorError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            report.push(
                OrphanKind::Instance,
                instance.id.as_str(),
                "its supervisor is gone",
                true,
            );
        }
        for dir in VolumeStore::new(&self.inner.state_dir).abandoned() {
            if !dry_run {
                remove_tree(&dir)?;
            }
            report.push(
                OrphanKind::Volume,
                dir.display().to_string(),
                "a persistent volume whose creation was abandoned",
                true,
            );
        }
        report.sort();
        Ok(report)
    }
}
