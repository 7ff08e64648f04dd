//! Graceful pod deletion: deletionTimestamp first, removal once the containers exit or the grace
//! period ends; immediate removal for grace 0, unscheduled and finished pods; preconditions.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, Preconditions};
use mcp_k8s_fake::{Failure, FailureTarget};
use mcp_orchestrator_api::fixture::FixtureScript;

use crate::{WAIT, create, idle_pod, script_pod, start, status_of, wait_running};

#[tokio::test]
async fn graceful_delete_sets_deletion_timestamp_then_removes_the_pod() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "del");
    create(&pods, &idle_pod("p", &[])).await;
    wait_running(&server, "del", "p").await;

    let answer = pods
        .delete("p", &DeleteParams::default().grace_period(20))
        .await
        .unwrap();
    let deleting = answer
        .left()
        .expect("a graceful delete answers with the pod");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(deleting.metadata.deletion_grace_period_seconds, Some(20));
    // Still readable while it terminates, with the same deletionTimestamp.
    if let Ok(pod) = pods.get("p").await {
        assert_eq!(
            pod.metadata.deletion_timestamp,
            deleting.metadata.deletion_timestamp
        );
    }
    assert!(server.handle().wait_for_pod_gone("del", "p", WAIT).await);
    assert_eq!(status_of(pods.get("p").await).code, 404);
}

#[tokio::test]
async fn grace_zero_unscheduled_and_finished_pods_go_at_once() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "now");
    create(&pods, &idle_pod("running", &[])).await;
    wait_running(&server, "now", "running").await;
    let answer = pods
        .delete("running", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    assert!(
        answer
            .left()
            .is_some_and(|p| p.metadata.deletion_grace_period_seconds == Some(0))
    );
    assert_eq!(status_of(pods.get("running").await).code, 404);

    server
        .handle()
        .inject(FailureTarget::pod("now", "stuck"), Failure::Unschedulable);
    create(&pods, &idle_pod("stuck", &[])).await;
    pods.delete("stuck", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(status_of(pods.get("stuck").await).code, 404);

    create(
        &pods,
        &script_pod("done", "Never", &FixtureScript::new().exit(0)),
    )
    .await;
    server
        .handle()
        .wait_for_pod("now", "done", WAIT, |p| crate::phase(p) == "Succeeded")
        .await
        .unwrap();
    pods.delete("done", &DeleteParams::default()).await.unwrap();
    assert_eq!(status_of(pods.get("done").await).code, 404);
}

#[tokio::test]
async fn sigterm_ignoring_containers_run_out_the_grace_period() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "stubborn");
    server.handle().inject(
        FailureTarget::image("example.com/idle:1"),
        Failure::IgnoreSigterm,
    );
    create(&pods, &idle_pod("p", &[])).await;
    wait_running(&server, "stubborn", "p").await;
    let started = Instant::now();
    pods.delete("p", &DeleteParams::default().grace_period(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pod = pods.get("p").await.unwrap();
    assert!(pod.metadata.deletion_timestamp.is_some());
    assert!(
        crate::is_running(&pod),
        "the container should still run during the grace period"
    );
    assert!(
        server
            .handle()
            .wait_for_pod_gone("stubborn", "p", WAIT)
            .await
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn query_grace_period_preconditions_and_delete_collection() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "coll");
    let created = create(&pods, &idle_pod("p", &[("app", "x")])).await;

    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".to_owned()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let status = status_of(pods.delete("p", &wrong).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("Precondition failed"),
        "{}",
        status.message
    );
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: None,
        }),
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    pods.delete("p", &right).await.unwrap();

    // gracePeriodSeconds as a query parameter, no body.
    create(&pods, &idle_pod("q", &[("app", "x")])).await;
    wait_running(&server, "coll", "q").await;
    let request = http::Request::delete("/api/v1/namespaces/coll/pods/q?gracePeriodSeconds=0")
        .body(Vec::new())
        .unwrap();
    client.request_text(request).await.unwrap();
    assert!(server.handle().pod("coll", "q").is_none());

    for name in ["r1", "r2", "keep"] {
        let app = if name == "keep" { "y" } else { "x" };
        create(&pods, &idle_pod(name, &[("app", app)])).await;
    }
    let deleted = pods
        .delete_collection(
            &DeleteParams::default().grace_period(0),
            &ListParams::default().labels("app=x"),
        )
        .await
        .unwrap();
    let names: Vec<String> = deleted
        .left()
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(names, ["r1", "r2"]);
    let left: Vec<String> = server
        .handle()
        .list::<Pod>(Some("coll"))
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(left, ["keep"]);
}

#[tokio::test]
async fn huge_grace_periods_are_accepted() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "huge");
    create(&pods, &idle_pod("p", &[])).await;
    wait_running(&server, "huge", "p").await;
    let request = http::Request::delete(format!(
        "/api/v1/namespaces/huge/pods/p?gracePeriodSeconds={}",
        i64::MAX
    ))
    .body(Vec::new())
    .unwrap();
    let text = client.request_text(request).await.unwrap();
    let pod: Pod = serde_json::from_str(&text).unwrap();
    assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(i64::MAX));
    // The container exits on SIGTERM long before the grace period ends.
    assert!(server.handle().wait_for_pod_gone("huge", "p", WAIT).await);
}

