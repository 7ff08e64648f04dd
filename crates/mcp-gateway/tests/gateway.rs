//! The gateway in front of the in-memory backend's real rmcp stdio server: rmcp clients over
//! streamable HTTP, raw requests for the three revisions, bad input and the security guard.

use std::sync::Arc;
use std::time::Duration;

use mcp_gateway::{BearerToken, CancellationToken, Gateway, GatewayConfig};
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode};
use mcp_orchestrator_api::memory::InMemoryOrchestrator;
use mcp_orchestrator_api::{DynOrchestrator, McpOrchestrator};
use mcp_types::{InstanceId, McpServer, StartOptions};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

struct Running {
    orch: Arc<InMemoryOrchestrator>,
    gateway: Gateway,
    base: String,
    id: InstanceId,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start(config: GatewayConfig) -> Running {
    let orch = Arc::new(InMemoryOrchestrator::new());
    let script = FixtureScript::new().serve(ServeMode::Stdio);
    let spec = McpServer::command("echo-srv", "mcp-test-server", script.to_args());
    let id = orch
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let dyn_orch: Arc<DynOrchestrator> = orch.clone();
    let config = GatewayConfig {
        ping_interval: Duration::from_millis(200),
        ..config
    };
    let gateway = Gateway::new(dyn_orch, config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    let serving = gateway.clone();
    let token = stop.clone();
    tokio::spawn(async move { serving.serve_on(listener, token).await });
    Running {
        orch,
        gateway,
        base,
        id,
        stop,
    }
}

fn url(r: &Running) -> String {
    format!("{}/servers/{}/mcp", r.base, r.id)
}

async fn echo(client: &rmcp::service::RunningService<rmcp::RoleClient, ()>, text: &str) -> String {
    let mut args = serde_json::Map::new();
    args.insert("text".into(), text.into());
    let result: CallToolResult = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
        .await
        .unwrap();
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect()
}

#[tokio::test]
async fn many_rmcp_clients_share_one_stdio_session_and_get_their_own_answers() {
    let r = start(GatewayConfig::default()).await;
    let info = r
        .gateway
        .wait_ready(&r.id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.tool_count, 1);
    assert!(!info.server_name.is_empty());
    let mut tasks = Vec::new();
    for n in 0..8 {
        let url = url(&r);
        tasks.push(tokio::spawn(async move {
            let client = ().serve(StreamableHttpClientTransport::from_uri(url)).await.unwrap();
            let tools = client.list_all_tools().await.unwrap();
            assert!(tools.iter().any(|t| t.name == "echo"));
            for k in 0..10 {
                let text = format!("client {n} call {k}");
                assert_eq!(echo(&client, &text).await, text);
            }
            client.cancel().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let listing: Value = reqwest::get(format!("{}/servers", r.base))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let row = &listing["instances"][0];
    assert_eq!(row["id"], r.id.to_string());
    assert_eq!(row["readiness"]["state"], "ready", "{listing}");
    assert_eq!(row["readiness"]["info"]["toolCount"], 1);
    let metrics = reqwest::get(format!("{}/metrics", r.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mcp_gateway_requests_total{instance="),
        "{metrics}"
    );
    assert!(metrics.contains("method=\"tools/call\""), "{metrics}");
    assert!(
        metrics.contains("mcp_gateway_handshake_duration_seconds"),
        "{metrics}"
    );
}

async fn post(
    r: &Running,
    headers: &[(&str, &str)],
    body: String,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut req = reqwest::Client::new()
        .post(url(r))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        headers,
    )
}

#[tokio::test]
async fn the_three_revisions_are_answered_consistently() {
    let r = start(GatewayConfig::default()).await;
    for version in ["2025-06-18", "2025-11-25"] {
        let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let (status, body, headers) = post(&r, &[], init.to_string()).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["protocolVersion"], version);
        assert_eq!(body["result"]["serverInfo"]["name"], "echo-srv", "{body}");
        let session = headers["mcp-session-id"].to_str().unwrap().to_owned();
        let call = json!({"jsonrpc": "2.0", "id": "x7", "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": version}}});
        let (status, body, _) = post(
            &r,
            &[
                ("mcp-session-id", &session),
                ("mcp-protocol-version", version),
            ],
            call.to_string(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], "x7");
        assert_eq!(body["result"]["content"][0]["text"], version);
    }
    // 2026-07-28: no initialize, no session; server/discover and per-request metadata.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let discover =
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}});
    let (status, body, headers) = post(
        &r,
        &[("mcp-protocol-version", "2026-07-28")],
        discover.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(headers.get("mcp-session-id").is_none());
    assert!(
        body["result"]["supportedVersions"]
            .as_array()
            .unwrap()
            .contains(&json!("2026-07-28"))
    );
    assert_eq!(
        body["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "echo-srv"
    );
    let call = json!({"jsonrpc": "2.0", "id": 5, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "stateless"}, "_meta": meta}});
    let (status, body, _) = post(
        &r,
        &[("mcp-protocol-version", "2026-07-28")],
        call.to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["id"], 5);
    assert_eq!(body["result"]["content"][0]["text"], "stateless");
    let (status, body, _) = post(
        &r,
        &[("mcp-protocol-version", "1999-01-01")],
        call.to_string(),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], -32022);
}

