//! `mcp-orch` end to end on the process backend: every subcommand, run as a real binary, and
//! the one-line errors for bad configs, specs and ids.

mod common;

use common::{Env, fixture_spec, one_line_error, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;
use mcp_factory::mcp_orchestrator_api::fixture::ServeMode;

#[test]
fn run_ps_status_logs_stop() {
    let env = Env::process();
    let script = FixtureScript::new()
        .stdout("hello")
        .stderr("warned")
        .stdout_lines("n", 3);
    let spec = env.spec("srv.yaml", &fixture_spec("hello", &script));
    let id = stdout_of(env.cmd(&[
        "run",
        "--skip-ready",
        spec.to_str().unwrap(),
        "--label",
        "team=cli",
    ]));
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
        .cmd(&["run", "--skip-ready", "--attach", spec.to_str().unwrap()])
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
        .cmd(&["run", "--skip-ready", spec.to_str().unwrap()])
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
        let line = one_line_error(&mut env.cmd(&["run", "--skip-ready", spec.to_str().unwrap()]));
        assert!(
            line.contains("bad.yaml") && line.contains(field),
            "{yaml}: {line}"
        );
    }
    let line = one_line_error(&mut env.cmd(&["run", "--skip-ready", "/nonexistent/spec.yaml"]));
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

/// The ids of every instance the backend lists.
fn listed(env: &Env) -> Vec<String> {
    let json = stdout_of(env.cmd(&["ps", "-o", "json"]));
    let items: serde_json::Value = serde_json::from_str(&json).unwrap();
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_owned())
        .collect()
}

/// A fixture spec under the default restart policy (`Always`): a failing server restarts forever.
fn restarting_spec(name: &str, script: &FixtureScript) -> String {
    fixture_spec(name, script).replace("restartPolicy: Never\n", "")
}

/// Issue #14, item 1: each way `run` fails stops and removes what it started, says so, and
/// leaves nothing listed.
#[test]
fn failed_runs_stop_and_remove_what_they_started() {
    let env = Env::process();
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let cases = [
        (
            "exits",
            restarting_spec("exits", &FixtureScript::new().stderr("boom").exit(3)),
            "exit code 3",
        ),
        (
            "busy",
            format!(
                "{}transport: streamable-http\nport: {port}\n",
                restarting_spec(
                    "busy",
                    &FixtureScript::new().serve(ServeMode::Http { port })
                )
            ),
            "Address already in use",
        ),
        (
            "long",
            restarting_spec("long", &FixtureScript::new().stdout("x".repeat(200_000))),
            "Argument list too long",
        ),
    ];
    for (name, yaml, why) in cases {
        let spec = env.spec(&format!("{name}.yaml"), &yaml);
        let out = env
            .cmd(&[
                "run",
                "--skip-ready",
                spec.to_str().unwrap(),
                "--timeout",
                "30s",
                "--grace",
                "2s",
            ])
            .assert()
            .code(1)
            .get_output()
            .clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(stderr.contains(why), "{name}: {stderr}");
        let id = stderr
            .split_whitespace()
            .find(|w| w.starts_with(&format!("mcp-{name}-")))
            .map_or_else(
                || panic!("{name}: no id in {stderr}"),
                |w| w.trim_end_matches(':').to_owned(),
            );
        assert!(
            stderr.contains(&format!("stopping and removing {id}"))
                && stderr.contains(&format!("removed {id}")),
            "{name}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "no id on stdout for a failed run");
        assert_eq!(listed(&env), Vec::<String>::new(), "{name}: left behind");
    }
    // A memory limit no engine can start is refused before anything starts, naming the minimum.
    let spec = env.spec(
        "tiny.yaml",
        &format!(
            "{}resources: {{ limits: {{ memory: 1Ki }} }}\n",
            restarting_spec("tiny", &FixtureScript::new())
        ),
    );
    let line = one_line_error(&mut env.cmd(&["run", "--skip-ready", spec.to_str().unwrap()]));
    assert!(
        line.contains("tiny.yaml")
            && line.contains("resources.limits.memory")
            && line.contains("6Mi"),
        "{line}"
    );
    assert_eq!(listed(&env), Vec::<String>::new());
    drop(busy);
}

#[test]
fn keep_on_failure_keeps_the_instance_and_says_how_to_stop_it() {
    let env = Env::process();
    let spec = env.spec(
        "srv.yaml",
        &restarting_spec("kept", &FixtureScript::new().exit(3)),
    );
    let out = env
        .cmd(&[
            "run",
            "--skip-ready",
            spec.to_str().unwrap(),
            "--keep-on-failure",
        ])
        .assert()
        .code(1)
        .get_output()
        .clone();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let ids = listed(&env);
    assert_eq!(ids.len(), 1, "{stderr}");
    let id = &ids[0];
    assert!(
        stderr.contains(&format!(
            "kept {id} for debugging (--keep-on-failure); stop it with `mcp-orch stop {id}`"
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("removed"), "{stderr}");
    assert_eq!(stdout_of(env.cmd(&["stop", id, "--grace", "2s"])), *id);
    assert_eq!(listed(&env), Vec::<String>::new());
}

/// Ctrl-C while `run` waits for the server stops it and names it.
#[test]
fn ctrl_c_during_run_stops_the_instance() {
    use std::io::{BufRead as _, BufReader};
    let env = Env::process();
    let spec = env.spec("srv.yaml", &restarting_spec("intr", &FixtureScript::new()));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("mcp-orch"))
        .args([
            "--config",
            env.config.to_str().unwrap(),
            "run",
            "--skip-ready",
        ])
        .arg(&spec)
        .args(["--settle", "10m", "--grace", "2s"])
        .env("XDG_CONFIG_HOME", env.dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    // Wait until the server runs (run then waits for the settle period), then interrupt.
    while !seen.contains(": Running") {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "run ended: {seen}"
        );
        seen.push_str(&line);
    }
    let ids = listed(&env);
    assert_eq!(ids.len(), 1, "{seen}");
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "{seen}{rest}");
    let id = &ids[0];
    assert!(
        rest.contains(&format!("interrupted before {id} was running"))
            && rest.contains(&format!("removed {id}")),
        "{seen}{rest}"
    );
    assert_eq!(listed(&env), Vec::<String>::new());
}

/// Issue #14, exit codes: 0 ok, 1 the operation failed, 2 the command line is wrong.
#[test]
fn exit_codes_are_stable() {
    let env = Env::process();
    let spec = env.spec("srv.yaml", &fixture_spec("codes", &FixtureScript::new()));
    let spec = spec.to_str().unwrap();
    let usage: [&[&str]; 7] = [
        &["run", "--skip-ready", spec, "--env", "NOVALUE"],
        &["run", "--skip-ready", spec, "--label", "novalue"],
        &["ps", "--phase", "Sleeping"],
        &["ps", "-l", "team in"],
        &["logs", "x", "--since", "yesterday"],
        &["logs", "x", "--since", "999999999999h"],
        &["--backend", "podman", "ps"],
    ];
    for args in usage {
        let out = env.cmd(args).assert().code(2).get_output().clone();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.starts_with("error: ") && stderr.trim().lines().count() == 1,
            "{args:?}: {stderr}"
        );
    }
    let line = one_line_error(&mut env.cmd(&["logs", "x", "--since", "999999999999h"]));
    assert!(
        line.contains("--since \"999999999999h\": reaches before the earliest supported time"),
        "{line}"
    );
    // Failed operations: 1.
    env.cmd(&["status", "mcp-nothing-0000000000"])
        .assert()
        .code(1);
    env.cmd(&["stop", "mcp-nothing-0000000000"])
        .assert()
        .code(1);
    env.cmd(&["run", "--skip-ready", "/nonexistent/spec.yaml"])
        .assert()
        .code(1);
    let line = one_line_error(&mut env.cmd(&["run", "--skip-ready", "/nonexistent/spec.yaml"]));
    assert!(line.contains("cannot read spec file"), "{line}");
    // Success: 0, nothing left over.
    env.cmd(&["ps"]).assert().code(0);
    assert_eq!(listed(&env), Vec::<String>::new());
}

