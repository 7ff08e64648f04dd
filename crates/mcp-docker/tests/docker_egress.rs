//! Egress on the real engine, with real traffic between containers this test starts: two
//! target HTTP servers on the test's own network (aliases `allowed-target` and `other-target`),
//! and instances whose fixture fetches URLs. An allow-list reaches the allowed target through
//! its proxy and is refused for the other one (by name and by address), cannot go around the
//! proxy, `none` has no network at all (stdio still connects; HTTP is served on the container
//! address), `open` reaches the targets directly, every status states its posture, and stop
//! and orphan collection remove every companion. No traffic goes anywhere but these containers
//! (and nothing is sent to a metadata address: the proxy refuses by rule before connecting).
//!
//! Without an engine the tests skip with a printed reason, unless `MCPCTL_REQUIRE_DOCKER=1`.

#![allow(clippy::too_many_lines)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, EndpointSettings, HostConfig, NetworkingConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use mcp_docker::egress::{COMPANION_OF_LABEL, PROXY_ROLE};
use mcp_docker::{DockerConfig, DockerOrchestrator};
use mcp_orchestrator_api::connect::McpChannel;
use mcp_orchestrator_api::fixture::ServeMode;
use mcp_orchestrator_api::{FixtureScript, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::egress::{Egress, EgressRule};
use mcp_types::{
    EnvValue, InstanceFilters, InstanceId, LogOptions, McpServer, OrphanKind, RestartPolicy,
    StartOptions, Transport,
};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

const GRACE: Duration = Duration::from_secs(5);
const WAIT: Duration = Duration::from_secs(60);
/// The test image under a tag of this test's own: the fixture's fetch step must be in it,
/// whatever other checkouts on this engine tag as `mcp-test-server:test`.
const IMAGE: &str = "mcp-test-server:egress-test";

fn require_docker() -> bool {
    std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1")
}

fn unique(prefix: &str) -> String {
    let name = mcp_types::new_instance_name(prefix);
    name.strip_prefix("mcp-").unwrap_or(&name).to_owned()
}

/// The test's orchestrator and network, and the target containers it started.
struct Env {
    o: DockerOrchestrator,
    network: String,
    targets: Vec<String>,
}

impl Env {
    fn docker(&self) -> &Docker {
        self.o.docker()
    }

    /// Removes the targets and the network, and checks that nothing managed or companion is
    /// left: no container on the network, no companion of `instances`, no network of theirs.
    async fn finish(self, instances: &[InstanceId]) {
        let docker = self.docker().clone();
        for t in &self.targets {
            let _ = docker
                .remove_container(
                    t,
                    Some(RemoveContainerOptionsBuilder::new().force(true).build()),
                )
                .await;
        }
        for id in instances {
            let label = format!("{COMPANION_OF_LABEL}={id}");
            assert!(
                containers(&docker, "label", &label).await.is_empty(),
                "companion containers of {id} left"
            );
            assert!(
                networks(&docker, "label", &label).await.is_empty(),
                "companion networks of {id} left"
            );
        }
        let left = containers(&docker, "network", &self.network).await;
        assert!(
            left.is_empty(),
            "containers left on {}: {left:?}",
            self.network
        );
        for _ in 0..50 {
            if docker.remove_network(&self.network).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(networks(&docker, "name", &self.network).await.is_empty());
    }
}

async fn containers(docker: &Docker, filter: &str, value: &str) -> Vec<String> {
    let filters = HashMap::from([(filter, vec![value.to_owned()])]);
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
        .filter_map(|c| c.names?.first().cloned())
        .collect()
}

async fn networks(docker: &Docker, filter: &str, value: &str) -> Vec<String> {
    let filters = HashMap::from([(filter, vec![value.to_owned()])]);
    docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .unwrap()
        .into_iter()
        .filter(|n| filter != "name" || n.name.as_deref() == Some(value))
        .filter_map(|n| n.name)
        .collect()
}

async fn setup(test: &str) -> Option<Env> {
    let network = unique(&format!("mcpctl-test-{test}"));
    let o = match DockerOrchestrator::connect(DockerConfig::with_network(&network)).await {
        Ok(o) => o,
        Err(e) if !require_docker() && matches!(e, OrchestratorError::Unavailable { .. }) => {
            eprintln!(
                "skipping {test}: no Docker engine ({e}); set MCPCTL_REQUIRE_DOCKER=1 to fail instead"
            );
            return None;
        }
        Err(e) => panic!("{test}: cannot connect to the Docker engine: {e}"),
    };
    mcp_test_server::ensure_docker_image(o.docker(), IMAGE)
        .await
        .unwrap_or_else(|e| panic!("{test}: cannot build the test image: {e}"));
    Some(Env {
        o,
        network,
        targets: Vec::new(),
    })
}

/// Starts a test-server HTTP target on the test network under `alias`; returns its address.
async fn start_target(env: &mut Env, alias: &str) -> String {
    let name = format!("{}-{alias}", env.network);
    let body = ContainerCreateBody {
        image: Some(IMAGE.to_owned()),
        cmd: Some(
            FixtureScript::new()
                .serve(ServeMode::Http { port: 8080 })
                .to_args(),
        ),
        host_config: Some(HostConfig {
            network_mode: Some(env.network.clone()),
            cap_drop: Some(vec!["ALL".to_owned()]),
            readonly_rootfs: Some(true),
            ..HostConfig::default()
        }),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                env.network.clone(),
                EndpointSettings {
                    aliases: Some(vec![alias.to_owned()]),
                    ..EndpointSettings::default()
                },
            )])),
        }),
        ..ContainerCreateBody::default()
    };
    let docker = env.docker().clone();
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(&name).build()),
            body,
        )
        .await
        .unwrap();
    env.targets.push(name.clone());
    docker.start_container(&name, None).await.unwrap();
    let info = docker.inspect_container(&name, None).await.unwrap();
    info.network_settings
        .and_then(|s| s.networks)
        .and_then(|n| n.get(&env.network).cloned())
        .and_then(|e| e.ip_address)
        .filter(|ip| !ip.is_empty())
        .expect("the target has an address on the test network")
}

