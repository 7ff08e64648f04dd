//! Docker container state -> [`InstanceStatus`], and a container's inspect -> [`Instance`], as
//! pure functions (a listing row -> [`Instance`] is `listing`, through the same mapping).
//!
//! | Docker state                 | Phase     | Reason             |
//! |------------------------------|-----------|--------------------|
//! | `created`                    | Pending   | ContainerCreating  |
//! | `running`                    | Running   | -                  |
//! | `running`, health unhealthy  | Running   | Unhealthy          |
//! | `paused`                     | Running   | Paused             |
//! | `restarting`                 | Pending   | CrashLoopBackOff   |
//! | `removing`, `stopping`       | Stopping  | Terminating        |
//! | `exited`, code 0             | Succeeded | Completed          |
//! | `exited`, code != 0          | Failed    | Error              |
//! | `exited`/`dead`, OOM killed  | Failed    | OOMKilled          |
//! | `dead`                       | Failed    | Error              |
//! | anything else                | Unknown   | -                  |
//!
//! The exit rows (restarting, exited with a code) are the shared rule of `mcp_types::exit`; the
//! engine has already applied the restart policy, so `restarting` means a restart follows and
//! `exited` that none does.
//!
//! A paused container still holds its process and memory and resumes where it was, so it is
//! reported as Running with reason `Paused`, not as a terminal phase; callers that care look at
//! the reason. Docker's zero time (`0001-01-01T00:00:00Z`) means "never" and becomes `None`.

use std::collections::BTreeMap;

use bollard::models::{
    ContainerInspectResponse, ContainerState, ContainerStateStatusEnum, HealthStatusEnum,
};
use mcp_types::{
    AfterExit, Instance, InstanceId, InstanceStatus, Phase, RunExit, Timestamp, labels, reasons,
};

use crate::container::endpoint_from_labels;
use crate::egress::{EGRESS_NETWORK_LABEL, internal_endpoint, posture_from_labels};

/// Maps the `State` of a container inspect and its `RestartCount` onto an [`InstanceStatus`].
pub fn instance_status(state: &ContainerState, restart_count: i64) -> InstanceStatus {
    use ContainerStateStatusEnum as S;
    let exit_code = state
        .exit_code
        .map(|c| i32::try_from(c).unwrap_or(i32::MAX));
    let oom = state.oom_killed.unwrap_or(false);
    let engine_error = state.error.as_deref().filter(|e| !e.is_empty());
    let mut status = match state.status {
        Some(S::CREATED) => InstanceStatus::phase(Phase::Pending)
            .with_reason(reasons::CONTAINER_CREATING)
            .with_message("container created, not started yet"),
        Some(S::RUNNING) => {
            let unhealthy = state
                .health
                .as_ref()
                .is_some_and(|h| h.status == Some(HealthStatusEnum::UNHEALTHY));
            let s = InstanceStatus::phase(Phase::Running);
            if unhealthy {
                s.with_reason(reasons::UNHEALTHY)
                    .with_message("the container's health check is failing")
            } else {
                s
            }
        }
        Some(S::PAUSED) => InstanceStatus::phase(Phase::Running)
            .with_reason(reasons::PAUSED)
            .with_message("the container is paused"),
        Some(S::RESTARTING) => {
            // The engine applies the restart policy: restarting means a restart follows.
            let mut s = RunExit::new(exit_code.unwrap_or_default(), AfterExit::Restart)
                .with_next_start(format!("(restart {restart_count})"))
                .status();
            s.exit_code = exit_code;
            s
        }
        Some(S::REMOVING | S::STOPPING) => {
            InstanceStatus::phase(Phase::Stopping).with_reason(reasons::TERMINATING)
        }
        Some(S::EXITED | S::DEAD) => {
            let dead = state.status == Some(S::DEAD);
            let code = exit_code.unwrap_or_default();
            let mut s = if oom {
                InstanceStatus::phase(Phase::Failed)
                    .with_reason(reasons::OOM_KILLED)
                    .with_message(format!(
                        "killed for exceeding its memory limit (exit code {code})"
                    ))
            } else if dead {
                InstanceStatus::phase(Phase::Failed)
                    .with_reason(reasons::ERROR)
                    .with_message("the container is dead: the engine failed to stop or remove it")
            } else {
                // Exited (not restarting): the engine's restart policy let it stay down.
                RunExit::new(code, AfterExit::without_restart(code)).status()
            };
            if let Some(e) = engine_error {
                s.message = Some(format!("{}: {e}", s.message.as_deref().unwrap_or("exited")));
            }
            s.exit_code = Some(code);
            s
        }
        Some(S::EMPTY) | None => InstanceStatus::phase(Phase::Unknown),
    };
    status.restart_count = u32::try_from(restart_count.max(0)).unwrap_or(u32::MAX);
    status.started_at = docker_time(state.started_at.as_deref());
    status.finished_at = match status.phase {
        // A running container's FinishedAt is the end of the previous run, if any.
        Phase::Running => None,
        _ => docker_time(state.finished_at.as_deref()),
    };
    status
}

