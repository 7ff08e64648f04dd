//! The one place where engine errors (kube requests, response streams, watches: [`EngineError`])
//! become [`OrchestratorError`]s, in one function ([`map_error`]) that takes what the request was
//! about ([`Target`]) as context, and the bounded retry of idempotent requests it drives.
//!
//! | HTTP status / kube error            | `OrchestratorError`                          |
//! |-------------------------------------|----------------------------------------------|
//! | 403 from admission (PodSecurity, ResourceQuota, LimitRange, ServiceAccount) | `PolicyRefused` with the server's message and what to change |
//! | 401, 403, client auth failures      | `PermissionDenied`                           |
//! | 404 (of a namespace)                | `InvalidArgument { what: "namespace" }`      |
//! | 404                                 | `NotFound` (the instance id)                 |
//! | 409                                 | `AlreadyExists`                              |
//! | 410                                 | `ContinueExpired`                            |
//! | 422                                 | `InvalidSpec` with the server's causes       |
//! | 400                                 | `InvalidArgument`                            |
//! | 429, 5xx, connection/stream errors  | `Unavailable` (retried where idempotent)     |
//! | a broken response body (log stream) | `Unavailable`                                |
//! | a failed watch                      | as the kube error inside; else `Backend`     |
//! | anything else                       | `Backend`                                    |

use std::future::Future;
use std::time::Duration;

use kube::core::Status;
use mcp_orchestrator_api::OrchestratorError;
use mcp_types::{FieldError, ValidationErrors};

/// The backend name reported in errors and by `backend_name`.
pub const BACKEND: &str = "kubernetes";

/// Attempts of an idempotent request (the first try included).
pub(crate) const RETRY_ATTEMPTS: u32 = 4;
/// Pause before the first retry; doubled for each further retry.
pub(crate) const RETRY_FIRST_DELAY: Duration = Duration::from_millis(100);
/// Longest pause between retries.
pub(crate) const RETRY_MAX_DELAY: Duration = Duration::from_secs(1);

/// What a request was about: names the object in messages and decides what a 404, 409 or 400
/// means.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// What was being done, for messages (`"create pod"`, `"list pods"`).
    pub(crate) action: &'static str,
    /// The object kind (`"pod"`, `"service"`).
    pub(crate) kind: &'static str,
    /// The object's name, if the request names one.
    pub(crate) name: Option<&'a str>,
    /// The instance the request is for: the id of a `NotFound`.
    pub(crate) instance: Option<&'a str>,
    /// What an `InvalidArgument` (HTTP 400) is about.
    pub(crate) argument: &'static str,
}

impl<'a> Target<'a> {
    /// A request about one named object of instance `instance`.
    pub(crate) fn object(
        action: &'static str,
        kind: &'static str,
        name: &'a str,
        instance: &'a str,
    ) -> Self {
        Self {
            action,
            kind,
            name: Some(name),
            instance: Some(instance),
            argument: "request",
        }
    }

    /// A request about instance `instance`'s pod.
    pub(crate) fn pod(action: &'static str, instance: &'a str) -> Self {
        Self::object(action, "pod", instance, instance)
    }

    /// A request about no object in particular (a list).
    pub(crate) fn collection(action: &'static str, kind: &'static str) -> Self {
        Self {
            action,
            kind,
            name: None,
            instance: None,
            argument: "request",
        }
    }

    /// The same target with HTTP 400 reported as an invalid `argument`.
    pub(crate) fn with_argument(mut self, argument: &'static str) -> Self {
        self.argument = argument;
        self
    }

    fn describe(&self) -> String {
        match self.name {
            Some(name) => format!("{} {name:?}", self.action),
            None => self.action.to_owned(),
        }
    }
}

/// Every engine failure the backend meets: the private error type that [`map_error`] maps.
#[derive(Debug)]
pub(crate) enum EngineError {
    /// A request to the API server failed.
    Kube(kube::Error),
    /// Reading a response body (a log stream) failed: the connection broke.
    Io(std::io::Error),
    /// A watch of `kube::runtime::wait::await_condition` failed.
    Wait(kube::runtime::wait::Error),
    /// A `kube::runtime::watcher` stream (the backend's `watch`) failed.
    Watch(kube::runtime::watcher::Error),
}

