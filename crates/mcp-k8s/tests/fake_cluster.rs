//! `KubernetesOrchestrator` against the stateful fake API server (`mcp-k8s-fake`), through a real
//! `kube::Client`: the whole conformance kit, then Kubernetes-specific behaviour (companion
//! objects, status reasons under injected failures, expired continue tokens, unmanaged pods,
//! clean-up after a failed start, retries, configuration loading).

mod support {
    pub(crate) mod secrets;
}

use std::time::Duration;

use mcp_k8s::KubernetesOrchestrator;
use mcp_k8s_fake::FakeKubeServer;
use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::conformance::{
    self, Capability, FollowAcrossRestarts, Harness, HttpConnect, ImageServers, ServerFactory,
    StreamSupport, Support,
};
use mcp_types::{InstanceFilters, K8sConfig};

const NS: &str = "mcpctl";
const IMAGE: &str = "mcp-test-server:fixture";
/// An image the fake kubelet runs as the real test server binary (`run_image_as`), for the
/// scripts that serve MCP: their bytes go through a real attach.
const REAL_IMAGE: &str = "mcp-test-server:real";

/// Scripts that serve MCP run the real test server; the others are interpreted by the kubelet
/// (whose merged log keeps write order exactly, as the kit demands of `Merged` engines).
struct FakeClusterServers;

impl ServerFactory for FakeClusterServers {
    fn server(&self, name: &str, script: &FixtureScript) -> McpServer {
        let image = if script.serves().is_some() {
            REAL_IMAGE
        } else {
            IMAGE
        };
        ImageServers {
            image: image.to_owned(),
        }
        .server(name, script)
    }
}

fn config() -> K8sConfig {
    K8sConfig {
        namespace: NS.to_owned(),
        ..K8sConfig::default()
    }
}

async fn orchestrator(server: &FakeKubeServer) -> KubernetesOrchestrator {
    KubernetesOrchestrator::with_client(server.client().await, config()).unwrap()
}

#[tokio::test]
async fn passes_the_conformance_kit() {
    let binary = tokio::task::spawn_blocking(|| {
        mcp_test_server::static_binary().expect("building mcp-test-server")
    })
    .await
    .expect("build task");
    let server = FakeKubeServer::start().await;
    server.handle().run_image_as(REAL_IMAGE, binary);
    let o = orchestrator(&server).await;
    let servers = FakeClusterServers;
    let secrets = support::secrets::KubeSecrets::new(server.client().await, NS);
    let h = Harness::new(&o, &servers)
        .with_timeout(Duration::from_secs(15))
        // The container log merges stdout and stderr.
        .with_streams(StreamSupport::Merged)
        // A log follow request ends with the container (the kubelet's), restarted or not.
        .with_follow_across_restarts(FollowAcrossRestarts::Ends)
        // An HTTP server's URL is its Service's cluster DNS name.
        .with_http_connect(HttpConnect::InEngineNetwork)
        // A PersistentVolumeClaim per volume, a NetworkPolicy for egress.
        .with_capability(Capability::Volumes, Support::Honoured)
        .with_capability(Capability::Egress, Support::Honoured)
        // Every pod states its effective policy; the NetworkPolicy enforces it.
        .with_egress_posture(mcp_types::Egress::Open)
        // Secrets as Secret objects; secret files are `secret` volumes (0400 plus the group
        // read the kubelet adds for the pod's fsGroup).
        .with_secrets(&secrets)
        .with_secret_file_mode(0o440);
    // A forced reconnect: every watch closed, so the watcher resumes from its last
    // resourceVersion. (Compacting too, for the 410 path, would expire the continue tokens of
    // the pagination check running concurrently: `watch_relists_after_410` covers it alone.)
    let fake = server.handle();
    let h = h.with_watch_break(Arc::new(move || fake.close_watches()));
    if let Err(report) = conformance::run_all(&h).await {
        panic!("{report}");
    }
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(left.items.is_empty(), "the kit left {:?}", left.items);
    // Stopping removes each instance's companions too, not only its pod.
    let objects = everything(&server);
    assert!(objects.is_empty(), "the kit left {objects:?}");
}

/// Reads `events` into `seen` until one satisfies `want`.
async fn next_until(
    events: &mut mcp_orchestrator_api::InstanceEvents,
    seen: &mut Vec<mcp_types::InstanceEvent>,
    want: &dyn Fn(&mcp_types::InstanceEvent) -> bool,
) {
    loop {
        let event = tokio::time::timeout(Duration::from_secs(15), events.next())
            .await
            .expect("an event in time")
            .expect("the watch goes on")
            .expect("no error item");
        seen.push(event.clone());
        if want(&event) {
            return;
        }
    }
}

/// A watch whose resume point was compacted away (410 Expired) lists again and reports exactly
/// what changed meanwhile: the stopped instance `Removed`, the new one `Added`, nothing twice.
#[tokio::test]
async fn watch_relists_after_410() {
    use mcp_types::{EventKind, InstanceEvent, Phase};
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let servers = FakeClusterServers;
    let idle = FixtureScript::new().stdout("ready");
    let spec = |name: &str| servers.server(name, &idle);
    let filters = InstanceFilters::server("w410");
    let mut events = o.watch(&filters).await.unwrap();
    let mut seen: Vec<InstanceEvent> = Vec::new();
    next_until(&mut events, &mut seen, &|e| {
        matches!(e, InstanceEvent::Synced)
    })
    .await;
    let a = o
        .start_server(&spec("w410"), &StartOptions::default())
        .await
        .unwrap();
    next_until(&mut events, &mut seen, &|e| {
        e.instance()
            .is_some_and(|i| i.id == a && i.status.phase == Phase::Running)
    })
    .await;
    let before = server.handle().requests().len();
    server.handle().expire_continue_tokens();
    server.handle().close_watches();
    o.stop_server(&a, Duration::from_secs(2)).await.unwrap();
    let b = o
        .start_server(&spec("w410"), &StartOptions::default())
        .await
        .unwrap();
    next_until(&mut events, &mut seen, &|e| {
        e.kind() == EventKind::Removed && e.id() == Some(&a)
    })
    .await;
    next_until(&mut events, &mut seen, &|e| {
        e.kind() == EventKind::Added && e.id() == Some(&b)
    })
    .await;
    // The watcher listed again after the 410 (a list request without watch=true).
    let relisted = server.handle().requests()[before..].iter().any(|r| {
        r.method == http::Method::GET
            && r.path.ends_with("/pods")
            && r.query_param("watch").as_deref() != Some("true")
    });
    assert!(relisted, "no re-list after the 410");
    o.stop_server(&b, Duration::from_secs(2)).await.unwrap();
    next_until(&mut events, &mut seen, &|e| {
        e.kind() == EventKind::Removed && e.id() == Some(&b)
    })
    .await;
    let added_a = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Added && e.id() == Some(&a))
        .count();
    let removed_a = seen
        .iter()
        .filter(|e| e.kind() == EventKind::Removed && e.id() == Some(&a))
        .count();
    assert_eq!((added_a, removed_a), (1, 1), "{seen:?}");
}

