//! What every backend's `watch` shares, written once: the filter rules of a watch, the
//! [`EventTracker`] that turns what a backend observes (full listings, single instances,
//! removals) into [`InstanceEvent`]s with the ordering `mcp_types::events` promises (the
//! current state, one `Synced`, then changes; no repeat across reconnects), the
//! [`ReconnectBudget`] that decides when a lost engine ends the stream, and
//! [`watch_by_listing`], a complete watch for backends whose only source is a listing.
//!
//! | input | what the tracker emits |
//! |---|---|
//! | first snapshot | `Added` per matching instance (id order), then `Synced` |
//! | later snapshot (a resync after a reconnect, a periodic rescan) | `Removed` for what vanished or left the filters, `Added` for what is new, `Modified` for what changed; nothing for what the caller already has |
//! | an observed instance | `Added` if new to the caller, `Modified` if changed, `Removed` if it left the filters, nothing if identical |
//! | an observed removal | `Removed` with the last state told, nothing if the caller never saw it |

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::time::Duration;

use futures::stream::{BoxStream, Stream, StreamExt};
use mcp_types::{Instance, InstanceEvent, InstanceFilters, InstanceId, labels};

use crate::error::{OrchestratorError, Result};

/// A stream of instance events; see `mcp_types::events` for what it promises. An error item
/// ends it.
pub type InstanceEvents = BoxStream<'static, Result<InstanceEvent>>;

/// How long a backend keeps reconnecting to an engine that went away before its watch yields
/// `Unavailable` and ends, unless the backend documents otherwise.
pub const DEFAULT_RECONNECT_WINDOW: Duration = Duration::from_secs(30);

/// Checks the filters of a watch: the rules of `list_instances` (see
/// [`crate::validate_filters`]), a selector whose keys and values are valid, and neither
/// `limit` nor `continueToken`, which page a listing and mean nothing for a watch.
///
/// # Errors
/// [`OrchestratorError::InvalidArgument`] naming `labelSelector`, `limit` or `continueToken`
/// (or `filters` for what [`crate::validate_filters`] refuses).
pub fn validate_watch_filters(filters: &InstanceFilters) -> Result<()> {
    if filters.limit.is_some() {
        return Err(OrchestratorError::InvalidArgument {
            what: "limit",
            message: "a watch has no pages: leave `limit` unset".into(),
        });
    }
    if filters.continue_token.is_some() {
        return Err(OrchestratorError::InvalidArgument {
            what: "continueToken",
            message: "a watch has no pages: leave `continueToken` unset".into(),
        });
    }
    crate::filters::validate_filters(filters)?;
    if let Some(selector) = &filters.label_selector {
        selector
            .check()
            .map_err(|e| OrchestratorError::InvalidArgument {
                what: "labelSelector",
                message: e.to_string(),
            })?;
    }
    Ok(())
}

/// What the caller of one watch has been told, and the diff from there to what the backend
/// observes next. One per watch stream.
#[derive(Debug, Clone)]
pub struct EventTracker {
    filters: InstanceFilters,
    told: BTreeMap<InstanceId, Instance>,
    synced: bool,
}

impl EventTracker {
    /// A tracker for a watch with these filters (already validated).
    pub fn new(filters: &InstanceFilters) -> Self {
        Self {
            filters: filters.clone(),
            told: BTreeMap::new(),
            synced: false,
        }
    }

    /// Whether the initial state (and its `Synced`) has been emitted.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Whether `instance` belongs in this watch: managed and matching the filters.
    pub fn matches(&self, instance: &Instance) -> bool {
        instance
            .labels
            .get(labels::MANAGED)
            .is_some_and(|v| v == "true")
            && self.filters.matches(instance)
    }

    /// The ids the caller currently knows (told `Added` and not `Removed`).
    pub fn known(&self) -> impl Iterator<Item = &InstanceId> {
        self.told.keys()
    }

    /// The events from what the caller was told to `snapshot`, a complete listing of the
    /// backend's instances (instances outside the filters are ignored). The first snapshot
    /// ends with [`InstanceEvent::Synced`]; later ones (resyncs) never do.
    pub fn snapshot(&mut self, snapshot: impl IntoIterator<Item = Instance>) -> Vec<InstanceEvent> {
        let now: BTreeMap<InstanceId, Instance> = snapshot
            .into_iter()
            .filter(|i| self.matches(i))
            .map(|i| (i.id.clone(), i))
            .collect();
        let mut events: Vec<InstanceEvent> = Vec::new();
        let gone: Vec<InstanceId> = self
            .told
            .keys()
            .filter(|id| !now.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            events.extend(self.gone(&id));
        }
        for instance in now.into_values() {
            events.extend(self.observe(instance));
        }
        if !self.synced {
            self.synced = true;
            events.push(InstanceEvent::Synced);
        }
        events
    }

