//! The HTTP surface: axum routes for discovery, `/version`, create/get/list/watch/delete of the
//! served resources, delete-collection, and the pod `log`, `status` and `attach` subresources.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::rejection::QueryRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Namespaces;
use crate::attach::{self, AttachOptions};
use crate::kind::ResourceKind;
use crate::kubelet::Kubelet;
use crate::logs::{LogLine, LogStore};
use crate::requests::RecordedRequest;
use crate::resources;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, FieldError, json_response};
use crate::store::{
    DeleteAction, DeleteOutcome, EventType, Filter, ObjectKey, Store, StoreEvent, WatchStart,
    stamp_deletion,
};
use crate::time;

/// Everything the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) store: Arc<Store>,
    pub(crate) logs: Arc<LogStore>,
    pub(crate) kubelet: Arc<Kubelet>,
    pub(crate) requests: Arc<Mutex<Vec<RecordedRequest>>>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) bookmark_interval: Duration,
    pub(crate) namespaces: Arc<Namespaces>,
    /// Bumped by `close_watches`: every open watch ends.
    pub(crate) watch_resets: Arc<tokio::sync::watch::Sender<u64>>,
}

type Shared = State<Arc<AppState>>;
type ApiResult = Result<Response, ApiError>;
type RawParams = Result<Query<Vec<(String, String)>>, QueryRejection>;

/// The router of the fake apiserver.
pub(crate) fn router(state: Arc<AppState>) -> Router {
    let collection = get(list_namespaced)
        .post(create)
        .delete(delete_collection)
        .put(not_allowed)
        .patch(not_allowed);
    let object = get(get_object)
        .delete(delete_object)
        .put(not_allowed)
        .patch(patch_object)
        .post(not_allowed);
    Router::new()
        .route("/version", get(version))
        .route("/api", get(api_versions))
        .route("/apis", get(api_groups))
        .route("/api/{version}", get(resource_list))
        .route("/apis/{group}/{version}", get(resource_list))
        .route("/api/{version}/namespaces/{ns}", get(namespace))
        .route("/api/{version}/{plural}", get(list_all))
        .route("/apis/{group}/{version}/{plural}", get(list_all))
        .route(
            "/api/{version}/namespaces/{ns}/{plural}",
            collection.clone(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}",
            collection,
        )
        .route(
            "/api/{version}/namespaces/{ns}/{plural}/{name}",
            object.clone(),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}",
            object,
        )
        .route(
            "/api/{version}/namespaces/{ns}/{plural}/{name}/{subresource}",
            get(get_subresource).post(post_subresource),
        )
        .route(
            "/apis/{group}/{version}/namespaces/{ns}/{plural}/{name}/{subresource}",
            get(get_subresource),
        )
        .fallback(unknown)
        .layer(middleware::from_fn_with_state(Arc::clone(&state), record))
        .with_state(state)
}

async fn record(State(state): Shared, request: Request, next: Next) -> Response {
    let entry = RecordedRequest {
        method: request.method().clone(),
        path: request.uri().path().to_owned(),
        query: request.uri().query().map(str::to_owned),
    };
    state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(entry);
    next.run(request).await
}

async fn unknown() -> ApiError {
    ApiError::unknown_path()
}

async fn not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// Query parameters, in order.
#[derive(Debug, Default)]
struct Params(Vec<(String, String)>);

impl Params {
    fn from(raw: RawParams) -> Result<Self, ApiError> {
        raw.map(|Query(pairs)| Self(pairs))
            .map_err(|e| ApiError::bad_request(format!("invalid query: {e}")))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A boolean as Go's `strconv.ParseBool` reads it.
    fn flag(&self, name: &str) -> Result<bool, ApiError> {
        match self.get(name) {
            None | Some("" | "0" | "f" | "F" | "false" | "FALSE" | "False") => Ok(false),
            Some("1" | "t" | "T" | "true" | "TRUE" | "True") => Ok(true),
            Some(other) => Err(ApiError::bad_request(format!(
                "invalid value for {name}: strconv.ParseBool: parsing \"{other}\": invalid syntax"
            ))),
        }
    }

    fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!(
                        "invalid value for {name}: strconv.ParseInt: parsing \"{v}\": invalid syntax"
                    ))
                })
            })
            .transpose()
    }
}

/// Path parameters whose rejection is a `Status` (404), not axum's plain-text answer.
struct StatusPath<T>(T);

impl<S, T> FromRequestParts<S> for StatusPath<T>
where
    S: Send + Sync,
    T: serde::de::DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(value)| Self(value))
            .map_err(|_| ApiError::unknown_path())
    }
}

/// Resolves `{group}/{version}/{plural}` to a served kind.
fn resolve(group: &str, version: &str, plural: &str) -> Result<ResourceKind, ApiError> {
    if version != "v1" {
        return Err(ApiError::unknown_path());
    }
    ResourceKind::from_plural(group, plural).ok_or_else(ApiError::unknown_path)
}

