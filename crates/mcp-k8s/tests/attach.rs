//! `KubernetesOrchestrator::attach_stdio` against the fake API server, whose kubelet runs the
//! real `mcp-test-server` binary for the test image: a real rmcp client completes `initialize`,
//! `tools/list` and `tools/call` through `pods/attach` (a WebSocket), one client at a time, the
//! server outliving its clients; and the errors (unknown instance, HTTP server, not running).

use std::collections::BTreeMap;
use std::time::Duration;

use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::{Failure, FailureTarget, FakeKubeServer};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{EnvValue, InstanceId, K8sConfig, McpServer, Phase, StartOptions, Transport};
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const NS: &str = "mcpctl";
const IMAGE: &str = "example.com/mcp-test-server:attach";
const TIMEOUT: Duration = Duration::from_secs(15);

async fn setup() -> (FakeKubeServer, KubernetesOrchestrator) {
    let binary = tokio::task::spawn_blocking(|| {
        mcp_test_server::static_binary().expect("building mcp-test-server")
    })
    .await
    .expect("build task");
    let server = FakeKubeServer::start().await;
    server.handle().run_image_as(IMAGE, binary);
    let config = K8sConfig {
        namespace: NS.to_owned(),
        ..K8sConfig::default()
    };
    let o = KubernetesOrchestrator::with_client(server.client().await, config).unwrap();
    (server, o)
}

fn stdio_spec(name: &str) -> McpServer {
    McpServer {
        args: vec!["stdio".to_owned()],
        env: BTreeMap::from([(
            "GREETING".to_owned(),
            EnvValue::plain("hello through attach"),
        )]),
        ..McpServer::new(name, IMAGE)
    }
}

async fn start(o: &KubernetesOrchestrator, spec: &McpServer) -> InstanceId {
    let id = o
        .start_server(spec, &StartOptions::default())
        .await
        .expect("start");
    o.wait_until_running(&id, TIMEOUT).await.expect("running");
    id
}

#[tokio::test]
async fn rmcp_client_talks_to_a_pod_through_attach() {
    let (_server, o) = setup().await;
    let id = start(&o, &stdio_spec("attach-rmcp")).await;

    let stream = o.attach_stdio(&id).await.expect("attach");
    let client = tokio::time::timeout(TIMEOUT, ().serve(stream))
        .await
        .expect("initialize timed out")
        .expect("initialize");
    let info = client.peer_info().expect("server info");
    assert!(
        info.server_info
            .as_ref()
            .is_some_and(|i| !i.name.is_empty()),
        "{info:?}"
    );
    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<String> = tools.iter().map(|t| t.name.to_string()).collect();
    names.sort();
    assert_eq!(names, ["add", "echo", "env"]);
    let Value::Object(args) = json!({"name": "GREETING"}) else {
        unreachable!()
    };
    let greeting = client
        .call_tool(CallToolRequestParams::new("env").with_arguments(args))
        .await
        .expect("tools/call env");
    let text: String = greeting
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert!(text.contains("hello through attach"), "{text}");

    // One client at a time.
    match o.attach_stdio(&id).await {
        Err(OrchestratorError::Unavailable { message, .. }) => {
            assert!(message.contains("another client"), "{message}");
        }
        Err(other) => panic!("second attach: expected Unavailable, got {other:?}"),
        Ok(_) => panic!("second attach: expected Unavailable, got a stream"),
    }
    client.cancel().await.expect("closing the client");

    // The server outlives its client: a new client finds the session initialized.
    let stream = o.attach_stdio(&id).await.expect("re-attach");
    let (read, mut write) = tokio::io::split(stream);
    let request = json!({"jsonrpc": "2.0", "id": 42, "method": "tools/list", "params": {}});
    write
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    write.flush().await.unwrap();
    let mut lines = BufReader::new(read).lines();
    let response: Value = loop {
        let line = tokio::time::timeout(TIMEOUT, lines.next_line())
            .await
            .expect("no answer in time")
            .expect("read")
            .expect("stdout ended");
        let message: Value = serde_json::from_str(&line).expect("JSON line");
        if message["id"] == 42 {
            break message;
        }
    };
    assert_eq!(
        response["result"]["tools"].as_array().map(Vec::len),
        Some(3),
        "{response}"
    );
    drop((lines, write));
    assert_eq!(o.get_status(&id).await.unwrap().phase, Phase::Running);

    o.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
}

#[tokio::test]
async fn attach_errors() {
    let (server, o) = setup().await;

    let unknown = InstanceId::new("mcp-nope-0123456789");
    match o.attach_stdio(&unknown).await {
        Err(OrchestratorError::NotFound { .. }) => {}
        Err(other) => panic!("unknown instance: expected NotFound, got {other:?}"),
        Ok(_) => panic!("unknown instance: expected NotFound, got a stream"),
    }

    let http = McpServer {
        transport: Transport::StreamableHttp,
        port: Some(8080),
        // An idle fixture: the check is on the transport, and a real listener is not needed.
        args: mcp_orchestrator_api::fixture::FixtureScript::new()
            .stdout("serving")
            .to_args(),
        ..McpServer::new("attach-http", IMAGE)
    };
    let http_id = start(&o, &http).await;
    match o.attach_stdio(&http_id).await {
        Err(OrchestratorError::NotSupported { .. }) => {}
        Err(other) => panic!("HTTP server: expected NotSupported, got {other:?}"),
        Ok(_) => panic!("HTTP server: expected NotSupported, got a stream"),
    }

    server.handle().inject(
        FailureTarget::image("example.com/unpullable:1"),
        Failure::ImagePull,
    );
    let waiting = o
        .start_server(
            &McpServer::new("attach-waiting", "example.com/unpullable:1"),
            &StartOptions::default(),
        )
        .await
        .expect("start");
    match o.attach_stdio(&waiting).await {
        Err(OrchestratorError::Unavailable { message, .. }) => {
            assert!(
                message.contains("not started") || message.contains("waiting"),
                "{message}"
            );
        }
        Err(other) => panic!("not running: expected Unavailable, got {other:?}"),
        Ok(_) => panic!("not running: expected Unavailable, got a stream"),
    }

    for id in [&http_id, &waiting] {
        o.stop_server(id, Duration::from_secs(5))
            .await
            .expect("stop");
    }
}