impl From<kube::runtime::watcher::Error> for EngineError {
    fn from(error: kube::runtime::watcher::Error) -> Self {
        Self::Watch(error)
    }
}

impl From<kube::Error> for EngineError {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

impl From<std::io::Error> for EngineError {
    fn from(error: std::io::Error) -> Self {
        Self::Io(error)
    }
}

impl From<kube::runtime::wait::Error> for EngineError {
    fn from(error: kube::runtime::wait::Error) -> Self {
        Self::Wait(error)
    }
}

/// Maps an engine failure met during `target` to the shared error: the table at the top of this
/// module. Everything the backend reports about a failed request goes through here, so callers
/// can branch on the variant.
pub(crate) fn map_error(error: impl Into<EngineError>, target: &Target<'_>) -> OrchestratorError {
    use kube::runtime::watcher::Error as W;
    let error = match error.into() {
        EngineError::Kube(error) => error,
        EngineError::Io(error) => {
            return OrchestratorError::unavailable(
                BACKEND,
                format!(
                    "reading the response to {} failed: {error}",
                    target.describe()
                ),
                Some(Box::new(error)),
            );
        }
        // A failed watch: the kube error inside is what decides.
        EngineError::Wait(kube::runtime::wait::Error::ProbeFailed(error))
        | EngineError::Watch(error) => match error {
            W::InitialListFailed(e) | W::WatchStartFailed(e) | W::WatchFailed(e) => e,
            W::WatchError(status) => kube::Error::Api(status),
            other @ W::NoResourceVersion => return OrchestratorError::backend(BACKEND, other),
        },
    };
    match error {
        kube::Error::Api(status) => {
            let message = if status.message.is_empty() {
                format!("HTTP {} {}", status.code, status.reason)
            } else {
                status.message.clone()
            };
            let details_kind = status.details.as_ref().map(|d| d.kind.as_str());
            if status.code == 403
                && let Some((policy, change)) = admission_policy(&message)
            {
                return OrchestratorError::policy_refused(policy, message, change);
            }
            match status.code {
                401 | 403 => OrchestratorError::PermissionDenied {
                    message: format!("{}: {message}", target.describe()),
                },
                // A create in a namespace that does not exist names the namespace, not the object.
                404 if details_kind == Some("namespaces") => OrchestratorError::InvalidArgument {
                    what: "namespace",
                    message,
                },
                404 => OrchestratorError::not_found(
                    target.instance.or(target.name).unwrap_or(target.kind),
                ),
                409 => OrchestratorError::AlreadyExists {
                    what: match target.name {
                        Some(name) => format!("{} {name:?}", target.kind),
                        None => target.kind.to_owned(),
                    },
                },
                410 => OrchestratorError::ContinueExpired { message },
                422 => OrchestratorError::InvalidSpec(validation_errors(&status, target, &message)),
                400 => OrchestratorError::InvalidArgument {
                    what: target.argument,
                    message,
                },
                429 | 500..=599 => OrchestratorError::unavailable(
                    BACKEND,
                    format!(
                        "the API server answered {} to {}: {message}",
                        status.code,
                        target.describe()
                    ),
                    Some(Box::new(kube::Error::Api(status))),
                ),
                _ => OrchestratorError::backend(BACKEND, kube::Error::Api(status)),
            }
        }
        kube::Error::Auth(e) => OrchestratorError::PermissionDenied {
            message: format!(
                "cannot authenticate to the API server to {}: {e}",
                target.describe()
            ),
        },
        error @ (kube::Error::HyperError(_)
        | kube::Error::Service(_)
        | kube::Error::ReadEvents(_)) => OrchestratorError::unavailable(
            BACKEND,
            format!(
                "cannot reach the Kubernetes API server to {}: {error}",
                target.describe()
            ),
            Some(Box::new(error)),
        ),
        other => OrchestratorError::backend(BACKEND, other),
    }
}

/// Which admission plugin refused a request (403 `Forbidden`), recognised by the wording each
/// plugin uses, and what to change. An RBAC refusal (`... cannot create resource ...`) matches
/// none of them and stays `PermissionDenied`.
fn admission_policy(message: &str) -> Option<(&'static str, &'static str)> {
    if message.contains("violates PodSecurity") {
        Some((
            "PodSecurity",
            "the namespace's pod-security.kubernetes.io/enforce level refuses this pod: run in a namespace whose level allows it, or relax the level",
        ))
    } else if message.contains("exceeded quota:") || message.contains("failed quota:") {
        Some((
            "ResourceQuota",
            "the namespace's ResourceQuota is used up or needs requests/limits the spec lacks: stop other instances, lower the spec's resources, or raise the quota",
        ))
    } else if message.contains("error looking up service account") {
        Some((
            "ServiceAccount",
            "the configured service account does not exist: create it (see docs/KUBERNETES_DEPLOYMENT.md) or configure an existing one",
        ))
    } else if message.contains(" usage per Container is ")
        || message.contains(" usage per Pod is ")
        || message.contains(" limit to request ratio per ")
    {
        Some((
            "LimitRange",
            "the namespace's LimitRange bounds the containers' resources: bring the spec's requests and limits within them",
        ))
    } else {
        None
    }
}

/// The server's causes of a 422 as field errors (paths of the Kubernetes object, prefixed by its
/// kind, e.g. `pod.spec.containers[0].image`), or its whole message when it gives none.
fn validation_errors(status: &Status, target: &Target<'_>, message: &str) -> ValidationErrors {
    let causes = status
        .details
        .as_ref()
        .map(|d| d.causes.as_slice())
        .unwrap_or_default();
    let errors: Vec<FieldError> = causes
        .iter()
        .map(|c| FieldError {
            path: if c.field.is_empty() {
                target.kind.to_owned()
            } else {
                format!("{}.{}", target.kind, c.field)
            },
            message: if c.message.is_empty() {
                message.to_owned()
            } else {
                c.message.clone()
            },
        })
        .collect();
    ValidationErrors::from_vec(errors)
        .unwrap_or_else(|| ValidationErrors::single(target.kind, message))
}

/// Runs an idempotent request (get, list, delete, a log read), retrying with exponential backoff
/// while it fails with an error that [`OrchestratorError::is_transient`] deems worth retrying, at
/// most [`RETRY_ATTEMPTS`] times in all.
pub(crate) async fn idempotent<T, F, Fut>(
    target: &Target<'_>,
    mut request: F,
) -> Result<T, OrchestratorError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, kube::Error>>,
{
    let mut delay = RETRY_FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match request().await {
            Ok(value) => return Ok(value),
            Err(error) => {
                let mapped = map_error(error, target);
                if !mapped.is_transient() || attempt >= RETRY_ATTEMPTS {
                    return Err(mapped);
                }
                tracing::debug!(attempt, ?delay, error = %mapped, "retrying {}", target.describe());
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(RETRY_MAX_DELAY);
                attempt += 1;
            }
        }
    }
}

