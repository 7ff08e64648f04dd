//! `watch` for the Kubernetes backend: kube's `watcher` over the managed pods (the same label
//! selector as `list_instances`), each pod turned into an `Instance` by `status::pod_instance`,
//! and the shared `EventTracker` deciding what the caller is told.
//!
//! | watcher says | the caller gets |
//! |---|---|
//! | `Init`, `InitApply`..., `InitDone` (the first list, or a re-list) | the first time: `Added` per pod and `Synced`; after a re-list: only the differences (pods deleted or changed while the watch was down) |
//! | `Apply(pod)` | `Added` / `Modified` (nothing when the pod's instance view did not change, e.g. a label-only status update the mapping ignores) |
//! | `Delete(pod)` | `Removed` |
//! | an error (connection lost, 5xx, 410 `Expired` for a too-old resourceVersion) | nothing: the watcher backs off and resumes from its last resourceVersion (bookmarks keep it fresh), or lists again after a 410 |
//!
//! Disappearing API server: the watcher retries with kube's default backoff; when every attempt
//! fails for `DEFAULT_RECONNECT_WINDOW` (30 s) the stream yields the mapped error
//! (`Unavailable` for connection errors and 5xx) and ends. Errors that no retry can fix (403,
//! a missing namespace) end it at once.

use std::collections::VecDeque;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch_pods};
use mcp_orchestrator_api::OrchestratorError;
use mcp_orchestrator_api::watch::{
    DEFAULT_RECONNECT_WINDOW, EventTracker, InstanceEvents, ReconnectBudget,
};
use mcp_types::{Instance, InstanceEvent, InstanceFilters, InstanceId};

use crate::error::{Target, map_error};
use crate::status::{is_managed, pod_instance};

struct State<S> {
    pods: S,
    tracker: EventTracker,
    /// Pods of a list in progress (between `Init` and `InitDone`).
    relist: Option<Vec<Instance>>,
    pending: VecDeque<InstanceEvent>,
    budget: ReconnectBudget,
    ended: bool,
}

/// The watch stream over `pods` with `selector` (the listing's), filters already validated.
pub(crate) fn watch(api: Api<Pod>, selector: &str, filters: &InstanceFilters) -> InstanceEvents {
    let pods = watch_pods(api, watcher::Config::default().labels(selector)).default_backoff();
    let state = State {
        pods: Box::pin(pods),
        tracker: EventTracker::new(filters),
        relist: None,
        pending: VecDeque::new(),
        budget: ReconnectBudget::new(DEFAULT_RECONNECT_WINDOW),
        ended: false,
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.ended {
                return None;
            }
            match s.pods.next().await? {
                Ok(event) => {
                    s.budget.succeeded();
                    handle(&mut s, event);
                }
                Err(error) => {
                    let target = Target::collection("watch pods", "pod");
                    let error = map_error(error, &target);
                    // 410 Expired: the watcher lists again on its next poll.
                    let retry = matches!(error, OrchestratorError::ContinueExpired { .. })
                        || s.budget.failed(&error).is_some();
                    if !retry {
                        s.ended = true;
                        return Some((Err(error), s));
                    }
                }
            }
        }
    })
    .boxed()
}

fn handle<S>(s: &mut State<S>, event: Event<Pod>) {
    match event {
        Event::Init => s.relist = Some(Vec::new()),
        Event::InitApply(pod) => {
            if let (Some(list), Some(instance)) = (&mut s.relist, managed_instance(&pod)) {
                list.push(instance);
            }
        }
        Event::InitDone => {
            let listed = s.relist.take().unwrap_or_default();
            s.pending.extend(s.tracker.snapshot(listed));
        }
        Event::Apply(pod) => {
            if let Some(instance) = managed_instance(&pod) {
                s.pending.extend(s.tracker.observe(instance));
            }
        }
        Event::Delete(pod) => {
            if let Some(name) = pod.metadata.name {
                s.pending.extend(s.tracker.gone(&InstanceId::new(name)));
            }
        }
    }
}

fn managed_instance(pod: &Pod) -> Option<Instance> {
    is_managed(pod).then(|| pod_instance(pod)).flatten()
}
