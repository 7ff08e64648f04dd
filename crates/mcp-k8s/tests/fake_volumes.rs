//! Persistent volumes and orphan collection of `KubernetesOrchestrator` against the stateful
//! fake API server: the claim's shape (no owner, server labels), data kept across a restart
//! and a per-instance claim's not, the removal refused by the library (not postponed by
//! pvc-protection) naming the pod, racing creators, and `collect_garbage` on companions whose
//! pod is gone.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service, ServiceSpec};
use kube::api::{Api, PostParams};
use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::FakeKubeServer;
use mcp_orchestrator_api::{FixtureScript, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{
    InstanceId, K8sConfig, LogOptions, McpServer, OrphanKind, RestartPolicy, StartOptions,
    VolumeSpec, labels,
};

const NS: &str = "mcpctl";
const IMAGE: &str = "mcp-test-server:fixture";
const GRACE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(15);

async fn orchestrator(server: &FakeKubeServer) -> KubernetesOrchestrator {
    let config = K8sConfig {
        namespace: NS.to_owned(),
        ..K8sConfig::default()
    };
    KubernetesOrchestrator::with_client(server.client().await, config).unwrap()
}

fn spec(name: &str, script: &FixtureScript) -> McpServer {
    McpServer {
        args: script.to_args(),
        restart_policy: RestartPolicy::Never,
        volumes: vec![
            VolumeSpec::new("cache", "1Gi", "/cache")
                .unwrap()
                .persistent(),
            VolumeSpec::new("scratch", "1Gi", "/scratch").unwrap(),
        ],
        ..McpServer::new(name, IMAGE)
    }
}

async fn lines(o: &KubernetesOrchestrator, id: &InstanceId, n: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let stream = o.get_logs(id, &LogOptions::default()).await.unwrap();
        let got: Vec<String> = futures::StreamExt::collect::<Vec<_>>(stream)
            .await
            .into_iter()
            .map(|l| l.unwrap().text)
            .collect();
        if got.len() >= n || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_persistent_claim_outlives_its_pods_and_is_removed_only_when_unused() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let h = server.handle();
    let script = FixtureScript::new()
        .print_file("/cache/f")
        .print_file("/scratch/f")
        .write_file("/cache/f", "cached")
        .write_file("/scratch/f", "scratched");
    let spec = spec("stateful", &script);
    let first = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    o.wait_until_running(&first, WAIT).await.unwrap();
    assert_eq!(
        lines(&o, &first, 4).await,
        [
            "/cache/f unreadable",
            "/scratch/f unreadable",
            "wrote /cache/f",
            "wrote /scratch/f"
        ]
    );

    let claims = h.list::<PersistentVolumeClaim>(Some(NS));
    let claim = |name: &str| {
        claims
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no claim {name} in {claims:?}"))
            .clone()
    };
    let persistent = claim("mcp-stateful-cache");
    let labels_of = persistent.metadata.labels.clone().unwrap();
    assert_eq!(labels_of[labels::SERVER], "stateful");
    assert_eq!(labels_of[labels::PERSISTENT], "true");
    assert!(!labels_of.contains_key(labels::INSTANCE), "{labels_of:?}");
    assert!(
        persistent.metadata.owner_references.is_none(),
        "a persistent claim has no owner"
    );
    let own = claim(&format!("{first}-scratch"));
    let owners = own.metadata.owner_references.unwrap();
    assert_eq!(
        (owners[0].kind.as_str(), owners[0].name.as_str()),
        ("Pod", first.as_str())
    );

    let refused = o.remove_volume("mcp-stateful-cache").await.unwrap_err();
    assert!(
        matches!(&refused, OrchestratorError::InUse { users, .. } if users == &[first.to_string()]),
        "{refused:?}"
    );
    let kept = h
        .list::<PersistentVolumeClaim>(Some(NS))
        .into_iter()
        .find(|c| c.metadata.name.as_deref() == Some("mcp-stateful-cache"))
        .unwrap();
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "the library must refuse before asking the API server (pvc-protection would only postpone)"
    );

    let second = o
        .restart(&first, &spec, &StartOptions::default(), GRACE)
        .await
        .unwrap();
    assert_ne!(second, first);
    o.wait_until_running(&second, WAIT).await.unwrap();
    assert_eq!(
        lines(&o, &second, 4).await,
        [
            "cached",
            "/scratch/f unreadable",
            "wrote /cache/f",
            "wrote /scratch/f"
        ]
    );
    let listed = o.list_volumes(Some("stateful")).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].in_use_by, std::slice::from_ref(&second));
    assert_eq!(
        listed[0].size.as_ref().map(ToString::to_string).as_deref(),
        Some("1Gi")
    );

    o.stop_server(&second, GRACE).await.unwrap();
    assert!(o.list_volumes(None).await.unwrap()[0].in_use_by.is_empty());
    o.remove_volume("mcp-stateful-cache").await.unwrap();
    assert!(h.list::<PersistentVolumeClaim>(Some(NS)).is_empty());
    assert!(
        o.remove_volume("mcp-stateful-cache")
            .await
            .unwrap_err()
            .is_not_found()
    );
}

