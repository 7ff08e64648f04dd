//! The `attach` subresource against real processes: a real kube client attaches to a pod whose
//! image runs the real `mcp-test-server` in stdio mode and speaks MCP (JSON lines) through the
//! WebSocket channels; detach/re-attach, stdinOnce, v5/v4 negotiation with a raw WebSocket
//! client, the errors, and process clean-up (SIGTERM on delete, nothing left after shutdown).

use std::path::PathBuf;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use k8s_openapi::api::core::v1::{Container, EnvVar, Pod, PodSpec};
use kube::api::{Api, AttachParams, AttachedProcess, DeleteParams, ObjectMeta};
use mcp_k8s_fake::{Failure, FailureTarget, FakeKubeServer};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::{WAIT, container, create, start, status_of, wait_running};

const IMAGE: &str = "example.com/mcp-test-server:stdio";
const TAG_VAR: &str = "MCP_K8S_FAKE_TEST_TAG";

async fn test_server_binary() -> PathBuf {
    tokio::task::spawn_blocking(|| mcp_test_server::static_binary().expect("build mcp-test-server"))
        .await
        .expect("build task")
}

/// A pod running `mcp-test-server stdio` with stdin, tagged through its environment.
fn stdio_pod(name: &str, tag: &str, restart_policy: &str, stdin_once: bool) -> Pod {
    Pod {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some(restart_policy.to_owned()),
            termination_grace_period_seconds: Some(5),
            containers: vec![Container {
                name: "server".to_owned(),
                image: Some(IMAGE.to_owned()),
                command: Some(vec!["/mcp-test-server".to_owned()]),
                args: Some(vec!["stdio".to_owned()]),
                env: Some(vec![EnvVar {
                    name: TAG_VAR.to_owned(),
                    value: Some(tag.to_owned()),
                    ..EnvVar::default()
                }]),
                stdin: Some(true),
                stdin_once: Some(stdin_once),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        ..Pod::default()
    }
}

/// Live (not zombie) processes of this user whose environment carries the tag.
fn tagged_processes(tag: &str) -> Vec<u32> {
    let needle = format!("{TAG_VAR}={tag}");
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            let tagged = environ
                .split(|b| *b == 0)
                .any(|entry| entry == needle.as_bytes());
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let zombie = stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
            tagged && !zombie
        })
        .collect()
}

async fn wait_no_process(tag: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !tagged_processes(tag).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes left behind: {:?}",
            tagged_processes(tag)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn unique_tag(test: &str) -> String {
    format!("{test}-{}", uuid::Uuid::new_v4())
}

/// An MCP client over an attached process's stdin/stdout (JSON lines).
struct Mcp {
    attached: AttachedProcess,
    stdin: tokio::io::WriteHalf<tokio::io::SimplexStream>,
    stdout: BufReader<tokio::io::ReadHalf<tokio::io::SimplexStream>>,
}

impl Mcp {
    async fn attach(pods: &Api<Pod>, name: &str) -> Self {
        let params = AttachParams::default()
            .stdin(true)
            .stdout(true)
            .stderr(false);
        let mut attached = pods.attach(name, &params).await.expect("attach");
        let stdin = attached.stdin().expect("stdin");
        let stdout = BufReader::new(attached.stdout().expect("stdout"));
        Self {
            attached,
            stdin,
            stdout,
        }
    }

    async fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// The response with this id (notifications and other messages are skipped).
    async fn response(&mut self, id: u64) -> Value {
        loop {
            let mut line = String::new();
            let read = tokio::time::timeout(WAIT, self.stdout.read_line(&mut line))
                .await
                .expect("no response in time")
                .expect("read stdout");
            assert!(read > 0, "stdout ended before response {id}");
            let message: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("stdout is not JSON lines ({e}): {line:?}"));
            if message["id"] == json!(id) {
                return message;
            }
        }
    }

    async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let response = self.response(id).await;
        assert!(response.get("error").is_none(), "{method}: {response}");
        response["result"].clone()
    }

    async fn initialize(&mut self) -> Value {
        let result = self
            .request(
                1,
                "initialize",
                json!({
                    "protocolVersion": "2025-03-26",
                    "capabilities": {},
                    "clientInfo": {"name": "mcp-k8s-fake-test", "version": "0"},
                }),
            )
            .await;
        self.send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await;
        result
    }

    async fn tool_names(&mut self, id: u64) -> Vec<String> {
        let result = self.request(id, "tools/list", json!({})).await;
        let mut names: Vec<String> = result["tools"]
            .as_array()
            .expect("tools")
            .iter()
            .filter_map(|t| t["name"].as_str().map(str::to_owned))
            .collect();
        names.sort();
        names
    }
}

