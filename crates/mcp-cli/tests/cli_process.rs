//! `mcp-orch` end to end on the process backend: every subcommand, run as a real binary, and
//! the one-line errors for bad configs, specs and ids.

mod common;

use common::{Env, fixture_spec, one_line_error, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;

#[test]
fn run_ps_status_logs_stop() {
    let env = Env::process();
    let script = FixtureScript::new()
        .stdout("hello")
        .stderr("warned")
        .stdout_lines("n", 3);
    let spec = env.spec("srv.yaml", &fixture_spec("hello", &script));
    let id = stdout_of(env.cmd(&["run", spec.to_str().unwrap(), "--label", "team=cli"]));
    assert!(id.starts_with("mcp-hello-"), "{id}");

    let table = stdout_of(env.cmd(&["ps"]));
    assert!(table.lines().next().unwrap().starts_with("ID"), "{table}");
    assert!(table.contains(&id) && table.contains("Running"), "{table}");
    let json = stdout_of(env.cmd(&["ps", "-o", "json", "--server", "hello", "-l", "team=cli"]));
    let listed: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1, "{json}");
    assert_eq!(listed[0]["id"], id.as_str());
    let none = stdout_of(env.cmd(&["ps", "-o", "json", "-l", "team=other"]));
    assert_eq!(none, "[]");
    let yaml = stdout_of(env.cmd(&["status", &id, "-o", "yaml"]));
    assert!(yaml.contains("phase: Running"), "{yaml}");
    let table = stdout_of(env.cmd(&["status", &id]));
    assert!(
        table.contains("PHASE") && table.contains("Running"),
        "{table}"
    );

    // Wait for all five lines, then check tail, streams and timestamps.
    let mut all = String::new();
    for _ in 0..100 {
        all = stdout_of(env.cmd(&["logs", &id]));
        if all.lines().count() >= 4 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(all, "hello\nn-1\nn-2\nn-3", "stdout lines go to stdout");
    let err = env
        .cmd(&["logs", &id, "--stream", "stderr"])
        .assert()
        .success()
        .get_output()
        .stderr
        .clone();
    assert_eq!(String::from_utf8(err).unwrap().trim(), "warned");
    assert_eq!(
        stdout_of(env.cmd(&["logs", &id, "--tail", "2", "--stream", "stdout"])),
        "n-2\nn-3"
    );
    let stamped = stdout_of(env.cmd(&[
        "logs",
        &id,
        "--timestamps",
        "--tail",
        "1",
        "--stream",
        "stdout",
    ]));
    let (ts, text) = stamped.split_once(' ').unwrap();
    assert!(
        ts.parse::<jiff::Timestamp>().is_ok() && text == "n-3",
        "{stamped}"
    );
    assert_eq!(
        stdout_of(env.cmd(&[
            "logs", &id, "--since", "1h", "--stream", "stdout", "--tail", "1"
        ])),
        "n-3"
    );

    assert_eq!(stdout_of(env.cmd(&["stop", &id, "--grace", "5s"])), id);
    let line = one_line_error(&mut env.cmd(&["status", &id]));
    assert!(line.contains("not found"), "{line}");
    let line = one_line_error(&mut env.cmd(&["stop", &id]));
    assert!(line.contains("not found"), "{line}");
}

#[test]
fn run_attach_streams_until_the_server_exits() {
    let env = Env::process();
    let script = FixtureScript::new()
        .stdout("one")
        .sleep(std::time::Duration::from_millis(300))
        .stdout("two")
        .exit(3);
    let spec = env.spec("srv.yaml", &fixture_spec("attach", &script));
    let out = env
        .cmd(&["run", "--attach", spec.to_str().unwrap()])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines[0].starts_with("mcp-attach-"), "{stdout}");
    assert_eq!(&lines[1..], ["one", "two"], "{stdout}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("exit code 3"), "{stderr}");
    // The exited instance is still listed until stopped.
    let id = lines[0];
    assert!(stdout_of(env.cmd(&["ps"])).contains(id));
    stdout_of(env.cmd(&["stop", id]));
}

#[test]
fn run_reports_a_server_that_exits_at_once() {
    let env = Env::process();
    let spec = env.spec(
        "srv.yaml",
        &fixture_spec("crash", &FixtureScript::new().stderr("boom").exit(7)),
    );
    let out = env
        .cmd(&["run", spec.to_str().unwrap()])
        .assert()
        .failure()
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("exited before it was running") && stderr.contains("exit code 7"),
        "{stderr}"
    );
    assert!(
        stderr.contains("boom"),
        "the last output is shown: {stderr}"
    );
    let ids: serde_json::Value =
        serde_json::from_str(&stdout_of(env.cmd(&["ps", "-o", "json"]))).unwrap();
    for i in ids.as_array().unwrap() {
        stdout_of(env.cmd(&["stop", i["id"].as_str().unwrap()]));
    }
}

