//! Behaviour specific to local processes: instances seen and stopped by a fresh orchestrator,
//! orphans after a supervisor is killed with SIGKILL, stop escalation, memory limits, the
//! server's environment, and the specs this backend refuses. Restart policies and the previous
//! run's logs are checked by the conformance kit (`tests/conformance.rs`).

// Engine tests read better as one story per behaviour than split into helpers.
#![allow(clippy::too_many_lines)]

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestEnv;
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{
    EnvValue, GpuSpec, InstanceFilters, InstanceId, LogOptions, McpServer, Phase, Quantity,
    RestartPolicy, StartOptions, Transport, reasons,
};

const WAIT: Duration = Duration::from_secs(20);

async fn fixture(name: &str, script: &FixtureScript, policy: RestartPolicy) -> McpServer {
    McpServer {
        restart_policy: policy,
        ..McpServer::command(
            name,
            common::test_server().await.display().to_string(),
            script.to_args(),
        )
    }
}

fn shell(name: &str, script: &str) -> McpServer {
    McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(name, "/bin/sh", ["-c", script])
    }
}

async fn start(o: &ProcessOrchestrator, spec: &McpServer) -> InstanceId {
    o.start_server(spec, &StartOptions::default())
        .await
        .expect("start")
}

#[tokio::test]
async fn a_fresh_orchestrator_on_the_same_state_dir_sees_and_stops_an_instance() {
    let env = TestEnv::new();
    let spec = fixture(
        "fresh",
        &FixtureScript::new().stdout("hello"),
        RestartPolicy::Never,
    )
    .await;
    let id = start(&env.orchestrator, &spec).await;
    let procs = common::recorded(&env.orchestrator, &id);

    let other = env.fresh();
    other.wait_until_running(&id, WAIT).await.expect("running");
    common::wait_for_line(&other, &id, "hello").await;
    let page = other
        .list_instances(&InstanceFilters::server("fresh"))
        .await
        .expect("list");
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].id, id);
    other
        .stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    assert!(
        env.orchestrator
            .get_status(&id)
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        other
            .stop_server(&id, Duration::from_secs(1))
            .await
            .unwrap_err()
            .is_not_found()
    );
    common::assert_gone(&procs).await;
    assert!(env.instance_dirs().is_empty());
}

/// Kills the supervisor the way an operator would (`kill -9`).
fn kill_9(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[tokio::test]
async fn a_killed_supervisor_leaves_an_orphan_that_is_reported_and_stopped() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let spec = fixture(
        "orphan",
        &FixtureScript::new().stdout("up"),
        RestartPolicy::Always,
    )
    .await;
    let id = start(o, &spec).await;
    common::wait_for_line(o, &id, "up").await;
    let procs = o.processes(&id).expect("processes");
    let (sup, server) = (
        procs.supervisor.expect("sup"),
        procs.server.expect("server"),
    );
    kill_9(sup.pid);

    let status = o
        .wait_for(&id, WAIT, "orphaned", |s| {
            s.reason.as_deref() == Some(reasons::ORPHANED)
        })
        .await
        .expect("orphan detected");
    assert_eq!(status.phase, Phase::Unknown, "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .is_some_and(|m| m.contains("unsupervised")),
        "{status:?}"
    );
    assert!(
        server.is_alive(),
        "the server keeps running after its supervisor died"
    );
    let listed = env
        .fresh()
        .list_instances(&InstanceFilters::default())
        .await
        .expect("list");
    assert_eq!(
        listed.items[0].status.reason.as_deref(),
        Some(reasons::ORPHANED)
    );
    // A follower ends at once: nobody writes the log any more.
    let follow = o
        .get_logs(&id, &LogOptions::follow())
        .await
        .expect("follow");
    let lines = tokio::time::timeout(WAIT, futures::StreamExt::collect::<Vec<_>>(follow))
        .await
        .expect("follow of an orphan ends");
    assert_eq!(lines.len(), 1, "{lines:?}");

    env.fresh()
        .stop_server(&id, Duration::from_secs(2))
        .await
        .expect("stop orphan");
    common::assert_gone(&[sup, server]).await;
    assert!(env.instance_dirs().is_empty());
}