/// Path parameters of every resource route.
#[derive(Debug, serde::Deserialize)]
struct ResourcePath {
    #[serde(default)]
    group: String,
    version: String,
    #[serde(default)]
    ns: Option<String>,
    plural: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    subresource: Option<String>,
}

impl ResourcePath {
    fn kind(&self) -> Result<ResourceKind, ApiError> {
        resolve(&self.group, &self.version, &self.plural)
    }

    fn key(&self) -> Result<ObjectKey, ApiError> {
        Ok(ObjectKey::new(
            self.kind()?,
            self.ns.as_deref().unwrap_or_default(),
            self.name.as_deref().unwrap_or_default(),
        ))
    }
}

fn ok_json(body: &Value) -> Response {
    json_response(StatusCode::OK, body)
}

async fn version() -> Response {
    ok_json(&json!({
        "major": "1",
        "minor": "33",
        "emulationMajor": "1",
        "emulationMinor": "33",
        "gitVersion": "v1.33.0-mcp-k8s-fake",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-04-23T00:00:00Z",
        "goVersion": "go1.24.2",
        "compiler": "gc",
        "platform": "linux/amd64",
    }))
}

async fn api_versions() -> Response {
    ok_json(&json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
    }))
}

/// The named groups of the served kinds, each at v1.
fn served_groups() -> Vec<&'static str> {
    let mut groups: Vec<&'static str> = ResourceKind::ALL
        .into_iter()
        .map(ResourceKind::group)
        .filter(|g| !g.is_empty())
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

async fn api_groups() -> Response {
    let groups: Vec<Value> = served_groups()
        .into_iter()
        .map(|name| {
            let version = json!({"groupVersion": format!("{name}/v1"), "version": "v1"});
            json!({"name": name, "versions": [version.clone()], "preferredVersion": version})
        })
        .collect();
    ok_json(&json!({
        "kind": "APIGroupList",
        "apiVersion": "v1",
        "groups": groups,
    }))
}

async fn resource_list(
    StatusPath(path): StatusPath<std::collections::HashMap<String, String>>,
) -> ApiResult {
    let group = path.get("group").map(String::as_str).unwrap_or_default();
    let version = path.get("version").map(String::as_str).unwrap_or_default();
    if version != "v1" || !(group.is_empty() || served_groups().contains(&group)) {
        return Err(ApiError::unknown_path());
    }
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "watch"
    ]);
    let mut resources: Vec<Value> = ResourceKind::ALL
        .into_iter()
        .filter(|kind| kind.group() == group)
        .map(|kind| {
            json!({
                "name": kind.plural(),
                "singularName": kind.kind().to_lowercase(),
                "namespaced": true,
                "kind": kind.kind(),
                "verbs": verbs,
            })
        })
        .collect();
    if group.is_empty() {
        resources.push(json!({"name": "pods/attach", "singularName": "", "namespaced": true, "kind": "PodAttachOptions", "verbs": ["create", "get"]}));
        resources.push(json!({"name": "pods/log", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
        resources.push(json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy", "version": "v1", "kind": "Eviction", "verbs": ["create"]}));
        resources.push(json!({"name": "pods/status", "singularName": "", "namespaced": true, "kind": "Pod", "verbs": ["get"]}));
    }
    let group_version = if group.is_empty() {
        "v1".to_owned()
    } else {
        format!("{group}/v1")
    };
    Ok(ok_json(&json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })))
}

/// Namespaces are not stored: every namespace exists and is active.
async fn namespace(StatusPath((version, ns)): StatusPath<(String, String)>) -> ApiResult {
    if version != "v1" {
        return Err(ApiError::unknown_path());
    }
    Ok(ok_json(&json!({
        "kind": "Namespace",
        "apiVersion": "v1",
        "metadata": {"name": ns},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })))
}

fn parse_filter(
    kind: ResourceKind,
    namespace: Option<String>,
    params: &Params,
) -> Result<Filter, ApiError> {
    let labels = LabelSelector::parse(params.get("labelSelector").unwrap_or_default())
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(params.get("fieldSelector").unwrap_or_default(), kind)
        .map_err(ApiError::bad_request)?;
    Ok(Filter {
        namespace,
        labels,
        fields,
    })
}

async fn list_all(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
) -> ApiResult {
    let params = Params::from(raw)?;
    list_or_watch(&state, path.kind()?, None, &params)
}

async fn list_namespaced(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
) -> ApiResult {
    let params = Params::from(raw)?;
    list_or_watch(&state, path.kind()?, path.ns.clone(), &params)
}

fn strip_type_meta(mut object: Value) -> Value {
    if let Some(map) = object.as_object_mut() {
        map.remove("kind");
        map.remove("apiVersion");
    }
    object
}

fn list_or_watch(
    state: &Arc<AppState>,
    kind: ResourceKind,
    namespace: Option<String>,
    params: &Params,
) -> ApiResult {
    let filter = parse_filter(kind, namespace, params)?;
    if params.flag("watch")? {
        return watch(state, kind, filter, params);
    }
    let limit = params.int("limit")?.and_then(|l| u64::try_from(l).ok());
    let continue_token = params.get("continue").filter(|c| !c.is_empty());
    let exact_rv = match (
        params.get("resourceVersionMatch"),
        params.get("resourceVersion"),
    ) {
        (Some("Exact"), Some(rv)) => Some(parse_rv(rv)?),
        _ => None,
    };
    let page = state
        .store
        .list(kind, &filter, limit, continue_token, exact_rv)?;
    let mut metadata = json!({ "resourceVersion": page.resource_version.to_string() });
    if let Some(token) = page.continue_token {
        metadata["continue"] = json!(token);
    }
    if let Some(remaining) = page.remaining {
        metadata["remainingItemCount"] = json!(remaining);
    }
    let items: Vec<Value> = page.items.into_iter().map(strip_type_meta).collect();
    Ok(ok_json(&json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": metadata,
        "items": items,
    })))
}

fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse::<u64>()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version \"{rv}\"")))
}

/// Decides how a watch reports a change, given the selectors (objects moving in or out of the
/// selection appear as ADDED or DELETED, like the apiserver's watch cache does).
fn watch_view(event: &StoreEvent, filter: &Filter) -> Option<(EventType, Value)> {
    let now = filter.matches(&event.object);
    let before = event.previous.as_ref().is_some_and(|p| filter.matches(p));
    let event_type = match event.event_type {
        EventType::Added => now.then_some(EventType::Added)?,
        EventType::Deleted => before.then_some(EventType::Deleted)?,
        EventType::Modified => match (before, now) {
            (true, true) => EventType::Modified,
            (false, true) => EventType::Added,
            (true, false) => EventType::Deleted,
            (false, false) => return None,
        },
    };
    Some((event_type, event.object.clone()))
}

fn event_line(event_type: &str, object: &Value) -> Bytes {
    let mut line = json!({ "type": event_type, "object": object }).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(kind: ResourceKind, rv: u64, initial_events_end: bool) -> Bytes {
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if initial_events_end {
        metadata["annotations"] = json!({ "k8s.io/initial-events-end": "true" });
    }
    event_line(
        "BOOKMARK",
        &json!({ "kind": kind.kind(), "apiVersion": kind.api_version(), "metadata": metadata }),
    )
}

fn streaming_response(content_type: &'static str, rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
    });
    let mut response = Body::from_stream(stream).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn watch(state: &Arc<AppState>, kind: ResourceKind, filter: Filter, params: &Params) -> ApiResult {
    let timeout = params
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t.unsigned_abs()));
    let bookmarks = params.flag("allowWatchBookmarks")?;
    let send_initial = params.flag("sendInitialEvents")?;
    let start = match params.get("resourceVersion") {
        None | Some("" | "0") => WatchStart::Now,
        Some(_) if send_initial => WatchStart::Now,
        Some(rv) => WatchStart::After(parse_rv(rv)?),
    };
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let subscription = match state.store.watch(kind, &filter, start) {
        Ok(subscription) => subscription,
        Err(error) => {
            // Like the apiserver: the watch opens, reports the error as an event and ends.
            let _ = tx.try_send(event_line("ERROR", &error.to_status()));
            drop(tx);
            return Ok(streaming_response("application/json", rx));
        }
    };
    let cancel = state.cancel.clone();
    let interval = state.bookmark_interval;
    let mut resets = state.watch_resets.subscribe();
    state.tracker.spawn(async move {
        let mut receiver = subscription.receiver;
        let mut last_rv = subscription.resource_version;
        for event in &subscription.initial {
            if let Some((event_type, object)) = watch_view(event, &filter)
                && tx.send(event_line(event_type.as_str(), &object)).await.is_err()
            {
                return;
            }
        }
        if send_initial && bookmarks && tx.send(bookmark(kind, last_rv, true)).await.is_err() {
            return;
        }
        let deadline = timeout.and_then(|t| tokio::time::Instant::now().checked_add(t));
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            let expired = async {
                match deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let line = tokio::select! {
                () = cancel.cancelled() => return,
                _ = resets.changed() => return,
                () = expired => return,
                () = tx.closed() => return,
                _ = ticker.tick() => {
                    if !bookmarks {
                        continue;
                    }
                    bookmark(kind, last_rv, false)
                }
                next_event = receiver.recv() => match next_event {
                    Ok(event) => {
                        last_rv = last_rv.max(event.rv);
                        if !Store::event_in_scope(&event, kind, &filter) {
                            continue;
                        }
                        let Some((event_type, object)) = watch_view(&event, &filter) else {
                            continue;
                        };
                        event_line(event_type.as_str(), &object)
                    }
                    // A watcher that fell behind is closed; the client resumes from its last
                    // resourceVersion, which the history still covers.
                    Err(broadcast::error::RecvError::Lagged(_) | broadcast::error::RecvError::Closed) => return,
                },
            };
            if tx.send(line).await.is_err() {
                return;
            }
        }
    });
    Ok(streaming_response("application/json", rx))
}

