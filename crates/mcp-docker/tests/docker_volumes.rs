//! Persistent volumes and orphan collection against the real engine: the kit's two checks on
//! their own, two orchestrators racing to create one persistent volume, a non-root server
//! writing to a new named volume of a `FROM scratch` image, and `collect_garbage` finding and
//! removing a container whose network is gone, an instance volume whose container is gone and
//! the empty network, while leaving live instances and persistent volumes alone.
//!
//! Every test uses its own network and removes what it made. Without an engine the tests skip
//! with a printed reason, unless `MCPCTL_REQUIRE_DOCKER=1`.

// Engine tests read better as one story per behaviour than split into helpers.
#![allow(clippy::too_many_lines)]

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, VolumeCreateRequest};
use bollard::query_parameters::{CreateContainerOptionsBuilder, RemoveContainerOptionsBuilder};
use mcp_docker::container::NETWORK_LABEL;
use mcp_docker::{DockerConfig, DockerOrchestrator};
use mcp_orchestrator_api::conformance::{self, Capability, Harness, ImageServers, Support};
use mcp_orchestrator_api::{FixtureScript, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{
    InstanceId, LogOptions, McpServer, OrphanKind, RestartPolicy, StartOptions, VolumeSpec, labels,
};

const GRACE: Duration = Duration::from_secs(3);
const WAIT: Duration = Duration::from_secs(60);

struct Env {
    o: DockerOrchestrator,
    network: String,
    image: String,
}

fn unique(prefix: &str) -> String {
    let name = mcp_types::new_instance_name(prefix);
    name.strip_prefix("mcp-").unwrap_or(&name).to_owned()
}

async fn setup(test: &str) -> Option<Env> {
    let network = unique(&format!("mcpctl-test-{test}"));
    let o = match DockerOrchestrator::connect(DockerConfig::with_network(&network)).await {
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
    Some(Env { o, network, image })
}

impl Env {
    fn docker(&self) -> &Docker {
        self.o.docker()
    }

    fn spec(&self, name: &str, script: &FixtureScript, volumes: Vec<VolumeSpec>) -> McpServer {
        McpServer {
            args: script.to_args(),
            restart_policy: RestartPolicy::Never,
            volumes,
            ..McpServer::new(name, &self.image)
        }
    }

    /// Removes the network (retrying while the engine releases endpoints).
    async fn finish(self) {
        for _ in 0..50 {
            match self.docker().remove_network(&self.network).await {
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {
                    return;
                }
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
async fn kit_volume_and_gc_checks_pass() {
    let Some(env) = setup("volumes-kit").await else {
        return;
    };
    let servers = ImageServers {
        image: env.image.clone(),
    };
    let h = Harness::new(&env.o, &servers)
        .with_timeout(WAIT)
        .with_grace(GRACE)
        .with_capability(Capability::Volumes, Support::Honoured)
        .with_capability(Capability::PersistentVolumes, Support::Honoured)
        .with_capability(Capability::GarbageCollection, Support::Honoured);
    let results = [
        conformance::persistent_volumes(&h).await,
        conformance::garbage_collection(&h).await,
    ];
    env.finish().await;
    for r in results {
        if let Err(f) = r {
            panic!("{f}");
        }
    }
}

/// Two orchestrators (two engine connections) start the same server at once: both create its
/// persistent volume, both succeed, and both instances mount the one volume, whose root the
/// non-root server (uid 1000, `FROM scratch`: no shell, no chown) can write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_orchestrators_share_one_persistent_volume_a_non_root_server_can_write() {
    let Some(env) = setup("volumes-race").await else {
        return;
    };
    let other = DockerOrchestrator::connect(DockerConfig::with_network(&env.network))
        .await
        .unwrap();
    let server = unique("race");
    let script = FixtureScript::new().write_file("/state/a", "written-by-1000");
    let volume = VolumeSpec::new("state", "16Mi", "/state")
        .unwrap()
        .persistent();
    let spec = env.spec(&server, &script, vec![volume]);
    let opts = StartOptions::default();
    let (a, b) = tokio::join!(
        env.o.start_server(&spec, &opts),
        other.start_server(&spec, &opts)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let name = mcp_types::persistent_volume_name(&server, "state");
    for id in [&a, &b] {
        env.o.wait_until_running(id, WAIT).await.unwrap();
        assert_eq!(lines(&env.o, id, 1).await, ["wrote /state/a"], "{id}");
    }
    let listed = env.o.list_volumes(Some(&server)).await.unwrap();
    let mut users = vec![a.clone(), b.clone()];
    users.sort();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), &listed[0].in_use_by),
        (name.as_str(), &users)
    );
    assert_eq!(
        listed[0].size.as_ref().map(ToString::to_string).as_deref(),
        Some("16Mi")
    );
    let refused = env.o.remove_volume(&name).await.unwrap_err();
    assert!(
        matches!(&refused, OrchestratorError::InUse { users: u, .. } if u.len() == 2)
            && refused.to_string().contains(a.as_str())
            && refused.to_string().contains(b.as_str()),
        "{refused}"
    );
    env.o.stop_server(&a, GRACE).await.unwrap();
    other.stop_server(&b, GRACE).await.unwrap();
    env.o.remove_volume(&name).await.unwrap();
    assert!(
        env.docker().inspect_volume(&name).await.is_err(),
        "{name} still exists"
    );
    env.finish().await;
}

/// `collect_garbage` on a network with a container whose network was removed, a per-instance
/// volume whose container is gone, a running instance and a persistent volume: the dry run
/// reports exactly the two orphans and the empty network is not one (the live instance is on
/// it); the real run removes them; a last run, after the live instance stopped, removes the
/// network; the persistent volume is never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collect_garbage_removes_orphans_of_its_network_only() {
    let Some(env) = setup("volumes-gc").await else {
        return;
    };
    let docker = env.docker().clone();
    let server = unique("gc");
    // A live instance with a persistent volume.
    let volume = VolumeSpec::new("keep", "16Mi", "/keep")
        .unwrap()
        .persistent();
    let live = env
        .o
        .start_server(
            &env.spec(&server, &FixtureScript::new(), vec![volume]),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    env.o.wait_until_running(&live, WAIT).await.unwrap();
    let keep = mcp_types::persistent_volume_name(&server, "keep");

    // A per-instance volume whose container never existed.
    let stray_instance = mcp_types::new_instance_name(&server);
    let stray_volume = format!("{stray_instance}-data");
    docker
        .create_volume(VolumeCreateRequest {
            name: Some(stray_volume.clone()),
            labels: Some(HashMap::from([
                (labels::MANAGED.to_owned(), "true".to_owned()),
                (labels::INSTANCE.to_owned(), stray_instance.clone()),
                (NETWORK_LABEL.to_owned(), env.network.clone()),
            ])),
            ..VolumeCreateRequest::default()
        })
        .await
        .unwrap();

    // A managed container (never started) on a second network that is then removed.
    let lost_net = unique("mcpctl-test-gc-lost");
    let lost = DockerOrchestrator::connect(DockerConfig::with_network(&lost_net))
        .await
        .unwrap();
    let lost_id = mcp_types::new_instance_name(&server);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&lost_id).build()),
            ContainerCreateBody {
                image: Some(env.image.clone()),
                labels: Some(HashMap::from([(
                    labels::MANAGED.to_owned(),
                    "true".to_owned(),
                )])),
                host_config: Some(HostConfig {
                    network_mode: Some(lost_net.clone()),
                    ..HostConfig::default()
                }),
                ..ContainerCreateBody::default()
            },
        )
        .await
        .unwrap();
    docker.remove_network(&lost_net).await.unwrap();

    let report = env.o.collect_garbage(true).await.unwrap();
    let found: Vec<_> = report
        .orphans
        .iter()
        .map(|o| (o.kind, o.name.as_str(), o.removed))
        .collect();
    assert_eq!(
        found,
        [(OrphanKind::Volume, stray_volume.as_str(), false)],
        "{report:?}"
    );
    let report = lost.collect_garbage(true).await.unwrap();
    let found: Vec<_> = report
        .orphans
        .iter()
        .map(|o| (o.kind, o.name.as_str(), o.removed))
        .collect();
    assert_eq!(
        found,
        [(OrphanKind::Instance, lost_id.as_str(), false)],
        "{report:?}"
    );
    assert!(report.orphans[0].reason.contains("network"), "{report:?}");
    assert!(
        docker.inspect_volume(&stray_volume).await.is_ok(),
        "a dry run removed it"
    );

    let report = lost.collect_garbage(false).await.unwrap();
    assert!(report.orphans.iter().all(|o| o.removed), "{report:?}");
    assert!(
        docker.inspect_container(&lost_id, None).await.is_err(),
        "{lost_id} is still there"
    );
    let report = env.o.collect_garbage(false).await.unwrap();
    assert_eq!(report.orphans.len(), 1, "{report:?}");
    assert!(
        docker.inspect_volume(&stray_volume).await.is_err(),
        "{stray_volume} is still there"
    );
    env.o.get_status(&live).await.unwrap();

    env.o.stop_server(&live, GRACE).await.unwrap();
    let report = env.o.collect_garbage(false).await.unwrap();
    let found: Vec<_> = report
        .orphans
        .iter()
        .map(|o| (o.kind, o.name.as_str(), o.removed))
        .collect();
    assert_eq!(
        found,
        [(OrphanKind::Network, env.network.as_str(), true)],
        "{report:?}"
    );
    assert!(
        docker.inspect_volume(&keep).await.is_ok(),
        "gc removed the persistent volume"
    );
    env.o.remove_volume(&keep).await.unwrap();
    let _ = docker
        .remove_container(
            &lost_id,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await;
    env.finish().await;
}
