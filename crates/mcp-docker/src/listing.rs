//! A container listing (`GET /containers/json`) -> [`Instance`], without an inspect where the
//! listing says enough.
//!
//! The engine's list answer carries, per container, its labels (server, instance id, creation
//! time, the pinned host port: everything an [`Instance`] needs besides its status), its `State`
//! (`running`, `exited`, ...) and a `Status` text (`Up 5 minutes (unhealthy)`,
//! `Exited (3) 2 seconds ago`, ...). What it does not carry is the inspect's detail: the restart
//! count, the exact start and finish times, the OOM kill flag and the engine's error.
//!
//! | State                         | From the listing                       | Inspected |
//! |-------------------------------|----------------------------------------|-----------|
//! | `running` (health from `Health` or the text's `(unhealthy)`) | Running (reason `Unhealthy`) | no |
//! | `paused`                      | Running, reason `Paused`               | no        |
//! | `created`                     | Pending, reason `ContainerCreating`    | no        |
//! | `removing`, `stopping`        | Stopping, reason `Terminating`         | no        |
//! | `exited`, `dead`, `restarting`, unknown | -                            | yes       |
//!
//! The phase, reason, message and exit code of a listed instance are therefore always what
//! `get_status` reports at that moment (the phase of the listing's rows goes through the same
//! [`instance_status`] as an inspect). A container that ended is inspected because only the
//! inspect tells an OOM kill from a plain exit, carries the engine's error and the finish
//! time; such containers are few in a listing of live servers. For the rows answered from the
//! listing, `restartCount` is 0 and `startedAt`/`finishedAt` are absent: the list API has
//! neither, and an inspect per running container is what made listing 1.4-1.5x slower than
//! `docker ps` (docs/BENCHMARKS.md). `get_status` has them; the trait documents that a
//! listing's status may be such a summary.

use std::collections::BTreeMap;

use bollard::models::{
    ContainerState, ContainerStateStatusEnum, ContainerSummary, ContainerSummaryHealthStatusEnum,
    ContainerSummaryStateEnum, Health, HealthStatusEnum,
};
use mcp_types::{Instance, InstanceId, InstanceStatus, Timestamp, labels};

use crate::container::endpoint_from_labels;
use crate::egress::{EGRESS_NETWORK_LABEL, internal_endpoint, posture_from_labels};
use crate::status::instance_status;

/// A listed managed container: the instance as far as the listing tells, and whether its
/// status still needs an inspect.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Listed {
    /// Id, server, labels, creation time and endpoint from the labels; the status from the
    /// listing when `needs_inspect` is false.
    pub(crate) instance: Instance,
    /// The listing cannot say the status exactly: inspect the container.
    pub(crate) needs_inspect: bool,
}

/// The instance a listed container is; `None` for a container without a usable name.
pub(crate) fn listed(summary: &ContainerSummary) -> Option<Listed> {
    let id = summary
        .names
        .as_ref()?
        .iter()
        .map(|n| n.trim_start_matches('/'))
        .find(|n| !n.contains('/'))?
        .to_owned();
    let labels: BTreeMap<String, String> = summary
        .labels
        .as_ref()
        .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default();
    let status = listing_status(summary).map(|mut s| {
        s.egress = posture_from_labels(&labels);
        s
    });
    let internal_ip = labels.get(EGRESS_NETWORK_LABEL).and_then(|net| {
        summary
            .network_settings
            .as_ref()?
            .networks
            .as_ref()?
            .get(net)?
            .ip_address
            .as_deref()
    });
    let endpoint =
        endpoint_from_labels(&labels).or_else(|| internal_endpoint(&labels, internal_ip));
    Some(Listed {
        instance: Instance {
            id: InstanceId::new(id),
            server: labels.get(labels::SERVER).cloned().unwrap_or_default(),
            created_at: labels
                .get(labels::CREATED_AT)
                .and_then(|t| t.parse::<Timestamp>().ok()),
            endpoint,
            labels,
            status: status.clone().unwrap_or_default(),
        },
        needs_inspect: status.is_none(),
    })
}

/// The status a listing row says exactly, or `None` when only an inspect can (see the table in
/// the module documentation).
pub(crate) fn listing_status(summary: &ContainerSummary) -> Option<InstanceStatus> {
    use ContainerStateStatusEnum as S;
    use ContainerSummaryStateEnum as L;
    let text = summary.status.as_deref().unwrap_or_default();
    let (status, health) = match summary.state? {
        L::RUNNING => (S::RUNNING, listed_health(summary, text)),
        L::PAUSED => (S::PAUSED, None),
        L::CREATED => (S::CREATED, None),
        L::REMOVING => (S::REMOVING, None),
        L::STOPPING => (S::STOPPING, None),
        L::EXITED | L::DEAD | L::RESTARTING | L::EMPTY => return None,
    };
    let state = ContainerState {
        status: Some(status),
        health: health.map(|h| Health {
            status: Some(h),
            ..Health::default()
        }),
        ..ContainerState::default()
    };
    Some(instance_status(&state, 0))
}

