//! Pure mapping from a Pod to the shared [`InstanceStatus`] and [`Instance`].
//!
//! The reason follows what `kubectl get pods` shows in its STATUS column, so a user sees the
//! same word in both tools:
//!
//! | Pod                                                          | Phase       | Reason              |
//! |--------------------------------------------------------------|-------------|---------------------|
//! | `deletionTimestamp` set                                      | `Stopping`  | `Terminating`       |
//! | phase `Succeeded`                                            | `Succeeded` | `Completed`         |
//! | phase `Failed`, pod reason set (`Evicted`, `Shutdown`, ...)   | `Failed`    | pod's, with its message |
//! | phase `Failed`                                               | `Failed`    | container's (`Error`, `OOMKilled`, `ContainerStatusUnknown`) |
//! | phase `Unknown`                                              | `Unknown`   | pod's               |
//! | condition `PodScheduled=False`, reason `Unschedulable`       | `Pending`   | `Unschedulable`     |
//! | container waiting (`ContainerCreating`, `ErrImagePull`, `ImagePullBackOff`, `CrashLoopBackOff`, ...) | `Pending` | the waiting reason |
//! | container terminated, restart policy `Never` (or `OnFailure` and exit 0) | `Succeeded`/`Failed` | `Completed`/the terminated reason |
//! | container terminated, a restart will follow                  | `Pending`   | the terminated reason |
//! | container running                                            | `Running`   | none                |
//!
//! A container the runtime lost (the kubelet reports `terminated{reason: ContainerStatusUnknown,
//! exitCode: 137}` without a container id, e.g. after an eviction) has no output to read: it does
//! not count as "has run" for logs, and the pod's reason (`Evicted`) explains it.
//!
//! The terminated rows follow the shared rule of `mcp_types::exit` (the phase from the exit code
//! and the pod's restart policy; `Completed`/`Error` when the container has no reason).
//!
//! A crash-looping container is `Pending` with reason `CrashLoopBackOff`, not `Failed`: the
//! kubelet will start it again, and `Phase::is_terminal` promises that no restart follows a
//! terminal phase. This matches the in-memory reference backend, and
//! `OrchestratorExt::wait_until_running` stops waiting on that reason. The restart count, the last
//! run's exit code and times, and (in the message) the last run's reason are reported with it.

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateTerminated, ContainerStatus, Pod, PodCondition, PodStatus,
};
use mcp_k8s_resources::{CONTAINER_NAME, PORT_NAME, names::service_name};
use mcp_types::{
    AfterExit, Instance, InstanceId, InstanceStatus, Phase, RestartPolicy, Timestamp, exit_message,
    exit_reason, labels, reasons,
};

/// The status of the instance a pod runs, with its egress posture (see `posture`).
pub fn instance_status(pod: &Pod) -> InstanceStatus {
    InstanceStatus {
        egress: crate::posture::egress_posture(pod),
        ..run_status(pod)
    }
}

