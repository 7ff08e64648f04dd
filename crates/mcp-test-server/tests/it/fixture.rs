//! `mcp-test-server fixture ...` executes FixtureScripts exactly; bad arguments exit 2.

use std::time::{Duration, Instant};

use mcp_orchestrator_api::fixture::FixtureScript;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::{BIN, TIMEOUT, command, reap, sigterm, wait_exit};

/// Runs `args` to completion: (exit code, stdout, stderr).
pub(crate) async fn run_to_end(program: &str, args: &[String]) -> (Option<i32>, String, String) {
    let child = command(program.as_ref(), args).spawn().expect("spawning");
    let out = tokio::time::timeout(TIMEOUT, child.wait_with_output())
        .await
        .expect("did not exit in time")
        .expect("waiting");
    (
        out.status.code(),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

/// The script's expected output, split by stream.
fn expected(script: &FixtureScript) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    for (is_stdout, line) in script.expected_lines() {
        let s = if is_stdout { &mut out } else { &mut err };
        s.push_str(&line);
        s.push('\n');
    }
    (out, err)
}

#[tokio::test]
async fn prints_exact_lines_and_exits_with_the_code() {
    let script = FixtureScript::new()
        .stdout("hello world")
        .stderr("--oops")
        .stdout_lines("line", 3)
        .stdout("  spaced  ")
        .exit(3);
    let (code, out, err) = run_to_end(BIN, &script.to_args()).await;
    assert_eq!(code, Some(3));
    assert_eq!((out, err), expected(&script));
    assert_eq!(
        expected(&script).0,
        "hello world\nline-1\nline-2\nline-3\n  spaced  \n"
    );
}

#[tokio::test]
async fn exit_zero_and_large_codes() {
    let (code, out, err) = run_to_end(BIN, &FixtureScript::new().exit(0).to_args()).await;
    assert_eq!((code, out.as_str(), err.as_str()), (Some(0), "", ""));
    let (code, ..) = run_to_end(BIN, &FixtureScript::new().exit(255).to_args()).await;
    assert_eq!(code, Some(255));
    // Steps after the exit never run.
    let script = FixtureScript::new().exit(1).stdout("never");
    let (code, out, _) = run_to_end(BIN, &script.to_args()).await;
    assert_eq!((code, out.as_str()), (Some(1), ""));
}

#[tokio::test]
async fn sleeps_between_steps() {
    let script = FixtureScript::new()
        .stdout("before")
        .sleep(Duration::from_millis(300))
        .stdout("after")
        .exit(0);
    let started = Instant::now();
    let (code, out, _) = run_to_end(BIN, &script.to_args()).await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!((code, out.as_str()), (Some(0), "before\nafter\n"));
}

#[tokio::test]
async fn idle_script_runs_until_sigterm_then_exits_zero() {
    let script = FixtureScript::new().stdout("ready").stderr("also ready");
    let mut child = command(BIN.as_ref(), &script.to_args())
        .spawn()
        .expect("spawning");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr")).lines();
    // Lines arrive while the process is still running: they are flushed one by one.
    let line = tokio::time::timeout(TIMEOUT, stdout.next_line())
        .await
        .expect("no line");
    assert_eq!(line.expect("stdout").as_deref(), Some("ready"));
    let line = tokio::time::timeout(TIMEOUT, stderr.next_line())
        .await
        .expect("no line");
    assert_eq!(line.expect("stderr").as_deref(), Some("also ready"));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        child.try_wait().expect("try_wait").is_none(),
        "idle fixture exited by itself"
    );

    let stopping = Instant::now();
    sigterm(&child).await;
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), Some(0), "{status}");
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "took {:?}",
        stopping.elapsed()
    );
    reap(child).await;
}

#[tokio::test]
async fn sigterm_interrupts_a_sleep_and_sigint_works_too() {
    for signal in ["-TERM", "-INT"] {
        let script = FixtureScript::new()
            .stdout("sleeping")
            .sleep(Duration::from_secs(60))
            .exit(9);
        let mut child = command(BIN.as_ref(), &script.to_args())
            .spawn()
            .expect("spawning");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let line = tokio::time::timeout(TIMEOUT, stdout.next_line())
            .await
            .expect("no line");
        assert_eq!(line.expect("stdout").as_deref(), Some("sleeping"));
        let stopping = Instant::now();
        if signal == "-TERM" {
            sigterm(&child).await;
        } else {
            let pid = child.id().expect("pid").to_string();
            let ok = tokio::process::Command::new("kill")
                .args([signal, &pid])
                .status()
                .await
                .expect("kill");
            assert!(ok.success());
        }
        let status = wait_exit(&mut child).await;
        assert_eq!(status.code(), Some(0), "{signal}: {status}");
        assert!(
            stopping.elapsed() < Duration::from_secs(3),
            "{signal}: {:?}",
            stopping.elapsed()
        );
        reap(child).await;
    }
}