/// The health a running row shows: the `Health` field (API 1.52 and later), else the suffix of
/// the `Status` text (`Up 2 minutes (unhealthy)`, `(healthy)`, `(health: starting)`).
fn listed_health(summary: &ContainerSummary, text: &str) -> Option<HealthStatusEnum> {
    use ContainerSummaryHealthStatusEnum as H;
    if let Some(h) = summary.health.as_ref().and_then(|h| h.status) {
        return match h {
            H::UNHEALTHY => Some(HealthStatusEnum::UNHEALTHY),
            H::HEALTHY => Some(HealthStatusEnum::HEALTHY),
            H::STARTING => Some(HealthStatusEnum::STARTING),
            H::NONE | H::EMPTY => None,
        };
    }
    let suffix = text.strip_suffix(')')?.rsplit_once('(')?.1;
    match suffix {
        "unhealthy" => Some(HealthStatusEnum::UNHEALTHY),
        "healthy" => Some(HealthStatusEnum::HEALTHY),
        "health: starting" => Some(HealthStatusEnum::STARTING),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::ContainerSummaryHealth;
    use mcp_types::{Phase, reasons};
    use rstest::rstest;
    use std::collections::HashMap;

    fn summary(state: ContainerSummaryStateEnum, text: &str) -> ContainerSummary {
        ContainerSummary {
            names: Some(vec!["/mcp-time-abcdefghij".into()]),
            labels: Some(HashMap::from([
                (labels::SERVER.to_owned(), "time".to_owned()),
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (
                    labels::CREATED_AT.to_owned(),
                    "2025-06-01T12:00:00Z".to_owned(),
                ),
            ])),
            state: Some(state),
            status: Some(text.to_owned()),
            ..ContainerSummary::default()
        }
    }

    use ContainerSummaryStateEnum as L;

    #[rstest]
    #[case::running(L::RUNNING, "Up 5 minutes", Phase::Running, None)]
    #[case::running_healthy(L::RUNNING, "Up 5 minutes (healthy)", Phase::Running, None)]
    #[case::running_starting(L::RUNNING, "Up 1 second (health: starting)", Phase::Running, None)]
    #[case::running_unhealthy(
        L::RUNNING,
        "Up About an hour (unhealthy)",
        Phase::Running,
        Some(reasons::UNHEALTHY)
    )]
    #[case::paused(L::PAUSED, "Up 2 days (Paused)", Phase::Running, Some(reasons::PAUSED))]
    #[case::created(
        L::CREATED,
        "Created",
        Phase::Pending,
        Some(reasons::CONTAINER_CREATING)
    )]
    #[case::removing(
        L::REMOVING,
        "Removal In Progress",
        Phase::Stopping,
        Some(reasons::TERMINATING)
    )]
    fn rows_the_listing_answers(
        #[case] state: ContainerSummaryStateEnum,
        #[case] text: &str,
        #[case] phase: Phase,
        #[case] reason: Option<&str>,
    ) {
        let l = listed(&summary(state, text)).unwrap();
        assert!(!l.needs_inspect, "{l:?}");
        let s = &l.instance.status;
        assert_eq!((s.phase, s.reason.as_deref()), (phase, reason), "{s:?}");
        assert_eq!(s.exit_code, None);
        // Exactly what an inspect of the same state maps to (bar the inspect-only fields).
        assert_eq!(l.instance.id.as_str(), "mcp-time-abcdefghij");
        assert_eq!(l.instance.server, "time");
        assert!(l.instance.created_at.is_some());
    }

    #[rstest]
    #[case::exited(L::EXITED, "Exited (3) 2 seconds ago")]
    #[case::exited_zero(L::EXITED, "Exited (0) 1 second ago")]
    #[case::oom_or_kill(L::EXITED, "Exited (137) 5 minutes ago")]
    #[case::dead(L::DEAD, "Dead")]
    #[case::restarting(L::RESTARTING, "Restarting (1) 3 seconds ago")]
    #[case::empty(L::EMPTY, "")]
    fn rows_that_need_an_inspect(#[case] state: ContainerSummaryStateEnum, #[case] text: &str) {
        let l = listed(&summary(state, text)).unwrap();
        assert!(l.needs_inspect, "{l:?}");
    }

    #[test]
    fn a_row_without_state_needs_an_inspect() {
        let mut s = summary(L::RUNNING, "Up 1 second");
        s.state = None;
        assert!(listed(&s).unwrap().needs_inspect);
    }

    #[test]
    fn the_health_field_wins_over_the_text() {
        let mut s = summary(L::RUNNING, "Up 5 minutes");
        s.health = Some(ContainerSummaryHealth {
            status: Some(ContainerSummaryHealthStatusEnum::UNHEALTHY),
            ..ContainerSummaryHealth::default()
        });
        let l = listed(&s).unwrap();
        assert_eq!(
            l.instance.status.reason.as_deref(),
            Some(reasons::UNHEALTHY)
        );
    }

    #[test]
    fn listed_running_matches_the_inspect_mapping() {
        let inspected = instance_status(
            &ContainerState {
                status: Some(ContainerStateStatusEnum::RUNNING),
                started_at: Some("2025-01-02T03:04:05Z".into()),
                ..ContainerState::default()
            },
            0,
        );
        let l = listed(&summary(L::RUNNING, "Up 3 seconds")).unwrap();
        assert_eq!(l.instance.status.phase, inspected.phase);
        assert_eq!(l.instance.status.reason, inspected.reason);
        assert_eq!(l.instance.status.message, inspected.message);
        assert_eq!(l.instance.status.exit_code, inspected.exit_code);
    }

    #[test]
    fn names_with_a_slash_are_links_and_a_row_without_a_name_is_skipped() {
        let mut s = summary(L::RUNNING, "Up 1 second");
        s.names = Some(vec!["/other/alias".into(), "/mcp-x-1".into()]);
        assert_eq!(listed(&s).unwrap().instance.id.as_str(), "mcp-x-1");
        s.names = None;
        assert!(listed(&s).is_none());
    }
}
