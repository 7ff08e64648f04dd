//! The gateway: which instances it serves, their health loops, and the HTTP routes.
//!
//! | Route                       | What                                                        |
//! |-----------------------------|-------------------------------------------------------------|
//! | `GET /servers`              | every instance with its phase, URL and readiness (JSON)     |
//! | `POST /servers/<id>/mcp`    | streamable HTTP: JSON-RPC in, JSON or SSE out               |
//! | `GET /servers/<id>/mcp`     | the session's standalone SSE stream (2025 revisions)        |
//! | `DELETE /servers/<id>/mcp`  | ends the session                                            |
//! | `GET /metrics`              | Prometheus text format                                      |
//!
//! Every route passes the same guard first: the `Host` must be a loopback name when the gateway
//! listens on loopback and an `Origin`, when sent, must be loopback or configured (DNS-rebinding
//! protection, as the streamable HTTP transport requires); with a token, `Authorization: Bearer`
//! must match.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use mcp_orchestrator_api::{DynOrchestrator, McpChannel, OrchestratorError};
use mcp_types::{InstanceFilters, InstanceId, Phase};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::GatewayConfig;
use crate::error::GatewayError;
use crate::health::{Readiness, ReadyInfo};
use crate::http_upstream::{self, HttpProbe};
use crate::jsonrpc::{self, Message};
use crate::metrics::{InstanceLabels, Metrics, method_labels};
use crate::mux::{Call, Mux};

/// The protocol revisions clients may speak to the gateway.
pub const SUPPORTED_VERSIONS: [&str; 3] = ["2025-06-18", "2025-11-25", "2026-07-28"];
/// The stateless revision: no `initialize`, no session, `server/discover`.
const STATELESS: &str = "2026-07-28";
const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

enum Upstream {
    Stdio(Box<Mux>),
    Http(String),
}

pub(crate) struct Served {
    upstream: Upstream,
    pub(crate) readiness: watch::Sender<Readiness>,
    stop: CancellationToken,
}

struct Session {
    instance: InstanceId,
    protocol_version: String,
    created: Instant,
}

/// Sessions kept at most; beyond it the oldest is forgotten (its client gets 404 and
/// initializes again, as the transport specifies), so clients that never send DELETE cannot
/// grow the gateway's memory without bound.
const MAX_SESSIONS: usize = 10_000;

struct Inner {
    orch: Arc<DynOrchestrator>,
    config: GatewayConfig,
    metrics: Metrics,
    http: reqwest::Client,
    served: Mutex<HashMap<InstanceId, Arc<Served>>>,
    sessions: Mutex<HashMap<String, Session>>,
    shutdown: CancellationToken,
}

