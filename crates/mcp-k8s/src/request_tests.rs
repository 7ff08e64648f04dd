//! Request shapes, checked against a `tower_test` mock standing in for the API server: the exact
//! method, path, query and body of every request each operation sends, and how each answer
//! (including errors) is mapped. Time is paused where an operation waits, so the stop
//! timeouts run instantly.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::client::Body;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError};
use mcp_types::{
    InstanceFilters, InstanceId, K8sConfig, LabelSelector, LogOptions, McpServer, Phase,
    StartOptions, Timestamp, Transport,
};
use rstest::rstest;
use serde_json::{Value, json};

use crate::KubernetesOrchestrator;
use crate::lifecycle::{FORCE_WAIT, STOP_MARGIN};

const NS: &str = "ns";
const ID: &str = "mcp-time-abcdefghjk";
const PODS: &str = "/api/v1/namespaces/ns/pods";

/// One request as the mock saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

impl Seen {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }

    fn is_watch(&self) -> bool {
        self.query.get("watch").is_some_and(|w| w == "true")
    }
}

/// How the mock answers.
#[derive(Clone)]
enum Reply {
    Json(u16, Value),
    Text(u16, String),
    /// Never answer (a watch that sees no change).
    Hang,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An orchestrator whose client talks to `route`.
fn mock(
    config: K8sConfig,
    mut route: impl FnMut(&Seen) -> Reply + Send + 'static,
) -> (KubernetesOrchestrator, Log) {
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let log: Log = Arc::default();
    let seen = Arc::clone(&log);
    tokio::spawn(async move {
        let mut hung = Vec::new();
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect_bytes().await.unwrap();
            let request = Seen {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
                query: parse_query(parts.uri.query().unwrap_or_default()),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            seen.lock().unwrap().push(request.clone());
            let (code, body) = match route(&request) {
                Reply::Json(code, value) => (code, serde_json::to_vec(&value).unwrap()),
                Reply::Text(code, text) => (code, text.into_bytes()),
                Reply::Hang => {
                    hung.push(respond);
                    continue;
                }
            };
            respond.send_response(
                http::Response::builder()
                    .status(code)
                    .body(Body::from(body))
                    .unwrap(),
            );
        }
    });
    let client = kube::Client::new(service, "default");
    (
        KubernetesOrchestrator::with_client(client, config).unwrap(),
        log,
    )
}

fn config() -> K8sConfig {
    K8sConfig {
        namespace: NS.into(),
        ..K8sConfig::default()
    }
}

fn parse_query(query: &str) -> BTreeMap<String, String> {
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).unwrap()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn query(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn status(code: u16, reason: &str) -> Reply {
    Reply::Json(
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "code": code, "reason": reason, "message": format!("mock says {reason}")}),
    )
}

fn success() -> Reply {
    Reply::Json(
        200,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
    )
}

fn pod(name: &str, managed: bool, container: &Value) -> Value {
    let mut labels = json!({"mcpctl.io/server": "time", "mcpctl.io/instance": name});
    if managed {
        labels["mcpctl.io/managed"] = json!("true");
    }
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS, "uid": format!("uid-{name}"),
                     "creationTimestamp": "2025-01-01T00:00:00Z", "labels": labels},
        "spec": {"restartPolicy": "Always", "containers": [{"name": "mcp-server", "image": "img"}]},
        "status": {"phase": "Running", "containerStatuses": [container]},
    })
}