// ---------------------------------------------------------------------------------------------
// Helpers

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::client::Body;
use mcp_k8s_fake::{Failure, FailureTarget, FakeKubeOptions, KubeletTimings};
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_orchestrator_api::{OrchestratorError, OrchestratorExt};
use mcp_types::{
    InstanceId, LogOptions, McpServer, Phase, RestartPolicy, StartOptions, Timestamp, Transport,
    labels, reasons,
};

const WAIT: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(2);

fn script_spec(name: &str, image: &str, script: &FixtureScript) -> McpServer {
    McpServer {
        args: script.to_args(),
        restart_policy: RestartPolicy::Never,
        ..McpServer::new(name, image)
    }
}

fn idle(name: &str) -> McpServer {
    script_spec(name, IMAGE, &FixtureScript::new().stdout("ready"))
}

/// An HTTP server with a volume: a pod, a NetworkPolicy, a PVC and a Service.
fn http_with_volume(name: &str) -> McpServer {
    McpServer {
        transport: Transport::StreamableHttp,
        port: Some(8080),
        volumes: vec![
            serde_json::from_value(serde_json::json!({
                "name": "data", "size": "1Gi", "mountPath": "/data"
            }))
            .unwrap(),
        ],
        ..idle(name)
    }
}

fn instance_labelled<T: kube::Resource>(objects: &[T], id: &InstanceId) -> Vec<String> {
    objects
        .iter()
        .filter(|o| {
            o.meta()
                .labels
                .as_ref()
                .and_then(|l| l.get(labels::INSTANCE))
                .is_some_and(|v| v == id.as_str())
        })
        .filter_map(|o| o.meta().name.clone())
        .collect()
}

/// Every object of any served kind left in the namespace.
fn everything(server: &FakeKubeServer) -> Vec<String> {
    let h = server.handle();
    let mut names: Vec<String> = Vec::new();
    let mut add = |kind: &str, list: Vec<Option<String>>| {
        names.extend(list.into_iter().flatten().map(|n| format!("{kind}/{n}")));
    };
    add(
        "pod",
        h.list::<Pod>(Some(NS))
            .into_iter()
            .map(|o| o.metadata.name)
            .collect(),
    );
    add(
        "service",
        h.list::<Service>(Some(NS))
            .into_iter()
            .map(|o| o.metadata.name)
            .collect(),
    );
    add(
        "pvc",
        h.list::<PersistentVolumeClaim>(Some(NS))
            .into_iter()
            .map(|o| o.metadata.name)
            .collect(),
    );
    add(
        "networkpolicy",
        h.list::<NetworkPolicy>(Some(NS))
            .into_iter()
            .map(|o| o.metadata.name)
            .collect(),
    );
    names
}

