//! The in-memory backend's `watch`: every change of any instance bumps one counter; a watch
//! re-reads the whole state when it moves and lets the shared [`EventTracker`] say what
//! changed. Changes closer together than the watch's reading coalesce into one `Modified`, as
//! `mcp_types::events` allows.
//!
//! [`WatchBreaker`] is the test hook behind the kit's forced reconnect: a broken watch stops
//! listening for [`OUTAGE`] (changes made meanwhile are not seen as they happen), then
//! subscribes again and resyncs from a full snapshot, exactly the path a real backend takes
//! after its engine connection broke.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mcp_types::{InstanceEvent, InstanceFilters};
use tokio::sync::watch;

use super::InMemoryOrchestrator;
use crate::watch::{EventTracker, InstanceEvents};

/// How long a broken watch stays disconnected before it resyncs.
const OUTAGE: Duration = Duration::from_millis(200);

/// Breaks every open watch of one [`InMemoryOrchestrator`] (see the module docs).
#[derive(Debug, Clone)]
pub struct WatchBreaker(Arc<watch::Sender<u64>>);

impl Default for WatchBreaker {
    fn default() -> Self {
        Self(Arc::new(watch::channel(0).0))
    }
}

impl WatchBreaker {
    /// Breaks every watch open now.
    pub fn break_watches(&self) {
        self.0.send_modify(|v| *v += 1);
    }
}

struct State {
    orchestrator: InMemoryOrchestrator,
    tracker: EventTracker,
    changes: watch::Receiver<u64>,
    breaks: watch::Receiver<u64>,
    pending: VecDeque<InstanceEvent>,
}

pub(super) fn watch(
    orchestrator: InMemoryOrchestrator,
    filters: &InstanceFilters,
) -> InstanceEvents {
    let state = State {
        changes: orchestrator.any_change.subscribe(),
        breaks: orchestrator.breaker.0.subscribe(),
        orchestrator,
        tracker: EventTracker::new(filters),
        pending: VecDeque::new(),
    };
    futures::stream::unfold(state, |mut s| async move {
        loop {
            if let Some(event) = s.pending.pop_front() {
                return Some((Ok(event), s));
            }
            if s.tracker.is_synced() {
                tokio::select! {
                    changed = s.changes.changed() => {
                        if changed.is_err() {
                            return None;
                        }
                    }
                    broken = s.breaks.changed() => {
                        if broken.is_err() {
                            return None;
                        }
                        // The "connection" is gone: nothing is observed until it is back.
                        tokio::time::sleep(OUTAGE).await;
                        s.changes = s.orchestrator.any_change.subscribe();
                    }
                }
            }
            // Mark the state read before reading it, so a change made during the read wakes
            // the next round.
            s.changes.borrow_and_update();
            let snapshot = s.orchestrator.snapshot();
            s.pending.extend(s.tracker.snapshot(snapshot));
        }
    })
    .boxed()
}
