//! `mcp-orch attach` as a client's server command: killing the attached CLI (as a client's
//! crash would) leaves the server running and re-attachable, and a second `attach` while one is
//! attached is refused with one clear line.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Env, stdout_of, test_server};

fn attach(env: &Env, id: &str) -> std::process::Child {
    Command::new(assert_cmd::cargo::cargo_bin("mcp-orch"))
        .args(["--config", env.config.to_str().unwrap(), "attach", id])
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawning mcp-orch attach")
}

/// Sends `initialize` through an attached CLI and returns the first line it prints.
fn initialize(child: &mut std::process::Child) -> String {
    let request = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"cli-test","version":"1"}}}"#;
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
fn killing_the_attached_cli_leaves_the_server_running_and_re_attachable() {
    let env = Env::process();
    let bin = test_server().display().to_string();
    let spec = env.spec(
        "stdio.yaml",
        &format!("name: attach-kill\ncommand: [{bin:?}]\nargs: [stdio]\n"),
    );
    let id = stdout_of(env.cmd(&["run", spec.to_str().unwrap()]));

    let mut first = attach(&env, &id);
    let answer = initialize(&mut first);
    assert!(
        answer.contains(r#""id":1"#) && answer.contains("protocolVersion"),
        "{answer:?}"
    );

    // While it is attached, a second attach is refused on one line, with exit code 1.
    let second = env.cmd(&["attach", &id]).output().unwrap();
    assert_eq!(second.status.code(), Some(1));
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(err.contains("another client is attached"), "{err}");
    assert!(second.stdout.is_empty());

    first.kill().unwrap();
    first.wait().unwrap();

    // The server runs on and takes the next client (the bridge may need a moment to notice).
    let deadline = Instant::now() + Duration::from_secs(20);
    let answer = loop {
        let mut again = attach(&env, &id);
        let answer = initialize(&mut again);
        again.kill().unwrap();
        let _ = again.wait();
        if !answer.is_empty() || Instant::now() > deadline {
            break answer;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        answer.contains(r#""id":1"#),
        "re-attach after a kill: {answer:?}"
    );
    let status = stdout_of(env.cmd(&["status", &id]));
    assert!(status.contains("Running"), "{status}");
    assert!(
        status.contains(&format!("mcp-orch attach {id}")),
        "{status}"
    );
    stdout_of(env.cmd(&["stop", &id, "--grace", "2s"]));
}

/// `run` waits for Ready by default: a server that runs but never answers MCP fails the run
/// with the reason and its recent logs, and nothing is left.
#[test]
fn run_fails_for_a_server_that_never_answers_mcp_and_leaves_nothing() {
    let env = Env::process();
    let script = mcp_factory::mcp_orchestrator_api::FixtureScript::new()
        .stderr("I only pretend to be an MCP server");
    let spec = env.spec("mute.yaml", &common::fixture_spec("mute", &script));
    let out = env
        .cmd(&["run", spec.to_str().unwrap(), "--timeout", "4s"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not answer MCP"), "{err}");
    assert!(
        err.contains("I only pretend to be an MCP server"),
        "recent logs: {err}"
    );
    let ps = stdout_of(env.cmd(&["ps", "-o", "json"]));
    assert_eq!(ps.trim(), "[]", "run left an instance: {ps}");
}