/// Serves every instance of one orchestrator as streamable HTTP.
#[derive(Clone)]
pub struct Gateway {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Gateway {
    /// A gateway in front of `orch`.
    ///
    /// # Errors
    /// [`GatewayError::InsecureBind`] / [`GatewayError::Config`] from [`GatewayConfig::validate`].
    pub fn new(orch: Arc<DynOrchestrator>, config: GatewayConfig) -> Result<Self, GatewayError> {
        config.validate()?;
        let http = reqwest::Client::builder()
            .build()
            .map_err(|e| GatewayError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                orch,
                config,
                metrics: Metrics::new(),
                http,
                served: Mutex::default(),
                sessions: Mutex::default(),
                shutdown: CancellationToken::new(),
            }),
        })
    }

    /// The axum router (guard included), for embedding or tests.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/servers", get(list))
            .route(
                "/servers/{id}/mcp",
                get(mcp_get).post(mcp_post).delete(mcp_delete),
            )
            .route("/metrics", get(metrics))
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    /// Listens on the configured address and serves until `shutdown` is cancelled, refreshing
    /// the served instances every `refresh_interval`.
    ///
    /// # Errors
    /// [`GatewayError::Io`] when the address cannot be bound or serving fails.
    pub async fn serve(&self, shutdown: CancellationToken) -> Result<(), GatewayError> {
        let listener = TcpListener::bind(self.inner.config.listen).await?;
        self.serve_on(listener, shutdown).await
    }

    /// Serves on an already bound listener (tests bind port 0).
    ///
    /// # Errors
    /// [`GatewayError::Io`] when serving fails.
    pub async fn serve_on(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<(), GatewayError> {
        let refresher = self.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = refresher.refresh().await {
                    tracing::warn!("listing instances: {e}");
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(refresher.inner.config.refresh_interval) => {}
                }
            }
        });
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        self.inner.shutdown.cancel();
        result.map_err(GatewayError::Io)
    }

    /// Starts serving every running instance not yet served and forgets the ones gone.
    ///
    /// # Errors
    /// The orchestrator's error when listing fails.
    pub async fn refresh(&self) -> Result<(), GatewayError> {
        let mut filters = InstanceFilters::default();
        let mut running = Vec::new();
        loop {
            let page = self.inner.orch.list_instances(&filters).await?;
            running.extend(
                page.items
                    .into_iter()
                    .filter(|i| i.status.phase == Phase::Running)
                    .map(|i| i.id),
            );
            match page.continue_token {
                Some(token) => filters.continue_token = Some(token),
                None => break,
            }
        }
        let stale: Vec<InstanceId> = self
            .served_map()
            .keys()
            .filter(|id| !running.contains(id))
            .cloned()
            .collect();
        for id in stale {
            self.forget(&id);
        }
        for id in running {
            if let Err(e) = self.served(&id).await {
                tracing::debug!(instance = %id, "not served yet: {e}");
            }
        }
        Ok(())
    }

    fn served_map(&self) -> std::sync::MutexGuard<'_, HashMap<InstanceId, Arc<Served>>> {
        self.inner
            .served
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn forget(&self, id: &InstanceId) {
        if let Some(served) = self.served_map().remove(id) {
            served.stop.cancel();
        }
    }

    /// The last known readiness of `id`, if the gateway serves it.
    pub fn readiness(&self, id: &InstanceId) -> Option<Readiness> {
        self.served_map()
            .get(id)
            .map(|s| s.readiness.borrow().clone())
    }

    /// Serves `id` (if not yet) and waits until its handshake and latest ping succeeded.
    ///
    /// # Errors
    /// The orchestrator's error when the instance cannot be reached (NotFound, Unavailable), and
    /// [`GatewayError::NotReady`] with the last state when `timeout` passes first.
    pub async fn wait_ready(
        &self,
        id: &InstanceId,
        timeout: Duration,
    ) -> Result<ReadyInfo, GatewayError> {
        let started = Instant::now();
        let served = loop {
            match self.served(id).await {
                Ok(served) => break served,
                Err(GatewayError::Orchestrator(OrchestratorError::Unavailable { .. }))
                    if started.elapsed() < timeout =>
                {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        };
        let mut rx = served.readiness.subscribe();
        let remaining = timeout.saturating_sub(started.elapsed());
        let waited = tokio::time::timeout(remaining, rx.wait_for(Readiness::is_ready)).await;
        match waited {
            Ok(Ok(state)) => state
                .info()
                .cloned()
                .ok_or_else(|| GatewayError::Upstream("ready without info".into())),
            Ok(Err(_)) | Err(_) => Err(GatewayError::NotReady {
                id: id.to_string(),
                waited: timeout,
                last: describe(&served.readiness.borrow()),
            }),
        }
    }

    /// The served state of `id`, connecting to it the first time.
    async fn served(&self, id: &InstanceId) -> Result<Arc<Served>, GatewayError> {
        if let Some(served) = self.served_map().get(id) {
            return Ok(Arc::clone(served));
        }
        let channel = self.inner.orch.connect(id).await?;
        self.adopt(id, channel)
    }

    /// Serves `id` over `channel` (obtained from `connect`), starting its health loop.
    pub(crate) fn adopt(
        &self,
        id: &InstanceId,
        channel: McpChannel,
    ) -> Result<Arc<Served>, GatewayError> {
        let cfg = &self.inner.config;
        let upstream = match channel {
            McpChannel::Stdio(channel) => Upstream::Stdio(Box::new(
                Mux::new(
                    id.clone(),
                    Arc::clone(&self.inner.orch),
                    cfg.max_message_bytes,
                    cfg.ping_timeout,
                    channel,
                )
                .initialize_first(cfg.initialize_first),
            )),
            McpChannel::Http(endpoint) => Upstream::Http(endpoint.url),
            other => {
                return Err(GatewayError::Upstream(format!(
                    "{id}: the gateway cannot serve a {} channel",
                    other.transport()
                )));
            }
        };
        let served = Arc::new(Served {
            upstream,
            readiness: watch::channel(Readiness::Pending {
                reason: "the handshake has not completed yet".into(),
            })
            .0,
            stop: self.inner.shutdown.child_token(),
        });
        {
            let mut map = self.served_map();
            if let Some(existing) = map.get(id) {
                // Another caller won the race; this channel is dropped (detached).
                return Ok(Arc::clone(existing));
            }
            map.insert(id.clone(), Arc::clone(&served));
        }
        tokio::spawn(health_loop(
            Arc::downgrade(&self.inner),
            id.clone(),
            Arc::clone(&served),
        ));
        Ok(served)
    }
}

/// Waits until `id` answers MCP (handshake and a ping) without serving anything: what
/// `mcp-orch run` needs. Checks every 200 ms; when it returns, the gateway it used is dropped
/// and its tasks end right after, freeing the instance's stdio for the client that follows
/// (whose own handshake works after this one).
///
/// # Errors
/// As [`Gateway::wait_ready`].
pub async fn wait_ready(
    orch: Arc<DynOrchestrator>,
    id: &InstanceId,
    timeout: Duration,
) -> Result<ReadyInfo, GatewayError> {
    let gateway = Gateway::new(
        orch,
        GatewayConfig {
            ping_interval: Duration::from_millis(200),
            // The client that follows gets the server's stdio: do not lock it into a revision.
            initialize_first: true,
            ..GatewayConfig::default()
        },
    )?;
    gateway.wait_ready(id, timeout).await
}

pub(crate) fn describe(state: &Readiness) -> String {
    match state {
        Readiness::Pending { reason } => format!("pending: {reason}"),
        Readiness::Ready { .. } => "ready".into(),
        Readiness::Unhealthy {
            consecutive_failures,
            error,
            ..
        } => format!("unhealthy after {consecutive_failures} failed pings: {error}"),
    }
}

/// Pings `served` every interval and keeps its readiness current.
///
/// It holds the gateway weakly: dropping the last [`Gateway`] ends every loop.
async fn health_loop(gateway: std::sync::Weak<Inner>, id: InstanceId, served: Arc<Served>) {
    let Some(cfg) = gateway.upgrade().map(|g| g.config.clone()) else {
        return;
    };
    let mut probe = HttpProbe::default();
    let mut failures = 0u32;
    let mut last_handshake: Option<ReadyInfo> = None;
    loop {
        let Some(http) = gateway.upgrade().map(|g| g.http.clone()) else {
            break;
        };
        let result = match &served.upstream {
            Upstream::Stdio(mux) => mux.ping().await,
            Upstream::Http(url) => probe.check(&http, url, cfg.ping_timeout).await,
        };
        let next = match result {
            Ok(info) => {
                failures = 0;
                if last_handshake.as_ref() != Some(&info)
                    && let Some(gateway) = gateway.upgrade()
                {
                    #[allow(clippy::cast_precision_loss)]
                    gateway
                        .metrics
                        .handshake
                        .get_or_create(&InstanceLabels {
                            instance: id.to_string(),
                        })
                        .observe(info.handshake_ms as f64 / 1000.0);
                    last_handshake = Some(info.clone());
                }
                Readiness::Ready { info }
            }
            Err(error) => {
                failures += 1;
                tracing::debug!(instance = %id, failures, "health check failed: {error}");
                let current = served.readiness.borrow().clone();
                current.after_failure(failures, cfg.failure_threshold, error)
            }
        };
        served.readiness.send_replace(next);
        tokio::select! {
            () = served.stop.cancelled() => break,
            () = tokio::time::sleep(cfg.ping_interval) => {}
        }
    }
}

fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h).to_owned()
    };
    matches!(
        name.to_ascii_lowercase().as_str(),
        "localhost" | "127.0.0.1" | "[::1]"
    )
}

