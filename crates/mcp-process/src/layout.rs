//! The on-disk layout shared by the orchestrator and the supervisor: one directory per
//! instance under `<state dir>/instances/`, the JSON documents in it, and atomic writes.
//!
//! ```text
//! <state dir>/
//!   instances/<id>/
//!     meta.json        what to run and how it is labelled (written once, before the supervisor)
//!     supervisor.json  the supervisor's pid + start time (written by the starter right after spawn)
//!     state.json       status, restart count, the server's pid + start time (supervisor only)
//!     logs.jsonl       one JSON object per output line: ts, stream, run, text (supervisor only)
//!     logs.jsonl.1..N  rotated logs, newest first (`logMaxBytes` each, `logMaxFiles` kept)
//!     supervisor.log   the supervisor's own diagnostics (never environment values)
//!     stop.json        a stop request's grace period (written by a stopper before SIGTERM)
//!     stop.lock        flock that serializes stoppers
//!     stdio.sock       the stdio bridge of a stdio server (see `attach_stdio`)
//!     volumes/<name>/  the per-instance volumes (deleted with the instance)
//!     sandbox/         the supervisor's staging directory for its mount namespace
//!     secrets/<i>-<name>  secret file i, mode 0400 (written once, before the supervisor)
//!   volumes/<mcp-server-volume>/   persistent volumes, kept across instances
//!     volume.json      server, spec volume, size, createdAt
//!     data/            what the server sees at the mount path
//!   volumes.lock       flock: shared while a start mounts volumes, exclusive for a removal
//!   trash/             instance directories and volumes being deleted (renamed here first)
//! ```
//!
//! Every document except the append-only log is replaced with write-to-temp + rename
//! (`crate::files`), so a reader sees the old or the new version, never a torn one; each has a
//! single writer.

use std::collections::BTreeMap;
use std::path::PathBuf;

use mcp_types::{
    Egress, InstanceId, InstanceStatus, LogStream, RestartPolicy, Timestamp, Transport,
};
use serde::{Deserialize, Serialize};

use crate::procfs::ProcIdentity;
use crate::sandbox::Sandbox;

/// Subdirectory of the state dir holding one directory per instance.
pub(crate) const INSTANCES: &str = "instances";
/// Subdirectory of the state dir where instance directories are renamed before deletion.
pub(crate) const TRASH: &str = "trash";
/// Subdirectory of the state dir holding the persistent volumes.
pub(crate) const VOLUMES: &str = "volumes";
/// Lock file of the persistent volumes, in the state dir.
pub(crate) const VOLUMES_LOCK: &str = "volumes.lock";

/// The paths inside one instance directory.
#[derive(Debug, Clone)]
pub(crate) struct InstancePaths {
    pub(crate) dir: PathBuf,
}

impl InstancePaths {
    pub(crate) fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    pub(crate) fn meta(&self) -> PathBuf {
        self.dir.join("meta.json")
    }
    pub(crate) fn supervisor(&self) -> PathBuf {
        self.dir.join("supervisor.json")
    }
    pub(crate) fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
    pub(crate) fn logs(&self) -> PathBuf {
        self.dir.join(LOG_FILE)
    }
    /// The `n`th rotated log (1 is the newest).
    pub(crate) fn rotated_log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("{LOG_FILE}.{n}"))
    }
    /// The rotated logs that exist, oldest first.
    pub(crate) fn rotated_logs(&self) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = (1..=crate::config::MAX_LOG_FILES)
            .map(|n| self.rotated_log(n))
            .take_while(|p| p.exists())
            .collect();
        found.reverse();
        found
    }
    pub(crate) fn supervisor_log(&self) -> PathBuf {
        self.dir.join("supervisor.log")
    }
    pub(crate) fn stop_request(&self) -> PathBuf {
        self.dir.join("stop.json")
    }
    pub(crate) fn stop_lock(&self) -> PathBuf {
        self.dir.join("stop.lock")
    }
    pub(crate) fn socket(&self) -> PathBuf {
        self.dir.join(SOCKET_FILE)
    }
    /// The per-instance volume `name` (the spec's volume name).
    pub(crate) fn volume(&self, name: &str) -> PathBuf {
        self.dir.join(VOLUMES).join(name)
    }
    /// The supervisor's staging directory for the mount namespace.
    pub(crate) fn sandbox_work(&self) -> PathBuf {
        self.dir.join("sandbox")
    }
    /// The directory of the instance's secret files (`secret_files.rs`).
    pub(crate) fn secrets_dir(&self) -> PathBuf {
        self.dir.join("secrets")
    }
}

