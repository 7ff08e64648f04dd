//! Starting and stopping an instance: the spec checked (egress, mount paths) and turned into
//! what the supervisor runs, a fresh instance directory with its volumes (`volumes.rs`), the
//! supervisor spawned and awaited until it reports the first launch (or refuses to set up the
//! namespaces, `sandbox.rs`); and the stop: the per-instance stop lock (`flock`), SIGTERM then SIGKILL to
//! the supervisor (with every process below it, when it has to be killed) and then to any
//! process group it left behind (each verified by pid and start time), and the directory
//! deleted through the trash.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcp_orchestrator_api::secrets::{SecretResolver, resolve_env, resolve_secret_files};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{
    Egress, InstanceId, McpServer, ResourceRequirements, Timestamp, ValidationErrors, labels,
    new_instance_name,
};
use rustix::process::Signal;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::config::{ProcessConfig, SUPERVISOR_MARGIN, is_executable, search_path};
use crate::error::{BACKEND, ProcessError};
use crate::files::{create_private_dir, create_private_dir_all, read_json, write_json};
use crate::layout::{Handoff, INSTANCES, InstancePaths, Launch, Meta, State, StopRequest, TRASH};
use crate::procfs::{ProcIdentity, descendants};
use crate::sandbox::{Refusal, Sandbox};
use crate::status::read_supervisor;
use crate::supervisor::READY;
use crate::volumes::{VolumeStore, remove_tree};

/// How often stop waits look again.
const POLL: Duration = Duration::from_millis(20);
/// How long a killed process group may take to disappear before stop reports a timeout.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// What starting and stopping need from the orchestrator.
pub(crate) struct Lifecycle<'a> {
    /// The backend's configuration.
    pub(crate) config: &'a ProcessConfig,
    /// The state directory root.
    pub(crate) state_dir: &'a Path,
    /// Where `secretRef` values come from.
    pub(crate) secrets: &'a dyn SecretResolver,
}