fn origin_allowed(origin: &str, allowed: &[String]) -> bool {
    if allowed.iter().any(|a| a == origin) {
        return true;
    }
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| !rest.contains('/') && loopback_host(rest))
}

fn plain_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        jsonrpc::error_response(None, jsonrpc::INVALID_REQUEST, message).to_string(),
    )
        .into_response()
}

async fn guard(State(gateway): State<Gateway>, request: Request, next: Next) -> Response {
    let cfg = &gateway.inner.config;
    let headers = request.headers();
    if cfg.listen.ip().is_loopback() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
        if !host.is_some_and(loopback_host) {
            return plain_error(
                StatusCode::FORBIDDEN,
                "the Host header must name a loopback address (DNS-rebinding protection)",
            );
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| origin_allowed(o, &cfg.allowed_origins));
        if !ok {
            return plain_error(
                StatusCode::FORBIDDEN,
                "this Origin is not allowed (DNS-rebinding protection); add it with --allow-origin",
            );
        }
    }
    if let Some(token) = &cfg.token {
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(|h| h.strip_prefix("Bearer "));
        if !presented.is_some_and(|p| token.matches(p)) {
            let mut response =
                plain_error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return response;
        }
    }
    next.run(request).await
}

async fn metrics(State(gateway): State<Gateway>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        gateway.inner.metrics.render(),
    )
        .into_response()
}

