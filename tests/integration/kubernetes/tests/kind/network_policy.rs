//! NetworkPolicy enforcement (kindnet enforces policies since kind v0.24.0): only pods labelled
//! `mcpctl.io/component: local-proxy` reach an HTTP-transport server, and a server's egress
//! allow-list is enforced.
//!
//! The probes run the `mcp-k8s-probe` image. Each test first shows the target is reachable, so
//! an unreachable result can only come from the policy.

use std::time::Duration;

use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_types::{McpServer, Phase, RestartPolicy, StartOptions, labels};

use crate::support::{TIMEOUT, cluster, restricted_pod, unique};

/// Plenty of attempts where the connection must work (the policy and the server may still be
/// settling); few where it must fail.
const ALLOWED: [&str; 4] = ["--attempts", "30", "--timeout-ms", "2000"];
const DENIED: [&str; 4] = ["--attempts", "3", "--timeout-ms", "3000"];

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn only_local_proxies_reach_an_http_server() {
    let kind = cluster().await;
    let o = &kind.orchestrator;
    let id = o
        .start_server(&kind.http_server("netpol", 8080), &StartOptions::default())
        .await
        .expect("start");
    o.wait_until_running(&id, TIMEOUT).await.expect("running");
    let ip = kind.pod_ip(id.as_str()).await;

    let proxy = [(labels::COMPONENT, labels::LOCAL_PROXY)];
    let allowed: Vec<&str> = ["http", ip.as_str(), "8080"]
        .into_iter()
        .chain(ALLOWED)
        .collect();
    let (ok, out) = kind.run_probe(&unique("proxy"), &proxy, &allowed).await;
    assert!(
        ok && out.contains("reachable: HTTP/1.1"),
        "a local proxy is refused:\n{out}"
    );

    let denied: Vec<&str> = ["http", ip.as_str(), "8080"]
        .into_iter()
        .chain(DENIED)
        .collect();
    let (ok, out) = kind
        .run_probe(&unique("stranger"), &[("app", "stranger")], &denied)
        .await;
    assert!(
        !ok && out.contains("unreachable"),
        "a pod without `{}: {}` reached the server: is NetworkPolicy enforced by the CNI?\n{out}",
        labels::COMPONENT,
        labels::LOCAL_PROXY
    );
    o.stop_server(&id, Duration::from_secs(2))
        .await
        .expect("stop");
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn the_egress_allow_list_is_enforced() {
    let kind = cluster().await;
    // A target no policy selects: a bare HTTP test server.
    let target = unique("target");
    let pods = kind.pods();
    let pod = restricted_pod(
        &target,
        &kind.image,
        &[],
        vec!["http".into(), "--port".into(), "8080".into()],
    );
    pods.create(&kube::api::PostParams::default(), &pod)
        .await
        .expect("create the target");
    let ip = crate::support::eventually("the target's IP", TIMEOUT, || {
        let pods = pods.clone();
        let target = target.clone();
        async move {
            let pod = pods.get(&target).await.ok()?;
            let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
            running.then(|| pod.status?.pod_ip).flatten()
        }
    })
    .await;

    let o = &kind.orchestrator;
    let client = |name: &str, egress: Vec<String>, attempts: [&str; 4]| McpServer {
        egress: Some(mcp_types::Egress::Allow(
            egress
                .iter()
                .map(|c| mcp_types::EgressRule::cidr(c, []))
                .collect(),
        )),
        restart_policy: RestartPolicy::Never,
        ..kind.probe_server(
            name,
            &["http", ip.as_str(), "8080"]
                .into_iter()
                .chain(attempts)
                .collect::<Vec<_>>(),
        )
    };
    let cases = [
        (
            client("egress-open", vec![format!("{ip}/32")], ALLOWED),
            Phase::Succeeded,
        ),
        (client("egress-closed", Vec::new(), DENIED), Phase::Failed),
    ];
    for (spec, expected) in cases {
        let id = o
            .start_server(&spec, &StartOptions::default())
            .await
            .expect("start a probe server");
        let status = o
            .wait_for(&id, TIMEOUT, "finished", |s| s.phase.is_terminal())
            .await
            .expect("the probe finishes");
        let logs = kind
            .pods()
            .logs(id.as_str(), &kube::api::LogParams::default())
            .await
            .unwrap_or_default();
        assert_eq!(
            status.phase, expected,
            "{} with egress {:?}:\n{logs}",
            spec.name, spec.egress
        );
        o.stop_server(&id, Duration::from_secs(2))
            .await
            .expect("stop");
    }
    let _ = pods
        .delete(&target, &kube::api::DeleteParams::default())
        .await;
}