#[tokio::test]
async fn racing_orchestrators_both_start_on_one_claim() {
    let server = FakeKubeServer::start().await;
    let (a, b) = (orchestrator(&server).await, orchestrator(&server).await);
    let spec = spec("raced", &FixtureScript::new());
    let opts = StartOptions::default();
    let (x, y) = tokio::join!(a.start_server(&spec, &opts), b.start_server(&spec, &opts));
    let (x, y) = (x.unwrap(), y.unwrap());
    let listed = a.list_volumes(None).await.unwrap();
    let mut users = vec![x.clone(), y.clone()];
    users.sort();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].in_use_by, users);
    a.stop_server(&x, GRACE).await.unwrap();
    b.stop_server(&y, GRACE).await.unwrap();
    a.remove_volume(&listed[0].name).await.unwrap();
}

#[tokio::test]
async fn collect_garbage_removes_companions_whose_pod_is_gone() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let live = o
        .start_server(&spec("gc", &FixtureScript::new()), &StartOptions::default())
        .await
        .unwrap();
    let ghost = mcp_types::new_instance_name("gc");
    let services: Api<Service> = Api::namespaced(server.client().await, NS);
    let mut meta_labels = BTreeMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::INSTANCE.to_owned(), ghost.clone()),
    ]);
    meta_labels.insert(labels::SERVER.to_owned(), "gc".to_owned());
    let orphan = Service {
        metadata: kube::api::ObjectMeta {
            name: Some(format!("{ghost}-svc")),
            labels: Some(meta_labels),
            ..kube::api::ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![k8s_openapi::api::core::v1::ServicePort {
                port: 8080,
                ..Default::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    };
    services
        .create(&PostParams::default(), &orphan)
        .await
        .unwrap();

    let dry = o.collect_garbage(true).await.unwrap();
    let found: Vec<_> = dry
        .orphans
        .iter()
        .map(|x| (x.kind, x.name.clone(), x.removed))
        .collect();
    assert_eq!(
        found,
        [(OrphanKind::Service, format!("{ghost}-svc"), false)]
    );
    assert!(
        dry.dry_run && dry.orphans[0].reason.contains(&ghost),
        "{dry:?}"
    );
    assert_eq!(
        services
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    let real = o.collect_garbage(false).await.unwrap();
    assert!(
        real.orphans.iter().all(|x| x.removed) && real.orphans.len() == 1,
        "{real:?}"
    );
    assert!(
        services
            .list(&kube::api::ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
    o.get_status(&live).await.unwrap();

    o.stop_server(&live, GRACE).await.unwrap();
    let after = o.collect_garbage(false).await.unwrap();
    assert!(
        after.orphans.is_empty(),
        "a persistent claim is never an orphan: {after:?}"
    );
    assert_eq!(o.list_volumes(None).await.unwrap().len(), 1);
    o.remove_volume("mcp-gc-cache").await.unwrap();
}