/// Parses a Docker RFC 3339 time; empty, unparsable and the zero time are `None`.
pub(crate) fn docker_time(s: Option<&str>) -> Option<Timestamp> {
    let t: Timestamp = s?.parse().ok()?;
    // Docker reports "never" as Go's zero time, 0001-01-01T00:00:00Z.
    (t.as_second() > -62_135_596_800).then_some(t)
}

fn container_labels(info: &ContainerInspectResponse) -> BTreeMap<String, String> {
    info.config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The instance a managed container is, from its inspect: id, server, labels, creation time,
/// status and, for HTTP transports, the endpoint published on 127.0.0.1 (the host port pinned
/// at create, so it is known even while the container is stopped).
pub(crate) fn instance_from_inspect(id: &InstanceId, info: &ContainerInspectResponse) -> Instance {
    let labels = container_labels(info);
    let mut status = info.state.as_ref().map_or_else(
        || InstanceStatus::phase(mcp_types::Phase::Unknown),
        |s| instance_status(s, info.restart_count.unwrap_or_default()),
    );
    status.egress = posture_from_labels(&labels);
    let internal_ip = labels.get(EGRESS_NETWORK_LABEL).and_then(|net| {
        info.network_settings
            .as_ref()?
            .networks
            .as_ref()?
            .get(net)?
            .ip_address
            .as_deref()
    });
    let endpoint =
        endpoint_from_labels(&labels).or_else(|| internal_endpoint(&labels, internal_ip));
    Instance {
        id: id.clone(),
        server: labels.get(labels::SERVER).cloned().unwrap_or_default(),
        created_at: labels
            .get(labels::CREATED_AT)
            .and_then(|t| t.parse::<Timestamp>().ok()),
        labels,
        status,
        endpoint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::Health;
    use rstest::rstest;

    const ZERO: &str = "0001-01-01T00:00:00Z";
    const T1: &str = "2025-01-02T03:04:05.123456789Z";
    const T2: &str = "2025-01-02T03:05:00Z";

    fn st(
        status: ContainerStateStatusEnum,
        exit: i64,
        started: &str,
        finished: &str,
    ) -> ContainerState {
        ContainerState {
            status: Some(status),
            exit_code: Some(exit),
            started_at: Some(started.into()),
            finished_at: Some(finished.into()),
            ..ContainerState::default()
        }
    }

    fn oom(mut s: ContainerState) -> ContainerState {
        s.oom_killed = Some(true);
        s
    }

    fn health(mut s: ContainerState, h: HealthStatusEnum) -> ContainerState {
        s.health = Some(Health {
            status: Some(h),
            ..Health::default()
        });
        s
    }

    use ContainerStateStatusEnum as S;

    #[rstest]
    #[case::created(
        st(S::CREATED, 0, ZERO, ZERO),
        0,
        Phase::Pending,
        Some(reasons::CONTAINER_CREATING),
        None,
        false,
        false
    )]
    #[case::running(
        st(S::RUNNING, 0, T1, ZERO),
        0,
        Phase::Running,
        None,
        None,
        true,
        false
    )]
    #[case::running_after_restart(
        st(S::RUNNING, 0, T1, T2),
        2,
        Phase::Running,
        None,
        None,
        true,
        false
    )]
    #[case::running_healthy(
        health(st(S::RUNNING, 0, T1, ZERO), HealthStatusEnum::HEALTHY),
        0,
        Phase::Running,
        None,
        None,
        true,
        false
    )]
    #[case::running_starting(
        health(st(S::RUNNING, 0, T1, ZERO), HealthStatusEnum::STARTING),
        0,
        Phase::Running,
        None,
        None,
        true,
        false
    )]
    #[case::running_unhealthy(
        health(st(S::RUNNING, 0, T1, ZERO), HealthStatusEnum::UNHEALTHY),
        0,
        Phase::Running,
        Some(reasons::UNHEALTHY),
        None,
        true,
        false
    )]
    #[case::paused(
        st(S::PAUSED, 0, T1, ZERO),
        0,
        Phase::Running,
        Some(reasons::PAUSED),
        None,
        true,
        false
    )]
    #[case::restarting(
        st(S::RESTARTING, 1, T1, T2),
        3,
        Phase::Pending,
        Some(reasons::CRASH_LOOP_BACKOFF),
        Some(1),
        true,
        true
    )]
    #[case::removing(
        st(S::REMOVING, 0, T1, ZERO),
        0,
        Phase::Stopping,
        Some(reasons::TERMINATING),
        None,
        true,
        false
    )]
    #[case::stopping(
        st(S::STOPPING, 0, T1, ZERO),
        0,
        Phase::Stopping,
        Some(reasons::TERMINATING),
        None,
        true,
        false
    )]
    #[case::exited_zero(
        st(S::EXITED, 0, T1, T2),
        0,
        Phase::Succeeded,
        Some(reasons::COMPLETED),
        Some(0),
        true,
        true
    )]
    #[case::exited_nonzero(
        st(S::EXITED, 3, T1, T2),
        0,
        Phase::Failed,
        Some(reasons::ERROR),
        Some(3),
        true,
        true
    )]
    #[case::exited_sigkill(
        st(S::EXITED, 137, T1, T2),
        0,
        Phase::Failed,
        Some(reasons::ERROR),
        Some(137),
        true,
        true
    )]
    #[case::oom_killed(
        oom(st(S::EXITED, 137, T1, T2)),
        0,
        Phase::Failed,
        Some(reasons::OOM_KILLED),
        Some(137),
        true,
        true
    )]
    #[case::oom_killed_code_zero(
        oom(st(S::EXITED, 0, T1, T2)),
        0,
        Phase::Failed,
        Some(reasons::OOM_KILLED),
        Some(0),
        true,
        true
    )]
    #[case::dead(
        st(S::DEAD, 0, T1, T2),
        0,
        Phase::Failed,
        Some(reasons::ERROR),
        Some(0),
        true,
        true
    )]
    #[case::never_started_exit(
        st(S::EXITED, 127, ZERO, T2),
        0,
        Phase::Failed,
        Some(reasons::ERROR),
        Some(127),
        false,
        true
    )]
    #[case::empty(
        st(S::EMPTY, 0, ZERO, ZERO),
        0,
        Phase::Unknown,
        None,
        None,
        false,
        false
    )]
    fn maps_every_state(
        #[case] state: ContainerState,
        #[case] restarts: i64,
        #[case] phase: Phase,
        #[case] reason: Option<&str>,
        #[case] exit_code: Option<i32>,
        #[case] has_started: bool,
        #[case] has_finished: bool,
    ) {
        let s = instance_status(&state, restarts);
        assert_eq!(s.phase, phase, "{s:?}");
        assert_eq!(s.reason.as_deref(), reason, "{s:?}");
        assert_eq!(s.exit_code, exit_code, "{s:?}");
        assert_eq!(s.restart_count, u32::try_from(restarts).unwrap());
        assert_eq!(s.started_at.is_some(), has_started, "{s:?}");
        assert_eq!(s.finished_at.is_some(), has_finished, "{s:?}");
    }

    #[test]
    fn missing_state_is_unknown() {
        let s = instance_status(&ContainerState::default(), -1);
        assert_eq!(s.phase, Phase::Unknown);
        assert_eq!(s.restart_count, 0);
    }

    #[test]
    fn times_keep_nanoseconds_and_zero_is_none() {
        let t = docker_time(Some(T1)).unwrap();
        assert_eq!(t.subsec_nanosecond(), 123_456_789);
        assert_eq!(docker_time(Some(ZERO)), None);
        assert_eq!(docker_time(Some("")), None);
        assert_eq!(docker_time(None), None);
    }

    #[test]
    fn failure_messages_carry_the_exit_code_and_engine_error() {
        let mut state = st(S::EXITED, 127, ZERO, T2);
        state.error = Some("exec: \"nope\": executable file not found".into());
        let s = instance_status(&state, 0);
        let msg = s.message.unwrap();
        assert!(
            msg.contains("127") && msg.contains("executable file not found"),
            "{msg}"
        );
    }
}
