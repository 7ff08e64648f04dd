//! Egress on the Kubernetes backend against the stateful fake API server: each policy shape
//! (`none`, `open`, CIDRs, host names) makes its NetworkPolicy; host names bring the namespace's
//! egress proxy (created by the first start that needs it, by racing starts without error, kept
//! across stops, removed by `collect_garbage` once unused) and the proxy variables; the status,
//! the listing and the watch state each instance's posture.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::client::Body;
use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::FakeKubeServer;
use mcp_orchestrator_api::{FixtureScript, McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{
    Egress, EgressPosture, EgressRule, InstanceEvent, InstanceFilters, InstanceId, K8sConfig,
    McpServer, OrphanKind, RestartPolicy, StartOptions,
};

const NS: &str = "mcpctl";
const IMAGE: &str = "mcp-test-server:fixture";
const GRACE: Duration = Duration::from_secs(2);
const WAIT: Duration = Duration::from_secs(15);
const PROXY: &str = "mcp-egress-proxy";

fn config() -> K8sConfig {
    K8sConfig {
        namespace: NS.to_owned(),
        ..K8sConfig::default()
    }
}

async fn orchestrator_with(server: &FakeKubeServer, config: K8sConfig) -> KubernetesOrchestrator {
    KubernetesOrchestrator::with_client(server.client().await, config).unwrap()
}

fn spec(name: &str, egress: Option<Egress>) -> McpServer {
    McpServer {
        args: FixtureScript::new().stdout("ready").to_args(),
        restart_policy: RestartPolicy::Never,
        egress,
        ..McpServer::new(name, IMAGE)
    }
}

fn hosts() -> Egress {
    Egress::Allow(vec![
        EgressRule::host("api.github.com", [443]),
        EgressRule::cidr("10.20.0.0/16", [5432]),
    ])
}

/// The proxy's objects in the fake, as `kind/name`.
fn proxy_objects(server: &FakeKubeServer) -> Vec<String> {
    let h = server.handle();
    let mut out = Vec::new();
    let mut add = |kind: &str, present: bool| {
        if present {
            out.push(format!("{kind}/{PROXY}"));
        }
    };
    add("deployment", h.get::<Deployment>(NS, PROXY).is_some());
    add("service", h.get::<Service>(NS, PROXY).is_some());
    add("networkpolicy", h.get::<NetworkPolicy>(NS, PROXY).is_some());
    add("rolebinding", h.get::<RoleBinding>(NS, PROXY).is_some());
    add("role", h.get::<Role>(NS, PROXY).is_some());
    add(
        "serviceaccount",
        h.get::<ServiceAccount>(NS, PROXY).is_some(),
    );
    out
}

const ALL_PROXY_OBJECTS: [&str; 6] = [
    "deployment/mcp-egress-proxy",
    "service/mcp-egress-proxy",
    "networkpolicy/mcp-egress-proxy",
    "rolebinding/mcp-egress-proxy",
    "role/mcp-egress-proxy",
    "serviceaccount/mcp-egress-proxy",
];

/// The instance's NetworkPolicy egress rules as short lines (peers, then ports).
fn egress_shape(server: &FakeKubeServer, id: &InstanceId) -> Vec<String> {
    let np = server
        .handle()
        .get::<NetworkPolicy>(NS, &format!("{id}-np"))
        .expect("the instance's NetworkPolicy");
    let spec = np.spec.unwrap();
    assert_eq!(
        spec.policy_types.as_deref(),
        Some(&["Ingress".to_owned(), "Egress".to_owned()][..])
    );
    spec.egress
        .unwrap_or_default()
        .iter()
        .map(|rule| {
            let peers: Vec<String> = rule
                .to
                .iter()
                .flatten()
                .map(
                    |p| match (&p.ip_block, &p.pod_selector, &p.namespace_selector) {
                        (Some(b), _, _) => {
                            format!(
                                "{} except {:?}",
                                b.cidr,
                                b.except.clone().unwrap_or_default()
                            )
                        }
                        (None, Some(pods), None) => format!("pods {:?}", pods.match_labels),
                        (None, Some(_), Some(_)) => "kube-dns".to_owned(),
                        other => format!("{other:?}"),
                    },
                )
                .collect();
            let ports: Vec<String> = rule
                .ports
                .iter()
                .flatten()
                .map(|p| match &p.port {
                    Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(n)) => {
                        format!("{}/{n}", p.protocol.clone().unwrap_or_default())
                    }
                    other => format!("{other:?}"),
                })
                .collect();
            format!("{} | {}", peers.join(", "), ports.join(" "))
        })
        .collect()
}

