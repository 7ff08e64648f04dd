//! Lists: label selectors of every kind, field selectors, and `limit`/`continue` pagination with
//! snapshots, `remainingItemCount` and expired tokens.

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use crate::{create, idle_pod, start, status_of};

async fn names(pods: &Api<Pod>, params: &ListParams) -> Vec<String> {
    pods.list(params)
        .await
        .unwrap()
        .items
        .iter()
        .map(ResourceExt::name_any)
        .collect()
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sel");
    for (name, labels) in [
        ("a", vec![("app", "web"), ("tier", "front")]),
        ("b", vec![("app", "web"), ("tier", "back")]),
        ("c", vec![("app", "db")]),
        ("d", vec![]),
    ] {
        create(&pods, &idle_pod(name, &labels)).await;
    }
    // A namesake in another namespace never shows up.
    create(
        &Api::namespaced(client, "elsewhere"),
        &idle_pod("a", &[("app", "web")]),
    )
    .await;

    let cases: &[(&str, &[&str])] = &[
        ("app=web", &["a", "b"]),
        ("app==web", &["a", "b"]),
        ("app!=web", &["c", "d"]),
        ("app in (db, web)", &["a", "b", "c"]),
        ("app notin (web)", &["c", "d"]),
        ("tier", &["a", "b"]),
        ("!tier", &["c", "d"]),
        ("app=web,tier!=front", &["b"]),
        ("app in (web),!tier", &[]),
    ];
    for (selector, expected) in cases {
        let got = names(&pods, &ListParams::default().labels(selector)).await;
        assert_eq!(got, *expected, "labelSelector {selector}");
    }
    let got = names(&pods, &ListParams::default().fields("metadata.name=c")).await;
    assert_eq!(got, ["c"]);
    let got = names(
        &pods,
        &ListParams::default()
            .fields("metadata.name!=c")
            .labels("app"),
    )
    .await;
    assert_eq!(got, ["a", "b"]);

    let status = status_of(
        pods.list(&ListParams::default().labels("app in (web"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
    let status = status_of(
        pods.list(&ListParams::default().fields("spec.bogus=x"))
            .await,
    );
    assert_eq!(status.code, 400);
    assert!(
        status.message.contains("field label not supported"),
        "{}",
        status.message
    );

    // Cluster-wide lists see both namespaces.
    let all: Api<Pod> = Api::all(pods.clone().into_client());
    let everywhere = all
        .list(&ListParams::default().labels("app=web"))
        .await
        .unwrap();
    let keys: Vec<String> = everywhere
        .items
        .iter()
        .map(|p| format!("{}/{}", p.namespace().unwrap(), p.name_any()))
        .collect();
    assert_eq!(keys, ["elsewhere/a", "sel/a", "sel/b"]);
}

#[tokio::test]
async fn pagination_visits_each_item_once_from_one_snapshot() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "pages");
    for i in [4, 1, 6, 3, 7, 2, 5] {
        create(&pods, &idle_pod(&format!("pod-{i}"), &[("app", "x")])).await;
    }
    let mut seen = Vec::new();
    let mut remaining = Vec::new();
    let mut versions = Vec::new();
    let mut params = ListParams::default().limit(3);
    loop {
        let page = pods.list(&params).await.unwrap();
        seen.extend(page.items.iter().map(ResourceExt::name_any));
        remaining.push(page.metadata.remaining_item_count);
        versions.push(page.metadata.resource_version.clone());
        if seen.len() == 3 {
            // Changes after the first page are not part of this list.
            create(&pods, &idle_pod("pod-0", &[])).await;
            create(&pods, &idle_pod("pod-9", &[])).await;
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => break,
        }
    }
    let expected: Vec<String> = (1..=7).map(|i| format!("pod-{i}")).collect();
    assert_eq!(seen, expected);
    assert_eq!(remaining, [Some(4), Some(1), None]);
    assert!(versions.windows(2).all(|w| w[0] == w[1]), "{versions:?}");

    // With a selector the apiserver cannot count what is left.
    let page = pods
        .list(&ListParams::default().labels("app=x").limit(2))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 2);
    assert_eq!(page.metadata.remaining_item_count, None);
    assert!(page.metadata.continue_.is_some());
}

#[tokio::test]
async fn expired_and_invalid_continue_tokens() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "expiry");
    for i in 0..4 {
        create(&pods, &idle_pod(&format!("p{i}"), &[])).await;
    }
    let first = pods.list(&ListParams::default().limit(2)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    server.handle().expire_continue_tokens();
    let status = status_of(
        pods.list(&ListParams::default().limit(2).continue_token(&token))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
    assert!(status.message.contains("too old"), "{}", status.message);
    // The 410 offers a token to continue inconsistently, like the apiserver.
    let fresh = status.metadata.and_then(|m| m.continue_).unwrap();
    let rest = pods
        .list(&ListParams::default().limit(2).continue_token(&fresh))
        .await
        .unwrap();
    let names: Vec<String> = rest.items.iter().map(ResourceExt::name_any).collect();
    assert_eq!(names, ["p2", "p3"]);

    let status = status_of(
        pods.list(&ListParams::default().limit(2).continue_token("garbage"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn the_compactor_expires_tokens_after_one_to_two_intervals() {
    let interval = std::time::Duration::from_millis(200);
    let server = mcp_k8s_fake::FakeKubeServer::with_options(mcp_k8s_fake::FakeKubeOptions {
        compaction_interval: Some(interval),
        ..mcp_k8s_fake::FakeKubeOptions::default()
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(server.client().await, "compact");
    for name in ["a", "b", "c"] {
        create(&pods, &idle_pod(name, &[])).await;
    }
    let first = pods.list(&ListParams::default().limit(1)).await.unwrap();
    let token = first.metadata.continue_.clone().unwrap();
    // The revision moves on, then two compactions pass: the first compacts to where the
    // previous one stood, the second past the token.
    create(&pods, &idle_pod("d", &[])).await;
    tokio::time::sleep(interval * 3).await;
    let status = status_of(
        pods.list(&ListParams::default().limit(1).continue_token(&token))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (410, "Expired"));
}
