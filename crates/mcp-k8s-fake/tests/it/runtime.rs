//! kube-runtime's watcher against the fake: paginated list+watch, streaming lists (initial
//! events ended by a bookmark), and periodic bookmarks.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, WatchEvent, WatchParams};
use kube::runtime::watcher::{self, Event};
use mcp_k8s_fake::{FakeKubeOptions, FakeKubeServer};

use crate::{WAIT, create, idle_pod, start};

/// Runs a watcher through its initial list, a create and a delete.
async fn exercise(pods: Api<Pod>, config: watcher::Config) {
    for name in ["a", "b", "c"] {
        create(&pods, &idle_pod(name, &[])).await;
    }
    let mut events = watcher::watcher(pods.clone(), config).boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::Init) => {}
            Some(Event::InitApply(pod)) => initial.push(pod.name_any()),
            Some(Event::InitDone) => break,
            other => panic!("unexpected event during the initial list: {other:?}"),
        }
    }
    initial.sort();
    assert_eq!(initial, ["a", "b", "c"]);
    create(&pods, &idle_pod("d", &[])).await;
    pods.delete("a", &DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let (mut applied_d, mut deleted_a) = (false, false);
    while !(applied_d && deleted_a) {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(Event::Apply(pod)) if pod.name_any() == "d" => applied_d = true,
            Some(Event::Delete(pod)) => {
                assert_eq!(pod.name_any(), "a");
                deleted_a = true;
            }
            Some(_) => {}
            None => panic!("the watcher ended"),
        }
    }
}

#[tokio::test]
async fn watcher_with_paginated_list_and_watch() {
    let (_server, client) = start().await;
    exercise(
        Api::namespaced(client, "lw"),
        watcher::Config::default().page_size(2),
    )
    .await;
}

#[tokio::test]
async fn watcher_with_streaming_lists() {
    let (_server, client) = start().await;
    exercise(
        Api::namespaced(client, "stream"),
        watcher::Config::default().streaming_lists(),
    )
    .await;
}

#[tokio::test]
async fn bookmarks_arrive_periodically_when_allowed() {
    let server = FakeKubeServer::with_options(FakeKubeOptions {
        bookmark_interval: Duration::from_millis(50),
        ..FakeKubeOptions::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(server.client().await, "bm");
    let created = create(&pods, &idle_pod("a", &[])).await;
    let mut stream = pods
        .watch(&WatchParams::default().timeout(5), "0")
        .await
        .unwrap()
        .boxed();
    let mut saw_added = false;
    loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
        {
            Some(WatchEvent::Added(pod)) => saw_added = pod.uid() == created.uid(),
            Some(WatchEvent::Bookmark(bookmark)) => {
                let rv: u64 = bookmark.metadata.resource_version.parse().unwrap();
                assert!(rv >= created.resource_version().unwrap().parse().unwrap());
                break;
            }
            Some(_) => {}
            None => panic!("the watch ended without a bookmark"),
        }
    }
    assert!(saw_added);

    let mut quiet = pods
        .watch(
            &WatchParams {
                bookmarks: false,
                ..WatchParams::default()
            }
            .timeout(1),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    while let Some(event) = quiet.try_next().await.unwrap() {
        assert!(
            !matches!(event, WatchEvent::Bookmark(_)),
            "bookmark without allowWatchBookmarks"
        );
    }
}