async fn list(State(gateway): State<Gateway>) -> Response {
    let mut filters = InstanceFilters::default();
    let mut rows = Vec::new();
    loop {
        let page = match gateway.inner.orch.list_instances(&filters).await {
            Ok(page) => page,
            Err(e) => return plain_error(StatusCode::BAD_GATEWAY, &e.to_string()),
        };
        for instance in page.items {
            let served = gateway.served_map().get(&instance.id).cloned();
            let (transport, readiness) = match &served {
                Some(s) => (
                    Some(match s.upstream {
                        Upstream::Stdio(_) => "stdio",
                        Upstream::Http(_) => "http",
                    }),
                    serde_json::to_value(&*s.readiness.borrow()).unwrap_or(Value::Null),
                ),
                None => (None, Value::Null),
            };
            rows.push(json!({
                "id": instance.id.to_string(),
                "server": instance.server,
                "phase": instance.status.phase.to_string(),
                "url": format!("/servers/{}/mcp", instance.id),
                "upstream": transport,
                "readiness": readiness,
            }));
        }
        match page.continue_token {
            Some(token) => filters.continue_token = Some(token),
            None => break,
        }
    }
    axum::Json(json!({ "instances": rows })).into_response()
}

fn rpc_error(status: StatusCode, id: Option<&Value>, code: i64, message: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        jsonrpc::error_response(id, code, message).to_string(),
    )
        .into_response()
}