fn running() -> Value {
    json!({"name": "mcp-server", "image": "img", "imageID": "", "ready": true, "restartCount": 1,
           "state": {"running": {"startedAt": "2025-01-01T00:00:01Z"}},
           "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
}

fn succeeded(name: &str) -> Value {
    let mut p = pod(
        name,
        true,
        &json!({"name": "mcp-server", "image": "img", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}),
    );
    p["status"]["phase"] = json!("Succeeded");
    p
}

fn list(kind: &str, items: &[Value], next: Option<&str>) -> Reply {
    let mut metadata = json!({"resourceVersion": "7"});
    if let Some(next) = next {
        metadata["continue"] = json!(next);
    }
    Reply::Json(
        200,
        json!({"kind": kind, "apiVersion": "v1", "metadata": metadata, "items": items}),
    )
}

fn id() -> InstanceId {
    InstanceId::new(ID)
}

fn pod_path() -> String {
    format!("{PODS}/{ID}")
}

// ---------------------------------------------------------------------------------------------
// get_status

#[tokio::test]
async fn status_gets_the_pod_and_maps_it() {
    let (o, log) = mock(config(), |_| Reply::Json(200, pod(ID, true, &running())));
    let st = o.get_status(&id()).await.unwrap();
    assert_eq!(st.phase, Phase::Running);
    assert_eq!(st.restart_count, 1);
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert!(
        log[0].is("GET", &pod_path()) && log[0].query.is_empty(),
        "{log:?}"
    );
}

#[rstest]
#[case::missing(status(404, "NotFound"), "NotFound")]
#[case::unmanaged(Reply::Json(200, pod(ID, false, &running())), "NotFound")]
#[case::forbidden(status(403, "Forbidden"), "PermissionDenied")]
#[case::unauthorized(status(401, "Unauthorized"), "PermissionDenied")]
#[case::not_json(Reply::Text(502, "<html>bad gateway</html>".into()), "Unavailable")]
#[tokio::test(start_paused = true)]
async fn status_errors(#[case] reply: Reply, #[case] expected: &str) {
    // The same answer to every retry.
    let (o, log) = mock(config(), move |_| reply.clone());
    let error = o.get_status(&id()).await.unwrap_err();
    let got = match &error {
        OrchestratorError::NotFound { id } => {
            assert_eq!(id, ID);
            "NotFound"
        }
        OrchestratorError::PermissionDenied { .. } => "PermissionDenied",
        OrchestratorError::Unavailable { .. } => "Unavailable",
        _ => "other",
    };
    assert_eq!(got, expected, "{error:?}");
    let attempts = log.lock().unwrap().len();
    let retried = expected == "Unavailable";
    assert_eq!(
        attempts,
        if retried { 4 } else { 1 },
        "only transient errors are retried"
    );
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_with_backoff() {
    let mut answers = vec![
        status(503, "ServiceUnavailable"),
        status(429, "TooManyRequests"),
    ];
    let (o, log) = mock(config(), move |_| {
        if answers.is_empty() {
            Reply::Json(200, pod(ID, true, &running()))
        } else {
            answers.remove(0)
        }
    });
    let begun = tokio::time::Instant::now();
    assert_eq!(o.get_status(&id()).await.unwrap().phase, Phase::Running);
    assert_eq!(log.lock().unwrap().len(), 3);
    assert_eq!(begun.elapsed(), Duration::from_millis(100 + 200));
}

// ---------------------------------------------------------------------------------------------
// list_instances

#[tokio::test]
async fn list_sends_selector_limit_and_continue() {
    let (o, log) = mock(config(), |_| {
        list(
            "PodList",
            &[pod("mcp-time-b", true, &running()), succeeded("mcp-time-a")],
            Some("next-token"),
        )
    });
    let filters = InstanceFilters {
        server: Some("time".into()),
        label_selector: Some(LabelSelector::parse("tier in (a,b),!canary").unwrap()),
        limit: Some(2),
        continue_token: Some("token-1".into()),
        phase: Some(Phase::Running),
    };
    let page = o.list_instances(&filters).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["mcp-time-b"], "the phase filter runs on the client");
    assert_eq!(page.continue_token.as_deref(), Some("next-token"));
    let log = log.lock().unwrap();
    assert!(log[0].is("GET", PODS), "{log:?}");
    assert_eq!(
        log[0].query,
        query(&[
            (
                "labelSelector",
                "mcpctl.io/managed=true,mcpctl.io/server=time,tier in (a,b),!canary"
            ),
            ("limit", "2"),
            ("continue", "token-1"),
        ])
    );
}

#[tokio::test]
async fn list_without_filters_selects_managed_pods_and_sorts() {
    let (o, log) = mock(config(), |_| {
        list(
            "PodList",
            &[pod("mcp-time-b", true, &running()), succeeded("mcp-time-a")],
            None,
        )
    });
    let page = o.list_instances(&InstanceFilters::default()).await.unwrap();
    let ids: Vec<&str> = page.items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["mcp-time-a", "mcp-time-b"]);
    assert_eq!(page.continue_token, None);
    assert_eq!(
        log.lock().unwrap()[0].query,
        query(&[("labelSelector", "mcpctl.io/managed=true")])
    );
}

#[rstest]
#[case::expired(status(410, "Expired"), "ContinueExpired")]
#[case::bad_token(status(400, "BadRequest"), "InvalidArgument")]
#[tokio::test]
async fn list_errors(#[case] reply: Reply, #[case] expected: &str) {
    let (o, _) = mock(config(), move |_| reply.clone());
    let error = o
        .list_instances(&InstanceFilters {
            continue_token: Some("old".into()),
            ..InstanceFilters::default()
        })
        .await
        .unwrap_err();
    let got = match &error {
        OrchestratorError::ContinueExpired { message } => {
            assert!(message.contains("mock says Expired"), "{message}");
            "ContinueExpired"
        }
        OrchestratorError::InvalidArgument { what, .. } => {
            assert_eq!(*what, "continue token or filter");
            "InvalidArgument"
        }
        _ => "other",
    };
    assert_eq!(got, expected, "{error:?}");
}

#[tokio::test]
async fn invalid_filters_send_nothing() {
    let (o, log) = mock(config(), |_| Reply::Hang);
    for filters in [
        InstanceFilters {
            limit: Some(0),
            ..InstanceFilters::default()
        },
        InstanceFilters::server("Bad Name"),
    ] {
        let error = o.list_instances(&filters).await.unwrap_err();
        assert!(
            matches!(error, OrchestratorError::InvalidArgument { .. }),
            "{error:?}"
        );
    }
    assert!(log.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------------
// get_logs

const LOG: &str = "2025-01-01T00:00:05.100000000Z one\n\
                   2025-01-01T00:00:05.600000000Z two\n\
                   2025-01-01T00:00:06.000000000Z three\n";

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn looping() -> Value {
    json!({"name": "mcp-server", "image": "img", "imageID": "", "ready": false, "restartCount": 2,
           "state": {"waiting": {"reason": "CrashLoopBackOff"}},
           "lastState": {"terminated": {"exitCode": 1, "reason": "Error"}}})
}

#[rstest]
#[case::plain(LogOptions::default(), &[], &["one", "two", "three"])]
#[case::tail(LogOptions::tail(2), &[("tailLines", "2")], &["one", "two", "three"])]
#[case::whole_second_since(
    LogOptions { since: Some(ts("2025-01-01T00:00:05Z")), tail: Some(2), ..LogOptions::default() },
    &[("sinceTime", "2025-01-01T00:00:05Z"), ("tailLines", "2")],
    &["one", "two", "three"])]
#[case::sub_second_since(
    LogOptions { since: Some(ts("2025-01-01T00:00:05.5Z")), tail: Some(5), ..LogOptions::default() },
    &[("sinceTime", "2025-01-01T00:00:05Z")],
    &["two", "three"])]