/// A client for the fake in which `intercept` may answer a request itself (a canned failure)
/// instead of the fake.
async fn intercepted_client<F>(server: &FakeKubeServer, intercept: F) -> kube::Client
where
    F: Fn(&http::Request<Body>) -> Option<(u16, &'static str)> + Send + Sync + 'static,
{
    let inner = server.client().await;
    let intercept = Arc::new(intercept);
    let service = tower::service_fn(move |request: http::Request<Body>| {
        let inner = inner.clone();
        let canned = intercept(&request);
        async move {
            match canned {
                Some((code, reason)) => {
                    let status = serde_json::json!({
                        "kind": "Status", "apiVersion": "v1", "metadata": {},
                        "status": "Failure", "code": code, "reason": reason,
                        "message": format!("injected {code} {reason}"),
                    });
                    Ok::<_, kube::Error>(
                        http::Response::builder()
                            .status(code)
                            .header("content-type", "application/json")
                            .body(Body::from(serde_json::to_vec(&status).unwrap()))
                            .unwrap(),
                    )
                }
                None => inner.send(request).await,
            }
        }
    });
    kube::Client::new(service, NS)
}

fn is(request: &http::Request<Body>, method: &http::Method, path_end: &str) -> bool {
    request.method() == method && request.uri().path().ends_with(path_end)
}

async fn texts(o: &KubernetesOrchestrator, id: &InstanceId, options: &LogOptions) -> Vec<String> {
    let stream = o.get_logs(id, options).await.unwrap();
    tokio::time::timeout(WAIT, stream.map(|l| l.unwrap().text).collect::<Vec<_>>())
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Objects of an instance

#[tokio::test]
async fn companion_objects_are_created_labelled_and_removed() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let h = server.handle();
    let id = o
        .start_server(&http_with_volume("companions"), &StartOptions::default())
        .await
        .unwrap();

    let pod = h
        .pod(NS, id.as_str())
        .expect("the pod is named after the id");
    let uid = pod.metadata.uid.clone().unwrap();
    assert_eq!(
        instance_labelled(&h.list::<PersistentVolumeClaim>(Some(NS)), &id),
        [format!("{id}-data")]
    );
    assert_eq!(
        instance_labelled(&h.list::<NetworkPolicy>(Some(NS)), &id),
        [format!("{id}-np")]
    );
    let services = h.list::<Service>(Some(NS));
    assert_eq!(instance_labelled(&services, &id), [format!("{id}-svc")]);
    let owners = services[0].metadata.owner_references.clone().unwrap();
    assert_eq!(
        (
            owners[0].kind.as_str(),
            owners[0].name.as_str(),
            owners[0].uid.as_str()
        ),
        ("Pod", id.as_str(), uid.as_str()),
        "the Service is owned by the pod"
    );

    let page = o
        .list_instances(&InstanceFilters::server("companions"))
        .await
        .unwrap();
    assert_eq!(
        page.items[0].endpoint.as_deref(),
        Some(format!("http://{id}-svc.{NS}.svc:8080/mcp").as_str())
    );

    o.stop_server(&id, GRACE).await.unwrap();
    assert!(
        everything(&server).is_empty(),
        "left: {:?}",
        everything(&server)
    );
}

#[tokio::test]
async fn network_policies_can_be_turned_off() {
    let server = FakeKubeServer::start().await;
    let o = KubernetesOrchestrator::with_client(
        server.client().await,
        K8sConfig {
            network_policies: false,
            ..config()
        },
    )
    .unwrap();
    let id = o
        .start_server(&idle("nonp"), &StartOptions::default())
        .await
        .unwrap();
    assert_eq!(everything(&server), [format!("pod/{id}")]);
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn a_failed_start_leaves_nothing_behind() {
    let server = FakeKubeServer::start().await;
    // The Service create fails after the claim, the policy and the pod exist.
    let client = intercepted_client(&server, |r| {
        is(r, &http::Method::POST, "/services").then_some((500, "InternalError"))
    })
    .await;
    let o = KubernetesOrchestrator::with_client(client, config()).unwrap();
    let error = o
        .start_server(&http_with_volume("rollback"), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        everything(&server).is_empty(),
        "left: {:?}",
        everything(&server)
    );

    // A refused pod (403) undoes the claim and the policy.
    let client = intercepted_client(&server, |r| {
        is(r, &http::Method::POST, "/pods").then_some((403, "Forbidden"))
    })
    .await;
    let o = KubernetesOrchestrator::with_client(client, config()).unwrap();
    let error = o
        .start_server(&http_with_volume("rollback"), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::PermissionDenied { .. }),
        "{error:?}"
    );
    assert!(
        everything(&server).is_empty(),
        "left: {:?}",
        everything(&server)
    );
}

#[tokio::test]
async fn a_taken_name_is_retried_once_with_a_fresh_one() {
    let server = FakeKubeServer::start().await;
    let pod_posts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&pod_posts);
    let client = intercepted_client(&server, move |r| {
        (is(r, &http::Method::POST, "/pods") && counter.fetch_add(1, Ordering::SeqCst) == 0)
            .then_some((409, "AlreadyExists"))
    })
    .await;
    let o = KubernetesOrchestrator::with_client(client, config()).unwrap();
    let id = o
        .start_server(&http_with_volume("taken"), &StartOptions::default())
        .await
        .unwrap();
    assert_eq!(pod_posts.load(Ordering::SeqCst), 2);
    let mut left = everything(&server);
    left.sort();
    let mut expected = vec![
        format!("networkpolicy/{id}-np"),
        format!("pod/{id}"),
        format!("pvc/{id}-data"),
        format!("service/{id}-svc"),
    ];
    expected.sort();
    assert_eq!(left, expected, "only the second attempt's objects remain");
    o.stop_server(&id, GRACE).await.unwrap();

    // Two collisions in a row are reported.
    let client = intercepted_client(&server, |r| {
        is(r, &http::Method::POST, "/pods").then_some((409, "AlreadyExists"))
    })
    .await;
    let o = KubernetesOrchestrator::with_client(client, config()).unwrap();
    let error = o
        .start_server(&idle("taken"), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::AlreadyExists { .. }),
        "{error:?}"
    );
    assert!(
        everything(&server).is_empty(),
        "left: {:?}",
        everything(&server)
    );
}

// ---------------------------------------------------------------------------------------------
// Status under injected failures