#[test]
fn invalid_specs_are_one_line_errors_with_file_and_field() {
    let env = Env::process();
    let cases = [
        ("name: Bad_Name\ncommand: [x]\n", "name"),
        (
            "name: ok\ncommand: [x]\nresources: { limits: { memory: 512MB } }\n",
            "resources.limits.memory",
        ),
        ("name: ok\ncommand: [x]\nport: 99999\n", "port"),
        ("name: ok\ncommand: [x]\nunknownField: 1\n", "unknown field"),
        ("name: ok\ncommand: [x]\ntransport: sse\n", "port"),
    ];
    for (yaml, field) in cases {
        let spec = env.spec("bad.yaml", yaml);
        let line = one_line_error(&mut env.cmd(&["run", spec.to_str().unwrap()]));
        assert!(
            line.contains("bad.yaml") && line.contains(field),
            "{yaml}: {line}"
        );
    }
    let line = one_line_error(&mut env.cmd(&["run", "/nonexistent/spec.yaml"]));
    assert!(line.contains("/nonexistent/spec.yaml"), "{line}");
    // Nothing was started.
    assert_eq!(stdout_of(env.cmd(&["ps", "-o", "json"])), "[]");
}

#[test]
fn bad_configs_are_one_line_errors_with_file_and_field() {
    let env = Env::process();
    let bad = env.spec(
        "bad-config.yaml",
        "orchestrator:\n  type: docker\n  docker: { network: \"bad name!\" }\n",
    );
    let line =
        one_line_error(env.bare_cmd(&["--config", bad.to_str().unwrap(), "config", "check"]));
    assert!(
        line.contains("bad-config.yaml") && line.contains("orchestrator.docker.network"),
        "{line}"
    );
    let unknown = env.spec("unknown.yaml", "orchestrator: { type: nomad }\n");
    let line = one_line_error(env.bare_cmd(&["--config", unknown.to_str().unwrap(), "ps"]));
    assert!(
        line.contains("orchestrator.type") && line.contains("nomad"),
        "{line}"
    );
    let line = one_line_error(&mut env.cmd(&["--backend", "podman", "ps"]));
    assert!(
        line.contains("--backend") && line.contains("podman"),
        "{line}"
    );
    let out = stdout_of(env.cmd(&["config", "check"]));
    assert!(out.contains("type: process"), "{out}");
}

#[test]
fn verbose_errors_show_the_cause_chain() {
    let env = Env::process();
    let ps = |verbose: bool| {
        let mut cmd = env.cmd(if verbose {
            &["--backend", "docker", "-v", "ps"][..]
        } else {
            &["--backend", "docker", "ps"][..]
        });
        cmd.env("MCPCTL_DOCKER_SOCKET", "/nonexistent/docker.sock");
        cmd
    };
    // Without -v: exactly one line.
    let line = one_line_error(ps(false));
    assert!(
        line.contains("unavailable") || line.contains("Unavailable") || line.contains("cannot"),
        "{line}"
    );
    assert!(line.contains("/nonexistent/docker.sock"), "{line}");
    // With -v: the same line, then the causes it does not show.
    let out = ps(true).assert().failure().get_output().clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().collect();
    let at = lines
        .iter()
        .position(|l| *l == line)
        .unwrap_or_else(|| panic!("-v changed the error line {line:?}:\n{stderr}"));
    let causes: Vec<&str> = lines[at + 1..]
        .iter()
        .map_while(|l| l.strip_prefix("  caused by: "))
        .collect();
    assert!(!causes.is_empty(), "-v shows no cause:\n{stderr}");
    assert!(
        causes
            .iter()
            .any(|c| c.contains("/nonexistent/docker.sock")),
        "{causes:?}"
    );
}

#[test]
fn manifests_render_without_a_cluster() {
    let env = Env::process();
    let spec = env.spec(
        "http.yaml",
        "name: web\nimage: ghcr.io/x/web:1\ntransport: streamable-http\nport: 8080\n",
    );
    let yaml = stdout_of(env.cmd(&["manifests", spec.to_str().unwrap(), "--namespace", "team-a"]));
    for needle in [
        "kind: Pod",
        "kind: Service",
        "kind: NetworkPolicy",
        "namespace: team-a",
        "runAsNonRoot: true",
    ] {
        assert!(yaml.contains(needle), "{needle} missing:\n{yaml}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::process();
    env.cmd(&["logs"]).assert().code(2);
    env.cmd(&["frobnicate"]).assert().code(2);
    let out = env
        .cmd(&["stop", "x", "--grace", "soon"])
        .assert()
        .code(2)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.starts_with("error: ") && stderr.contains("soon") && stderr.contains("10s"),
        "{stderr}"
    );
}
