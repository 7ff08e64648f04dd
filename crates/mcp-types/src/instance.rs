//! Running instances and their status.

use std::collections::BTreeMap;
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Identifies one running (or finished) instance: the container name, pod name or process
/// instance name, always a DNS-1123 label made by [`crate::new_instance_name`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct InstanceId(String);

impl InstanceId {
    /// Wraps an id.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The id text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for InstanceId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for InstanceId {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl AsRef<str> for InstanceId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// Lifecycle phase of an instance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Accepted, not yet running (scheduling, pulling, creating, restarting after backoff).
    Pending,
    /// The server process is running.
    Running,
    /// Stop requested; terminating.
    Stopping,
    /// Stopped by request, or created and never started.
    Stopped,
    /// Exited with code 0 and will not restart.
    Succeeded,
    /// Exited non-zero (or was killed) and will not restart. A server that will be restarted
    /// (a crash loop) is Pending with reason `CrashLoopBackOff` instead.
    Failed,
    /// The backend cannot tell.
    #[default]
    Unknown,
}

impl Phase {
    /// The spelling used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "Pending",
            Self::Running => "Running",
            Self::Stopping => "Stopping",
            Self::Stopped => "Stopped",
            Self::Succeeded => "Succeeded",
            Self::Failed => "Failed",
            Self::Unknown => "Unknown",
        }
    }

    /// Whether the instance has finished for good (no restart will follow).
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Stopped | Self::Succeeded | Self::Failed)
    }

    /// All phases, for parsing and tables.
    pub const ALL: [Phase; 7] = [
        Self::Pending,
        Self::Running,
        Self::Stopping,
        Self::Stopped,
        Self::Succeeded,
        Self::Failed,
        Self::Unknown,
    ];
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Phase {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| format!("unknown phase {s:?}; expected one of Pending, Running, Stopping, Stopped, Succeeded, Failed, Unknown"))
    }
}

/// Machine-readable reasons shared by the backends (Kubernetes spelling where one exists).
pub mod reasons {
    /// Image or container being prepared.
    pub const CONTAINER_CREATING: &str = "ContainerCreating";
    /// The image could not be pulled.
    pub const ERR_IMAGE_PULL: &str = "ErrImagePull";
    /// Waiting before retrying a pull.
    pub const IMAGE_PULL_BACKOFF: &str = "ImagePullBackOff";
    /// Restarting repeatedly.
    pub const CRASH_LOOP_BACKOFF: &str = "CrashLoopBackOff";
    /// Killed for exceeding its memory limit.
    pub const OOM_KILLED: &str = "OOMKilled";
    /// No node can run it.
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// Exited 0.
    pub const COMPLETED: &str = "Completed";
    /// Exited non-zero.
    pub const ERROR: &str = "Error";
    /// Stop requested, terminating.
    pub const TERMINATING: &str = "Terminating";
    /// Paused by the engine.
    pub const PAUSED: &str = "Paused";
    /// Being restarted by the engine.
    pub const RESTARTING: &str = "Restarting";
    /// Health check failing.
    pub const UNHEALTHY: &str = "Unhealthy";
    /// The process supervising the server died and the server was left alone.
    pub const ORPHANED: &str = "Orphaned";
    /// The container's configuration cannot be built (Kubernetes: a referenced Secret or
    /// ConfigMap, or a key in it, is missing).
    pub const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
    /// The runtime refused to create the container.
    pub const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
    /// The image reference cannot be parsed.
    pub const INVALID_IMAGE_NAME: &str = "InvalidImageName";
    /// The image is absent and the pull policy forbids pulling it.
    pub const ERR_IMAGE_NEVER_PULL: &str = "ErrImageNeverPull";

    /// Waiting reasons that last until something outside the instance changes (an image is
    /// pushed, a Secret created, the spec fixed): the Kubernetes kubelet's image and container
    /// creation errors (`pkg/kubelet/images`, `pkg/kubelet/kuberuntime`) and a crash loop.
    pub const NOT_COMING_UP: &[&str] = &[
        CRASH_LOOP_BACKOFF,
        ERR_IMAGE_PULL,
        IMAGE_PULL_BACKOFF,
        INVALID_IMAGE_NAME,
        ERR_IMAGE_NEVER_PULL,
        "ImageInspectError",
        "RegistryUnavailable",
        "SignatureValidationFailed",
        CREATE_CONTAINER_CONFIG_ERROR,
        CREATE_CONTAINER_ERROR,
        "PreCreateHookError",
        "PreStartHookError",
        "PostStartHookError",
        "RunContainerError",
    ];
}

/// Observed state of an instance.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceStatus {
    /// Lifecycle phase.
    pub phase: Phase,
    /// Short machine-readable reason (see [`reasons`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// How many times the server was restarted.
    #[serde(default)]
    pub restart_count: u32,
    /// Exit code of the last run, once it has exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Exit code of the previous run while the server runs again after a restart (`status`
    /// shows it as LAST EXIT); `None` before the first restart, or where the engine does not
    /// keep it (Docker resets its exit code when it restarts a container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit_code: Option<i32>,
    /// When the current (or last) run started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When the last run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The effective egress policy and what enforces it, where the backend reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<crate::egress::EgressPosture>,
}

impl InstanceStatus {
    /// Whether the instance is stuck before running (crash-looping, unable to get its image or
    /// to create its container: [`reasons::NOT_COMING_UP`]): not terminal, but waiting for it to
    /// run is pointless until something changes.
    pub fn is_not_coming_up(&self) -> bool {
        self.reason
            .as_deref()
            .is_some_and(|r| reasons::NOT_COMING_UP.contains(&r))
    }

    /// A status with only a phase.
    pub fn phase(phase: Phase) -> Self {
        Self {
            phase,
            ..Self::default()
        }
    }

    /// Sets the reason.
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Sets the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }
}

/// One instance as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    /// Its id.
    pub id: InstanceId,
    /// The server name it runs.
    pub server: String,
    /// All its labels (including the `mcpctl.io/*` ones).
    pub labels: BTreeMap<String, String>,
    /// When it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Its status.
    pub status: InstanceStatus,
    /// Where an HTTP transport can be reached (`http://127.0.0.1:PORT`, a Service DNS name), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_coming_up_reasons() {
        for r in [
            reasons::CRASH_LOOP_BACKOFF,
            reasons::ERR_IMAGE_PULL,
            reasons::IMAGE_PULL_BACKOFF,
            reasons::CREATE_CONTAINER_CONFIG_ERROR,
            reasons::CREATE_CONTAINER_ERROR,
            reasons::INVALID_IMAGE_NAME,
            reasons::ERR_IMAGE_NEVER_PULL,
        ] {
            assert!(
                InstanceStatus::phase(Phase::Pending)
                    .with_reason(r)
                    .is_not_coming_up(),
                "{r}"
            );
        }
        assert!(
            !InstanceStatus::phase(Phase::Pending)
                .with_reason(reasons::CONTAINER_CREATING)
                .is_not_coming_up()
        );
        // Waiting for an init container is progress, not a dead end.
        assert!(
            !InstanceStatus::phase(Phase::Pending)
                .with_reason("PodInitializing")
                .is_not_coming_up()
        );
        assert!(!InstanceStatus::phase(Phase::Pending).is_not_coming_up());
    }
}
