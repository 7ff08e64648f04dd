//! The backend's private error and the one function that maps it onto `OrchestratorError`.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_orchestrator_api::OrchestratorError;
use mcp_types::{InstanceId, ValidationErrors};

use crate::sandbox::{Refusal, RefusalKind};

/// Backend name used in shared errors.
pub(crate) const BACKEND: &str = "process";

/// What went wrong inside the process backend.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProcessError {
    /// No instance directory with that id.
    #[error("instance {0:?} not found")]
    NotFound(String),
    /// A file-system operation on the state directory failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The supervisor program cannot be found, or the state directory cannot be determined.
    #[error("{0}")]
    Setup(String),
    /// The supervisor did not come up.
    #[error("the supervisor of {id} failed to start: {message}")]
    SupervisorFailed { id: String, message: String },
    /// Something did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout { what: String, after: Duration },
    /// Signalling a process was refused.
    #[error("cannot signal {what}: {source}")]
    Signal {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The supervisor could not set up the server's namespaces.
    #[error("{0}")]
    Refused(Refusal),
    /// No persistent volume of that name.
    #[error("volume {0:?} not found")]
    VolumeNotFound(String),
    /// A persistent volume is mounted by these instances.
    #[error("volume {name:?} is in use")]
    VolumeInUse {
        name: String,
        users: Vec<InstanceId>,
    },
    /// A directory of that name belongs to another server's volume (two names hashed alike).
    #[error("volume {name:?} belongs to server {owner:?}, volume {volume:?}")]
    VolumeTaken {
        name: String,
        owner: String,
        volume: String,
    },
}

impl ProcessError {
    /// An IO error with what was being done and on which path.
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| Self::Io { what, path, source }
    }
}

impl From<ProcessError> for OrchestratorError {
    fn from(e: ProcessError) -> Self {
        to_shared(e)
    }
}

/// The single mapping from backend errors to the shared error.
pub(crate) fn to_shared(e: ProcessError) -> OrchestratorError {
    match e {
        ProcessError::NotFound(id) => OrchestratorError::not_found(id),
        ProcessError::Io { ref source, .. } | ProcessError::Signal { ref source, .. }
            if source.kind() == io::ErrorKind::PermissionDenied =>
        {
            OrchestratorError::PermissionDenied {
                message: e.to_string(),
            }
        }
        ProcessError::Setup(message) => OrchestratorError::unavailable(BACKEND, message, None),
        ProcessError::SupervisorFailed { .. } => {
            OrchestratorError::unavailable(BACKEND, e.to_string(), None)
        }
        ProcessError::Timeout { what, after } => OrchestratorError::Timeout { what, after },
        ProcessError::Io { .. } | ProcessError::Signal { .. } => {
            OrchestratorError::backend(BACKEND, e)
        }
        ProcessError::Refused(r) => match (r.kind, r.field) {
            (RefusalKind::Unsupported, _) => OrchestratorError::NotSupported {
                backend: BACKEND,
                what: r.message,
            },
            (RefusalKind::InvalidSpec, Some(field)) => {
                OrchestratorError::InvalidSpec(ValidationErrors::single(field, r.message))
            }
            (RefusalKind::InvalidSpec | RefusalKind::Failed, _) => {
                OrchestratorError::unavailable(BACKEND, r.message, None)
            }
        },
        ProcessError::VolumeNotFound(name) => {
            mcp_orchestrator_api::volumes::volume_not_found(&name)
        }
        ProcessError::VolumeInUse { name, users } => {
            mcp_orchestrator_api::volumes::in_use(&name, &users)
        }
        ProcessError::VolumeTaken { .. } => OrchestratorError::AlreadyExists {
            what: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert!(to_shared(ProcessError::NotFound("x".into())).is_not_found());
        let denied = ProcessError::io("read", Path::new("/x"))(io::Error::from(
            io::ErrorKind::PermissionDenied,
        ));
        assert!(matches!(
            to_shared(denied),
            OrchestratorError::PermissionDenied { .. }
        ));
        assert!(to_shared(ProcessError::Setup("no supervisor".into())).is_transient());
        let other = ProcessError::io("read", Path::new("/x"))(io::Error::other("boom"));
        assert!(matches!(
            to_shared(other),
            OrchestratorError::Backend { .. }
        ));
        let refusal = |kind, field: Option<&str>| {
            to_shared(ProcessError::Refused(Refusal {
                kind,
                field: field.map(str::to_owned),
                message: "m".into(),
            }))
        };
        assert!(matches!(
            refusal(RefusalKind::Unsupported, None),
            OrchestratorError::NotSupported { .. }
        ));
        let OrchestratorError::InvalidSpec(errors) =
            refusal(RefusalKind::InvalidSpec, Some("volumes[2].mountPath"))
        else {
            panic!("a refused mount path is an invalid spec");
        };
        assert!(errors.has_path("volumes[2].mountPath"), "{errors}");
        assert!(refusal(RefusalKind::Failed, None).is_transient());
        let users = vec![InstanceId::new("mcp-a-1")];
        let e = to_shared(ProcessError::VolumeInUse {
            name: "mcp-a-keep".into(),
            users,
        });
        assert!(
            matches!(&e, OrchestratorError::InUse { users, .. } if users == &["mcp-a-1"]),
            "{e:?}"
        );
        assert!(to_shared(ProcessError::VolumeNotFound("mcp-a-keep".into())).is_not_found());
    }
}
