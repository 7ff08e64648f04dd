//! Log retrieval from a running pod: tail, since and follow, through the kubelet's real log
//! files (the conformance kit covers the same options on every backend; this test pins them on
//! a real cluster with one long-running server).

use std::time::Duration;

use futures::StreamExt;
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_types::{InstanceId, LogLine, LogOptions, StartOptions};

use crate::support::{Kind, TIMEOUT, cluster, eventually};

async fn read(kind: &Kind, id: &InstanceId, options: &LogOptions) -> Vec<LogLine> {
    let stream = kind
        .orchestrator
        .get_logs(id, options)
        .await
        .unwrap_or_else(|e| panic!("logs {options:?}: {e}"));
    tokio::time::timeout(TIMEOUT, stream.collect::<Vec<_>>())
        .await
        .expect("a non-following stream ends")
        .into_iter()
        .collect::<Result<_, _>>()
        .expect("log lines")
}

fn texts(lines: &[LogLine]) -> Vec<&str> {
    lines.iter().map(|l| l.text.as_str()).collect()
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn logs_tail_since_and_follow_from_a_running_pod() {
    let kind = cluster().await;
    let o = &kind.orchestrator;
    let script = FixtureScript::new()
        .stdout_lines("line", 5)
        .sleep(Duration::from_secs(3))
        .stdout("late")
        .sleep(Duration::from_secs(4))
        .stdout("later");
    let id = o
        .start_server(&kind.fixture("logs", &script), &StartOptions::default())
        .await
        .expect("start");
    o.wait_until_running(&id, TIMEOUT).await.expect("running");

    // Tail of what exists.
    let (k, i) = (&kind, &id);
    eventually("five lines", TIMEOUT, || async move {
        (read(k, i, &LogOptions::default()).await.len() >= 5).then_some(())
    })
    .await;
    let tail = read(&kind, &id, &LogOptions::tail(2)).await;
    assert_eq!(texts(&tail)[..], ["line-4", "line-5"], "tail 2 of 5");

    // Since: a cut between the burst and "late" keeps only the later lines.
    let stamped = eventually("\"late\" with timestamps", TIMEOUT, || async move {
        let lines = read(
            k,
            i,
            &LogOptions {
                timestamps: true,
                ..LogOptions::default()
            },
        )
        .await;
        texts(&lines).contains(&"late").then_some(lines)
    })
    .await;
    let five = stamped[4].timestamp.expect("timestamps: true gives times");
    let late = stamped[5].timestamp.expect("timestamps: true gives times");
    assert!(late > five, "{five} then {late}");
    let cut = jiff::Timestamp::from_nanosecond(
        five.as_nanosecond() + (late.as_nanosecond() - five.as_nanosecond()) / 2,
    )
    .expect("a time between two lines");
    let since = read(
        &kind,
        &id,
        &LogOptions {
            since: Some(cut),
            ..LogOptions::default()
        },
    )
    .await;
    assert_eq!(
        texts(&since).first(),
        Some(&"late"),
        "since {cut}: {since:?}"
    );
    assert!(!texts(&since).contains(&"line-5"), "since {cut}: {since:?}");

    // Follow: a line printed after the call arrives, and stopping ends the stream.
    let mut follow = o
        .get_logs(&id, &LogOptions::follow())
        .await
        .expect("follow");
    let mut seen = Vec::new();
    while !seen.iter().any(|t| t == "later") {
        match tokio::time::timeout(TIMEOUT, follow.next()).await {
            Ok(Some(line)) => seen.push(line.expect("a followed line").text),
            Ok(None) => panic!("the follow stream ended before \"later\": {seen:?}"),
            Err(elapsed) => panic!("no \"later\" ({elapsed}): {seen:?}"),
        }
    }
    o.stop_server(&id, Duration::from_secs(2))
        .await
        .expect("stop");
    match tokio::time::timeout(TIMEOUT, follow.next()).await {
        Ok(None | Some(Err(_))) => {}
        Ok(Some(Ok(line))) => panic!("a line after the stop: {line:?}"),
        Err(elapsed) => panic!("the follow stream stayed open after the stop ({elapsed})"),
    }
}
