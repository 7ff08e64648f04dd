//! The official MCP Python SDK (`mcp` 2.x from PyPI) through the gateway, on the process
//! backend: a stdio test server (one shared upstream session; the 2025 handshake and the
//! stateless 2026-07-28 revision; 16 concurrent clients each checking its own answers while
//! others abandon calls mid-request) and an HTTP test server (forwarded). Before it, without
//! Python: a stdio server killed under a client session is handshaken again after its restart,
//! and a stdio server that speaks only 2026-07-28 serves clients of every revision
//! (`support/stateless.rs`; with Python, also the SDK client in each of its modes).
//!
//! Its own `main` (no libtest harness): the program is also the backend's supervisor. Skips
//! without the SDK venv (`target/python-tools`) unless `MCPCTL_REQUIRE_PYTHON_MCP=1`.

#[path = "support/stateless.rs"]
mod stateless;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mcp_gateway::{CancellationToken, Gateway, GatewayConfig};
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode};
use mcp_orchestrator_api::{DynOrchestrator, McpChannel, McpOrchestrator, OrchestratorError};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{InstanceId, McpServer, Phase, RestartPolicy, StartOptions, Transport};
use rmcp::ServiceExt;
use serde_json::Value;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    if args.next().is_some_and(|a| a == "__supervise") {
        return mcp_process::supervisor::run(args);
    }
    // libtest-style filters and flags (`--nocapture`, a name) are accepted and ignored.
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(restart());
    println!("test restart_rehandshakes_and_never_gives_a_wrong_answer ... ok");
    let python = python();
    runtime.block_on(stateless::stateless_upstream(python.clone()));
    println!("test a_stdio_server_speaking_only_2026_07_28_serves_every_revision ... ok");
    let Some(python) = python else {
        return ExitCode::SUCCESS;
    };
    runtime.block_on(run(python));
    println!("test python_sdk_clients_through_the_gateway ... ok");
    ExitCode::SUCCESS
}

fn python() -> Option<PathBuf> {
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python-tools/bin/python");
    let has_sdk = std::process::Command::new(&venv)
        .args([
            "-c",
            "import mcp.client.streamable_http; from mcp import Client",
        ])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_sdk {
        return Some(venv);
    }
    assert!(
        std::env::var("MCPCTL_REQUIRE_PYTHON_MCP").as_deref() != Ok("1"),
        "MCPCTL_REQUIRE_PYTHON_MCP=1 but {} cannot import the MCP SDK",
        venv.display()
    );
    println!(
        "skipping: no MCP Python SDK at {} (`cargo xtask ci` installs it)",
        venv.display()
    );
    None
}

