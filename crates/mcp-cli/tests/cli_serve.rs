//! `mcp-orch serve`: the gateway in front of the process backend, as a user runs it.

mod common;

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::{Env, fixture_spec, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;
use mcp_factory::mcp_orchestrator_api::fixture::ServeMode;

/// One HTTP/1.1 exchange on loopback; returns the status and the body.
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        let _ = write!(request, "{k}: {v}\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = String::new();
    stream.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

struct Serving(Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let env = Env::process();
    let out = env
        .cmd(&["serve", "--listen", "0.0.0.0:0"])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("without a bearer token"), "{stderr}");
    let empty = env.dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    let out = env
        .cmd(&["serve", "--token-file", empty.to_str().unwrap()])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("is empty") && stderr.contains("token"),
        "{stderr}"
    );
}

#[test]
fn serve_makes_a_running_stdio_server_reachable_over_http_with_a_token() {
    let env = Env::process();
    let spec = env.spec(
        "srv.yaml",
        &fixture_spec("served", &FixtureScript::new().serve(ServeMode::Stdio)),
    );
    let id = stdout_of(env.cmd(&["run", spec.to_str().unwrap()]));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!("127.0.0.1:{port}");
    let mut serve = std::process::Command::new(assert_cmd::cargo::cargo_bin("mcp-orch"));
    serve
        .args([
            "--config",
            env.config.to_str().unwrap(),
            "serve",
            "--listen",
            &listen,
        ])
        .args([
            "--token-env",
            "GATEWAY_TEST_TOKEN",
            "--ping-interval",
            "200ms",
        ])
        .env("GATEWAY_TEST_TOKEN", "let-me-in")
        .env("XDG_CONFIG_HOME", env.dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let serving = Serving(serve.spawn().expect("mcp-orch serve"));
    let auth = [("Authorization", "Bearer let-me-in")];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listing = TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| http(port, "GET", "/servers", &auth, ""));
        if let Some((200, body)) = &listing {
            let v: serde_json::Value = serde_json::from_str(body).unwrap();
            let row = v["instances"]
                .as_array()
                .and_then(|r| r.iter().find(|r| r["id"] == id.as_str()).cloned());
            if row
                .as_ref()
                .is_some_and(|r| r["readiness"]["state"] == "ready")
            {
                assert_eq!(row.unwrap()["url"], format!("/servers/{id}/mcp"));
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "not ready through mcp-orch serve: {listing:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (status, _) = http(port, "GET", "/servers", &[], "");
    assert_eq!(status, 401, "the token is required");
    let call = r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{"text":"via serve"},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}}}"#;
    let (status, body) = http(
        port,
        "POST",
        &format!("/servers/{id}/mcp"),
        &[
            auth[0],
            ("Content-Type", "application/json"),
            ("Accept", "application/json"),
            ("MCP-Protocol-Version", "2026-07-28"),
        ],
        call,
    );
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["result"]["content"][0]["text"], "via serve", "{v}");
    drop(serving);
    stdout_of(env.cmd(&["stop", &id]));
}