async fn lookup(gateway: &Gateway, id: &str) -> Result<(InstanceId, Arc<Served>), Response> {
    let instance = InstanceId::new(id);
    match gateway.served(&instance).await {
        Ok(served) => Ok((instance, served)),
        Err(GatewayError::Orchestrator(OrchestratorError::NotFound { .. })) => Err(rpc_error(
            StatusCode::NOT_FOUND,
            None,
            jsonrpc::UNKNOWN_INSTANCE,
            &format!("no instance {id} behind this gateway (see GET /servers)"),
        )),
        Err(e) => Err(rpc_error(
            StatusCode::BAD_GATEWAY,
            None,
            jsonrpc::UPSTREAM_GONE,
            &format!("{id} cannot be reached: {e}"),
        )),
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn mcp_post(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let max = gateway.inner.config.max_message_bytes;
    let Ok(bytes) = axum::body::to_bytes(body, max).await else {
        return rpc_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
            jsonrpc::MESSAGE_TOO_LARGE,
            &format!(
                "the message is larger than this gateway's limit of {max} bytes (--max-message-bytes)"
            ),
        );
    };
    let message = match jsonrpc::parse(&bytes) {
        Ok(message) => message,
        Err(invalid) => {
            return rpc_error(
                StatusCode::BAD_REQUEST,
                None,
                invalid.code,
                &invalid.message,
            );
        }
    };
    if let Some(version) = header_str(&headers, VERSION_HEADER)
        && !SUPPORTED_VERSIONS.contains(&version)
    {
        let id = match &message {
            Message::Request { id, .. } => Some(id.clone()),
            _ => None,
        };
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, "application/json")],
            json!({
                "jsonrpc": "2.0",
                "id": id,
                "error": {
                    "code": jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
                    "message": format!("unsupported MCP-Protocol-Version {version}"),
                    "data": { "supported": SUPPORTED_VERSIONS, "requested": version },
                },
            })
            .to_string(),
        )
            .into_response();
    }
    let (instance, served) = match lookup(&gateway, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let method = match &message {
        Message::Request { method, .. } | Message::Notification { method, .. } => method.clone(),
        Message::Response { .. } => "response".into(),
    };
    let span = tracing::info_span!("mcp_request", instance = %instance, method = %method);
    let labels = method_labels(instance.as_ref(), &method);
    gateway.inner.metrics.requests.get_or_create(&labels).inc();
    let started = Instant::now();
    let response = match &served.upstream {
        Upstream::Http(url) => {
            match http_upstream::forward(&gateway.inner.http, url, Method::POST, &headers, bytes)
                .instrument(span)
                .await
            {
                Ok(response) => response,
                Err(e) => rpc_error(StatusCode::BAD_GATEWAY, None, jsonrpc::UPSTREAM_GONE, &e),
            }
        }
        Upstream::Stdio(mux) => {
            stdio_post(&gateway, &instance, mux, &headers, message, started)
                .instrument(span)
                .await
        }
    };
    if !response.status().is_success() {
        gateway.inner.metrics.errors.get_or_create(&labels).inc();
    }
    if response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        != Some("text/event-stream")
    {
        gateway
            .inner
            .metrics
            .latency
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
    }
    response
}

/// The version a 2025 client's `initialize` gets: its own when supported, else the newest.
fn negotiate(requested: Option<&str>) -> &'static str {
    match requested {
        Some("2025-06-18") => "2025-06-18",
        _ => "2025-11-25",
    }
}

fn is_stateless(headers: &HeaderMap, body: &Map<String, Value>) -> bool {
    header_str(headers, VERSION_HEADER) == Some(STATELESS)
        || jsonrpc::meta(body)
            .and_then(|m| m.get("io.modelcontextprotocol/protocolVersion"))
            .and_then(Value::as_str)
            == Some(STATELESS)
}