fn clients(python: &PathBuf, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/gateway_clients.py");
    let mut c = std::process::Command::new(python);
    c.arg(script).args(args);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    let out = c.output().expect("running the Python client");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python {args:?} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// The process backend over a fresh state directory, this program as its supervisor, and the
/// test server's path.
async fn backend() -> (tempfile::TempDir, Arc<ProcessOrchestrator>, String) {
    let server = tokio::task::spawn_blocking(mcp_test_server::static_binary)
        .await
        .expect("build task")
        .expect("building mcp-test-server");
    let state = tempfile::tempdir().expect("state dir");
    let config = ProcessConfig {
        supervisor_args: vec!["__supervise".into()],
        start_timeout_ms: 30_000,
        restart_backoff_initial_ms: 50,
        restart_backoff_max_ms: 400,
        ..ProcessConfig::new(state.path()).with_supervisor(std::env::current_exe().expect("exe"))
    };
    let orch = Arc::new(ProcessOrchestrator::new(config).expect("orchestrator"));
    (state, orch, server.display().to_string())
}

async fn start_gateway(orch: Arc<DynOrchestrator>) -> (Gateway, String, CancellationToken) {
    let gateway = Gateway::new(orch, GatewayConfig::default()).expect("gateway");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let stop = CancellationToken::new();
    let serving = gateway.clone();
    let token = stop.clone();
    tokio::spawn(async move { serving.serve_on(listener, token).await });
    (gateway, base, stop)
}

async fn post(url: &str, session: Option<&str>, body: &Value) -> (u16, Value, Option<String>) {
    let mut req = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .header("mcp-protocol-version", "2025-11-25")
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

/// A stdio server killed under a client: calls give an error or the right answer (never
/// another's), the gateway handshakes with the restarted server and the client's session goes
/// on.
async fn restart() {
    let (_state, orch, program) = backend().await;
    let spec = McpServer {
        restart_policy: RestartPolicy::Always,
        ..McpServer::command(
            "gw-restart",
            &program,
            FixtureScript::new().serve(ServeMode::Stdio).to_args(),
        )
    };
    let id = orch
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    let outcome = tokio::spawn(restart_inner(Arc::clone(&orch), id.clone())).await;
    orch.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn restart_inner(orch: Arc<ProcessOrchestrator>, id: InstanceId) {
    let dyn_orch: Arc<DynOrchestrator> = orch.clone();
    let (gateway, base, stop) = start_gateway(dyn_orch).await;
    gateway
        .wait_ready(&id, Duration::from_secs(30))
        .await
        .expect("ready");
    let url = format!("{base}/servers/{id}/mcp");
    let init = serde_json::json!({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}});
    let (status, _, session) = post(&url, None, &init).await;
    assert_eq!(status, 200);
    let session = session.expect("session id");
    let call = |n: u32| {
        serde_json::json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
        "params": {"name": "echo", "arguments": {"text": format!("call {n}")}}})
    };
    let (_, body, _) = post(&url, Some(&session), &call(1)).await;
    assert_eq!(body["result"]["content"][0]["text"], "call 1", "{body}");
    let before = orch
        .processes(&id)
        .expect("processes")
        .server
        .expect("server pid");
    std::process::Command::new("kill")
        .args(["-9", &before.pid.to_string()])
        .status()
        .expect("kill");
    let mut errors = 0;
    let mut answered = false;
    for n in 2..400 {
        let (_, body, _) = post(&url, Some(&session), &call(n)).await;
        assert_eq!(body["id"], n, "{body}");
        if body.get("error").is_some() {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        assert_eq!(
            body["result"]["content"][0]["text"],
            format!("call {n}"),
            "{body}"
        );
        answered = true;
        break;
    }
    assert!(answered, "no answer after the restart ({errors} errors)");
    let after = orch
        .processes(&id)
        .expect("processes")
        .server
        .expect("server pid");
    assert_ne!(before.pid, after.pid, "the server was restarted");
    gateway
        .wait_ready(&id, Duration::from_secs(30))
        .await
        .expect("ready again");
    stop.cancel();
    drop(gateway);
    // The gateway's handshake (its readiness probe) leaves the server usable by a client doing
    // its own handshake on the same stdio once the gateway has let go.
    let mut attempts = 0;
    let channel = loop {
        match orch.connect(&id).await {
            Ok(McpChannel::Stdio(channel)) => break channel,
            Ok(other) => panic!("{other:?}"),
            Err(e) => {
                assert!(matches!(e, OrchestratorError::Unavailable { .. }), "{e}");
                attempts += 1;
                assert!(
                    attempts < 100,
                    "the dropped gateway still holds the stdio: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let client = tokio::time::timeout(Duration::from_secs(10), ().serve(channel))
        .await
        .expect("handshake in time")
        .expect("a client's own handshake after the gateway's");
    let mut args = serde_json::Map::new();
    args.insert("text".into(), "direct".into());
    let result = client
        .call_tool(rmcp::model::CallToolRequestParams::new("echo").with_arguments(args))
        .await
        .expect("echo");
    let text: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    assert_eq!(text, "direct");
    client.cancel().await.expect("close");
}

async fn run(python: PathBuf) {
    let (_state, orch, program) = backend().await;
    let stdio_spec = McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            "gw-py-stdio",
            &program,
            FixtureScript::new().serve(ServeMode::Stdio).to_args(),
        )
    };
    let port = free_port();
    let mut http_spec = McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            "gw-py-http",
            &program,
            FixtureScript::new()
                .serve(ServeMode::Http { port })
                .to_args(),
        )
    };
    http_spec.transport = Transport::StreamableHttp;
    http_spec.port = Some(port);
    // A third-party stdio server: `mcp-server-time` from PyPI (the Python SDK's server side).
    let time_program = python
        .with_file_name("mcp-server-time")
        .display()
        .to_string();
    let time_spec = McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command("gw-py-time", &time_program, ["--local-timezone", "UTC"])
    };
    let stdio = orch
        .start_server(&stdio_spec, &StartOptions::default())
        .await
        .expect("start stdio");
    let time = orch
        .start_server(&time_spec, &StartOptions::default())
        .await
        .expect("start time");
    let http = orch
        .start_server(&http_spec, &StartOptions::default())
        .await
        .expect("start http");
    let outcome = tokio::spawn(exercise(
        python,
        Arc::clone(&orch),
        [stdio.clone(), http.clone(), time.clone()],
    ))
    .await;
    for id in [&stdio, &http, &time] {
        orch.stop_server(id, Duration::from_secs(5))
            .await
            .expect("stop");
    }
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

async fn running(orch: &ProcessOrchestrator, id: &InstanceId) {
    for _ in 0..300 {
        if orch.get_status(id).await.expect("status").phase == Phase::Running {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn exercise(python: PathBuf, orch: Arc<ProcessOrchestrator>, ids: [InstanceId; 3]) {
    let [stdio, http, time] = ids;
    for id in [&stdio, &http, &time] {
        running(&orch, id).await;
    }
    let dyn_orch: Arc<DynOrchestrator> = orch;
    let (gateway, base, stop) = start_gateway(dyn_orch).await;
    for id in [&stdio, &http] {
        let info = gateway
            .wait_ready(id, Duration::from_secs(30))
            .await
            .expect("ready");
        assert!(info.tool_count >= 3, "{info:?}");
    }
    let info = gateway
        .wait_ready(&time, Duration::from_secs(60))
        .await
        .expect("time server ready");
    assert_eq!(info.server_name, "mcp-time", "{info:?}");
    let time_url = format!("{base}/servers/{time}/mcp");
    let stdio_url = format!("{base}/servers/{stdio}/mcp");
    let http_url = format!("{base}/servers/{http}/mcp");
    let python2 = python.clone();
    let (s, h) = (stdio_url.clone(), http_url.clone());
    let checks = tokio::task::spawn_blocking(move || {
        for (url, mode, want_protocol) in [
            (&s, "legacy", "2025-11-25"),
            (&s, "auto", "2026-07-28"),
            (&s, "2026-07-28", "2026-07-28"),
            (&h, "legacy", "2025-11-25"),
            (&h, "auto", ""),
        ] {
            let text = format!("through the gateway ({mode})");
            let out = clients(&python2, &["one", url, &text, mode]);
            assert_eq!(out["text"], text, "{url} {mode}: {out}");
            assert!(
                out["tools"]
                    .as_array()
                    .is_some_and(|t| t.contains(&Value::from("echo"))),
                "{out}"
            );
            if !want_protocol.is_empty() {
                assert_eq!(out["protocol"], want_protocol, "{url} {mode}: {out}");
            }
        }
        for mode in ["legacy", "auto"] {
            let out = clients(
                &python2,
                &[
                    "call",
                    &time_url,
                    "get_current_time",
                    r#"{"timezone": "UTC"}"#,
                    mode,
                ],
            );
            assert_eq!(out["is_error"], false, "{out}");
            assert!(
                out["text"]
                    .as_str()
                    .is_some_and(|t| t.contains("\"timezone\": \"UTC\"")
                        || t.contains("\"timezone\":\"UTC\"")),
                "{out}"
            );
        }
        clients(&python2, &["many", &s, "16", "20"])
    })
    .await
    .expect("python clients");
    assert_eq!(checks["clients"], 16, "{checks}");
    assert_eq!(checks["wrong"], Value::Array(Vec::new()), "{checks}");
    // After all that, the shared session still answers a fresh client.
    let out = tokio::task::spawn_blocking(move || {
        clients(&python, &["one", &stdio_url, "still fine", "legacy"])
    })
    .await
    .expect("python");
    assert_eq!(out["text"], "still fine");
    let listing: Value = reqwest::get(format!("{base}/servers"))
        .await
        .expect("listing")
        .json()
        .await
        .expect("json");
    let rows = listing["instances"].as_array().expect("rows");
    for id in [&stdio, &http] {
        let row = rows
            .iter()
            .find(|r| r["id"] == id.to_string())
            .expect("listed");
        assert_eq!(row["readiness"]["state"], "ready", "{row}");
    }
    println!(
        "python_sdk: 16 clients, abandoned calls: {}",
        checks["abandoned"]
    );
    stop.cancel();
}