    /// The event for one observed state of an instance: `Added` when the caller does not know
    /// it, `Modified` when it changed, `Removed` when it no longer matches the filters, `None`
    /// when the caller already has exactly this state.
    pub fn observe(&mut self, instance: Instance) -> Option<InstanceEvent> {
        if !self.matches(&instance) {
            return self.gone(&instance.id);
        }
        match self.told.get(&instance.id) {
            Some(known) if *known == instance => None,
            Some(_) => {
                self.told.insert(instance.id.clone(), instance.clone());
                Some(InstanceEvent::Modified(instance))
            }
            None => {
                self.told.insert(instance.id.clone(), instance.clone());
                Some(InstanceEvent::Added(instance))
            }
        }
    }

    /// The event for an instance that is gone: `Removed` with the last state told, or `None`
    /// when the caller never heard of it.
    pub fn gone(&mut self, id: &InstanceId) -> Option<InstanceEvent> {
        self.told.remove(id).map(InstanceEvent::Removed)
    }
}

/// Decides whether a watch keeps reconnecting to an engine that fails: it does for `window`
/// after the first failure in a row, and a success resets it.
#[derive(Debug, Clone)]
pub struct ReconnectBudget {
    window: Duration,
    failing_since: Option<tokio::time::Instant>,
    attempts: u32,
}

impl ReconnectBudget {
    /// A budget of `window` of consecutive failures.
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            failing_since: None,
            attempts: 0,
        }
    }

    /// The engine answered: the next failure starts a new window.
    pub fn succeeded(&mut self) {
        self.failing_since = None;
        self.attempts = 0;
    }

    /// The engine failed with `error`. `Some(delay)` when the watch should wait that long and
    /// try again (a transient error inside the window, backing off from 100 ms to 2 s), `None`
    /// when it should yield the error and end.
    pub fn failed(&mut self, error: &OrchestratorError) -> Option<Duration> {
        if !error.is_transient() {
            return None;
        }
        let now = tokio::time::Instant::now();
        let since = *self.failing_since.get_or_insert(now);
        if now.duration_since(since) >= self.window {
            return None;
        }
        let delay = Duration::from_millis(100)
            .saturating_mul(1 << self.attempts.min(5))
            .min(Duration::from_secs(2));
        self.attempts += 1;
        Some(delay)
    }
}

