//! Watches: event order and resourceVersions through a pod's life, selector filtering,
//! `timeoutSeconds`, resuming from a resourceVersion, and 410 for a compacted one.

use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, WatchEvent, WatchParams};

use crate::{WAIT, create, idle_pod, start};

fn describe(event: &WatchEvent<Pod>) -> (String, String) {
    match event {
        WatchEvent::Added(p) => ("ADDED".to_owned(), p.name_any()),
        WatchEvent::Modified(p) => ("MODIFIED".to_owned(), p.name_any()),
        WatchEvent::Deleted(p) => ("DELETED".to_owned(), p.name_any()),
        WatchEvent::Bookmark(_) => ("BOOKMARK".to_owned(), String::new()),
        WatchEvent::Error(e) => ("ERROR".to_owned(), e.message.clone()),
    }
}

fn rv(event: &WatchEvent<Pod>) -> u64 {
    match event {
        WatchEvent::Added(p) | WatchEvent::Modified(p) | WatchEvent::Deleted(p) => {
            p.resource_version().unwrap().parse().unwrap()
        }
        _ => 0,
    }
}

#[tokio::test]
async fn events_follow_a_pod_through_its_life_in_order() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "w");
    create(&pods, &idle_pod("before", &[("app", "w")])).await;
    let list = pods.list(&ListParams::default()).await.unwrap();
    let from = list.metadata.resource_version.unwrap();

    let stream = pods
        .watch(&WatchParams::default().labels("app=w").timeout(10), &from)
        .await
        .unwrap();
    let mut stream = stream.boxed();
    create(&pods, &idle_pod("other", &[("app", "other")])).await;
    create(&pods, &idle_pod("p", &[("app", "w")])).await;

    let mut events = Vec::new();
    let mut saw_running = false;
    let mut deleting = false;
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let event = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WatchEvent::Modified(pod) = &event
            && pod.name_any() == "p"
            && crate::is_running(pod)
            && !deleting
        {
            saw_running = true;
            deleting = true;
            pods.delete("p", &DeleteParams::default()).await.unwrap();
        }
        if let WatchEvent::Modified(pod) = &event
            && pod.metadata.deletion_timestamp.is_some()
        {
            assert_eq!(pod.metadata.deletion_grace_period_seconds, Some(30));
        }
        let done = matches!(&event, WatchEvent::Deleted(p) if p.name_any() == "p");
        events.push(event);
        if done {
            break;
        }
    }
    assert!(saw_running);
    let all: Vec<(String, String)> = events
        .iter()
        .filter(|e| !matches!(e, WatchEvent::Bookmark(_)))
        .map(describe)
        .collect();
    // "other" is not selected; "before" was created before the watch's resourceVersion, so only
    // its later status changes show up.
    assert!(all.iter().all(|(_, name)| name != "other"), "{all:?}");
    assert!(
        all.iter()
            .all(|(t, name)| name != "before" || t == "MODIFIED"),
        "{all:?}"
    );
    let kinds: Vec<&(String, String)> = all.iter().filter(|(_, name)| name == "p").collect();
    assert_eq!(kinds.first().unwrap().0, "ADDED");
    assert_eq!(kinds.last().unwrap().0, "DELETED");
    assert!(
        kinds[1..kinds.len() - 1]
            .iter()
            .all(|(t, _)| t == "MODIFIED"),
        "{kinds:?}"
    );
    let versions: Vec<u64> = events.iter().map(rv).filter(|v| *v > 0).collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    let graceful = events
        .iter()
        .any(|e| matches!(e, WatchEvent::Modified(p) if p.metadata.deletion_timestamp.is_some()));
    assert!(graceful, "no MODIFIED event carried the deletionTimestamp");
}

#[tokio::test]
async fn watch_from_zero_lists_current_objects_then_changes() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "w0");
    create(&pods, &idle_pod("a", &[])).await;
    create(&pods, &idle_pod("b", &[])).await;
    let mut stream = pods
        .watch(
            &WatchParams::default()
                .fields("metadata.name!=b")
                .timeout(10),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    let first = stream.try_next().await.unwrap().unwrap();
    assert_eq!(describe(&first), ("ADDED".to_owned(), "a".to_owned()));
    pods.delete(
        "b",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..DeleteParams::default()
        },
    )
    .await
    .unwrap();
    create(&pods, &idle_pod("c", &[])).await;
    let mut names = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        let (kind, name) = describe(&event);
        if kind == "ADDED" {
            names.push(name);
            break;
        }
    }
    assert_eq!(names, ["c"]);
}

#[tokio::test]
async fn timeout_seconds_ends_the_stream() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "wt");
    let started = Instant::now();
    let stream = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(events.iter().all(Result::is_ok));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[tokio::test]
async fn compacted_resource_version_is_410_expired() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "wc");
    let created = create(&pods, &idle_pod("a", &[])).await;
    let from = created.resource_version().unwrap();
    server.handle().expire_continue_tokens();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 error event, got {other:?}"),
    }
    assert!(stream.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn close_watches_ends_every_open_watch_and_a_resume_sees_later_changes() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "wr");
    let created = create(&pods, &idle_pod("a", &[])).await;
    let from = created.resource_version().unwrap();
    let mut stream = pods
        .watch(&WatchParams::default().timeout(30), &from)
        .await
        .unwrap()
        .boxed();
    let started = Instant::now();
    server.handle().close_watches();
    // Whatever was already queued may still arrive; then the stream ends, long before its
    // timeout.
    while let Some(event) = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        assert!(!matches!(event, WatchEvent::Error(_)), "{event:?}");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    // A resume from the same resourceVersion replays what happened after it.
    create(&pods, &idle_pod("b", &[])).await;
    let mut resumed = pods
        .watch(&WatchParams::default().timeout(5), &from)
        .await
        .unwrap()
        .boxed();
    let mut names = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, resumed.try_next())
        .await
        .unwrap()
        .unwrap()
    {
        if let WatchEvent::Added(pod) = &event {
            names.push(pod.name_any());
        }
        if names.contains(&"b".to_owned()) {
            break;
        }
    }
    assert!(names.contains(&"b".to_owned()), "{names:?}");
}