#[tokio::test]
async fn merge_patches_set_owners_and_the_garbage_collector_follows_them() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::{Patch, PatchParams, PostParams};
    let (server, client) = crate::start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "gc");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client, "gc");
    let pod = crate::create(&pods, &crate::idle_pod("owner", &[])).await;
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    claims.create(&PostParams::default(), &claim).await.unwrap();
    let owner = serde_json::json!({"metadata": {"ownerReferences": [{
        "apiVersion": "v1", "kind": "Pod", "name": "owner",
        "uid": pod.metadata.uid.clone().unwrap(),
    }], "labels": {"a": "b"}}});
    let patched = claims
        .patch("data", &PatchParams::default(), &Patch::Merge(&owner))
        .await
        .unwrap();
    assert_eq!(patched.metadata.owner_references.unwrap()[0].name, "owner");
    assert_eq!(patched.metadata.labels.unwrap()["a"], "b");
    assert_eq!(patched.metadata.name.as_deref(), Some("data"));
    // An owner reference without a uid is invalid; spec patches and other patch types are not
    // modelled.
    let bad = serde_json::json!({"metadata": {"ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "owner"}]}});
    let status = crate::status_of(
        claims
            .patch("data", &PatchParams::default(), &Patch::Merge(&bad))
            .await,
    );
    assert_eq!(status.code, 422, "{status:?}");
    let spec = serde_json::json!({"spec": {"volumeName": "x"}});
    let status = crate::status_of(
        claims
            .patch("data", &PatchParams::default(), &Patch::Merge(&spec))
            .await,
    );
    assert_eq!(status.code, 405, "{status:?}");
    let status = crate::status_of(
        claims
            .patch("data", &PatchParams::default(), &Patch::Strategic(&owner))
            .await,
    );
    assert_eq!(status.code, 415, "{status:?}");
    // The owner goes: so does what it owns.
    pods.delete(
        "owner",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    assert!(
        server
            .handle()
            .wait_for_pod_gone("gc", "owner", crate::WAIT)
            .await
    );
    assert!(
        server
            .handle()
            .get::<PersistentVolumeClaim>("gc", "data")
            .is_none()
    );
}

#[tokio::test]
async fn the_eviction_api_deletes_the_pod_gracefully() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "ev");
    create(&pods, &idle_pod("p", &[])).await;
    wait_running(&server, "ev", "p").await;
    let status = pods
        .evict("p", &kube::api::EvictParams::default())
        .await
        .unwrap();
    assert!(status.is_success(), "{status:?}");
    assert_eq!(status.code, 201);
    // Graceful: the pod is Terminating first, then gone.
    let pod = server.handle().pod("ev", "p");
    assert!(
        pod.is_none_or(|p| p.metadata.deletion_timestamp.is_some()),
        "evicted pod not terminating"
    );
    assert!(server.handle().wait_for_pod_gone("ev", "p", WAIT).await);
    let missing = status_of(pods.evict("p", &kube::api::EvictParams::default()).await);
    assert_eq!(missing.code, 404);
}

#[tokio::test]
async fn a_claim_in_use_waits_for_its_pod_before_it_goes() {
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::PostParams;
    let (server, client) = start().await;
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "prot");
    let pods: Api<Pod> = Api::namespaced(client, "prot");
    let claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }))
    .unwrap();
    let created = claims.create(&PostParams::default(), &claim).await.unwrap();
    assert_eq!(
        created.metadata.finalizers,
        Some(vec!["kubernetes.io/pvc-protection".to_owned()])
    );
    let mut pod = idle_pod("user", &[]);
    pod.spec.as_mut().unwrap().volumes = Some(vec![
        serde_json::from_value(
            serde_json::json!({"name": "d", "persistentVolumeClaim": {"claimName": "data"}}),
        )
        .unwrap(),
    ]);
    create(&pods, &pod).await;
    wait_running(&server, "prot", "user").await;
    // In use: the delete only marks it.
    let kept = claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert!(kept.metadata.deletion_timestamp.is_some());
    assert!(
        server
            .handle()
            .get::<PersistentVolumeClaim>("prot", "data")
            .is_some()
    );
    // The pod goes: so does the claim.
    pods.delete(
        "user",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    assert!(
        server
            .handle()
            .wait_for_pod_gone("prot", "user", WAIT)
            .await
    );
    assert!(
        server
            .handle()
            .get::<PersistentVolumeClaim>("prot", "data")
            .is_none()
    );
    // A claim no pod uses goes at once.
    claims.create(&PostParams::default(), &claim).await.unwrap();
    claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    assert!(
        server
            .handle()
            .get::<PersistentVolumeClaim>("prot", "data")
            .is_none()
    );
}