#[case::sub_second_since_and_tail(
    LogOptions { since: Some(ts("2025-01-01T00:00:05.2Z")), tail: Some(1), ..LogOptions::default() },
    &[("sinceTime", "2025-01-01T00:00:05Z")],
    &["three"])]
#[case::follow(LogOptions { tail: Some(1), ..LogOptions::follow() }, &[("follow", "true"), ("tailLines", "1")], &["one", "two", "three"])]
#[case::follow_sub_second_since(
    LogOptions { since: Some(ts("2025-01-01T00:00:05.5Z")), ..LogOptions::follow() },
    &[("follow", "true"), ("sinceTime", "2025-01-01T00:00:05Z")],
    &["two", "three"])]
#[case::previous(LogOptions { previous: true, ..LogOptions::default() }, &[("previous", "true")], &["one", "two", "three"])]
#[tokio::test]
async fn log_requests(
    #[case] options: LogOptions,
    #[case] extra: &[(&str, &str)],
    #[case] expected: &[&str],
) {
    let container = if options.previous {
        looping()
    } else {
        running()
    };
    let (o, log) = mock(config(), move |r| {
        if r.path.ends_with("/log") {
            Reply::Text(200, LOG.to_owned())
        } else {
            Reply::Json(200, pod(ID, true, &container))
        }
    });
    let lines: Vec<_> = o
        .get_logs(&id(), &options)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    let texts: Vec<&str> = lines.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, expected);
    assert!(lines.iter().all(|l| l.timestamp.is_none()));
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].is("GET", &pod_path()));
    assert!(log[1].is("GET", &format!("{}/log", pod_path())));
    let mut want = query(&[("container", "mcp-server"), ("timestamps", "true")]);
    want.extend(query(extra));
    assert_eq!(log[1].query, want);
}