fn spec(name: &str, script: &FixtureScript, egress: Option<Egress>) -> McpServer {
    let http = script
        .serves()
        .is_some_and(|m| matches!(m, ServeMode::Http { .. }));
    McpServer {
        args: script.to_args(),
        restart_policy: RestartPolicy::Never,
        transport: if http {
            Transport::StreamableHttp
        } else {
            Transport::Stdio
        },
        port: http.then_some(8080),
        egress,
        ..McpServer::new(unique(name), IMAGE)
    }
}

/// The fetch lines of an instance once `count` of them are in its log.
async fn fetch_lines(o: &DockerOrchestrator, id: &InstanceId, count: usize) -> Vec<String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut lines = Vec::new();
        let mut stream = o.get_logs(id, &LogOptions::default()).await.unwrap();
        while let Some(line) = stream.next().await {
            let text = line.unwrap().text;
            if text.starts_with("fetch ") {
                lines.push(text);
            }
        }
        if lines.len() >= count {
            return lines;
        }
        assert!(Instant::now() < deadline, "{id}: only {lines:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn line_for<'a>(lines: &'a [String], url: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.starts_with(&format!("fetch {url}")))
        .unwrap_or_else(|| panic!("no fetch line for {url} in {lines:?}"))
}

/// An MCP initialize over plain HTTP from this host; the status line of the answer.
async fn initialize_over_http(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (addr, path) = rest.split_once('/').unwrap();
    let body = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-03-26","capabilities":{},"clientInfo":{"name":"egress-test","version":"0"}}}"#;
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Accept: application/json, text/event-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(addr).await?;
            s.write_all(request.as_bytes()).await?;
            let mut buf = vec![0u8; 64];
            let n = s.read(&mut buf).await?;
            Ok::<_, std::io::Error>(String::from_utf8_lossy(&buf[..n]).into_owned())
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(head)) if head.starts_with("HTTP/") => {
                return head.lines().next().unwrap_or_default().to_owned();
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "no HTTP answer from {url}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_none_and_open_with_real_traffic() {
    let Some(mut env) = setup("egress").await else {
        return;
    };
    let allowed_ip = start_target(&mut env, "allowed-target").await;
    let other_ip = start_target(&mut env, "other-target").await;
    let allowed = "http://allowed-target:8080/health";
    let other = "http://other-target:8080/health";
    let other_by_ip = format!("http://{other_ip}:8080/health");
    let direct = format!("http://{allowed_ip}:8080/health");

    // Allow-list: through the proxy to the allowed target only; the spec's NO_PROXY sends the
    // last fetch around the proxy, where the internal network has no route.
    let policy = Egress::Allow(vec![EgressRule::host("allowed-target", [8080])]);
    let script = FixtureScript::new()
        .fetch(allowed)
        .fetch(other)
        .fetch(&other_by_ip)
        .fetch(&direct)
        .serve(ServeMode::Http { port: 8080 });
    let mut listed = spec("allowlisted", &script, Some(policy.clone()));
    listed
        .env
        .insert("NO_PROXY".into(), EnvValue::plain(allowed_ip.clone()));
    // The proxy image is built (or found current) once per process: timed on its own.
    let started = Instant::now();
    mcp_egress_proxy::ensure_proxy_image(env.docker(), mcp_egress_proxy::DEFAULT_IMAGE_TAG)
        .await
        .unwrap();
    let image_took = started.elapsed();
    let started = Instant::now();
    let allow_id = env
        .o
        .start_server(&listed, &StartOptions::default())
        .await
        .unwrap();
    let allow_took = started.elapsed();

    // `none`, stdio: no network at all, yet `connect` attaches.
    let script = FixtureScript::new().fetch(allowed).serve(ServeMode::Stdio);
    let none_stdio = env
        .o
        .start_server(
            &spec("isolated", &script, Some(Egress::None)),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    // `none`, HTTP: its own internal network, served on the container address.
    let script = FixtureScript::new()
        .fetch(allowed)
        .serve(ServeMode::Http { port: 8080 });
    let none_http = env
        .o
        .start_server(
            &spec("isolated-web", &script, Some(Egress::None)),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    // The default (`open`): the shared network, straight to the targets.
    let script = FixtureScript::new().fetch(allowed).serve(ServeMode::Stdio);
    let started = Instant::now();
    let open_id = env
        .o
        .start_server(&spec("open", &script, None), &StartOptions::default())
        .await
        .unwrap();
    // What the companions cost a start (informational: the machine is shared).
    eprintln!(
        "proxy image ensured in {image_took:.2?}; start_server: allow-list (network + proxy \
         + server) {allow_took:.2?}, open {:.2?}",
        started.elapsed()
    );
    let ids = [
        allow_id.clone(),
        none_stdio.clone(),
        none_http.clone(),
        open_id.clone(),
    ];
    for id in &ids {
        env.o.wait_until_running(id, WAIT).await.unwrap();
    }

    let lines = fetch_lines(&env.o, &allow_id, 4).await;
    let proxy = format!("{allow_id}-egress-proxy:3128");
    let ok = line_for(&lines, allowed);
    assert!(
        ok.starts_with(&format!("fetch {allowed}: 200 (via proxy {proxy})")),
        "{ok}"
    );
    let refused = line_for(&lines, other);
    assert!(
        refused.starts_with(&format!("fetch {other}: 403 (via proxy {proxy}) refused:")),
        "{refused}"
    );
    assert!(refused.contains("host not allowed"), "{refused}");
    let by_ip = line_for(&lines, &other_by_ip);
    assert!(
        by_ip.contains(": 403 ") && by_ip.contains("not in the allowed CIDRs"),
        "{by_ip}"
    );
    let around = line_for(&lines, &direct);
    assert!(
        around.starts_with(&format!("fetch {direct} failed:")) && around.ends_with("(direct)"),
        "{around}"
    );

    for id in [&none_stdio, &none_http] {
        let lines = fetch_lines(&env.o, id, 1).await;
        let line = line_for(&lines, allowed);
        assert!(
            line.starts_with(&format!("fetch {allowed} failed:")),
            "{id}: {line}"
        );
    }
    let lines = fetch_lines(&env.o, &open_id, 1).await;
    let line = line_for(&lines, allowed);
    assert_eq!(line, format!("fetch {allowed}: 200 (direct)"));

    // The proxy logged the refusals with their targets.
    let proxy_name = format!("{allow_id}-egress-proxy");
    let mut log = String::new();
    let mut stream = env.docker().logs(
        &proxy_name,
        Some(
            bollard::query_parameters::LogsOptionsBuilder::new()
                .stderr(true)
                .stdout(true)
                .build(),
        ),
    );
    while let Some(chunk) = stream.next().await {
        log.push_str(&String::from_utf8_lossy(&chunk.unwrap().into_bytes()));
    }
    assert!(
        log.contains("egress refused") && log.contains("other-target:8080"),
        "{log}"
    );

    // Postures: from get_status and from a listing alike.
    let posture = |id: &InstanceId| {
        let o = env.o.clone();
        let id = id.clone();
        async move { o.get_status(&id).await.unwrap().egress.expect("a posture") }
    };
    let p = posture(&allow_id).await;
    assert_eq!(p.policy, policy);
    assert!(
        p.metadata_blocked && p.enforced_by.contains(&proxy_name),
        "{p:?}"
    );
    let p = posture(&none_stdio).await;
    assert_eq!((p.policy, p.metadata_blocked), (Egress::None, true));
    assert_eq!(p.enforced_by, "docker network none (loopback only)");
    let p = posture(&none_http).await;
    assert!(
        p.enforced_by.starts_with("docker internal network"),
        "{p:?}"
    );
    let p = posture(&open_id).await;
    assert_eq!((p.policy, p.metadata_blocked), (Egress::Open, false));
    let page = env
        .o
        .list_instances(&InstanceFilters::default())
        .await
        .unwrap();
    assert_eq!(
        page.items.len(),
        4,
        "companions are never listed: {:?}",
        page.items
    );
    for i in &page.items {
        assert_eq!(
            i.status.egress,
            env.o.get_status(&i.id).await.unwrap().egress,
            "{}",
            i.id
        );
    }

    // HTTP behind an egress policy is served on the container address, reachable from here.
    for id in [&allow_id, &none_http] {
        let instance = page.items.iter().find(|i| &i.id == id).unwrap();
        let url = instance.endpoint.clone().expect("an endpoint");
        assert!(!url.starts_with("http://127.0.0.1"), "{url}");
        let McpChannel::Http(endpoint) = env.o.connect(id).await.unwrap() else {
            panic!("{id}: not an HTTP channel");
        };
        assert_eq!(endpoint.url, url);
        assert_eq!(initialize_over_http(&url).await, "HTTP/1.1 200 OK");
    }
    // A stdio server without a network still answers through `connect`.
    let McpChannel::Stdio(channel) = env.o.connect(&none_stdio).await.unwrap() else {
        panic!("not a stdio channel");
    };
    let (read, mut write) = tokio::io::split(channel);
    write
        .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"initialize\",\"params\":{\"protocolVersion\":\"2025-03-26\",\"capabilities\":{},\"clientInfo\":{\"name\":\"t\",\"version\":\"0\"}}}\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, BufReader::new(read).read_line(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.contains("\"serverInfo\""), "{answer}");

    for id in &ids {
        env.o.stop_server(id, GRACE).await.unwrap();
    }
    env.finish(&ids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphaned_companions_are_collected() {
    let Some(env) = setup("egress-gc").await else {
        return;
    };
    let policy = Egress::Allow(vec![EgressRule::host("allowed-target", [8080])]);
    let id = env
        .o
        .start_server(
            &spec("lost", &FixtureScript::new(), Some(policy)),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    env.o.wait_until_running(&id, WAIT).await.unwrap();
    let owner = format!("{COMPANION_OF_LABEL}={id}");
    assert_eq!(containers(env.docker(), "label", &owner).await.len(), 1);
    assert_eq!(networks(env.docker(), "label", &owner).await.len(), 1);

    // The server vanishes behind the orchestrator's back: its companions are orphans.
    env.docker()
        .remove_container(
            id.as_str(),
            Some(RemoveContainerOptionsBuilder::new().force(true).build()),
        )
        .await
        .unwrap();
    let dry = env.o.collect_garbage(true).await.unwrap();
    let kinds: Vec<OrphanKind> = dry.orphans.iter().map(|o| o.kind).collect();
    assert!(kinds.contains(&OrphanKind::EgressProxy), "{dry:?}");
    assert!(
        dry.orphans
            .iter()
            .any(|o| o.kind == OrphanKind::Network && o.name == format!("{id}-egress")),
        "{dry:?}"
    );
    assert_eq!(
        containers(env.docker(), "label", &owner).await.len(),
        1,
        "a dry run removes nothing"
    );
    let done = env.o.collect_garbage(false).await.unwrap();
    assert!(done.orphans.iter().all(|o| o.removed), "{done:?}");
    let proxies = containers(
        env.docker(),
        "label",
        &format!("mcpctl.io/companion={PROXY_ROLE}"),
    )
    .await;
    assert!(
        !proxies.iter().any(|p| p.contains(id.as_str())),
        "{proxies:?}"
    );
    env.finish(&[id]).await;
}
