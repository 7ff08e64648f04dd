//! `DockerOrchestrator` against the real engine: the whole conformance kit, what the engine
//! actually applied (read back with `inspect_container`), unmanaged containers staying
//! invisible, failures that leave nothing behind, and engine-level log details.
//!
//! Every test uses its own network, checks at the end that no container is left on it and
//! removes it. Without an engine the tests skip with a printed reason, unless
//! `MCPCTL_REQUIRE_DOCKER=1`, which turns the skip into a failure.

// Engine tests read better as one story per behaviour than split into helpers.
#![allow(clippy::too_many_lines)]

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod socket_relay;

use bollard::Docker;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::{StreamExt, TryStreamExt};
use mcp_docker::{DockerConfig, DockerOrchestrator};
use mcp_orchestrator_api::conformance::{
    self, Capability, FollowAcrossRestarts, Harness, ImageServers, PreviousLogs, Support,
};
use mcp_orchestrator_api::{FixtureScript, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{
    EnvValue, GpuSpec, InstanceFilters, InstanceId, LogOptions, McpServer, Quantity, RestartPolicy,
    StartOptions, StreamSelector, VolumeSpec, labels,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GRACE: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);

fn require_docker() -> bool {
    std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

/// One test's orchestrator, on its own network, with the test image built.
struct Env {
    o: DockerOrchestrator,
    network: String,
    image: String,
    finished: bool,
}

impl Drop for Env {
    /// A test that panicked before [`Env::finish`] still removes what it left on its network.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let network = self.network.clone();
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let Ok(docker) = Docker::connect_with_socket_defaults() else {
                    return;
                };
                let Ok(docker) = docker.negotiate_version().await else {
                    return;
                };
                remove_network_and_containers(&docker, &network).await;
            });
        });
        let _ = cleanup.join();
    }
}

/// Force-removes every container on `network` and the network itself; returns the names of
/// the containers it found.
async fn remove_network_and_containers(docker: &Docker, network: &str) -> Vec<Vec<String>> {
    let filters = HashMap::from([("network", vec![network.to_owned()])]);
    let left = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap_or_default();
    for c in &left {
        let _ = docker
            .remove_container(
                c.id.as_deref().unwrap_or_default(),
                Some(
                    RemoveContainerOptionsBuilder::new()
                        .force(true)
                        .v(true)
                        .build(),
                ),
            )
            .await;
    }
    // The engine releases a removed container's endpoint asynchronously: a network removal right
    // after may still see it, so try again for a few seconds.
    for _ in 0..50 {
        let ids = networks_named(docker, network).await;
        if ids.is_empty() {
            break;
        }
        for id in ids {
            let _ = docker.remove_network(&id).await;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    left.iter().filter_map(|c| c.names.clone()).collect()
}

impl Env {
    fn docker(&self) -> &Docker {
        self.o.docker()
    }

    fn servers(&self) -> ImageServers {
        ImageServers {
            image: self.image.clone(),
        }
    }

    /// A spec running a fixture script in the test image.
    fn fixture(&self, name: &str, script: &FixtureScript) -> McpServer {
        McpServer {
            args: script.to_args(),
            restart_policy: RestartPolicy::Never,
            ..McpServer::new(name, &self.image)
        }
    }

    /// Checks that nothing is left on the test network, then removes it.
    async fn finish(mut self) {
        self.finished = true;
        let names = remove_network_and_containers(self.docker(), &self.network).await;
        assert!(
            names.is_empty(),
            "containers left on {}: {names:?}",
            self.network
        );
        assert!(
            networks_named(self.docker(), &self.network)
                .await
                .is_empty(),
            "network {} still exists",
            self.network
        );
    }
}

/// `prefix-<random>`, a DNS label.
fn unique(prefix: &str) -> String {
    let name = mcp_types::new_instance_name(prefix);
    name.strip_prefix("mcp-").unwrap_or(&name).to_owned()
}

/// Connects with a fresh network and builds the test image, or says why the test skips.
async fn setup(test: &str) -> Option<Env> {
    setup_with(test, |c| c).await
}

async fn setup_with(test: &str, f: impl FnOnce(DockerConfig) -> DockerConfig) -> Option<Env> {
    let network = unique(&format!("mcpctl-test-{test}"));
    let config = f(DockerConfig::with_network(&network));
    let o = match DockerOrchestrator::connect(config).await {
        Ok(o) => o,
        Err(e) if !require_docker() && matches!(e, OrchestratorError::Unavailable { .. }) => {
            eprintln!(
                "skipping {test}: no Docker engine ({e}); set MCPCTL_REQUIRE_DOCKER=1 to fail instead"
            );
            return None;
        }
        Err(e) => panic!("{test}: cannot connect to the Docker engine: {e}"),
    };
    let env = Env {
        o,
        network,
        image: mcp_test_server::DEFAULT_IMAGE_TAG.to_owned(),
        finished: false,
    };
    // A panic here drops `env`, which removes the network again.
    let image = mcp_test_server::ensure_docker_image(env.docker(), &env.image)
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot build the test image: {e}"));
    assert!(image.starts_with("sha256:"), "{image}");
    Some(env)
}

async fn networks_named(docker: &Docker, name: &str) -> Vec<String> {
    let filters = HashMap::from([("name", vec![name.to_owned()])]);
    docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| n.id)
        .collect()
}

async fn containers_labelled(docker: &Docker, label: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![label.to_owned()])]);
    docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| c.id)
        .collect()
}

