//! The simulated scheduler and kubelet: phases, container states, conditions, restart policies
//! and injected failures, observed through the API.

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use mcp_k8s_fake::{Failure, FailureTarget, FakeKubeServer, NODE_NAME};
use mcp_orchestrator_api::fixture::FixtureScript;

use crate::{
    WAIT, condition, container, create, idle_pod, is_running, phase, pod_with, script_pod, start,
    waiting_reason,
};

async fn wait(server: &FakeKubeServer, ns: &str, name: &str, what: impl Fn(&Pod) -> bool) -> Pod {
    server
        .handle()
        .wait_for_pod(ns, name, WAIT, what)
        .await
        .unwrap_or_else(|| panic!("{ns}/{name} never reached the expected state"))
}

fn terminated(pod: &Pod) -> Option<(i32, String)> {
    let t = container(pod, 0).state?.terminated?;
    Some((t.exit_code, t.reason.unwrap_or_default()))
}

fn last_terminated(pod: &Pod) -> Option<(i32, String)> {
    let t = container(pod, 0).last_state?.terminated?;
    Some((t.exit_code, t.reason.unwrap_or_default()))
}

#[tokio::test]
async fn a_pod_is_scheduled_created_and_runs() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "k");
    create(&pods, &idle_pod("p", &[])).await;
    let creating = wait(&server, "k", "p", |p| {
        waiting_reason(p).as_deref() == Some("ContainerCreating")
    })
    .await;
    assert_eq!(phase(&creating), "Pending");
    assert_eq!(condition(&creating, "PodScheduled").unwrap().0, "True");
    assert_eq!(
        condition(&creating, "Ready"),
        Some(("False".to_owned(), Some("ContainersNotReady".to_owned())))
    );

    let running = wait(&server, "k", "p", is_running).await;
    assert_eq!(phase(&running), "Running");
    let spec = running.spec.clone().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some(NODE_NAME));
    let status = container(&running, 0);
    assert!(status.ready);
    assert_eq!(status.started, Some(true));
    assert_eq!(status.restart_count, 0);
    assert!(status.container_id.unwrap().starts_with("containerd://"));
    assert!(status.state.unwrap().running.unwrap().started_at.is_some());
    for type_ in ["Ready", "ContainersReady", "Initialized", "PodScheduled"] {
        assert_eq!(condition(&running, type_).unwrap().0, "True", "{type_}");
    }
    let pod_status = running.status.unwrap();
    assert!(pod_status.pod_ip.is_some() && pod_status.start_time.is_some());
}

#[tokio::test]
async fn scripts_end_in_succeeded_or_failed_by_restart_policy() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "end");
    create(
        &pods,
        &script_pod("ok", "Never", &FixtureScript::new().stdout("x").exit(0)),
    )
    .await;
    create(
        &pods,
        &script_pod("bad", "Never", &FixtureScript::new().exit(3)),
    )
    .await;
    create(
        &pods,
        &script_pod("once", "OnFailure", &FixtureScript::new().exit(0)),
    )
    .await;

    let ok = wait(&server, "end", "ok", |p| phase(p) == "Succeeded").await;
    assert_eq!(terminated(&ok), Some((0, "Completed".to_owned())));
    let t = container(&ok, 0).state.unwrap().terminated.unwrap();
    assert!(t.finished_at.is_some() && t.started_at.is_some());
    assert_eq!(
        condition(&ok, "Ready"),
        Some(("False".to_owned(), Some("PodCompleted".to_owned())))
    );

    let bad = wait(&server, "end", "bad", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&bad), Some((3, "Error".to_owned())));
    assert_eq!(container(&bad, 0).restart_count, 0);

    let once = wait(&server, "end", "once", |p| phase(p) == "Succeeded").await;
    assert_eq!(container(&once, 0).restart_count, 0);
}

