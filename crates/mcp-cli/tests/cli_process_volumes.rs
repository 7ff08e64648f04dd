//! `mcp-orch volumes ls|rm` and `mcp-orch gc [--dry-run]` on the process backend, run as the
//! real binary: a persistent volume kept across two runs of a server, listed with its user,
//! refused for removal while mounted, removed once unused; an orphaned instance (its
//! supervisor killed) reported by a dry run and removed by a real collection.

mod common;

use std::time::Duration;

use common::{Env, fixture_spec, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;
use mcp_factory::mcp_orchestrator_api::fixture::{missing_line, write_line};

/// Polls `mcp-orch logs ID` until it has `count` lines.
fn log_lines(env: &Env, id: &str, count: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = stdout_of(env.cmd(&["logs", id]))
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= count {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    lines
}

fn json(env: &Env, args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&stdout_of(env.cmd(args))).expect("json output")
}

#[test]
fn volumes_ls_and_rm_around_two_runs_of_a_server() {
    let env = Env::process();
    let file = "/mcp-cli-test-keep/notes";
    let script = FixtureScript::new()
        .print_file(file)
        .write_file(file, "kept");
    let yaml = format!(
        "{}volumes:\n  - {{ name: keep, size: 16Mi, mountPath: /mcp-cli-test-keep, persistent: true }}\n",
        fixture_spec("clikeep", &script)
    );
    let spec = env.spec("keep.yaml", &yaml);
    let spec = spec.to_str().expect("utf-8 path");
    let first = stdout_of(env.cmd(&["run", "--skip-ready", spec]));
    assert_eq!(
        log_lines(&env, &first, 2),
        [missing_line(file), write_line(file, None)]
    );

    let table = stdout_of(env.cmd(&["volumes", "ls"]));
    let row = table
        .lines()
        .find(|l| l.starts_with("mcp-clikeep-keep\t"))
        .unwrap_or_else(|| panic!("no row for the volume:\n{table}"));
    assert_eq!(
        row,
        format!("mcp-clikeep-keep\tclikeep\tkeep\t16Mi\t{first}")
    );
    let listed = json(
        &env,
        &["volumes", "ls", "--server", "clikeep", "-o", "json"],
    );
    assert_eq!(listed[0]["inUseBy"], serde_json::json!([first]), "{listed}");
    assert_eq!(
        json(&env, &["volumes", "ls", "--server", "other", "-o", "json"]),
        serde_json::json!([])
    );

    let refused = env
        .cmd(&["volumes", "rm", "mcp-clikeep-keep"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    let refused = String::from_utf8(refused).expect("utf-8");
    assert!(
        refused.starts_with("error: ") && refused.contains(&first),
        "{refused}"
    );

    stdout_of(env.cmd(&["stop", &first, "--grace", "2s"]));
    let second = stdout_of(env.cmd(&["run", "--skip-ready", spec]));
    assert_eq!(
        log_lines(&env, &second, 2),
        ["kept", &write_line(file, None)]
    );
    stdout_of(env.cmd(&["stop", &second, "--grace", "2s"]));

    assert_eq!(
        stdout_of(env.cmd(&["volumes", "rm", "mcp-clikeep-keep"])),
        "mcp-clikeep-keep"
    );
    assert_eq!(
        json(&env, &["volumes", "ls", "-o", "json"]),
        serde_json::json!([])
    );
    let gone = env
        .cmd(&["volumes", "rm", "mcp-clikeep-keep"])
        .assert()
        .code(1)
        .get_output()
        .stderr
        .clone();
    assert!(
        String::from_utf8(gone)
            .expect("utf-8")
            .contains("not found")
    );
}

#[test]
fn gc_dry_run_reports_an_orphan_and_gc_removes_it() {
    let env = Env::process();
    let spec = env.spec(
        "idle.yaml",
        &fixture_spec("cliorphan", &FixtureScript::new()),
    );
    let id = stdout_of(env.cmd(&["run", "--skip-ready", spec.to_str().expect("utf-8 path")]));
    assert_eq!(
        stdout_of(env.cmd(&["gc", "--dry-run"])),
        "no orphans",
        "a running instance is no orphan"
    );
    // Kill its supervisor: the process whose command line ends with the instance directory.
    let instance_dir = env.dir.path().join("state/instances").join(&id);
    let supervisor = supervisor_of(&instance_dir).expect("the supervisor process");
    std::process::Command::new("kill")
        .args(["-KILL", &supervisor.to_string()])
        .status()
        .expect("kill");
    let mut report = serde_json::Value::Null;
    for _ in 0..100 {
        report = json(&env, &["gc", "--dry-run", "-o", "json"]);
        if report["orphans"].as_array().is_some_and(|o| !o.is_empty()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(report["dryRun"], true, "{report}");
    assert_eq!(
        report["orphans"],
        serde_json::json!([{"kind": "instance", "name": id, "reason": "its supervisor is gone", "removed": false}]),
        "{report}"
    );
    let table = stdout_of(env.cmd(&["gc", "--dry-run"]));
    assert!(
        table.contains(&id) && table.contains("would remove"),
        "{table}"
    );
    assert!(instance_dir.exists(), "a dry run removed the instance");
    let table = stdout_of(env.cmd(&["gc"]));
    assert!(table.contains(&id) && table.contains("removed"), "{table}");
    assert!(!instance_dir.exists());
    assert_eq!(stdout_of(env.cmd(&["ps", "-o", "json"])), "[]");
}

/// The pid of the live process whose last argument is `dir` (a supervisor's).
fn supervisor_of(dir: &std::path::Path) -> Option<i32> {
    let want = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                c.split(|b| *b == 0)
                    .rfind(|a| !a.is_empty())
                    .is_some_and(|last| last == want.as_bytes())
            })
        })
}
