//! `mcp-orch ps` READY and PROTOCOL columns, from a live MCP probe of each running instance
//! through `connect` (real servers on the process backend): a stdio and an HTTP server that
//! answer show `yes` and their protocol version, a server that never answers MCP shows `no`, a
//! stdio server with a client attached shows `busy` (never a false answer), and the probe leaves
//! the stdio free for the client that connects next.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, stdout_of, test_server};
use mcp_factory::mcp_orchestrator_api::FixtureScript;

/// `ps` as rows of `column -> cell`, keyed by instance id.
fn ps(env: &Env) -> Vec<std::collections::HashMap<String, String>> {
    let table = stdout_of(env.cmd(&["ps", "--probe-timeout", "5s"]));
    let mut lines = table.lines();
    let header: Vec<String> = lines
        .next()
        .expect("a header line")
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header[..5],
        ["ID", "SERVER", "PHASE", "READY", "PROTOCOL"],
        "{table}"
    );
    lines
        .map(|l| {
            header
                .iter()
                .cloned()
                .zip(l.split_whitespace().map(str::to_owned))
                .collect()
        })
        .collect()
}

fn row<'a>(
    rows: &'a [std::collections::HashMap<String, String>],
    id: &str,
) -> &'a std::collections::HashMap<String, String> {
    rows.iter()
        .find(|r| r["ID"] == id)
        .unwrap_or_else(|| panic!("{id} not listed: {rows:?}"))
}

fn attach(env: &Env, id: &str) -> std::process::Child {
    Command::new(assert_cmd::cargo::cargo_bin("mcp-orch"))
        .args(["--config", env.config.to_str().unwrap(), "attach", id])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning mcp-orch attach")
}

fn initialize(child: &mut std::process::Child) -> String {
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"ps-test","version":"1"}}}"#;
    let stdin = child.stdin.as_mut().unwrap();
    writeln!(stdin, "{request}").unwrap();
    stdin.flush().unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    line
}

#[test]
fn ps_shows_live_readiness_and_protocol_per_instance() {
    let env = Env::process();
    let bin = test_server().display().to_string();
    let stdio_spec = env.spec(
        "stdio.yaml",
        &format!("name: ps-stdio\ncommand: [{bin:?}]\nargs: [stdio]\n"),
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let http_spec = env.spec(
        "http.yaml",
        &format!(
            "name: ps-http\ncommand: [{bin:?}]\nargs: [http, --port, \"{port}\", --host, 127.0.0.1]\n\
             transport: streamable-http\nport: {port}\n"
        ),
    );
    let mute_spec = env.spec(
        "mute.yaml",
        &common::fixture_spec("ps-mute", &FixtureScript::new().stderr("not MCP")),
    );
    let stdio = stdout_of(env.cmd(&["run", stdio_spec.to_str().unwrap()]));
    let http = stdout_of(env.cmd(&["run", http_spec.to_str().unwrap()]));
    let mute = stdout_of(env.cmd(&["run", "--skip-ready", mute_spec.to_str().unwrap()]));

    let rows = ps(&env);
    for id in [&stdio, &http] {
        let r = row(&rows, id);
        assert_eq!(r["PHASE"], "Running", "{r:?}");
        assert_eq!(r["READY"], "yes", "{r:?}");
        assert!(r["PROTOCOL"].starts_with("20"), "{r:?}");
    }
    let r = row(&rows, &mute);
    assert_eq!(
        (r["READY"].as_str(), r["PROTOCOL"].as_str()),
        ("no", "-"),
        "{r:?}"
    );

    // The probe let go of the stdio: a client attaches and its own handshake works.
    let mut client = attach(&env, &stdio);
    let answer = initialize(&mut client);
    assert!(answer.contains(r#""id":1"#), "{answer:?}");
    // While it is attached, ps says busy rather than guessing.
    let r = ps(&env).into_iter().find(|r| r["ID"] == stdio).unwrap();
    assert_eq!(
        (r["READY"].as_str(), r["PROTOCOL"].as_str()),
        ("busy", "-"),
        "{r:?}"
    );
    client.kill().unwrap();
    let _ = client.wait();
    // Once it is gone (the bridge may need a moment to notice), ready again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = ps(&env).into_iter().find(|r| r["ID"] == stdio).unwrap();
        if r["READY"] == "yes" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {r:?} after the client left"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // --no-probe leaves both columns `-` and touches nothing.
    let table = stdout_of(env.cmd(&["ps", "--no-probe"]));
    let line = table.lines().find(|l| l.starts_with(&stdio)).unwrap();
    let cells: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(cells[3..5], ["-", "-"], "{table}");

    stdout_of(env.cmd(&["stop", &stdio, &http, &mute, "--grace", "2s"]));
    let left = stdout_of(env.cmd(&["ps", "-o", "json"]));
    assert_eq!(left.trim(), "[]", "{left}");
}