#[tokio::test]
async fn an_orphan_whose_server_also_died_is_failed() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let spec = shell("orphan-dead", "exec sleep 600");
    let id = start(o, &spec).await;
    o.wait_until_running(&id, WAIT).await.expect("running");
    let procs = o.processes(&id).expect("processes");
    let (sup, server) = (
        procs.supervisor.expect("sup"),
        procs.server.expect("server"),
    );
    kill_9(sup.pid);
    kill_9(server.pid);
    let status = o
        .wait_for(&id, WAIT, "failed orphan", |s| s.phase == Phase::Failed)
        .await
        .expect("failed");
    assert_eq!(
        status.reason.as_deref(),
        Some(reasons::ORPHANED),
        "{status:?}"
    );
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    common::assert_gone(&[sup, server]).await;
}

#[tokio::test]
async fn stop_escalates_to_sigkill_for_the_whole_group_after_the_grace_period() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    // The shell and its `sleep` child both ignore SIGTERM (ignored signals survive exec).
    let spec = shell(
        "stubborn",
        "trap '' TERM; echo started; sleep 600 & sleep 600; wait",
    );
    let id = start(o, &spec).await;
    common::wait_for_line(o, &id, "started").await;
    let procs = common::recorded(o, &id);
    let began = Instant::now();
    o.stop_server(&id, Duration::from_millis(700))
        .await
        .expect("stop");
    let took = began.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "stopped after {took:?}, before the grace period"
    );
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    common::assert_gone(&procs).await;
    env.assert_clean().await;
}

#[tokio::test]
async fn a_memory_limit_becomes_rlimit_data_and_no_resources_means_no_limit() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let data_limit = |proc: String| {
        let text = std::fs::read_to_string(format!("/proc/{proc}/limits")).expect("limits");
        text.lines()
            .find(|l| l.starts_with("Max data size"))
            .expect("data line")
            .split_whitespace()
            .nth(3)
            .expect("soft limit")
            .to_owned()
    };
    let limits = |id: &InstanceId| {
        let server = o.processes(id).expect("processes").server.expect("server");
        data_limit(server.pid.to_string())
    };
    let mut spec = shell("limited", "exec sleep 600");
    spec.resources.limits.memory = Some(Quantity::parse("256Mi").expect("quantity"));
    let id = start(o, &spec).await;
    o.wait_until_running(&id, WAIT).await.expect("running");
    assert_eq!(limits(&id), (256u64 << 20).to_string());
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");

    let id = start(o, &shell("unlimited", "exec sleep 600")).await;
    o.wait_until_running(&id, WAIT).await.expect("running");
    // Without resources in the spec the server keeps the limit its starter had.
    assert_eq!(limits(&id), data_limit("self".into()));
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    env.assert_clean().await;
}