async fn volumes_labelled(docker: &Docker, label: &str) -> Vec<String> {
    let filters = HashMap::from([("label", vec![label.to_owned()])]);
    docker
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

fn is_not_found<T: std::fmt::Debug>(r: &Result<T, OrchestratorError>) -> bool {
    matches!(r, Err(OrchestratorError::NotFound { .. }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_kit_passes() {
    // Everything goes through a relay the kit can cut, for `watch_reconnect`.
    let relay = Arc::new(
        socket_relay::SocketRelay::start(&DockerConfig::default().socket_path)
            .expect("socket relay"),
    );
    let relay_path = relay.path().to_owned();
    let secrets = tempfile::tempdir().unwrap();
    let secrets_dir = secrets.path().to_owned();
    let Some(env) = setup_with("conformance", |c| DockerConfig {
        socket_path: relay_path,
        secrets_dir: Some(secrets_dir),
        ..c
    })
    .await
    else {
        return;
    };
    let servers = env.servers();
    let store = conformance::DirSecretStore::new(secrets.path());
    let recording = Recording {
        inner: env.o.clone(),
        ids: std::sync::Mutex::new(Vec::new()),
    };
    let h = Harness::new(&recording, &servers)
        .with_timeout(WAIT)
        .with_grace(GRACE)
        // The engine keeps one log across restarts.
        .with_previous_logs(PreviousLogs::Refused)
        // The engine's follow request ends with the container, restarted or not.
        .with_follow_across_restarts(FollowAcrossRestarts::Ends)
        .with_capability(Capability::Volumes, Support::Honoured)
        .with_capability(Capability::PersistentVolumes, Support::Honoured)
        .with_capability(Capability::GarbageCollection, Support::Honoured)
        // Allow-lists through the egress proxy companion; `none` without a network.
        .with_capability(Capability::Egress, Support::Honoured)
        .with_egress_posture(mcp_types::Egress::Open)
        // Secrets from `secretsDir`; a secret file is the server's own, 0400, at its path.
        .with_secrets(&store)
        .with_secret_file_mode(0o400)
        .with_watch_break({
            let relay = relay.clone();
            Arc::new(move || {
                relay.sever_events();
            })
        });
    let started = Instant::now();
    let result = conformance::run_all(&h).await;
    eprintln!("conformance kit on docker: {:.1?}", started.elapsed());
    let ids = recording.ids.lock().unwrap().clone();
    drop_stale_endpoints(env.docker(), &env.network, &ids).await;
    if let Err(report) = result {
        env.finish().await;
        panic!("{report}");
    }
    env.finish().await;
}

/// Docker 20.10 under heavy concurrent load can keep the endpoint of a container it removed
/// (the network then refuses removal with "active endpoints" while listing no container). Such
/// an endpoint can only be dropped by its container's name, so the kit run records every
/// instance it started and drops what the engine kept, saying so.
async fn drop_stale_endpoints(docker: &Docker, network: &str, ids: &[String]) {
    for id in ids {
        let dropped = docker
            .disconnect_network(
                network,
                bollard::models::NetworkDisconnectRequest {
                    container: id.clone(),
                    force: Some(true),
                },
            )
            .await;
        if dropped.is_ok() {
            eprintln!("the engine had kept the endpoint of removed container {id} on {network}");
        }
    }
}

/// Delegates to the orchestrator under test and records every instance started.
#[derive(Debug)]
struct Recording {
    inner: DockerOrchestrator,
    ids: std::sync::Mutex<Vec<String>>,
}

#[async_trait::async_trait]
impl McpOrchestrator for Recording {
    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
    async fn start_server(
        &self,
        spec: &McpServer,
        options: &StartOptions,
    ) -> mcp_orchestrator_api::Result<InstanceId> {
        let id = self.inner.start_server(spec, options).await?;
        self.ids.lock().unwrap().push(id.to_string());
        Ok(id)
    }
    async fn stop_server(
        &self,
        id: &InstanceId,
        grace: Duration,
    ) -> mcp_orchestrator_api::Result<()> {
        self.inner.stop_server(id, grace).await
    }
    async fn get_status(
        &self,
        id: &InstanceId,
    ) -> mcp_orchestrator_api::Result<mcp_types::InstanceStatus> {
        self.inner.get_status(id).await
    }
    async fn get_logs(
        &self,
        id: &InstanceId,
        options: &LogOptions,
    ) -> mcp_orchestrator_api::Result<mcp_orchestrator_api::LogLines> {
        self.inner.get_logs(id, options).await
    }
    async fn list_instances(
        &self,
        filters: &InstanceFilters,
    ) -> mcp_orchestrator_api::Result<mcp_types::Page<mcp_types::Instance>> {
        self.inner.list_instances(filters).await
    }
    async fn connect(
        &self,
        id: &InstanceId,
    ) -> mcp_orchestrator_api::Result<mcp_orchestrator_api::McpChannel> {
        self.inner.connect(id).await
    }
    async fn watch(
        &self,
        filters: &InstanceFilters,
    ) -> mcp_orchestrator_api::Result<mcp_orchestrator_api::InstanceEvents> {
        self.inner.watch(filters).await
    }

    async fn list_volumes(
        &self,
        server: Option<&str>,
    ) -> mcp_orchestrator_api::Result<Vec<mcp_types::PersistentVolume>> {
        self.inner.list_volumes(server).await
    }
    async fn remove_volume(&self, name: &str) -> mcp_orchestrator_api::Result<()> {
        self.inner.remove_volume(name).await
    }
    async fn collect_garbage(
        &self,
        dry_run: bool,
    ) -> mcp_orchestrator_api::Result<mcp_types::GcReport> {
        self.inner.collect_garbage(dry_run).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engine_applies_hardening_resources_labels_network_and_loopback_port() {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(secrets.path().join("gh")).unwrap();
    std::fs::write(secrets.path().join("gh/token"), "s3cr3t\n").unwrap();
    let dir = secrets.path().to_owned();
    let Some(env) = setup_with("hardening", |c| DockerConfig {
        secrets_dir: Some(dir),
        ..c
    })
    .await
    else {
        return;
    };
    let name = unique("web");
    let mut spec: McpServer = serde_json::from_value(serde_json::json!({
        "name": name,
        "image": env.image,
        "args": ["http", "--port", "8080"],
        "transport": "streamable-http",
        "port": 8080,
        "restartPolicy": "OnFailure",
        "resources": {"requests": {"cpu": "250m", "memory": "96Mi"}, "limits": {"cpu": "1500m", "memory": "192Mi"}},
        "labels": {"team": "search"},
        "annotations": {"note": "hello"},
        "volumes": [{"name": "data", "size": "1Gi", "mountPath": "/data"}],
        "env": {"TOKEN": {"secretRef": {"name": "gh", "key": "token"}}, "PLAIN": "p"}
    }))
    .unwrap();
    let id = env
        .o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    env.o.wait_until_running(&id, WAIT).await.unwrap();

    let info = env
        .docker()
        .inspect_container(id.as_str(), None)
        .await
        .unwrap();
    let config = info.config.clone().unwrap();
    let host = info.host_config.clone().unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(
        host.security_opt
            .as_ref()
            .is_some_and(|s| s.iter().any(|o| o == "no-new-privileges")),
        "{:?}",
        host.security_opt
    );
    assert_eq!(host.pids_limit, Some(mcp_docker::container::PIDS_LIMIT));
    assert!(host.tmpfs.as_ref().is_some_and(|t| t.contains_key("/tmp")));
    let q = |s: &str| Quantity::parse(s).unwrap();
    assert_eq!(
        host.memory,
        Some(i64::try_from(q("192Mi").to_bytes()).unwrap())
    );
    assert_eq!(
        host.memory_reservation,
        Some(i64::try_from(q("96Mi").to_bytes()).unwrap())
    );
    assert_eq!(
        host.nano_cpus,
        Some(i64::try_from(q("1500m").to_nanos()).unwrap())
    );
    assert_eq!(
        host.restart_policy.and_then(|r| r.name),
        Some(bollard::models::RestartPolicyNameEnum::ON_FAILURE)
    );
    assert_eq!(config.tty, Some(false));
    let env_vars = config.env.clone().unwrap_or_default();
    assert!(
        env_vars.iter().any(|e| e == "TOKEN=s3cr3t"),
        "secret not resolved"
    );
    assert!(env_vars.iter().any(|e| e == "PLAIN=p"));

    let l = config.labels.clone().unwrap();
    for (k, v) in [
        (labels::SERVER, name.as_str()),
        (labels::MANAGED, "true"),
        (labels::INSTANCE, id.as_str()),
        (labels::APP_NAME, name.as_str()),
        (labels::APP_INSTANCE, id.as_str()),
        (labels::APP_COMPONENT, labels::COMPONENT_VALUE),
        (labels::APP_MANAGED_BY, labels::MANAGED_BY_VALUE),
        ("team", "search"),
        ("note", "hello"),
    ] {
        assert_eq!(l.get(k).map(String::as_str), Some(v), "label {k}");
    }
    assert!(
        l[labels::CREATED_AT]
            .parse::<mcp_types::Timestamp>()
            .is_ok()
    );

    let settings = info.network_settings.clone().unwrap();
    let networks = settings.networks.clone().unwrap();
    assert!(networks.contains_key(&env.network), "{:?}", networks.keys());
    let bindings = settings.ports.clone().unwrap()["8080/tcp"].clone().unwrap();
    assert!(!bindings.is_empty());
    assert!(
        bindings
            .iter()
            .all(|b| b.host_ip.as_deref() == Some("127.0.0.1")),
        "published beyond loopback: {bindings:?}"
    );
    let host_port = bindings[0].host_port.clone().unwrap();

    let page = env
        .o
        .list_instances(&InstanceFilters::server(&name))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    let endpoint = page.items[0].endpoint.clone().unwrap();
    assert_eq!(endpoint, format!("http://127.0.0.1:{host_port}/mcp"));
    assert_eq!(
        env.o.instance(&id).await.unwrap().endpoint.as_ref(),
        Some(&endpoint)
    );

    // The published port answers MCP: an initialize request gets HTTP 200.
    let status = mcp_initialize(&format!("127.0.0.1:{host_port}")).await;
    assert!(
        status.starts_with("HTTP/1.1 200"),
        "initialize answered {status:?}"
    );

    // The host port was chosen once at create: an engine restart keeps the endpoint.
    env.docker()
        .restart_container(id.as_str(), None)
        .await
        .unwrap();
    env.o.wait_until_running(&id, WAIT).await.unwrap();
    let after = env
        .docker()
        .inspect_container(id.as_str(), None)
        .await
        .unwrap();
    let rebound = after.network_settings.unwrap().ports.unwrap()["8080/tcp"]
        .clone()
        .unwrap();
    assert_eq!(rebound[0].host_port.as_deref(), Some(host_port.as_str()));
    assert_eq!(env.o.instance(&id).await.unwrap().endpoint, Some(endpoint));

    // The named volume exists, carries the instance label, and is mounted.
    let instance_label = format!("{}={id}", labels::INSTANCE);
    let vols = volumes_labelled(env.docker(), &instance_label).await;
    assert_eq!(vols, [format!("{id}-data")]);
    let mounts = info.mounts.clone().unwrap_or_default();
    assert!(
        mounts
            .iter()
            .any(|m| m.destination.as_deref() == Some("/data")
                && m.name.as_deref() == Some(&format!("{id}-data")[..])),
        "{mounts:?}"
    );

    // A secret that cannot be resolved is refused before anything is created.
    spec.name = unique("nosecret");
    spec.env
        .insert("MISSING".into(), EnvValue::secret("gh", "missing"));
    let err = env
        .o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::InvalidSpec(e) if e.has_path("env.MISSING")),
        "{err}"
    );
    assert!(!err.to_string().contains("s3cr3t"));
    let server_label = format!("{}={}", labels::SERVER, spec.name);
    assert!(
        containers_labelled(env.docker(), &server_label)
            .await
            .is_empty()
    );

    env.o.stop_server(&id, GRACE).await.unwrap();
    assert!(is_not_found(&env.o.get_status(&id).await));
    assert!(
        containers_labelled(env.docker(), &instance_label)
            .await
            .is_empty()
    );
    assert!(
        volumes_labelled(env.docker(), &instance_label)
            .await
            .is_empty(),
        "volumes survive stop"
    );
    env.finish().await;
}

/// Sends an MCP initialize request over plain HTTP and returns the status line.
async fn mcp_initialize(addr: &str) -> String {
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"mcp-docker-test","version":"0"}}}"#;
    let request = format!(
        "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async {
            let mut stream = tokio::net::TcpStream::connect(addr).await?;
            stream.write_all(request.as_bytes()).await?;
            let mut buf = vec![0u8; 64];
            let n = stream.read(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(head)) if head.starts_with("HTTP/") => {
                return head.lines().next().unwrap_or_default().to_owned();
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no HTTP answer from {addr}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmanaged_containers_are_invisible() {
    let Some(env) = setup("unmanaged").await else {
        return;
    };
    // Looks like an instance (name, server label) but lacks mcpctl.io/managed=true.
    let server = unique("lookalike");
    let name = unique(&server);
    let body = ContainerCreateBody {
        image: Some(env.image.clone()),
        cmd: Some(FixtureScript::new().stdout("hi").to_args()),
        labels: Some(HashMap::from([
            (labels::SERVER.to_owned(), server.clone()),
            (labels::INSTANCE.to_owned(), name.clone()),
            (labels::MANAGED.to_owned(), "false".to_owned()),
        ])),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some(env.network.clone()),
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    };
    env.docker()
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    env.docker().start_container(&name, None).await.unwrap();

    let id = InstanceId::new(name.clone());
    let listed = env
        .o
        .list_instances(&InstanceFilters::server(&server))
        .await
        .unwrap();
    assert!(listed.items.is_empty(), "listed an unmanaged container");
    let all = env
        .o
        .list_instances(&InstanceFilters::default())
        .await
        .unwrap();
    assert!(all.items.iter().all(|i| i.id != id));
    assert!(is_not_found(&env.o.get_status(&id).await));
    assert!(is_not_found(
        &env.o.get_logs(&id, &LogOptions::default()).await.map(drop)
    ));
    assert!(is_not_found(&env.o.stop_server(&id, GRACE).await));
    // stop refused: the container is still there.
    let still = env.docker().inspect_container(&name, None).await.unwrap();
    assert!(still.state.unwrap().running.unwrap_or(false));
    // Nor are ids that the engine would resolve by prefix.
    let short = InstanceId::new(still.id.unwrap()[..12].to_owned());
    assert!(is_not_found(&env.o.get_status(&short).await));

    env.docker()
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_image_is_image_not_available_and_a_missing_network_is_recreated() {
    let Some(env) = setup("noimage").await else {
        return;
    };
    let name = unique("noimage");
    let image = format!("mcpctl-test/{}:never", unique("missing"));
    let started = Instant::now();
    let err = env
        .o
        .start_server(&McpServer::new(&name, &image), &StartOptions::default())
        .await
        .unwrap_err();
    match &err {
        OrchestratorError::ImageNotAvailable { image: i, .. } => assert_eq!(i, &image),
        other => panic!("expected ImageNotAvailable, got {other:?}"),
    }
    assert!(err.to_string().contains(&image), "{err}");
    assert!(started.elapsed() < WAIT);
    let server_label = format!("{}={name}", labels::SERVER);
    assert!(
        containers_labelled(env.docker(), &server_label)
            .await
            .is_empty()
    );
    assert!(
        volumes_labelled(env.docker(), &server_label)
            .await
            .is_empty()
    );

    // A network removed behind the orchestrator's back is created again at the next start.
    for id in networks_named(env.docker(), &env.network).await {
        env.docker().remove_network(&id).await.unwrap();
    }
    let id = env
        .o
        .start_server(
            &env.fixture(&unique("renet"), &FixtureScript::new().stdout("up")),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(networks_named(env.docker(), &env.network).await.len(), 1);
    env.o.wait_until_running(&id, WAIT).await.unwrap();
    env.o.stop_server(&id, GRACE).await.unwrap();
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_start_removes_the_container_and_volumes() {
    let Some(env) = setup("gpu").await else {
        return;
    };
    // On every host: 64 GPUs (the most a spec may ask) are created fine but cannot start,
    // whether the host has no GPU runtime or a real one with fewer GPUs, so the failed-start
    // clean-up is checked everywhere.
    let name = unique("nostart");
    let spec = McpServer {
        gpu: Some(GpuSpec {
            product: None,
            count: 64,
        }),
        volumes: vec![VolumeSpec {
            name: "cache".into(),
            size: Quantity::parse("1Gi").unwrap(),
            storage_class: None,
            mount_path: "/cache".into(),
            access_modes: vec![],
            read_only: false,
            persistent: false,
        }],
        ..env.fixture(&name, &FixtureScript::new().stdout("never"))
    };
    let err = env
        .o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect_err("64 GPUs cannot start here");
    assert!(!matches!(err, OrchestratorError::InvalidSpec(_)), "{err}");
    let label = format!("{}={name}", labels::SERVER);
    assert!(containers_labelled(env.docker(), &label).await.is_empty());
    assert!(volumes_labelled(env.docker(), &label).await.is_empty());

    // A GPU request: created fine, but starting needs the nvidia runtime.
    let name = unique("gpu");
    let spec = McpServer {
        gpu: Some(GpuSpec {
            product: None,
            count: 1,
        }),
        volumes: vec![VolumeSpec {
            name: "cache".into(),
            size: Quantity::parse("1Gi").unwrap(),
            storage_class: None,
            mount_path: "/cache".into(),
            access_modes: vec![],
            read_only: false,
            persistent: false,
        }],
        ..env.fixture(&name, &FixtureScript::new().stdout("gpu"))
    };
    let server_label = format!("{}={name}", labels::SERVER);
    match env.o.start_server(&spec, &StartOptions::default()).await {
        Err(e) => {
            eprintln!("GPU start failed as expected on a machine without GPUs: {e}");
            assert!(!matches!(e, OrchestratorError::InvalidSpec(_)), "{e}");
        }
        Ok(id) => {
            // A machine with GPUs: the request reached the engine as asked.
            let info = env
                .docker()
                .inspect_container(id.as_str(), None)
                .await
                .unwrap();
            let req = info.host_config.unwrap().device_requests.unwrap();
            assert_eq!(req[0].driver.as_deref(), Some("nvidia"));
            assert_eq!(req[0].count, Some(1));
            env.o.stop_server(&id, GRACE).await.unwrap();
        }
    }
    assert!(
        containers_labelled(env.docker(), &server_label)
            .await
            .is_empty()
    );
    assert!(
        volumes_labelled(env.docker(), &server_label)
            .await
            .is_empty()
    );
    env.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_lines_and_follow_with_tail() {
    let Some(env) = setup("logs").await else {
        return;
    };
    // A line longer than the engine's 16 KiB log buffer arrives as several entries.
    let long = "x".repeat(40_000);
    let script = FixtureScript::new()
        .stdout(long.clone())
        .stderr("err")
        .stdout_lines("line", 5)
        .sleep(Duration::from_millis(1500))
        .stdout("later");
    let id = env
        .o
        .start_server(
            &env.fixture(&unique("long"), &script),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    env.o.wait_until_running(&id, WAIT).await.unwrap();
    let opts = LogOptions {
        tail: Some(2),
        stream: StreamSelector::Stdout,
        ..LogOptions::follow()
    };
    // Wait for the first lines, then follow with a tail: the last two stdout lines, then new.
    let deadline = Instant::now() + WAIT;
    loop {
        let lines: Vec<_> = env
            .o
            .get_logs(&id, &LogOptions::default())
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        if lines.len() >= 7 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut follow = env.o.get_logs(&id, &opts).await.unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let line = tokio::time::timeout(WAIT, follow.next())
            .await
            .expect("follow stalled")
            .expect("follow ended early")
            .unwrap();
        got.push(line.text);
    }
    assert_eq!(got, ["line-4", "line-5", "later"]);

    let all: Vec<_> = env
        .o
        .get_logs(
            &id,
            &LogOptions {
                timestamps: true,
                ..LogOptions::default()
            },
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let lengths: Vec<_> = all.iter().map(|l| (l.stream, l.text.len())).collect();
    assert_eq!(all.len(), 8, "(stream, length) of each line: {lengths:?}");
    let longest = all.iter().map(|l| l.text.len()).max().unwrap_or_default();
    assert_eq!(
        longest,
        long.len(),
        "the long line was not re-assembled: {lengths:?}"
    );
    assert!(
        all.iter()
            .any(|l| l.text == long && l.stream == mcp_types::LogStream::Stdout)
    );
    assert!(
        all.iter()
            .any(|l| l.text == "err" && l.stream == mcp_types::LogStream::Stderr)
    );
    for w in all.windows(2) {
        assert!(
            w[0].timestamp.is_some() && w[0].timestamp <= w[1].timestamp,
            "{:?}",
            (w[0].timestamp, w[1].timestamp)
        );
    }
    let tail: Vec<_> = env
        .o
        .get_logs(
            &id,
            &LogOptions {
                stream: StreamSelector::Stderr,
                ..LogOptions::tail(5)
            },
        )
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(
        tail.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(),
        ["err"]
    );
    env.o.stop_server(&id, GRACE).await.unwrap();
    let end = tokio::time::timeout(WAIT, follow.next())
        .await
        .expect("follow did not end");
    assert!(
        end.as_ref().is_none_or(Result::is_err),
        "line after stop: {end:?}"
    );

    env.finish().await;
}

#[tokio::test]
async fn missing_socket_is_unavailable_quickly() {
    let started = Instant::now();
    let config = DockerConfig {
        socket_path: "/nonexistent/mcpctl/docker.sock".into(),
        ..DockerConfig::default()
    };
    let err = DockerOrchestrator::connect(config).await.unwrap_err();
    assert!(
        matches!(err, OrchestratorError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("/nonexistent/mcpctl/docker.sock"),
        "{err}"
    );
    // Nothing listens on port 1 of the loopback address.
    let config = DockerConfig {
        host: Some("127.0.0.1".into()),
        port: Some(1),
        ..DockerConfig::default()
    };
    let err = DockerOrchestrator::connect(config).await.unwrap_err();
    assert!(
        matches!(err, OrchestratorError::Unavailable { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("tcp://127.0.0.1:1"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    let bad = DockerConfig {
        network: "bad name".into(),
        ..DockerConfig::default()
    };
    let err = DockerOrchestrator::connect(bad).await.unwrap_err();
    assert!(
        matches!(err, OrchestratorError::InvalidArgument { .. }),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_connects_agree_on_one_network() {
    let network = unique("mcpctl-test-race");
    let connect = || DockerOrchestrator::connect(DockerConfig::with_network(&network));
    let results = futures::future::join_all((0..4).map(|_| connect())).await;
    let mut orchestrators = Vec::new();
    for r in results {
        match r {
            Ok(o) => orchestrators.push(o),
            Err(e) if !require_docker() && matches!(e, OrchestratorError::Unavailable { .. }) => {
                eprintln!("skipping racing_connects_agree_on_one_network: no Docker engine ({e})");
                return;
            }
            Err(e) => panic!("racing connect failed: {e}"),
        }
    }
    let docker = orchestrators[0].docker().clone();
    let ids: BTreeSet<_> = orchestrators
        .iter()
        .map(|o| o.network_id().to_owned())
        .collect();
    let existing = networks_named(&docker, &network).await;
    for id in &existing {
        docker.remove_network(id).await.unwrap();
    }
    assert_eq!(ids.len(), 1, "orchestrators disagree: {ids:?}");
    assert_eq!(existing.len(), 1, "networks named {network}: {existing:?}");
    assert!(ids.contains(&existing[0]));
    // Reconnecting reuses the (re-created) network rather than failing.
    let again = DockerOrchestrator::connect(DockerConfig::with_network(&network))
        .await
        .unwrap();
    let again_id = again.network_id().to_owned();
    let again_again = DockerOrchestrator::connect(DockerConfig::with_network(&network))
        .await
        .unwrap();
    assert_eq!(again_again.network_id(), again_id);
    docker.remove_network(&again_id).await.unwrap();
    assert!(networks_named(&docker, &network).await.is_empty());
}

/// Runs the test image as an unmanaged peer container with `cmd`, waits for it to exit and
/// returns (exit code, output). The peer is removed afterwards.
async fn run_peer(env: &Env, network: &str, cmd: Vec<String>) -> (i64, String) {
    let name = unique("peer");
    let body = ContainerCreateBody {
        image: Some(env.image.clone()),
        cmd: Some(cmd),
        labels: Some(HashMap::from([(
            "mcpctl.io/test-peer".to_owned(),
            "true".to_owned(),
        )])),
        host_config: Some(bollard::models::HostConfig {
            network_mode: Some(network.to_owned()),
            ..Default::default()
        }),
        ..Default::default()
    };
    env.docker()
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    env.docker().start_container(&name, None).await.unwrap();
    let waited = tokio::time::timeout(
        WAIT,
        env.docker()
            .wait_container(
                &name,
                None::<bollard::query_parameters::WaitContainerOptions>,
            )
            .collect::<Vec<_>>(),
    )
    .await;
    let inspect = env.docker().inspect_container(&name, None).await.unwrap();
    let code = inspect.state.and_then(|s| s.exit_code).unwrap_or(-1);
    let output: Vec<String> = env
        .docker()
        .logs(
            &name,
            Some(
                bollard::query_parameters::LogsOptionsBuilder::new()
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        )
        .map_ok(|chunk| chunk.to_string())
        .try_collect()
        .await
        .unwrap_or_default();
    env.docker()
        .remove_container(
            &name,
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    assert!(waited.is_ok(), "peer {name} did not exit within {WAIT:?}");
    (code, output.concat())
}

/// An HTTP-transport server started by the orchestrator is reachable by its instance name from a
/// peer container on the same network (a real MCP initialize answered), and not from a peer
/// outside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_server_is_reachable_by_name_from_a_peer_on_the_network() {
    let Some(env) = setup("peer").await else {
        return;
    };
    let spec = McpServer {
        args: vec!["http".into(), "--port".into(), "8080".into()],
        transport: mcp_types::Transport::StreamableHttp,
        port: Some(8080),
        restart_policy: RestartPolicy::Never,
        ..McpServer::new(unique("web"), &env.image)
    };
    let id = env
        .o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    env.o.wait_until_running(&id, WAIT).await.unwrap();
    let url = format!("http://{id}:8080/mcp");

    let (code, out) = run_peer(
        &env,
        &env.network,
        vec![
            "probe".into(),
            url.clone(),
            "--attempts".into(),
            "10".into(),
        ],
    )
    .await;
    assert_eq!(
        code, 0,
        "peer on {} could not reach {url}: {out}",
        env.network
    );
    assert!(out.contains("reachable: MCP initialize answered"), "{out}");

    // Control: the same probe without a network fails, so the check above can fail.
    let (code, out) = run_peer(&env, "none", vec!["probe".into(), url.clone()]).await;
    assert_eq!(code, 1, "a peer without a network reached {url}: {out}");
    assert!(out.contains("unreachable"), "{out}");

    env.o.stop_server(&id, GRACE).await.unwrap();
    env.finish().await;
}
