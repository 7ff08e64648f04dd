//! `watch` for the Docker backend: the engine's events API (`GET /events`, filtered to
//! containers labelled `mcpctl.io/managed=true`), an inspect per event for the status (events
//! carry an action, not a state), and the shared `EventTracker` deciding what the caller is
//! told.
//!
//! | engine event | the caller gets |
//! |---|---|
//! | `destroy` | `Removed` |
//! | any other container action (`create`, `start`, `die`, `oom`, `kill`, `stop`, `restart`, `pause`, `health_status`...) | the inspected state: `Added` / `Modified`, or nothing when it did not change; `Removed` when the inspect finds it gone |
//! | `exec_*`, `attach`, `resize`, `top`, `copy`-like actions | ignored: no state change |
//!
//! **No gap, no repeat.** Each (re)connection starts from a timestamp taken *before* the
//! listing it is paired with (`since`, one second early for clock granularity): the listing
//! gives the state at that moment, the events replay everything after it. A replayed event
//! costs an inspect whose result the tracker already has, so it is not reported twice.
//!
//! **Engine gone mid-watch.** A broken or ended events stream, or a failed inspect, makes the
//! watch reconnect with `since` = the last event's time and resync from a full listing (what
//! happened while it was down is reported once, as differences). While the engine stays
//! unreachable it retries with backoff; after `DEFAULT_RECONNECT_WINDOW` (30 s) of failures it
//! yields `Unavailable` and ends. An engine unreachable when `watch` is called answers
//! `Unavailable` at once (the initial listing is made by the call).

use std::collections::{HashMap, VecDeque};
use std::future::Future;

use bollard::Docker;
use bollard::models::EventMessage;
use bollard::query_parameters::EventsOptionsBuilder;
use futures::StreamExt;
use futures::stream::BoxStream;
use mcp_orchestrator_api::watch::{
    DEFAULT_RECONNECT_WINDOW, EventTracker, InstanceEvents, ReconnectBudget,
};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, Result};
use mcp_types::{Instance, InstanceEvent, InstanceFilters, InstanceId, Timestamp, labels};

use crate::error::{BACKEND, Target};

/// What the watch needs of the orchestrator besides the trait's listing: the engine client,
/// its address for errors, and one instance as an inspect sees it. (The orchestrator implements
/// it, so this module does not depend on the orchestrator's module.)
pub(crate) trait Source: McpOrchestrator + Clone {
    /// The engine client.
    fn client(&self) -> &Docker;
    /// Where the engine is, for error messages.
    fn engine(&self) -> &str;
    /// One managed instance, inspected (restart count and times included).
    fn inspected(&self, id: &InstanceId) -> impl Future<Output = Result<Instance>> + Send;
}

/// Container actions that never change an instance's state.
const IGNORED: &[&str] = &[
    "attach",
    "detach",
    "resize",
    "top",
    "export",
    "copy",
    "archive-path",
    "extract-to-dir",
    "commit",
];

type Events = BoxStream<'static, std::result::Result<EventMessage, bollard::errors::Error>>;

struct State<O> {
    o: O,
    filters: InstanceFilters,
    tracker: EventTracker,
    events: Option<Events>,
    /// Where the next (re)connection starts: the last event's time, or the time taken before
    /// the last listing.
    since: String,
    pending: VecDeque<InstanceEvent>,
    budget: ReconnectBudget,
    ended: bool,
}

/// `since` for the events API: seconds and nanoseconds, one second early.
fn since_of(t: Timestamp) -> String {
    since_nanos(t.as_nanosecond() - 1_000_000_000)
}

