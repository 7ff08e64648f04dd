//! A real rmcp client talks to `mcp-test-server stdio` through rmcp's child-process transport.

use std::process::Stdio;

use rmcp::ServiceExt;
use rmcp::transport::{ConfigureCommandExt, TokioChildProcess};
use tokio::process::Command;

use crate::common::{BIN, TIMEOUT, assert_gone, exercise};

#[tokio::test]
async fn stdio_initialize_list_and_call_tools() {
    let cmd = Command::new(BIN).configure(|c| {
        c.arg("stdio")
            .env("MCP_TEST_STDIO_VAR", "from the parent")
            .stderr(Stdio::null());
    });
    let transport = TokioChildProcess::new(cmd).expect("spawning the server");
    let pid = transport.id().expect("child pid");
    let client = tokio::time::timeout(TIMEOUT, ().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize");

    exercise(&client, ("MCP_TEST_STDIO_VAR", "from the parent")).await;

    // Closing the client closes the server's stdin; the server must exit on its own and the
    // transport reaps it.
    client.cancel().await.expect("closing the client");
    assert_gone(pid);
}
