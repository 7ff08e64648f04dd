//! Create/get/delete with metadata handling, validation, `Status` errors, other resource types,
//! `/version`, content types and the request log.

use std::collections::BTreeMap;

use http::Method;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod, Service, ServicePort, ServiceSpec,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};

use crate::{create, idle_pod, start, status_of};

#[tokio::test]
async fn generate_name_conflicts_and_metadata() {
    let (server, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client);
    let mut pod = idle_pod("", &[]);
    pod.metadata.name = None;
    pod.metadata.generate_name = Some("web-".to_owned());
    let first = create(&pods, &pod).await;
    let second = create(&pods, &pod).await;
    let name = first.metadata.name.clone().unwrap();
    assert!(name.starts_with("web-") && name.len() == 9, "{name}");
    assert_ne!(first.metadata.name, second.metadata.name);
    assert_eq!(first.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(first.metadata.generate_name.as_deref(), Some("web-"));
    assert_eq!(first.metadata.uid.as_ref().map(String::len), Some(36));
    assert_ne!(first.metadata.uid, second.metadata.uid);
    assert!(first.metadata.creation_timestamp.is_some());
    let rv = |p: &Pod| -> u64 {
        p.metadata
            .resource_version
            .as_ref()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rv(&second) > rv(&first));
    assert_eq!(crate::phase(&first), "Pending");
    let spec = first.spec.clone().unwrap();
    assert_eq!(spec.termination_grace_period_seconds, Some(30));
    assert_eq!(
        spec.containers[0].image_pull_policy.as_deref(),
        Some("IfNotPresent")
    );

    let mut taken = idle_pod(&name, &[]);
    taken.metadata.name = Some(name.clone());
    let status = status_of(pods.create(&PostParams::default(), &taken).await);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "AlreadyExists");
    assert_eq!(status.message, format!("pods \"{name}\" already exists"));
    assert!(status.is_already_exists());
    let details = status.details.unwrap();
    assert_eq!(details.name, name);
    assert_eq!(details.kind, "pods");

    let got = pods.get(&name).await.unwrap();
    assert_eq!(got.metadata.uid, first.metadata.uid);
    assert_eq!(
        server.handle().pod("default", &name).unwrap().metadata.uid,
        first.metadata.uid
    );
}