#[tokio::test]
async fn timestamps_are_kept_when_asked_for() {
    let (o, _) = mock(config(), |r| {
        if r.path.ends_with("/log") {
            Reply::Text(200, LOG.to_owned())
        } else {
            Reply::Json(200, pod(ID, true, &running()))
        }
    });
    let options = LogOptions {
        timestamps: true,
        ..LogOptions::default()
    };
    let lines: Vec<_> = o
        .get_logs(&id(), &options)
        .await
        .unwrap()
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(lines[1].timestamp, Some(ts("2025-01-01T00:00:05.6Z")));
    assert_eq!(lines[1].text, "two");
}

#[tokio::test]
async fn follow_with_a_client_tail_reads_then_resumes() {
    let mut logs = vec![
        LOG.to_owned(),
        // The follow from 00:00:06 sees "three" again, then a new line.
        "2025-01-01T00:00:06.000000000Z three\n2025-01-01T00:00:07Z four\n".to_owned(),
    ];
    let (o, log) = mock(config(), move |r| {
        if r.path.ends_with("/log") {
            Reply::Text(200, logs.remove(0))
        } else {
            Reply::Json(200, pod(ID, true, &running()))
        }
    });
    let options = LogOptions {
        since: Some(ts("2025-01-01T00:00:05.2Z")),
        tail: Some(1),
        ..LogOptions::follow()
    };
    let texts: Vec<String> = o
        .get_logs(&id(), &options)
        .await
        .unwrap()
        .map(|l| l.unwrap().text)
        .collect()
        .await;
    assert_eq!(texts, ["three", "four"]);
    let log = log.lock().unwrap();
    let base = query(&[("container", "mcp-server"), ("timestamps", "true")]);
    let mut first = base.clone();
    first.extend(query(&[("sinceTime", "2025-01-01T00:00:05Z")]));
    let mut second = base;
    second.extend(query(&[
        ("sinceTime", "2025-01-01T00:00:06Z"),
        ("follow", "true"),
    ]));
    assert_eq!(log[1].query, first);
    assert_eq!(log[2].query, second);
}

#[tokio::test]
async fn log_refusals_send_no_log_request() {
    let first_run = json!({"name": "mcp-server", "image": "img", "imageID": "", "ready": true,
        "restartCount": 0, "state": {"running": {"startedAt": "2025-01-01T00:00:01Z"}}});
    let (o, log) = mock(config(), move |_| {
        Reply::Json(200, pod(ID, true, &first_run))
    });
    let stderr = LogOptions {
        stream: mcp_types::StreamSelector::Stderr,
        ..LogOptions::default()
    };
    let error = o.get_logs(&id(), &stderr).await.err().unwrap();
    assert!(
        matches!(error, OrchestratorError::NotSupported { .. }),
        "{error:?}"
    );
    assert!(log.lock().unwrap().is_empty(), "refused before any request");
    let previous = LogOptions {
        previous: true,
        ..LogOptions::default()
    };
    let error = o.get_logs(&id(), &previous).await.err().unwrap();
    assert!(
        matches!(
            error,
            OrchestratorError::InvalidArgument {
                what: "previous",
                ..
            }
        ),
        "{error:?}"
    );
    assert_eq!(log.lock().unwrap().len(), 1, "only the GET of the pod");
}

