//! Admission of new pods: ServiceAccount, LimitRange defaults and bounds, Pod Security
//! `restricted`, ResourceQuota; each refusal a 403 with the plugin's message.

use k8s_openapi::api::core::v1::{LimitRange, Pod, ResourceQuota, ServiceAccount};
use kube::api::{Api, PostParams};
use mcp_k8s_fake::POD_SECURITY_ENFORCE;
use serde_json::json;

use crate::{create, idle_pod, start, status_of};

fn generated(prefix: &str) -> Pod {
    let mut pod = idle_pod("x", &[]);
    pod.metadata.name = None;
    pod.metadata.generate_name = Some(prefix.to_owned());
    pod
}

async fn put<K>(client: &kube::Client, ns: &str, value: serde_json::Value)
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    api.create(
        &PostParams::default(),
        &serde_json::from_value(value).unwrap(),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn restricted_namespaces_refuse_pods_that_violate_the_level() {
    let (server, client) = start().await;
    server
        .handle()
        .set_namespace_label("psa", POD_SECURITY_ENFORCE, Some("restricted"));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "psa");
    let status = status_of(
        pods.create(&PostParams::default(), &generated("web-"))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    // Named by its generateName: admission runs before the name is generated.
    assert_eq!(
        status.message,
        "pods \"web-\" is forbidden: violates PodSecurity \"restricted:latest\": \
         allowPrivilegeEscalation != false (container \"main\" must set securityContext.allowPrivilegeEscalation=false), \
         unrestricted capabilities (container \"main\" must set securityContext.capabilities.drop=[\"ALL\"]), \
         runAsNonRoot != true (pod or container \"main\" must set securityContext.runAsNonRoot=true), \
         seccompProfile (pod or container \"main\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
    );
    // A compliant pod is admitted; elsewhere the plain pod is too.
    let mut good = idle_pod("good", &[]);
    let spec = good.spec.as_mut().unwrap();
    spec.security_context = Some(
        serde_json::from_value(
            json!({"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}}),
        )
        .unwrap(),
    );
    spec.containers[0].security_context = Some(
        serde_json::from_value(
            json!({"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}}),
        )
        .unwrap(),
    );
    create(&pods, &good).await;
    let other: Api<Pod> = Api::namespaced(client, "open");
    create(&other, &idle_pod("plain", &[])).await;
    server
        .handle()
        .set_namespace_label("psa", POD_SECURITY_ENFORCE, None);
    create(&pods, &idle_pod("plain", &[])).await;
}

#[tokio::test]
async fn service_accounts_must_exist_except_default() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "sa");
    let mut pod = idle_pod("p", &[]);
    pod.spec.as_mut().unwrap().service_account_name = Some("runner".to_owned());
    let status = status_of(pods.create(&PostParams::default(), &pod).await);
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"p\" is forbidden: error looking up service account sa/runner: serviceaccount \"runner\" not found"
    );
    put::<ServiceAccount>(&client, "sa", json!({"metadata": {"name": "runner"}})).await;
    create(&pods, &pod).await;
    let mut default = idle_pod("d", &[]);
    default.spec.as_mut().unwrap().service_account_name = Some("default".to_owned());
    create(&pods, &default).await;
}

#[tokio::test]
async fn limit_ranges_default_and_bound_container_resources() {
    let (_server, client) = start().await;
    put::<LimitRange>(
        &client,
        "lr",
        json!({"metadata": {"name": "l"}, "spec": {"limits": [{
            "type": "Container",
            "max": {"memory": "256Mi"},
            "default": {"cpu": "500m"},
            "min": {"cpu": "100m"},
        }]}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "lr");
    // Defaults: limits from `default` then `max`, requests from the default limits.
    let created = create(&pods, &idle_pod("d", &[])).await;
    let resources = created.spec.unwrap().containers[0]
        .resources
        .clone()
        .unwrap();
    let limits = resources.limits.unwrap();
    let requests = resources.requests.unwrap();
    assert_eq!(limits["cpu"].0, "500m");
    assert_eq!(limits["memory"].0, "256Mi");
    assert_eq!(requests["cpu"].0, "500m");
    assert_eq!(requests["memory"].0, "256Mi");
    // Bounds, aggregated as the apiserver does.
    let mut big = idle_pod("big", &[]);
    big.spec.as_mut().unwrap().containers[0].resources = Some(
        serde_json::from_value(json!({
            "limits": {"memory": "1Gi"}, "requests": {"cpu": "50m", "memory": "64Mi"}
        }))
        .unwrap(),
    );
    let status = status_of(pods.create(&PostParams::default(), &big).await);
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"big\" is forbidden: [minimum cpu usage per Container is 100m, but request is 50m, maximum memory usage per Container is 256Mi, but limit is 1Gi]"
    );
}

#[tokio::test]
async fn resource_quotas_count_pods_and_demand_what_they_limit() {
    let (_server, client) = start().await;
    put::<ResourceQuota>(
        &client,
        "rq",
        json!({"metadata": {"name": "q"}, "spec": {"hard": {"pods": "2", "limits.memory": "300Mi"}}}),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(client, "rq");
    let status = status_of(
        pods.create(&PostParams::default(), &idle_pod("none", &[]))
            .await,
    );
    assert_eq!(status.code, 403);
    assert_eq!(
        status.message,
        "pods \"none\" is forbidden: failed quota: q: must specify limits.memory"
    );
    let with_limit = |name: &str, memory: &str| {
        let mut pod = idle_pod(name, &[]);
        pod.spec.as_mut().unwrap().containers[0].resources =
            Some(serde_json::from_value(json!({"limits": {"memory": memory}})).unwrap());
        pod
    };
    create(&pods, &with_limit("a", "200Mi")).await;
    let status = status_of(
        pods.create(&PostParams::default(), &with_limit("b", "128Mi"))
            .await,
    );
    assert_eq!(
        status.message,
        "pods \"b\" is forbidden: exceeded quota: q, requested: limits.memory=128Mi, used: limits.memory=200Mi, limited: limits.memory=300Mi"
    );
    create(&pods, &with_limit("c", "100Mi")).await;
    let status = status_of(
        pods.create(&PostParams::default(), &with_limit("d", "1Mi"))
            .await,
    );
    assert!(
        status
            .message
            .starts_with("pods \"d\" is forbidden: exceeded quota: q, requested: "),
        "{}",
        status.message
    );
    assert!(status.message.contains("pods=1"), "{}", status.message);
}

#[tokio::test]
async fn a_request_above_its_limit_is_invalid() {
    let (_server, client) = start().await;
    let pods: Api<Pod> = Api::namespaced(client, "res");
    let mut pod = idle_pod("p", &[]);
    pod.spec.as_mut().unwrap().containers[0].resources = Some(
        serde_json::from_value(json!({
            "limits": {"memory": "64Mi"}, "requests": {"memory": "128Mi", "cpu": "100m"}
        }))
        .unwrap(),
    );
    let status = status_of(pods.create(&PostParams::default(), &pod).await);
    assert_eq!((status.code, status.reason.as_str()), (422, "Invalid"));
    assert_eq!(
        status.message,
        "Pod \"p\" is invalid: spec.containers[0].resources.requests[memory]: Invalid value: \"128Mi\": must be less than or equal to memory limit of 64Mi"
    );
}