#[tokio::test]
async fn the_server_gets_a_minimal_environment_plus_the_spec_and_secrets_stay_off_disk() {
    let secrets_dir = tempfile::tempdir().expect("temp dir");
    let secrets = secrets_dir.path().to_owned();
    std::fs::create_dir_all(secrets.join("gh")).expect("mkdir");
    std::fs::write(secrets.join("gh/token"), "s3cr3t-t0ken\n").expect("secret");
    let env = TestEnv::with_config(|c| ProcessConfig {
        secrets_dir: Some(secrets),
        ..c
    });
    let o = &env.orchestrator;
    let dir = &secrets_dir;
    // Any other variable of this process (cargo sets several for tests; a shell sets PWD, ...)
    // must not reach the server.
    let probe = std::env::vars()
        .map(|(k, _)| k)
        .find(|k| {
            // sh sets PWD, OLDPWD and SHLVL itself.
            !["PATH", "HOME", "LANG", "PWD", "OLDPWD", "SHLVL"].contains(&k.as_str())
                && k.starts_with(|c: char| c.is_ascii_alphabetic())
                && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .unwrap_or_else(|| "MCP_PROCESS_TEST_NOT_SET".to_owned());
    let mut spec = shell(
        "envcheck",
        &format!(
            "echo \"plain=$PLAIN\"; echo \"token=$TOKEN\"; echo \"home=${{HOME:+set}}\"; \
             echo \"probe=${{{probe}:-unset}}\"; echo \"pwd=$(pwd)\"; exec sleep 600"
        ),
    );
    spec.working_dir = Some(dir.path().display().to_string());
    spec.env = BTreeMap::from([
        ("PLAIN".to_owned(), EnvValue::plain("p-value")),
        ("TOKEN".to_owned(), EnvValue::secret("gh", "token")),
    ]);
    let id = start(o, &spec).await;
    common::wait_for_line(o, &id, &format!("pwd={}", dir.path().display())).await;
    let lines = common::log_texts(o, &id, &LogOptions::default()).await;
    assert_eq!(
        lines,
        [
            "plain=p-value".to_owned(),
            "token=s3cr3t-t0ken".to_owned(),
            "home=set".to_owned(),
            "probe=unset".to_owned(),
            format!("pwd={}", dir.path().display()),
        ]
    );
    // Only the server's own output (the log) may contain the value, never our files.
    for entry in std::fs::read_dir(o.instance_dir(&id)).expect("dir") {
        let path = entry.expect("entry").path();
        if path
            .file_name()
            .is_some_and(|n| n == "logs.jsonl" || n == "stdio.sock")
        {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            !text.contains("s3cr3t"),
            "{} holds the secret",
            path.display()
        );
        assert!(
            !text.contains("p-value"),
            "{} holds a plain value",
            path.display()
        );
    }
    let sup = o
        .processes(&id)
        .expect("processes")
        .supervisor
        .expect("sup");
    let environ = std::fs::read(format!("/proc/{}/environ", sup.pid)).expect("environ");
    assert!(!String::from_utf8_lossy(&environ).contains("s3cr3t"));
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");

    // An unresolvable reference is InvalidSpec naming the variable; nothing is created.
    spec.env = BTreeMap::from([("TOKEN".to_owned(), EnvValue::secret("gh", "missing"))]);
    let err = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::InvalidSpec(e) if e.has_path("env.TOKEN")),
        "{err}"
    );
    env.assert_clean().await;
}

#[tokio::test]
async fn specs_this_backend_cannot_honour_are_refused_before_anything_starts() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let base = shell("refused", "exec sleep 600");
    let not_supported = |e: &OrchestratorError| matches!(e, OrchestratorError::NotSupported { .. });

    let gpu = McpServer {
        gpu: Some(GpuSpec {
            product: None,
            count: 1,
        }),
        ..base.clone()
    };
    let e = o
        .start_server(&gpu, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(not_supported(&e), "{e}");

    // Volumes are honoured (tests/volumes.rs); egress allow-lists are not.
    let egress = McpServer {
        egress: Some(mcp_types::Egress::Allow(vec![mcp_types::EgressRule::cidr(
            "10.0.0.0/8",
            [],
        )])),
        ..base.clone()
    };
    let e = o
        .start_server(&egress, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(not_supported(&e), "{e}");

    for spec in [
        McpServer::command("missing", "no-such-program-anywhere", Vec::<String>::new()),
        McpServer::command("missing", "./relative/nope", Vec::<String>::new()),
        McpServer::new("image-only", "mcp/time:latest"),
    ] {
        let e = o
            .start_server(&spec, &StartOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(&e, OrchestratorError::InvalidSpec(v) if v.has_path("command")),
            "{e}"
        );
    }
    let bad_cwd = McpServer {
        working_dir: Some("/nonexistent/dir".into()),
        ..base.clone()
    };
    let e = o
        .start_server(&bad_cwd, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OrchestratorError::InvalidSpec(v) if v.has_path("workingDir")),
        "{e}"
    );

    let no_supervisor = ProcessOrchestrator::new(
        common::config(env.dir.path()).with_supervisor(env.dir.path().join("missing-supervisor")),
    )
    .expect("orchestrator");
    let e = no_supervisor
        .start_server(&base, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OrchestratorError::Unavailable { message, .. } if message.contains("supervisorPath")),
        "{e}"
    );
    // A supervisor that dies before launching anything fails the start and leaves nothing.
    let dying_supervisor =
        ProcessOrchestrator::new(common::config(env.dir.path()).with_supervisor("/bin/false"))
            .expect("orchestrator");
    let e = dying_supervisor
        .start_server(&base, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OrchestratorError::Unavailable { message, .. } if message.contains("failed to start")),
        "{e}"
    );
    // Ids that are not instance names never reach the file system.
    for id in ["../../etc", "", "UPPER"] {
        assert!(
            o.get_status(&InstanceId::new(id))
                .await
                .unwrap_err()
                .is_not_found()
        );
    }
    env.assert_clean().await;
}

