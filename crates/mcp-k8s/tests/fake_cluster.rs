//! `KubernetesOrchestrator` against the stateful fake API server (`mcp-k8s-fake`), through a real
//! `kube::Client`: the whole conformance kit, then Kubernetes-specific behaviour (companion
//! objects, status reasons under injected failures, expired continue tokens, unmanaged pods,
//! clean-up after a failed start, retries, configuration loading).

use std::time::Duration;

use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::FakeKubeServer;
use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::conformance::{self, Harness, ImageServers, StreamSupport};
use mcp_types::{InstanceFilters, K8sConfig};

const NS: &str = "mcpctl";
const IMAGE: &str = "mcp-test-server:fixture";

fn config() -> K8sConfig {
    K8sConfig {
        namespace: NS.to_owned(),
        ..K8sConfig::default()
    }
}

async fn orchestrator(server: &FakeKubeServer) -> KubernetesOrchestrator {
    KubernetesOrchestrator::with_client(server.client().await, config()).unwrap()
}

#[tokio::test]
async fn passes_the_conformance_kit() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let servers = ImageServers {
        image: IMAGE.to_owned(),
    };
    let h = Harness {
        timeout: Duration::from_secs(15),
        // The container log merges stdout and stderr.
        streams: StreamSupport::Merged,
        ..Harness::new(&o, &servers)
    };
    if let Err(report) = conformance::run_all(&h).await {
        panic!("{report}");
    }
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(left.items.is_empty(), "the kit left {:?}", left.items);
}