fn env_of(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| (e.name.clone(), e.value.clone().unwrap_or_default()))
        .collect()
}

#[tokio::test]
async fn each_policy_shape_makes_its_network_policy_and_only_hosts_bring_the_proxy() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator_with(&server, config()).await;
    let start = |name: &'static str, egress: Option<Egress>| {
        let o = o.clone();
        async move {
            o.start_server(&spec(name, egress), &StartOptions::default())
                .await
                .unwrap()
        }
    };
    let dns = "kube-dns | UDP/53 TCP/53";
    let open_rule = "0.0.0.0/0 except [\"169.254.0.0/16\"], ::/0 except [\"fe80::/10\", \"fd00:ec2::254/128\"] | ";

    let none = start("eg-none", Some(Egress::None)).await;
    assert_eq!(egress_shape(&server, &none), Vec::<String>::new());
    let open = start("eg-open", None).await;
    assert_eq!(egress_shape(&server, &open), [open_rule]);
    let cidrs = start(
        "eg-cidr",
        Some(Egress::Allow(vec![EgressRule::cidr("192.0.2.0/24", [443])])),
    )
    .await;
    assert_eq!(
        egress_shape(&server, &cidrs),
        ["192.0.2.0/24 except [] | TCP/443", dns]
    );
    assert_eq!(
        proxy_objects(&server),
        Vec::<String>::new(),
        "no host rule yet"
    );
    for id in [&none, &open, &cidrs] {
        let pod = server.handle().pod(NS, id.as_str()).unwrap();
        assert!(!env_of(&pod).contains_key("HTTPS_PROXY"), "{id}");
    }

    let host = start("eg-host", Some(hosts())).await;
    assert_eq!(
        egress_shape(&server, &host),
        [
            "10.20.0.0/16 except [] | TCP/5432".to_owned(),
            format!(
                "pods Some({{\"app.kubernetes.io/name\": \"{PROXY}\", \"mcpctl.io/component\": \"egress-proxy\"}}) | TCP/3128"
            ),
            dns.to_owned(),
        ]
    );
    assert_eq!(proxy_objects(&server), ALL_PROXY_OBJECTS);
    let pod = server.handle().pod(NS, host.as_str()).unwrap();
    let env = env_of(&pod);
    let url = format!("http://{host}@{PROXY}.{NS}.svc:3128");
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env[name], url, "{name}");
    }
    assert_eq!(env["NO_PROXY"], "localhost,127.0.0.1,::1,10.20.0.0/16");
    assert_eq!(
        pod.metadata.labels.as_ref().unwrap()["mcpctl.io/egress-proxy"],
        "client"
    );
    // The proxy's Service selects the proxy's pods, which its Deployment makes.
    let service = server.handle().get::<Service>(NS, PROXY).unwrap();
    let deployment = server.handle().get::<Deployment>(NS, PROXY).unwrap();
    let template_labels = deployment
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap()
        .labels
        .unwrap();
    for (k, v) in service.spec.unwrap().selector.unwrap() {
        assert_eq!(template_labels.get(&k), Some(&v), "{k}");
    }

    // Postures, in the status and the listing alike.
    let posture = |policy: Egress, id: &InstanceId, by: &str| EgressPosture {
        policy,
        enforced_by: format!("NetworkPolicy {id}-np{by}"),
        metadata_blocked: true,
    };
    let want = [
        (&none, posture(Egress::None, &none, "")),
        (&open, posture(Egress::Open, &open, "")),
        (
            &cidrs,
            posture(
                Egress::Allow(vec![EgressRule::cidr("192.0.2.0/24", [443])]),
                &cidrs,
                "",
            ),
        ),
        (&host, posture(hosts(), &host, " and egress proxy")),
    ];
    assert_postures(&o, &want).await;

    // Stopping every instance leaves the shared proxy.
    for (id, _) in &want {
        o.stop_server(id, GRACE).await.unwrap();
    }
    assert_eq!(proxy_objects(&server), ALL_PROXY_OBJECTS);
    assert!(server.handle().list::<Pod>(Some(NS)).is_empty());
}