/// Phase, reason, message, restarts and times, as the module's table says.
fn run_status(pod: &Pod) -> InstanceStatus {
    let no_status = PodStatus::default();
    let status = pod.status.as_ref().unwrap_or(&no_status);
    let container = server_container(status);
    let mut out = InstanceStatus {
        restart_count: container.map_or(0, |c| u32::try_from(c.restart_count).unwrap_or(0)),
        ..InstanceStatus::default()
    };
    fill_times(&mut out, container);

    if pod.metadata.deletion_timestamp.is_some() {
        out.phase = Phase::Stopping;
        out.reason = Some(reasons::TERMINATING.to_owned());
        return out;
    }
    match status.phase.as_deref() {
        Some("Succeeded") => {
            out.phase = Phase::Succeeded;
            out.reason = Some(reasons::COMPLETED.to_owned());
            out.exit_code = out.exit_code.or(Some(0));
            return out;
        }
        Some("Failed") => {
            let terminated = container.and_then(current_terminated);
            out.phase = Phase::Failed;
            // The kubelet sets a pod reason only when it ended the pod itself (eviction, node
            // shutdown, admission): that says why, not the container's kill.
            if status.reason.is_some() {
                out.reason.clone_from(&status.reason);
                out.message = status
                    .message
                    .clone()
                    .or_else(|| terminated.and_then(|t| t.message.clone()));
                return out;
            }
            out.reason = terminated
                .and_then(|t| t.reason.clone())
                .or_else(|| Some(reasons::ERROR.to_owned()));
            out.message = terminated
                .and_then(|t| t.message.clone())
                .or_else(|| out.exit_code.map(exit_message));
            return out;
        }
        Some("Unknown") => {
            out.phase = Phase::Unknown;
            out.reason.clone_from(&status.reason);
            out.message.clone_from(&status.message);
            return out;
        }
        _ => {}
    }
    if let Some(c) = unschedulable(status) {
        out.phase = Phase::Pending;
        out.reason = Some(reasons::UNSCHEDULABLE.to_owned());
        out.message.clone_from(&c.message);
        return out;
    }
    let Some(container) = container else {
        out.phase = Phase::Pending;
        return out;
    };
    let no_state = ContainerState::default();
    let state = container.state.as_ref().unwrap_or(&no_state);
    if let Some(waiting) = &state.waiting {
        out.phase = Phase::Pending;
        out.reason.clone_from(&waiting.reason);
        out.message = if waiting.reason.as_deref() == Some(reasons::CRASH_LOOP_BACKOFF) {
            Some(crash_loop_message(container, waiting.message.as_deref()))
        } else {
            waiting.message.clone()
        };
    } else if let Some(terminated) = &state.terminated {
        let policy = match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            // Kubernetes' default.
            _ => RestartPolicy::Always,
        };
        out.phase = AfterExit::decide(policy, terminated.exit_code).phase();
        // Until the back-off begins (a waiting state), the kubelet reports the terminated
        // run's own reason, also when a restart follows.
        out.reason = terminated
            .reason
            .clone()
            .or_else(|| Some(exit_reason(terminated.exit_code).to_owned()));
        out.message.clone_from(&terminated.message);
    } else if state.running.is_some() {
        out.phase = Phase::Running;
        out.message = last_run(container).map(|last| {
            format!(
                "restarted {} times; the last run ended with {}",
                container.restart_count,
                describe_exit(last)
            )
        });
    } else {
        out.phase = Phase::Pending;
    }
    out
}

/// The instance a managed pod runs, as listed: id, server, labels, creation time, status and,
/// for HTTP transports, the Service's cluster DNS endpoint `http://<svc>.<ns>.svc:<port>`.
pub fn pod_instance(pod: &Pod) -> Option<Instance> {
    let id = pod.metadata.name.clone()?;
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    Some(instance_with(pod, id, labels))
}

/// [`pod_instance`] of a pod that is no longer needed: its name and labels are moved, not
/// copied (the listing's path).
pub(crate) fn into_instance(mut pod: Pod) -> Option<Instance> {
    let id = pod.metadata.name.take()?;
    let labels = pod.metadata.labels.take().unwrap_or_default();
    Some(instance_with(&pod, id, labels))
}

fn instance_with(
    pod: &Pod,
    id: String,
    pod_labels: std::collections::BTreeMap<String, String>,
) -> Instance {
    let created_at = pod
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0)
        .or_else(|| {
            pod.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::CREATED_AT))
                .and_then(|t| t.parse::<Timestamp>().ok())
        });
    Instance {
        server: pod_labels.get(labels::SERVER).cloned().unwrap_or_default(),
        endpoint: endpoint(pod, &id),
        id: InstanceId::new(id),
        labels: pod_labels,
        created_at,
        status: instance_status(pod),
    }
}

/// Whether a pod carries `mcpctl.io/managed=true`.
pub(crate) fn is_managed(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::MANAGED))
        .is_some_and(|v| v == "true")
}

/// The server container's status (the only container of the pods this backend creates).
pub(crate) fn server_container(status: &PodStatus) -> Option<&ContainerStatus> {
    let statuses = status.container_statuses.as_deref()?;
    statuses
        .iter()
        .find(|c| c.name == CONTAINER_NAME)
        .or_else(|| statuses.first())
}

