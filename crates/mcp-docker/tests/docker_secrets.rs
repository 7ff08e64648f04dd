//! Secret files against the real engine: the kit's secret checks on their own; a non-root
//! `FROM scratch` server reading its files (0400, its own) at their paths through their
//! variables while neither the container's `docker inspect` nor its volumes' show a value;
//! everything removed with the instance; an unresolvable secret starting nothing; and orphan
//! collection removing a secrets volume whose container is gone.
//!
//! Every test uses its own network and removes what it made. Without an engine the tests skip
//! with a printed reason, unless `MCPCTL_REQUIRE_DOCKER=1`.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder};
use mcp_docker::secret_files::{SECRETS_MOUNT, secrets_volume_name};
use mcp_docker::{DockerConfig, DockerOrchestrator};
use mcp_orchestrator_api::conformance::{self, DirSecretStore, Harness, ImageServers};
use mcp_orchestrator_api::fixture::mode_line;
use mcp_orchestrator_api::{FixtureScript, McpOrchestrator, OrchestratorError};
use mcp_types::{
    InstanceId, LogOptions, McpServer, OrphanKind, RestartPolicy, SecretFile, StartOptions, labels,
};

const GRACE: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(60);
const VALUE: &str = "d0cker-s3cret-value";
const OTHER: &str = "0ther-d0cker-value";

struct Env {
    o: DockerOrchestrator,
    network: String,
    image: String,
    secrets: tempfile::TempDir,
}

fn unique(prefix: &str) -> String {
    let name = mcp_types::new_instance_name(prefix);
    name.strip_prefix("mcp-").unwrap_or(&name).to_owned()
}

/// An orchestrator on its own network with a secrets directory holding `files/token` =
/// [`VALUE`] and `files/other` = [`OTHER`], or why the test skips.
async fn setup(test: &str) -> Option<Env> {
    let network = unique(&format!("mcpctl-test-{test}"));
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(secrets.path().join("files")).unwrap();
    std::fs::write(secrets.path().join("files/token"), format!("{VALUE}\n")).unwrap();
    std::fs::write(secrets.path().join("files/other"), OTHER).unwrap();
    let config = DockerConfig {
        secrets_dir: Some(secrets.path().to_owned()),
        ..DockerConfig::with_network(&network)
    };
    let o = match DockerOrchestrator::connect(config).await {
        Ok(o) => o,
        Err(e)
            if std::env::var("MCPCTL_REQUIRE_DOCKER").as_deref() != Ok("1")
                && matches!(e, OrchestratorError::Unavailable { .. }) =>
        {
            eprintln!(
                "skipping {test}: no Docker engine ({e}); set MCPCTL_REQUIRE_DOCKER=1 to fail instead"
            );
            return None;
        }
        Err(e) => panic!("{test}: cannot connect to the Docker engine: {e}"),
    };
    let image = mcp_test_server::DEFAULT_IMAGE_TAG.to_owned();
    mcp_test_server::ensure_docker_image(o.docker(), &image)
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot build the test image: {e}"));
    Some(Env {
        o,
        network,
        image,
        secrets,
    })
}

impl Env {
    fn docker(&self) -> &Docker {
        self.o.docker()
    }

    fn spec(&self, script: &FixtureScript) -> McpServer {
        let mut spec = McpServer {
            args: script.to_args(),
            restart_policy: RestartPolicy::Never,
            ..McpServer::new(unique("secrets"), &self.image)
        };
        spec.secret_files = vec![
            SecretFile::new("/run/secrets/token", "files", "token").with_env("TOKEN_FILE"),
            SecretFile::new("/etc/app/other.key", "files", "other").with_env("OTHER_FILE"),
        ];
        spec
    }

    /// The volumes of `instance`.
    async fn volumes_of(&self, instance: &str) -> Vec<String> {
        let filters = HashMap::from([("label", vec![format!("{}={instance}", labels::INSTANCE)])]);
        self.docker()
            .list_volumes(Some(
                ListVolumesOptionsBuilder::new().filters(&filters).build(),
            ))
            .await
            .unwrap()
            .volumes
            .unwrap_or_default()
            .into_iter()
            .map(|v| v.name)
            .collect()
    }

