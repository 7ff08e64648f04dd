//! Integration tests: a real `kube::Client` against the fake apiserver.

mod admission;
mod attach;
mod delete;
mod examples;
mod kubelet;
mod lists;
mod logs;
mod objects;
mod runtime;
mod secrets;
mod watch;
mod workloads;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::Status;
use mcp_k8s_fake::FakeKubeServer;
use mcp_orchestrator_api::fixture::FixtureScript;

/// How long tests wait for the simulated kubelet (it normally needs tens of milliseconds).
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// A server and a client whose default namespace is `default`.
pub(crate) async fn start() -> (FakeKubeServer, kube::Client) {
    let server = FakeKubeServer::start().await;
    let client = server.client().await;
    (server, client)
}

/// A pod spec with one container per (name, image, args).
pub(crate) fn pod_with(
    name: &str,
    labels: &[(&str, &str)],
    restart_policy: &str,
    containers: &[(&str, &str, Vec<String>)],
) -> Pod {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(restart_policy.to_owned()),
            containers: containers
                .iter()
                .map(|(name, image, args)| Container {
                    name: (*name).to_owned(),
                    image: Some((*image).to_owned()),
                    args: Some(args.clone()),
                    ..Container::default()
                })
                .collect(),
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// A single-container pod running `script`.
pub(crate) fn script_pod(name: &str, restart_policy: &str, script: &FixtureScript) -> Pod {
    pod_with(
        name,
        &[],
        restart_policy,
        &[("main", "example.com/mcp-test-server:1", script.to_args())],
    )
}

/// A single-container pod that runs forever silently.
pub(crate) fn idle_pod(name: &str, labels: &[(&str, &str)]) -> Pod {
    pod_with(
        name,
        labels,
        "Always",
        &[("main", "example.com/idle:1", Vec::new())],
    )
}

/// Creates a pod and returns the stored object.
pub(crate) async fn create(pods: &Api<Pod>, pod: &Pod) -> Pod {
    pods.create(&PostParams::default(), pod).await.unwrap()
}

/// The `Status` of a failed request.
pub(crate) fn status_of<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// The phase of a pod.
pub(crate) fn phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or_default()
}

/// The status of the pod's container `index`.
pub(crate) fn container(pod: &Pod, index: usize) -> k8s_openapi::api::core::v1::ContainerStatus {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.get(index).cloned())
        .unwrap_or_default()
}

/// A condition of the pod, as (status, reason).
pub(crate) fn condition(pod: &Pod, type_: &str) -> Option<(String, Option<String>)> {
    pod.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone()))
}

/// The waiting reason of container 0.
pub(crate) fn waiting_reason(pod: &Pod) -> Option<String> {
    container(pod, 0).state?.waiting?.reason
}

/// Whether container 0 is running.
pub(crate) fn is_running(pod: &Pod) -> bool {
    container(pod, 0).state.and_then(|s| s.running).is_some()
}

/// Waits until the pod's first container is running.
pub(crate) async fn wait_running(server: &FakeKubeServer, ns: &str, name: &str) -> Pod {
    server
        .handle()
        .wait_for_pod(ns, name, WAIT, is_running)
        .await
        .unwrap_or_else(|| panic!("pod {ns}/{name} never ran"))
}
