//! The object store: a global resourceVersion counter, objects by kind/namespace/name, and an
//! event history that serves watches from a resourceVersion and consistent paginated lists
//! (continue tokens read a snapshot at their resourceVersion until it is compacted away).

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::kind::ResourceKind;
use crate::resources::Allocators;
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::{names, time};

/// Events kept for watches and snapshots before the oldest are compacted away.
const HISTORY_LIMIT: usize = 10_000;
/// How many times a `generateName` create retries on a name clash.
const GENERATE_NAME_ATTEMPTS: usize = 8;

/// Identifies a stored object.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct ObjectKey {
    pub(crate) kind: ResourceKind,
    pub(crate) namespace: String,
    pub(crate) name: String,
}

impl ObjectKey {
    pub(crate) fn new(kind: ResourceKind, namespace: &str, name: &str) -> Self {
        Self {
            kind,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change to the store.
#[derive(Debug, Clone)]
pub(crate) struct StoreEvent {
    pub(crate) rv: u64,
    pub(crate) key: ObjectKey,
    pub(crate) event_type: EventType,
    /// The object after the change (for DELETED: its last state, at the deletion's version).
    pub(crate) object: Value,
    /// The object before the change (absent for ADDED).
    pub(crate) previous: Option<Value>,
}

/// What a delete decision does to the stored object.
#[derive(Debug)]
pub(crate) enum DeleteAction {
    /// Remove the object now.
    Remove,
    /// Remove the object now, reporting this last state (e.g. with the deletion stamp).
    RemoveAs(Value),
    /// Keep the object, replaced by this value (e.g. with a deletionTimestamp).
    Update(Value),
    /// Keep the object as it is.
    Unchanged,
}

/// The result of a delete.
#[derive(Debug)]
pub(crate) enum DeleteOutcome {
    /// The object is gone; this was its last state.
    Removed(Value),
    /// The object is still there (graceful deletion in progress).
    Kept(Value),
}

/// Whether a pod that has not finished mounts the claim `name` of `namespace`.
fn claim_in_use<'a>(
    mut objects: impl Iterator<Item = (&'a ObjectKey, &'a Value)>,
    namespace: &str,
    name: &str,
) -> bool {
    objects.any(|(k, pod)| {
        k.kind == ResourceKind::Pod
            && k.namespace == namespace
            && !matches!(
                pod["status"]["phase"].as_str(),
                Some("Succeeded" | "Failed")
            )
            && pod["spec"]["volumes"].as_array().is_some_and(|volumes| {
                volumes
                    .iter()
                    .any(|v| v["persistentVolumeClaim"]["claimName"].as_str() == Some(name))
            })
    })
}

/// The pod with `deletionTimestamp` = now + `period` and `deletionGracePeriodSeconds`; a
/// pod already being deleted keeps its timestamp unless the period shortens it.
pub(crate) fn stamp_deletion(pod: &Value, period: i64) -> Value {
    let mut next = pod.clone();
    let meta = &mut next["metadata"];
    let shorter = meta["deletionGracePeriodSeconds"]
        .as_i64()
        .is_none_or(|current| period < current);
    if meta["deletionTimestamp"].is_null() || shorter {
        let at = time::plus_seconds(time::now(), period);
        meta["deletionTimestamp"] = json!(time::format_seconds(at));
        meta["deletionGracePeriodSeconds"] = json!(period);
    }
    next
}

/// Which objects a list or watch reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Filter {
    pub(crate) namespace: Option<String>,
    pub(crate) labels: LabelSelector,
    pub(crate) fields: FieldSelector,
}

impl Filter {
    fn in_scope(&self, key: &ObjectKey, kind: ResourceKind) -> bool {
        key.kind == kind
            && self
                .namespace
                .as_ref()
                .is_none_or(|ns| *ns == key.namespace)
    }

    pub(crate) fn matches(&self, object: &Value) -> bool {
        self.labels.matches_object(object) && self.fields.matches(object)
    }