#[tokio::test]
async fn mcp_over_attach_survives_detach_and_reattach() {
    let binary = test_server_binary().await;
    let (server, client) = start().await;
    server.handle().run_image_as(IMAGE, &binary);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let tag = unique_tag("reattach");
    create(&pods, &stdio_pod("mcp", &tag, "Always", false)).await;
    let running = wait_running(&server, "default", "mcp").await;
    let container_id = container(&running, 0).container_id;

    let mut mcp = Mcp::attach(&pods, "mcp").await;
    let info = mcp.initialize().await;
    assert!(
        info["serverInfo"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{info}"
    );
    assert_eq!(mcp.tool_names(2).await, ["add", "echo", "env"]);
    let echoed = mcp
        .request(
            3,
            "tools/call",
            json!({"name": "env", "arguments": {"name": TAG_VAR}}),
        )
        .await;
    assert!(
        echoed.to_string().contains(&tag),
        "the process sees the container env: {echoed}"
    );
    drop(mcp);

    // Detached: the same process keeps running with its stdin open.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let pod = pods.get("mcp").await.unwrap();
    assert_eq!(container(&pod, 0).container_id, container_id);
    assert_eq!(container(&pod, 0).restart_count, 0);
    assert_eq!(tagged_processes(&tag).len(), 1);

    let mut again = Mcp::attach(&pods, "mcp").await;
    assert_eq!(again.tool_names(4).await, ["add", "echo", "env"]);
    let sum = again
        .request(
            5,
            "tools/call",
            json!({"name": "add", "arguments": {"a": 2, "b": 3}}),
        )
        .await;
    assert!(sum.to_string().contains('5'), "{sum}");
    drop(again);

    pods.delete("mcp", &DeleteParams::default()).await.unwrap();
    assert!(
        server
            .handle()
            .wait_for_pod_gone("default", "mcp", WAIT)
            .await
    );
    wait_no_process(&tag).await;
}

#[tokio::test]
async fn two_attached_clients_each_get_whole_responses() {
    let binary = test_server_binary().await;
    let (server, client) = start().await;
    server.handle().run_image_as(IMAGE, &binary);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let tag = unique_tag("two");
    create(&pods, &stdio_pod("two", &tag, "Always", false)).await;
    wait_running(&server, "default", "two").await;
    let mut writer = Mcp::attach(&pods, "two").await;
    // The second client attaches for output only.
    let mut watcher = pods
        .attach("two", &AttachParams::default().stdout(true).stderr(false))
        .await
        .unwrap();
    let mut output = BufReader::new(watcher.stdout().unwrap());
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.initialize().await;
    let mut line = String::new();
    tokio::time::timeout(WAIT, output.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let seen: Value = serde_json::from_str(&line).expect("a whole JSON line");
    assert_eq!(seen["id"], 1, "{seen}");
    drop((writer, watcher));
    drop(server);
    wait_no_process(&tag).await;
}

#[tokio::test]
async fn stdin_once_closes_stdin_when_the_first_client_leaves() {
    let binary = test_server_binary().await;
    let (server, client) = start().await;
    server.handle().run_image_as(IMAGE, &binary);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let tag = unique_tag("once");
    create(&pods, &stdio_pod("once", &tag, "Never", true)).await;
    wait_running(&server, "default", "once").await;
    let mut mcp = Mcp::attach(&pods, "once").await;
    mcp.initialize().await;
    // Closing stdin (v5 sends CLOSE for channel 0) ends the session's stdin; with stdinOnce
    // the container's stdin closes, and the stdio server exits on EOF.
    let Mcp {
        attached,
        mut stdin,
        ..
    } = mcp;
    // Shutting the writer down ends kube's stdin stream (dropping it would not).
    stdin.shutdown().await.unwrap();
    let exited = server
        .handle()
        .wait_for_pod("default", "once", WAIT, |pod| {
            container(pod, 0).state.and_then(|s| s.terminated).is_some()
        })
        .await
        .expect("the server exits once stdin is closed");
    let terminated = container(&exited, 0).state.unwrap().terminated.unwrap();
    assert_eq!(terminated.exit_code, 0, "{terminated:?}");
    drop(attached);
    wait_no_process(&tag).await;
}

/// A raw WebSocket attach offering `protocols`.
async fn raw_attach(
    server: &FakeKubeServer,
    pod: &str,
    query: &str,
    protocols: &str,
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        String,
    ),
    tokio_tungstenite::tungstenite::Error,
> {
    let url = format!(
        "{}/api/v1/namespaces/default/pods/{pod}/attach?{query}",
        server.url().replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request().unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
    let (socket, response) = tokio_tungstenite::connect_async(request).await?;
    let chosen = response
        .headers()
        .get("Sec-WebSocket-Protocol")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    Ok((socket, chosen))
}

#[tokio::test]
async fn v5_is_preferred_v4_is_served_and_other_protocols_are_refused() {
    let binary = test_server_binary().await;
    let (server, client) = start().await;
    server.handle().run_image_as(IMAGE, &binary);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let tag = unique_tag("protocols");
    create(&pods, &stdio_pod("proto", &tag, "Always", false)).await;
    wait_running(&server, "default", "proto").await;
    let query = "stdin=true&stdout=true";

    let (socket, chosen) = raw_attach(
        &server,
        "proto",
        query,
        "v5.channel.k8s.io, v4.channel.k8s.io",
    )
    .await
    .unwrap();
    assert_eq!(chosen, "v5.channel.k8s.io");
    drop(socket);

    let (mut socket, chosen) = raw_attach(&server, "proto", query, "v4.channel.k8s.io")
        .await
        .unwrap();
    assert_eq!(chosen, "v4.channel.k8s.io");
    let first = socket.next().await.unwrap().unwrap();
    assert_eq!(
        first,
        Message::Binary(vec![1].into()),
        "the open frame on stdout"
    );
    let initialize = json!({"jsonrpc": "2.0", "id": 7, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {},
        "clientInfo": {"name": "raw", "version": "0"}}});
    let mut frame = vec![0_u8];
    frame.extend_from_slice(format!("{initialize}\n").as_bytes());
    socket.send(Message::Binary(frame.into())).await.unwrap();
    let mut stdout = Vec::new();
    while !stdout.ends_with(b"\n") {
        let message = tokio::time::timeout(WAIT, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let Message::Binary(bytes) = message else {
            continue;
        };
        assert_eq!(bytes[0], 1, "only stdout was requested: {bytes:?}");
        stdout.extend_from_slice(&bytes[1..]);
    }
    let response: Value = serde_json::from_slice(&stdout).unwrap();
    assert_eq!(response["id"], 7, "{response}");
    drop(socket);

    for refused in ["base64.channel.k8s.io", "channel.k8s.io"] {
        match raw_attach(&server, "proto", query, refused).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 403, "{refused}");
            }
            other => panic!("{refused}: expected 403, got {other:?}"),
        }
    }
    drop(server);
    wait_no_process(&tag).await;
}