#[tokio::test]
async fn clients_default_to_their_namespace() {
    let server = mcp_k8s_fake::FakeKubeServer::with_options(mcp_k8s_fake::FakeKubeOptions {
        default_namespace: "team-a".to_owned(),
        ..mcp_k8s_fake::FakeKubeOptions::default()
    })
    .await;
    let in_a: Api<Pod> = Api::default_namespaced(server.client().await);
    let in_b: Api<Pod> = Api::default_namespaced(server.client_in("team-b").await);
    let a = create(&in_a, &idle_pod("p", &[])).await;
    let b = create(&in_b, &idle_pod("p", &[])).await;
    assert_eq!(a.metadata.namespace.as_deref(), Some("team-a"));
    assert_eq!(b.metadata.namespace.as_deref(), Some("team-b"));
    assert!(server.url().starts_with("http://127.0.0.1:"));
    assert_eq!(server.handle().list::<Pod>(None).len(), 2);
    let mut wrong = idle_pod("q", &[]);
    wrong.metadata.namespace = Some("team-b".to_owned());
    let status = status_of(in_a.create(&PostParams::default(), &wrong).await);
    assert_eq!((status.code, status.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn missing_objects_are_404_status() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client.clone());
    let status = status_of(pods.get("nope").await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "pods \"nope\" not found");
    assert!(status.is_failure());
    let status = status_of(pods.delete("nope", &DeleteParams::default()).await);
    assert_eq!(status.code, 404);
    let policies: Api<NetworkPolicy> = Api::namespaced(client, "team");
    let status = status_of(policies.get("np").await);
    assert_eq!(
        status.message,
        "networkpolicies.networking.k8s.io \"np\" not found"
    );
}

#[tokio::test]
async fn invalid_objects_are_422_with_causes() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::default_namespaced(client);

    let mut empty = idle_pod("empty", &[]);
    empty.spec.as_mut().unwrap().containers.clear();
    let status = status_of(pods.create(&PostParams::default(), &empty).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "Pod \"empty\" is invalid: spec.containers: Required value"
    );
    let causes = status.details.unwrap().causes;
    assert_eq!(causes[0].field, "spec.containers");
    assert_eq!(causes[0].reason, "FieldValueRequired");

    let status = status_of(
        pods.create(&PostParams::default(), &idle_pod("Bad_Name", &[]))
            .await,
    );
    assert_eq!(status.code, 422);
    assert!(status.message.starts_with("Pod \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", status.message);

    let bad_label = idle_pod("labelled", &[("bad key", "v")]);
    let status = status_of(pods.create(&PostParams::default(), &bad_label).await);
    assert_eq!(status.code, 422);
    assert_eq!(status.details.unwrap().causes[0].field, "metadata.labels");

    let mut two = crate::pod_with(
        "two",
        &[],
        "Sometimes",
        &[("a", "img:1", Vec::new()), ("a", "", Vec::new())],
    );
    two.metadata.name = Some("two".to_owned());
    let status = status_of(pods.create(&PostParams::default(), &two).await);
    let fields: Vec<String> = status
        .details
        .unwrap()
        .causes
        .into_iter()
        .map(|c| c.field)
        .collect();
    assert_eq!(
        fields,
        [
            "spec.restartPolicy",
            "spec.containers[1].name",
            "spec.containers[1].image"
        ]
    );

    let mut nameless = idle_pod("", &[]);
    nameless.metadata.name = None;
    let status = status_of(pods.create(&PostParams::default(), &nameless).await);
    assert_eq!(status.code, 422);
    assert!(
        status.message.contains("name or generateName is required"),
        "{}",
        status.message
    );

    // Dry runs validate and name the object without storing it.
    let pp = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let dry = pods.create(&pp, &idle_pod("dry", &[])).await.unwrap();
    assert_eq!(dry.metadata.name.as_deref(), Some("dry"));
    assert_eq!(status_of(pods.get("dry").await).code, 404);
}

#[tokio::test]
async fn services_get_a_cluster_ip_and_delete_with_the_object() {
    let (_server, client) = start().await;
    let labels = BTreeMap::from([("app".to_owned(), "mcp".to_owned())]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let services: Api<Service> = Api::namespaced(client.clone(), "team");
    let service = Service {
        metadata: meta("web"),
        spec: Some(ServiceSpec {
            selector: Some(labels.clone()),
            ports: Some(vec![ServicePort {
                port: 80,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };
    let created = services
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let spec = created.spec.unwrap();
    assert!(
        spec.cluster_ip
            .as_deref()
            .is_some_and(|ip| ip.starts_with("10.96."))
    );
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let port = &spec.ports.unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    let bad = Service {
        metadata: meta("1web"),
        ..service.clone()
    };
    assert_eq!(
        status_of(services.create(&PostParams::default(), &bad).await).code,
        422
    );

    // Services answer a delete with the object.
    let deleted = services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        deleted.left().and_then(|s| s.metadata.name).as_deref(),
        Some("web")
    );
}

#[tokio::test]
async fn claims_bind_at_once_and_delete_returning_the_claim() {
    let (_server, client) = start().await;
    let labels = BTreeMap::from([("app".to_owned(), "mcp".to_owned())]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "team");
    let claim = PersistentVolumeClaim {
        metadata: meta("data"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity("1Gi".to_owned()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let created = claims.create(&PostParams::default(), &claim).await.unwrap();
    let status = created.status.unwrap();
    assert_eq!(status.phase.as_deref(), Some("Bound"));
    assert_eq!(
        status.capacity.unwrap()["storage"],
        Quantity("1Gi".to_owned())
    );
    let unsized_claim = PersistentVolumeClaim {
        metadata: meta("nosize"),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let status = status_of(claims.create(&PostParams::default(), &unsized_claim).await);
    assert_eq!(
        status.details.unwrap().causes[0].field,
        "spec.resources[storage]"
    );

    // The claim registry returns the deleted object (`ReturnDeletedObject: true`), not a Status.
    let deleted = claims
        .delete("data", &DeleteParams::default())
        .await
        .unwrap();
    let claim = deleted.left().unwrap();
    assert_eq!(claim.metadata.name.as_deref(), Some("data"));
    assert_eq!(status_of(claims.get("data").await).code, 404);
}

#[tokio::test]
async fn network_policies_default_and_select() {
    let (server, client) = start().await;
    let labels = BTreeMap::from([("app".to_owned(), "mcp".to_owned())]);
    let meta = |name: &str| ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels.clone()),
        ..ObjectMeta::default()
    };

    let policies: Api<NetworkPolicy> = Api::namespaced(client.clone(), "team");
    let policy = NetworkPolicy {
        metadata: meta("deny"),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(labels.clone()),
                ..LabelSelector::default()
            }),
            ..NetworkPolicySpec::default()
        }),
    };
    let created = policies
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    assert_eq!(
        created.spec.unwrap().policy_types,
        Some(vec!["Ingress".to_owned()])
    );
    let listed = policies
        .list(&ListParams::default().labels("app=mcp"))
        .await
        .unwrap();
    assert_eq!(listed.items.len(), 1);
    assert!(
        policies
            .list(&ListParams::default().labels("app=other"))
            .await
            .unwrap()
            .items
            .is_empty()
    );
    assert!(
        server
            .handle()
            .get::<NetworkPolicy>("team", "deny")
            .is_some()
    );

    // Policies answer a delete with a Success status.
    let deleted = policies
        .delete("deny", &DeleteParams::default())
        .await
        .unwrap();
    assert!(deleted.is_right());
    let status = deleted.right().unwrap();
    assert!(status.is_success());
    assert_eq!(status.details.unwrap().name, "deny");
    assert!(server.handle().list::<NetworkPolicy>(None).is_empty());
}

#[tokio::test]
async fn version_content_types_unknown_paths_and_request_log() {
    let (server, client) = start().await;
    let version = client.apiserver_version().await.unwrap();
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "33")
    );

    let request = http::Request::get("/api/v1/namespaces/default/pods")
        .body(kube::client::Body::empty())
        .unwrap();
    let response = client.send(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");

    let request = http::Request::get("/apis/batch/v1/namespaces/default/jobs")
        .body(Vec::new())
        .unwrap();
    let status = status_of(client.request_text(request).await);
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(
        status.message,
        "the server could not find the requested resource"
    );

    let request = http::Request::get("/api/v1/namespaces/%FF/pods/x")
        .body(Vec::new())
        .unwrap();
    assert_eq!(status_of(client.request_text(request).await).code, 404);
    // PUT is not modelled; PATCH is (merge patches of metadata), so one without a patch
    // content type is refused as an unsupported media type.
    let request = http::Request::put("/api/v1/namespaces/default/pods/x")
        .body(b"{}".to_vec())
        .unwrap();
    let status = status_of(client.request_text(request).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (405, "MethodNotAllowed")
    );
    let request = http::Request::patch("/api/v1/namespaces/default/pods/x")
        .body(b"{}".to_vec())
        .unwrap();
    let status = status_of(client.request_text(request).await);
    assert_eq!(
        (status.code, status.reason.as_str()),
        (415, "UnsupportedMediaType")
    );

    server.handle().clear_requests();
    let pods: Api<Pod> = Api::namespaced(client, "ns1");
    pods.list(&ListParams::default().labels("app in (a,b)").limit(5))
        .await
        .unwrap();
    let requests = server.handle().requests();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].method, Method::GET);
    assert_eq!(requests[0].path, "/api/v1/namespaces/ns1/pods");
    assert_eq!(
        requests[0].query_param("labelSelector").as_deref(),
        Some("app in (a,b)")
    );
    assert_eq!(requests[0].query_param("limit").as_deref(), Some("5"));
}