#[tokio::test]
async fn a_container_that_has_not_started_has_no_lines() {
    let creating = json!({"name": "mcp-server", "image": "img", "imageID": "", "ready": false,
        "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}});
    let (o, log) = mock(config(), move |_| {
        Reply::Json(200, pod(ID, true, &creating))
    });
    let lines: Vec<_> = o
        .get_logs(&id(), &LogOptions::default())
        .await
        .unwrap()
        .collect()
        .await;
    assert!(lines.is_empty());
    assert_eq!(log.lock().unwrap().len(), 1, "no log request");
}

#[tokio::test]
async fn a_log_error_from_the_kubelet_is_mapped() {
    let (o, _) = mock(config(), |r| {
        if r.path.ends_with("/log") {
            status(400, "BadRequest")
        } else {
            Reply::Json(200, pod(ID, true, &running()))
        }
    });
    let error = o
        .get_logs(&id(), &LogOptions::default())
        .await
        .err()
        .unwrap();
    assert!(
        matches!(
            error,
            OrchestratorError::InvalidArgument {
                what: "log options",
                ..
            }
        ),
        "{error:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// start_server

fn http_spec() -> McpServer {
    McpServer {
        transport: Transport::StreamableHttp,
        port: Some(8080),
        volumes: vec![
            serde_json::from_value(json!({"name": "data", "size": "1Gi", "mountPath": "/data"}))
                .unwrap(),
        ],
        ..McpServer::new("time", "img")
    }
}

/// Answers creates by echoing the object with a uid.
fn echo(r: &Seen) -> Reply {
    let mut object = r.body.clone();
    let name = object["metadata"]["name"]
        .as_str()
        .unwrap_or("x")
        .to_owned();
    object["metadata"]["uid"] = json!(format!("uid-{name}"));
    Reply::Json(201, object)
}

const PVCS: &str = "/api/v1/namespaces/ns/persistentvolumeclaims";
const POLICIES: &str = "/apis/networking.k8s.io/v1/namespaces/ns/networkpolicies";
const SERVICES: &str = "/api/v1/namespaces/ns/services";

#[tokio::test]
async fn start_creates_claims_and_policy_then_pod_then_owned_service() {
    let (o, log) = mock(config(), echo);
    let id = o
        .start_server(&http_spec(), &StartOptions::default())
        .await
        .unwrap();
    let log = log.lock().unwrap();
    let order: Vec<(&str, &str)> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str()))
        .collect();
    let claim = format!("{PVCS}/{id}-data");
    let policy = format!("{POLICIES}/{id}-np");
    assert_eq!(
        order,
        [
            ("POST", PVCS),
            ("POST", POLICIES),
            ("POST", PODS),
            ("POST", SERVICES),
            // The companions created before the pod become the pod's.
            ("PATCH", claim.as_str()),
            ("PATCH", policy.as_str()),
        ]
    );
    let owner = json!([{"apiVersion": "v1", "kind": "Pod", "name": id.as_str(), "uid": format!("uid-{id}")}]);
    for r in &log[4..] {
        assert_eq!(
            r.body,
            json!({"metadata": {"ownerReferences": owner}}),
            "{r:?}"
        );
    }
    for r in log.iter().filter(|r| r.method == "POST") {
        assert!(r.query.is_empty(), "{r:?}");
        assert_eq!(
            r.body["metadata"]["labels"]["mcpctl.io/instance"],
            json!(id.as_str())
        );
        assert_eq!(r.body["metadata"]["namespace"], json!(NS));
    }
    assert_eq!(log[2].body["metadata"]["name"], json!(id.as_str()));
    assert!(log[2].body["metadata"].get("generateName").is_none());
    assert_eq!(
        log[3].body["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": id.as_str(), "uid": format!("uid-{id}")}])
    );
    assert!(log[0].body["metadata"].get("ownerReferences").is_none());
}