#[tokio::test]
async fn an_http_server_gets_a_loopback_endpoint_and_no_stdio_bridge() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let spec = McpServer {
        transport: Transport::StreamableHttp,
        port: Some(port),
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            "http",
            common::test_server().await.display().to_string(),
            ["http", "--port", &port.to_string(), "--host", "127.0.0.1"],
        )
    };
    let id = start(o, &spec).await;
    o.wait_until_running(&id, WAIT).await.expect("running");
    let page = o
        .list_instances(&InstanceFilters::default())
        .await
        .expect("list");
    let endpoint = format!("http://127.0.0.1:{port}/mcp");
    assert_eq!(page.items[0].endpoint.as_deref(), Some(endpoint.as_str()));
    let deadline = Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "nothing listens on {endpoint}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let e = o.attach_stdio(&id).await.unwrap_err();
    assert!(matches!(e, OrchestratorError::NotSupported { .. }), "{e}");
    let procs = common::recorded(o, &id);
    o.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");
    common::assert_gone(&procs).await;
}

#[tokio::test]
async fn supervisor_args_come_before_the_instance_directory() {
    // A stand-in for a program that embeds the supervisor behind a hidden subcommand:
    // `sh -c 'exec "$0" "$@"' <supervisor> <instance dir>`.
    let env = TestEnv::with_config(|c| ProcessConfig {
        supervisor_path: Some("/bin/sh".into()),
        supervisor_args: vec![
            "-c".into(),
            "exec \"$0\" \"$@\"".into(),
            common::supervisor().display().to_string(),
        ],
        ..c
    });
    let o = &env.orchestrator;
    let id = start(o, &shell("embedded", "echo via-args; exec sleep 600")).await;
    common::wait_for_line(o, &id, "via-args").await;
    let procs = common::recorded(o, &id);
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    common::assert_gone(&procs).await;
    env.assert_clean().await;
}

#[tokio::test]
async fn a_restarted_server_shows_the_last_exit_code_while_it_runs_again() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let script = FixtureScript::new()
        .sleep(Duration::from_millis(300))
        .exit(4);
    let spec = fixture("last-exit", &script, RestartPolicy::OnFailure).await;
    let id = start(o, &spec).await;
    let first = o.get_status(&id).await.unwrap();
    assert_eq!(first.last_exit_code, None, "{first:?}");
    let again = o
        .wait_for(
            &id,
            Duration::from_secs(30),
            "running again after a restart",
            |s| s.restart_count >= 1 && s.phase == Phase::Running,
        )
        .await
        .unwrap();
    assert_eq!(
        (again.exit_code, again.last_exit_code),
        (None, Some(4)),
        "{again:?}"
    );
    o.stop_server(&id, Duration::from_secs(2)).await.unwrap();
}