/// File name of the log inside an instance directory.
pub(crate) const LOG_FILE: &str = "logs.jsonl";
/// File name of the stdio bridge socket inside an instance directory.
pub(crate) const SOCKET_FILE: &str = "stdio.sock";

/// What the supervisor runs, fixed at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Launch {
    /// Absolute path of the program (resolved against PATH and the working directory at start).
    pub(crate) program: PathBuf,
    /// `command[1..]` followed by `args`.
    pub(crate) args: Vec<String>,
    /// Working directory of the server.
    pub(crate) cwd: PathBuf,
    /// MCP transport; stdio servers get the stdio bridge.
    pub(crate) transport: Transport,
    /// What to do when the server exits.
    pub(crate) restart_policy: RestartPolicy,
    /// `RLIMIT_DATA` applied to the supervisor (and so inherited by the server), in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) memory_limit_bytes: Option<u64>,
    /// First restart delay.
    pub(crate) backoff_initial_ms: u64,
    /// Longest restart delay.
    pub(crate) backoff_max_ms: u64,
    /// Log a stdio server's stdout also while a client is attached (protocol traffic).
    #[serde(default)]
    pub(crate) log_stdio_traffic: bool,
    /// Size at which `logs.jsonl` is rotated.
    #[serde(default = "default_log_max_bytes")]
    pub(crate) log_max_bytes: u64,
    /// Rotated log files kept.
    #[serde(default = "default_log_max_files")]
    pub(crate) log_max_files: u32,
    /// The namespaces the supervisor enters before it starts the server (volumes,
    /// `egress: none`); none when the server runs in the host's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) sandbox: Option<Sandbox>,
}

fn default_log_max_bytes() -> u64 {
    crate::ProcessConfig::default().log_max_bytes
}

fn default_log_max_files() -> u32 {
    crate::ProcessConfig::default().log_max_files
}

/// How the supervisor bounds the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LogLimits {
    /// Rotate before the current file would grow past this.
    pub(crate) max_bytes: u64,
    /// Rotated files kept (at least 1).
    pub(crate) max_files: u32,
}

impl Launch {
    pub(crate) fn log_limits(&self) -> LogLimits {
        LogLimits {
            max_bytes: self.log_max_bytes,
            max_files: self.log_max_files.max(1),
        }
    }
}

/// Everything known about an instance at start (`meta.json`). Environment values are never
/// written anywhere: only their names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Meta {
    pub(crate) id: InstanceId,
    pub(crate) server: String,
    pub(crate) labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) created_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) endpoint: Option<String>,
    /// The names (not values) of the environment variables given to the server.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) env_names: Vec<String>,
    /// The effective egress policy (the spec's or `defaultEgress`); records written before
    /// the field existed ran on the host network, which is `open`.
    #[serde(default)]
    pub(crate) egress: Egress,
    /// The persistent volumes the instance mounts (their backend names).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) persistent_volumes: Vec<String>,
    pub(crate) launch: Launch,
}

/// What the supervisor reports (`state.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct State {
    pub(crate) status: InstanceStatus,
    /// The current run (0 for the first, +1 per restart); log lines carry it.
    pub(crate) run: u32,
    /// The running server process, which leads its own process group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server: Option<ProcIdentity>,
    pub(crate) updated_at: Option<Timestamp>,
}

/// A stop request (`stop.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct StopRequest {
    pub(crate) grace_ms: u64,
}

/// What the starter sends the supervisor on its stdin, then closes: the resolved environment
/// of the server. Kept off the disk and out of the supervisor's own environment; no `Debug`, so
/// the values cannot end up in a log by accident.
#[derive(Default, Serialize, Deserialize)]
pub(crate) struct Handoff {
    pub(crate) env: Vec<(String, String)>,
}

/// One line of `logs.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LogRecord {
    pub(crate) ts: Timestamp,
    pub(crate) stream: LogStream,
    pub(crate) run: u32,
    pub(crate) text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_record_format() {
        let rec = LogRecord {
            ts: "2024-01-02T03:04:05.123456789Z".parse().unwrap(),
            stream: LogStream::Stderr,
            run: 2,
            text: "hello \"world\"".into(),
        };
        let line = serde_json::to_string(&rec).unwrap();
        assert_eq!(
            line,
            r#"{"ts":"2024-01-02T03:04:05.123456789Z","stream":"stderr","run":2,"text":"hello \"world\""}"#
        );
        assert_eq!(serde_json::from_str::<LogRecord>(&line).unwrap(), rec);
    }
}
