//! The `FROM scratch` test image on the real Docker engine: built once, reused by content hash,
//! rebuilt when the hash label differs, runs fixtures as PID 1 (exit codes, logs, SIGTERM).
//! Skips with a reason when no engine answers, unless `MCPCTL_REQUIRE_DOCKER=1`.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    BuildImageOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    RemoveImageOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::{FutureExt, StreamExt};
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_test_server::{
    BINARY_HASH_LABEL, TEST_IMAGE_LABEL, build_docker_image, docker_context_tar,
    ensure_docker_image, static_binary,
};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;

use crate::common::{TIMEOUT, exercise};

pub(crate) async fn docker_or_skip() -> Option<Docker> {
    let required = std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d.negotiate_version().await,
        Err(e) => Err(e),
    };
    match docker {
        Ok(d) if d.ping().await.is_ok() => Some(d),
        Ok(_) | Err(_) => {
            assert!(
                !required,
                "MCPCTL_REQUIRE_DOCKER=1 but no Docker engine answers"
            );
            eprintln!("skipping: no Docker engine answers (set MCPCTL_REQUIRE_DOCKER=1 to fail)");
            None
        }
    }
}

/// Builds the context at `tag` with a wrong hash label: what an image from an older binary
/// looks like.
async fn build_stale(docker: &Docker, tag: &str) -> String {
    let binary = tokio::task::spawn_blocking(static_binary)
        .await
        .unwrap()
        .unwrap();
    let context = docker_context_tar(&binary).unwrap();
    let labels = HashMap::from([(BINARY_HASH_LABEL, "stale")]);
    let options = BuildImageOptionsBuilder::default()
        .t(tag)
        .labels(&labels)
        .rm(true)
        .build();
    let mut build = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        step.expect("stale image build");
    }
    docker.inspect_image(tag).await.unwrap().id.unwrap()
}

/// A container of `image` running `script`.
fn fixture(image: &str, script: &FixtureScript) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(image.to_owned()),
        cmd: Some(script.to_args()),
        ..Default::default()
    }
}

/// Creates and starts a container; returns its id (also pushed to `containers` for cleanup).
async fn run(docker: &Docker, body: ContainerCreateBody, containers: &mut Vec<String>) -> String {
    let body = ContainerCreateBody {
        labels: Some(HashMap::from([(
            TEST_IMAGE_LABEL.to_owned(),
            "run".to_owned(),
        )])),
        ..body
    };
    let id = docker.create_container(None, body).await.unwrap().id;
    containers.push(id.clone());
    docker.start_container(&id, None).await.unwrap();
    id
}

/// Waits until the container's stdout is exactly `expected`.
async fn wait_for_stdout(docker: &Docker, id: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (out, err) = logs(docker, id).await;
        if out == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "stdout {out:?} (stderr {err:?}), want {expected:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops container `id` (SIGTERM, 10 s grace) and checks it went promptly, with exit code 0.
async fn stop_promptly(docker: &Docker, id: &str) {
    let stopping = Instant::now();
    let stop = StopContainerOptionsBuilder::default().t(10).build();
    docker.stop_container(id, Some(stop)).await.unwrap();
    // Without its own SIGTERM handler, PID 1 would sit out the 10 s and be killed (137).
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop took {:?}",
        stopping.elapsed()
    );
    assert_eq!(exit_code(docker, id).await, 0);
}

/// Waits until container `id` exits; returns its exit code.
async fn exit_code(docker: &Docker, id: &str) -> i64 {
    let mut wait = docker.wait_container(id, None);
    let waited = tokio::time::timeout(Duration::from_secs(30), wait.next()).await;
    match waited.expect("container did not exit in time") {
        Some(Ok(r)) => r.status_code,
        // bollard reports a non-zero exit as an error carrying the code.
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        other => panic!("waiting for {id}: {other:?}"),
    }
}

/// The container's (stdout, stderr) so far.
async fn logs(docker: &Docker, id: &str) -> (String, String) {
    let options = LogsOptionsBuilder::default()
        .stdout(true)
        .stderr(true)
        .build();
    let mut stream = docker.logs(id, Some(options));
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(chunk) = stream.next().await {
        match chunk.unwrap() {
            LogOutput::StdOut { message } => out.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdErr { message } => err.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdIn { .. } | LogOutput::Console { .. } => {}
        }
    }
    (out, err)
}

