//! Kit checks of `connect`: a real MCP client (rmcp) completes the protocol through the channel
//! a backend returns, for a stdio server and for an HTTP server; detach and re-attach; one stdio
//! client at a time; the documented errors for unknown, stopped and exited instances.

use std::time::Duration;

use mcp_types::{InstanceId, Phase, Transport};
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::{CheckResult, Failure, Harness, HttpConnect, Run, op, with_run};
use crate::connect::McpChannel;
use crate::error::OrchestratorError;
use crate::ext::OrchestratorExt;
use crate::fixture::{FIXTURE_HTTP_PATH, FixtureScript, ServeMode};

type Client = RunningService<RoleClient, ()>;

fn fail(check: &'static str, message: String) -> Failure {
    Failure { check, message }
}

/// A port nothing listens on right now (the OS picks it), for an HTTP server under test.
fn free_port(check: &'static str) -> Result<u16, Failure> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| fail(check, format!("finding a free port: {e}")))
}

/// Connects until the backend hands out the channel (a detached client may take a moment to be
/// released by the engine).
async fn connect_retrying(run: &Run<'_, '_>, id: &InstanceId) -> Result<McpChannel, Failure> {
    let deadline = tokio::time::Instant::now() + run.h.timeout;
    loop {
        match run.h.orchestrator.connect(id).await {
            Ok(channel) => return Ok(channel),
            Err(OrchestratorError::Unavailable { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(fail(run.check, format!("connect to {id}: {e}"))),
        }
    }
}

/// Handshake, `tools/list` (must offer `echo`) and `tools/call echo`, through `client`.
async fn exercise(check: &'static str, client: &Client, text: &str) -> CheckResult {
    let info = client.peer_info();
    if info
        .as_ref()
        .is_none_or(|i| i.server_info.as_ref().is_none_or(|s| s.name.is_empty()))
    {
        return Err(fail(
            check,
            format!("no server info after the handshake: {info:?}"),
        ));
    }
    let tools = client
        .list_all_tools()
        .await
        .map_err(|e| fail(check, format!("tools/list: {e}")))?;
    if !tools.iter().any(|t| t.name == "echo") {
        let names: Vec<_> = tools.iter().map(|t| t.name.to_string()).collect();
        return Err(fail(
            check,
            format!("tools/list has no echo tool: {names:?}"),
        ));
    }
    let mut args = serde_json::Map::new();
    args.insert("text".into(), text.into());
    let result: CallToolResult = client
        .call_tool(CallToolRequestParams::new("echo").with_arguments(args))
        .await
        .map_err(|e| fail(check, format!("tools/call echo: {e}")))?;
    let got: String = result
        .content
        .iter()
        .filter_map(|c| c.as_text().map(|t| t.text.clone()))
        .collect();
    if got != text {
        return Err(fail(check, format!("echo {text:?} answered {got:?}")));
    }
    Ok(())
}

/// Byte-exact: the first line the client reads after sending `initialize` is the server's
/// JSON-RPC answer to it (no greeting, banner or framing of the backend's own in front).
async fn raw_initialize(run: &Run<'_, '_>, id: &InstanceId, channel: McpChannel) -> CheckResult {
    const C: &str = "connect_stdio";
    let McpChannel::Stdio(stdio) = channel else {
        return Err(fail(
            C,
            format!("a stdio server's connect gave {channel:?}"),
        ));
    };
    let mut stdio = BufReader::new(stdio);
    let request = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "mcp-conformance-kit", "version": env!("CARGO_PKG_VERSION") }
        }
    });
    let exchange = async {
        stdio.write_all(format!("{request}\n").as_bytes()).await?;
        stdio.flush().await?;
        let mut line = String::new();
        stdio.read_line(&mut line).await?;
        Ok::<_, std::io::Error>(line)
    };
    let line = match tokio::time::timeout(run.h.timeout, exchange).await {
        Ok(Ok(line)) => line,
        Ok(Err(e)) => return Err(fail(C, format!("raw initialize with {id}: {e}"))),
        Err(_) => return Err(fail(C, format!("raw initialize with {id}: no answer"))),
    };
    let answer: Option<serde_json::Value> = serde_json::from_str(&line).ok();
    let ok = answer.as_ref().is_some_and(|a| {
        a["jsonrpc"] == "2.0" && a["id"] == 1 && a["result"]["protocolVersion"].is_string()
    });
    if !ok {
        return Err(fail(
            C,
            format!(
                "the first line read after a raw initialize must be the server's answer to it \
                 (the channel carries exactly the server's stdout), got {line:?}"
            ),
        ));
    }
    Ok(())
}

