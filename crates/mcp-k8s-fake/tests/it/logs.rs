//! The pod `log` subresource: fixture output, pushed lines, tailLines, sinceSeconds/sinceTime,
//! timestamps, follow, previous, and the kubelet's 400 errors.

use std::time::Duration;

use futures::{AsyncBufReadExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, LogParams};
use mcp_k8s_fake::{Failure, FailureTarget, FakeKubeServer, LogStream};
use mcp_orchestrator_api::fixture::FixtureScript;

use crate::{WAIT, create, pod_with, script_pod, start, status_of, wait_running};

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

/// A running pod whose script printed 5 lines (2 on stderr), plus 2 pushed lines.
async fn logging_pod(server: &FakeKubeServer, pods: &Api<Pod>, ns: &str) {
    let script = FixtureScript::new()
        .stdout("hello")
        .stderr("warning: careful")
        .stdout_lines("line", 3);
    create(pods, &script_pod("p", "Always", &script)).await;
    wait_running(server, ns, "p").await;
    let handle = server.handle();
    // The script runs right after the start; wait for its last line.
    let mut all = String::new();
    for _ in 0..100 {
        all = pods.logs("p", &LogParams::default()).await.unwrap();
        if all.contains("line-3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        lines(&all),
        ["hello", "warning: careful", "line-1", "line-2", "line-3"]
    );

    handle
        .push_log(ns, "p", LogStream::Stdout, "pushed one\npushed two\n")
        .unwrap();
}

#[tokio::test]
async fn fixture_output_pushed_lines_and_tail() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "logs");
    logging_pod(&server, &pods, "logs").await;
    let tail = pods
        .logs(
            "p",
            &LogParams {
                tail_lines: Some(2),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(lines(&tail), ["pushed one", "pushed two"]);
}

#[tokio::test]
async fn timestamps_since_and_limit_bytes() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "logs2");
    logging_pod(&server, &pods, "logs2").await;
    let handle = server.handle();
    let stamped = pods
        .logs(
            "p",
            &LogParams {
                timestamps: true,
                tail_lines: Some(1),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let (stamp, text) = stamped.trim_end().split_once(' ').unwrap();
    assert_eq!(text, "pushed two");
    assert_eq!(
        stamp.len(),
        "2006-01-02T15:04:05.000000000Z".len(),
        "{stamp}"
    );
    let at: Timestamp = stamp.parse().unwrap();
    assert!((Timestamp::now() - at).get_seconds() < 10);

    let recent = pods
        .logs(
            "p",
            &LogParams {
                since_seconds: Some(60),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(lines(&recent).len(), 7);
    let future = Timestamp::now() + k8s_openapi::jiff::SignedDuration::from_secs(3600);
    let none = pods
        .logs(
            "p",
            &LogParams {
                since_time: Some(future),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(none, "");

    let limited = pods
        .logs(
            "p",
            &LogParams {
                limit_bytes: Some(8),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(limited, "hello\nwa");

    let status = status_of(
        pods.logs(
            "p",
            &LogParams {
                since_seconds: Some(0),
                ..LogParams::default()
            },
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert!(
        handle
            .push_log("logs", "missing", LogStream::Stdout, "x")
            .is_err()
    );
}

#[tokio::test]
async fn follow_streams_until_the_container_exits() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "follow");
    let script = FixtureScript::new()
        .stdout("first")
        .sleep(Duration::from_millis(150))
        .stdout("second")
        .sleep(Duration::from_millis(100))
        .exit(0);
    create(&pods, &script_pod("p", "Never", &script)).await;
    wait_running(&server, "follow", "p").await;
    let stream = pods
        .log_stream(
            "p",
            &LogParams {
                follow: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    let got: Vec<String> = tokio::time::timeout(WAIT, stream.lines().try_collect())
        .await
        .expect("the follow stream must end when the container exits")
        .unwrap();
    assert_eq!(got, ["first", "second"]);
    let pod = pods.get("p").await.unwrap();
    assert_eq!(crate::phase(&pod), "Succeeded");
    // Logs of the terminated container stay readable.
    assert_eq!(
        pods.logs("p", &LogParams::default()).await.unwrap(),
        "first\nsecond\n"
    );
}

#[tokio::test]
async fn previous_logs_after_a_restart() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "prev");
    create(
        &pods,
        &script_pod(
            "crashy",
            "Always",
            &FixtureScript::new().stdout("run").exit(1),
        ),
    )
    .await;
    let restarted = server
        .handle()
        .wait_for_pod("prev", "crashy", WAIT, |p| {
            crate::container(p, 0).restart_count >= 1
        })
        .await
        .unwrap();
    assert_eq!(crate::container(&restarted, 0).restart_count, 1);
    let previous = pods
        .logs(
            "crashy",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(previous, "run\n");

    create(&pods, &crate::idle_pod("fresh", &[])).await;
    wait_running(&server, "prev", "fresh").await;
    let status = status_of(
        pods.logs(
            "fresh",
            &LogParams {
                previous: true,
                ..LogParams::default()
            },
        )
        .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    assert_eq!(
        status.message,
        "previous terminated container \"main\" in pod \"fresh\" not found"
    );
}

#[tokio::test]
async fn kubelet_log_errors() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "errs");
    let two = pod_with(
        "two",
        &[],
        "Always",
        &[("a", "img:1", Vec::new()), ("b", "img:1", Vec::new())],
    );
    create(&pods, &two).await;
    wait_running(&server, "errs", "two").await;
    let status = status_of(pods.logs("two", &LogParams::default()).await);
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "a container name must be specified for pod two, choose one of: [a b]"
    );
    let status = status_of(
        pods.logs(
            "two",
            &LogParams {
                container: Some("c".to_owned()),
                ..LogParams::default()
            },
        )
        .await,
    );
    assert_eq!(status.message, "container c is not valid for pod two");
    server
        .handle()
        .push_container_log("errs", "two", Some("b"), LogStream::Stderr, "from b")
        .unwrap();
    let b = pods
        .logs(
            "two",
            &LogParams {
                container: Some("b".to_owned()),
                ..LogParams::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(b, "from b\n");

    server
        .handle()
        .inject(FailureTarget::image("bad:1"), Failure::ImagePull);
    create(
        &pods,
        &pod_with("pull", &[], "Always", &[("main", "bad:1", Vec::new())]),
    )
    .await;
    server
        .handle()
        .wait_for_pod("errs", "pull", WAIT, |p| {
            crate::waiting_reason(p).as_deref() == Some("ImagePullBackOff")
        })
        .await
        .unwrap();
    let status = status_of(pods.logs("pull", &LogParams::default()).await);
    assert_eq!(status.code, 400);
    assert_eq!(
        status.message,
        "container \"main\" in pod \"pull\" is waiting to start: trying and failing to pull image"
    );
    assert_eq!(
        status_of(pods.logs("nope", &LogParams::default()).await).code,
        404
    );
}

#[tokio::test]
async fn an_unscheduled_pod_has_an_empty_log() {
    let (server, client) = crate::start().await;
    server.handle().inject(
        mcp_k8s_fake::FailureTarget::pod("unsched", "p"),
        mcp_k8s_fake::Failure::Unschedulable,
    );
    let pods: Api<Pod> = Api::namespaced(client, "unsched");
    crate::create(&pods, &crate::idle_pod("p", &[])).await;
    // The registry has no node to ask: an empty 200, not an error.
    assert_eq!(
        pods.logs("p", &kube::api::LogParams::default())
            .await
            .unwrap(),
        ""
    );
}