#[tokio::test]
async fn bad_arguments_exit_2_with_one_line() {
    let cases: &[&[&str]] = &[
        &[],
        &["serve"],
        &["stdio", "extra"],
        &["http"],
        &["http", "--port", "x"],
        &["http", "--port", "1", "--host", "localhost"],
        &["fixture", "--exit"],
        &["fixture", "--exit", "x"],
        &["fixture", "--lines", "3"],
        &["fixture", "--bogus", "1"],
    ];
    for args in cases {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let (code, out, err) = run_to_end(BIN, &args).await;
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_eq!(out, "", "{args:?}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err:?}");
        assert!(err.starts_with("mcp-test-server: "), "{args:?}: {err:?}");
    }
}

#[tokio::test]
async fn help_and_version_exit_zero() {
    let (code, out, _) = run_to_end(BIN, &["--help".to_owned()]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("fixture"), "{out}");
    let (code, out, _) = run_to_end(BIN, &["--version".to_owned()]).await;
    assert_eq!(code, Some(0));
    assert!(out.starts_with("mcp-test-server "), "{out}");
}

#[tokio::test]
async fn prints_env_and_working_dir() {
    let script = FixtureScript::new()
        .print_env("FIXTURE_GREETING")
        .print_env("FIXTURE_NEVER_SET")
        .print_cwd()
        .exit(0);
    let dir = std::env::temp_dir();
    let out = tokio::process::Command::new(BIN)
        .args(script.to_args())
        .env("FIXTURE_GREETING", "hi there")
        .env_remove("FIXTURE_NEVER_SET")
        .current_dir(&dir)
        .output()
        .await
        .expect("running the fixture");
    assert_eq!(out.status.code(), Some(0));
    let cwd = dir.canonicalize().expect("temp dir");
    assert_eq!(
        String::from_utf8(out.stdout).expect("utf-8"),
        format!(
            "FIXTURE_GREETING=hi there\nFIXTURE_NEVER_SET unset\n{}\n",
            cwd.display()
        )
    );
}

#[tokio::test]
async fn writes_and_prints_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("note.txt").display().to_string();
    let absent = dir.path().join("absent.txt").display().to_string();
    let unwritable = dir.path().join("no-such-dir/x").display().to_string();
    let script = FixtureScript::new()
        .print_file(&file)
        .write_file(&file, "kept data")
        .print_file(&file)
        .print_file(&absent)
        .write_file(&unwritable, "x")
        .exit(0);
    let (code, out, _) = run_to_end(BIN, &script.to_args()).await;
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], format!("{file} unreadable"));
    assert_eq!(lines[1], format!("wrote {file}"));
    assert_eq!(lines[2], "kept data");
    assert_eq!(lines[3], format!("{absent} unreadable"));
    assert!(
        lines[4].starts_with(&format!("wrote {unwritable} failed: ")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_to_string(&file).expect("written"),
        "kept data\n"
    );
}

#[tokio::test]
async fn ignoring_sigterm_leaves_only_a_kill() {
    let script = FixtureScript::new().ignore_sigterm().stdout("stubborn");
    let mut child = command(BIN.as_ref(), &script.to_args())
        .spawn()
        .expect("spawning");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let line = tokio::time::timeout(TIMEOUT, lines.next_line())
        .await
        .expect("no line in time");
    assert_eq!(line.expect("stdout").as_deref(), Some("stubborn"));
    sigterm(&child).await;
    // Still running well after the signal.
    let waited = tokio::time::timeout(Duration::from_millis(700), child.wait()).await;
    assert!(waited.is_err(), "exited after SIGTERM: {waited:?}");
    child.start_kill().expect("kill");
    let status = wait_exit(&mut child).await;
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    reap(child).await;
}
