//! One upstream stdio session shared by many clients.
//!
//! The gateway holds the instance's only stdio channel (from `McpOrchestrator::connect`),
//! performs `initialize` once, and rewrites identifiers so every message reaches the right peer:
//!
//! | Client -> server                 | Rewrite                                                   |
//! |----------------------------------|-----------------------------------------------------------|
//! | request                          | id -> fresh upstream integer; `progressToken` -> `gw-p-N` |
//! | `notifications/cancelled`        | `requestId` -> the upstream id of that client's request   |
//! | response to a server request     | id `gw-s-N` -> the server's own id                        |
//! | `initialize`, `ping`, `server/discover` | answered by the gateway from the shared handshake  |
//!
//! | Server -> client                 | Routed to                                                 |
//! |----------------------------------|-----------------------------------------------------------|
//! | response                         | the request's caller, with its own id restored            |
//! | `notifications/progress`         | the caller that owns the token, token restored            |
//! | request (sampling, elicitation)  | the newest client request in flight, id -> `gw-s-N`       |
//! | `ping` request                   | answered by the gateway                                   |
//! | other notifications              | every client's standalone stream                          |
//!
//! When the channel ends (the server stopped or restarted) every call in flight gets a JSON-RPC
//! error; the next request connects and handshakes again. A caller that goes away (its HTTP
//! request dropped) sends `notifications/cancelled` upstream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt;
use mcp_orchestrator_api::{DynOrchestrator, McpChannel, StdioChannel};
use mcp_types::InstanceId;
use serde_json::{Map, Value, json};
use tokio::io::AsyncWriteExt;
use tokio::sync::{broadcast, mpsc};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use crate::error::GatewayError;
use crate::health::{ReadyInfo, ready_info};
use crate::jsonrpc::{self, Message};

/// The protocol version the gateway asks a stdio server for (the newest with `initialize`).
pub(crate) const UPSTREAM_PROTOCOL: &str = "2025-11-25";
/// The stateless revision, spoken upstream to a server that supports nothing older.
pub(crate) const STATELESS_PROTOCOL: &str = "2026-07-28";
/// The revisions with an `initialize` handshake the gateway can speak upstream.
const INITIALIZE_PROTOCOLS: [&str; 2] = ["2025-06-18", UPSTREAM_PROTOCOL];

/// A message for a caller: a related notification or server request, then the response.
/// Up to how many bytes of queued messages one upstream write carries.
const WRITE_BATCH_BYTES: usize = 64 * 1024;

pub(crate) type Delivery = mpsc::UnboundedSender<Value>;

struct Pending {
    tx: Delivery,
    client_id: Value,
    session: String,
    progress: Option<(String, Value)>,
    internal: bool,
}

#[derive(Default)]
struct Routes {
    pending: HashMap<i64, Pending>,
    progress: HashMap<String, i64>,
    by_client: HashMap<(String, String), i64>,
    /// Gateway id of a server-to-client request -> the server's id.
    server_requests: HashMap<String, Value>,
    closed: bool,
}

/// One live connection to the server, after its handshake.
pub(crate) struct Link {
    out: mpsc::Sender<String>,
    routes: Mutex<Routes>,
    next_id: AtomicI64,
    closed: CancellationToken,
    /// The server's `initialize` result and what it reported, once the handshake is done.
    handshake: OnceLock<(Value, ReadyInfo)>,
    /// The server speaks only the stateless revision: every request carries its version in
    /// `_meta` (set before `server/discover` is sent, cleared when the server takes
    /// `initialize`).
    stateless: AtomicBool,
}

/// The `_meta` keys of the stateless revision the gateway puts on every request to a server
/// that speaks only it: the version always, the client's capabilities and info when the client
/// sent none (a 2025 client, or the gateway's own requests).
fn stateless_meta(body: &mut Map<String, Value>) {
    let params = body.entry("params").or_insert_with(|| json!({}));
    let Some(params) = params.as_object_mut() else {
        return;
    };
    let meta = params.entry("_meta").or_insert_with(|| json!({}));
    let Some(meta) = meta.as_object_mut() else {
        return;
    };
    meta.insert(
        "io.modelcontextprotocol/protocolVersion".into(),
        json!(STATELESS_PROTOCOL),
    );
    meta.entry("io.modelcontextprotocol/clientCapabilities")
        .or_insert_with(|| json!({}));
    meta.entry("io.modelcontextprotocol/clientInfo")
        .or_insert_with(|| json!({ "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") }));
}

impl Link {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The server's `initialize` result.
    pub(crate) fn init(&self) -> &Value {
        self.handshake.get().map_or(&Value::Null, |(init, _)| init)
    }