/// Whether the server container has (or had) a process whose output can be read.
pub(crate) fn has_run(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(server_container)
        .is_some_and(|c| {
            let state = c.state.clone().unwrap_or_default();
            state.running.is_some()
                || state.terminated.as_ref().is_some_and(is_readable)
                || last_run(c).is_some_and(is_readable)
        })
}

/// Whether the server container has a previous, terminated run whose output can be read.
pub(crate) fn has_previous_run(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(server_container)
        .and_then(last_run)
        .is_some_and(is_readable)
}

/// Whether the pod has ended for good (no container will run in it again).
pub(crate) fn is_finished(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// Whether a terminated run left a container the kubelet can read a log from: not one the
/// runtime lost (`ContainerStatusUnknown` without a container id, which the kubelet refuses
/// with 400 "is terminated").
fn is_readable(t: &ContainerStateTerminated) -> bool {
    t.container_id.as_deref().is_some_and(|id| !id.is_empty())
        || t.reason.as_deref() != Some(CONTAINER_STATUS_UNKNOWN)
}

/// The kubelet's reason for a container the runtime no longer knows.
const CONTAINER_STATUS_UNKNOWN: &str = "ContainerStatusUnknown";

fn endpoint(pod: &Pod, id: &str) -> Option<String> {
    let namespace = pod.metadata.namespace.as_deref()?;
    let port = pod
        .spec
        .as_ref()?
        .containers
        .iter()
        .filter(|c| c.name == CONTAINER_NAME)
        .flat_map(|c| c.ports.iter().flatten())
        .find(|p| p.name.as_deref() == Some(PORT_NAME))?
        .container_port;
    let path = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(mcp_types::labels::HTTP_PATH))
        .map_or(mcp_types::DEFAULT_HTTP_PATH, String::as_str);
    let port = u16::try_from(port).ok()?;
    Some(mcp_types::http_url(
        &format!("{}.{namespace}.svc", service_name(id)),
        port,
        path,
    ))
}

fn current_terminated(c: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    c.state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| last_run(c))
}

fn last_run(c: &ContainerStatus) -> Option<&ContainerStateTerminated> {
    c.last_state.as_ref().and_then(|s| s.terminated.as_ref())
}

fn unschedulable(status: &PodStatus) -> Option<&PodCondition> {
    status.conditions.as_deref()?.iter().find(|c| {
        c.type_ == "PodScheduled"
            && c.status == "False"
            && c.reason.as_deref() == Some(reasons::UNSCHEDULABLE)
    })
}

/// Start, finish and exit code of the current run, or of the last run while the container
/// waits to start again.
fn fill_times(out: &mut InstanceStatus, container: Option<&ContainerStatus>) {
    let Some(c) = container else { return };
    let no_state = ContainerState::default();
    let state = c.state.as_ref().unwrap_or(&no_state);
    if let Some(running) = &state.running {
        out.started_at = running.started_at.as_ref().map(|t| t.0);
        out.last_exit_code = last_run(c).map(|t| t.exit_code);
    } else if let Some(t) = state.terminated.as_ref().or_else(|| last_run(c)) {
        out.started_at = t.started_at.as_ref().map(|t| t.0);
        out.finished_at = t.finished_at.as_ref().map(|t| t.0);
        out.exit_code = Some(t.exit_code);
    }
}

fn describe_exit(t: &ContainerStateTerminated) -> String {
    match &t.reason {
        Some(reason) => format!("{reason} (exit code {})", t.exit_code),
        None => format!("exit code {}", t.exit_code),
    }
}