async fn get_object(State(state): Shared, StatusPath(path): StatusPath<ResourcePath>) -> ApiResult {
    let key = path.key()?;
    state
        .store
        .get(&key)
        .map(|object| ok_json(&object))
        .ok_or_else(|| ApiError::not_found(key.kind, &key.name))
}

/// PATCH of an object: a JSON merge patch (RFC 7386) of its `metadata` (labels, annotations,
/// ownerReferences). Patches of other fields, and other patch types, are not modelled (405,
/// 415).
async fn patch_object(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    let key = path.key()?;
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.split(';').next().map(str::trim) != Some("application/merge-patch+json") {
        return Err(ApiError::unsupported_media_type(content_type));
    }
    let document: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let Some(fields) = document.as_object() else {
        return Err(ApiError::bad_request("a merge patch must be a JSON object"));
    };
    if fields
        .keys()
        .any(|k| !matches!(k.as_str(), "metadata" | "apiVersion" | "kind"))
    {
        return Err(ApiError::method_not_allowed());
    }
    let meta_patch = document.get("metadata").cloned().unwrap_or(Value::Null);
    let mut errors = Vec::new();
    for (i, owner) in meta_patch["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        for field in ["apiVersion", "kind", "name", "uid"] {
            if owner[field].as_str().is_none_or(str::is_empty) {
                errors.push(crate::status::FieldError::required(
                    format!("metadata.ownerReferences[{i}].{field}"),
                    "",
                ));
            }
        }
    }
    if !errors.is_empty() {
        return Err(ApiError::invalid(key.kind, &key.name, &errors));
    }
    let updated = state.store.update(&key, None, |object| {
        let before = object["metadata"].clone();
        if meta_patch.is_object() {
            merge_patch(&mut object["metadata"], &meta_patch);
        }
        // The identity of an object is not the patch's to change.
        for field in [
            "name",
            "namespace",
            "uid",
            "creationTimestamp",
            "resourceVersion",
        ] {
            object["metadata"][field] = before[field].clone();
        }
        Ok::<bool, ApiError>(object["metadata"] != before)
    })?;
    match updated.or_else(|| state.store.get(&key)) {
        Some(object) => Ok(ok_json(&object)),
        None => Err(ApiError::not_found(key.kind, &key.name)),
    }
}

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge_patch(&mut target[key.as_str()], value);
        }
    }
}

async fn get_subresource(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    let key = path.key()?;
    match (key.kind, path.subresource.as_deref()) {
        (ResourceKind::Pod, Some("attach")) => {
            pod_attach(&state, &key, &Params::from(raw)?, &headers, upgrade).await
        }
        (ResourceKind::Pod, Some("log")) => pod_log(&state, &key, &Params::from(raw)?),
        (
            ResourceKind::Pod | ResourceKind::Service | ResourceKind::PersistentVolumeClaim,
            Some("status"),
        ) => state
            .store
            .get(&key)
            .map(|object| ok_json(&object))
            .ok_or_else(|| ApiError::not_found(key.kind, &key.name)),
        _ => Err(ApiError::unknown_path()),
    }
}

/// POST is how SPDY clients attach; only the WebSocket (GET) upgrade is modelled, so a POST
/// attach gets the answer to a request without a usable upgrade.
async fn post_subresource(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    body: Bytes,
) -> ApiResult {
    let key = path.key()?;
    match (key.kind, path.subresource.as_deref()) {
        (ResourceKind::Pod, Some("attach")) => {
            pod_attach(&state, &key, &Params::from(raw)?, &headers, upgrade).await
        }
        (ResourceKind::Pod, Some("eviction")) => pod_eviction(&state, &key, &body),
        (_, Some("log" | "status")) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::unknown_path()),
    }
}

/// The `pods/eviction` subresource (policy/v1 `Eviction`): no PodDisruptionBudget is modelled,
/// so every eviction is allowed and becomes a delete with the eviction's `deleteOptions` (the
/// pod's own grace period by default); 201 with a Success `Status`.
fn pod_eviction(state: &AppState, key: &ObjectKey, body: &[u8]) -> ApiResult {
    let eviction: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid Eviction: {e}")))?;
    if let Some(kind) = eviction["kind"].as_str()
        && kind != "Eviction"
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind (Eviction)"
        )));
    }
    if eviction["metadata"]["name"].as_str() != Some(key.name.as_str()) {
        return Err(ApiError::bad_request(
            "name in URL does not match name in Eviction object",
        ));
    }
    let delete_options = match eviction.get("deleteOptions").filter(|o| !o.is_null()) {
        Some(options) => {
            serde_json::to_vec(options).map_err(|e| ApiError::internal(e.to_string()))?
        }
        None => Vec::new(),
    };
    let options = DeleteOptions::parse(&Params::default(), &delete_options)?;
    delete_one(state, key, &options)?.ok_or_else(|| ApiError::not_found(key.kind, &key.name))?;
    Ok(json_response(
        StatusCode::CREATED,
        &json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Success",
            "code": 201,
        }),
    ))
}