    fn sort_key(&self, key: &ObjectKey) -> String {
        if self.namespace.is_some() {
            key.name.clone()
        } else {
            format!("{}/{}", key.namespace, key.name)
        }
    }
}

/// A page of a list.
#[derive(Debug)]
pub(crate) struct ListPage {
    pub(crate) items: Vec<Value>,
    pub(crate) resource_version: u64,
    pub(crate) continue_token: Option<String>,
    pub(crate) remaining: Option<u64>,
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum WatchStart {
    /// Synthetic ADDED events for the current state, then changes.
    Now,
    /// Changes after this resourceVersion.
    After(u64),
}

/// An open watch on the store.
#[derive(Debug)]
pub(crate) struct WatchSubscription {
    pub(crate) initial: Vec<Arc<StoreEvent>>,
    pub(crate) receiver: broadcast::Receiver<Arc<StoreEvent>>,
    pub(crate) resource_version: u64,
}

#[derive(Debug)]
struct Inner {
    rv: u64,
    compacted_rv: u64,
    objects: BTreeMap<ObjectKey, Value>,
    history: VecDeque<Arc<StoreEvent>>,
    allocators: Allocators,
}

/// The fake apiserver's storage.
#[derive(Debug)]
pub(crate) struct Store {
    inner: Mutex<Inner>,
    events: broadcast::Sender<Arc<StoreEvent>>,
}

impl Default for Store {
    fn default() -> Self {
        Self::new()
    }
}

impl Store {
    pub(crate) fn new() -> Self {
        let (events, _) = broadcast::channel(4096);
        Self {
            inner: Mutex::new(Inner {
                rv: 1,
                compacted_rv: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
                allocators: Allocators::default(),
            }),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every critical section leaves the map consistent, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` with the address allocators.
    pub(crate) fn with_allocators<T>(&self, f: impl FnOnce(&mut Allocators) -> T) -> T {
        f(&mut self.lock().allocators)
    }

    /// The latest resourceVersion.
    pub(crate) fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    fn record(&self, inner: &mut Inner, event: StoreEvent) {
        let event = Arc::new(event);
        inner.history.push_back(Arc::clone(&event));
        while inner.history.len() > HISTORY_LIMIT {
            if let Some(old) = inner.history.pop_front() {
                inner.compacted_rv = old.rv;
            }
        }
        // No receiver is fine: nobody watches.
        let _ = self.events.send(event);
    }

    /// Stores a new object, resolving `generateName` and filling in the server-set metadata.
    pub(crate) fn create(
        &self,
        kind: ResourceKind,
        namespace: &str,
        mut object: Value,
    ) -> Result<Value, ApiError> {
        let mut inner = self.lock();
        let requested = object["metadata"]["name"]
            .as_str()
            .filter(|n| !n.is_empty())
            .map(str::to_owned);
        let prefix = object["metadata"]["generateName"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = if let Some(name) = requested {
            if inner
                .objects
                .contains_key(&ObjectKey::new(kind, namespace, &name))
            {
                return Err(ApiError::already_exists(kind, &name));
            }
            name
        } else {
            let free = (0..GENERATE_NAME_ATTEMPTS)
                .map(|_| names::generate_name(&prefix))
                .find(|candidate| {
                    !inner
                        .objects
                        .contains_key(&ObjectKey::new(kind, namespace, candidate))
                });
            let Some(name) = free else {
                return Err(ApiError::already_exists(kind, &prefix));
            };
            name
        };
        inner.rv += 1;
        let rv = inner.rv;
        let meta = &mut object["metadata"];
        if !meta.is_object() {
            *meta = json!({});
        }
        meta["name"] = json!(name);
        meta["namespace"] = json!(namespace);
        meta["uid"] = json!(names::new_uid());
        meta["resourceVersion"] = json!(rv.to_string());
        meta["creationTimestamp"] = json!(time::format_seconds(time::now()));
        meta["generation"] = json!(1);
        if let Some(meta) = meta.as_object_mut() {
            for server_owned in [
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                meta.remove(server_owned);
            }
        }
        object["kind"] = json!(kind.kind());
        object["apiVersion"] = json!(kind.api_version());
        let key = ObjectKey::new(kind, namespace, &name);
        inner.objects.insert(key.clone(), object.clone());
        self.record(
            &mut inner,
            StoreEvent {
                rv,
                key,
                event_type: EventType::Added,
                object: object.clone(),
                previous: None,
            },
        );
        Ok(object)
    }

    /// The stored object, and a receiver of every change after that state.
    pub(crate) fn get_and_subscribe(
        &self,
        key: &ObjectKey,
    ) -> (Option<Value>, broadcast::Receiver<Arc<StoreEvent>>) {
        let inner = self.lock();
        (inner.objects.get(key).cloned(), self.events.subscribe())
    }

    /// The stored object.
    pub(crate) fn get(&self, key: &ObjectKey) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// Every stored object of `kind` (in `namespace` if given), ordered by namespace and name.
    pub(crate) fn all(&self, kind: ResourceKind, namespace: Option<&str>) -> Vec<Value> {
        self.lock()
            .objects
            .iter()
            .filter(|(key, _)| key.kind == kind && namespace.is_none_or(|ns| ns == key.namespace))
            .map(|(_, object)| object.clone())
            .collect()
    }

    /// Changes an object in place when `f` says it changed something; `uid`, when given, must
    /// match (the object may have been replaced by a namesake). Returns the new state, or `None`
    /// when the object is absent or was not changed.
    pub(crate) fn update<E>(
        &self,
        key: &ObjectKey,
        uid: Option<&str>,
        f: impl FnOnce(&mut Value) -> Result<bool, E>,
    ) -> Result<Option<Value>, E> {
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(key) else {
            return Ok(None);
        };
        if uid.is_some_and(|uid| current["metadata"]["uid"].as_str() != Some(uid)) {
            return Ok(None);
        }
        let previous = current.clone();
        let mut next = previous.clone();
        if !f(&mut next)? {
            return Ok(None);
        }
        inner.rv += 1;
        let rv = inner.rv;
        next["metadata"]["resourceVersion"] = json!(rv.to_string());
        inner.objects.insert(key.clone(), next.clone());
        self.record(
            &mut inner,
            StoreEvent {
                rv,
                key: key.clone(),
                event_type: EventType::Modified,
                object: next.clone(),
                previous: Some(previous),
            },
        );
        Ok(Some(next))
    }

    /// Decides and applies a delete atomically. `None` when the object does not exist.
    pub(crate) fn delete(
        &self,
        key: &ObjectKey,
        uid: Option<&str>,
        decide: impl FnOnce(&Value) -> Result<DeleteAction, ApiError>,
    ) -> Result<Option<DeleteOutcome>, ApiError> {
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(key).cloned() else {
            return Ok(None);
        };
        if uid.is_some_and(|uid| current["metadata"]["uid"].as_str() != Some(uid)) {
            return Ok(None);
        }
        let mut action = decide(&current)?;
        if matches!(action, DeleteAction::Unchanged) {
            return Ok(Some(DeleteOutcome::Kept(current)));
        }
        // pvc-protection: a claim a pod still uses only gets its deletionTimestamp; the
        // controller removes it (and the finalizer) once no pod uses it.
        if key.kind == ResourceKind::PersistentVolumeClaim
            && matches!(action, DeleteAction::Remove)
            && claim_in_use(inner.objects.iter(), &key.namespace, &key.name)
        {
            if !current["metadata"]["deletionTimestamp"].is_null() {
                return Ok(Some(DeleteOutcome::Kept(current)));
            }
            let mut next = current.clone();
            next["metadata"]["deletionTimestamp"] = json!(time::format_seconds(time::now()));
            next["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            action = DeleteAction::Update(next);
        }
        inner.rv += 1;
        let rv = inner.rv;
        let (event_type, object, outcome) = match action {
            DeleteAction::Unchanged => return Ok(Some(DeleteOutcome::Kept(current))),
            DeleteAction::Update(mut next) => {
                next["metadata"]["resourceVersion"] = json!(rv.to_string());
                inner.objects.insert(key.clone(), next.clone());
                (EventType::Modified, next.clone(), DeleteOutcome::Kept(next))
            }
            DeleteAction::Remove | DeleteAction::RemoveAs(_) => {
                inner.objects.remove(key);
                let mut last = match action {
                    DeleteAction::RemoveAs(last) => last,
                    _ => current.clone(),
                };
                last["metadata"]["resourceVersion"] = json!(rv.to_string());
                (
                    EventType::Deleted,
                    last.clone(),
                    DeleteOutcome::Removed(last),
                )
            }
        };
        let removed = event_type == EventType::Deleted;
        self.record(
            &mut inner,
            StoreEvent {
                rv,
                key: key.clone(),
                event_type,
                object,
                previous: Some(current.clone()),
            },
        );
        if removed && let Some(uid) = current["metadata"]["uid"].as_str() {
            self.collect_dependents(&mut inner, &key.namespace, uid);
        }
        if removed && key.kind == ResourceKind::Pod {
            self.release_claims(&mut inner, &key.namespace);
        }
        Ok(Some(outcome))
    }

    /// The pvc-protection controller: claims being deleted that no pod uses any more go.
    fn release_claims(&self, inner: &mut Inner, namespace: &str) {
        let released: Vec<ObjectKey> = inner
            .objects
            .iter()
            .filter(|(k, o)| {
                k.kind == ResourceKind::PersistentVolumeClaim
                    && k.namespace == namespace
                    && !o["metadata"]["deletionTimestamp"].is_null()
                    && !claim_in_use(inner.objects.iter(), namespace, &k.name)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in released {
            let Some(mut last) = inner.objects.remove(&key) else {
                continue;
            };
            inner.rv += 1;
            let rv = inner.rv;
            let previous = last.clone();
            last["metadata"]["resourceVersion"] = json!(rv.to_string());
            last["metadata"]["finalizers"] = json!([]);
            let uid = last["metadata"]["uid"].as_str().map(str::to_owned);
            self.record(
                inner,
                StoreEvent {
                    rv,
                    key,
                    event_type: EventType::Deleted,
                    object: last,
                    previous: Some(previous),
                },
            );
            if let Some(uid) = uid {
                self.collect_dependents(inner, namespace, &uid);
            }
        }
    }

    /// The garbage collector's background deletion: the objects of the namespace owned by the
    /// removed object `uid` go too (and theirs in turn). Pods among them are left alone: their
    /// deletion is graceful and the kubelet's (not modelled).
    fn collect_dependents(&self, inner: &mut Inner, namespace: &str, uid: &str) {
        let owned: Vec<ObjectKey> = inner
            .objects
            .iter()
            .filter(|(k, o)| {
                k.namespace == namespace
                    && k.kind != ResourceKind::Pod
                    && o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|refs| refs.iter().any(|r| r["uid"].as_str() == Some(uid)))
            })
            .map(|(k, _)| k.clone())
            .collect();
        for key in owned {
            let Some(mut last) = inner.objects.remove(&key) else {
                continue;
            };
            inner.rv += 1;
            let rv = inner.rv;
            let previous = last.clone();
            last["metadata"]["resourceVersion"] = json!(rv.to_string());
            let dependent_uid = last["metadata"]["uid"].as_str().map(str::to_owned);
            self.record(
                inner,
                StoreEvent {
                    rv,
                    key: key.clone(),
                    event_type: EventType::Deleted,
                    object: last,
                    previous: Some(previous),
                },
            );
            if let Some(dependent) = dependent_uid {
                self.collect_dependents(inner, namespace, &dependent);
            }
        }
    }

    /// Forgets the event history and invalidates every continue token and watch position issued
    /// so far, like an etcd compaction in a cluster whose revision has moved on.
    pub(crate) fn compact(&self) {
        let mut inner = self.lock();
        inner.rv += 1;
        inner.compacted_rv = inner.rv;
        inner.history.clear();
    }

    /// The etcd compactor's step: forgets the history up to `rv` (continue tokens and watch
    /// positions older than it answer 410 from now on).
    pub(crate) fn compact_to(&self, rv: u64) {
        let mut inner = self.lock();
        if rv <= inner.compacted_rv {
            return;
        }
        inner.compacted_rv = rv;
        while inner.history.front().is_some_and(|e| e.rv <= rv) {
            inner.history.pop_front();
        }
    }

    /// The objects of `kind` in scope as they were at `rv` (which must not be compacted).
    fn snapshot(
        inner: &Inner,
        kind: ResourceKind,
        filter: &Filter,
        rv: u64,
    ) -> BTreeMap<String, Value> {
        let mut state: BTreeMap<String, Value> = inner
            .objects
            .iter()
            .filter(|(key, _)| filter.in_scope(key, kind))
            .map(|(key, object)| (filter.sort_key(key), object.clone()))
            .collect();
        for event in inner.history.iter().rev().take_while(|e| e.rv > rv) {
            if !filter.in_scope(&event.key, kind) {
                continue;
            }
            let sort_key = filter.sort_key(&event.key);
            match &event.previous {
                None => {
                    state.remove(&sort_key);
                }
                Some(previous) => {
                    state.insert(sort_key, previous.clone());
                }
            }
        }
        state
    }

    /// One page of a list. `exact_rv` asks for the state at that version.
    pub(crate) fn list(
        &self,
        kind: ResourceKind,
        filter: &Filter,
        limit: Option<u64>,
        continue_token: Option<&str>,
        exact_rv: Option<u64>,
    ) -> Result<ListPage, ApiError> {
        let inner = self.lock();
        let (rv, after) = match continue_token {
            Some(token) => {
                let token = ContinueToken::decode(token)?;
                if token.rv < inner.compacted_rv {
                    let fresh = ContinueToken {
                        rv: inner.rv,
                        last: token.last,
                    };
                    return Err(ApiError::expired_continue(Some(fresh.encode())));
                }
                (token.rv, Some(token.last))
            }
            None => match exact_rv {
                Some(rv) if rv < inner.compacted_rv => {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        inner.compacted_rv
                    )));
                }
                Some(rv) => (rv.min(inner.rv), None),
                None => (inner.rv, None),
            },
        };
        let snapshot = Self::snapshot(&inner, kind, filter, rv);
        drop(inner);
        let mut matching = snapshot
            .into_iter()
            .filter(|(sort_key, _)| after.as_ref().is_none_or(|last| sort_key > last))
            .filter(|(_, object)| filter.matches(object));
        let page_size = limit
            .filter(|l| *l > 0)
            .and_then(|l| usize::try_from(l).ok());
        let mut items = Vec::new();
        let mut last_key = None;
        for (sort_key, object) in matching.by_ref() {
            items.push(object);
            last_key = Some(sort_key);
            if page_size.is_some_and(|size| items.len() >= size) {
                break;
            }
        }
        let rest = matching.count() as u64;
        let (continue_token, remaining) = match (page_size, last_key) {
            (Some(_), Some(last)) if rest > 0 => {
                let token = ContinueToken { rv, last }.encode();
                // Like etcd-backed lists, the count is only known without selectors.
                let unfiltered = filter.labels.is_empty() && filter.fields.is_empty();
                (Some(token), unfiltered.then_some(rest))
            }
            _ => (None, None),
        };
        Ok(ListPage {
            items,
            resource_version: rv,
            continue_token,
            remaining,
        })
    }

    /// Opens a watch on `kind` in the filter's namespace (selectors are applied by the caller).
    pub(crate) fn watch(
        &self,
        kind: ResourceKind,
        filter: &Filter,
        start: WatchStart,
    ) -> Result<WatchSubscription, ApiError> {
        let inner = self.lock();
        let receiver = self.events.subscribe();
        let initial = match start {
            WatchStart::Now => inner
                .objects
                .iter()
                .filter(|(key, _)| filter.in_scope(key, kind))
                .map(|(key, object)| {
                    Arc::new(StoreEvent {
                        rv: object["metadata"]["resourceVersion"]
                            .as_str()
                            .and_then(|rv| rv.parse().ok())
                            .unwrap_or(inner.rv),
                        key: key.clone(),
                        event_type: EventType::Added,
                        object: object.clone(),
                        previous: None,
                    })
                })
                .collect(),
            WatchStart::After(rv) => {
                if rv < inner.compacted_rv {
                    return Err(ApiError::expired(format!(
                        "too old resource version: {rv} ({})",
                        inner.compacted_rv
                    )));
                }
                inner
                    .history
                    .iter()
                    .filter(|e| e.rv > rv && filter.in_scope(&e.key, kind))
                    .cloned()
                    .collect()
            }
        };
        Ok(WatchSubscription {
            initial,
            receiver,
            resource_version: inner.rv,
        })
    }

    /// Whether an event belongs to a watch on `kind` with this filter's namespace.
    pub(crate) fn event_in_scope(event: &StoreEvent, kind: ResourceKind, filter: &Filter) -> bool {
        filter.in_scope(&event.key, kind)
    }
}

/// A continue token: the snapshot's resourceVersion and the last key returned.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: u64,
    last: String,
}

impl ContinueToken {
    fn encode(&self) -> String {
        let json = json!({ "v": "meta.k8s.io/v1", "rv": self.rv, "start": self.last });
        json.to_string().bytes().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }

    fn decode(token: &str) -> Result<Self, ApiError> {
        let invalid =
            |detail: &str| ApiError::bad_request(format!("continue key is not valid: {detail}"));
        if !token.len().is_multiple_of(2) || !token.is_ascii() {
            return Err(invalid("malformed token"));
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&token[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| invalid("malformed token"))?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| invalid(&e.to_string()))?;
        if value["v"] != "meta.k8s.io/v1" {
            return Err(invalid(
                "incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
            ));
        }
        let rv = value["rv"].as_u64().filter(|rv| *rv > 0).ok_or_else(|| {
            invalid("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
        })?;
        let last = value["start"]
            .as_str()
            .ok_or_else(|| invalid("encoded key is missing"))?
            .to_owned();
        Ok(Self { rv, last })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name, "labels": {"app": "x"}}, "spec": {}})
    }

    fn filter(ns: &str) -> Filter {
        Filter {
            namespace: Some(ns.to_owned()),
            ..Filter::default()
        }
    }

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let token = ContinueToken {
            rv: 42,
            last: "web-1".to_owned(),
        };
        assert_eq!(ContinueToken::decode(&token.encode()).unwrap(), token);
        assert_eq!(ContinueToken::decode("zz").unwrap_err().code(), 400);
        assert_eq!(ContinueToken::decode("abc").unwrap_err().code(), 400);
    }

    #[test]
    fn continuation_reads_the_snapshot_of_the_first_page() {
        let store = Store::new();
        for name in ["a", "b", "c", "d"] {
            store.create(ResourceKind::Pod, "ns", pod(name)).unwrap();
        }
        let first = store
            .list(ResourceKind::Pod, &filter("ns"), Some(2), None, None)
            .unwrap();
        assert_eq!(first.remaining, Some(2));
        // Changes after the first page do not leak into the continuation.
        store.create(ResourceKind::Pod, "ns", pod("e")).unwrap();
        store
            .delete(&ObjectKey::new(ResourceKind::Pod, "ns", "c"), None, |_| {
                Ok(DeleteAction::Remove)
            })
            .unwrap();
        let second = store
            .list(
                ResourceKind::Pod,
                &filter("ns"),
                Some(2),
                first.continue_token.as_deref(),
                None,
            )
            .unwrap();
        let names: Vec<&str> = second
            .items
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["c", "d"]);
        assert_eq!(second.continue_token, None);
        assert_eq!(second.resource_version, first.resource_version);

        store.compact();
        let err = store
            .list(
                ResourceKind::Pod,
                &filter("ns"),
                Some(2),
                first.continue_token.as_deref(),
                None,
            )
            .unwrap_err();
        assert_eq!(err.code(), 410);
    }

    #[test]
    fn watch_from_a_version_replays_later_events() {
        let store = Store::new();
        let created = store.create(ResourceKind::Pod, "ns", pod("a")).unwrap();
        let rv: u64 = created["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        store.create(ResourceKind::Pod, "ns", pod("b")).unwrap();
        store.create(ResourceKind::Pod, "other", pod("c")).unwrap();
        let sub = store
            .watch(ResourceKind::Pod, &filter("ns"), WatchStart::After(rv))
            .unwrap();
        assert_eq!(sub.initial.len(), 1);
        assert_eq!(sub.initial[0].key.name, "b");
        store.compact();
        assert_eq!(
            store
                .watch(ResourceKind::Pod, &filter("ns"), WatchStart::After(rv))
                .unwrap_err()
                .code(),
            410
        );
    }
}
