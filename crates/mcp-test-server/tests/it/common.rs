//! Shared helpers: the dev binary, child processes that are always reaped, MCP client checks.

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use tokio::process::{Child, Command};

/// The binary cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_mcp-test-server");

/// Longest wait for anything a child does.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(20);

/// `program args...` with piped stdout/stderr, null stdin, killed when dropped.
pub(crate) fn command(program: &Path, args: &[String]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Kills (if still running) and reaps `child`, then checks its pid is gone.
pub(crate) async fn reap(mut child: Child) {
    let pid = child.id();
    let _ = child.start_kill();
    tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("child did not die after SIGKILL")
        .expect("wait failed");
    if let Some(pid) = pid {
        assert_gone(pid);
    }
}

/// The process `pid` no longer exists (exited and reaped).
pub(crate) fn assert_gone(pid: u32) {
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "process {pid} is still around"
    );
}

/// Waits for `child` to exit on its own.
pub(crate) async fn wait_exit(child: &mut Child) -> ExitStatus {
    tokio::time::timeout(TIMEOUT, child.wait())
        .await
        .expect("child did not exit in time")
        .expect("wait failed")
}

/// Sends SIGTERM to `child` via `kill(1)` (the crate forbids unsafe, so no libc call).
pub(crate) async fn sigterm(child: &Child) {
    let pid = child.id().expect("child already reaped");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("running kill");
    assert!(status.success(), "kill -TERM {pid} failed");
}

/// Calls `tool` with JSON `args` and returns the result.
pub(crate) async fn call(
    client: &RunningService<RoleClient, ()>,
    tool: &'static str,
    args: serde_json::Value,
) -> CallToolResult {
    let serde_json::Value::Object(args) = args else {
        panic!("tool arguments must be an object")
    };
    client
        .call_tool(CallToolRequestParams::new(tool).with_arguments(args))
        .await
        .unwrap_or_else(|e| panic!("tools/call {tool}: {e}"))
}

/// The text of a single-text-block tool result.
pub(crate) fn text(result: &CallToolResult) -> String {
    assert_eq!(result.content.len(), 1, "{result:?}");
    result.content[0]
        .as_text()
        .unwrap_or_else(|| panic!("not text: {result:?}"))
        .text
        .clone()
}

/// The MCP exchange both transports must support: initialize (done by `serve`), server info,
/// tools/list, and calls to every tool. `env_var` = (name, value) set in the server's env.
pub(crate) async fn exercise(client: &RunningService<RoleClient, ()>, env_var: (&str, &str)) {
    let info = client.peer_info().expect("initialize result");
    assert_eq!(
        info.server_info.as_ref().map(|i| i.name.as_str()),
        Some("mcp-test-server")
    );

    let tools = client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort_unstable();
    assert_eq!(names, ["add", "echo", "env"]);

    let echoed = call(client, "echo", serde_json::json!({ "text": "hello, MCP" })).await;
    assert_eq!(text(&echoed), "hello, MCP");
    assert_ne!(echoed.is_error, Some(true));

    let sum = call(client, "add", serde_json::json!({ "a": 40, "b": 2 })).await;
    assert_eq!(text(&sum), "42");
    let overflow = call(client, "add", serde_json::json!({ "a": i64::MAX, "b": 1 })).await;
    assert_eq!(overflow.is_error, Some(true), "{overflow:?}");

    let (name, value) = env_var;
    let env = call(client, "env", serde_json::json!({ "name": name })).await;
    assert_eq!(text(&env), value);
    let unset = call(
        client,
        "env",
        serde_json::json!({ "name": "MCP_TEST_SERVER_SURELY_UNSET" }),
    )
    .await;
    assert_eq!(unset.is_error, Some(true), "{unset:?}");
}