/// The help and the README say the same about exit codes and about which runs `logs` shows.
#[test]
fn help_and_readme_agree_on_exit_codes_and_logs() {
    let env = Env::process();
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let help = stdout_of(env.cmd(&["--help"]));
    assert!(
        help.contains("Exit codes: 0 done, 1 the operation failed, 2 the command line is wrong."),
        "{help}"
    );
    for row in [
        "| 0 | the command did what was asked |",
        "| 1 | the operation failed",
        "| 2 | the command line is wrong",
    ] {
        assert!(readme.contains(row), "README lacks {row:?}");
    }
    let logs = stdout_of(env.cmd(&["logs", "--help"]));
    let logs = logs.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        logs.contains("the current run on the process and Kubernetes backends")
            && logs.contains("every run on Docker")
            && logs.contains("The run before the last restart (process, Kubernetes)"),
        "{logs}"
    );
    for row in [
        "| process | the current run | the run before the last restart |",
        "| kubernetes | the current run (container) | the run before the last restart",
        "| docker | every run, in order",
    ] {
        assert!(readme.contains(row), "README lacks {row:?}");
    }
    let run = stdout_of(env.cmd(&["run", "--help"]));
    assert!(run.contains("--keep-on-failure"), "{run}");
    assert!(readme.contains("--keep-on-failure"));
}

/// Issue #14, item 3: a YAML syntax error in a spec never prints the source line holding an
/// environment value, at any log level and with `-v`.
#[test]
fn yaml_errors_never_print_env_values() {
    const SECRET: &str = "ghp_cli5ecretvalue";
    let env = Env::process();
    let specs = [
        format!("name: a\ncommand: [x]\nenv:\n  TOKEN: {SECRET}\n  B: [unclosed\n"),
        format!("name: a\ncommand: [x]\nenv:\n  TOKEN: {SECRET}\n  TOKEN: again\n"),
        format!("name: a\ncommand: [x]\nenv:\n  TOKEN: \"{SECRET}\n"),
    ];
    for (i, yaml) in specs.iter().enumerate() {
        let spec = env.spec(&format!("s{i}.yaml"), yaml);
        for verbose in [false, true] {
            let mut cmd = env.cmd(&["run", "--skip-ready", spec.to_str().unwrap()]);
            if verbose {
                cmd.arg("-v");
            }
            let out = cmd
                .env("RUST_LOG", "trace")
                .assert()
                .code(1)
                .get_output()
                .clone();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains(SECRET), "{yaml}: the value leaked:\n{all}");
            assert!(
                all.contains(&format!("s{i}.yaml: not valid YAML: ")),
                "{all}"
            );
        }
    }
    assert_eq!(listed(&env), Vec::<String>::new());
}