fn crash_loop_message(c: &ContainerStatus, kubelet: Option<&str>) -> String {
    let mut message = format!("restarted {} times", c.restart_count);
    if let Some(last) = last_run(c) {
        message.push_str("; the last run ended with ");
        message.push_str(&describe_exit(last));
    }
    if let Some(kubelet) = kubelet.filter(|m| !m.is_empty()) {
        message.push_str("; ");
        message.push_str(kubelet);
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::{Value, json};

    const T0: &str = "2025-01-01T00:00:00Z";
    const T1: &str = "2025-01-01T00:00:05Z";

    #[allow(clippy::needless_pass_by_value)] // rstest cases hand values over
    fn pod(restart_policy: &str, status: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {
                "name": "mcp-time-abc",
                "namespace": "mcpctl",
                "creationTimestamp": T0,
                "labels": {"mcpctl.io/managed": "true", "mcpctl.io/server": "time"},
            },
            "spec": {
                "restartPolicy": restart_policy,
                "containers": [{"name": "mcp-server", "image": "img"}],
            },
            "status": status,
        }))
        .unwrap()
    }

    #[allow(clippy::needless_pass_by_value)]
    fn container(state: Value, last: Value, restarts: i32) -> Value {
        json!({
            "phase": "Running",
            "conditions": [{"type": "PodScheduled", "status": "True"}],
            "containerStatuses": [{
                "name": "mcp-server", "image": "img", "imageID": "", "ready": false,
                "restartCount": restarts, "state": state, "lastState": last,
            }],
        })
    }

    fn with_phase(mut status: Value, phase: &str) -> Value {
        status["phase"] = json!(phase);
        status
    }

    fn terminated(code: i32, reason: &str) -> Value {
        json!({"terminated": {"exitCode": code, "reason": reason, "startedAt": T0, "finishedAt": T1}})
    }

    fn waiting(reason: &str, message: &str) -> Value {
        json!({"waiting": {"reason": reason, "message": message}})
    }

    fn running() -> Value {
        json!({"running": {"startedAt": T0}})
    }

    struct Expect {
        phase: Phase,
        reason: Option<&'static str>,
        exit_code: Option<i32>,
        restarts: u32,
        message_has: &'static str,
    }

    fn expect(phase: Phase, reason: Option<&'static str>) -> Expect {
        Expect {
            phase,
            reason,
            exit_code: None,
            restarts: 0,
            message_has: "",
        }
    }

    impl Expect {
        fn exit(mut self, code: i32) -> Self {
            self.exit_code = Some(code);
            self
        }
        fn restarts(mut self, n: u32) -> Self {
            self.restarts = n;
            self
        }
        fn message(mut self, text: &'static str) -> Self {
            self.message_has = text;
            self
        }
    }

    #[rstest]
    #[case::just_created("Always", json!({"phase": "Pending"}), expect(Phase::Pending, None))]
    #[case::no_status("Always", Value::Null, expect(Phase::Pending, None))]
    #[case::unschedulable("Always", json!({"phase": "Pending", "conditions": [{
        "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
        "message": "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."}]}),
        expect(Phase::Pending, Some("Unschedulable")).message("Insufficient nvidia.com/gpu"))]
    #[case::container_creating(
        "Always",
        with_phase(container(waiting("ContainerCreating", ""), Value::Null, 0), "Pending"),
        expect(Phase::Pending, Some("ContainerCreating"))
    )]
    #[case::err_image_pull("Always", with_phase(container(waiting("ErrImagePull", "pull access denied"), Value::Null, 0), "Pending"),
        expect(Phase::Pending, Some("ErrImagePull")).message("pull access denied"))]
    #[case::image_pull_backoff("Always", with_phase(container(waiting("ImagePullBackOff", "Back-off pulling image"), Value::Null, 0), "Pending"),
        expect(Phase::Pending, Some("ImagePullBackOff")).message("Back-off"))]
    #[case::running(
        "Always",
        container(running(), Value::Null, 0),
        expect(Phase::Running, None)
    )]
    #[case::running_after_oom("Always", container(running(), terminated(137, "OOMKilled"), 1),
        expect(Phase::Running, None).restarts(1).message("OOMKilled (exit code 137)"))]
    #[case::crash_loop("Always", container(waiting("CrashLoopBackOff", "back-off 40s restarting failed container"), terminated(3, "Error"), 4),
        expect(Phase::Pending, Some("CrashLoopBackOff")).exit(3).restarts(4).message("restarted 4 times; the last run ended with Error (exit code 3)"))]
    #[case::crash_loop_oom("Always", container(waiting("CrashLoopBackOff", ""), terminated(137, "OOMKilled"), 2),
        expect(Phase::Pending, Some("CrashLoopBackOff")).exit(137).restarts(2).message("OOMKilled"))]
    #[case::exited_before_restart("Always", container(terminated(1, "Error"), Value::Null, 0),
        expect(Phase::Pending, Some("Error")).exit(1))]
    #[case::exited_zero_never("Never", container(terminated(0, "Completed"), Value::Null, 0),
        expect(Phase::Succeeded, Some("Completed")).exit(0))]
    #[case::exited_nonzero_never("Never", container(terminated(2, "Error"), Value::Null, 0),
        expect(Phase::Failed, Some("Error")).exit(2))]
    #[case::exited_zero_on_failure("OnFailure", container(terminated(0, "Completed"), Value::Null, 0),
        expect(Phase::Succeeded, Some("Completed")).exit(0))]
    #[case::succeeded("Never", with_phase(container(terminated(0, "Completed"), Value::Null, 0), "Succeeded"),
        expect(Phase::Succeeded, Some("Completed")).exit(0))]
    #[case::succeeded_without_container_status("Never", json!({"phase": "Succeeded"}),
        expect(Phase::Succeeded, Some("Completed")).exit(0))]
    #[case::failed("Never", with_phase(container(terminated(3, "Error"), Value::Null, 0), "Failed"),
        expect(Phase::Failed, Some("Error")).exit(3).message("exited with code 3"))]
    #[case::oom_killed("Never", with_phase(container(terminated(137, "OOMKilled"), Value::Null, 0), "Failed"),
        expect(Phase::Failed, Some("OOMKilled")).exit(137))]
    #[case::evicted("Always", json!({"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."}),
        expect(Phase::Failed, Some("Evicted")).message("low on resource"))]
    #[case::evicted_lost_container("Always", with_phase(container(
        json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown",
            "message": "The container could not be located when the pod was terminated"}}),
        Value::Null, 0), "Failed")
        .as_object().cloned().map(|mut o| { o.insert("reason".into(), json!("Evicted"));
            o.insert("message".into(), json!("The node was low on resource: memory. ")); Value::Object(o) }).unwrap(),
        expect(Phase::Failed, Some("Evicted")).exit(137).message("low on resource: memory"))]
    #[case::lost_container_without_pod_reason("Never", with_phase(container(
        json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}}), Value::Null, 0), "Failed"),
        expect(Phase::Failed, Some("ContainerStatusUnknown")).exit(137))]
    #[case::unknown("Always", json!({"phase": "Unknown", "reason": "NodeLost"}), expect(Phase::Unknown, Some("NodeLost")))]
    fn pod_to_status(#[case] policy: &str, #[case] status: Value, #[case] want: Expect) {
        let got = instance_status(&pod(policy, status));
        assert_eq!(got.phase, want.phase, "{got:?}");
        assert_eq!(got.reason.as_deref(), want.reason, "{got:?}");
        assert_eq!(got.exit_code, want.exit_code, "{got:?}");
        assert_eq!(got.restart_count, want.restarts, "{got:?}");
        assert!(
            got.message
                .as_deref()
                .unwrap_or_default()
                .contains(want.message_has),
            "message {:?} lacks {:?}",
            got.message,
            want.message_has
        );
    }

    #[test]
    fn times_come_from_the_current_or_last_run() {
        let t0: Timestamp = T0.parse().unwrap();
        let t1: Timestamp = T1.parse().unwrap();
        let running = instance_status(&pod("Always", container(running(), Value::Null, 0)));
        assert_eq!((running.started_at, running.finished_at), (Some(t0), None));
        let done = instance_status(&pod(
            "Never",
            with_phase(
                container(terminated(0, "Completed"), Value::Null, 0),
                "Succeeded",
            ),
        ));
        assert_eq!((done.started_at, done.finished_at), (Some(t0), Some(t1)));
        let looping = instance_status(&pod(
            "Always",
            container(waiting("CrashLoopBackOff", ""), terminated(1, "Error"), 1),
        ));
        assert_eq!(looping.finished_at, Some(t1));
    }

    #[test]
    fn a_restarted_server_keeps_the_last_exit_code() {
        let again = instance_status(&pod(
            "Always",
            container(running(), terminated(137, "OOMKilled"), 1),
        ));
        assert_eq!(
            (again.phase, again.exit_code, again.last_exit_code),
            (Phase::Running, None, Some(137))
        );
        let first = instance_status(&pod("Always", container(running(), Value::Null, 0)));
        assert_eq!(first.last_exit_code, None);
    }

    #[test]
    fn deletion_timestamp_means_stopping() {
        let mut p = pod("Always", container(running(), Value::Null, 0));
        p.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            T1.parse().unwrap(),
        ));
        let got = instance_status(&p);
        assert_eq!(got.phase, Phase::Stopping);
        assert_eq!(got.reason.as_deref(), Some(reasons::TERMINATING));
    }

    #[test]
    fn instances_carry_server_labels_time_and_endpoint() {
        let mut p = pod("Always", container(running(), Value::Null, 0));
        let inst = pod_instance(&p).unwrap();
        assert_eq!(inst.id.as_str(), "mcp-time-abc");
        assert_eq!(inst.server, "time");
        assert_eq!(inst.created_at, Some(T0.parse().unwrap()));
        assert_eq!(inst.status.phase, Phase::Running);
        assert_eq!(inst.endpoint, None, "stdio has no endpoint");
        assert!(is_managed(&p));

        p.spec.as_mut().unwrap().containers[0].ports = Some(vec![
            serde_json::from_value(json!({"name": "mcp", "containerPort": 8080})).unwrap(),
        ]);
        assert_eq!(
            pod_instance(&p).unwrap().endpoint.as_deref(),
            Some("http://mcp-time-abc-svc.mcpctl.svc:8080/mcp")
        );
        // The spec's path, recorded as a pod annotation, is part of the URL.
        p.metadata
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                mcp_types::labels::HTTP_PATH.to_owned(),
                "/v1/mcp".to_owned(),
            );
        assert_eq!(
            pod_instance(&p).unwrap().endpoint.as_deref(),
            Some("http://mcp-time-abc-svc.mcpctl.svc:8080/v1/mcp")
        );
        p.metadata.labels = None;
        assert!(!is_managed(&p));
        p.metadata.name = None;
        assert!(pod_instance(&p).is_none());
    }

    #[test]
    fn log_availability() {
        let creating = pod(
            "Always",
            with_phase(
                container(waiting("ContainerCreating", ""), Value::Null, 0),
                "Pending",
            ),
        );
        assert!(!has_run(&creating) && !has_previous_run(&creating));
        assert!(has_run(&pod(
            "Always",
            container(running(), Value::Null, 0)
        )));
        let looping = pod(
            "Always",
            container(waiting("CrashLoopBackOff", ""), terminated(1, "Error"), 1),
        );
        assert!(has_run(&looping) && has_previous_run(&looping));
        // A container the runtime lost has no log the kubelet can read, now or as a previous run.
        let lost = json!({"terminated": {"exitCode": 137, "reason": "ContainerStatusUnknown"}});
        let evicted = pod(
            "Always",
            with_phase(container(lost.clone(), Value::Null, 0), "Failed"),
        );
        assert!(!has_run(&evicted) && !has_previous_run(&evicted));
        assert!(is_finished(&evicted));
        let restarted = pod(
            "Always",
            container(waiting("ContainerCreating", ""), lost, 1),
        );
        assert!(!has_run(&restarted) && !has_previous_run(&restarted));
        let mut with_id = terminated(137, "ContainerStatusUnknown");
        with_id["terminated"]["containerID"] = json!("containerd://abc");
        assert!(has_run(&pod("Never", container(with_id, Value::Null, 0))));
    }
}
