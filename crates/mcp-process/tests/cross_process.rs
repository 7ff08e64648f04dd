//! Instances outlive the process that started them: helper processes (this test binary run
//! again in helper mode) start instances and exit; this process then lists, reads and stops
//! them. Several helpers starting at once must not corrupt the state directory.
//!
//! A `harness = false` test: `main` runs the checks, or acts as the helper when its first
//! argument is `--helper-start`.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_process::ProcessOrchestrator;
use mcp_types::{InstanceFilters, InstanceId, McpServer, Phase, RestartPolicy, StartOptions};

const HELPER: &str = "--helper-start";

/// One check: its name and a function returning its future.
type Check = (
    &'static str,
    fn() -> futures::future::BoxFuture<'static, ()>,
);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(HELPER) {
        return helper(&args[1..]);
    }
    if args.iter().any(|a| a == "--list") {
        // Test listers (nextest, IDEs) ask what is inside; answer like libtest.
        println!("cross_process: test");
        return ExitCode::SUCCESS;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = Instant::now();
    let checks: [Check; 2] = [
        (
            "instance_started_by_an_exited_process_is_listed_and_stopped",
            || Box::pin(started_elsewhere_then_stopped_here()),
        ),
        ("concurrent_starts_from_several_processes", || {
            Box::pin(concurrent_starts_from_processes())
        }),
    ];
    let filters = name_filters(&args);
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    for (name, check) in checks {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            filtered += 1;
            continue;
        }
        let result = runtime.block_on(async { tokio::spawn(check()).await });
        match result {
            Ok(()) => {
                passed += 1;
                println!("test {name} ... ok");
            }
            Err(e) => {
                failed += 1;
                println!("test {name} ... FAILED: {e}");
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out; finished in {:.2}s\n",
        if failed == 0 { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The name filters among libtest-style arguments (`cargo test -p mcp-process NAME`): the
/// positional ones, skipping the values of options that take one.
fn name_filters(args: &[String]) -> Vec<String> {
    const WITH_VALUE: &[&str] = &[
        "--test-threads",
        "--skip",
        "--color",
        "--format",
        "--logfile",
        "-Z",
    ];
    let mut filters = Vec::new();
    let mut skip_next = false;
    for a in args {
        if skip_next {
            skip_next = false;
        } else if WITH_VALUE.contains(&a.as_str()) {
            skip_next = true;
        } else if !a.starts_with('-') {
            filters.push(a.clone());
        }
    }
    filters
}

/// `--helper-start STATE_DIR PROGRAM COUNT LABEL`: starts COUNT idle fixture servers, prints
/// their ids one per line and exits, leaving them running.
fn helper(args: &[String]) -> ExitCode {
    let [state_dir, program, count, label] = args else {
        eprintln!("helper: expected STATE_DIR PROGRAM COUNT LABEL, got {args:?}");
        return ExitCode::from(2);
    };
    let count: usize = count.parse().expect("count");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let o =
            ProcessOrchestrator::new(common::config(Path::new(state_dir))).expect("orchestrator");
        let spec = idle_spec(program);
        let options = StartOptions {
            labels: [("helper".to_owned(), label.clone())].into(),
            ..StartOptions::default()
        };
        let starts = (0..count).map(|_| o.start_server(&spec, &options));
        for id in futures::future::join_all(starts).await {
            println!("{}", id.expect("start"));
        }
    });
    ExitCode::SUCCESS
}

fn idle_spec(program: &str) -> McpServer {
    McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            "xproc",
            program,
            FixtureScript::new().stdout("ready").to_args(),
        )
    }
}

/// Runs helpers (in parallel) and returns the ids each printed.
fn run_helpers(state_dir: &Path, program: &Path, helpers: usize, count: usize) -> Vec<InstanceId> {
    let me = std::env::current_exe().expect("current exe");
    let children: Vec<_> = (0..helpers)
        .map(|i| {
            Command::new(&me)
                .arg(HELPER)
                .arg(state_dir)
                .arg(program)
                .arg(count.to_string())
                .arg(format!("h{i}"))
                .stdout(Stdio::piped())
                .spawn()
                .expect("spawn helper")
        })
        .collect();
    let mut ids = Vec::new();
    for child in children {
        let out = child.wait_with_output().expect("helper output");
        assert!(out.status.success(), "helper failed: {:?}", out.status);
        ids.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| InstanceId::new(l.trim())),
        );
    }
    ids
}

async fn program() -> PathBuf {
    common::test_server().await
}

async fn started_elsewhere_then_stopped_here() {
    let env = common::TestEnv::new();
    let program = program().await;
    let ids = {
        let (dir, program) = (env.dir.path().to_owned(), program.clone());
        tokio::task::spawn_blocking(move || run_helpers(&dir, &program, 1, 1))
            .await
            .expect("helper task")
    };
    let [id] = ids.as_slice() else {
        panic!("expected one id, got {ids:?}")
    };
    // The helper has exited; its instance runs on, supervised by a process it started.
    let o = &env.orchestrator;
    let listed = o
        .list_instances(&InstanceFilters::default())
        .await
        .expect("list");
    assert_eq!(listed.items.len(), 1, "{:?}", listed.items);
    assert_eq!(&listed.items[0].id, id);
    assert_eq!(
        listed.items[0].status.phase,
        Phase::Running,
        "{:?}",
        listed.items[0]
    );
    common::wait_for_line(o, id, "ready").await;
    let procs = common::recorded(o, id);
    assert_eq!(procs.len(), 2, "supervisor and server recorded: {procs:?}");
    assert!(procs.iter().all(mcp_process::ProcIdentity::is_alive));
    o.stop_server(id, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(o.get_status(id).await.expect_err("gone").is_not_found());
    common::assert_gone(&procs).await;
    assert!(env.instance_dirs().is_empty());
}

async fn concurrent_starts_from_processes() {
    let env = common::TestEnv::new();
    let program = program().await;
    let ids = {
        let (dir, program) = (env.dir.path().to_owned(), program.clone());
        tokio::task::spawn_blocking(move || run_helpers(&dir, &program, 4, 5))
            .await
            .expect("helper task")
    };
    let unique: std::collections::BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), 20, "ids: {ids:?}");
    let o = &env.orchestrator;
    let listed = o
        .list_instances(&InstanceFilters::default())
        .await
        .expect("list");
    let listed_ids: std::collections::BTreeSet<_> =
        listed.items.iter().map(|i| i.id.clone()).collect();
    assert_eq!(listed_ids, unique);
    let mut procs = Vec::new();
    for i in &listed.items {
        assert_eq!(i.status.phase, Phase::Running, "{i:?}");
        procs.extend(common::recorded(o, &i.id));
    }
    assert_eq!(procs.len(), 40);
    let stops = ids
        .iter()
        .map(|id| o.stop_server(id, Duration::from_secs(5)));
    for r in futures::future::join_all(stops).await {
        r.expect("stop");
    }
    common::assert_gone(&procs).await;
    assert!(env.instance_dirs().is_empty(), "{:?}", env.instance_dirs());
}