#[tokio::test]
async fn bad_input_gets_clear_json_rpc_errors() {
    let r = start(GatewayConfig {
        max_message_bytes: 1024,
        ..GatewayConfig::default()
    })
    .await;
    let (status, body, _) = post(&r, &[], "{not json".into()).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32700)),
        "{body}"
    );
    let (status, body, _) = post(
        &r,
        &[],
        json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]).to_string(),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!(-32600)),
        "{body}"
    );
    let (status, body, _) = post(&r, &[], "x".repeat(2048)).await;
    assert_eq!(status, 413);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("1024 bytes"),
        "{body}"
    );
    let resp = reqwest::Client::new()
        .post(format!("{}/servers/mcp-nope-0123456789/mcp", r.base))
        .body(json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], -32001, "{body}");
    let (status, body, _) = post(
        &r,
        &[("mcp-session-id", "made-up")],
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, _) = post(
        &r,
        &[],
        json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}).to_string(),
    )
    .await;
    assert_eq!(status, 400);
    // The standalone stream: none without a session (stateless), 404 for an ended session.
    let client = reqwest::Client::new();
    let get = client.get(url(&r)).send().await.unwrap();
    assert_eq!(get.status().as_u16(), 405);
    let get = client
        .get(url(&r))
        .header("mcp-session-id", "made-up")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status().as_u16(), 404);
}

#[tokio::test]
async fn origin_host_and_token_are_enforced() {
    let token = BearerToken::new("t0ken-value").unwrap();
    let r = start(GatewayConfig {
        token: Some(token),
        ..GatewayConfig::default()
    })
    .await;
    let client = reqwest::Client::new();
    let listing = format!("{}/servers", r.base);
    assert_eq!(
        client.get(&listing).send().await.unwrap().status().as_u16(),
        401
    );
    let wrong = client
        .get(&listing)
        .bearer_auth("t0ken-valuX")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status().as_u16(), 401);
    assert!(!wrong.text().await.unwrap().contains("t0ken"));
    let ok = client
        .get(&listing)
        .bearer_auth("t0ken-value")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let evil = client
        .get(&listing)
        .bearer_auth("t0ken-value")
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status().as_u16(), 403);
    let rebound = client
        .get(&listing)
        .bearer_auth("t0ken-value")
        .header("host", "evil.example:80")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status().as_u16(), 403);
    let local = client
        .get(&listing)
        .bearer_auth("t0ken-value")
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(local.status().as_u16(), 200);
}

#[tokio::test]
async fn an_instance_that_stops_mid_call_fails_pending_calls_and_goes_unhealthy() {
    let r = start(GatewayConfig {
        failure_threshold: 1,
        refresh_interval: Duration::from_secs(600),
        ..GatewayConfig::default()
    })
    .await;
    r.gateway
        .wait_ready(&r.id, Duration::from_secs(10))
        .await
        .unwrap();
    r.orch
        .stop_server(&r.id, Duration::from_secs(1))
        .await
        .unwrap();
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": "late"}}});
    let (status, body, _) = tokio::time::timeout(
        Duration::from_secs(10),
        post(
            &r,
            &[("mcp-protocol-version", "2026-07-28")],
            call.to_string(),
        ),
    )
    .await
    .expect("a call to a stopped instance must not hang");
    assert!(
        body.get("error").is_some() || status == 404,
        "{status} {body}"
    );
    assert!(body.get("result").is_none(), "{body}");
    let metrics = reqwest::get(format!("{}/metrics", r.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("mcp_gateway_errors_total{")
                && l.contains("tools/call")
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    let mut state = r.gateway.readiness(&r.id).unwrap();
    for _ in 0..50 {
        if state.label() == "unhealthy" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        state = r.gateway.readiness(&r.id).unwrap();
    }
    assert_eq!(state.label(), "unhealthy", "{state:?}");
    assert!(
        state.info().is_some(),
        "the last handshake is kept: {state:?}"
    );
}

#[tokio::test]
async fn wait_ready_alone_reports_the_handshake_and_times_out_with_the_reason() {
    let orch = Arc::new(InMemoryOrchestrator::new());
    let serving = FixtureScript::new().serve(ServeMode::Stdio);
    let spec = McpServer::command("ready-srv", "mcp-test-server", serving.to_args());
    let id = orch
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let dyn_orch: Arc<DynOrchestrator> = orch.clone();
    let info = mcp_gateway::wait_ready(Arc::clone(&dyn_orch), &id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(info.server_name, "ready-srv");
    assert_eq!(info.protocol_version, "2025-11-25");
    assert_eq!(info.tools_hash.len(), 64);
    // Released: the stdio can be claimed again (the gateway's tasks end right after).
    let mut claimed = false;
    for _ in 0..50 {
        if orch.connect(&id).await.is_ok() {
            claimed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(claimed, "wait_ready still holds the stdio");
    // A server that never speaks MCP is never Ready.
    let silent = FixtureScript::new()
        .stdout("not mcp")
        .sleep(Duration::from_secs(60));
    let spec = McpServer::command("silent-srv", "mcp-test-server", silent.to_args());
    let id = orch
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let err = mcp_gateway::wait_ready(dyn_orch, &id, Duration::from_secs(2))
        .await
        .unwrap_err();
    println!("not ready: {err}");
    assert!(
        matches!(err, mcp_gateway::GatewayError::NotReady { .. }),
        "{err}"
    );
    assert!(err.to_string().contains(id.as_ref()), "{err}");
    orch.stop_server(&id, Duration::from_secs(1)).await.unwrap();
}
