//! The pod `attach` subresource over WebSocket, speaking the Kubernetes channel protocol to the
//! real process of a container (see `process`).
//!
//! Modelled:
//! - The checks before the upgrade, each answered as a `Status` like the apiserver: 404 for a
//!   missing pod; 400 for no container chosen among several, an unknown container, an unbound
//!   pod, none of `stdin`/`stdout`/`stderr`, a container that is not running, `stdin=true` on a
//!   container without `stdin: true`, a request without a WebSocket upgrade (SPDY is not
//!   modelled), `tty=true` (no TTYs), and a container not running a real program (fixture
//!   scripts have no byte streams).
//! - Subprotocols: `v5.channel.k8s.io` and `v4.channel.k8s.io`. As the apiserver's `wsstream`
//!   handshake does, the first protocol in the client's `Sec-WebSocket-Protocol` list that the
//!   server supports wins (kube and kubectl list v5 first); a request offering neither is refused
//!   with 403 and an empty body, as the handshake refuses it. The legacy `channel.k8s.io` and
//!   base64 variants are not served.
//! - Frames: binary, the first byte the channel. On open, an empty frame on the lowest writable
//!   channel (1 stdout, else 2 stderr, else 3). Client channel 0 carries stdin; 4 (resize) is
//!   ignored; in v5, `[255, 0]` closes this client's stdin. Server channel 1 carries the process's
//!   stdout bytes exactly, 2 its stderr when `stderr=true` (stderr always reaches the log), and 3
//!   a v1 `Status` when the process exits (`Success`, or `Failure`/`NonZeroExitCode` with the
//!   code in `details.causes`), after which the socket closes.
//! - Several clients may attach at once; each gets every output byte from the moment it
//!   attached. One of them holds stdin at a time (the first that asked for it, until it detaches
//!   or closes stdin); stdin bytes from the others are dropped, never interleaved. A client that
//!   falls more than the fan-out buffer behind gets a `Failure` status and is disconnected.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::ws::{
    Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::kind::ResourceKind;
use crate::kubelet::Kubelet;
use crate::process::{ProcessState, StdioHub};
use crate::status::ApiError;
use crate::store::{ObjectKey, Store};

/// The subprotocols served, newest first.
pub(crate) const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const CLOSE: u8 = 255;

/// How long an attach waits for a container reported running to have its process registered.
const HUB_WAIT: Duration = Duration::from_secs(2);

/// The `PodAttachOptions` of a request.
#[derive(Debug, Default, Clone)]
pub(crate) struct AttachOptions {
    pub(crate) container: Option<String>,
    pub(crate) stdin: bool,
    pub(crate) stdout: bool,
    pub(crate) stderr: bool,
}

/// Picks the subprotocol: the first of the client's list that the server supports.
pub(crate) fn negotiate<'a>(requested: impl IntoIterator<Item = &'a str>) -> Option<&'static str> {
    requested
        .into_iter()
        .map(str::trim)
        .find_map(|wanted| PROTOCOLS.into_iter().find(|p| *p == wanted))
}

/// Validates an attach request and upgrades it; the session then runs on its own task.
pub(crate) async fn attach(
    store: &Store,
    kubelet: &Kubelet,
    cancel: CancellationToken,
    key: &ObjectKey,
    options: AttachOptions,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let object = store
        .get(key)
        .ok_or_else(|| ApiError::not_found(ResourceKind::Pod, &key.name))?;
    let pod: Pod = serde_json::from_value(object).map_err(|e| ApiError::internal(e.to_string()))?;
    let (options, container_id, image) = check_target(&pod, &key.name, &options)?;
    if !kubelet.runs_program(&image) {
        return Err(ApiError::bad_request(format!(
            "container {} of pod {} runs a fixture script, not a program: attach is only served for images registered with FakeKubeHandle::run_image_as",
            options.container.as_deref().unwrap_or_default(),
            key.name
        )));
    }
    let Ok(mut upgrade) = upgrade else {
        return Err(ApiError::bad_request("Upgrade request required"));
    };
    // The client's order matters, so read the header itself (axum keeps a sorted set).
    let requested = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','));
    let Some(protocol) = negotiate(requested) else {
        let mut refused = Response::new(Body::empty());
        *refused.status_mut() = StatusCode::FORBIDDEN;
        return Ok(refused);
    };
    let hub = kubelet
        .hubs()
        .get(&container_id, HUB_WAIT)
        .await
        .ok_or_else(|| not_running(&pod, &key.name, &options))?;
    upgrade.set_selected_protocol(HeaderValue::from_static(protocol));
    let v5 = protocol == PROTOCOLS[0];
    Ok(upgrade.on_upgrade(move |socket| session(socket, hub, options, v5, cancel)))
}

