//! Secrets on the Kubernetes backend against the fake API server: the kit's secret checks with
//! Secret objects as the store, and the pod as stored (and the instance as reported) never
//! holding a value: `secretRef` env values are `secretKeyRef`s, secret files `secret` volumes.

mod support {
    pub(crate) mod secrets;
}

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::FakeKubeServer;
use mcp_orchestrator_api::conformance::{self, Harness, ImageServers, StreamSupport};
use mcp_orchestrator_api::fixture::{FixtureScript, mode_line};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_types::{
    EnvValue, InstanceFilters, K8sConfig, LogOptions, McpServer, RestartPolicy, SecretFile,
    StartOptions,
};
use support::secrets::KubeSecrets;

const NS: &str = "mcpctl";
const IMAGE: &str = "mcp-test-server:fixture";
const VALUE: &str = "k8s-s3cret-file-value";
const ENV_VALUE: &str = "k8s-s3cret-env-value";

async fn orchestrator(server: &FakeKubeServer) -> KubernetesOrchestrator {
    let config = K8sConfig {
        namespace: NS.to_owned(),
        ..K8sConfig::default()
    };
    KubernetesOrchestrator::with_client(server.client().await, config).unwrap()
}

#[tokio::test]
async fn kit_secret_checks_pass() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let servers = ImageServers {
        image: IMAGE.to_owned(),
    };
    let store = KubeSecrets::new(server.client().await, NS);
    let h = Harness::new(&o, &servers)
        .with_timeout(Duration::from_secs(15))
        .with_streams(StreamSupport::Merged)
        .with_secrets(&store)
        // The kubelet adds group read for the pod's fsGroup to the 0400 the volume asks for.
        .with_secret_file_mode(0o440);
    for check in [
        "secret_env_propagation",
        "secret_files",
        "spec_capabilities",
    ] {
        if let Err(f) = conformance::run_check(&h, check).await {
            panic!("{f}");
        }
    }
    let secrets: Vec<k8s_openapi::api::core::v1::Secret> = server.handle().list(Some(NS));
    assert!(secrets.is_empty(), "the kit left {} Secrets", secrets.len());
}

#[tokio::test]
async fn the_stored_pod_and_the_instance_never_hold_a_secret_value() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let store = KubeSecrets::new(server.client().await, NS);
    conformance::SecretStore::put(
        &store,
        "app",
        &[
            ("token".to_owned(), VALUE.to_owned()),
            ("api".to_owned(), ENV_VALUE.to_owned()),
        ]
        .into(),
    )
    .await
    .unwrap();
    let script = FixtureScript::new()
        .print_env_file("TOKEN_FILE")
        .print_env_file_mode("TOKEN_FILE")
        .print_env("API_KEY")
        .stdout("ready");
    let mut spec = McpServer {
        args: script.to_args(),
        restart_policy: RestartPolicy::Never,
        ..McpServer::new("secrets", IMAGE)
    };
    spec.env
        .insert("API_KEY".into(), EnvValue::secret("app", "api"));
    spec.secret_files =
        vec![SecretFile::new("/run/secrets/token", "app", "token").with_env("TOKEN_FILE")];
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    o.wait_until_running(&id, Duration::from_secs(15))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let lines = loop {
        let stream = o.get_logs(&id, &LogOptions::default()).await.unwrap();
        let lines: Vec<String> = futures::StreamExt::collect::<Vec<_>>(stream)
            .await
            .into_iter()
            .map(|l| l.unwrap().text)
            .collect();
        if lines.len() >= 4 || tokio::time::Instant::now() > deadline {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        lines,
        [
            VALUE.to_owned(),
            mode_line("TOKEN_FILE", 0o440),
            format!("API_KEY={ENV_VALUE}"),
            "ready".to_owned(),
        ]
    );
    let pod: Pod = server.handle().get(NS, id.as_str()).unwrap();
    let json = serde_json::to_string(&pod).unwrap();
    assert!(!json.contains(VALUE) && !json.contains(ENV_VALUE), "{json}");
    assert!(
        json.contains("secretKeyRef") && json.contains("\"secretName\":\"app\""),
        "{json}"
    );
    let status = o.get_status(&id).await.unwrap();
    let listed = o
        .list_instances(&InstanceFilters::server("secrets"))
        .await
        .unwrap();
    let shown = format!("{status:?} {listed:?}");
    assert!(
        !shown.contains(VALUE) && !shown.contains(ENV_VALUE),
        "{shown}"
    );
    o.stop_server(&id, Duration::from_secs(2)).await.unwrap();
    conformance::SecretStore::remove(&store, "app")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_missing_secret_file_keeps_the_instance_pending_until_the_secret_exists() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let mut spec = McpServer {
        args: FixtureScript::new()
            .print_env_file("TOKEN_FILE")
            .exit(0)
            .to_args(),
        restart_policy: RestartPolicy::Never,
        ..McpServer::new("late", IMAGE)
    };
    spec.secret_files =
        vec![SecretFile::new("/run/secrets/token", "late", "token").with_env("TOKEN_FILE")];
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let status = o.get_status(&id).await.unwrap();
    assert_eq!(status.phase, mcp_types::Phase::Pending, "{status:?}");
    let store = KubeSecrets::new(server.client().await, NS);
    conformance::SecretStore::put(
        &store,
        "late",
        &[("token".to_owned(), VALUE.to_owned())].into(),
    )
    .await
    .unwrap();
    let done = o
        .wait_for(&id, Duration::from_secs(15), "Succeeded", |s| {
            s.phase.is_terminal()
        })
        .await
        .unwrap();
    assert_eq!(done.phase, mcp_types::Phase::Succeeded, "{done:?}");
    let stream = o.get_logs(&id, &LogOptions::default()).await.unwrap();
    let lines: Vec<String> = futures::StreamExt::collect::<Vec<_>>(stream)
        .await
        .into_iter()
        .map(|l| l.unwrap().text)
        .collect();
    assert_eq!(lines, [VALUE]);
    o.stop_server(&id, Duration::from_secs(2)).await.unwrap();
    conformance::SecretStore::remove(&store, "late")
        .await
        .unwrap();
}