#[tokio::test]
async fn an_invalid_spec_sends_nothing() {
    let (o, log) = mock(config(), echo);
    let mut spec = http_spec();
    spec.port = None;
    let error = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap_err();
    let OrchestratorError::InvalidSpec(errors) = error else {
        panic!("{error:?}");
    };
    assert!(errors.has_path("port"), "{errors}");
    assert!(log.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_service_create_rolls_everything_back() {
    let (o, log) = mock(config(), |r| match (r.method.as_str(), r.path.as_str()) {
        ("POST", SERVICES) => status(500, "InternalError"),
        ("POST", _) => echo(r),
        _ => success(),
    });
    let error = o
        .start_server(&http_spec(), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(error.is_transient(), "{error:?}");
    let log = log.lock().unwrap();
    let id = log[2].body["metadata"]["name"].as_str().unwrap().to_owned();
    // After the pod, the Service's create and the owner patches go out at once (in any
    // order); the roll-back's deletes follow them all.
    let first_delete = log.iter().position(|r| r.method == "DELETE").unwrap();
    let mut concurrent: Vec<(String, String)> = log[3..first_delete]
        .iter()
        .map(|r| (r.method.clone(), r.path.clone()))
        .collect();
    concurrent.sort();
    assert_eq!(
        concurrent,
        [
            ("PATCH".to_owned(), format!("{PVCS}/{id}-data")),
            ("PATCH".to_owned(), format!("{POLICIES}/{id}-np")),
            ("POST".to_owned(), SERVICES.to_owned()),
        ]
    );
    let deletes: Vec<(String, Value)> = log[first_delete..]
        .iter()
        .map(|r| {
            assert_eq!(r.method, "DELETE");
            (r.path.clone(), r.body["gracePeriodSeconds"].clone())
        })
        .collect();
    assert_eq!(
        deletes,
        [
            // The Service's create failed with a 500: it may exist, so it is deleted too.
            (format!("{SERVICES}/{id}-svc"), json!(0)),
            (format!("{PODS}/{id}"), json!(0)),
            (format!("{POLICIES}/{id}-np"), json!(0)),
            (format!("{PVCS}/{id}-data"), json!(0)),
        ]
    );
}

#[tokio::test]
async fn a_refused_ownership_patch_rolls_everything_back() {
    // A Role from before companions were owned grants no `patch`.
    let (o, log) = mock(config(), |r| match r.method.as_str() {
        "POST" => echo(r),
        "PATCH" => status(403, "Forbidden"),
        _ => success(),
    });
    let error = o
        .start_server(&http_spec(), &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OrchestratorError::PermissionDenied { message }
            if message.starts_with("set the owner of \"")),
        "{error:?}"
    );
    let log = log.lock().unwrap();
    let id = log[2].body["metadata"]["name"].as_str().unwrap().to_owned();
    let deletes: Vec<String> = log
        .iter()
        .filter(|r| r.method == "DELETE")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(
        deletes,
        [
            format!("{SERVICES}/{id}-svc"),
            format!("{PODS}/{id}"),
            format!("{POLICIES}/{id}-np"),
            format!("{PVCS}/{id}-data"),
        ]
    );
}

#[tokio::test]
async fn a_name_collision_rolls_back_and_retries_with_a_fresh_name() {
    let mut pod_posts = 0;
    let (o, log) = mock(config(), move |r| {
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", PODS) => {
                pod_posts += 1;
                if pod_posts == 1 {
                    status(409, "AlreadyExists")
                } else {
                    echo(r)
                }
            }
            ("POST" | "PATCH", _) => echo(r),
            _ => success(),
        }
    });
    let id = o
        .start_server(&http_spec(), &StartOptions::default())
        .await
        .unwrap();
    let log = log.lock().unwrap();
    let steps: Vec<String> = log
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    let first = log[2].body["metadata"]["name"].as_str().unwrap().to_owned();
    assert_ne!(first, id.as_str());
    assert_eq!(
        steps,
        [
            format!("POST {PVCS}"),
            format!("POST {POLICIES}"),
            format!("POST {PODS}"),
            // The collided pod is not ours: only the claim and the policy are removed.
            format!("DELETE {POLICIES}/{first}-np"),
            format!("DELETE {PVCS}/{first}-data"),
            format!("POST {PVCS}"),
            format!("POST {POLICIES}"),
            format!("POST {PODS}"),
            format!("POST {SERVICES}"),
            format!("PATCH {PVCS}/{id}-data"),
            format!("PATCH {POLICIES}/{id}-np"),
        ]
    );
}