#[allow(clippy::too_many_lines)]
async fn stdio_post(
    gateway: &Gateway,
    instance: &InstanceId,
    mux: &Mux,
    headers: &HeaderMap,
    message: Message,
    started: Instant,
) -> Response {
    let json_ok = |value: Value| {
        (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response()
    };
    let session_header = header_str(headers, SESSION_HEADER).map(str::to_owned);
    match message {
        Message::Request { id, method, body } if method == "initialize" => {
            let link = match mux.link().await {
                Ok(link) => link,
                Err(e) => {
                    return rpc_error(
                        StatusCode::BAD_GATEWAY,
                        Some(&id),
                        jsonrpc::UPSTREAM_GONE,
                        &e.to_string(),
                    );
                }
            };
            let requested = body
                .get("params")
                .and_then(|p| p.get("protocolVersion"))
                .and_then(Value::as_str);
            let version = negotiate(requested);
            let init = link.init();
            let mut result = json!({
                "protocolVersion": version,
                "capabilities": init.get("capabilities").cloned().unwrap_or_else(|| json!({})),
                "serverInfo": init.get("serverInfo").cloned().unwrap_or_else(|| json!({"name": "", "version": ""})),
            });
            if let Some(instructions) = init.get("instructions") {
                result["instructions"] = instructions.clone();
            }
            let session = uuid::Uuid::new_v4().simple().to_string();
            {
                let mut sessions = gateway
                    .inner
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if sessions.len() >= MAX_SESSIONS
                    && let Some(oldest) = sessions
                        .iter()
                        .min_by_key(|(_, s)| s.created)
                        .map(|(k, _)| k.clone())
                    && let Some(evicted) = sessions.remove(&oldest)
                {
                    gateway
                        .inner
                        .metrics
                        .active_clients
                        .get_or_create(&InstanceLabels {
                            instance: evicted.instance.to_string(),
                        })
                        .dec();
                }
                sessions.insert(
                    session.clone(),
                    Session {
                        instance: instance.clone(),
                        protocol_version: version.to_owned(),
                        created: Instant::now(),
                    },
                );
            }
            gateway
                .inner
                .metrics
                .active_clients
                .get_or_create(&InstanceLabels {
                    instance: instance.to_string(),
                })
                .inc();
            let mut response = json_ok(jsonrpc::result_response(&id, &result));
            if let Ok(value) = HeaderValue::from_str(&session) {
                response.headers_mut().insert(SESSION_HEADER, value);
            }
            response
        }
        Message::Request { id, method, .. } if method == "server/discover" => {
            let link = match mux.link().await {
                Ok(link) => link,
                Err(e) => {
                    return rpc_error(
                        StatusCode::BAD_GATEWAY,
                        Some(&id),
                        jsonrpc::UPSTREAM_GONE,
                        &e.to_string(),
                    );
                }
            };
            let init = link.init();
            let mut meta = Map::new();
            if let Some(info) = init.get("serverInfo") {
                meta.insert("io.modelcontextprotocol/serverInfo".into(), info.clone());
            }
            let mut result = json!({
                "resultType": "complete",
                "supportedVersions": SUPPORTED_VERSIONS,
                "capabilities": init.get("capabilities").cloned().unwrap_or_else(|| json!({})),
                "ttlMs": 0,
                "cacheScope": "private",
                "_meta": meta,
            });
            if let Some(instructions) = init.get("instructions") {
                result["instructions"] = instructions.clone();
            }
            json_ok(jsonrpc::result_response(&id, &result))
        }
        message => {
            // Everything else belongs to a session (2025 revisions) or carries its version (2026).
            let body = match &message {
                Message::Request { body, .. }
                | Message::Notification { body, .. }
                | Message::Response { body, .. } => body,
            };
            let session = match session_header {
                Some(session) => {
                    let known = gateway
                        .inner
                        .sessions
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(&session)
                        .is_some_and(|s| &s.instance == instance);
                    if !known {
                        let id = match &message {
                            Message::Request { id, .. } => Some(id.clone()),
                            _ => None,
                        };
                        return rpc_error(
                            StatusCode::NOT_FOUND,
                            id.as_ref(),
                            jsonrpc::INVALID_REQUEST,
                            "session not found (it ended, or the gateway restarted): initialize again",
                        );
                    }
                    session
                }
                None if is_stateless(headers, body) => {
                    format!("stateless-{}", uuid::Uuid::new_v4().simple())
                }
                None => {
                    return rpc_error(
                        StatusCode::BAD_REQUEST,
                        None,
                        jsonrpc::INVALID_REQUEST,
                        "missing Mcp-Session-Id: initialize first, or send MCP-Protocol-Version: 2026-07-28",
                    );
                }
            };
            match message {
                Message::Request { id, method, .. } if method == "ping" => {
                    json_ok(jsonrpc::result_response(&id, &json!({})))
                }
                Message::Request { method, body, .. } => match mux.call(&session, body).await {
                    Ok(call) => {
                        let modern = session.starts_with("stateless-");
                        respond(gateway, instance, call, headers, started, &method, modern).await
                    }
                    Err(error) => {
                        gateway
                            .inner
                            .metrics
                            .errors
                            .get_or_create(&method_labels(instance.as_ref(), &method))
                            .inc();
                        json_ok(error)
                    }
                },
                other => {
                    mux.forward(&session, other).await;
                    StatusCode::ACCEPTED.into_response()
                }
            }
        }
    }
}

/// Streams a call's related messages and its response as SSE when the client accepts it,
/// else answers with the response alone as JSON.
async fn respond(
    gateway: &Gateway,
    instance: &InstanceId,
    mut call: Call,
    headers: &HeaderMap,
    started: Instant,
    method: &str,
    modern: bool,
) -> Response {
    let modern = modern.then(|| method.to_owned());
    let method = method.to_owned();
    let accepts_sse =
        header_str(headers, "accept").is_some_and(|a| a.contains("text/event-stream"));
    if !accepts_sse {
        loop {
            match call.rx.recv().await {
                Some(mut message) if is_response(&message) => {
                    call.finish();
                    if message.get("error").is_some() {
                        gateway
                            .inner
                            .metrics
                            .errors
                            .get_or_create(&method_labels(instance.as_ref(), &method))
                            .inc();
                    }
                    if let Some(method) = &modern {
                        modernize(&mut message, method);
                    }
                    return (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/json")],
                        message.to_string(),
                    )
                        .into_response();
                }
                Some(_) => {}
                None => {
                    return rpc_error(
                        StatusCode::BAD_GATEWAY,
                        None,
                        jsonrpc::UPSTREAM_GONE,
                        "the server's connection ended",
                    );
                }
            }
        }
    }
    let metrics = gateway.clone();
    let instance = instance.to_string();
    let stream = futures::stream::unfold(Some(call), move |state| {
        let metrics = metrics.clone();
        let instance = instance.clone();
        let modern = modern.clone();
        let method = method.clone();
        async move {
            let mut call = state?;
            let mut message = call.rx.recv().await?;
            if is_response(&message) {
                call.finish();
                if let Some(method) = &modern {
                    modernize(&mut message, method);
                }
                let labels = method_labels(&instance, &method);
                if message.get("error").is_some() {
                    metrics.inner.metrics.errors.get_or_create(&labels).inc();
                }
                metrics
                    .inner
                    .metrics
                    .latency
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                return Some((Ok::<_, Infallible>(event(&message)), None));
            }
            Some((Ok(event(&message)), Some(call)))
        }
    });
    sse(stream)
}

/// Methods whose 2026-07-28 results carry `ttlMs` and `cacheScope`.
const CACHEABLE: [&str; 5] = [
    "prompts/list",
    "resources/list",
    "resources/read",
    "resources/templates/list",
    "tools/list",
];

/// Gives a result from the 2025 session the members the 2026-07-28 schema requires: a
/// `resultType`, and for cacheable methods a zero `ttlMs` (the gateway cannot vouch for the
/// server's lists staying fresh) with a private `cacheScope`.
fn modernize(message: &mut Value, method: &str) {
    let Some(result) = message.get_mut("result").and_then(Value::as_object_mut) else {
        return;
    };
    result
        .entry("resultType")
        .or_insert_with(|| json!("complete"));
    if CACHEABLE.contains(&method) {
        result.entry("ttlMs").or_insert_with(|| json!(0));
        result
            .entry("cacheScope")
            .or_insert_with(|| json!("private"));
    }
}

fn is_response(message: &Value) -> bool {
    message.get("method").is_none()
        && (message.get("result").is_some() || message.get("error").is_some())
}

fn event(message: &Value) -> Event {
    Event::default().event("message").data(message.to_string())
}

fn sse<S>(stream: S) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

async fn mcp_get(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (instance, served) = match lookup(&gateway, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match &served.upstream {
        Upstream::Http(url) => {
            match http_upstream::forward(
                &gateway.inner.http,
                url,
                Method::GET,
                &headers,
                Bytes::new(),
            )
            .await
            {
                Ok(response) => response,
                Err(e) => rpc_error(StatusCode::BAD_GATEWAY, None, jsonrpc::UPSTREAM_GONE, &e),
            }
        }
        Upstream::Stdio(mux) => {
            let known = header_str(&headers, SESSION_HEADER).is_some_and(|s| {
                gateway
                    .inner
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(s)
                    .is_some_and(|s| s.instance == instance && s.protocol_version != STATELESS)
            });
            if !known {
                // No session: the stateless revision has no standalone stream (405); an unknown
                // session has ended and its client must initialize again (404).
                return if headers.contains_key(SESSION_HEADER) {
                    rpc_error(
                        StatusCode::NOT_FOUND,
                        None,
                        jsonrpc::INVALID_REQUEST,
                        "session not found (it ended, or the gateway restarted): initialize again",
                    )
                } else {
                    StatusCode::METHOD_NOT_ALLOWED.into_response()
                };
            }
            let events = tokio_stream::wrappers::BroadcastStream::new(mux.events.subscribe())
                .filter_map(|m| async move { m.ok().map(|m| Ok::<_, Infallible>(event(&m))) });
            sse(events)
        }
    }
}

async fn mcp_delete(
    State(gateway): State<Gateway>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let (instance, served) = match lookup(&gateway, &id).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match &served.upstream {
        Upstream::Http(url) => {
            match http_upstream::forward(
                &gateway.inner.http,
                url,
                Method::DELETE,
                &headers,
                Bytes::new(),
            )
            .await
            {
                Ok(response) => response,
                Err(e) => rpc_error(StatusCode::BAD_GATEWAY, None, jsonrpc::UPSTREAM_GONE, &e),
            }
        }
        Upstream::Stdio(_) => {
            let removed = header_str(&headers, SESSION_HEADER).and_then(|s| {
                gateway
                    .inner
                    .sessions
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(s)
            });
            if removed.is_some() {
                gateway
                    .inner
                    .metrics
                    .active_clients
                    .get_or_create(&InstanceLabels {
                        instance: instance.to_string(),
                    })
                    .dec();
                StatusCode::OK.into_response()
            } else {
                StatusCode::NOT_FOUND.into_response()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_and_origins() {
        for host in [
            "localhost",
            "localhost:8800",
            "127.0.0.1:1",
            "[::1]:80",
            "LOCALHOST",
        ] {
            assert!(loopback_host(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:8800",
            "127.0.0.2",
            "localhost.evil.example",
        ] {
            assert!(!loopback_host(host), "{host}");
        }
        assert!(origin_allowed("http://localhost:3000", &[]));
        assert!(!origin_allowed("http://evil.example", &[]));
        assert!(origin_allowed(
            "https://app.example",
            &["https://app.example".into()]
        ));
        assert!(!origin_allowed("http://localhost:3000/x", &[]));
    }
}