async fn pod_attach(
    state: &Arc<AppState>,
    key: &ObjectKey,
    params: &Params,
    headers: &HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> ApiResult {
    let options = AttachOptions {
        container: params
            .get("container")
            .filter(|c| !c.is_empty())
            .map(str::to_owned),
        stdin: params.flag("stdin")?,
        stdout: params.flag("stdout")?,
        stderr: params.flag("stderr")?,
    };
    if params.flag("tty")? {
        return Err(ApiError::bad_request(
            "tty attach is not modelled by mcp-k8s-fake",
        ));
    }
    attach::attach(
        &state.store,
        &state.kubelet,
        state.cancel.clone(),
        key,
        options,
        headers,
        upgrade,
    )
    .await
}

async fn create(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
    body: Bytes,
) -> ApiResult {
    let params = Params::from(raw)?;
    let kind = path.kind()?;
    let namespace = path.ns.clone().unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {}): couldn't get version/kind; json parse error: {e}",
            kind.kind()
        ))
    })?;
    let meta = &body["metadata"];
    crate::object::validate_new_name(kind, meta["name"].as_str(), meta["generateName"].as_str())?;
    let mut prepared = state.store.with_allocators(|allocators| {
        resources::prepare_create(kind, &namespace, &body, allocators)
    })?;
    if kind == ResourceKind::Pod {
        prepared =
            crate::admission::admit_pod(&state.store, &state.namespaces, &namespace, prepared)?;
    }
    if params.get("dryRun").is_some() {
        let mut object = prepared;
        if object["metadata"]["name"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            let prefix = object["metadata"]["generateName"]
                .as_str()
                .unwrap_or_default();
            object["metadata"]["name"] = json!(crate::names::generate_name(prefix));
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        if state
            .store
            .get(&ObjectKey::new(kind, &namespace, &name))
            .is_some()
        {
            return Err(ApiError::already_exists(kind, &name));
        }
        object["metadata"]["namespace"] = json!(namespace);
        return Ok(json_response(StatusCode::CREATED, &object));
    }
    let created = state.store.create(kind, &namespace, prepared)?;
    if kind == ResourceKind::Pod {
        state.kubelet.spawn(&created);
    }
    Ok(json_response(StatusCode::CREATED, &created))
}

/// The parts of `DeleteOptions` the fake honours.
#[derive(Debug, Default)]
struct DeleteOptions {
    grace_period_seconds: Option<i64>,
    precondition_uid: Option<String>,
    precondition_rv: Option<String>,
    dry_run: bool,
}

impl DeleteOptions {
    /// Query parameters first, then the body (which wins), as the apiserver decodes them.
    fn parse(params: &Params, body: &[u8]) -> Result<Self, ApiError> {
        let mut options = Self {
            grace_period_seconds: params.int("gracePeriodSeconds")?,
            dry_run: params.get("dryRun").is_some(),
            ..Self::default()
        };
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(options);
        }
        let value: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid DeleteOptions: {e}")))?;
        if let Some(kind) = value["kind"].as_str()
            && kind != "DeleteOptions"
        {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({kind}) does not match the expected kind (DeleteOptions)"
            )));
        }
        if let Some(grace) = value.get("gracePeriodSeconds").filter(|g| !g.is_null()) {
            options.grace_period_seconds = Some(grace.as_i64().ok_or_else(|| {
                ApiError::bad_request(
                    "invalid DeleteOptions: gracePeriodSeconds must be an integer",
                )
            })?);
        }
        options.precondition_uid = value["preconditions"]["uid"].as_str().map(str::to_owned);
        options.precondition_rv = value["preconditions"]["resourceVersion"]
            .as_str()
            .map(str::to_owned);
        if value["dryRun"].as_array().is_some_and(|a| !a.is_empty()) {
            options.dry_run = true;
        }
        Ok(options)
    }
}

/// Whether a pod delete started (or shortened) a graceful termination the kubelet must carry out.
enum PodDeletion {
    Graceful(i64),
    None,
}

fn check_preconditions(
    kind: ResourceKind,
    object: &Value,
    options: &DeleteOptions,
) -> Result<(), ApiError> {
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if let Some(uid) = &options.precondition_uid {
        let have = object["metadata"]["uid"].as_str().unwrap_or_default();
        if uid != have {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"
                ),
            ));
        }
    }
    if let Some(rv) = &options.precondition_rv {
        let have = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default();
        if rv != have {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {have}"
                ),
            ));
        }
    }
    Ok(())
}