// ---------------------------------------------------------------------------------------------
// stop_server

fn deleting(name: &str) -> Value {
    let mut p = pod(name, true, &running());
    p["metadata"]["deletionTimestamp"] = json!("2025-01-01T00:01:00Z");
    p
}

fn companion_lists(r: &Seen) -> Option<Reply> {
    let selector = format!("mcpctl.io/managed=true,mcpctl.io/instance={ID}");
    if r.method != "GET" || r.query.get("labelSelector") != Some(&selector) {
        return None;
    }
    let item = |name: &str| json!({"metadata": {"name": name, "namespace": NS}});
    Some(match r.path.as_str() {
        SERVICES => list("ServiceList", &[item(&format!("{ID}-svc"))], None),
        POLICIES => list("NetworkPolicyList", &[item(&format!("{ID}-np"))], None),
        PVCS => list(
            "PersistentVolumeClaimList",
            &[item(&format!("{ID}-data"))],
            None,
        ),
        _ => return None,
    })
}

#[tokio::test]
async fn stop_deletes_gracefully_watches_and_removes_companions() {
    let (o, log) = mock(config(), |r| {
        if let Some(reply) = companion_lists(r) {
            return reply;
        }
        match r.method.as_str() {
            "GET" if r.path == pod_path() => Reply::Json(200, pod(ID, true, &running())),
            "DELETE" if r.path == pod_path() => Reply::Json(200, deleting(ID)),
            // The watcher's initial list: the pod is already gone.
            "GET" if r.path == PODS => list("PodList", &[], None),
            "DELETE" => success(),
            _ => status(404, "NotFound"),
        }
    });
    o.stop_server(&id(), Duration::from_millis(1500))
        .await
        .unwrap();
    let log = log.lock().unwrap();
    assert!(log[0].is("GET", &pod_path()));
    assert!(log[1].is("DELETE", &pod_path()));
    assert_eq!(
        log[1].body,
        json!({"gracePeriodSeconds": 2, "preconditions": {"uid": format!("uid-{ID}")}}),
        "grace rounded up to whole seconds, and only the pod that was looked at"
    );
    assert!(log[2].is("GET", PODS), "{:?}", log[2]);
    assert_eq!(
        log[2].query.get("fieldSelector").map(String::as_str),
        Some(format!("metadata.name={ID}").as_str())
    );
    let mut rest: Vec<String> = log[3..]
        .iter()
        .filter(|r| !r.is_watch())
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    rest.sort();
    let mut expected = vec![
        format!("GET {SERVICES}"),
        format!("GET {POLICIES}"),
        format!("GET {PVCS}"),
        format!("DELETE {SERVICES}/{ID}-svc"),
        format!("DELETE {POLICIES}/{ID}-np"),
        format!("DELETE {PVCS}/{ID}-data"),
    ];
    expected.sort();
    assert_eq!(rest, expected);
}