#[tokio::test]
async fn failing_containers_crash_loop_under_always() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "loop");
    create(
        &pods,
        &script_pod("p", "Always", &FixtureScript::new().exit(2)),
    )
    .await;
    let backoff = wait(&server, "loop", "p", |p| {
        waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    assert_eq!(phase(&backoff), "Running");
    assert_eq!(last_terminated(&backoff), Some((2, "Error".to_owned())));
    assert!(!container(&backoff, 0).ready);
    let again = wait(&server, "loop", "p", |p| container(p, 0).restart_count >= 2).await;
    assert_eq!(last_terminated(&again).map(|t| t.0), Some(2));
}

#[tokio::test]
async fn injected_crash_loop_and_oom_kill() {
    let (server, client) = start().await;
    let handle = server.handle();
    let pods: Api<Pod> = Api::namespaced(client, "inj");
    handle.inject(
        FailureTarget::pod_name_prefix("inj", "crash-"),
        Failure::CrashLoop { exit_code: 1 },
    );
    handle.inject(FailureTarget::pod("inj", "oom"), Failure::OomKilled);
    handle.inject(FailureTarget::pod("inj", "oom-never"), Failure::OomKilled);
    create(&pods, &idle_pod("crash-1", &[])).await;
    create(&pods, &idle_pod("oom", &[])).await;
    create(
        &pods,
        &pod_with("oom-never", &[], "Never", &[("main", "img:1", Vec::new())]),
    )
    .await;

    let crash = wait(&server, "inj", "crash-1", |p| {
        waiting_reason(p).as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    assert_eq!(last_terminated(&crash), Some((1, "Error".to_owned())));

    let oom = wait(&server, "inj", "oom", |p| last_terminated(p).is_some()).await;
    assert_eq!(last_terminated(&oom), Some((137, "OOMKilled".to_owned())));
    let oom_never = wait(&server, "inj", "oom-never", |p| phase(p) == "Failed").await;
    assert_eq!(terminated(&oom_never), Some((137, "OOMKilled".to_owned())));
}

#[tokio::test]
async fn image_pull_failures_back_off_until_cleared() {
    let (server, client) = start().await;
    let handle = server.handle();
    let pods: Api<Pod> = Api::namespaced(client, "pull");
    let target = FailureTarget::image("registry.example/missing:1");
    handle.inject(target.clone(), Failure::ImagePull);
    create(
        &pods,
        &pod_with(
            "p",
            &[],
            "Always",
            &[("main", "registry.example/missing:1", Vec::new())],
        ),
    )
    .await;
    let err = wait(&server, "pull", "p", |p| {
        waiting_reason(p).as_deref() == Some("ErrImagePull")
    })
    .await;
    assert_eq!(phase(&err), "Pending");
    let message = container(&err, 0)
        .state
        .unwrap()
        .waiting
        .unwrap()
        .message
        .unwrap();
    assert!(message.contains("registry.example/missing:1"), "{message}");
    wait(&server, "pull", "p", |p| {
        waiting_reason(p).as_deref() == Some("ImagePullBackOff")
    })
    .await;
    handle.clear_failures(&target);
    let running = wait(&server, "pull", "p", is_running).await;
    assert_eq!(phase(&running), "Running");
}

#[tokio::test]
async fn unschedulable_pods_stay_pending_until_cleared() {
    let (server, client) = start().await;
    let handle = server.handle();
    let pods: Api<Pod> = Api::namespaced(client, "sched");
    handle.inject(FailureTarget::pod("sched", "p"), Failure::Unschedulable);
    create(&pods, &idle_pod("p", &[])).await;
    let pending = wait(&server, "sched", "p", |p| {
        condition(p, "PodScheduled").is_some()
    })
    .await;
    assert_eq!(phase(&pending), "Pending");
    assert_eq!(
        condition(&pending, "PodScheduled"),
        Some(("False".to_owned(), Some("Unschedulable".to_owned())))
    );
    assert!(pending.spec.unwrap().node_name.is_none());
    assert!(pending.status.unwrap().container_statuses.is_none());
    handle.clear_all_failures();
    let running = wait(&server, "sched", "p", is_running).await;
    assert_eq!(condition(&running, "PodScheduled").unwrap().0, "True");
}

#[tokio::test]
async fn shutdown_ends_streams_and_tasks() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "stop");
    create(&pods, &idle_pod("p", &[])).await;
    crate::wait_running(&server, "stop", "p").await;
    let watch = pods
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .unwrap();
    let follow = pods
        .log_stream(
            "p",
            &kube::api::LogParams {
                follow: true,
                ..kube::api::LogParams::default()
            },
        )
        .await
        .unwrap();
    tokio::time::timeout(WAIT, server.shutdown())
        .await
        .expect("shutdown must not wait for open streams");
    drop((watch, follow));
}

#[tokio::test]
async fn node_pressure_eviction_loses_the_containers() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "ev");
    create(&pods, &idle_pod("p", &[])).await;
    wait(&server, "ev", "p", is_running).await;
    server
        .handle()
        .evict_for_node_pressure("ev", "p", "memory")
        .unwrap();
    let evicted = wait(&server, "ev", "p", |p| phase(p) == "Failed").await;
    let status = evicted.status.clone().unwrap();
    assert_eq!(status.reason.as_deref(), Some("Evicted"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .starts_with("The node was low on resource: memory.")
    );
    assert_eq!(
        condition(&evicted, "DisruptionTarget"),
        Some(("True".to_owned(), Some("TerminationByKubelet".to_owned())))
    );
    let c = container(&evicted, 0);
    assert_eq!(c.container_id, None);
    assert!(!c.ready);
    let t = c.state.unwrap().terminated.unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref(), t.container_id),
        (137, Some("ContainerStatusUnknown"), None)
    );
    assert_eq!(
        t.message.as_deref(),
        Some("The container could not be located when the pod was terminated")
    );
    // The kubelet cannot read a container it lost.
    let status = crate::status_of(pods.logs("p", &kube::api::LogParams::default()).await);
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "container \"main\" in pod \"p\" is terminated"
    );
    // The pod object stays until it is deleted; a pod that is not there cannot be evicted.
    assert!(server.handle().pod("ev", "p").is_some());
    assert!(
        server
            .handle()
            .evict_for_node_pressure("ev", "absent", "memory")
            .is_err()
    );
}

#[tokio::test]
async fn containers_wait_in_pod_initializing_while_init_containers_run() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "init");
    let mut pod = idle_pod("p", &[]);
    pod.spec.as_mut().unwrap().init_containers = Some(vec![
        serde_json::from_value(serde_json::json!({"name": "setup", "image": "busybox:1"})).unwrap(),
    ]);
    create(&pods, &pod).await;
    let initializing = wait(&server, "init", "p", |p| {
        waiting_reason(p).as_deref() == Some("PodInitializing")
    })
    .await;
    assert_eq!(phase(&initializing), "Pending");
    assert_eq!(
        condition(&initializing, "Initialized"),
        Some((
            "False".to_owned(),
            Some("ContainersNotInitialized".to_owned())
        ))
    );
    let running = wait(&server, "init", "p", is_running).await;
    assert_eq!(condition(&running, "Initialized").unwrap().0, "True");
}
