//! What an instance's state directory says about it: the documents read in an order that
//! cannot mistake a supervisor that recorded its final state and exited for a dead one, the
//! status reported (the supervisor's record, or `Orphaned` when it is gone, or
//! `StateUnreadable` when `state.json` is damaged), the processes recorded, and the listing of
//! every instance. Every status carries the egress posture recorded at start.
//!
//! A damaged document never hides an instance: an unreadable `state.json` is reported as such
//! (the supervisor rewrites it at its next change), and an unreadable `supervisor.json` is
//! replaced by the process whose working directory is the instance directory (the supervisor).

/// Reason of an instance whose `state.json` cannot be read.
pub const STATE_UNREADABLE: &str = "StateUnreadable";

use mcp_orchestrator_api::Result;
use mcp_orchestrator_api::continuation::{page_after, parse_after_token};
use mcp_types::{
    Instance, InstanceFilters, InstanceStatus, Page, Phase, Timestamp, labels, reasons,
};
use std::path::Path;

use crate::config::ProcessConfig;
use crate::egress::posture;
use crate::error::ProcessError;
use crate::files::read_json;
use crate::layout::{INSTANCES, InstancePaths, Meta, State};
use crate::procfs::ProcIdentity;

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
pub(crate) struct Observed {
    pub(crate) meta: Meta,
    pub(crate) status: InstanceStatus,
    pub(crate) supervisor: Option<ProcIdentity>,
    pub(crate) server: Option<ProcIdentity>,
}

impl Observed {
    /// The recorded processes.
    pub(crate) fn processes(&self) -> InstanceProcesses {
        InstanceProcesses {
            supervisor: self.supervisor,
            server: self.server,
        }
    }
}

/// Reads one instance's documents and decides its status, checking the supervisor's liveness
/// *before* reading the state so that a supervisor that records its final state and exits is
/// never mistaken for a dead one.
pub(crate) fn observe(
    paths: &InstancePaths,
    config: &ProcessConfig,
) -> Result<Observed, ProcessError> {
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
    let supervisor = read_supervisor(paths)?;
    let supervisor_alive = supervisor.is_some_and(|s| s.is_alive());
    let state = match read_json::<State>(&paths.state()) {
        Ok(state) => state,
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            let mut status = unreadable_state(paths, supervisor, supervisor_alive, &e);
            status.egress = Some(posture(&meta.egress));
            return Ok(Observed {
                status,
                meta,
                supervisor,
                server: None,
            });
        }
        Err(e) => return Err(ProcessError::io("reading", &paths.state())(e)),
    };
    let server = state.as_ref().and_then(|s| s.server);
    let young = Timestamp::now().duration_since(meta.created_at) < config.startup_window();
    let mut status = match state {
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
    // The egress posture is fixed at start: the meta's, whatever the supervisor recorded.
    status.egress = Some(posture(&meta.egress));
    Ok(Observed {
        meta,
        status,
        supervisor,
        server,
    })
}

/// The supervisor recorded in `supervisor.json`; when that file is damaged, the live process
/// whose working directory is the instance directory (the supervisor changes into it).
pub(crate) fn read_supervisor(paths: &InstancePaths) -> Result<Option<ProcIdentity>, ProcessError> {
    match read_json::<ProcIdentity>(&paths.supervisor()) {
        Ok(found) => Ok(found),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            tracing::warn!(
                "{} is unreadable ({e}); looking for the supervisor by its working directory",
                paths.supervisor().display()
            );
            Ok(crate::procfs::with_cwd(&paths.dir).into_iter().next())
        }
        Err(e) => Err(ProcessError::io("reading", &paths.supervisor())(e)),
    }
}

/// The status of an instance whose `state.json` cannot be parsed.
fn unreadable_state(
    paths: &InstancePaths,
    supervisor: Option<ProcIdentity>,
    supervisor_alive: bool,
    error: &std::io::Error,
) -> InstanceStatus {
    let file = paths.state();
    match supervisor.filter(|_| supervisor_alive) {
        Some(sup) => InstanceStatus::phase(Phase::Unknown)
            .with_reason(STATE_UNREADABLE)
            .with_message(format!(
                "{} cannot be read ({error}); the supervisor (pid {}) still runs and rewrites \
                 it at its next change; stop the instance to end it",
                file.display(),
                sup.pid
            )),
        None => InstanceStatus::phase(Phase::Unknown)
            .with_reason(STATE_UNREADABLE)
            .with_message(format!(
                "{} cannot be read ({error}) and the supervisor is gone; stop the instance to \
                 remove it",
                file.display()
            )),
    }
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

/// Every managed instance under `state_dir` that `filters` select, one page of them.
pub(crate) fn list(
    state_dir: &Path,
    config: &ProcessConfig,
    filters: &InstanceFilters,
) -> Result<Page<Instance>> {
    mcp_orchestrator_api::validate_filters(filters)?;
    let after = filters
        .continue_token
        .as_deref()
        .map(parse_after_token)
        .transpose()?;
    let root = state_dir.join(INSTANCES);
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
        match observe(&paths, config) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::files::write_json;
    use crate::layout::Launch;
    use mcp_types::{InstanceId, Transport};

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
            egress: mcp_types::Egress::Open,
            persistent_volumes: Vec::new(),
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
                log_max_bytes: 4096,
                log_max_files: 1,
                sandbox: None,
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
        assert_eq!(
            st.egress.map(|p| (p.policy, p.metadata_blocked)),
            Some((mcp_types::Egress::Open, false))
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
        // A damaged state file is reported, naming the file, not an error.
        std::fs::write(paths.state(), b"{\"status\": {").unwrap();
        let st = observe(&paths, &config).unwrap().status;
        assert_eq!(
            (st.phase, st.reason.as_deref()),
            (Phase::Unknown, Some(STATE_UNREADABLE))
        );
        assert!(st.message.unwrap().contains("state.json"));
        // A damaged supervisor.json with no process in the directory: no supervisor.
        std::fs::write(paths.supervisor(), b"[").unwrap();
        assert_eq!(read_supervisor(&paths).unwrap(), None);
    }
}