/// A pod that stays after every delete: `force_reply` answers the forced delete.
fn stuck(force_reply: fn() -> Reply) -> impl FnMut(&Seen) -> Reply + Send + 'static {
    move |r| {
        if let Some(reply) = companion_lists(r) {
            return reply;
        }
        if r.is_watch() {
            return Reply::Hang;
        }
        match r.method.as_str() {
            "GET" if r.path == pod_path() => Reply::Json(200, pod(ID, true, &running())),
            "DELETE" if r.path == pod_path() => {
                if r.body["gracePeriodSeconds"] == json!(0) {
                    force_reply()
                } else {
                    Reply::Json(200, deleting(ID))
                }
            }
            "GET" if r.path == PODS => list("PodList", &[deleting(ID)], None),
            "DELETE" => success(),
            _ => status(404, "NotFound"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn stop_forces_a_pod_that_outlives_its_grace() {
    let (o, log) = mock(config(), stuck(success));
    let begun = tokio::time::Instant::now();
    o.stop_server(&id(), Duration::from_secs(3)).await.unwrap();
    let waited = begun.elapsed();
    assert!(
        waited >= Duration::from_secs(3) + STOP_MARGIN
            && waited < Duration::from_secs(3) + STOP_MARGIN + FORCE_WAIT,
        "{waited:?}"
    );
    let log = log.lock().unwrap();
    let graces: Vec<Value> = log
        .iter()
        .filter(|r| r.is("DELETE", &pod_path()))
        .map(|r| r.body["gracePeriodSeconds"].clone())
        .collect();
    assert_eq!(graces, [json!(3), json!(0)]);
    assert!(log.iter().any(Seen::is_watch), "the wait is a watch");
}

#[tokio::test(start_paused = true)]
async fn stop_times_out_when_even_a_forced_delete_does_not_remove_the_pod() {
    let (o, log) = mock(config(), stuck(|| Reply::Json(200, deleting(ID))));
    let error = o
        .stop_server(&id(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, OrchestratorError::Timeout { after, .. } if *after == Duration::from_secs(1) + STOP_MARGIN + FORCE_WAIT),
        "{error:?}"
    );
    let log = log.lock().unwrap();
    assert!(
        log.iter()
            .any(|r| r.is("DELETE", &format!("{SERVICES}/{ID}-svc"))),
        "companions are removed even then"
    );
}

#[tokio::test]
async fn stop_of_an_unknown_instance_sweeps_leftovers_and_is_not_found() {
    let (o, log) = mock(config(), |r| {
        if let Some(reply) = companion_lists(r) {
            return reply;
        }
        match r.method.as_str() {
            "DELETE" => success(),
            _ => status(404, "NotFound"),
        }
    });
    let error = o
        .stop_server(&id(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    let log = log.lock().unwrap();
    assert!(!log.iter().any(|r| r.is("DELETE", &pod_path())));
    assert_eq!(log.iter().filter(|r| r.method == "DELETE").count(), 3);
}

#[tokio::test]
async fn stop_never_touches_an_unmanaged_pod() {
    let (o, log) = mock(config(), |_| Reply::Json(200, pod(ID, false, &running())));
    let error = o
        .stop_server(&id(), Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(error.is_not_found(), "{error:?}");
    assert_eq!(log.lock().unwrap().len(), 1, "only the GET");
}

#[tokio::test]
async fn a_pod_deleted_at_once_needs_no_wait() {
    let (o, log) = mock(config(), |r| {
        if let Some(reply) = companion_lists(r) {
            return reply;
        }
        match r.method.as_str() {
            "GET" if r.path == pod_path() => Reply::Json(200, pod(ID, true, &running())),
            _ => success(),
        }
    });
    o.stop_server(&id(), Duration::ZERO).await.unwrap();
    let log = log.lock().unwrap();
    assert_eq!(log[1].body["gracePeriodSeconds"], json!(0));
    assert!(
        !log.iter().any(|r| r.is("GET", PODS)),
        "a Status answer means the pod is gone: no watch"
    );
}

#[rstest]
#[case::transient_then_gone(503, true)]
#[case::forbidden(403, false)]
#[tokio::test(start_paused = true)]
async fn a_failed_watch_is_retried_only_when_transient(#[case] first: u16, #[case] ok: bool) {
    let mut watch_lists = 0;
    let (o, log) = mock(config(), move |r| {
        if let Some(reply) = companion_lists(r) {
            return reply;
        }
        match r.method.as_str() {
            "GET" if r.path == pod_path() => Reply::Json(200, pod(ID, true, &running())),
            "DELETE" if r.path == pod_path() => Reply::Json(200, deleting(ID)),
            "GET" if r.path == PODS && !r.is_watch() => {
                watch_lists += 1;
                if watch_lists == 1 {
                    status(first, "Failing")
                } else {
                    list("PodList", &[], None)
                }
            }
            "DELETE" => success(),
            _ => Reply::Hang,
        }
    });
    let result = o.stop_server(&id(), Duration::from_secs(1)).await;
    let lists = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.is("GET", PODS) && !r.is_watch())
        .count();
    if ok {
        result.unwrap();
        assert_eq!(lists, 2);
    } else {
        let error = result.unwrap_err();
        assert!(
            matches!(error, OrchestratorError::PermissionDenied { .. }),
            "{error:?}"
        );
        assert_eq!(lists, 1);
    }
}