/// A real MCP session over a stdio channel.
async fn stdio_session(
    run: &Run<'_, '_>,
    id: &InstanceId,
    channel: McpChannel,
) -> Result<Client, Failure> {
    let McpChannel::Stdio(stdio) = channel else {
        return Err(fail(
            run.check,
            format!("a stdio server's connect gave {channel:?}"),
        ));
    };
    match tokio::time::timeout(run.h.timeout, ().serve(stdio)).await {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(fail(run.check, format!("MCP handshake with {id}: {e}"))),
        Err(_) => Err(fail(
            run.check,
            format!(
                "MCP handshake with {id} did not finish within {:?}",
                run.h.timeout
            ),
        )),
    }
}

async fn close(check: &'static str, client: Client) -> CheckResult {
    client
        .cancel()
        .await
        .map(drop)
        .map_err(|e| fail(check, format!("closing the MCP client: {e}")))
}

/// stdio: a real client completes the handshake, lists tools and calls one; a second client is
/// refused with `Unavailable` while the first is attached; after detaching, a new client (and
/// one after a client that vanished in the middle of a message) is served by the same running
/// server; a stopped instance is `NotFound`.
pub async fn connect_stdio(h: &Harness<'_>) -> CheckResult {
    const C: &str = "connect_stdio";
    with_run(h, C, |h, run| async move {
        let script = FixtureScript::new()
            .stderr("serving stdio")
            .serve(ServeMode::Stdio);
        let id = run.start(&run.name("stdio"), &script).await?;
        run.running(&id).await?;

        let channel = op(C, "connect", h.orchestrator.connect(&id).await)?;
        if channel.transport() != Transport::Stdio {
            return Err(fail(C, format!("transport of the channel: {channel:?}")));
        }
        raw_initialize(&run, &id, channel).await?;

        let client = stdio_session(&run, &id, connect_retrying(&run, &id).await?).await?;
        exercise(C, &client, "first client").await?;

        match h.orchestrator.connect(&id).await {
            Err(OrchestratorError::Unavailable { message, .. }) if !message.is_empty() => {}
            Err(e) => {
                return Err(fail(
                    C,
                    format!("a second client while one is attached: expected Unavailable, got {e}"),
                ));
            }
            Ok(channel) => {
                return Err(fail(
                    C,
                    format!(
                        "a second client while one is attached: expected Unavailable, got {channel:?}"
                    ),
                ));
            }
        }
        close(C, client).await?;

        let client = stdio_session(&run, &id, connect_retrying(&run, &id).await?).await?;
        exercise(C, &client, "after re-attach").await?;
        close(C, client).await?;

        // A client that disconnects in the middle of a message must not kill the server nor
        // leave half a message in front of the next client's handshake.
        let McpChannel::Stdio(mut stdio) = connect_retrying(&run, &id).await? else {
            return Err(fail(C, "connect gave a non-stdio channel".into()));
        };
        stdio
            .write_all(br#"{"jsonrpc":"2.0","id":7,"method":"tools/li"#)
            .await
            .map_err(|e| fail(C, format!("writing half a message: {e}")))?;
        drop(stdio);
        let client = stdio_session(&run, &id, connect_retrying(&run, &id).await?).await?;
        exercise(C, &client, "after a client vanished mid-message").await?;
        close(C, client).await?;
        let st = op(C, "status", h.orchestrator.get_status(&id).await)?;
        if st.phase != Phase::Running || st.restart_count != 0 {
            return Err(fail(
                C,
                format!("clients coming and going must leave the server running, got {st:?}"),
            ));
        }

        run.stop(&id).await?;
        match h.orchestrator.connect(&id).await {
            Err(OrchestratorError::NotFound { .. }) => Ok(()),
            other => Err(fail(
                C,
                format!("connect to a stopped instance: expected NotFound, got {other:?}"),
            )),
        }
    })
    .await
}

/// HTTP: the channel is the URL a client uses, path included; where the harness says it is
/// reachable from here, a real streamable-HTTP client completes the protocol through it.
pub async fn connect_http(h: &Harness<'_>) -> CheckResult {
    const C: &str = "connect_http";
    with_run(h, C, |h, run| async move {
        let port = free_port(C)?;
        let script = FixtureScript::new().serve(ServeMode::Http { port });
        let name = run.name("http");
        let mut spec = h.servers.server(&name, &script);
        spec.transport = Transport::StreamableHttp;
        spec.port = Some(port);
        let id = run.start_spec(&spec, &[]).await?;
        run.running(&id).await?;
        let channel = h.orchestrator.connect(&id).await;
        let url = match (h.http_connect, channel) {
            (HttpConnect::Unsupported, Err(OrchestratorError::NotSupported { .. })) => {
                return run.stop(&id).await;
            }
            (HttpConnect::Unsupported, other) => {
                return Err(fail(
                    C,
                    format!("the harness says HTTP connect is unsupported: expected NotSupported, got {other:?}"),
                ));
            }
            (_, Ok(McpChannel::Http(endpoint))) => {
                if endpoint.transport != Transport::StreamableHttp {
                    return Err(fail(C, format!("transport of {endpoint:?}")));
                }
                endpoint.url
            }
            (_, other) => {
                return Err(fail(C, format!("connect to an HTTP server: expected its URL, got {other:?}")));
            }
        };
        if !url.starts_with("http://") && !url.starts_with("https://") || !url.ends_with(FIXTURE_HTTP_PATH)
        {
            return Err(fail(C, format!("{url:?} is not an http(s) URL ending in {FIXTURE_HTTP_PATH}")));
        }
        if h.http_connect == HttpConnect::InEngineNetwork {
            if !url.contains(&format!(":{port}{FIXTURE_HTTP_PATH}")) {
                return Err(fail(C, format!("{url:?} does not name the server's port {port}")));
            }
            return run.stop(&id).await;
        }
        // The server may start listening a moment after the engine reports it running.
        let deadline = tokio::time::Instant::now() + h.timeout;
        let client = loop {
            let transport = StreamableHttpClientTransport::from_uri(url.clone());
            match tokio::time::timeout(h.timeout, ().serve(transport)).await {
                Ok(Ok(client)) => break client,
                Ok(Err(e)) if tokio::time::Instant::now() >= deadline => {
                    return Err(fail(C, format!("MCP handshake at {url}: {e}")));
                }
                Err(_) => return Err(fail(C, format!("MCP handshake at {url} timed out"))),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        };
        exercise(C, &client, "over http").await?;
        close(C, client).await?;
        // HTTP serves many clients: a second connect gives the same URL.
        let again = op(C, "connect again", h.orchestrator.connect(&id).await)?;
        match again {
            McpChannel::Http(e) if e.url == url => {}
            other => return Err(fail(C, format!("second connect: expected {url}, got {other:?}"))),
        }
        run.stop(&id).await
    })
    .await
}

/// Unknown ids are `NotFound`; an instance that has exited is `Unavailable`, not a dead stream.
pub async fn connect_refused(h: &Harness<'_>) -> CheckResult {
    const C: &str = "connect_refused";
    with_run(h, C, |h, run| async move {
        let unknown = InstanceId::new(mcp_types::new_instance_name("ct-never-started"));
        match h.orchestrator.connect(&unknown).await {
            Err(OrchestratorError::NotFound { .. }) => {}
            other => {
                return Err(fail(C, format!("connect to an unknown id: expected NotFound, got {other:?}")));
            }
        }
        let id = run
            .start(&run.name("exited"), &FixtureScript::new().stderr("bye").exit(0))
            .await?;
        op(
            C,
            "wait for the exit",
            h.orchestrator
                .wait_for(&id, h.timeout, "Succeeded", |s| s.phase.is_terminal())
                .await,
        )?;
        match h.orchestrator.connect(&id).await {
            Err(OrchestratorError::Unavailable { message, .. }) if message.contains(id.as_str()) => {}
            other => {
                return Err(fail(
                    C,
                    format!("connect to an exited instance: expected Unavailable naming it, got {other:?}"),
                ));
            }
        }
        run.stop(&id).await
    })
    .await
}