/// The pod strategy's graceful-delete rules: returns the action and the grace period to enforce.
fn decide_pod_delete(pod: &Value, options: &DeleteOptions) -> (DeleteAction, PodDeletion) {
    let mut period = options
        .grace_period_seconds
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    let unscheduled = pod["spec"]["nodeName"].as_str().is_none_or(str::is_empty);
    let terminal = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    if unscheduled || terminal {
        period = 0;
    }
    if period < 0 {
        period = 1;
    }
    if period == 0 {
        return (
            DeleteAction::RemoveAs(stamp_deletion(pod, 0)),
            PodDeletion::None,
        );
    }
    if let Some(current) = pod["metadata"]["deletionGracePeriodSeconds"].as_i64()
        && !pod["metadata"]["deletionTimestamp"].is_null()
        && current <= period
    {
        return (DeleteAction::Unchanged, PodDeletion::None);
    }
    (
        DeleteAction::Update(stamp_deletion(pod, period)),
        PodDeletion::Graceful(period),
    )
}

/// Deletes one object; returns the delete outcome (None when absent).
fn delete_one(
    state: &AppState,
    key: &ObjectKey,
    options: &DeleteOptions,
) -> Result<Option<DeleteOutcome>, ApiError> {
    if options.dry_run {
        let object = state.store.get(key);
        if let Some(object) = &object {
            check_preconditions(key.kind, object, options)?;
        }
        return Ok(object.map(DeleteOutcome::Kept));
    }
    let mut pod_deletion = PodDeletion::None;
    let outcome = state.store.delete(key, None, |object| {
        check_preconditions(key.kind, object, options)?;
        if key.kind != ResourceKind::Pod {
            return Ok(DeleteAction::Remove);
        }
        let (action, deletion) = decide_pod_delete(object, options);
        pod_deletion = deletion;
        Ok(action)
    })?;
    if key.kind == ResourceKind::Pod
        && let Some(outcome) = &outcome
    {
        match (outcome, pod_deletion) {
            (DeleteOutcome::Removed(pod), _) => {
                if let Some(uid) = pod["metadata"]["uid"].as_str() {
                    state.kubelet.removed(uid);
                }
            }
            (DeleteOutcome::Kept(pod), PodDeletion::Graceful(period)) => {
                if let Some(uid) = pod["metadata"]["uid"].as_str() {
                    state.kubelet.terminate(uid, period);
                }
            }
            (DeleteOutcome::Kept(_), PodDeletion::None) => {}
        }
    }
    Ok(outcome)
}

async fn delete_object(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
    body: Bytes,
) -> ApiResult {
    let params = Params::from(raw)?;
    let key = path.key()?;
    let options = DeleteOptions::parse(&params, &body)?;
    let outcome = delete_one(&state, &key, &options)?
        .ok_or_else(|| ApiError::not_found(key.kind, &key.name))?;
    Ok(match outcome {
        DeleteOutcome::Kept(object) => ok_json(&object),
        DeleteOutcome::Removed(object) if key.kind.returns_deleted_object() => ok_json(&object),
        DeleteOutcome::Removed(object) => {
            let mut details = json!({
                "name": key.name,
                "kind": key.kind.plural(),
                "uid": object["metadata"]["uid"],
            });
            if !key.kind.group().is_empty() {
                details["group"] = json!(key.kind.group());
            }
            ok_json(&json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }))
        }
    })
}

async fn delete_collection(
    State(state): Shared,
    StatusPath(path): StatusPath<ResourcePath>,
    raw: RawParams,
    body: Bytes,
) -> ApiResult {
    let params = Params::from(raw)?;
    let kind = path.kind()?;
    let namespace = path.ns.clone().unwrap_or_default();
    let filter = parse_filter(kind, Some(namespace.clone()), &params)?;
    let options = DeleteOptions::parse(&params, &body)?;
    let page = state.store.list(kind, &filter, None, None, None)?;
    let mut items = Vec::new();
    for object in page.items {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        let key = ObjectKey::new(kind, &namespace, name);
        match delete_one(&state, &key, &options)? {
            Some(DeleteOutcome::Kept(object) | DeleteOutcome::Removed(object)) => {
                items.push(strip_type_meta(object));
            }
            None => {}
        }
    }
    Ok(ok_json(&json!({
        "kind": kind.list_kind(),
        "apiVersion": kind.api_version(),
        "metadata": { "resourceVersion": state.store.resource_version().to_string() },
        "items": items,
    })))
}

/// Options of a log request, validated like `PodLogOptions`.
#[derive(Debug)]
struct LogOptions {
    container: Option<String>,
    follow: bool,
    previous: bool,
    timestamps: bool,
    tail_lines: Option<usize>,
    since: Option<k8s_openapi::jiff::Timestamp>,
    limit_bytes: Option<usize>,
}