/// The `Status` of a refused attach.
fn refusal(result: kube::Result<AttachedProcess>) -> Box<kube::core::Status> {
    status_of(result.map(|_| "attached"))
}

fn io() -> AttachParams {
    AttachParams::default()
        .stdin(true)
        .stdout(true)
        .stderr(false)
}

#[tokio::test]
async fn attach_errors_are_the_apiservers() {
    let binary = test_server_binary().await;
    let (server, client) = start().await;
    server.handle().run_image_as(IMAGE, &binary);
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let tag = unique_tag("errors");

    let missing = refusal(pods.attach("nope", &io()).await);
    assert_eq!(missing.code, 404, "{missing:?}");

    // No stdin on the container: the test server runs a fixture that idles (in stdio mode it
    // would exit at once on its empty stdin).
    let mut no_stdin = stdio_pod("no-stdin", &tag, "Always", false);
    if let Some(spec) = no_stdin.spec.as_mut() {
        spec.containers[0].stdin = None;
        spec.containers[0].args = Some(
            mcp_orchestrator_api::fixture::FixtureScript::new()
                .stdout("idle")
                .to_args(),
        );
    }
    create(&pods, &no_stdin).await;
    wait_running(&server, "default", "no-stdin").await;
    let refused = refusal(pods.attach("no-stdin", &io()).await);
    assert_eq!(refused.code, 400, "{refused:?}");
    assert!(refused.message.contains("stdin"), "{refused:?}");
    // Output only is fine there.
    let watcher = pods
        .attach(
            "no-stdin",
            &AttachParams::default().stdout(true).stderr(false),
        )
        .await
        .expect("stdout-only attach");
    drop(watcher);

    let unknown = refusal(pods.attach("no-stdin", &io().container("other")).await);
    assert_eq!(unknown.code, 400, "{unknown:?}");
    assert!(unknown.message.contains("is not valid"), "{unknown:?}");

    // Not running: the image cannot be pulled.
    server
        .handle()
        .inject(FailureTarget::pod("default", "waiting"), Failure::ImagePull);
    create(&pods, &stdio_pod("waiting", &tag, "Always", false)).await;
    server
        .handle()
        .wait_for_pod("default", "waiting", WAIT, |pod| {
            crate::waiting_reason(pod).as_deref() == Some("ErrImagePull")
        })
        .await
        .expect("ErrImagePull");
    let waiting = refusal(pods.attach("waiting", &io()).await);
    assert_eq!(waiting.code, 400, "{waiting:?}");
    assert!(waiting.message.contains("is not running"), "{waiting:?}");

    // A plain GET (no upgrade) is refused.
    let plain = http::Request::get("/api/v1/namespaces/default/pods/no-stdin/attach?stdout=true")
        .body(Vec::new())
        .unwrap();
    let plain = status_of(client.request_text(plain).await);
    assert_eq!(plain.code, 400, "{plain:?}");

    drop(server);
    wait_no_process(&tag).await;
}