impl Lifecycle<'_> {
    /// Starts an instance of `spec` (options already applied): checks it, creates the instance
    /// directory, spawns the supervisor and waits for the first launch. A failed start leaves
    /// nothing behind.
    pub(crate) async fn start(&self, spec: &McpServer) -> Result<InstanceId> {
        let mut env = self.server_env(spec)?;
        let secret_values = resolve_secret_files(&spec.secret_files, self.secrets)?;
        let (launch, egress) = self.launch(spec, &env)?;
        let supervisor = self
            .config
            .supervisor_program()
            .map_err(ProcessError::Setup)?;
        let (id, paths) = self.create_instance_dir(&spec.name)?;
        match crate::secret_files::write(&paths, &spec.secret_files, &secret_values) {
            Ok(file_env) => env.extend(file_env),
            Err(e) => {
                self.discard(&id, &paths).await;
                return Err(e.into());
            }
        }
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
            egress,
            persistent_volumes: Vec::new(),
            launch,
        };
        let mut created = Vec::new();
        let started = match self.prepare(spec, &paths, meta, &mut created).await {
            Ok(()) => {
                self.spawn_supervisor(&id, &paths, &supervisor, &Handoff { env })
                    .await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            self.discard(&id, &paths).await;
            self.remove_created(&id, &created).await;
            return Err(e.into());
        }
        tracing::debug!(%id, "started");
        Ok(id)
    }

    /// Fills the new instance directory: its volumes (persistent ones created when missing,
    /// under the volume lock so that no removal takes them away before `meta.json` names
    /// them), then `meta.json` with the mounts, then the empty log.
    async fn prepare(
        &self,
        spec: &McpServer,
        paths: &InstancePaths,
        mut meta: Meta,
        created: &mut Vec<String>,
    ) -> Result<(), ProcessError> {
        let store = VolumeStore::new(self.state_dir);
        let _lock = if spec.volumes.iter().any(|v| v.persistent) {
            Some(store.lock(false).await?)
        } else {
            None
        };
        let (mounts, persistent) = store.prepare(spec, paths, created)?;
        meta.persistent_volumes = persistent;
        if !mounts.is_empty() {
            meta.launch
                .sandbox
                .get_or_insert_with(Sandbox::default)
                .mounts = mounts;
        }
        write_json(&paths.meta(), &meta).map_err(ProcessError::io("writing", &paths.meta()))?;
        std::fs::File::create(paths.logs())
            .map(drop)
            .map_err(ProcessError::io("creating", &paths.logs()))
    }

    /// Removes the persistent volumes a failed start created, unless another instance
    /// mounts one by now.
    async fn remove_created(&self, id: &InstanceId, created: &[String]) {
        if created.is_empty() {
            return;
        }
        let store = VolumeStore::new(self.state_dir);
        let _lock = match store.lock(true).await {
            Ok(lock) => lock,
            Err(e) => {
                tracing::warn!(%id, "cleaning up the volumes of a failed start: {e}");
                return;
            }
        };
        for name in created {
            match store.remove(name) {
                Ok(())
                | Err(ProcessError::VolumeInUse { .. } | ProcessError::VolumeNotFound(_)) => {}
                Err(e) => {
                    tracing::warn!(%id, "cleaning up volume {name} after a failed start: {e}");
                }
            }
        }
    }

    /// Ends whatever a failed start left running and deletes its directory (secret files
    /// included).
    async fn discard(&self, id: &InstanceId, paths: &InstancePaths) {
        if let Err(cleanup) = self.kill_and_remove(paths, Duration::ZERO).await {
            tracing::warn!(%id, "cleaning up after a failed start: {cleanup}");
        }
    }

    /// Stops the instance at `paths`: serialized with other stops of it, the grace period
    /// handed to the supervisor, then everything still running ended and the directory deleted.
    pub(crate) async fn stop(
        &self,
        id: &InstanceId,
        paths: &InstancePaths,
        grace: Duration,
    ) -> Result<()> {
        let _lock = Self::lock_stop(id, paths, grace + SUPERVISOR_MARGIN + KILL_WAIT * 2).await?;
        // A stop that held the lock before us may have removed the instance.
        if !paths.meta().exists() {
            return Err(OrchestratorError::not_found(id.as_str()));
        }
        let request = StopRequest {
            grace_ms: u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        };
        write_json(&paths.stop_request(), &request)
            .map_err(ProcessError::io("writing", &paths.stop_request()))?;
        self.kill_and_remove(paths, grace).await?;
        tracing::debug!(%id, "stopped");
        Ok(())
    }

    /// The environment the server gets: the inherited variables, then the spec's.
    fn server_env(&self, spec: &McpServer) -> Result<Vec<(String, String)>> {
        let resolved = resolve_env(&spec.env, self.secrets)?;
        let mut env: Vec<(String, String)> = self
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

    /// Builds what the supervisor will run (its mounts are added once the instance directory
    /// exists) and the effective egress policy, refusing specs this backend cannot honour.
    fn launch(&self, spec: &McpServer, env: &[(String, String)]) -> Result<(Launch, Egress)> {
        if spec.gpu.is_some() {
            return Err(not_supported("GPUs"));
        }
        let egress = spec.effective_egress(&self.config.default_egress);
        let isolate_network = crate::egress::isolates_network(spec, &egress)?;
        VolumeStore::new(self.state_dir).check_mount_paths(spec)?;
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
        let config = &self.config;
        let launch = Launch {
            program,
            args: rest.iter().chain(&spec.args).cloned().collect(),
            cwd,
            transport: spec.transport,
            restart_policy: spec.restart_policy,
            memory_limit_bytes,
            backoff_initial_ms: config.restart_backoff_initial_ms,
            backoff_max_ms: config.restart_backoff_max_ms,
            log_stdio_traffic: config.log_stdio_traffic,
            log_max_bytes: config.log_max_bytes,
            log_max_files: config.log_max_files,
            sandbox: isolate_network.then(|| Sandbox {
                isolate_network,
                mounts: Vec::new(),
            }),
        };
        Ok((launch, egress))
    }

    /// Creates a fresh instance directory with a unique id (`create_dir` is atomic, so
    /// concurrent starters never share one).
    fn create_instance_dir(
        &self,
        server: &str,
    ) -> Result<(InstanceId, InstancePaths), ProcessError> {
        let root = self.state_dir.join(INSTANCES);
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
        let config = &self.config;
        let payload = serde_json::to_vec(handoff).map_err(|e| ProcessError::SupervisorFailed {
            id: id.to_string(),
            message: format!("encoding the environment: {e}"),
        })?;
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
        // The handoff first: the supervisor waits for it, and recording its identity meanwhile
        // takes the write of `supervisor.json` off the path to the server's launch.
        if let Some(mut stdin) = child.stdin.take() {
            // A supervisor that died already shows up as EOF below, with its log.
            let _ = stdin.write_all(&payload).await;
            drop(stdin);
        }
        if let Some(identity) = identity
            && let Err(e) = write_json(&paths.supervisor(), &identity)
        {
            // Unrecorded, it could not be stopped later: its stop handling (SIGTERM) ends the
            // server it may have launched already.
            let _ = signal(&identity, Signal::TERM, "the supervisor");
            return Err(ProcessError::io("writing", &paths.supervisor())(e));
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
                if let Some(refusal) = Refusal::from_line(&line) {
                    return Err(ProcessError::Refused(refusal));
                }
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
        let supervisor = read_supervisor(paths)?;
        if let Some(sup) = supervisor.filter(ProcIdentity::is_alive) {
            signal(&sup, Signal::TERM, "the supervisor")?;
            if !wait_until(|| !sup.is_alive(), grace + SUPERVISOR_MARGIN).await {
                tracing::warn!(pid = sup.pid, "supervisor ignored the stop; killing it");
                // Its descendants (a subreaper's: daemons included) would escape to init once
                // it is gone, so they are taken down with it.
                let tree: Vec<ProcIdentity> = descendants(sup.pid)
                    .into_iter()
                    .filter(|d| !d.dead)
                    .map(|d| d.identity)
                    .collect();
                signal(&sup, Signal::KILL, "the supervisor")?;
                for p in &tree {
                    signal(p, Signal::KILL, "a process of the server")?;
                }
                wait_until(
                    || !sup.is_alive() && tree.iter().all(|p| !p.is_alive()),
                    KILL_WAIT,
                )
                .await;
            }
        }
        let state: Option<State> = match read_json(&paths.state()) {
            Ok(state) => state,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                // The supervisor (ended above) took its server down with it; with no
                // supervisor the server cannot be identified.
                tracing::warn!(
                    "{} is unreadable ({e}); only the supervisor's processes were ended",
                    paths.state().display()
                );
                None
            }
            Err(e) => return Err(ProcessError::io("reading", &paths.state())(e)),
        };
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
        let trash = self.state_dir.join(TRASH);
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
        // The server may have left unwritable directories in its per-instance volumes.
        remove_tree(&target)
    }

    /// Takes the per-instance stop lock (flock), polling so the runtime is never blocked.
    async fn lock_stop(
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