impl LogOptions {
    fn parse(pod_name: &str, params: &Params) -> Result<Self, ApiError> {
        let mut errors = Vec::new();
        let tail = params.int("tailLines")?;
        if let Some(tail) = tail.filter(|t| *t < 0) {
            errors.push(FieldError::invalid(
                "tailLines",
                tail.to_string(),
                "must be greater than or equal to 0",
            ));
        }
        let since_seconds = params.int("sinceSeconds")?;
        if let Some(seconds) = since_seconds.filter(|s| *s < 1) {
            errors.push(FieldError::invalid(
                "sinceSeconds",
                seconds.to_string(),
                "must be greater than 0",
            ));
        }
        let since_time = match params.get("sinceTime").filter(|t| !t.is_empty()) {
            Some(raw) => Some(time::parse(raw).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "parsing time \"{raw}\" as \"2006-01-02T15:04:05Z07:00\": cannot parse"
                ))
            })?),
            None => None,
        };
        if since_seconds.is_some() && since_time.is_some() {
            errors.push(FieldError::forbidden(
                "",
                "at most one of `sinceTime` or `sinceSeconds` may be specified",
            ));
        }
        let limit_bytes = params.int("limitBytes")?;
        if let Some(limit) = limit_bytes.filter(|l| *l < 1) {
            errors.push(FieldError::invalid(
                "limitBytes",
                limit.to_string(),
                "must be greater than 0",
            ));
        }
        if !errors.is_empty() {
            return Err(ApiError::invalid_options(
                "PodLogOptions",
                pod_name,
                &errors,
            ));
        }
        let since =
            since_time.or_else(|| since_seconds.map(|s| time::plus_seconds(time::now(), -s)));
        Ok(Self {
            container: params
                .get("container")
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
            follow: params.flag("follow")?,
            previous: params.flag("previous")?,
            timestamps: params.flag("timestamps")?,
            tail_lines: tail.and_then(|t| usize::try_from(t).ok()),
            since,
            limit_bytes: limit_bytes.and_then(|l| usize::try_from(l).ok()),
        })
    }

    fn render(&self, line: &LogLine) -> String {
        if self.timestamps {
            format!("{} {}\n", time::format_nanos(line.time), line.text)
        } else {
            format!("{}\n", line.text)
        }
    }
}

/// Picks the container instance to read, with the kubelet's error messages.
fn log_container_id(pod: &Pod, container: &str, previous: bool) -> Result<String, ApiError> {
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|statuses| statuses.iter().find(|s| s.name == container))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "container \"{container}\" in pod \"{pod_name}\" is not available"
            ))
        })?;
    let state = status.state.clone().unwrap_or_default();
    let last = status
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref());
    let not_found = || {
        ApiError::bad_request(format!(
            "previous terminated container \"{container}\" in pod \"{pod_name}\" not found"
        ))
    };
    if previous {
        return last
            .and_then(|t| t.container_id.clone())
            .ok_or_else(not_found);
    }
    // The kubelet's validateContainerLogStatus: a terminated container without an id (the
    // runtime lost it, or the next run did not start) falls back to the last run's, else "is
    // terminated".
    let terminated = || {
        ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{pod_name}\" is terminated"
        ))
    };
    if state.running.is_some()
        && let Some(id) = &status.container_id
    {
        return Ok(id.clone());
    }
    if let Some(current) = &state.terminated {
        if let Some(id) = current
            .container_id
            .as_ref()
            .or(status.container_id.as_ref())
        {
            return Ok(id.clone());
        }
        return last
            .and_then(|t| t.container_id.clone())
            .ok_or_else(terminated);
    }
    if let Some(last) = last {
        return last.container_id.clone().ok_or_else(terminated);
    }
    let reason = state
        .waiting
        .and_then(|w| w.reason)
        .unwrap_or_else(|| "ContainerCreating".to_owned());
    let why = match reason.as_str() {
        "ErrImagePull" => "image can't be pulled".to_owned(),
        "ImagePullBackOff" => "trying and failing to pull image".to_owned(),
        other => other.to_owned(),
    };
    Err(ApiError::bad_request(format!(
        "container \"{container}\" in pod \"{pod_name}\" is waiting to start: {why}"
    )))
}

