//! A PersistentVolumeClaim is created and mounted for a volume, the data on it survives a
//! restart of the server, and stopping the instance removes the claim.
//!
//! The probe's `persist` writes a marker and exits 3 on its first run; the kubelet restarts it
//! (restart policy `OnFailure`), and the second run finds the marker and exits 0. kind's default
//! StorageClass (`standard`, local-path) provisions the volume.

use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{Api, ListParams};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_types::{
    LogOptions, McpServer, Phase, Quantity, RestartPolicy, StartOptions, VolumeSpec, labels,
};

use crate::support::{TIMEOUT, cluster, eventually, unique};

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn pvc_data_survives_a_server_restart() {
    let kind = cluster().await;
    let o = &kind.orchestrator;
    let token = unique("token");
    let spec = McpServer {
        restart_policy: RestartPolicy::OnFailure,
        volumes: vec![VolumeSpec {
            name: "data".into(),
            size: Quantity::parse("64Mi").expect("quantity"),
            storage_class: None,
            mount_path: "/data".into(),
            access_modes: Vec::new(),
            read_only: false,
            persistent: false,
        }],
        ..kind.probe_server("persist", &["persist", "/data/marker", &token])
    };
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    let selector = format!("{}={id}", labels::INSTANCE);
    let claims: Api<PersistentVolumeClaim> = kind.api();
    let listed = claims
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list claims");
    assert_eq!(listed.items.len(), 1, "one claim for one volume");

    let status = o
        .wait_for(&id, TIMEOUT, "Succeeded", |s| s.phase.is_terminal())
        .await
        .expect("the second run finishes");
    assert_eq!(status.phase, Phase::Succeeded, "{status:?}");
    assert_eq!(status.restart_count, 1, "exactly one restart: {status:?}");

    let logs = o.get_logs(&id, &LogOptions::default()).await.expect("logs");
    let lines: Vec<String> = futures::StreamExt::collect::<Vec<_>>(logs)
        .await
        .into_iter()
        .map(|l| l.expect("line").text)
        .collect();
    assert_eq!(
        lines,
        [format!("found {token}")],
        "the restarted server reads what the first run wrote"
    );
    let previous = o
        .get_logs(
            &id,
            &LogOptions {
                previous: true,
                ..LogOptions::default()
            },
        )
        .await
        .expect("previous logs");
    let previous: Vec<String> = futures::StreamExt::collect::<Vec<_>>(previous)
        .await
        .into_iter()
        .map(|l| l.expect("line").text)
        .collect();
    assert_eq!(
        previous,
        [format!("wrote {token}")],
        "the first run's output"
    );

    let claim = &claims
        .list(&ListParams::default().labels(&selector))
        .await
        .expect("list claims")
        .items[0];
    assert_eq!(
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Bound"),
        "{claim:?}"
    );

    o.stop_server(&id, Duration::from_secs(2))
        .await
        .expect("stop");
    let (c, sel) = (&claims, selector.as_str());
    eventually(
        "the claim is removed",
        Duration::from_secs(60),
        || async move {
            c.list(&ListParams::default().labels(sel))
                .await
                .ok()
                .filter(|l| l.items.is_empty())
                .map(drop)
        },
    )
    .await;
}