/// The checks the apiserver and kubelet make before the upgrade; returns the options with the
/// container name filled in, the running instance's container id and its image.
fn check_target(
    pod: &Pod,
    pod_name: &str,
    options: &AttachOptions,
) -> Result<(AttachOptions, String, String), ApiError> {
    let options_container = options.container.clone();
    let spec = pod.spec.clone().unwrap_or_default();
    let name = match options_container {
        Some(name) => name,
        None => match spec.containers.as_slice() {
            [only] => only.name.clone(),
            many => {
                let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {pod_name}, choose one of: [{}]",
                    names.join(" ")
                )));
            }
        },
    };
    let Some(container) = spec.containers.iter().find(|c| c.name == name) else {
        return Err(ApiError::bad_request(format!(
            "container {name} is not valid for pod {pod_name}"
        )));
    };
    if spec.node_name.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request(format!(
            "pod {pod_name} does not have a host assigned"
        )));
    }
    if !(options.stdin || options.stdout || options.stderr) {
        return Err(ApiError::bad_request(
            "you must specify at least 1 of stdin, stdout, stderr",
        ));
    }
    let named = AttachOptions {
        container: Some(name.clone()),
        ..options.clone()
    };
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == name));
    let running_id = status
        .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
        .and_then(|s| s.container_id.clone());
    let Some(container_id) = running_id else {
        return Err(not_running(pod, pod_name, &named));
    };
    if named.stdin && !container.stdin.unwrap_or(false) {
        return Err(ApiError::bad_request(format!(
            "stdin is not enabled for container {name} in pod {pod_name}: its spec does not set stdin: true"
        )));
    }
    let image = container.image.clone().unwrap_or_default();
    Ok((named, container_id, image))
}

fn not_running(pod: &Pod, pod_name: &str, options: &AttachOptions) -> ApiError {
    let name = options.container.as_deref().unwrap_or_default();
    let state = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == name))
        .and_then(|s| s.state.clone())
        .unwrap_or_default();
    let why = if let Some(waiting) = state.waiting {
        format!(
            "waiting to start: {}",
            waiting
                .reason
                .unwrap_or_else(|| "ContainerCreating".to_owned())
        )
    } else if let Some(terminated) = state.terminated {
        format!("terminated (exit code {})", terminated.exit_code)
    } else {
        "not running".to_owned()
    };
    ApiError::bad_request(format!(
        "container {name} in pod {pod_name} is not running: {why}"
    ))
}

fn frame(channel: u8, payload: &[u8]) -> Message {
    let mut bytes = Vec::with_capacity(payload.len() + 1);
    bytes.push(channel);
    bytes.extend_from_slice(payload);
    Message::Binary(Bytes::from(bytes))
}

/// The `Status` sent on the error channel when the process exits.
fn exit_status(code: i32) -> Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

fn failure_status(message: &str) -> Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError"})
}

async fn next_chunk(receiver: &mut Option<broadcast::Receiver<Bytes>>) -> Result<Bytes, bool> {
    match receiver {
        Some(r) => match r.recv().await {
            Ok(chunk) => Ok(chunk),
            Err(broadcast::error::RecvError::Lagged(_)) => Err(true),
            Err(broadcast::error::RecvError::Closed) => Err(false),
        },
        None => std::future::pending().await,
    }
}

/// What ended a session.
enum End {
    /// The client went away or the server is stopping: just close.
    Close,
    /// Report this status on the error channel, then close.
    Status(Value),
}