/// `get_status` and the listing state exactly these postures (and list no other instance).
async fn assert_postures(o: &KubernetesOrchestrator, want: &[(&InstanceId, EgressPosture)]) {
    let listed = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert_eq!(
        listed.items.len(),
        want.len(),
        "the proxy's pods are no instances"
    );
    for (id, posture) in want {
        let status = o.get_status(id).await.unwrap();
        assert_eq!(status.egress.as_ref(), Some(posture), "{id}");
        let item = listed.items.iter().find(|i| &i.id == *id).unwrap();
        assert_eq!(item.status.egress.as_ref(), Some(posture), "{id} listed");
    }
}

#[tokio::test]
async fn racing_starts_both_create_the_proxy() {
    let server = FakeKubeServer::start().await;
    // Separate orchestrators, as two mcpd replicas would be.
    let a = orchestrator_with(&server, config()).await;
    let b = orchestrator_with(&server, config()).await;
    let starts: Vec<_> = (0..4)
        .map(|i| {
            let o = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                o.start_server(&spec("eg-race", Some(hosts())), &StartOptions::default())
                    .await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for start in starts {
        ids.push(start.await.unwrap().expect("every racing start succeeds"));
    }
    assert_eq!(proxy_objects(&server), ALL_PROXY_OBJECTS);
    let creates = server
        .handle()
        .requests()
        .iter()
        .filter(|r| r.method == http::Method::POST && r.path.ends_with("/deployments"))
        .count();
    assert_eq!(
        creates, 4,
        "each start asked; all but the first were told it exists"
    );
    for id in &ids {
        a.wait_until_running(id, WAIT).await.unwrap();
        a.stop_server(id, GRACE).await.unwrap();
    }
}

#[tokio::test]
async fn the_proxy_deployment_passes_restricted_pod_security() {
    let server = FakeKubeServer::start().await;
    server
        .handle()
        .set_namespace_label(NS, mcp_k8s_fake::POD_SECURITY_ENFORCE, Some("restricted"));
    let o = orchestrator_with(&server, config()).await;
    let id = o
        .start_server(&spec("eg-psa", Some(hosts())), &StartOptions::default())
        .await
        .unwrap();
    o.wait_until_running(&id, WAIT).await.unwrap();
    // The fake runs no Deployment controller: admit a pod of the proxy's template the way the
    // ReplicaSet controller would create it, through the namespace's Pod Security admission.
    let deployment = server.handle().get::<Deployment>(NS, PROXY).unwrap();
    let template = deployment.spec.unwrap().template;
    let mut metadata = template.metadata.unwrap();
    metadata.name = Some("mcp-egress-proxy-abc12".into());
    let pod = Pod {
        metadata,
        spec: template.spec,
        status: None,
    };
    let pods: Api<Pod> = Api::namespaced(server.client().await, NS);
    // The proxy's ServiceAccount exists (the backend made it), so ServiceAccount admission
    // passes too.
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("the proxy's pod passes restricted admission");
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn garbage_collection_removes_the_proxy_once_no_instance_needs_it() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator_with(&server, config()).await;
    let id = o
        .start_server(&spec("eg-gc", Some(hosts())), &StartOptions::default())
        .await
        .unwrap();
    let proxy_orphans = |report: &mcp_types::GcReport| -> Vec<(String, bool)> {
        report
            .orphans
            .iter()
            .filter(|o| o.kind == OrphanKind::EgressProxy)
            .map(|o| (o.name.clone(), o.removed))
            .collect()
    };
    // In use: kept, even by a real collection.
    assert_eq!(proxy_orphans(&o.collect_garbage(false).await.unwrap()), []);
    assert_eq!(proxy_objects(&server), ALL_PROXY_OBJECTS);
    o.stop_server(&id, GRACE).await.unwrap();
    // Unused: a dry run names every object and removes none.
    let dry = o.collect_garbage(true).await.unwrap();
    let mut names: Vec<(String, bool)> = ALL_PROXY_OBJECTS
        .iter()
        .map(|n| ((*n).to_owned(), false))
        .collect();
    names.sort();
    assert_eq!(proxy_orphans(&dry), names);
    assert_eq!(proxy_objects(&server), ALL_PROXY_OBJECTS);
    let real = o.collect_garbage(false).await.unwrap();
    assert!(proxy_orphans(&real).iter().all(|(_, removed)| *removed));
    assert_eq!(proxy_orphans(&real).len(), 6);
    assert_eq!(proxy_objects(&server), Vec::<String>::new());
    // Nothing left to collect; the next start that needs it makes it again.
    assert_eq!(proxy_orphans(&o.collect_garbage(false).await.unwrap()), []);
    let again = o
        .start_server(&spec("eg-gc", Some(hosts())), &StartOptions::default())
        .await
        .unwrap();
    assert_eq!(proxy_objects(&server), ALL_PROXY_OBJECTS);
    o.stop_server(&again, GRACE).await.unwrap();
}

#[tokio::test]
async fn a_refused_proxy_fails_the_start_and_leaves_no_instance() {
    let server = FakeKubeServer::start().await;
    let inner = server.client().await;
    // The Role of an older rbac.yaml: no deployments.
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let inner = inner.clone();
        let refuse = request.method() == http::Method::POST
            && request.uri().path().ends_with("/deployments");
        async move {
            if refuse {
                let status = serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "code": 403, "reason": "Forbidden",
                    "message": "deployments.apps is forbidden: User \"system:serviceaccount:mcpctl:mcpctl\" cannot create resource \"deployments\" in API group \"apps\" in the namespace \"mcpctl\"",
                });
                return Ok::<_, kube::Error>(
                    http::Response::builder()
                        .status(403)
                        .header("content-type", "application/json")
                        .body(Body::from(serde_json::to_vec(&status).unwrap()))
                        .unwrap(),
                );
            }
            inner.send(request).await
        }
    });
    let o = KubernetesOrchestrator::with_client(kube::Client::new(service, NS), config()).unwrap();
    let error = o
        .start_server(&spec("eg-refused", Some(hosts())), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::PermissionDenied { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("deployment"), "{error}");
    // The instance is rolled back; the proxy objects made before the refusal stay (shared).
    assert!(server.handle().list::<Pod>(Some(NS)).is_empty());
    let policies: Vec<String> = server
        .handle()
        .list::<NetworkPolicy>(Some(NS))
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(policies, [PROXY]);
    assert!(
        o.list_instances(&InstanceFilters::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn the_posture_says_when_network_policies_are_off_and_the_default_applies() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator_with(
        &server,
        K8sConfig {
            network_policies: false,
            default_egress: Egress::None,
            ..config()
        },
    )
    .await;
    let mut events = o.watch(&InstanceFilters::server("eg-off")).await.unwrap();
    let id = o
        .start_server(&spec("eg-off", None), &StartOptions::default())
        .await
        .unwrap();
    let want = EgressPosture {
        policy: Egress::None,
        enforced_by: "not enforced: network policies disabled in config".into(),
        metadata_blocked: false,
    };
    assert_eq!(o.get_status(&id).await.unwrap().egress, Some(want.clone()));
    // The watch reports it too.
    let seen = tokio::time::timeout(WAIT, async {
        while let Some(event) = events.next().await {
            if let Ok(InstanceEvent::Added(instance) | InstanceEvent::Modified(instance)) = event
                && instance.id == id
            {
                return instance.status.egress;
            }
        }
        None
    })
    .await
    .expect("an event in time");
    assert_eq!(seen, Some(want));
    assert!(server.handle().list::<NetworkPolicy>(Some(NS)).is_empty());
    o.stop_server(&id, GRACE).await.unwrap();
}