fn pod_log(state: &Arc<AppState>, key: &ObjectKey, params: &Params) -> ApiResult {
    let object = state
        .store
        .get(key)
        .ok_or_else(|| ApiError::not_found(ResourceKind::Pod, &key.name))?;
    let options = LogOptions::parse(&key.name, params)?;
    let pod: Pod = serde_json::from_value(object).map_err(|e| ApiError::internal(e.to_string()))?;
    let spec = pod.spec.clone().unwrap_or_default();
    let container = match &options.container {
        Some(name) => {
            if !spec.containers.iter().any(|c| c.name == *name) {
                return Err(ApiError::bad_request(format!(
                    "container {name} is not valid for pod {}",
                    key.name
                )));
            }
            name.clone()
        }
        None => match spec.containers.as_slice() {
            [only] => only.name.clone(),
            many => {
                let names: Vec<&str> = many.iter().map(|c| c.name.as_str()).collect();
                return Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {}, choose one of: [{}]",
                    key.name,
                    names.join(" ")
                )));
            }
        },
    };
    if spec.node_name.as_deref().is_none_or(str::is_empty) {
        // The registry's LogLocation gives no location for a pod without a node, and the
        // location streamer answers that with an empty 200 (also when following).
        let mut response = (StatusCode::OK, String::new()).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(response);
    }
    let container_id = log_container_id(&pod, &container, options.previous)?;
    let read = state.logs.read(&container_id, 0);
    let (lines, next, finished) = match read {
        Some(read) => (read.lines, read.next, read.finished),
        None => (Vec::new(), 0, true),
    };
    let mut selected: Vec<&LogLine> = lines
        .iter()
        .filter(|line| options.since.is_none_or(|since| line.time >= since))
        .collect();
    if let Some(tail) = options.tail_lines {
        let skip = selected.len().saturating_sub(tail);
        selected.drain(..skip);
    }
    let mut initial: String = selected.iter().map(|line| options.render(line)).collect();
    let mut budget = options.limit_bytes;
    if let Some(limit) = budget {
        truncate_bytes(&mut initial, limit);
        budget = Some(limit - initial.len());
    }
    if !options.follow || finished || budget == Some(0) {
        let mut response = (StatusCode::OK, initial).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        return Ok(response);
    }
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let logs = Arc::clone(&state.logs);
    let cancel = state.cancel.clone();
    state.tracker.spawn(async move {
        let mut changes = logs.subscribe();
        if !initial.is_empty() && tx.send(Bytes::from(initial)).await.is_err() {
            return;
        }
        let mut next = next;
        loop {
            let Some(read) = logs.read(&container_id, next) else {
                return;
            };
            next = read.next;
            let mut chunk: String = read.lines.iter().map(|line| options.render(line)).collect();
            if let Some(limit) = budget.as_mut() {
                truncate_bytes(&mut chunk, *limit);
                *limit -= chunk.len();
            }
            if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                return;
            }
            if read.finished || budget == Some(0) {
                return;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tx.closed() => return,
                update = changes.changed() => if update.is_err() { return },
            }
        }
    });
    Ok(streaming_response("text/plain", rx))
}

/// Cuts `text` to at most `limit` bytes on a character boundary.
fn truncate_bytes(text: &mut String, limit: usize) {
    if text.len() > limit {
        let mut cut = limit;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn graceful_delete_rules() {
        let running = json!({
            "metadata": {"name": "p"},
            "spec": {"nodeName": "n", "terminationGracePeriodSeconds": 30},
            "status": {"phase": "Running"}
        });
        let options = DeleteOptions::default();
        let (action, deletion) = decide_pod_delete(&running, &options);
        assert!(matches!(action, DeleteAction::Update(_)));
        assert!(matches!(deletion, PodDeletion::Graceful(30)));

        let zero = DeleteOptions {
            grace_period_seconds: Some(0),
            ..DeleteOptions::default()
        };
        assert!(matches!(
            decide_pod_delete(&running, &zero).0,
            DeleteAction::RemoveAs(_)
        ));

        let mut pending = running.clone();
        pending["spec"]["nodeName"] = Value::Null;
        assert!(matches!(
            decide_pod_delete(&pending, &options).0,
            DeleteAction::RemoveAs(_)
        ));

        let mut done = running.clone();
        done["status"]["phase"] = json!("Succeeded");
        assert!(matches!(
            decide_pod_delete(&done, &options).0,
            DeleteAction::RemoveAs(_)
        ));

        let mut deleting = running.clone();
        deleting["metadata"]["deletionTimestamp"] = json!("2024-01-01T00:00:00Z");
        deleting["metadata"]["deletionGracePeriodSeconds"] = json!(5);
        assert!(matches!(
            decide_pod_delete(&deleting, &options).0,
            DeleteAction::Unchanged
        ));
        let shorter = DeleteOptions {
            grace_period_seconds: Some(2),
            ..DeleteOptions::default()
        };
        assert!(matches!(
            decide_pod_delete(&deleting, &shorter).1,
            PodDeletion::Graceful(2)
        ));
        let negative = DeleteOptions {
            grace_period_seconds: Some(-5),
            ..DeleteOptions::default()
        };
        assert!(matches!(
            decide_pod_delete(&running, &negative).1,
            PodDeletion::Graceful(1)
        ));
    }

    #[test]
    fn delete_options_body_overrides_query() {
        let params = Params(vec![("gracePeriodSeconds".to_owned(), "10".to_owned())]);
        let options = DeleteOptions::parse(&params, b"").unwrap();
        assert_eq!(options.grace_period_seconds, Some(10));
        let body =
            br#"{"gracePeriodSeconds": 3, "preconditions": {"uid": "u"}, "dryRun": ["All"]}"#;
        let options = DeleteOptions::parse(&params, body).unwrap();
        assert_eq!(options.grace_period_seconds, Some(3));
        assert_eq!(options.precondition_uid.as_deref(), Some("u"));
        assert!(options.dry_run);
        assert!(DeleteOptions::parse(&params, b"{nope").is_err());
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut text = "héllo".to_owned();
        truncate_bytes(&mut text, 2);
        assert_eq!(text, "h");
    }
}
