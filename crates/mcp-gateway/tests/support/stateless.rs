//! A stdio server that speaks only 2026-07-28 (`mcp-test-server stdio --stateless-only`: it
//! answers `server/discover`, demands the per-request metadata and refuses `initialize`, after
//! which it exits) behind the gateway: clients of every revision get their answers, the
//! readiness reports 2026-07-28, and the server is never sent an `initialize` (it would exit).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcp_orchestrator_api::{DynOrchestrator, McpOrchestrator};
use mcp_types::{McpServer, Phase, RestartPolicy, StartOptions};
use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use serde_json::{Value, json};

async fn post(
    url: &str,
    version: &str,
    session: Option<&str>,
    body: &Value,
) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", version)
        .body(body.to_string());
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = req.send().await.expect("gateway answers");
    let status = resp.status().as_u16();
    let session = resp
        .headers()
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = resp.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        session,
    )
}

pub(crate) async fn stateless_upstream(python: Option<PathBuf>) {
    let (_state, orch, program) = crate::backend().await;
    let spec = McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command("gw-modern", &program, ["stdio", "--stateless-only"])
    };
    let id = orch
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    let outcome = tokio::spawn(exercise(Arc::clone(&orch), id.clone(), python)).await;
    let status = orch.get_status(&id).await.expect("status");
    orch.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    // It would have exited after an initialize.
    assert_eq!(status.phase, Phase::Running, "{status:?}");
}

async fn exercise(
    orch: Arc<mcp_process::ProcessOrchestrator>,
    id: mcp_types::InstanceId,
    python: Option<PathBuf>,
) {
    let dyn_orch: Arc<DynOrchestrator> = orch.clone();
    let (gateway, base, stop) = crate::start_gateway(dyn_orch).await;
    let info = gateway
        .wait_ready(&id, Duration::from_secs(30))
        .await
        .expect("ready");
    assert_eq!(info.protocol_version, "2026-07-28");
    assert_eq!(info.server_name, "mcp-test-server");
    assert_eq!(info.tool_count, 3, "{info:?}");
    let url = format!("{base}/servers/{id}/mcp");

    // The 2025 revisions: the gateway answers initialize and carries each call statelessly.
    for version in ["2025-06-18", "2025-11-25"] {
        let init = json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
        let (status, body, session) = post(&url, version, None, &init).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["result"]["protocolVersion"], version);
        assert_eq!(
            body["result"]["serverInfo"]["name"], "mcp-test-server",
            "{body}"
        );
        let call = json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": version}}});
        let (status, body, _) = post(&url, version, session.as_deref(), &call).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["id"], 3);
        assert_eq!(body["result"]["content"][0]["text"], version, "{body}");
    }
    // 2026-07-28 end to end.
    let meta = json!({"io.modelcontextprotocol/protocolVersion": "2026-07-28",
        "io.modelcontextprotocol/clientCapabilities": {}});
    let discover =
        json!({"jsonrpc": "2.0", "id": 1, "method": "server/discover", "params": {"_meta": meta}});
    let (status, body, _) = post(&url, "2026-07-28", None, &discover).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"],
        "mcp-test-server"
    );
    let call = json!({"jsonrpc": "2.0", "id": 9, "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": 40, "b": 2}, "_meta": meta}});
    let (status, body, _) = post(&url, "2026-07-28", None, &call).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"]["content"][0]["text"], "42", "{body}");

    // A compiled client (rmcp, its default initialize lifecycle).
    let client =
        ().serve(StreamableHttpClientTransport::from_uri(url.clone()))
            .await
            .expect("rmcp handshake through the gateway");
    let mut args = serde_json::Map::new();
    args.insert("text".into(), "rmcp".into());
    let result = client
        .call_tool(rmcp::model::CallToolRequestParams::new("echo").with_arguments(args))
        .await
        .expect("echo");
    let text: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert_eq!(text, "rmcp");
    let _ = client.cancel().await;

    // The official Python SDK in each of its modes.
    if let Some(python) = python {
        for (mode, protocol) in [
            ("legacy", "2025-11-25"),
            ("auto", "2026-07-28"),
            ("2026-07-28", "2026-07-28"),
        ] {
            let text = format!("python {mode}");
            let python = python.clone();
            let url = url.clone();
            let out = tokio::task::spawn_blocking(move || {
                crate::clients(&python, &["one", &url, &text, mode])
            })
            .await
            .expect("python");
            assert_eq!(out["text"], format!("python {mode}"), "{out}");
            assert_eq!(out["protocol"], protocol, "{out}");
            // In its explicit 2026 mode the SDK sends no discover, so it has no server info.
            if mode != "2026-07-28" {
                assert_eq!(out["server"], "mcp-test-server", "{out}");
            }
        }
    }
    stop.cancel();
}
