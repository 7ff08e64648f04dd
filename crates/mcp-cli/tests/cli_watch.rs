//! `mcp-orch ps --watch` on the process backend: one `mcp-orch` process watches while other
//! `mcp-orch` processes run and stop a server on the same state directory, so every event it
//! prints comes from another OS process's changes (through the state directory's notifications).

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Env, fixture_spec, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;

/// The watcher's stdout lines, read on a thread so the test can wait with a deadline.
struct Lines {
    rx: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Lines {
    fn new(stdout: ChildStdout) -> Self {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            rx,
            seen: Vec::new(),
        }
    }

    /// Waits (30 s at most) for a line satisfying `want`.
    fn until(&mut self, what: &str, want: impl Fn(&str) -> bool) -> String {
        loop {
            match self.rx.recv_timeout(Duration::from_secs(30)) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if want(&line) {
                        return line;
                    }
                }
                Err(e) => panic!("no line {what} ({e}); lines: {:#?}", self.seen),
            }
        }
    }
}

fn spawn_watch(env: &Env, args: &[&str]) -> Child {
    std::process::Command::new(assert_cmd::cargo::cargo_bin("mcp-orch"))
        .args(["--config", env.config.to_str().unwrap(), "ps", "--watch"])
        .args(args)
        .env("XDG_CONFIG_HOME", env.dir.path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn ps_watch_prints_events_of_other_processes_as_json_lines_and_a_table() {
    let env = Env::process();
    let spec = env.spec(
        "w.yaml",
        &fixture_spec("watched", &FixtureScript::new().stdout("up")),
    );
    let before = stdout_of(env.cmd(&["run", "--skip-ready", spec.to_str().unwrap()]));

    let mut json_child = spawn_watch(&env, &["-o", "json", "--server", "watched"]);
    let mut table_child = spawn_watch(&env, &[]);
    let mut json = Lines::new(json_child.stdout.take().unwrap());
    let mut table = Lines::new(table_child.stdout.take().unwrap());

    // The current state first: the instance running before the watch, then Synced.
    let first = json.until("Added (initial)", |l| l.contains("\"Added\""));
    let event: serde_json::Value = serde_json::from_str(&first).unwrap();
    assert_eq!(event["instance"]["id"], before.as_str(), "{first}");
    assert_eq!(event["instance"]["status"]["phase"], "Running", "{first}");
    json.until("Synced", |l| l == r#"{"type":"Synced"}"#);
    assert!(table.until("the header", |_| true).starts_with("EVENT"));
    table.until("-- synced --", |l| l == "-- synced --");

    // Another process starts one: Added, then seen Running.
    let id = stdout_of(env.cmd(&["run", "--skip-ready", spec.to_str().unwrap()]));
    json.until("Added of the new instance", |l| {
        l.contains("\"Added\"") && l.contains(&id)
    });
    json.until("the new instance Running", |l| {
        l.contains(&id) && l.contains("\"phase\":\"Running\"")
    });
    // And stops both: Removed for each.
    stdout_of(env.cmd(&["stop", &id, &before, "--grace", "2s"]));
    for gone in [&id, &before] {
        json.until("Removed", |l| {
            l.contains("\"Removed\"") && l.contains(gone.as_str())
        });
        table.until("Removed", |l| {
            l.starts_with("Removed") && l.contains(gone.as_str())
        });
    }
    for child in [&mut json_child, &mut table_child] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // Every JSON line is one event object, each instance's first one is Added.
    for line in &json.seen {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        assert!(event["type"].is_string(), "{line}");
    }
}

#[test]
fn ps_watch_refuses_a_bad_selector_before_watching() {
    let env = Env::process();
    let out = env
        .cmd(&["ps", "--watch", "-l", "bad key=x"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("--selector"), "{text}");
}
