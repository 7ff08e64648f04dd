//! Status through its phases on a real kubelet, and the reasons the deployment guide's
//! troubleshooting section maps to kubectl commands: ErrImagePull/ImagePullBackOff,
//! CrashLoopBackOff, OOMKilled, Unschedulable, Terminating.

use std::time::Duration;

use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{
    InstanceId, InstanceStatus, McpServer, Phase, Quantity, RestartPolicy, StartOptions, reasons,
};

use crate::support::{Kind, TIMEOUT, cluster};

async fn start(kind: &Kind, spec: &McpServer) -> InstanceId {
    kind.orchestrator
        .start_server(spec, &StartOptions::default())
        .await
        .unwrap_or_else(|e| panic!("start {}: {e}", spec.name))
}

async fn stop(kind: &Kind, id: &InstanceId) {
    kind.orchestrator
        .stop_server(id, Duration::from_secs(2))
        .await
        .unwrap_or_else(|e| panic!("stop {id}: {e}"));
}

/// Waits until the status has one of `reasons`, returning it.
async fn wait_reason(kind: &Kind, id: &InstanceId, wanted: &[&str]) -> InstanceStatus {
    let what = format!("reason in {wanted:?}");
    kind.orchestrator
        .wait_for(id, TIMEOUT, &what, |s| {
            s.reason.as_deref().is_some_and(|r| wanted.contains(&r))
        })
        .await
        .unwrap_or_else(|e| panic!("{id}: {e}"))
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn status_moves_through_pending_running_failed() {
    let kind = cluster().await;
    let script = FixtureScript::new()
        .stdout("up")
        .sleep(Duration::from_secs(4))
        .stdout("bye")
        .exit(3);
    let id = start(&kind, &kind.fixture("phases", &script)).await;
    let mut seen: Vec<Phase> = Vec::new();
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let last = loop {
        let status = kind.orchestrator.get_status(&id).await.expect("status");
        if seen.last() != Some(&status.phase) {
            seen.push(status.phase);
        }
        if status.phase.is_terminal() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "phases so far: {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Pending may pass too quickly to be seen; Running (4 s) cannot.
    let order = [Phase::Pending, Phase::Running, Phase::Failed];
    assert!(
        seen.iter().all(|p| order.contains(p))
            && seen.windows(2).all(|w| {
                order.iter().position(|p| *p == w[0]) < order.iter().position(|p| *p == w[1])
            }),
        "phases out of order: {seen:?}"
    );
    assert!(
        seen.contains(&Phase::Running),
        "never seen Running: {seen:?}"
    );
    assert_eq!(last.phase, Phase::Failed, "{last:?}");
    assert_eq!(last.exit_code, Some(3), "{last:?}");
    assert_eq!(last.reason.as_deref(), Some(reasons::ERROR), "{last:?}");
    assert!(
        last.started_at.is_some() && last.finished_at.is_some(),
        "{last:?}"
    );
    stop(&kind, &id).await;
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn a_missing_image_reports_err_image_pull() {
    let kind = cluster().await;
    // `.invalid` never resolves (RFC 2606), so the pull fails fast even with a network.
    let spec = McpServer {
        image: Some("registry.mcpctl.invalid/missing:1".into()),
        ..kind.fixture("pull", &FixtureScript::new())
    };
    let id = start(&kind, &spec).await;
    let status = wait_reason(
        &kind,
        &id,
        &[reasons::ERR_IMAGE_PULL, reasons::IMAGE_PULL_BACKOFF],
    )
    .await;
    assert_eq!(status.phase, Phase::Pending, "{status:?}");
    // Waiting for it to run gives up at once with the reason instead of timing out.
    match kind.orchestrator.wait_until_running(&id, TIMEOUT).await {
        Err(OrchestratorError::Exited { status, .. }) => assert!(
            matches!(
                status.reason.as_deref(),
                Some(reasons::ERR_IMAGE_PULL | reasons::IMAGE_PULL_BACKOFF)
            ),
            "{status:?}"
        ),
        other => panic!("wait_until_running on a missing image: {other:?}"),
    }
    stop(&kind, &id).await;
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn a_crashing_server_reports_crash_loop_back_off() {
    let kind = cluster().await;
    let spec = McpServer {
        restart_policy: RestartPolicy::Always,
        ..kind.fixture("crash", &FixtureScript::new().stderr("boom").exit(1))
    };
    let id = start(&kind, &spec).await;
    let status = wait_reason(&kind, &id, &[reasons::CRASH_LOOP_BACKOFF]).await;
    assert_eq!(
        status.phase,
        Phase::Pending,
        "a restart follows: {status:?}"
    );
    assert!(status.restart_count >= 1, "{status:?}");
    assert_eq!(status.exit_code, Some(1), "the last run's code: {status:?}");
    stop(&kind, &id).await;
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn exceeding_the_memory_limit_reports_oom_killed() {
    let kind = cluster().await;
    // The probe touches 256 MiB under a 64 Mi limit.
    let spec = McpServer {
        restart_policy: RestartPolicy::Never,
        ..kind.probe_server("oom", &["hog", "256"])
    };
    let id = start(&kind, &spec).await;
    let status = kind
        .orchestrator
        .wait_for(&id, TIMEOUT, "terminal", |s| s.phase.is_terminal())
        .await
        .expect("the hog ends");
    assert_eq!(status.phase, Phase::Failed, "{status:?}");
    assert_eq!(
        status.reason.as_deref(),
        Some(reasons::OOM_KILLED),
        "{status:?}"
    );
    assert_eq!(status.exit_code, Some(137), "SIGKILL: {status:?}");
    stop(&kind, &id).await;
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn an_impossible_request_reports_unschedulable() {
    let kind = cluster().await;
    let mut spec = kind.fixture("unschedulable", &FixtureScript::new());
    spec.resources.requests.memory = Quantity::parse("900Gi").ok();
    spec.resources.limits.memory = Quantity::parse("900Gi").ok();
    let id = start(&kind, &spec).await;
    let status = wait_reason(&kind, &id, &[reasons::UNSCHEDULABLE]).await;
    assert_eq!(status.phase, Phase::Pending, "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("memory")),
        "the scheduler's message names the resource: {status:?}"
    );
    stop(&kind, &id).await;
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn a_stopping_server_reports_terminating() {
    let kind = cluster().await;
    // The probe ignores SIGTERM (PID 1 without a handler), so the pod stays Terminating for the
    // whole grace period before the kubelet kills it.
    let id = start(&kind, &kind.probe_server("terminating", &["sleep", "3600"])).await;
    kind.orchestrator
        .wait_until_running(&id, TIMEOUT)
        .await
        .expect("running");
    let grace = Duration::from_secs(8);
    let stopping = {
        let o = kind.orchestrator.clone();
        let id = id.clone();
        tokio::spawn(async move { o.stop_server(&id, grace).await })
    };
    let status = kind
        .orchestrator
        .wait_for(&id, grace, "Stopping", |s| s.phase == Phase::Stopping)
        .await
        .expect("Stopping during the grace period");
    assert_eq!(
        status.reason.as_deref(),
        Some(reasons::TERMINATING),
        "{status:?}"
    );
    stopping
        .await
        .expect("stop task")
        .expect("stop after the grace period");
    assert!(matches!(
        kind.orchestrator.get_status(&id).await,
        Err(OrchestratorError::NotFound { .. })
    ));
}