#[tokio::test]
async fn image_pull_failures_show_and_stop_the_wait() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    server
        .handle()
        .inject(FailureTarget::image("missing:1"), Failure::ImagePull);
    let id = o
        .start_server(
            &script_spec("pull", "missing:1", &FixtureScript::new()),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let error = o.wait_until_running(&id, WAIT).await.unwrap_err();
    let OrchestratorError::Exited { status, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(status.phase, Phase::Pending);
    assert!(
        [reasons::ERR_IMAGE_PULL, reasons::IMAGE_PULL_BACKOFF]
            .contains(&status.reason.as_deref().unwrap_or_default()),
        "{status:?}"
    );
    assert!(status.message.unwrap_or_default().contains("missing:1"));
    // A container that never started has no lines (and no error).
    assert!(texts(&o, &id, &LogOptions::default()).await.is_empty());
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn a_crash_loop_ends_the_wait_until_running() {
    // A long back-off keeps the container waiting in CrashLoopBackOff while the wait runs, so
    // the outcome is exact. Restart counts and previous logs are checked by the kit.
    let server = FakeKubeServer::with_options(FakeKubeOptions {
        timings: KubeletTimings {
            restart_backoff: Duration::from_secs(5),
            ..KubeletTimings::default()
        },
        ..FakeKubeOptions::default()
    })
    .await;
    let o = orchestrator(&server).await;
    let spec = McpServer {
        restart_policy: RestartPolicy::Always,
        ..script_spec(
            "crash",
            IMAGE,
            &FixtureScript::new().stdout("starting").exit(3),
        )
    };
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let status = o
        .wait_for(&id, WAIT, "crash-looping", |s| {
            s.reason.as_deref() == Some(reasons::CRASH_LOOP_BACKOFF)
        })
        .await
        .unwrap();
    assert_eq!(status.phase, Phase::Pending, "{status:?}");
    assert_eq!(status.exit_code, Some(3), "{status:?}");
    let error = o.wait_until_running(&id, WAIT).await;
    assert!(
        matches!(&error, Err(OrchestratorError::Exited { status, .. })
            if status.reason.as_deref() == Some(reasons::CRASH_LOOP_BACKOFF)
                && status.phase == Phase::Pending),
        "{error:?}"
    );
    o.stop_server(&id, GRACE).await.unwrap();
}

#[rstest::rstest]
#[case::oom(Failure::OomKilled, Phase::Failed, reasons::OOM_KILLED, Some(137))]
#[case::unschedulable(Failure::Unschedulable, Phase::Pending, reasons::UNSCHEDULABLE, None)]
#[tokio::test]
async fn injected_failures_map_to_reasons(
    #[case] failure: Failure,
    #[case] phase: Phase,
    #[case] reason: &str,
    #[case] exit_code: Option<i32>,
) {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let image = format!("failing-{}:1", reason.to_lowercase());
    server
        .handle()
        .inject(FailureTarget::image(image.clone()), failure.clone());
    if failure == Failure::Unschedulable {
        // Scheduling failures are per pod; every pod of this server's name prefix gets it.
        server.handle().inject(
            FailureTarget::pod_name_prefix(NS, "mcp-unschedulable-"),
            Failure::Unschedulable,
        );
    }
    let spec = script_spec(
        if failure == Failure::Unschedulable {
            "unschedulable"
        } else {
            "oom"
        },
        &image,
        &FixtureScript::new(),
    );
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let status = o
        .wait_for(&id, WAIT, reason, |s| s.reason.as_deref() == Some(reason))
        .await
        .unwrap();
    assert_eq!(
        (status.phase, status.exit_code),
        (phase, exit_code),
        "{status:?}"
    );
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn a_container_that_ignores_sigterm_is_stopped_after_its_grace() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    server
        .handle()
        .inject(FailureTarget::image("stubborn:1"), Failure::IgnoreSigterm);
    let id = o
        .start_server(
            &script_spec("stubborn", "stubborn:1", &FixtureScript::new()),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    o.wait_until_running(&id, WAIT).await.unwrap();
    let begun = tokio::time::Instant::now();
    o.stop_server(&id, Duration::from_secs(1)).await.unwrap();
    assert!(
        begun.elapsed() >= Duration::from_millis(900),
        "{:?}",
        begun.elapsed()
    );
    assert!(server.handle().pod(NS, id.as_str()).is_none());
    let requests = server.handle().requests();
    assert!(
        requests
            .iter()
            .any(|r| r.query_param("watch").as_deref() == Some("true")
                && r.query_param("fieldSelector").as_deref()
                    == Some(format!("metadata.name={id}").as_str())),
        "stop waits on a watch of the pod"
    );
}

// ---------------------------------------------------------------------------------------------
// Listing

#[tokio::test]
async fn expired_and_garbage_continue_tokens() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            o.start_server(&idle("pages"), &StartOptions::default())
                .await
                .unwrap(),
        );
    }
    let first = o
        .list_instances(&InstanceFilters {
            limit: Some(1),
            ..InstanceFilters::default()
        })
        .await
        .unwrap();
    assert_eq!(first.items.len(), 1);
    let token = first.continue_token.expect("more pages");
    server.handle().expire_continue_tokens();
    let error = o
        .list_instances(&InstanceFilters {
            limit: Some(1),
            continue_token: Some(token),
            ..InstanceFilters::default()
        })
        .await
        .unwrap_err();
    let OrchestratorError::ContinueExpired { message } = &error else {
        panic!("{error:?}");
    };
    assert!(message.contains("too old"), "{message}");
    assert!(error.to_string().contains("restart the listing"), "{error}");

    let error = o
        .list_instances(&InstanceFilters {
            continue_token: Some("not-a-token".into()),
            ..InstanceFilters::default()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::InvalidArgument { .. }),
        "{error:?}"
    );

    let error = o
        .list_instances(&InstanceFilters::server("Not_A_Value!"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            OrchestratorError::InvalidArgument {
                what: "server filter",
                ..
            }
        ),
        "{error:?}"
    );
    for id in &ids {
        o.stop_server(id, GRACE).await.unwrap();
    }
}

#[tokio::test]
async fn the_phase_filter_can_make_short_pages_but_loses_nothing() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let done = o
        .start_server(
            &script_spec("phases", IMAGE, &FixtureScript::new().exit(0)),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let mut running = Vec::new();
    for _ in 0..3 {
        let id = o
            .start_server(&idle("phases"), &StartOptions::default())
            .await
            .unwrap();
        o.wait_until_running(&id, WAIT).await.unwrap();
        running.push(id);
    }
    o.wait_for_phase(&done, Phase::Succeeded, WAIT)
        .await
        .unwrap();
    let mut filters = InstanceFilters {
        phase: Some(Phase::Succeeded),
        limit: Some(1),
        ..InstanceFilters::server("phases")
    };
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let page = o.list_instances(&filters).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 1);
        seen.extend(page.items.into_iter().map(|i| i.id));
        match page.continue_token {
            Some(token) => filters.continue_token = Some(token),
            None => break,
        }
    }
    assert_eq!(seen, std::slice::from_ref(&done));
    assert_eq!(
        pages, 4,
        "one server page per call, most of them empty after the filter"
    );
    for id in running.iter().chain([&done]) {
        o.stop_server(id, GRACE).await.unwrap();
    }
}

#[tokio::test]
async fn unmanaged_pods_are_invisible() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let pods: kube::Api<Pod> = kube::Api::namespaced(server.client().await, NS);
    let name = mcp_types::new_instance_name("foreign");
    let foreign: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {labels::SERVER: "foreign", labels::INSTANCE: name}},
        "spec": {"containers": [{"name": "mcp-server", "image": IMAGE}]},
    }))
    .unwrap();
    pods.create(&kube::api::PostParams::default(), &foreign)
        .await
        .unwrap();
    let id = InstanceId::new(name.clone());
    assert!(o.get_status(&id).await.unwrap_err().is_not_found());
    assert!(
        o.get_logs(&id, &LogOptions::default())
            .await
            .err()
            .unwrap()
            .is_not_found()
    );
    assert!(o.stop_server(&id, GRACE).await.unwrap_err().is_not_found());
    assert!(
        server.handle().pod(NS, &name).is_some(),
        "an unmanaged pod is never deleted"
    );
    let listed = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(listed.items.is_empty(), "{:?}", listed.items);
}

// ---------------------------------------------------------------------------------------------
// Logs