    /// What the handshake reported, with the tool list hash.
    pub(crate) fn info(&self) -> Option<&ReadyInfo> {
        self.handshake.get().map(|(_, info)| info)
    }

    /// Whether the channel has ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    async fn send(&self, message: &Value) -> Result<(), String> {
        self.out
            .send(message.to_string())
            .await
            .map_err(|_| "the connection to the server is closed".to_owned())
    }

    /// Queues a message without waiting: the reader task uses it, and must never wait on the
    /// writer (the server may be blocked writing the stdout the reader drains).
    fn send_now(&self, message: &Value) {
        if self.out.try_send(message.to_string()).is_err() {
            tracing::warn!("the queue to the server is full or closed; a reply was dropped");
        }
    }

    /// Sends a request under a fresh id; returns the upstream id and the caller's receiver.
    async fn start(
        &self,
        session: &str,
        mut body: Map<String, Value>,
        internal: bool,
    ) -> Result<(i64, mpsc::UnboundedReceiver<Value>), String> {
        let upstream_id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_id = body.get("id").cloned().unwrap_or(Value::Null);
        body.insert("id".into(), json!(upstream_id));
        let mut progress = None;
        if self.stateless.load(Ordering::Relaxed) {
            stateless_meta(&mut body);
        }
        if let Some(meta) = jsonrpc::meta_mut(&mut body) {
            if !self.stateless.load(Ordering::Relaxed) {
                // Per-request metadata of the stateless revision is for the gateway; the stdio
                // session was negotiated once.
                meta.retain(|k, _| !k.starts_with("io.modelcontextprotocol/"));
            }
            if let Some(token) = meta.get("progressToken").cloned() {
                let ours = format!("gw-p-{upstream_id}");
                meta.insert("progressToken".into(), json!(ours));
                progress = Some((ours, token));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        {
            let mut routes = self.routes();
            if routes.closed {
                return Err("the connection to the server is closed".into());
            }
            if let Some((ours, _)) = &progress {
                routes.progress.insert(ours.clone(), upstream_id);
            }
            if !internal {
                routes
                    .by_client
                    .insert((session.to_owned(), client_id.to_string()), upstream_id);
            }
            routes.pending.insert(
                upstream_id,
                Pending {
                    tx,
                    client_id,
                    session: session.to_owned(),
                    progress,
                    internal,
                },
            );
        }
        if let Err(e) = self.send(&Value::Object(body)).await {
            self.forget(upstream_id);
            return Err(e);
        }
        Ok((upstream_id, rx))
    }

    fn forget(&self, upstream_id: i64) -> Option<Pending> {
        let mut routes = self.routes();
        let pending = routes.pending.remove(&upstream_id)?;
        if let Some((ours, _)) = &pending.progress {
            routes.progress.remove(ours);
        }
        routes
            .by_client
            .remove(&(pending.session.clone(), pending.client_id.to_string()));
        Some(pending)
    }

    /// An internal request (handshake, ping, tools/list) and its result.
    async fn request(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, String> {
        self.exchange(method, params, timeout)
            .await?
            .map_err(|error| format!("{method} failed: {error}"))
    }

    /// An internal request: `Ok(Ok(result))`, `Ok(Err(error object))` when the server answered
    /// with an error, `Err` when it did not answer.
    async fn exchange(
        &self,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Result<Value, Value>, String> {
        let mut body = Map::new();
        body.insert("jsonrpc".into(), json!("2.0"));
        body.insert("id".into(), json!(0));
        body.insert("method".into(), json!(method));
        body.insert("params".into(), params);
        let (upstream_id, mut rx) = self.start("", body, true).await?;
        let answer = tokio::time::timeout(timeout, async {
            loop {
                match rx.recv().await {
                    Some(msg) if msg.get("result").is_some() || msg.get("error").is_some() => {
                        return Ok(msg);
                    }
                    Some(_) => {}
                    None => return Err("the connection to the server closed".to_owned()),
                }
            }
        })
        .await;
        let Ok(msg) = answer else {
            self.forget(upstream_id);
            return Err(format!("{method} got no answer within {timeout:?}"));
        };
        let msg = msg?;
        match (msg.get("result"), msg.get("error")) {
            (Some(result), _) => Ok(Ok(result.clone())),
            (_, Some(error)) => Ok(Err(error.clone())),
            _ => Err(format!("{method}: malformed answer")),
        }
    }

    fn fail_all(&self, reason: &str) {
        let pending: Vec<Pending> = {
            let mut routes = self.routes();
            routes.closed = true;
            routes.progress.clear();
            routes.by_client.clear();
            routes.server_requests.clear();
            routes.pending.drain().map(|(_, p)| p).collect()
        };
        for p in pending {
            let _ = p.tx.send(jsonrpc::error_response(
                Some(&p.client_id),
                jsonrpc::UPSTREAM_GONE,
                reason,
            ));
        }
        self.closed.cancel();
    }

    /// Routes one message from the server.
    fn dispatch(&self, value: Value, events: &broadcast::Sender<Value>) {
        let Ok(message) = jsonrpc::classify(value) else {
            tracing::warn!("the server sent a message that is not JSON-RPC; ignored");
            return;
        };
        match message {
            Message::Response { id, mut body } => {
                let Some(pending) = id.as_i64().and_then(|n| self.forget(n)) else {
                    tracing::debug!(%id, "a response for no request in flight (cancelled); dropped");
                    return;
                };
                body.insert("id".into(), pending.client_id);
                let _ = pending.tx.send(Value::Object(body));
            }
            Message::Request {
                id,
                method,
                mut body,
            } => {
                if method == "ping" {
                    self.send_now(&jsonrpc::result_response(&id, &json!({})));
                    return;
                }
                let target = {
                    let mut routes = self.routes();
                    let newest = routes
                        .pending
                        .iter()
                        .filter(|(_, p)| !p.internal)
                        .max_by_key(|(n, _)| **n)
                        .map(|(n, p)| (*n, p.tx.clone()));
                    newest.map(|(n, tx)| {
                        let ours =
                            format!("gw-s-{n}-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
                        routes.server_requests.insert(ours.clone(), id.clone());
                        (ours, tx)
                    })
                };
                match target {
                    Some((ours, tx)) => {
                        body.insert("id".into(), json!(ours));
                        let _ = tx.send(Value::Object(body));
                    }
                    None => {
                        self.send_now(&jsonrpc::error_response(
                            Some(&id),
                            jsonrpc::INTERNAL_ERROR,
                            "no client request is in flight to carry this request",
                        ));
                    }
                }
            }
            Message::Notification { method, mut body } => {
                if method == "notifications/progress" {
                    let token = body
                        .get("params")
                        .and_then(|p| p.get("progressToken"))
                        .and_then(Value::as_str)
                        .map(str::to_owned);
                    let routes = self.routes();
                    let owner = token
                        .as_ref()
                        .and_then(|t| routes.progress.get(t))
                        .and_then(|n| routes.pending.get(n));
                    if let Some(p) = owner
                        && let Some((_, original)) = &p.progress
                    {
                        if let Some(params) = body.get_mut("params").and_then(Value::as_object_mut)
                        {
                            params.insert("progressToken".into(), original.clone());
                        }
                        let _ = p.tx.send(Value::Object(body));
                    }
                    return;
                }
                let _ = events.send(Value::Object(body));
            }
        }
    }
}

/// Completes an `initialize` handshake: the negotiated version, after `initialized` is sent.
async fn initialized(link: &Link, init: Value) -> Result<(Value, String), String> {
    let version = init
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(UPSTREAM_PROTOCOL)
        .to_owned();
    link.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await?;
    Ok((init, version))
}

/// The gateway's own `initialize` parameters upstream.
fn initialize_params() -> Value {
    json!({
        "protocolVersion": UPSTREAM_PROTOCOL,
        "capabilities": { "sampling": {}, "elicitation": {} },
        "clientInfo": { "name": "mcp-gateway", "version": env!("CARGO_PKG_VERSION") },
    })
}

/// Where one stdio instance's shared session lives.
pub(crate) struct Mux {
    id: InstanceId,
    orch: Arc<DynOrchestrator>,
    max_message: usize,
    timeout: Duration,
    /// `initialize` before `server/discover` (see `GatewayConfig::initialize_first`).
    initialize_first: bool,
    link: tokio::sync::Mutex<Option<Arc<Link>>>,
    /// The channel obtained when the instance was first looked at, used by the first connect.
    first: Mutex<Option<StdioChannel>>,
    /// Server notifications for every client's standalone stream.
    pub(crate) events: broadcast::Sender<Value>,
}

impl Mux {
    pub(crate) fn new(
        id: InstanceId,
        orch: Arc<DynOrchestrator>,
        max_message: usize,
        timeout: Duration,
        first: StdioChannel,
    ) -> Self {
        Self {
            id,
            orch,
            max_message,
            timeout,
            initialize_first: false,
            link: tokio::sync::Mutex::new(None),
            first: Mutex::new(Some(first)),
            events: broadcast::channel(256).0,
        }
    }

    /// Sets the handshake order (see `GatewayConfig::initialize_first`).
    pub(crate) fn initialize_first(mut self, yes: bool) -> Self {
        self.initialize_first = yes;
        self
    }

    /// The live link, connecting and handshaking when there is none.
    pub(crate) async fn link(&self) -> Result<Arc<Link>, GatewayError> {
        let mut current = self.link.lock().await;
        if let Some(link) = current.as_ref()
            && !link.is_closed()
        {
            return Ok(Arc::clone(link));
        }
        *current = None;
        let link = self.connect().await?;
        *current = Some(Arc::clone(&link));
        Ok(link)
    }

    /// The current link if it is alive, without connecting.
    pub(crate) async fn current(&self) -> Option<Arc<Link>> {
        self.link
            .lock()
            .await
            .as_ref()
            .filter(|l| !l.is_closed())
            .cloned()
    }

    async fn connect(&self) -> Result<Arc<Link>, GatewayError> {
        let started = Instant::now();
        let first = self
            .first
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let channel = match first {
            Some(channel) => channel.with_max_message_bytes(self.max_message),
            None => match self.orch.connect(&self.id).await? {
                McpChannel::Stdio(channel) => channel.with_max_message_bytes(self.max_message),
                other => {
                    return Err(GatewayError::Upstream(format!(
                        "{} speaks {}, not stdio",
                        self.id,
                        other.transport()
                    )));
                }
            },
        };
        let (reader, mut writer) = tokio::io::split(channel);
        let (out_tx, mut out_rx) = mpsc::channel::<String>(64);
        let closed = CancellationToken::new();
        let link = Arc::new(Link {
            out: out_tx,
            routes: Mutex::new(Routes::default()),
            next_id: AtomicI64::new(1),
            closed: closed.clone(),
            handshake: OnceLock::new(),
            stateless: AtomicBool::new(false),
        });
        // Writer: one line per message; a failure closes the link.
        let writer_closed = closed.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = writer_closed.cancelled() => break,
                    next = out_rx.recv() => {
                        let Some(mut batch) = next else { break };
                        batch.push('\n');
                        // What else is queued goes in the same write: under many clients one
                        // syscall (and one wake-up of the reader) carries several requests.
                        while batch.len() < WRITE_BATCH_BYTES {
                            let Ok(message) = out_rx.try_recv() else { break };
                            batch.push_str(&message);
                            batch.push('\n');
                        }
                        if writer.write_all(batch.as_bytes()).await.is_err() || writer.flush().await.is_err() {
                            writer_closed.cancel();
                            break;
                        }
                    }
                }
            }
        });
        // Reader: routes every line; at the end, everyone waiting gets an error.
        let reader_link = Arc::clone(&link);
        let events = self.events.clone();
        let id = self.id.clone();
        let max = self.max_message;
        tokio::spawn(async move {
            let mut lines = FramedRead::new(reader, LinesCodec::new_with_max_length(max));
            let reason = loop {
                tokio::select! {
                    () = reader_link.closed.cancelled() => break format!("the connection to {id} was closed"),
                    next = lines.next() => match next {
                        Some(Ok(text)) if text.trim().is_empty() => {}
                        Some(Ok(text)) => match serde_json::from_str::<Value>(&text) {
                            Ok(value) => reader_link.dispatch(value, &events),
                            Err(e) => tracing::warn!(instance = %id, "the server wrote a line that is not JSON: {e}"),
                        },
                        Some(Err(e)) => break format!("{id} sent an unreadable message ({e}); the connection was closed"),
                        None => break format!("{id} closed its MCP channel (it stopped or restarted) before answering"),
                    }
                }
            };
            tracing::info!(instance = %id, "upstream stdio session ended: {reason}");
            reader_link.fail_all(&reason);
        });
        match self.handshake(&link, started).await {
            Ok(done) => {
                let _ = link.handshake.set(done);
                Ok(link)
            }
            Err(e) => {
                link.fail_all(&e);
                Err(GatewayError::Upstream(format!("{}: {e}", self.id)))
            }
        }
    }

    /// The upstream handshake and the tool list: `initialize` first when the mux was built
    /// `initialize_first` (a probe), otherwise [`Self::discover_first`].
    async fn handshake(&self, link: &Link, started: Instant) -> Result<(Value, ReadyInfo), String> {
        let early = if self.initialize_first {
            // Refused (an error answer) by a server that speaks only the stateless revision:
            // then discover. No answer at all is a failed handshake either way.
            link.exchange("initialize", initialize_params(), self.timeout)
                .await?
                .ok()
        } else {
            None
        };
        let (init, version) = if let Some(init) = early {
            initialized(link, init).await?
        } else {
            self.discover_first(link).await?
        };
        self.finish_handshake(link, init, version, started).await
    }

    /// `server/discover` first, as the official SDK clients do: a server that answers it and
    /// lists a revision with `initialize` (rmcp keeps both lifecycles open after a discover) or
    /// that does not know it (an error) gets `initialize`; a server that supports only the
    /// stateless revision (or locks a connection into it after a discover, as the Python SDK
    /// does) is spoken to statelessly, its discover result standing in for `initialize`'s.
    async fn discover_first(&self, link: &Link) -> Result<(Value, String), String> {
        link.stateless.store(true, Ordering::Relaxed);
        let discovered = link
            .exchange("server/discover", json!({}), self.timeout)
            .await;
        link.stateless.store(false, Ordering::Relaxed);
        let stateless_only = match &discovered {
            Ok(Ok(result)) => {
                let supported: Vec<&str> = result
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .map(|v| v.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                if supported.iter().any(|v| INITIALIZE_PROTOCOLS.contains(v)) {
                    None
                } else if supported.contains(&STATELESS_PROTOCOL) {
                    Some(result.clone())
                } else {
                    return Err(format!(
                        "the server supports protocol versions {supported:?}; the gateway speaks {:?} upstream",
                        [
                            INITIALIZE_PROTOCOLS[0],
                            INITIALIZE_PROTOCOLS[1],
                            STATELESS_PROTOCOL
                        ]
                    ));
                }
            }
            // An older server: method not found, invalid request, or no answer at all.
            Ok(Err(_)) | Err(_) => None,
        };
        let (init, version) = if let Some(discover) = stateless_only {
            link.stateless.store(true, Ordering::Relaxed);
            let mut init = json!({
                "protocolVersion": STATELESS_PROTOCOL,
                "capabilities": discover.get("capabilities").cloned().unwrap_or_else(|| json!({})),
                "serverInfo": discover
                    .get("_meta")
                    .and_then(|m| m.get("io.modelcontextprotocol/serverInfo"))
                    .cloned()
                    .unwrap_or_else(|| json!({"name": "", "version": ""})),
            });
            if let Some(instructions) = discover.get("instructions") {
                init["instructions"] = instructions.clone();
            }
            (init, STATELESS_PROTOCOL.to_owned())
        } else {
            let init = link
                .request("initialize", initialize_params(), self.timeout)
                .await?;
            initialized(link, init).await?
        };
        Ok((init, version))
    }

    /// Reads the tool list after a handshake and builds its [`ReadyInfo`].
    async fn finish_handshake(
        &self,
        link: &Link,
        init: Value,
        version: String,
        started: Instant,
    ) -> Result<(Value, ReadyInfo), String> {
        let mut tools = Vec::new();
        if init
            .get("capabilities")
            .and_then(|c| c.get("tools"))
            .is_some()
        {
            let mut cursor: Option<Value> = None;
            for _ in 0..100 {
                let params = match &cursor {
                    Some(c) => json!({ "cursor": c }),
                    None => json!({}),
                };
                let page = link.request("tools/list", params, self.timeout).await?;
                if let Some(items) = page.get("tools").and_then(Value::as_array) {
                    tools.extend(items.iter().cloned());
                }
                cursor = page.get("nextCursor").filter(|c| !c.is_null()).cloned();
                if cursor.is_none() {
                    break;
                }
            }
        }
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let info = ready_info(&init, &version, &tools, ms);
        Ok((init, info))
    }
}

impl Drop for Mux {
    fn drop(&mut self) {
        // The reader and writer tasks hold the channel; closing the link ends both, which drops
        // the channel and so detaches from the server (another client may then attach).
        if let Some(link) = self.link.get_mut().as_ref() {
            link.closed.cancel();
        }
    }
}

/// A client request in flight: its messages arrive on `rx`, the response last.
pub(crate) struct Call {
    /// Related messages, then the response.
    pub(crate) rx: mpsc::UnboundedReceiver<Value>,
    link: Arc<Link>,
    upstream_id: i64,
    finished: bool,
}

impl Call {
    /// Marks the call answered, so dropping it cancels nothing.
    pub(crate) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for Call {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // The caller went away before its answer: tell the server, forget the route.
        if self.link.forget(self.upstream_id).is_some() {
            let cancel = json!({
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": { "requestId": self.upstream_id, "reason": "the client disconnected" },
            });
            let _ = self.link.out.try_send(cancel.to_string());
        }
    }
}

impl Mux {
    /// Sends a client's request upstream.
    ///
    /// # Errors
    /// A JSON-RPC error response (with the client's id) when the server cannot be reached.
    pub(crate) async fn call(
        &self,
        session: &str,
        body: Map<String, Value>,
    ) -> Result<Call, Value> {
        let client_id = body.get("id").cloned();
        let gone =
            |e: String| jsonrpc::error_response(client_id.as_ref(), jsonrpc::UPSTREAM_GONE, &e);
        let link = self.link().await.map_err(|e| gone(e.to_string()))?;
        let (upstream_id, rx) = link.start(session, body, false).await.map_err(gone)?;
        Ok(Call {
            rx,
            link,
            upstream_id,
            finished: false,
        })
    }

    /// Passes on a client's notification or its response to a server request.
    pub(crate) async fn forward(&self, session: &str, message: Message) {
        let Some(link) = self.current().await else {
            return;
        };
        match message {
            Message::Notification { method, .. } if method == "notifications/initialized" => {}
            Message::Notification { method, mut body } => {
                if method == "notifications/cancelled" {
                    let client_id = body
                        .get("params")
                        .and_then(|p| p.get("requestId"))
                        .map(ToString::to_string);
                    let upstream = client_id.and_then(|c| {
                        link.routes()
                            .by_client
                            .get(&(session.to_owned(), c))
                            .copied()
                    });
                    let Some(upstream) = upstream else { return };
                    link.forget(upstream);
                    if let Some(params) = body.get_mut("params").and_then(Value::as_object_mut) {
                        params.insert("requestId".into(), json!(upstream));
                    }
                }
                let _ = link.send(&Value::Object(body)).await;
            }
            Message::Response { id, mut body } => {
                let original = id
                    .as_str()
                    .and_then(|ours| link.routes().server_requests.remove(ours));
                if let Some(original) = original {
                    body.insert("id".into(), original);
                    let _ = link.send(&Value::Object(body)).await;
                }
            }
            Message::Request { .. } => {}
        }
    }

    /// One ping through the shared session (connecting first when needed); a server that
    /// speaks only the stateless revision, which has no `ping`, is asked `server/discover`.
    pub(crate) async fn ping(&self) -> Result<ReadyInfo, String> {
        let link = self.link().await.map_err(|e| e.to_string())?;
        let method = if link.stateless.load(Ordering::Relaxed) {
            "server/discover"
        } else {
            "ping"
        };
        link.request(method, json!({}), self.timeout).await?;
        link.info()
            .cloned()
            .ok_or_else(|| "the handshake has not finished".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_orchestrator_api::memory::InMemoryOrchestrator;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

    /// A scripted server on the other end of the stdio channel.
    struct FakeServer {
        lines: tokio::io::Lines<BufReader<tokio::io::ReadHalf<DuplexStream>>>,
        writer: tokio::io::WriteHalf<DuplexStream>,
    }

    impl FakeServer {
        async fn recv(&mut self) -> Value {
            let line = tokio::time::timeout(Duration::from_secs(5), self.lines.next_line())
                .await
                .expect("a message within 5 s")
                .unwrap()
                .expect("the gateway kept the channel open");
            serde_json::from_str(&line).unwrap()
        }

        async fn send(&mut self, message: Value) {
            let mut line = message.to_string();
            line.push('\n');
            self.writer.write_all(line.as_bytes()).await.unwrap();
        }

        /// Answers the handshake of a legacy server (discover unknown, then initialize,
        /// initialized, tools/list).
        async fn handshake(&mut self) {
            let discover = self.recv().await;
            assert_eq!(discover["method"], "server/discover");
            self.send(json!({"jsonrpc": "2.0", "id": discover["id"], "error": {
                "code": -32601, "message": "method not found"}}))
                .await;
            let init = self.recv().await;
            assert_eq!(init["method"], "initialize");
            self.send(json!({"jsonrpc": "2.0", "id": init["id"], "result": {
                "protocolVersion": "2025-11-25",
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "fake", "version": "9"},
            }}))
            .await;
            assert_eq!(self.recv().await["method"], "notifications/initialized");
            let list = self.recv().await;
            assert_eq!(list["method"], "tools/list");
            self.send(
                json!({"jsonrpc": "2.0", "id": list["id"], "result": {"tools": [{"name": "t"}]}}),
            )
            .await;
        }
    }

    fn mux() -> (Mux, FakeServer) {
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(theirs);
        let orch: Arc<DynOrchestrator> = Arc::new(InMemoryOrchestrator::new());
        let mux = Mux::new(
            InstanceId::new("mcp-fake-0123456789"),
            orch,
            1 << 20,
            Duration::from_secs(5),
            StdioChannel::from_stream(ours),
        );
        (
            mux,
            FakeServer {
                lines: BufReader::new(r).lines(),
                writer: w,
            },
        )
    }

    fn request(id: &Value, method: &str, params: &Value) -> Map<String, Value> {
        let Value::Object(body) =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
        else {
            unreachable!()
        };
        body
    }

    // One story through one shared session: each step builds on the ids the previous ones used.
    #[allow(clippy::too_many_lines)]
    #[tokio::test]
    async fn ids_progress_server_requests_and_cancellation_are_routed_per_client() {
        let (mux, mut server) = mux();
        let (link, ()) = tokio::join!(mux.link(), server.handshake());
        let link = link.unwrap();
        assert_eq!(link.info().unwrap().server_name, "fake");
        assert_eq!(link.info().unwrap().tool_count, 1);

        // Two clients use the same id; each gets its own answer back under that id.
        let mut a = mux
            .call(
                "A",
                request(
                    &json!(1),
                    "tools/call",
                    &json!({"name": "t", "_meta": {"progressToken": "pa"}}),
                ),
            )
            .await
            .unwrap();
        let mut b = mux
            .call("B", request(&json!(1), "tools/call", &json!({"name": "t"})))
            .await
            .unwrap();
        let up_a = server.recv().await;
        let up_b = server.recv().await;
        assert_ne!(up_a["id"], up_b["id"]);
        let token = up_a["params"]["_meta"]["progressToken"].clone();
        assert_ne!(token, "pa", "progress tokens are rewritten");

        // Progress reaches A with A's token; a server request reaches the newest call (B).
        server
            .send(json!({"jsonrpc": "2.0", "method": "notifications/progress",
                "params": {"progressToken": token, "progress": 1}}))
            .await;
        assert_eq!(a.rx.recv().await.unwrap()["params"]["progressToken"], "pa");
        server
            .send(json!({"jsonrpc": "2.0", "id": 77, "method": "sampling/createMessage", "params": {}}))
            .await;
        let asked = b.rx.recv().await.unwrap();
        assert_eq!(asked["method"], "sampling/createMessage");
        let ours = asked["id"].clone();
        assert!(
            ours.as_str().is_some_and(|s| s.starts_with("gw-s-")),
            "{asked}"
        );
        let Ok(answer) =
            jsonrpc::classify(json!({"jsonrpc": "2.0", "id": ours, "result": {"ok": true}}))
        else {
            unreachable!()
        };
        mux.forward("B", answer).await;
        let back = server.recv().await;
        assert_eq!(
            (back["id"].clone(), back["result"]["ok"].clone()),
            (json!(77), json!(true))
        );

        // Other notifications go to every client's standalone stream.
        let mut events = mux.events.subscribe();
        server
            .send(json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"}))
            .await;
        let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(event["method"], "notifications/tools/list_changed");

        // Answers in reverse order still reach the right caller, with its own id.
        server
            .send(json!({"jsonrpc": "2.0", "id": up_b["id"], "result": {"who": "b"}}))
            .await;
        server
            .send(json!({"jsonrpc": "2.0", "id": up_a["id"], "result": {"who": "a"}}))
            .await;
        let got_b = b.rx.recv().await.unwrap();
        let got_a = a.rx.recv().await.unwrap();
        assert_eq!(
            (got_a["id"].clone(), got_a["result"]["who"].clone()),
            (json!(1), json!("a"))
        );
        assert_eq!(
            (got_b["id"].clone(), got_b["result"]["who"].clone()),
            (json!(1), json!("b"))
        );
        a.finish();
        b.finish();

        // A client's cancellation names its own id; the server sees its upstream id.
        let _c = mux
            .call(
                "C",
                request(&json!("c1"), "tools/call", &json!({"name": "t"})),
            )
            .await
            .unwrap();
        let up_c = server.recv().await;
        let Ok(cancel) = jsonrpc::classify(
            json!({"jsonrpc": "2.0", "method": "notifications/cancelled",
            "params": {"requestId": "c1"}}),
        ) else {
            unreachable!()
        };
        mux.forward("C", cancel).await;
        let forwarded = server.recv().await;
        assert_eq!(forwarded["method"], "notifications/cancelled");
        assert_eq!(forwarded["params"]["requestId"], up_c["id"]);

        // A caller that goes away (dropped HTTP request) cancels upstream too.
        let d = mux
            .call("D", request(&json!(5), "tools/call", &json!({"name": "t"})))
            .await
            .unwrap();
        let up_d = server.recv().await;
        drop(d);
        let forwarded = server.recv().await;
        assert_eq!(forwarded["method"], "notifications/cancelled");
        assert_eq!(forwarded["params"]["requestId"], up_d["id"]);
        // Its late answer goes nowhere, and the session keeps serving.
        server
            .send(json!({"jsonrpc": "2.0", "id": up_d["id"], "result": {}}))
            .await;
        let mut e = mux
            .call("E", request(&json!(6), "ping2", &json!({})))
            .await
            .unwrap();
        let up_e = server.recv().await;
        server
            .send(json!({"jsonrpc": "2.0", "id": up_e["id"], "result": {"e": 1}}))
            .await;
        assert_eq!(e.rx.recv().await.unwrap()["result"]["e"], 1);
        e.finish();
    }

    #[tokio::test]
    async fn a_server_that_goes_away_fails_every_pending_call_with_a_json_rpc_error() {
        let (mux, mut server) = mux();
        let (link, ()) = tokio::join!(mux.link(), server.handshake());
        link.unwrap();
        let mut a = mux
            .call("A", request(&json!(1), "tools/call", &json!({})))
            .await
            .unwrap();
        let mut b = mux
            .call("B", request(&json!("x"), "tools/call", &json!({})))
            .await
            .unwrap();
        let _ = server.recv().await;
        let _ = server.recv().await;
        drop(server);
        for (call, id) in [(&mut a, json!(1)), (&mut b, json!("x"))] {
            let answer = tokio::time::timeout(Duration::from_secs(5), call.rx.recv())
                .await
                .expect("no hang")
                .unwrap();
            assert_eq!(answer["id"], id);
            assert_eq!(answer["error"]["code"], jsonrpc::UPSTREAM_GONE, "{answer}");
            assert!(answer.get("result").is_none());
            call.finish();
        }
        assert!(
            mux.current().await.is_none(),
            "the link is gone; the next call reconnects"
        );
    }

    #[tokio::test]
    async fn a_server_speaking_only_the_stateless_revision_gets_discover_and_per_request_meta() {
        let (mux, mut server) = mux();
        let handshake = tokio::spawn(async move {
            let discover = server.recv().await;
            assert_eq!(discover["method"], "server/discover");
            let meta = &discover["params"]["_meta"];
            assert_eq!(
                meta["io.modelcontextprotocol/protocolVersion"],
                "2026-07-28"
            );
            assert!(meta["io.modelcontextprotocol/clientCapabilities"].is_object());
            server
                .send(json!({"jsonrpc": "2.0", "id": discover["id"], "result": {
                    "resultType": "complete", "supportedVersions": ["2026-07-28"],
                    "capabilities": {"tools": {}}, "ttlMs": 0, "cacheScope": "private",
                    "_meta": {"io.modelcontextprotocol/serverInfo": {"name": "modern", "version": "3"}},
                }}))
                .await;
            // No initialize: tools/list comes next, with the version in its metadata.
            let list = server.recv().await;
            assert_eq!(list["method"], "tools/list");
            assert_eq!(
                list["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
                "2026-07-28"
            );
            server
                .send(json!({"jsonrpc": "2.0", "id": list["id"], "result": {"tools": [{"name": "t"}]}}))
                .await;
            server
        });
        let link = mux.link().await.unwrap();
        let mut server = handshake.await.unwrap();
        let info = link.info().unwrap().clone();
        assert_eq!(info.protocol_version, "2026-07-28");
        assert_eq!(info.server_name, "modern");
        assert_eq!(link.init()["serverInfo"]["name"], "modern");
        // A 2025 client's request (no metadata) reaches the server with the stateless metadata
        // and the client's own progress token rewritten.
        let call = tokio::spawn(async move {
            let mut call = mux
                .call(
                    "s1",
                    request(
                        &json!(7),
                        "tools/call",
                        &json!({"name": "t", "_meta": {"progressToken": 5}}),
                    ),
                )
                .await
                .unwrap();
            let answer = call.rx.recv().await.unwrap();
            call.finish();
            answer
        });
        let up = server.recv().await;
        let meta = &up["params"]["_meta"];
        assert_eq!(
            meta["io.modelcontextprotocol/protocolVersion"],
            "2026-07-28"
        );
        assert_eq!(
            meta["io.modelcontextprotocol/clientInfo"]["name"],
            "mcp-gateway"
        );
        assert_ne!(meta["progressToken"], json!(5));
        server
            .send(json!({"jsonrpc": "2.0", "id": up["id"], "result": {"content": [], "resultType": "complete"}}))
            .await;
        let answer = call.await.unwrap();
        assert_eq!(answer["id"], json!(7));
        assert_eq!(answer["result"]["resultType"], "complete");
    }
}