/// One attached client.
async fn session(
    mut socket: WebSocket,
    hub: Arc<StdioHub>,
    options: AttachOptions,
    v5: bool,
    cancel: CancellationToken,
) {
    let mut stdin = if options.stdin {
        hub.lease_stdin()
    } else {
        None
    };
    let mut stdout = options.stdout.then(|| hub.subscribe_stdout());
    let mut stderr = options.stderr.then(|| hub.subscribe_stderr());
    let mut state = hub.watch_state();
    let first = if options.stdout {
        STDOUT
    } else if options.stderr {
        STDERR
    } else {
        ERROR
    };
    if socket.send(frame(first, &[])).await.is_err() {
        return;
    }
    let end = loop {
        tokio::select! {
            () = cancel.cancelled() => break End::Close,
            message = socket.recv() => match message {
                Some(Ok(Message::Binary(bytes))) => match bytes.first() {
                    Some(&STDIN) if bytes.len() > 1 => {
                        if let Some(lease) = &stdin
                            && !lease.write(bytes.slice(1..)).await
                        {
                            stdin = None;
                        }
                    }
                    Some(&CLOSE) if v5 && bytes.get(1) == Some(&STDIN) => stdin = None,
                    // Resize (4) needs a TTY; unknown channels are ignored like the apiserver does.
                    _ => {}
                },
                Some(Ok(_)) => {}
                None | Some(Err(_)) => break End::Close,
            },
            chunk = next_chunk(&mut stdout) => match chunk {
                Ok(chunk) => if socket.send(frame(STDOUT, &chunk)).await.is_err() {
                    break End::Close;
                },
                Err(true) => break End::Status(failure_status("attach client fell behind the container's stdout")),
                Err(false) => stdout = None,
            },
            chunk = next_chunk(&mut stderr) => match chunk {
                Ok(chunk) => if socket.send(frame(STDERR, &chunk)).await.is_err() {
                    break End::Close;
                },
                Err(true) => break End::Status(failure_status("attach client fell behind the container's stderr")),
                Err(false) => stderr = None,
            },
            changed = state.changed() => {
                let current = *state.borrow_and_update();
                match (changed, current) {
                    (Ok(()), ProcessState::Running) => {}
                    (_, ProcessState::Exited(code)) => {
                        // Everything the process wrote is already queued: deliver it first.
                        if !flush(&mut socket, &mut stdout, STDOUT).await
                            || !flush(&mut socket, &mut stderr, STDERR).await
                        {
                            break End::Close;
                        }
                        break End::Status(exit_status(code));
                    }
                    _ => break End::Close,
                }
            }
        }
    };
    drop(stdin);
    if let End::Status(status) = end {
        let _ = socket
            .send(frame(ERROR, status.to_string().as_bytes()))
            .await;
    }
    let _ = socket.send(Message::Close(None)).await;
}

/// Sends what is still queued on one output channel; `false` if the client is gone.
async fn flush(
    socket: &mut WebSocket,
    receiver: &mut Option<broadcast::Receiver<Bytes>>,
    channel: u8,
) -> bool {
    let Some(r) = receiver else {
        return true;
    };
    while let Ok(chunk) = r.try_recv() {
        if socket.send(frame(channel, &chunk)).await.is_err() {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_order_picks_among_the_served_protocols() {
        assert_eq!(
            negotiate(["v5.channel.k8s.io", "v4.channel.k8s.io"]),
            Some("v5.channel.k8s.io")
        );
        assert_eq!(
            negotiate(["v4.channel.k8s.io", "v5.channel.k8s.io"]),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(
            negotiate(["channel.k8s.io", " v4.channel.k8s.io"]),
            Some("v4.channel.k8s.io")
        );
        assert_eq!(negotiate(["base64.channel.k8s.io"]), None);
        assert_eq!(negotiate([]), None);
    }

    #[test]
    fn exit_statuses_carry_the_code() {
        assert_eq!(exit_status(0)["status"], "Success");
        let failed = exit_status(3);
        assert_eq!(failed["reason"], "NonZeroExitCode");
        assert_eq!(failed["details"]["causes"][0]["message"], "3");
    }
}
