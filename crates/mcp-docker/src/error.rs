//! The one place where bollard errors become [`OrchestratorError`]s.
//!
//! Callers say what they were working on ([`Target`]); the status code and the error kind
//! decide the variant. Nothing else in the crate inspects engine errors.

use std::fmt;

use bollard::errors::Error as BollardError;
use mcp_orchestrator_api::OrchestratorError;

/// Backend name used in errors.
pub(crate) const BACKEND: &str = "docker";

/// What a failed engine call was about.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target<'a> {
    /// The engine itself (connecting, negotiating the version).
    Engine,
    /// A managed container, by instance id.
    Container(&'a str),
    /// An image being looked up or pulled.
    Image(&'a str),
    /// A network, by name.
    Network(&'a str),
    /// A volume, by name.
    Volume(&'a str),
}

impl fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Engine => f.write_str("the engine"),
            Self::Container(id) => write!(f, "container {id:?}"),
            Self::Image(image) => write!(f, "image {image:?}"),
            Self::Network(name) => write!(f, "network {name:?}"),
            Self::Volume(name) => write!(f, "volume {name:?}"),
        }
    }
}

/// Maps a bollard error met while working on `target` against the engine at `endpoint`
/// (`unix:///var/run/docker.sock`, `tcp://host:2375`).
///
/// - 404 -> `NotFound` (a missing image -> `ImageNotAvailable` naming it)
/// - 409 -> `AlreadyExists`
/// - 401 / 403 -> `PermissionDenied`
/// - any failure to pull an image -> `ImageNotAvailable` naming it
/// - connection failures, timeouts and 503 -> `Unavailable` naming the endpoint
/// - everything else -> `Backend`
pub(crate) fn map_error(
    err: BollardError,
    target: Target<'_>,
    endpoint: &str,
) -> OrchestratorError {
    use BollardError as E;
    match err {
        E::DockerResponseServerError {
            status_code,
            message,
        } => match (status_code, target) {
            (_, Target::Image(image)) if status_code != 401 && status_code != 403 => {
                OrchestratorError::ImageNotAvailable {
                    image: image.to_owned(),
                    message,
                }
            }
            (404, Target::Container(id)) => OrchestratorError::not_found(id),
            (404, Target::Network(name) | Target::Volume(name)) => {
                OrchestratorError::not_found(name)
            }
            (409, _) => OrchestratorError::AlreadyExists {
                what: format!("{target} ({message})"),
            },
            (401 | 403, _) => OrchestratorError::PermissionDenied {
                message: format!("{target}: {message}"),
            },
            (503, _) => OrchestratorError::unavailable(
                BACKEND,
                format!("the Docker engine at {endpoint} is unavailable: {message}"),
                None,
            ),
            _ => OrchestratorError::backend(
                BACKEND,
                format!("{target}: engine answered {status_code}: {message}"),
            ),
        },
        E::DockerStreamError { error } => match target {
            Target::Image(image) => OrchestratorError::ImageNotAvailable {
                image: image.to_owned(),
                message: error,
            },
            _ => OrchestratorError::backend(BACKEND, format!("{target}: {error}")),
        },
        E::RequestTimeoutError => OrchestratorError::unavailable(
            BACKEND,
            format!("the Docker engine at {endpoint} did not answer in time ({target})"),
            Some(Box::new(err)),
        ),
        E::SocketNotFoundError(ref path) => OrchestratorError::unavailable(
            BACKEND,
            format!("cannot reach the Docker engine at {endpoint}: socket {path} does not exist"),
            Some(Box::new(err)),
        ),
        E::HyperLegacyError { .. }
        | E::HyperResponseError { .. }
        | E::IOError { .. }
        | E::UnsupportedURISchemeError { .. } => OrchestratorError::unavailable(
            BACKEND,
            format!("cannot reach the Docker engine at {endpoint}: {err}"),
            Some(Box::new(err)),
        ),
        other => OrchestratorError::backend(BACKEND, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    const EP: &str = "unix:///var/run/docker.sock";

    fn server(status_code: u16) -> BollardError {
        BollardError::DockerResponseServerError {
            status_code,
            message: "engine says no".into(),
        }
    }

    fn kind(e: &OrchestratorError) -> &'static str {
        match e {
            OrchestratorError::NotFound { .. } => "NotFound",
            OrchestratorError::AlreadyExists { .. } => "AlreadyExists",
            OrchestratorError::PermissionDenied { .. } => "PermissionDenied",
            OrchestratorError::Unavailable { .. } => "Unavailable",
            OrchestratorError::ImageNotAvailable { .. } => "ImageNotAvailable",
            OrchestratorError::Backend { .. } => "Backend",
            _ => "other",
        }
    }

    #[rstest]
    #[case(server(404), Target::Container("mcp-x-1"), "NotFound")]
    #[case(server(404), Target::Volume("v"), "NotFound")]
    #[case(server(404), Target::Image("img:1"), "ImageNotAvailable")]
    #[case(server(500), Target::Image("img:1"), "ImageNotAvailable")]
    #[case(server(403), Target::Image("img:1"), "PermissionDenied")]
    #[case(server(409), Target::Container("mcp-x-1"), "AlreadyExists")]
    #[case(server(409), Target::Network("n"), "AlreadyExists")]
    #[case(server(403), Target::Container("mcp-x-1"), "PermissionDenied")]
    #[case(server(401), Target::Engine, "PermissionDenied")]
    #[case(server(503), Target::Engine, "Unavailable")]
    #[case(server(500), Target::Container("mcp-x-1"), "Backend")]
    #[case(BollardError::DockerStreamError { error: "manifest unknown".into() }, Target::Image("img:1"), "ImageNotAvailable")]
    #[case(BollardError::DockerStreamError { error: "boom".into() }, Target::Container("c"), "Backend")]
    #[case(
        BollardError::RequestTimeoutError,
        Target::Container("c"),
        "Unavailable"
    )]
    #[case(BollardError::SocketNotFoundError("/nope.sock".into()), Target::Engine, "Unavailable")]
    #[case(BollardError::IOError { err: std::io::Error::from(std::io::ErrorKind::ConnectionRefused) }, Target::Engine, "Unavailable")]
    #[case(BollardError::APIVersionParseError {}, Target::Engine, "Backend")]
    fn maps_by_status_and_kind(
        #[case] err: BollardError,
        #[case] target: Target<'_>,
        #[case] want: &str,
    ) {
        let mapped = map_error(err, target, EP);
        assert_eq!(kind(&mapped), want, "{mapped:?}");
    }

    #[test]
    fn messages_name_the_endpoint_the_image_and_the_id() {
        let e = map_error(BollardError::RequestTimeoutError, Target::Engine, EP);
        assert!(e.to_string().contains(EP), "{e}");
        let e = map_error(server(404), Target::Image("reg/img:2"), EP);
        assert!(e.to_string().contains("reg/img:2"), "{e}");
        let e = map_error(server(404), Target::Container("mcp-a-b"), EP);
        assert!(matches!(e, OrchestratorError::NotFound { ref id } if id == "mcp-a-b"));
    }
}
