//! The namespace from `examples/k8s/namespace.yaml` enforces the restricted Pod Security
//! Standard: it admits every pod the builders make, and (negative control) refuses a privileged
//! pod. Creates are server-side dry runs: admission runs in full, nothing is stored.

use k8s_openapi::api::core::v1::{Namespace, Pod, SecurityContext};
use kube::api::{Api, PostParams};
use mcp_k8s_resources::{BuildOptions, build_instance};
use mcp_types::{GpuSpec, InstanceId, McpServer, Quantity, SizePreset, Timestamp, VolumeSpec};

use crate::support::{Kind, cluster, restricted_pod, unique};

fn dry_run() -> PostParams {
    PostParams {
        dry_run: true,
        ..PostParams::default()
    }
}

/// The server shapes of the generated examples: HTTP with egress, a volume, a GPU, host-name
/// egress (through the egress proxy).
fn shapes(kind: &Kind) -> Vec<McpServer> {
    let mut http = kind.http_server("psa-http", 8080);
    http.egress = Some(mcp_types::Egress::Allow(vec![mcp_types::EgressRule::cidr(
        "203.0.113.0/24",
        [],
    )]));
    let volume = McpServer {
        volumes: vec![VolumeSpec {
            name: "data".into(),
            size: Quantity::parse("1Gi").expect("quantity"),
            storage_class: None,
            mount_path: "/data".into(),
            access_modes: Vec::new(),
            read_only: false,
            persistent: false,
        }],
        ..kind.fixture("psa-volume", &mcp_orchestrator_api::FixtureScript::new())
    };
    let gpu = McpServer {
        gpu: Some(GpuSpec {
            product: Some("NVIDIA-A100-SXM4-40GB".into()),
            count: 1,
        }),
        resources: mcp_types::ResourceRequirements::preset(SizePreset::Large),
        ..McpServer::new("psa-gpu", &kind.image)
    };
    let proxied = McpServer {
        egress: Some(mcp_types::Egress::Allow(vec![mcp_types::EgressRule::host(
            "api.github.com",
            [443],
        )])),
        ..kind.fixture("psa-proxied", &mcp_orchestrator_api::FixtureScript::new())
    };
    vec![http, volume, gpu, proxied]
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn the_namespace_enforces_restricted() {
    let kind = cluster().await;
    let namespaces: Api<Namespace> = Api::all(kind.admin.clone());
    let ns = namespaces.get(&kind.namespace).await.expect("namespace");
    let labels = ns.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn restricted_admits_every_pod_the_builders_make() {
    let kind = cluster().await;
    let pods = kind.pods();
    let opts = BuildOptions::new(&kind.namespace, Timestamp::now());
    for spec in shapes(&kind) {
        let id = InstanceId::new(mcp_types::new_instance_name(&spec.name));
        let built = build_instance(&spec, &id, &opts).expect("build");
        if let Err(e) = pods.create(&dry_run(), &built.pod).await {
            panic!("restricted refused the {} pod: {e}", spec.name);
        }
        // The egress proxy's pods, as its ReplicaSet would create them. Pod Security admission
        // only warns about a Deployment; it enforces on the pods. (The dry run names the
        // default account: the proxy's own exists only once the backend made it.)
        if let Some(proxy) = built.egress_proxy {
            let template = proxy.deployment.spec.expect("spec").template;
            let mut metadata = template.metadata.unwrap_or_default();
            metadata.name = Some(unique("psa-egress-proxy"));
            let mut spec = template.spec.expect("pod spec");
            spec.service_account_name = None;
            let pod = Pod {
                metadata,
                spec: Some(spec),
                status: None,
            };
            if let Err(e) = pods.create(&dry_run(), &pod).await {
                panic!("restricted refused the egress proxy's pod: {e}");
            }
        }
    }
    // The probe fixture is held to the same standard.
    let probe = restricted_pod(&unique("psa-probe"), &kind.probe_image, &[], vec![]);
    pods.create(&dry_run(), &probe)
        .await
        .expect("restricted admits the probe pod");
}

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn restricted_refuses_a_privileged_pod() {
    let kind = cluster().await;
    let mut pod: Pod = restricted_pod(&unique("privileged"), &kind.probe_image, &[], vec![]);
    if let Some(spec) = pod.spec.as_mut() {
        spec.host_network = Some(true);
        spec.security_context = None;
        spec.containers[0].security_context = Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..SecurityContext::default()
        });
    }
    // Refused even for cluster-admin: Pod Security admission is not an RBAC matter.
    match kind.pods().create(&dry_run(), &pod).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("violates PodSecurity"),
                "refused for another reason: {status:?}"
            );
            for field in ["privileged", "hostNetwork", "runAsNonRoot"] {
                assert!(
                    status.message.contains(field),
                    "{field} not named: {status:?}"
                );
            }
        }
        Ok(pod) => panic!("a privileged pod was admitted: {:?}", pod.metadata.name),
        Err(e) => panic!("unexpected error: {e}"),
    }
}