/// `since` for the events API at `nanos` nanoseconds after the epoch.
fn since_nanos(nanos: i128) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// The listing the watch resyncs from: every managed instance the filters may select (the
/// phase is left to the tracker, which also drops what leaves the filters), each inspected:
/// the list alone has no restart count for a live container, and an event stream must never
/// report one going down.
async fn listing<O: Source>(o: &O, filters: &InstanceFilters) -> Result<Vec<Instance>> {
    let wider = InstanceFilters {
        phase: None,
        ..filters.clone()
    };
    let listed = o.list_instances(&wider).await?.items;
    let mut exact = Vec::with_capacity(listed.len());
    for instance in listed {
        match o.inspected(&instance.id).await {
            Ok(instance) => exact.push(instance),
            // Removed between the list and the inspect: the events report it.
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(exact)
}

fn open_events<O: Source>(o: &O, filters: &InstanceFilters, since: &str) -> Events {
    let mut label = vec![format!("{}=true", labels::MANAGED)];
    if let Some(server) = &filters.server {
        label.push(format!("{}={server}", labels::SERVER));
    }
    let query = HashMap::from([("type", vec!["container".to_owned()]), ("label", label)]);
    let options = EventsOptionsBuilder::new()
        .since(since)
        .filters(&query)
        .build();
    o.client().events(Some(options)).boxed()
}

/// The watch stream (filters already validated). Lists once before returning, so an
/// unreachable engine is an error of the call.
pub(crate) async fn watch<O: Source>(o: O, filters: &InstanceFilters) -> Result<InstanceEvents> {
    let since = since_of(Timestamp::now());
    let initial = listing(&o, filters).await?;
    let mut tracker = EventTracker::new(filters);
    let pending: VecDeque<InstanceEvent> = tracker.snapshot(initial).into();
    let events = Some(open_events(&o, filters, &since));
    let state = State {
        o,
        filters: filters.clone(),
        tracker,
        events,
        since,
        pending,
        budget: ReconnectBudget::new(DEFAULT_RECONNECT_WINDOW),
        ended: false,
    };
    Ok(futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.ended {
                return None;
            }
            let failure = match s.events.take() {
                Some(mut events) => {
                    let read = next_event(&mut s, &mut events).await;
                    s.events = Some(events);
                    read
                }
                None => reconnect(&mut s).await,
            };
            if let Err(error) = failure {
                s.events = None;
                let Some(delay) = s.budget.failed(&error) else {
                    s.ended = true;
                    return Some((Err(error), s));
                };
                tokio::time::sleep(delay).await;
            }
        }
    })
    .boxed())
}

/// Reads one engine event and turns it into what the caller must hear.
async fn next_event<O: Source>(s: &mut State<O>, events: &mut Events) -> Result<()> {
    let endpoint = s.o.engine().to_owned();
    let message = match events.next().await {
        Some(Ok(message)) => message,
        Some(Err(e)) => {
            return Err(crate::error::map_error(e, Target::Engine, &endpoint));
        }
        None => {
            return Err(OrchestratorError::unavailable(
                BACKEND,
                format!("the event stream of the Docker engine at {endpoint} ended"),
                None,
            ));
        }
    };
    s.budget.succeeded();
    if let Some(nanos) = message.time_nano {
        s.since = since_nanos(i128::from(nanos));
    }
    let action = message.action.as_deref().unwrap_or_default();
    let Some(name) = message
        .actor
        .as_ref()
        .and_then(|a| a.attributes.as_ref())
        .and_then(|a| a.get("name"))
    else {
        return Ok(());
    };
    let id = InstanceId::new(name.clone());
    if action.starts_with("exec_") || IGNORED.contains(&action) {
        return Ok(());
    }
    if action == "destroy" {
        s.pending.extend(s.tracker.gone(&id));
        return Ok(());
    }
    match s.o.inspected(&id).await {
        Ok(instance) => s.pending.extend(s.tracker.observe(instance)),
        Err(e) if e.is_not_found() => s.pending.extend(s.tracker.gone(&id)),
        Err(e) => return Err(e),
    }
    Ok(())
}

/// Opens the events again from `since` and resyncs from a listing taken after that point.
async fn reconnect<O: Source>(s: &mut State<O>) -> Result<()> {
    let since = s.since.clone();
    let instances = listing(&s.o, &s.filters).await?;
    s.pending.extend(s.tracker.snapshot(instances));
    s.events = Some(open_events(&s.o, &s.filters, &since));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_is_seconds_and_nanoseconds_one_second_early() {
        let t: Timestamp = "2026-01-02T03:04:05.000000007Z".parse().unwrap();
        let since = since_of(t);
        assert_eq!(since, format!("{}.000000007", t.as_second() - 1));
    }
}
