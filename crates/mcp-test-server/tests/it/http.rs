//! A real rmcp client talks to `mcp-test-server http` over streamable HTTP on 127.0.0.1.

use std::time::{Duration, Instant};

use rmcp::ServiceExt;
use rmcp::transport::StreamableHttpClientTransport;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{BIN, TIMEOUT, command, exercise, reap, sigterm, wait_exit};

/// A port nobody listens on right now (the OS picks it).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("binding an ephemeral port")
        .port()
}

#[tokio::test]
async fn http_initialize_list_call_and_sigterm() {
    let port = free_port();
    let args = ["http", "--host", "127.0.0.1", "--port", &port.to_string()].map(String::from);
    let mut child = command(BIN.as_ref(), &args)
        .env("MCP_TEST_HTTP_VAR", "over http")
        .spawn()
        .expect("spawning the server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(TIMEOUT, stdout.next_line())
        .await
        .expect("no listening line in time")
        .expect("reading stdout");
    assert_eq!(
        first.as_deref(),
        Some(format!("listening on 127.0.0.1:{port}").as_str())
    );

    let transport = StreamableHttpClientTransport::from_uri(format!("http://127.0.0.1:{port}/mcp"));
    let client = tokio::time::timeout(TIMEOUT, ().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize");
    exercise(&client, ("MCP_TEST_HTTP_VAR", "over http")).await;

    // Stop the server while the client still holds its session (and event stream) open: it
    // must still exit 0 within a grace period.
    let stopping = Instant::now();
    sigterm(&child).await;
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "took {:?}",
        stopping.elapsed()
    );
    drop(client);
    reap(child).await;
}

#[tokio::test]
async fn http_port_zero_reports_the_bound_port() {
    let args = ["http", "--host", "127.0.0.1", "--port", "0"].map(String::from);
    let mut child = command(BIN.as_ref(), &args)
        .spawn()
        .expect("spawning the server");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let first = tokio::time::timeout(TIMEOUT, stdout.next_line())
        .await
        .expect("no listening line in time")
        .expect("reading stdout")
        .expect("stdout closed");
    let port: u16 = first
        .strip_prefix("listening on 127.0.0.1:")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected line {first:?}"));
    assert_ne!(port, 0);

    let transport = StreamableHttpClientTransport::from_uri(format!("http://127.0.0.1:{port}/mcp"));
    let client = tokio::time::timeout(TIMEOUT, ().serve(transport))
        .await
        .expect("initialize timed out")
        .expect("initialize");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert_eq!(tools.len(), 3);
    client.cancel().await.expect("closing the client");

    // Idle server, no client: SIGTERM is quick.
    let stopping = Instant::now();
    sigterm(&child).await;
    assert_eq!(wait_exit(&mut child).await.code(), Some(0));
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "took {:?}",
        stopping.elapsed()
    );
    reap(child).await;
}
