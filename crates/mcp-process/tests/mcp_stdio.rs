//! Real MCP servers run on the process backend and a real MCP client (rmcp) completes
//! `initialize`, `tools/list` and `tools/call` with them through `attach_stdio`: the
//! workspace's `mcp-test-server stdio` always, and `mcp-server-time` from PyPI when it is
//! installed (required when `MCPCTL_REQUIRE_PYTHON_MCP=1`, as in CI).

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use common::TestEnv;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_process::ProcessOrchestrator;
use mcp_types::{EnvValue, InstanceId, LogOptions, LogStream, McpServer, StartOptions};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};

const TIMEOUT: Duration = Duration::from_secs(30);

async fn connect(o: &ProcessOrchestrator, id: &InstanceId) -> RunningService<RoleClient, ()> {
    let stream = o.attach_stdio(id).await.expect("attach");
    tokio::time::timeout(TIMEOUT, ().serve(stream))
        .await
        .expect("initialize timed out")
        .expect("initialize")
}

async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: serde_json::Value,
) -> String {
    let serde_json::Value::Object(args) = args else {
        panic!("arguments must be an object")
    };
    let result: CallToolResult = client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"));
    result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn rmcp_client_talks_to_mcp_test_server_through_the_stdio_bridge() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let spec = McpServer {
        env: BTreeMap::from([(
            "GREETING".to_owned(),
            EnvValue::plain("hello from the spec"),
        )]),
        ..McpServer::command(
            "stdio-server",
            common::test_server().await.display().to_string(),
            ["stdio"],
        )
    };
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    o.wait_until_running(&id, TIMEOUT).await.expect("running");
    let procs = common::recorded(o, &id);

    let client = connect(o, &id).await;
    let info = client.peer_info().expect("server info after initialize");
    assert!(
        info.server_info
            .as_ref()
            .is_some_and(|i| !i.name.is_empty()),
        "{info:?}"
    );
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(names.iter().any(|n| n == "echo"), "{names:?}");
    let greeting = call(&client, "env", serde_json::json!({ "name": "GREETING" })).await;
    assert!(greeting.contains("hello from the spec"), "{greeting}");

    // One client at a time: a second attach is refused while the first is connected.
    match o.attach_stdio(&id).await {
        Err(OrchestratorError::Unavailable { message, .. }) => {
            assert!(message.contains("another client is attached"), "{message}");
        }
        other => panic!("second attach: expected Unavailable(busy), got {other:?}"),
    }
    client.cancel().await.expect("closing the client");

    // The server outlives its client, and the bridge takes a new one once the old is gone.
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let again = loop {
        match o.attach_stdio(&id).await {
            Ok(stream) => break stream,
            Err(e) => {
                assert!(tokio::time::Instant::now() < deadline, "re-attach: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    drop(again);
    assert_eq!(
        o.get_status(&id).await.expect("status").phase,
        mcp_types::Phase::Running
    );

    // Protocol traffic is not logged (it is the client's); nothing else was printed on stdout.
    let logs = o.get_logs(&id, &LogOptions::default()).await.expect("logs");
    let lines: Vec<_> = futures::StreamExt::collect::<Vec<_>>(logs).await;
    for line in lines {
        let line = line.expect("line");
        assert!(
            line.stream == LogStream::Stderr && !line.text.contains("\"jsonrpc\""),
            "protocol traffic in the log: {line:?}"
        );
    }
    o.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    common::assert_gone(&procs).await;
}

/// `name` on PATH, else in the venv `cargo xtask` installs the Python tools into.
fn find_python_tool(name: &str) -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/python-tools/bin")
            .join(name);
        venv.is_file().then_some(venv)
    })
}

#[tokio::test]
async fn rmcp_client_talks_to_mcp_server_time_from_pypi() {
    let Some(program) = find_python_tool("mcp-server-time") else {
        assert!(
            std::env::var("MCPCTL_REQUIRE_PYTHON_MCP").as_deref() != Ok("1"),
            "mcp-server-time is not installed but MCPCTL_REQUIRE_PYTHON_MCP=1 \
             (`cargo xtask ci` installs it into target/python-tools)"
        );
        eprintln!(
            "skipping: mcp-server-time is not on PATH nor in target/python-tools \
             (pip install mcp-server-time, or run `cargo xtask ci`)"
        );
        return;
    };
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let spec = McpServer::command(
        "time",
        program.display().to_string(),
        ["--local-timezone", "UTC"],
    );
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    o.wait_until_running(&id, TIMEOUT).await.expect("running");
    let procs = common::recorded(o, &id);
    let client = connect(o, &id).await;
    let tools = client.list_all_tools().await.expect("tools/list");
    let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
    assert!(names.iter().any(|n| n == "get_current_time"), "{names:?}");
    let now = call(
        &client,
        "get_current_time",
        serde_json::json!({ "timezone": "UTC" }),
    )
    .await;
    assert!(now.contains("UTC"), "{now}");
    client.cancel().await.expect("closing the client");
    o.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    common::assert_gone(&procs).await;
}