/// A complete watch for a backend whose source of truth is a listing: lists at once (the
/// initial state and `Synced`), then again every time `wake` yields (a file-system
/// notification, a timer), emitting the differences. A transient listing error is retried on
/// the next wake until `budget` runs out; then, or on any other error, the stream yields the
/// error and ends. The stream also ends when `wake` does.
pub fn watch_by_listing<L, F, W>(
    filters: &InstanceFilters,
    list: L,
    wake: W,
    budget: ReconnectBudget,
) -> InstanceEvents
where
    L: FnMut() -> F + Send + 'static,
    F: Future<Output = Result<Vec<Instance>>> + Send + 'static,
    W: Stream<Item = ()> + Send + Unpin + 'static,
{
    struct State<L, W> {
        tracker: EventTracker,
        list: L,
        wake: W,
        pending: VecDeque<InstanceEvent>,
        budget: ReconnectBudget,
        ended: bool,
    }
    let state = State {
        tracker: EventTracker::new(filters),
        list,
        wake,
        pending: VecDeque::new(),
        budget,
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
            if s.tracker.is_synced() && s.wake.next().await.is_none() {
                return None;
            }
            match (s.list)().await {
                Ok(instances) => {
                    s.budget.succeeded();
                    s.pending.extend(s.tracker.snapshot(instances));
                }
                Err(error) => match s.budget.failed(&error) {
                    // Before the initial state there is nothing to wake on: wait here.
                    Some(delay) if !s.tracker.is_synced() => tokio::time::sleep(delay).await,
                    Some(_) => {}
                    None => {
                        s.ended = true;
                        return Some((Err(error), s));
                    }
                },
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use mcp_types::{EventKind, InstanceStatus, LabelSelector, Phase};

    use super::*;

    fn inst(id: &str, phase: Phase, team: &str) -> Instance {
        Instance {
            id: InstanceId::new(id),
            server: "s".into(),
            labels: BTreeMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                ("team".to_owned(), team.to_owned()),
            ]),
            created_at: None,
            status: InstanceStatus::phase(phase),
            endpoint: None,
        }
    }

    fn kinds(events: &[InstanceEvent]) -> Vec<(EventKind, Option<&str>)> {
        events
            .iter()
            .map(|e| (e.kind(), e.id().map(InstanceId::as_str)))
            .collect()
    }

    #[test]
    fn first_snapshot_is_added_in_id_order_then_synced_once() {
        let mut t = EventTracker::new(&InstanceFilters::default());
        let events = t.snapshot([
            inst("b", Phase::Running, "x"),
            inst("a", Phase::Pending, "x"),
        ]);
        assert_eq!(
            kinds(&events),
            [
                (EventKind::Added, Some("a")),
                (EventKind::Added, Some("b")),
                (EventKind::Synced, None)
            ]
        );
        // The same state again (a resync after a reconnect) repeats nothing, not even Synced.
        assert!(
            t.snapshot([
                inst("a", Phase::Pending, "x"),
                inst("b", Phase::Running, "x")
            ])
            .is_empty()
        );
    }

    #[test]
    fn resync_reports_only_differences() {
        let mut t = EventTracker::new(&InstanceFilters::default());
        t.snapshot([
            inst("a", Phase::Running, "x"),
            inst("b", Phase::Running, "x"),
        ]);
        let events = t.snapshot([
            inst("b", Phase::Failed, "x"),
            inst("c", Phase::Pending, "x"),
        ]);
        assert_eq!(
            kinds(&events),
            [
                (EventKind::Removed, Some("a")),
                (EventKind::Modified, Some("b")),
                (EventKind::Added, Some("c"))
            ]
        );
        // Removed carries the last state the caller was told.
        assert_eq!(
            events[0].instance().unwrap().status.phase,
            Phase::Running,
            "{events:?}"
        );
    }

    #[test]
    fn observe_and_gone_never_repeat() {
        let mut t = EventTracker::new(&InstanceFilters::default());
        t.snapshot([]);
        assert_eq!(
            t.observe(inst("a", Phase::Pending, "x")).map(|e| e.kind()),
            Some(EventKind::Added)
        );
        assert_eq!(t.observe(inst("a", Phase::Pending, "x")), None);
        assert_eq!(
            t.observe(inst("a", Phase::Running, "x")).map(|e| e.kind()),
            Some(EventKind::Modified)
        );
        assert_eq!(
            t.gone(&InstanceId::new("a")).map(|e| e.kind()),
            Some(EventKind::Removed)
        );
        assert_eq!(t.gone(&InstanceId::new("a")), None);
        assert_eq!(t.known().count(), 0);
    }

    #[test]
    fn leaving_and_entering_the_filters_is_removed_and_added() {
        let filters = InstanceFilters {
            phase: Some(Phase::Running),
            label_selector: Some(LabelSelector::from_equalities([("team", "x")])),
            ..InstanceFilters::default()
        };
        let mut t = EventTracker::new(&filters);
        let events = t.snapshot([
            inst("a", Phase::Running, "x"),
            inst("b", Phase::Running, "y"),
        ]);
        assert_eq!(
            kinds(&events),
            [(EventKind::Added, Some("a")), (EventKind::Synced, None)]
        );
        assert_eq!(
            t.observe(inst("a", Phase::Failed, "x")).map(|e| e.kind()),
            Some(EventKind::Removed)
        );
        assert_eq!(t.observe(inst("b", Phase::Failed, "y")), None);
        let mut unmanaged = inst("c", Phase::Running, "x");
        unmanaged.labels.remove(labels::MANAGED);
        assert_eq!(t.observe(unmanaged), None);
    }

    #[test]
    fn watch_filters_refuse_paging_and_bad_selectors_naming_the_field() {
        let what = |f: InstanceFilters| match validate_watch_filters(&f) {
            Err(OrchestratorError::InvalidArgument { what, .. }) => what,
            other => panic!("{other:?}"),
        };
        assert!(validate_watch_filters(&InstanceFilters::default()).is_ok());
        assert_eq!(
            what(InstanceFilters {
                limit: Some(5),
                ..InstanceFilters::default()
            }),
            "limit"
        );
        assert_eq!(
            what(InstanceFilters {
                continue_token: Some("x".into()),
                ..InstanceFilters::default()
            }),
            "continueToken"
        );
        assert_eq!(
            what(InstanceFilters {
                label_selector: Some(LabelSelector::from_equalities([("no spaces", "x")])),
                ..InstanceFilters::default()
            }),
            "labelSelector"
        );
    }

    #[tokio::test]
    async fn budget_retries_transient_errors_within_the_window_only() {
        let transient = OrchestratorError::unavailable("t", "gone", None);
        let mut b = ReconnectBudget::new(Duration::from_millis(50));
        assert!(b.failed(&transient).is_some());
        assert!(b.failed(&OrchestratorError::not_found("x")).is_none());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(b.failed(&transient).is_none());
        b.succeeded();
        assert!(b.failed(&transient).is_some());
    }

    #[tokio::test]
    async fn watch_by_listing_diffs_each_wake() {
        let states = std::sync::Arc::new(std::sync::Mutex::new(vec![
            vec![inst("a", Phase::Running, "x")],
            vec![inst("a", Phase::Running, "x")],
            vec![
                inst("a", Phase::Failed, "x"),
                inst("b", Phase::Pending, "x"),
            ],
            vec![],
        ]));
        let list = move || {
            let states = states.clone();
            async move { Ok(states.lock().unwrap().remove(0)) }
        };
        let wake = futures::stream::iter([(), (), ()]);
        let events: Vec<InstanceEvent> = watch_by_listing(
            &InstanceFilters::default(),
            list,
            wake,
            ReconnectBudget::new(DEFAULT_RECONNECT_WINDOW),
        )
        .map(Result::unwrap)
        .collect()
        .await;
        assert_eq!(
            kinds(&events),
            [
                (EventKind::Added, Some("a")),
                (EventKind::Synced, None),
                (EventKind::Modified, Some("a")),
                (EventKind::Added, Some("b")),
                (EventKind::Removed, Some("a")),
                (EventKind::Removed, Some("b")),
            ]
        );
    }
}
