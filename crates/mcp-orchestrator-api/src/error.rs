//! The error every backend returns.

use std::time::Duration;

use mcp_types::{InstanceStatus, ValidationErrors};

/// A boxed source error from an engine or library.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result alias for orchestrator operations.
pub type Result<T, E = OrchestratorError> = std::result::Result<T, E>;

/// What went wrong in an orchestrator operation. Backends map their engine errors onto these
/// variants in one place each; callers branch on the variant, never on message text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// No instance (or object) with that id.
    #[error("instance {id:?} not found")]
    NotFound {
        /// The id that was asked for.
        id: String,
    },
    /// Something with that name already exists.
    #[error("{what} already exists")]
    AlreadyExists {
        /// What collided (e.g. `container "mcp-time-x"`).
        what: String,
    },
    /// The spec or options are invalid; nothing was started.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ValidationErrors),
    /// A request argument is invalid (a malformed continue token, a bad log option).
    #[error("invalid {what}: {message}")]
    InvalidArgument {
        /// The argument.
        what: &'static str,
        /// Why.
        message: String,
    },
    /// A continue token is too old to resume from (Kubernetes 410 Gone); start the list again.
    #[error("continue token expired: {message}; restart the listing without a token")]
    ContinueExpired {
        /// The engine's explanation.
        message: String,
    },
    /// The engine cannot be reached or is overloaded; retrying later may work.
    #[error("{backend} is unavailable: {message}")]
    Unavailable {
        /// Backend name.
        backend: &'static str,
        /// What was tried (e.g. the socket path) and what happened.
        message: String,
        /// The underlying error.
        #[source]
        source: Option<BoxError>,
    },
    /// An operation did not finish in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long it waited.
        after: Duration,
    },
    /// The engine refused the credentials or the action.
    #[error("permission denied: {message}")]
    PermissionDenied {
        /// The engine's explanation.
        message: String,
    },
    /// The backend cannot do this.
    #[error("{backend} does not support {what}")]
    NotSupported {
        /// Backend name.
        backend: &'static str,
        /// The unsupported feature.
        what: String,
    },
    /// The image is missing and could not be pulled.
    #[error("image {image:?} is not available: {message}")]
    ImageNotAvailable {
        /// The image reference.
        image: String,
        /// Why (pull error, registry unreachable).
        message: String,
    },
    /// The instance finished while the caller waited for it to run.
    #[error("instance {id:?} exited while waiting for it: phase {}, reason {}, exit code {}",
        .status.phase,
        .status.reason.as_deref().unwrap_or("-"),
        .status.exit_code.map_or_else(|| "-".to_owned(), |c| c.to_string()))]
    Exited {
        /// The instance.
        id: String,
        /// Its final status.
        status: Box<InstanceStatus>,
    },
    /// Any other engine error.
    #[error("{backend} error: {source}")]
    Backend {
        /// Backend name.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// A policy of the place the instance would run in refused it (Kubernetes admission: Pod
    /// Security, a ResourceQuota, a LimitRange, a missing ServiceAccount); nothing was started.
    /// Unlike [`OrchestratorError::PermissionDenied`] the caller's credentials are fine: the
    /// spec, the backend's configuration or the policy must change, as `change` says.
    #[error("refused by the {policy} policy: {message} ({change})")]
    #[non_exhaustive]
    PolicyRefused {
        /// The policy (`PodSecurity`, `ResourceQuota`, `LimitRange`, `ServiceAccount`).
        policy: &'static str,
        /// The engine's own message, verbatim.
        message: String,
        /// What to change for the request to be accepted.
        change: &'static str,
    },
    /// The object is still used by instances, so the request was refused and nothing changed
    /// (removing a persistent volume that an instance mounts). Stop the instances named in
    /// `users`, then retry.
    #[error("{what} is in use by {}: stop them first", .users.join(", "))]
    InUse {
        /// What was to be changed (`volume "mcp-cache-data"`).
        what: String,
        /// The instances using it, ordered by id.
        users: Vec<String>,
    },
}

impl OrchestratorError {
    /// A [`OrchestratorError::NotFound`] for an id.
    pub fn not_found(id: impl Into<String>) -> Self {
        Self::NotFound { id: id.into() }
    }

    /// A [`OrchestratorError::Backend`] from any error.
    pub fn backend(backend: &'static str, source: impl Into<BoxError>) -> Self {
        Self::Backend {
            backend,
            source: source.into(),
        }
    }

    /// A [`OrchestratorError::Unavailable`] with a message and optional source.
    pub fn unavailable(
        backend: &'static str,
        message: impl Into<String>,
        source: Option<BoxError>,
    ) -> Self {
        Self::Unavailable {
            backend,
            message: message.into(),
            source,
        }
    }

    /// A [`OrchestratorError::PolicyRefused`].
    pub fn policy_refused(
        policy: &'static str,
        message: impl Into<String>,
        change: &'static str,
    ) -> Self {
        Self::PolicyRefused {
            policy,
            message: message.into(),
            change,
        }
    }

    /// Whether this is [`OrchestratorError::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound { .. })
    }

    /// Whether retrying the same call later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unavailable { .. } | Self::Timeout { .. })
    }
}
