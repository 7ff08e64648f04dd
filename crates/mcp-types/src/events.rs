//! Instance events: what a watch (`McpOrchestrator::watch`) reports, and the order it promises.
//!
//! A watch is a stream of [`InstanceEvent`]s about the instances that match the filters of
//! `list_instances` (server, phase, label selector; never `limit` or a continue token):
//!
//! 1. **The current state first.** One [`InstanceEvent::Added`] per instance matching when the
//!    watch opens, in id order, then exactly one [`InstanceEvent::Synced`]. Everything before
//!    `Synced` is the state a listing would have returned; everything after it is a change. A
//!    caller that needs a list and then the changes watches alone: there is no gap between the
//!    two because both come from the same stream.
//! 2. **Then changes, as they happen.** `Added` when an instance starts matching (it was
//!    started, or its phase or labels entered the filters), `Modified` when anything in its
//!    [`Instance`] changed (phase, reason, restart count, exit code, times, endpoint),
//!    `Removed` when it was stopped and removed or stopped matching the filters (the instance
//!    in a `Removed` event is the last state the watch saw).
//! 3. **Per instance, in order.** The events of one instance arrive in the order the backend
//!    observed the changes; an instance's first event is `Added`, nothing about it follows its
//!    `Removed` until it is `Added` again (a phase filter can make it leave and come back). No
//!    event repeats the state the previous event of the same instance already carried. Events
//!    of different instances are not ordered relative to each other.
//! 4. **Coalescing is allowed.** A backend reports the states it observes; two changes closer
//!    together than its observation (a poll, an engine event that needs an inspect) may arrive
//!    as one `Modified` carrying the later state. A change that matters to a control plane is
//!    never lost: a crash is visible as a `Modified` whose status has the exit code (or last
//!    exit code) and the new restart count, and a removal is always a `Removed`.
//! 5. **Across reconnects.** When the backend's connection to its engine breaks it reconnects,
//!    re-reads the current state and reports only what differs from what the caller was told,
//!    so nothing is lost and nothing is repeated. `Synced` is sent once per watch, never again.
//!    When the engine stays unreachable the stream yields one `Unavailable` error and ends;
//!    each backend documents how long it keeps trying.

use serde::{Deserialize, Serialize};

use crate::instance::{Instance, InstanceId};

/// One thing a watch reports. Serialized as `{"type": "Added", "instance": {...}}` (and
/// `{"type": "Synced"}`), the shape of a Kubernetes watch event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "instance")]
pub enum InstanceEvent {
    /// The instance matches the filters: it existed when the watch opened (before
    /// [`InstanceEvent::Synced`]), was started, or entered the filters.
    Added(Instance),
    /// Something in the instance changed; it carries the new state.
    Modified(Instance),
    /// The instance was removed or left the filters; it carries the last state seen.
    Removed(Instance),
    /// Every instance that matched when the watch opened has been reported as `Added`; what
    /// follows are changes.
    Synced,
}

/// The kind of an [`InstanceEvent`], for tables and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// See [`InstanceEvent::Added`].
    Added,
    /// See [`InstanceEvent::Modified`].
    Modified,
    /// See [`InstanceEvent::Removed`].
    Removed,
    /// See [`InstanceEvent::Synced`].
    Synced,
}

impl EventKind {
    /// The spelling used on the wire and in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "Added",
            Self::Modified => "Modified",
            Self::Removed => "Removed",
            Self::Synced => "Synced",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl InstanceEvent {
    /// Its kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Self::Added(_) => EventKind::Added,
            Self::Modified(_) => EventKind::Modified,
            Self::Removed(_) => EventKind::Removed,
            Self::Synced => EventKind::Synced,
        }
    }

    /// The instance it is about (`None` for [`InstanceEvent::Synced`]).
    pub fn instance(&self) -> Option<&Instance> {
        match self {
            Self::Added(i) | Self::Modified(i) | Self::Removed(i) => Some(i),
            Self::Synced => None,
        }
    }

    /// The id of the instance it is about.
    pub fn id(&self) -> Option<&InstanceId> {
        self.instance().map(|i| &i.id)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::instance::{InstanceStatus, Phase};

    fn instance() -> Instance {
        Instance {
            id: InstanceId::new("mcp-a-0123456789"),
            server: "a".into(),
            labels: BTreeMap::new(),
            created_at: None,
            status: InstanceStatus::phase(Phase::Running),
            endpoint: None,
        }
    }

    #[test]
    fn events_serialize_like_kubernetes_watch_events() {
        let added = serde_json::to_value(InstanceEvent::Added(instance())).unwrap();
        assert_eq!(added["type"], "Added");
        assert_eq!(added["instance"]["id"], "mcp-a-0123456789");
        assert_eq!(added["instance"]["status"]["phase"], "Running");
        let synced = serde_json::to_value(InstanceEvent::Synced).unwrap();
        assert_eq!(synced, serde_json::json!({"type": "Synced"}));
        let back: InstanceEvent = serde_json::from_value(added).unwrap();
        assert_eq!(back, InstanceEvent::Added(instance()));
    }

    #[test]
    fn kind_and_instance() {
        let e = InstanceEvent::Removed(instance());
        assert_eq!(e.kind(), EventKind::Removed);
        assert_eq!(e.kind().to_string(), "Removed");
        assert_eq!(e.id().map(InstanceId::as_str), Some("mcp-a-0123456789"));
        assert_eq!(InstanceEvent::Synced.instance(), None);
    }
}