/// Runs a request that must not be repeated blindly (a create): one attempt, mapped.
pub(crate) async fn once<T, Fut>(target: &Target<'_>, request: Fut) -> Result<T, OrchestratorError>
where
    Fut: Future<Output = Result<T, kube::Error>>,
{
    request.await.map_err(|e| map_error(e, target))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn status(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(Status::failure(message, reason).with_code(code).boxed())
    }

    fn variant(e: &OrchestratorError) -> &'static str {
        match e {
            OrchestratorError::NotFound { .. } => "NotFound",
            OrchestratorError::AlreadyExists { .. } => "AlreadyExists",
            OrchestratorError::InvalidSpec(_) => "InvalidSpec",
            OrchestratorError::InvalidArgument { .. } => "InvalidArgument",
            OrchestratorError::ContinueExpired { .. } => "ContinueExpired",
            OrchestratorError::Unavailable { .. } => "Unavailable",
            OrchestratorError::PermissionDenied { .. } => "PermissionDenied",
            OrchestratorError::Backend { .. } => "Backend",
            _ => "other",
        }
    }

    #[rstest]
    #[case(400, "BadRequest", "InvalidArgument")]
    #[case(401, "Unauthorized", "PermissionDenied")]
    #[case(403, "Forbidden", "PermissionDenied")]
    #[case(404, "NotFound", "NotFound")]
    #[case(405, "MethodNotAllowed", "Backend")]
    #[case(409, "AlreadyExists", "AlreadyExists")]
    #[case(410, "Expired", "ContinueExpired")]
    #[case(422, "Invalid", "InvalidSpec")]
    #[case(429, "TooManyRequests", "Unavailable")]
    #[case(500, "InternalError", "Unavailable")]
    #[case(503, "ServiceUnavailable", "Unavailable")]
    #[case(504, "Timeout", "Unavailable")]
    fn status_codes(#[case] code: u16, #[case] reason: &str, #[case] expected: &str) {
        let target = Target::pod("get pod", "mcp-time-abc");
        let mapped = map_error(status(code, reason, "the server says no"), &target);
        assert_eq!(variant(&mapped), expected, "{code}: {mapped:?}");
        let text = mapped.to_string();
        match expected {
            "NotFound" => assert!(text.contains("mcp-time-abc"), "{text}"),
            "AlreadyExists" => assert!(text.contains("pod \"mcp-time-abc\""), "{text}"),
            "Backend" => {}
            _ => assert!(text.contains("the server says no"), "{text}"),
        }
        assert_eq!(mapped.is_transient(), expected == "Unavailable");
    }

    #[rstest]
    #[case::pod_security(
        "pods \"mcp-x-\" is forbidden: violates PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"mcp-server\" must set securityContext.allowPrivilegeEscalation=false)",
        "PodSecurity"
    )]
    #[case::quota_exceeded(
        "pods \"mcp-x-\" is forbidden: exceeded quota: compute, requested: limits.memory=256Mi, used: limits.memory=1Gi, limited: limits.memory=1Gi",
        "ResourceQuota"
    )]
    #[case::quota_unspecified(
        "pods \"mcp-x-\" is forbidden: failed quota: compute: must specify limits.cpu",
        "ResourceQuota"
    )]
    #[case::service_account(
        "pods \"mcp-x-\" is forbidden: error looking up service account mcpctl/runner: serviceaccount \"runner\" not found",
        "ServiceAccount"
    )]
    #[case::limit_range(
        "pods \"mcp-x-\" is forbidden: maximum memory usage per Container is 256Mi, but limit is 512Mi",
        "LimitRange"
    )]
    fn admission_refusals_say_which_policy(#[case] message: &str, #[case] policy: &str) {
        let target = Target::pod("create pod", "mcp-x-");
        let mapped = map_error(status(403, "Forbidden", message), &target);
        let OrchestratorError::PolicyRefused {
            policy: got,
            message: kept,
            change,
            ..
        } = &mapped
        else {
            panic!("{mapped:?}");
        };
        assert_eq!((*got, kept.as_str()), (policy, message));
        assert!(!change.is_empty());
        assert!(mapped.to_string().contains(message), "{mapped}");
        assert!(!mapped.is_transient());
    }

    #[test]
    fn rbac_refusals_stay_permission_denied() {
        let target = Target::pod("create pod", "mcp-x-");
        let message = "pods is forbidden: User \"system:serviceaccount:mcpctl:orch\" cannot create resource \"pods\" in API group \"\" in the namespace \"mcpctl\"";
        let mapped = map_error(status(403, "Forbidden", message), &target);
        assert_eq!(variant(&mapped), "PermissionDenied", "{mapped:?}");
    }

    fn status_json(value: serde_json::Value) -> kube::Error {
        kube::Error::Api(serde_json::from_value::<Status>(value).unwrap().boxed())
    }

    #[test]
    fn unprocessable_entity_carries_the_causes() {
        let error = status_json(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 422,
            "reason": "Invalid",
            "message": "Pod \"x\" is invalid: spec.containers[0].image: Required value",
            "details": {"name": "x", "kind": "pods", "causes": [
                {"reason": "FieldValueRequired", "message": "Required value", "field": "spec.containers[0].image"}
            ]}
        }));
        let mapped = map_error(error, &Target::pod("create pod", "x"));
        let OrchestratorError::InvalidSpec(errors) = mapped else {
            panic!("{mapped:?}");
        };
        assert!(errors.has_path("pod.spec.containers[0].image"), "{errors}");
        // Without causes the whole message is kept.
        let mapped = map_error(
            status(422, "Invalid", "bad pod"),
            &Target::pod("create pod", "x"),
        );
        assert!(mapped.to_string().contains("bad pod"), "{mapped}");
    }

    #[test]
    fn missing_namespace_is_named() {
        let error = status_json(serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 404,
            "reason": "NotFound", "message": "namespaces \"nope\" not found",
            "details": {"name": "nope", "kind": "namespaces"}
        }));
        let mapped = map_error(error, &Target::pod("create pod", "x"));
        assert!(
            matches!(&mapped, OrchestratorError::InvalidArgument { what: "namespace", message } if message.contains("nope")),
            "{mapped:?}"
        );
    }

    #[test]
    fn bad_request_names_the_argument() {
        let target = Target::collection("list pods", "pod").with_argument("continue token");
        let mapped = map_error(
            status(400, "BadRequest", "continue key is not valid"),
            &target,
        );
        assert!(
            matches!(
                mapped,
                OrchestratorError::InvalidArgument {
                    what: "continue token",
                    ..
                }
            ),
            "{mapped:?}"
        );
    }

    #[test]
    fn transport_failures_are_unavailable() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let mapped = map_error(
            kube::Error::Service(Box::new(io)),
            &Target::collection("list pods", "pod"),
        );
        assert!(mapped.is_transient(), "{mapped:?}");
        assert!(mapped.to_string().contains("refused"), "{mapped}");
        let mapped = map_error(
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "eof"),
            &Target::pod("read logs of", "x"),
        );
        assert!(mapped.is_transient());
        let serde = serde_json::from_str::<u8>("x").unwrap_err();
        let mapped = map_error(kube::Error::SerdeError(serde), &Target::pod("get pod", "x"));
        assert_eq!(variant(&mapped), "Backend");
    }

    #[test]
    fn failed_watches_map_as_the_kube_error_inside() {
        use kube::runtime::{wait::Error::ProbeFailed, watcher::Error as W};
        let target = Target::pod("wait for deletion of", "mcp-time-abc");
        let forbidden = || {
            Status::failure("watch is forbidden", "Forbidden")
                .with_code(403)
                .boxed()
        };
        for failure in [
            W::InitialListFailed(kube::Error::Api(forbidden())),
            W::WatchStartFailed(kube::Error::Api(forbidden())),
            W::WatchFailed(kube::Error::Api(forbidden())),
            W::WatchError(forbidden()),
        ] {
            let mapped = map_error(ProbeFailed(failure), &target);
            assert_eq!(variant(&mapped), "PermissionDenied", "{mapped:?}");
            assert!(
                mapped.to_string().contains("watch is forbidden"),
                "{mapped}"
            );
        }
        let gone = W::WatchError(
            Status::failure("too old resource version", "Expired")
                .with_code(410)
                .boxed(),
        );
        assert_eq!(
            variant(&map_error(ProbeFailed(gone), &target)),
            "ContinueExpired"
        );
        let mapped = map_error(ProbeFailed(W::NoResourceVersion), &target);
        assert_eq!(variant(&mapped), "Backend", "{mapped:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_requests_retry_transient_errors_a_bounded_number_of_times() {
        let target = Target::pod("get pod", "x");
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = idempotent(&target, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(503, "ServiceUnavailable", "busy")) }
        })
        .await;
        assert!(result.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), RETRY_ATTEMPTS);

        calls.store(0, Ordering::SeqCst);
        let result = idempotent(&target, || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n < 2 {
                    Err(status(429, "TooManyRequests", "slow down"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(result.unwrap(), 2);

        calls.store(0, Ordering::SeqCst);
        let result: Result<(), _> = idempotent(&target, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(status(404, "NotFound", "gone")) }
        })
        .await;
        assert!(result.unwrap_err().is_not_found());
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a 404 is not retried");
    }

    #[tokio::test]
    async fn once_does_not_retry() {
        let calls = AtomicU32::new(0);
        let result: Result<(), _> = once(&Target::pod("create pod", "x"), async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(status(503, "ServiceUnavailable", "busy"))
        })
        .await;
        assert!(result.unwrap_err().is_transient());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