#[tokio::test]
async fn graceful_delete_sends_sigterm_and_shutdown_leaves_no_process() {
    let binary = test_server_binary().await;
    let (server, client) = start().await;
    server.handle().run_image_as(IMAGE, &binary);
    let pods: Api<Pod> = Api::default_namespaced(client);
    let tag = unique_tag("sigterm");
    create(&pods, &stdio_pod("term", &tag, "Always", false)).await;
    create(&pods, &stdio_pod("left", &tag, "Always", false)).await;
    wait_running(&server, "default", "term").await;
    wait_running(&server, "default", "left").await;
    assert_eq!(tagged_processes(&tag).len(), 2);

    // Watch from before the delete: the server handles SIGTERM at once, so the pod can be gone
    // (long before the 5 s grace period) by the time a later watch would start.
    let handle = server.handle();
    let graceful = DeleteParams::default();
    let terminated = handle.wait_for_pod("default", "term", Duration::from_secs(4), |pod| {
        container(pod, 0).state.and_then(|s| s.terminated).is_some()
    });
    let (stopped, deleted) = tokio::join!(terminated, pods.delete("term", &graceful));
    deleted.unwrap();
    let stopped = stopped.expect("terminated by SIGTERM within the grace period");
    let code = container(&stopped, 0)
        .state
        .unwrap()
        .terminated
        .unwrap()
        .exit_code;
    assert!(code == 0 || code == 143, "exit code after SIGTERM: {code}");
    assert!(
        server
            .handle()
            .wait_for_pod_gone("default", "term", WAIT)
            .await
    );
    assert_eq!(tagged_processes(&tag).len(), 1);

    server.shutdown().await;
    wait_no_process(&tag).await;
}
