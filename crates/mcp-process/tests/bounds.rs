//! Configuration values that would misbehave are refused naming the field, and an instance's
//! logs are bounded on disk (rotated at `logMaxBytes`, `logMaxFiles` kept) while `logs` still
//! reads everything kept in order: the current run, `previous`, and a follower across
//! rotations.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestEnv;
use futures::StreamExt;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{InstanceId, LogOptions, McpServer, RestartPolicy, StartOptions};

const WAIT: Duration = Duration::from_secs(30);
const LOG_MAX: u64 = 4096;

fn shell(name: &str, policy: RestartPolicy, script: &str) -> McpServer {
    McpServer {
        restart_policy: policy,
        ..McpServer::command(name, "/bin/sh", ["-c", script])
    }
}

fn small_logs(files: u32) -> TestEnv {
    TestEnv::with_config(|c| ProcessConfig {
        log_max_bytes: LOG_MAX,
        log_max_files: files,
        ..c
    })
}

async fn start(o: &ProcessOrchestrator, spec: &McpServer) -> InstanceId {
    o.start_server(spec, &StartOptions::default())
        .await
        .expect("start")
}

/// The log files of instance `id` and their sizes.
fn log_files(o: &ProcessOrchestrator, id: &InstanceId) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(o.instance_dir(id))
        .expect("instance dir")
        .map(|e| e.expect("entry"))
        .filter(|e| e.file_name().to_string_lossy().starts_with("logs.jsonl"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().expect("metadata").len(),
            )
        })
        .collect();
    files.sort();
    files
}

/// The numbers of lines `<prefix> <n> ...`, checking each line has that shape.
fn numbers(texts: &[String], prefix: &str) -> Vec<u32> {
    texts
        .iter()
        .map(|t| {
            let rest = t
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected line {t:?}"));
            rest.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected line {t:?}"))
        })
        .collect()
}

/// A loop printing `<prefix> <i> <padding>` for i in `from..to`, sleeping `pause` after each
/// line when given.
fn print_lines(prefix: &str, from: u32, to: u32, pause: Option<&str>) -> String {
    let pause = pause.map(|p| format!("sleep {p}; ")).unwrap_or_default();
    format!(
        "i={from}; while [ $i -lt {to} ]; do echo \"{prefix} $i padding-padding-padding-padding\"; \
         {pause}i=$((i+1)); done; "
    )
}

#[test]
fn values_that_misbehave_are_refused_naming_the_field() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = ProcessConfig::new(dir.path());
    let cases = [
        (
            ProcessConfig {
                restart_backoff_initial_ms: 0,
                ..base.clone()
            },
            "restartBackoffInitialMs",
        ),
        (
            ProcessConfig {
                restart_backoff_initial_ms: 10,
                restart_backoff_max_ms: 0,
                ..base.clone()
            },
            "restartBackoffMaxMs",
        ),
        (
            ProcessConfig {
                state_dir: Some("relative/state".into()),
                ..base.clone()
            },
            "stateDir",
        ),
        (
            ProcessConfig {
                log_max_bytes: 0,
                ..base.clone()
            },
            "logMaxBytes",
        ),
    ];
    for (config, field) in cases {
        let err = ProcessOrchestrator::new(config).expect_err(field);
        assert!(
            matches!(err, OrchestratorError::InvalidArgument { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
    assert!(ProcessOrchestrator::new(base).is_ok());
}

#[tokio::test]
async fn a_chatty_server_s_logs_are_capped_and_the_newest_lines_read_in_order() {
    let env = small_logs(2);
    let o = &env.orchestrator;
    let script = print_lines("line", 0, 2000, None) + "echo done; exec sleep 300";
    let id = start(o, &shell("chatty", RestartPolicy::Never, &script)).await;
    common::wait_for_line(o, &id, "done").await;

    let files = log_files(o, &id);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["logs.jsonl", "logs.jsonl.1", "logs.jsonl.2"]);
    for (name, size) in &files {
        assert!(*size <= LOG_MAX, "{name} has {size} bytes");
    }

    let mut texts = common::log_texts(o, &id, &LogOptions::default()).await;
    assert_eq!(texts.pop().as_deref(), Some("done"));
    let n = numbers(&texts, "line ");
    // About 3 x 4 KiB of ~120-byte records are kept: the newest, contiguous, in order.
    assert!(n.len() > 60, "only {} lines kept", n.len());
    assert_eq!(n.last(), Some(&1999));
    let expected: Vec<u32> = (2000 - u32::try_from(n.len()).expect("count")..2000).collect();
    assert_eq!(n, expected);

    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    env.assert_clean().await;
}

#[tokio::test]
async fn previous_reads_a_run_spread_over_rotated_files() {
    let env = small_logs(3);
    let o = &env.orchestrator;
    let marks = tempfile::tempdir().expect("temp dir");
    let marker = marks.path().join("ran");
    let m = marker.display();
    let script = format!(
        "if [ ! -e {m} ]; then {} touch {m}; exit 1; fi; {} exec sleep 300",
        print_lines("first", 0, 60, None),
        print_lines("second", 0, 3, None)
    );
    let id = start(o, &shell("previous", RestartPolicy::OnFailure, &script)).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let texts = common::log_texts(o, &id, &LogOptions::default()).await;
        if texts.len() == 3 && texts[0].starts_with("second 0") {
            assert_eq!(numbers(&texts, "second "), [0, 1, 2]);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no second run: {texts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        log_files(o, &id).len() >= 2,
        "the first run's 60 lines should not fit one file: {:?}",
        log_files(o, &id)
    );
    let previous = LogOptions {
        previous: true,
        ..LogOptions::default()
    };
    let texts = common::log_texts(o, &id, &previous).await;
    assert_eq!(numbers(&texts, "first "), (0..60).collect::<Vec<_>>());
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    env.assert_clean().await;
    assert!(Path::new(&marker).exists());
}

#[tokio::test]
async fn a_follower_reads_every_line_across_rotations() {
    let env = small_logs(100);
    let o = &env.orchestrator;
    // Slow lines (one rotation between two polls of the follower at most), then a burst
    // (several rotations between two polls), then the server exits and the stream ends.
    let script = print_lines("line", 0, 75, Some("0.01")) + &print_lines("line", 75, 200, None);
    let id = start(o, &shell("follow", RestartPolicy::Never, &script)).await;
    let follow = LogOptions {
        follow: true,
        ..LogOptions::default()
    };
    let stream = o.get_logs(&id, &follow).await.expect("follow");
    let texts: Vec<String> = tokio::time::timeout(
        WAIT,
        stream
            .map(|l| l.expect("log line").text)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("the follow stream ends when the server exits");
    assert_eq!(numbers(&texts, "line "), (0..200).collect::<Vec<_>>());
    let files = log_files(o, &id);
    assert!(files.len() >= 4, "expected several rotations: {files:?}");
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    env.assert_clean().await;
}