#[tokio::test]
async fn follow_with_a_tail_and_a_sub_second_since() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let script = FixtureScript::new()
        .stdout("a")
        .sleep(Duration::from_millis(1200))
        .stdout("b")
        .stdout("c")
        .stdout("d")
        // Room to start following before "e", even on a loaded machine.
        .sleep(Duration::from_millis(1500))
        .stdout("e")
        .exit(0);
    let id = o
        .start_server(
            &script_spec("resume", IMAGE, &script),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let stamped = LogOptions {
        timestamps: true,
        ..LogOptions::default()
    };
    let lines = loop {
        let stream = o.get_logs(&id, &stamped).await.unwrap();
        let lines: Vec<_> = stream.map(Result::unwrap).collect().await;
        if lines.len() >= 4 {
            break lines;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // Just after "a": a sub-second since that the server can only approximate.
    let since =
        Timestamp::from_nanosecond(lines[0].timestamp.unwrap().as_nanosecond() + 1).unwrap();
    let options = LogOptions {
        since: Some(since),
        tail: Some(2),
        follow: true,
        ..LogOptions::default()
    };
    let followed = texts(&o, &id, &options).await;
    assert_eq!(
        followed,
        ["c", "d", "e"],
        "the tail counts lines after the exact since"
    );
    let not_following = LogOptions {
        follow: false,
        ..options
    };
    assert_eq!(texts(&o, &id, &not_following).await, ["d", "e"]);
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn following_a_pod_that_has_not_started_waits_for_it() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let target = FailureTarget::pod_name_prefix(NS, "mcp-late-");
    server
        .handle()
        .inject(target.clone(), Failure::Unschedulable);
    let id = o
        .start_server(
            &script_spec("late", IMAGE, &FixtureScript::new().stdout("hello").exit(0)),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    o.wait_for(&id, WAIT, "unschedulable", |s| {
        s.reason.as_deref() == Some(reasons::UNSCHEDULABLE)
    })
    .await
    .unwrap();
    assert!(texts(&o, &id, &LogOptions::default()).await.is_empty());
    let follow = o.get_logs(&id, &LogOptions::follow()).await.unwrap();
    server.handle().clear_failures(&target);
    let lines: Vec<String> = tokio::time::timeout(WAIT, follow.map(|l| l.unwrap().text).collect())
        .await
        .unwrap();
    assert_eq!(lines, ["hello"]);

    // A pod that never starts and is stopped ends the follow with no lines.
    server
        .handle()
        .inject(target.clone(), Failure::Unschedulable);
    let id = o
        .start_server(
            &script_spec("late", IMAGE, &FixtureScript::new()),
            &StartOptions::default(),
        )
        .await
        .unwrap();
    let follow = o.get_logs(&id, &LogOptions::follow()).await.unwrap();
    let reader = tokio::spawn(async move { follow.collect::<Vec<_>>().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    o.stop_server(&id, GRACE).await.unwrap();
    let lines = tokio::time::timeout(WAIT, reader).await.unwrap().unwrap();
    assert!(lines.is_empty(), "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// Retries and unreachable servers

#[tokio::test]
async fn idempotent_requests_survive_transient_errors() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let id = o
        .start_server(&idle("retry"), &StartOptions::default())
        .await
        .unwrap();
    let gets = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&gets);
    let path = format!("/pods/{id}");
    let client = intercepted_client(&server, move |r| {
        (is(r, &http::Method::GET, &path) && counter.fetch_add(1, Ordering::SeqCst) < 2)
            .then_some((503, "ServiceUnavailable"))
    })
    .await;
    let flaky = KubernetesOrchestrator::with_client(client, config()).unwrap();
    flaky.get_status(&id).await.unwrap();
    assert_eq!(gets.load(Ordering::SeqCst), 3, "two 503s, then success");

    // Creates are not retried.
    let posts = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&posts);
    let client = intercepted_client(&server, move |r| {
        (is(r, &http::Method::POST, "/pods") && counter.fetch_add(1, Ordering::SeqCst) < 100)
            .then_some((503, "ServiceUnavailable"))
    })
    .await;
    let flaky = KubernetesOrchestrator::with_client(client, config()).unwrap();
    let error = flaky
        .start_server(&idle("retry"), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::Unavailable { .. }),
        "{error:?}"
    );
    assert_eq!(posts.load(Ordering::SeqCst), 1);
    o.stop_server(&id, GRACE).await.unwrap();
    assert!(
        everything(&server).is_empty(),
        "left: {:?}",
        everything(&server)
    );
}

#[tokio::test]
async fn an_unreachable_api_server_is_unavailable() {
    let server = FakeKubeServer::start().await;
    let config_for_dead = server.config_in(NS);
    drop(server);
    // Nothing listens there any more (the listener closed with the server).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let client = kube::Client::try_from(config_for_dead).unwrap();
    let o = KubernetesOrchestrator::with_client(client, config()).unwrap();
    let error = o
        .list_instances(&InstanceFilters::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::Unavailable { .. }),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .contains("cannot reach the Kubernetes API server"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------------
// Configuration

/// A kubeconfig with a context `fake` (the fake API server) and a current context `broken`
/// (nothing listens there).
fn kubeconfig(server: &FakeKubeServer) -> tempfile::NamedTempFile {
    let text = format!(
        "apiVersion: v1\nkind: Config\n\
         clusters:\n- name: fake\n  cluster:\n    server: {}\n- name: nowhere\n  cluster:\n    server: http://127.0.0.1:1\n\
         users:\n- name: tester\n  user: {{}}\n\
         contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: tester\n    namespace: elsewhere\n\
         - name: broken\n  context:\n    cluster: nowhere\n    user: tester\n\
         current-context: broken\n",
        server.url()
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

fn invalid_argument(error: &OrchestratorError) -> (&'static str, &str) {
    match error {
        OrchestratorError::InvalidArgument { what, message } => (what, message.as_str()),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[tokio::test]
async fn a_kubeconfig_file_and_its_contexts() {
    let server = FakeKubeServer::start().await;
    let file = kubeconfig(&server);
    let id = orchestrator(&server)
        .await
        .start_server(&idle("cfg"), &StartOptions::default())
        .await
        .unwrap();
    let with = |context: Option<&str>| K8sConfig {
        kubeconfig: Some(file.path().to_owned()),
        context: context.map(str::to_owned),
        ..config()
    };
    // The named context reaches the fake; the configured namespace wins over the context's.
    let o = KubernetesOrchestrator::from_config(with(Some("fake")))
        .await
        .unwrap();
    assert_eq!(o.namespace(), NS);
    let page = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert_eq!(page.items.len(), 1);
    // Without a context, the file's current context is used (and leads nowhere).
    let o = KubernetesOrchestrator::from_config(with(None))
        .await
        .unwrap();
    let error = o
        .list_instances(&InstanceFilters::default())
        .await
        .unwrap_err();
    assert!(
        matches!(error, OrchestratorError::Unavailable { .. }),
        "{error:?}"
    );
    // An unknown context is named.
    let error = KubernetesOrchestrator::from_config(with(Some("nope")))
        .await
        .unwrap_err();
    let (what, message) = invalid_argument(&error);
    assert_eq!(what, "kubeconfig");
    assert!(message.contains("\"nope\""), "{message}");
    orchestrator(&server)
        .await
        .stop_server(&id, GRACE)
        .await
        .unwrap();
}

#[tokio::test]
async fn unusable_kubeconfig_paths_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let garbage = dir.path().join("garbage.yaml");
    std::fs::write(&garbage, "clusters: [ {").unwrap();
    for path in [missing, dir.path().to_owned(), garbage] {
        let error = KubernetesOrchestrator::from_config(K8sConfig {
            kubeconfig: Some(path.clone()),
            ..config()
        })
        .await
        .unwrap_err();
        let (what, message) = invalid_argument(&error);
        assert_eq!(what, "kubeconfig");
        assert!(message.contains(&path.display().to_string()), "{message}");
    }
}

#[tokio::test]
async fn invalid_configurations_are_refused_before_connecting() {
    let server = FakeKubeServer::start().await;
    let bad_namespace = K8sConfig {
        namespace: "Bad_Namespace".into(),
        ..config()
    };
    let error = KubernetesOrchestrator::with_client(server.client().await, bad_namespace.clone())
        .unwrap_err();
    let (what, message) = invalid_argument(&error);
    assert_eq!(what, "kubernetes config");
    assert!(
        message.starts_with("namespace: ") && message.contains("DNS-1123"),
        "{message}"
    );
    let error = KubernetesOrchestrator::from_config(bad_namespace)
        .await
        .unwrap_err();
    assert_eq!(invalid_argument(&error).0, "kubernetes config");
    let error = KubernetesOrchestrator::from_config(K8sConfig {
        in_cluster: true,
        context: Some("fake".into()),
        ..config()
    })
    .await
    .unwrap_err();
    assert!(invalid_argument(&error).1.contains("cannot be combined"));
    assert!(server.handle().requests().is_empty());
}

#[tokio::test]
async fn in_cluster_outside_a_pod_says_so() {
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        eprintln!("skipped: this test runs inside a pod, where the in-cluster config exists");
        return;
    }
    let error = KubernetesOrchestrator::from_config(K8sConfig {
        in_cluster: true,
        ..config()
    })
    .await
    .unwrap_err();
    let (what, message) = invalid_argument(&error);
    assert_eq!(what, "in-cluster config");
    assert!(message.contains("running in a pod"), "{message}");
}

/// The default loading chain reads `$KUBECONFIG`. The variable is set on a child process (this
/// test binary again, running only this test), since changing the environment of a running
/// multi-threaded test process is not sound.
#[tokio::test]
async fn the_default_chain_reads_kubeconfig_from_the_environment() {
    const CHILD: &str = "MCP_K8S_DEFAULT_CHAIN_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // Child: no kubeconfig, no context: `Config::infer` finds $KUBECONFIG, whose current
        // context leads nowhere...
        let o = KubernetesOrchestrator::from_config(config()).await.unwrap();
        let error = o
            .list_instances(&InstanceFilters::default())
            .await
            .unwrap_err();
        assert!(
            matches!(error, OrchestratorError::Unavailable { .. }),
            "{error:?}"
        );
        // ...and a context alone selects from the same file.
        let o = KubernetesOrchestrator::from_config(K8sConfig {
            context: Some("fake".into()),
            ..config()
        })
        .await
        .unwrap();
        let page = o.list_instances(&InstanceFilters::default()).await.unwrap();
        assert_eq!(page.items.len(), 1, "{:?}", page.items);
        return;
    }
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let id = o
        .start_server(&idle("chain"), &StartOptions::default())
        .await
        .unwrap();
    let file = kubeconfig(&server);
    let path = file.path().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "the_default_chain_reads_kubeconfig_from_the_environment",
            ])
            .env(CHILD, "1")
            .env("KUBECONFIG", path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "child failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
    o.stop_server(&id, GRACE).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// What a real cluster does that a happy path never shows (issue #15)

#[tokio::test]
async fn an_evicted_pod_reports_the_eviction_and_its_lost_log_is_not_an_error() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let id = o
        .start_server(&idle("evicted"), &StartOptions::default())
        .await
        .unwrap();
    o.wait_until_running(&id, WAIT).await.unwrap();
    assert_eq!(texts(&o, &id, &LogOptions::default()).await, ["ready"]);
    // Following the log while the node evicts the pod: the stream ends, without an error.
    let follow = o
        .get_logs(
            &id,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .await
        .unwrap();
    let mut follow = std::pin::pin!(follow);
    let first = tokio::time::timeout(WAIT, follow.next()).await.unwrap();
    assert_eq!(first.map(|l| l.unwrap().text).as_deref(), Some("ready"));
    server
        .handle()
        .evict_for_node_pressure(NS, id.as_str(), "memory")
        .unwrap();
    let followed = tokio::time::timeout(WAIT, follow.collect::<Vec<_>>())
        .await
        .expect("the follow ends with the pod");
    assert!(followed.iter().all(Result::is_ok), "{followed:?}");
    // Following after the eviction: no lines, no error.
    let late = o
        .get_logs(
            &id,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .await
        .unwrap();
    let late = tokio::time::timeout(WAIT, late.collect::<Vec<_>>())
        .await
        .expect("a late follow ends");
    assert!(late.iter().all(Result::is_ok), "{late:?}");

    let status = o
        .wait_for(&id, WAIT, "evicted", |s| s.phase == Phase::Failed)
        .await
        .unwrap();
    // The pod's reason and message, not the lost container's ContainerStatusUnknown.
    assert_eq!(status.reason.as_deref(), Some("Evicted"), "{status:?}");
    assert!(
        status
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("The node was low on resource: memory"),
        "{status:?}"
    );
    assert_eq!(status.exit_code, Some(137), "{status:?}");
    // The kubelet cannot read a lost container's log (400): the instance has no lines, which is
    // not an invalid argument of the caller's.
    assert!(texts(&o, &id, &LogOptions::default()).await.is_empty());
    let error = o
        .get_logs(
            &id,
            &LogOptions {
                previous: true,
                ..LogOptions::default()
            },
        )
        .await
        .err();
    assert!(
        matches!(
            error,
            Some(OrchestratorError::InvalidArgument {
                what: "previous",
                ..
            })
        ),
        "{error:?}"
    );
    // Following a finished pod with no readable run ends at once.
    let follow = o
        .get_logs(
            &id,
            &LogOptions {
                follow: true,
                ..LogOptions::default()
            },
        )
        .await
        .unwrap();
    let lines = tokio::time::timeout(WAIT, follow.collect::<Vec<_>>())
        .await
        .expect("following an evicted pod ends");
    assert!(lines.is_empty(), "{lines:?}");
    o.stop_server(&id, GRACE).await.unwrap();
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
}

#[tokio::test]
async fn a_missing_secret_ends_the_wait_and_creating_it_brings_the_server_up() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let mut spec = idle("secretive");
    spec.env.insert(
        "API_TOKEN".to_owned(),
        mcp_types::EnvValue::secret("api-token", "token"),
    );
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    // The wait ends on the kubelet's CreateContainerConfigError, long before its timeout.
    let started = std::time::Instant::now();
    let error = o
        .wait_until_running(&id, Duration::from_secs(30))
        .await
        .unwrap_err();
    assert!(started.elapsed() < WAIT, "{:?}", started.elapsed());
    let OrchestratorError::Exited { status, .. } = error else {
        panic!("{error:?}");
    };
    assert_eq!(
        (status.phase, status.reason.as_deref()),
        (Phase::Pending, Some(reasons::CREATE_CONTAINER_CONFIG_ERROR)),
        "{status:?}"
    );
    assert_eq!(
        status.message.as_deref(),
        Some("secret \"api-token\" not found")
    );
    // The outside action: the Secret appears (first without the key, then with it).
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(server.client().await, NS);
    let mut secret: k8s_openapi::api::core::v1::Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": "api-token"}, "stringData": {"other": "x"}}),
    )
    .unwrap();
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
    let status = o
        .wait_for(&id, WAIT, "the missing key", |s| {
            s.message.as_deref() == Some("couldn't find key token in Secret mcpctl/api-token")
        })
        .await
        .unwrap();
    assert_eq!(
        status.reason.as_deref(),
        Some(reasons::CREATE_CONTAINER_CONFIG_ERROR)
    );
    secrets
        .delete("api-token", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    secret.string_data = Some([("token".to_owned(), "s3cret".to_owned())].into());
    secrets
        .create(&kube::api::PostParams::default(), &secret)
        .await
        .unwrap();
    // The kubelet retries on its own: the server comes up without a restart.
    o.wait_for(&id, WAIT, "running", |s| s.phase == Phase::Running)
        .await
        .unwrap();
    o.stop_server(&id, GRACE).await.unwrap();
    secrets
        .delete("api-token", &kube::api::DeleteParams::default())
        .await
        .unwrap();
}

fn create_in_namespace<K>(
    server: &FakeKubeServer,
    object: serde_json::Value,
) -> impl Future<Output = K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let server_client = server.client();
    async move {
        let api: kube::Api<K> = kube::Api::namespaced(server_client.await, NS);
        let object: K = serde_json::from_value(object).unwrap();
        api.create(&kube::api::PostParams::default(), &object)
            .await
            .unwrap()
    }
}

fn refused_by(error: &OrchestratorError) -> (&'static str, &str) {
    match error {
        OrchestratorError::PolicyRefused {
            policy, message, ..
        } => (policy, message.as_str()),
        other => panic!("expected PolicyRefused, got {other:?}"),
    }
}

#[tokio::test]
async fn pods_pass_the_restricted_pod_security_level() {
    let server = FakeKubeServer::start().await;
    server
        .handle()
        .set_namespace_label(NS, mcp_k8s_fake::POD_SECURITY_ENFORCE, Some("restricted"));
    let o = orchestrator(&server).await;
    let id = o
        .start_server(&http_with_volume("restricted"), &StartOptions::default())
        .await
        .unwrap();
    o.wait_until_running(&id, WAIT).await.unwrap();
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn a_missing_service_account_is_a_policy_refusal_that_names_it() {
    let server = FakeKubeServer::start().await;
    let o = KubernetesOrchestrator::with_client(
        server.client().await,
        K8sConfig {
            service_account: Some("mcp-runner".to_owned()),
            ..config()
        },
    )
    .unwrap();
    let error = o
        .start_server(&idle("account"), &StartOptions::default())
        .await
        .unwrap_err();
    let (policy, message) = refused_by(&error);
    assert_eq!(policy, "ServiceAccount");
    assert!(
        message.ends_with(
            "is forbidden: error looking up service account mcpctl/mcp-runner: serviceaccount \"mcp-runner\" not found"
        ),
        "{message}"
    );
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
    let _: k8s_openapi::api::core::v1::ServiceAccount = create_in_namespace(
        &server,
        serde_json::json!({"metadata": {"name": "mcp-runner"}}),
    )
    .await;
    let id = o
        .start_server(&idle("account"), &StartOptions::default())
        .await
        .unwrap();
    o.stop_server(&id, GRACE).await.unwrap();
}

#[tokio::test]
async fn an_exhausted_quota_is_a_policy_refusal_with_the_quota_message() {
    let server = FakeKubeServer::start().await;
    let _: k8s_openapi::api::core::v1::ResourceQuota = create_in_namespace(
        &server,
        serde_json::json!({"metadata": {"name": "one-pod"}, "spec": {"hard": {"pods": "1"}}}),
    )
    .await;
    let o = orchestrator(&server).await;
    let first = o
        .start_server(&idle("quota"), &StartOptions::default())
        .await
        .unwrap();
    let error = o
        .start_server(&http_with_volume("quota"), &StartOptions::default())
        .await
        .unwrap_err();
    let (policy, message) = refused_by(&error);
    assert_eq!(policy, "ResourceQuota");
    assert!(
        message.ends_with(
            "is forbidden: exceeded quota: one-pod, requested: pods=1, used: pods=1, limited: pods=1"
        ),
        "{message}"
    );
    // The refused instance's companions are gone; the first instance is untouched.
    o.stop_server(&first, GRACE).await.unwrap();
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
}

#[tokio::test]
async fn a_limit_range_maximum_is_a_policy_refusal() {
    let server = FakeKubeServer::start().await;
    let _: k8s_openapi::api::core::v1::LimitRange = create_in_namespace(
        &server,
        serde_json::json!({"metadata": {"name": "small"}, "spec": {"limits": [
            {"type": "Container", "max": {"memory": "32Mi"}}
        ]}}),
    )
    .await;
    let o = orchestrator(&server).await;
    let error = o
        .start_server(&idle("bounded"), &StartOptions::default())
        .await
        .unwrap_err();
    let (policy, message) = refused_by(&error);
    assert_eq!(policy, "LimitRange");
    assert!(
        message.contains("is forbidden: maximum memory usage per Container is 32Mi, but limit is "),
        "{message}"
    );
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
}

#[rstest::rstest]
#[case::default_request_above_limit(r#"{"limits": {"memory": "64Mi"}}"#, "resources.limits.memory")]
#[case::preset_request_above_limit(
    r#"{"preset": "large", "limits": {"memory": "512Mi"}}"#,
    "resources.limits.memory"
)]
#[tokio::test]
async fn effective_requests_above_limits_are_refused_before_the_cluster(
    #[case] resources: &str,
    #[case] path: &str,
) {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let mut spec = idle("sized");
    spec.resources = serde_json::from_str(resources).unwrap();
    let error = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap_err();
    let OrchestratorError::InvalidSpec(errors) = &error else {
        panic!("{error:?}");
    };
    // The spec's own field, not the API server's `spec.containers[0].resources.requests[memory]`.
    assert_eq!(
        errors
            .errors()
            .iter()
            .map(|e| e.path.as_str())
            .collect::<Vec<_>>(),
        [path],
        "{error}"
    );
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
}

#[tokio::test]
async fn companions_are_owned_by_the_pod_and_go_with_it_however_it_is_deleted() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let id = o
        .start_server(&http_with_volume("owned"), &StartOptions::default())
        .await
        .unwrap();
    let h = server.handle();
    let pod = h.pod(NS, id.as_str()).unwrap();
    let uid = pod.metadata.uid.clone().unwrap();
    let owners =
        |refs: Option<Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>>| {
            refs.unwrap_or_default()
                .iter()
                .map(|r| (r.kind.clone(), r.name.clone(), r.uid.clone()))
                .collect::<Vec<_>>()
        };
    let expected = vec![("Pod".to_owned(), id.as_str().to_owned(), uid.clone())];
    let claims = h.list::<PersistentVolumeClaim>(Some(NS));
    let policies = h.list::<NetworkPolicy>(Some(NS));
    let services = h.list::<Service>(Some(NS));
    assert_eq!((claims.len(), policies.len(), services.len()), (1, 1, 1));
    assert_eq!(
        owners(claims[0].metadata.owner_references.clone()),
        expected
    );
    assert_eq!(
        owners(policies[0].metadata.owner_references.clone()),
        expected
    );
    assert_eq!(
        owners(services[0].metadata.owner_references.clone()),
        expected
    );
    // `kubectl delete pod --grace-period=0`, not `stop`: the garbage collector removes the rest.
    let pods: kube::Api<Pod> = kube::Api::namespaced(server.client().await, NS);
    pods.delete(
        id.as_str(),
        &kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..kube::api::DeleteParams::default()
        },
    )
    .await
    .unwrap();
    assert!(h.wait_for_pod_gone(NS, id.as_str(), WAIT).await);
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
}

#[tokio::test]
async fn orphaned_companions_are_swept_and_live_ones_are_not() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let live = o
        .start_server(&http_with_volume("live"), &StartOptions::default())
        .await
        .unwrap();
    // Companions of an instance whose pod is gone and that no ownerReference ties to it (made
    // before companions were owned), and an object that is not ours.
    let gone = "mcp-gone-abcdefghij";
    let labelled = |name: &str| {
        serde_json::json!({"metadata": {"name": name, "labels": {
            "mcpctl.io/managed": "true", "mcpctl.io/instance": gone,
        }}})
    };
    let mut claim = labelled(&format!("{gone}-data"));
    claim["spec"] = serde_json::json!({
        "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}
    });
    let _: PersistentVolumeClaim = create_in_namespace(&server, claim).await;
    let mut policy = labelled(&format!("{gone}-np"));
    policy["spec"] = serde_json::json!({"podSelector": {}});
    let _: NetworkPolicy = create_in_namespace(&server, policy).await;
    let _: PersistentVolumeClaim = create_in_namespace(
        &server,
        serde_json::json!({"metadata": {"name": "not-ours"}, "spec": {
            "accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}
        }}),
    )
    .await;
    // Too young to be an orphan (a start in progress looks the same).
    assert!(
        o.sweep_orphans(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty()
    );
    let mut removed = o.sweep_orphans(Duration::ZERO).await.unwrap();
    removed.sort();
    assert_eq!(
        removed,
        [
            format!("networkpolicy/{gone}-np"),
            format!("persistentvolumeclaim/{gone}-data"),
        ]
    );
    let h = server.handle();
    assert!(h.get::<PersistentVolumeClaim>(NS, "not-ours").is_some());
    let claims = h.list::<PersistentVolumeClaim>(Some(NS));
    assert_eq!(instance_labelled(&claims, &live).len(), 1);
    o.stop_server(&live, GRACE).await.unwrap();
}

#[tokio::test]
async fn an_evicted_pod_collected_by_the_pod_gc_takes_its_companions_along() {
    let server = FakeKubeServer::start().await;
    let o = orchestrator(&server).await;
    let id = o
        .start_server(&http_with_volume("collected"), &StartOptions::default())
        .await
        .unwrap();
    o.wait_until_running(&id, WAIT).await.unwrap();
    let h = server.handle();
    h.evict_for_node_pressure(NS, id.as_str(), "ephemeral-storage")
        .unwrap();
    let status = o
        .wait_for(&id, WAIT, "evicted", |s| s.phase == Phase::Failed)
        .await
        .unwrap();
    assert_eq!(status.reason.as_deref(), Some("Evicted"), "{status:?}");
    assert_eq!(
        h.collect_terminated_pods(0),
        [format!("{NS}/{}", id.as_str())]
    );
    // No stop: the pod garbage collector removed the pod, the garbage collector the rest.
    assert!(o.get_status(&id).await.unwrap_err().is_not_found());
    assert!(everything(&server).is_empty(), "{:?}", everything(&server));
}
