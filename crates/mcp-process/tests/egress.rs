//! Egress on the process backend with real supervisors, the real test server and a real TCP
//! listener: `none` cuts the server off from the host's loopback (its own loopback is up and
//! empty) while `open` reaches it; a stdio server under `none` still speaks MCP through
//! `connect`; the posture is reported by status, listing and watch; allow-lists and HTTP
//! servers under `none` are refused naming `egress`.

mod common;

use std::time::Duration;

use common::{TestEnv, log_texts, test_server};
use futures::StreamExt;
use mcp_orchestrator_api::fixture::{FixtureScript, ServeMode, connect_line};
use mcp_orchestrator_api::{McpChannel, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_process::ProcessOrchestrator;
use mcp_types::{
    Egress, EgressRule, InstanceEvent, InstanceFilters, InstanceId, LogOptions, McpServer,
    RestartPolicy, StartOptions, Transport,
};
use tokio::net::TcpListener;

const TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(5);

async fn spec(name: &str, script: &FixtureScript, egress: Option<Egress>) -> McpServer {
    McpServer {
        egress,
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            name,
            test_server().await.display().to_string(),
            script.to_args(),
        )
    }
}

/// The first log line of `id` (the connect step's), waiting for it.
async fn first_line(o: &ProcessOrchestrator, id: &InstanceId) -> String {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        if let Some(line) = log_texts(o, id, &LogOptions::default())
            .await
            .into_iter()
            .next()
        {
            return line;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{id} printed nothing"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Counts the connections accepted by `listener` until `stop` fires.
fn count_accepts(
    listener: TcpListener,
) -> (
    tokio::task::JoinHandle<usize>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (tx, mut rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut accepted = 0;
        loop {
            tokio::select! {
                conn = listener.accept() => if conn.is_ok() { accepted += 1 },
                _ = &mut rx => return accepted,
            }
        }
    });
    (task, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_cannot_reach_a_host_loopback_listener_that_open_reaches() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("listen");
    let target = listener.local_addr().expect("addr").to_string();
    let (accepts, stop) = count_accepts(listener);
    let script = FixtureScript::new().connect(&target);

    let open = o
        .start_server(
            &spec("egress-open", &script, Some(Egress::Open)).await,
            &StartOptions::default(),
        )
        .await
        .expect("start open");
    assert_eq!(first_line(o, &open).await, connect_line(&target, None));

    let none = o
        .start_server(
            &spec("egress-none", &script, Some(Egress::None)).await,
            &StartOptions::default(),
        )
        .await
        .expect("start none");
    // Inside its namespace 127.0.0.1 is its own loopback: up (so the refusal is immediate,
    // not "network unreachable") and with nothing listening on that port.
    let line = first_line(o, &none).await;
    assert!(
        line.starts_with(&format!("connect {target} failed: ")) && line.contains("refused"),
        "{line}"
    );
    for id in [&open, &none] {
        o.stop_server(id, GRACE).await.expect("stop");
    }
    stop.send(()).expect("listener task");
    assert_eq!(
        accepts.await.expect("listener task"),
        1,
        "only the open server connected"
    );
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_egress_applies_and_the_posture_is_reported_everywhere() {
    let env = TestEnv::with_config(|c| mcp_process::ProcessConfig {
        default_egress: Egress::None,
        ..c
    });
    let o = &env.orchestrator;
    let mut events = o.watch(&InstanceFilters::default()).await.expect("watch");
    let serve = FixtureScript::new().serve(ServeMode::Stdio);
    // No egress in the spec: the configured default (`none`).
    let quiet = o
        .start_server(
            &spec("posture-default", &serve, None).await,
            &StartOptions::default(),
        )
        .await
        .expect("start");
    let open = o
        .start_server(
            &spec("posture-open", &serve, Some(Egress::Open)).await,
            &StartOptions::default(),
        )
        .await
        .expect("start");
    for id in [&quiet, &open] {
        o.wait_until_running(id, TIMEOUT).await.expect("running");
    }
    let status = o.get_status(&quiet).await.expect("status");
    let posture = status.egress.expect("a posture");
    assert_eq!(
        (
            posture.policy,
            posture.metadata_blocked,
            posture.enforced_by.as_str()
        ),
        (Egress::None, true, "network namespace (loopback only)")
    );
    let posture = o
        .get_status(&open)
        .await
        .expect("status")
        .egress
        .expect("a posture");
    assert_eq!(
        (
            posture.policy,
            posture.metadata_blocked,
            posture.enforced_by.as_str()
        ),
        (Egress::Open, false, "not enforced: host network")
    );
    let listed = o
        .list_instances(&InstanceFilters::default())
        .await
        .expect("list");
    for i in &listed.items {
        let want = if i.id == quiet {
            Egress::None
        } else {
            Egress::Open
        };
        assert_eq!(
            i.status.egress.as_ref().map(|p| &p.policy),
            Some(&want),
            "{i:?}"
        );
    }
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let mut seen_none = false;
    while !seen_none {
        let event = tokio::time::timeout_at(deadline, events.next())
            .await
            .expect("a watch event")
            .expect("watch open")
            .expect("event");
        if let InstanceEvent::Added(i) | InstanceEvent::Modified(i) = event
            && i.id == quiet
        {
            seen_none = i.status.egress.is_some_and(|p| p.policy == Egress::None);
        }
    }
    // Under `none`, the stdio session still works: a real MCP client gets its tools.
    let McpChannel::Stdio(channel) = o.connect(&quiet).await.expect("connect") else {
        panic!("a stdio server's channel is its stdio");
    };
    let client = tokio::time::timeout(TIMEOUT, rmcp::ServiceExt::serve((), channel))
        .await
        .expect("initialize in time")
        .expect("initialize");
    let tools = client.list_all_tools().await.expect("tools/list");
    assert!(tools.iter().any(|t| t.name == "echo"), "{tools:?}");
    drop(client);
    for id in [&quiet, &open] {
        o.stop_server(id, GRACE).await.expect("stop");
    }
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_lists_and_unreachable_http_servers_are_refused_naming_egress() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let idle = FixtureScript::new();
    let allow = Egress::Allow(vec![EgressRule::host("api.github.com", [443])]);
    let http = McpServer {
        transport: Transport::StreamableHttp,
        port: Some(18_765),
        ..spec(
            "egress-http",
            &FixtureScript::new().serve(ServeMode::Http { port: 18_765 }),
            Some(Egress::None),
        )
        .await
    };
    for (spec, says) in [
        (
            spec("egress-allow", &idle, Some(allow)).await,
            "docker or kubernetes",
        ),
        (http, "transport"),
    ] {
        match o.start_server(&spec, &StartOptions::default()).await {
            Err(e @ OrchestratorError::NotSupported { .. }) => {
                let text = e.to_string();
                assert!(text.contains("egress") && text.contains(says), "{text}");
            }
            other => panic!("{}: expected NotSupported, got {other:?}", spec.name),
        }
    }
    env.assert_clean().await;
}