    /// Removes the network (retrying while the engine releases endpoints).
    async fn finish(self) {
        for _ in 0..50 {
            match self.docker().remove_network(&self.network).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
        panic!("network {} could not be removed", self.network);
    }
}

async fn lines(o: &dyn McpOrchestrator, id: &InstanceId, n: usize) -> Vec<String> {
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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kit_secret_checks_pass() {
    let Some(env) = setup("secrets-kit").await else {
        return;
    };
    let servers = ImageServers {
        image: env.image.clone(),
    };
    let store = DirSecretStore::new(env.secrets.path());
    let h = Harness::new(&env.o, &servers)
        .with_timeout(WAIT)
        .with_grace(GRACE)
        .with_secrets(&store)
        .with_secret_file_mode(0o400);
    let results = [
        conformance::secret_env_propagation(&h).await,
        conformance::secret_files(&h).await,
        conformance::spec_capabilities(&h).await,
    ];
    env.finish().await;
    for r in results {
        if let Err(f) = r {
            panic!("{f}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_files_reach_a_non_root_server_and_no_inspect_shows_a_value() {
    let Some(env) = setup("secrets-inspect").await else {
        return;
    };
    let script = FixtureScript::new()
        .print_env_file("TOKEN_FILE")
        .print_env_file("OTHER_FILE")
        .print_env_file_mode("TOKEN_FILE")
        .print_file("/etc/app/other.key")
        .print_env("TOKEN_FILE")
        .stdout("ready");
    let spec = env.spec(&script);
    let id = env
        .o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let got = lines(&env.o, &id, 6).await;
    assert_eq!(
        got,
        [
            VALUE.to_owned(),
            OTHER.to_owned(),
            mode_line("TOKEN_FILE", 0o400),
            OTHER.to_owned(),
            "TOKEN_FILE=/run/secrets/token".to_owned(),
            "ready".to_owned(),
        ]
    );
    // The container's configuration and state, and each of its volumes, as `docker inspect`
    // shows them: paths, never values.
    let inspect = env
        .docker()
        .inspect_container(id.as_str(), None)
        .await
        .unwrap();
    let json = serde_json::to_string(&inspect).unwrap();
    assert!(!json.contains(VALUE) && !json.contains(OTHER), "{json}");
    assert!(json.contains("TOKEN_FILE=/run/secrets/token"), "{json}");
    let mounts = inspect.mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.destination.as_deref() == Some("/run/secrets/token") && m.rw == Some(false)),
        "{mounts:?}"
    );
    assert!(
        mounts
            .iter()
            .any(|m| m.destination.as_deref() == Some(SECRETS_MOUNT)
                && m.name.as_deref() == Some(secrets_volume_name(id.as_str()).as_str())
                && m.rw == Some(false)),
        "{mounts:?}"
    );
    let volumes = env.volumes_of(id.as_str()).await;
    assert_eq!(volumes, [secrets_volume_name(id.as_str())]);
    for v in &volumes {
        let json = serde_json::to_string(&env.docker().inspect_volume(v).await.unwrap()).unwrap();
        assert!(!json.contains(VALUE) && !json.contains(OTHER), "{json}");
    }
    // The CLI's view too, where there is one.
    if let Ok(out) = std::process::Command::new("docker")
        .args(["inspect", id.as_str()])
        .output()
    {
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(id.as_str()), "{text}");
        assert!(!text.contains(VALUE) && !text.contains(OTHER), "{text}");
    }
    env.o.stop_server(&id, GRACE).await.unwrap();
    assert!(env.volumes_of(id.as_str()).await.is_empty());
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresolvable_secret_file_starts_nothing() {
    let Some(env) = setup("secrets-missing").await else {
        return;
    };
    let mut spec = env.spec(&FixtureScript::new().stdout("never"));
    spec.secret_files[1] = SecretFile::new("/etc/app/other.key", "files", "absent");
    let err = env
        .o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::InvalidSpec(e) if e.has_path("secretFiles[1].secretRef")),
        "{err}"
    );
    let listed = env
        .o
        .list_instances(&mcp_types::InstanceFilters::server(&spec.name))
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
    let filters = HashMap::from([("label", vec![format!("{}={}", labels::SERVER, spec.name)])]);
    let volumes = env
        .docker()
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    assert!(volumes.is_empty(), "{volumes:?}");
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_collection_removes_a_secrets_volume_whose_container_is_gone() {
    let Some(env) = setup("secrets-gc").await else {
        return;
    };
    let id = env
        .o
        .start_server(
            &env.spec(&FixtureScript::new().stdout("idle")),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    // The container goes behind the orchestrator's back; its secrets volume stays.
    env.docker()
        .remove_container(
            id.as_str(),
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    let volume = secrets_volume_name(id.as_str());
    assert_eq!(
        env.volumes_of(id.as_str()).await,
        std::slice::from_ref(&volume)
    );
    let report = env.o.collect_garbage(false).await.unwrap();
    assert!(
        report
            .orphans
            .iter()
            .any(|o| o.kind == OrphanKind::Volume && o.name == volume && o.removed),
        "{report:?}"
    );
    assert!(env.volumes_of(id.as_str()).await.is_empty());
    env.finish().await;
}