#[tokio::test]
async fn image_builds_once_reuses_by_hash_and_runs_fixtures_as_pid1() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let tag = format!("mcp-test-server:it-{}", std::process::id());
    let mut containers = Vec::new();
    let mut images = Vec::new();
    let outcome = AssertUnwindSafe(scenario(&docker, &tag, &mut containers, &mut images))
        .catch_unwind()
        .await;
    for id in &containers {
        let force = RemoveContainerOptionsBuilder::default().force(true).build();
        let _ = docker.remove_container(id, Some(force)).await;
    }
    for image in images.iter().chain([&tag]) {
        let force = RemoveImageOptionsBuilder::default().force(true).build();
        let _ = docker.remove_image(image, Some(force), None).await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn scenario(
    docker: &Docker,
    tag: &str,
    containers: &mut Vec<String>,
    images: &mut Vec<String>,
) {
    let stale = build_stale(docker, tag).await;
    images.push(stale.clone());

    // A tag whose hash label does not match the binary is rebuilt.
    let started = Instant::now();
    let id = build_docker_image(docker, tag).await.unwrap();
    eprintln!("test image {tag} built in {:.1?}", started.elapsed());
    assert_ne!(id, stale);
    images.push(id.clone());

    // A matching one is reused, without a build.
    let started = Instant::now();
    assert_eq!(build_docker_image(docker, tag).await.unwrap(), id);
    eprintln!("test image {tag} reused in {:.1?}", started.elapsed());

    // Once per process and tag.
    assert_eq!(ensure_docker_image(docker, tag).await.unwrap(), id);
    assert_eq!(ensure_docker_image(docker, tag).await.unwrap(), id);

    let image = docker.inspect_image(tag).await.unwrap();
    let config = image.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(config.entrypoint, Some(vec!["/mcp-test-server".to_owned()]));
    let labels = config.labels.unwrap();
    assert_eq!(
        labels.get(TEST_IMAGE_LABEL).map(String::as_str),
        Some("true")
    );
    assert_eq!(labels.get(BINARY_HASH_LABEL).map(String::len), Some(64));

    // A script that ends: exact lines on each stream, the exit code.
    let script = FixtureScript::new()
        .stdout("hello from scratch")
        .stderr("to stderr")
        .exit(5);
    let c = run(docker, fixture(tag, &script), containers).await;
    assert_eq!(exit_code(docker, &c).await, 5);
    assert_eq!(
        logs(docker, &c).await,
        ("hello from scratch\n".to_owned(), "to stderr\n".to_owned())
    );

    // An idle script as PID 1: `docker stop` ends it with SIGTERM, promptly, exit 0.
    let c = run(
        docker,
        fixture(&id, &FixtureScript::new().stdout("ready")),
        containers,
    )
    .await;
    wait_for_stdout(docker, &c, "ready\n").await;
    stop_promptly(docker, &c).await;

    // The image serves MCP over streamable HTTP, with the environment the engine injects.
    let body = ContainerCreateBody {
        image: Some(id.clone()),
        cmd: Some(["http", "--port", "8080"].map(String::from).to_vec()),
        env: Some(vec!["MCP_DOCKER_VAR=injected by docker".to_owned()]),
        exposed_ports: Some(vec!["8080/tcp".to_owned()]),
        host_config: Some(HostConfig {
            port_bindings: Some(HashMap::from([(
                "8080/tcp".to_owned(),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: Some(String::new()),
                }]),
            )])),
            ..Default::default()
        }),
        ..Default::default()
    };
    let c = run(docker, body, containers).await;
    wait_for_stdout(docker, &c, "listening on 0.0.0.0:8080\n").await;
    let inspected = docker.inspect_container(&c, None).await.unwrap();
    let port = inspected
        .network_settings
        .and_then(|n| n.ports)
        .and_then(|p| p.get("8080/tcp").cloned().flatten())
        .and_then(|b| b.into_iter().find_map(|b| b.host_port))
        .expect("published port");
    let transport = StreamableHttpClientTransport::from_uri(format!("http://127.0.0.1:{port}/mcp"));
    let client = tokio::time::timeout(TIMEOUT, ().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize");
    exercise(&client, ("MCP_DOCKER_VAR", "injected by docker")).await;
    client.cancel().await.expect("closing the client");
    stop_promptly(docker, &c).await;
}

/// `mcp-test-server build-image --tag T`, the documented command for authors without Rust glue:
/// builds (or reuses) the image, tags it, prints `T sha256:...`, and the image carries the
/// binary's hash label.
#[tokio::test]
async fn build_image_command_tags_the_image() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let tag = format!("mcp-test-server:cli-{}", std::process::id());
    let out = tokio::process::Command::new(crate::common::BIN)
        .args(["build-image", "--tag", &tag])
        .output()
        .await
        .expect("running build-image");
    let outcome = AssertUnwindSafe(async {
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "build-image failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let (printed_tag, id) = stdout.trim().split_once(' ').expect("TAG ID");
        assert_eq!(printed_tag, tag);
        assert!(id.starts_with("sha256:"), "{stdout}");
        let image = docker.inspect_image(&tag).await.expect("the tag exists");
        assert_eq!(image.id.as_deref(), Some(id));
        let labels = image.config.and_then(|c| c.labels).unwrap_or_default();
        assert!(labels.contains_key(BINARY_HASH_LABEL), "{labels:?}");
    })
    .catch_unwind()
    .await;
    let untag = RemoveImageOptionsBuilder::default().noprune(true).build();
    let _ = docker.remove_image(&tag, Some(untag), None).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
