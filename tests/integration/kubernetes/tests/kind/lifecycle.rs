//! Pod create and delete lifecycle: one start makes the pod, its NetworkPolicy and its Service,
//! all labelled with the instance; one stop removes them all.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{InstanceFilters, Phase, StartOptions, labels};

use crate::support::{TIMEOUT, cluster, eventually};

async fn count<K>(api: &Api<K>, selector: &str) -> usize
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    api.list(&ListParams::default().labels(selector))
        .await
        .map_or(usize::MAX, |l| l.items.len())
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn pod_create_and_delete_lifecycle() {
    let kind = cluster().await;
    let o = &kind.orchestrator;
    let spec = kind.http_server("lifecycle", 8080);
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    let selector = format!("{}={id}", labels::INSTANCE);

    // The pod is named after the instance and carries both label sets.
    let pod = kind.pods().get(id.as_str()).await.expect("the pod exists");
    let pod_labels = pod.metadata.labels.clone().unwrap_or_default();
    for (k, v) in [
        (labels::MANAGED, "true"),
        (labels::SERVER, "lifecycle"),
        (labels::INSTANCE, id.as_str()),
        (labels::APP_NAME, "lifecycle"),
        (labels::APP_INSTANCE, id.as_str()),
        (labels::APP_COMPONENT, labels::COMPONENT_VALUE),
        (labels::APP_MANAGED_BY, labels::MANAGED_BY_VALUE),
        (labels::TRANSPORT, "streamable-http"),
    ] {
        assert_eq!(pod_labels.get(k).map(String::as_str), Some(v), "label {k}");
    }
    let policies: Api<NetworkPolicy> = kind.api();
    let services: Api<Service> = kind.api();
    assert_eq!(count(&policies, &selector).await, 1, "one NetworkPolicy");
    assert_eq!(count(&services, &selector).await, 1, "one Service");

    let status = o.wait_until_running(&id, TIMEOUT).await.expect("running");
    assert_eq!(status.phase, Phase::Running);
    assert!(status.started_at.is_some(), "{status:?}");
    let listed = o
        .list_instances(&InstanceFilters::server("lifecycle"))
        .await
        .expect("list");
    let inst = listed
        .items
        .iter()
        .find(|i| i.id == id)
        .expect("listed by server");
    let endpoint = inst.endpoint.clone().unwrap_or_default();
    assert!(
        endpoint.starts_with("http://") && endpoint.ends_with(":8080"),
        "endpoint {endpoint:?}"
    );

    o.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(
        kind.pods()
            .get_opt(id.as_str())
            .await
            .expect("get")
            .is_none(),
        "the pod is gone when stop returns"
    );
    let (p, s, sel) = (&policies, &services, selector.as_str());
    eventually(
        "companions removed",
        Duration::from_secs(60),
        || async move { (count(p, sel).await == 0 && count(s, sel).await == 0).then_some(()) },
    )
    .await;
    assert!(matches!(
        o.get_status(&id).await,
        Err(OrchestratorError::NotFound { .. })
    ));
    assert!(matches!(
        o.stop_server(&id, Duration::from_secs(1)).await,
        Err(OrchestratorError::NotFound { .. })
    ));
}
