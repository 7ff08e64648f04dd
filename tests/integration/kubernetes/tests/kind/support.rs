//! What every kind test needs: the cluster from the environment (or a printed skip), an admin
//! client for fixtures and inspection, the orchestrator under test authenticated as the `mcpctl`
//! service account, small server specs, and probe pods.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    Capabilities, Container, Pod, PodSecurityContext, PodSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, ServiceAccount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as K8sQuantity;
use kube::api::{Api, DeleteParams, LogParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use mcp_k8s::KubernetesOrchestrator;
use mcp_orchestrator_api::conformance::{ImageServers, ServerFactory};
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_types::{K8sConfig, McpServer, Quantity, ResourceList, ResourceRequirements as Resources};

/// Set by `cargo xtask kind-test`: the cluster's name. Absent at build time, every test is
/// ignored (see `build.rs`); absent at run time, a test that is not ignored fails.
pub(crate) const CLUSTER_ENV: &str = "MCPCTL_KIND_CLUSTER";

/// Longest wait for a pod to reach a state (image already on the node; PVCs provision quickly).
pub(crate) const TIMEOUT: Duration = Duration::from_secs(180);

/// The cluster under test.
pub(crate) struct Kind {
    /// Namespace of everything the tests create.
    pub(crate) namespace: String,
    /// The test MCP server image (loaded into the node).
    pub(crate) image: String,
    /// The probe image (loaded into the node).
    pub(crate) probe_image: String,
    /// Cluster-admin client: fixtures (probe pods) and inspection only.
    pub(crate) admin: kube::Client,
    /// The backend under test, authenticated with the `mcpctl` service account's token.
    pub(crate) orchestrator: KubernetesOrchestrator,
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{CLUSTER_ENV} is set but {name} is not"))
}

/// The cluster `cargo xtask kind-test` made, from the `MCPCTL_KIND_*` variables. The tests run
/// only when built with [`CLUSTER_ENV`] set, so a missing cluster here is a failure.
pub(crate) async fn cluster() -> Kind {
    assert!(
        std::env::var_os(CLUSTER_ENV).is_some(),
        "{CLUSTER_ENV} is not set: the kind tests run through `cargo xtask kind-test`"
    );
    let kubeconfig = PathBuf::from(env("MCPCTL_KIND_KUBECONFIG"));
    let context = env("MCPCTL_KIND_CONTEXT");
    let namespace = env("MCPCTL_KIND_NAMESPACE");
    let token_file = env("MCPCTL_KIND_TOKEN_FILE");

    let file = Kubeconfig::read_from(&kubeconfig)
        .unwrap_or_else(|e| panic!("reading {}: {e}", kubeconfig.display()));
    let options = KubeConfigOptions {
        context: Some(context.clone()),
        ..KubeConfigOptions::default()
    };
    let admin_config = kube::Config::from_custom_kubeconfig(file, &options)
        .await
        .unwrap_or_else(|e| panic!("context {context} of {}: {e}", kubeconfig.display()));
    let admin = kube::Client::try_from(admin_config.clone()).expect("admin client");

    // Same API server and CA, but the service account's bearer token instead of the admin's
    // client certificate: the orchestrator gets exactly the verbs examples/k8s/rbac.yaml grants.
    let mut sa_config = admin_config;
    sa_config.auth_info = AuthInfo {
        token_file: Some(token_file),
        ..AuthInfo::default()
    };
    let sa_client = kube::Client::try_from(sa_config).expect("service account client");
    let orchestrator = KubernetesOrchestrator::with_client(
        sa_client,
        K8sConfig {
            namespace: namespace.clone(),
            ..K8sConfig::default()
        },
    )
    .expect("orchestrator");

    wait_for_default_service_account(&admin, &namespace).await;
    Kind {
        namespace,
        image: env("MCPCTL_KIND_IMAGE"),
        probe_image: env("MCPCTL_KIND_PROBE_IMAGE"),
        admin,
        orchestrator,
    }
}

/// A new namespace's `default` service account appears a moment after the namespace; pods
/// (which run as it) are refused until then.
async fn wait_for_default_service_account(admin: &kube::Client, namespace: &str) {
    let api: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while api.get_opt("default").await.ok().flatten().is_none() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no default service account in {namespace} after 60s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Requests and limits small enough that the conformance kit's ~40 concurrent pods fit on a
/// 2-core kind node next to its control plane.
pub(crate) fn small() -> Resources {
    let q = |s: &str| Quantity::parse(s).ok();
    Resources {
        preset: None,
        requests: ResourceList {
            cpu: q("10m"),
            memory: q("32Mi"),
        },
        limits: ResourceList {
            cpu: q("250m"),
            memory: q("64Mi"),
        },
    }
}

/// [`ImageServers`] with [`small`] resources.
#[derive(Debug, Clone)]
pub(crate) struct SmallImageServers(pub(crate) ImageServers);

impl ServerFactory for SmallImageServers {
    fn server(&self, name: &str, script: &FixtureScript) -> McpServer {
        McpServer {
            resources: small(),
            ..self.0.server(name, script)
        }
    }
}

impl Kind {
    /// The kit's factory for this cluster's test image.
    pub(crate) fn servers(&self) -> SmallImageServers {
        SmallImageServers(ImageServers {
            image: self.image.clone(),
        })
    }

    /// A server running `script` on the test image.
    pub(crate) fn fixture(&self, name: &str, script: &FixtureScript) -> McpServer {
        self.servers().server(name, script)
    }

    /// A streamable-HTTP MCP server on the test image, listening on `port`.
    pub(crate) fn http_server(&self, name: &str, port: u16) -> McpServer {
        McpServer {
            transport: mcp_types::Transport::StreamableHttp,
            port: Some(port),
            args: vec!["http".into(), "--port".into(), port.to_string()],
            resources: small(),
            ..McpServer::new(name, &self.image)
        }
    }

    /// A server running the probe image with `args`.
    pub(crate) fn probe_server(&self, name: &str, args: &[&str]) -> McpServer {
        McpServer {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            resources: small(),
            ..McpServer::new(name, &self.probe_image)
        }
    }

    /// Admin view of the namespace's pods.
    pub(crate) fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    /// Admin view of any namespaced kind in the test namespace.
    pub(crate) fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    /// The pod IP of a running instance.
    pub(crate) async fn pod_ip(&self, id: &str) -> String {
        let pod = self.pods().get(id).await.expect("get the server's pod");
        pod.status
            .and_then(|s| s.pod_ip)
            .unwrap_or_else(|| panic!("pod {id} has no IP"))
    }

    /// Runs the probe as a bare pod (not through the orchestrator, so no NetworkPolicy selects
    /// it) with `labels`, until it exits; returns whether it exited 0, and its output. The pod
    /// is deleted afterwards.
    pub(crate) async fn run_probe(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        args: &[&str],
    ) -> (bool, String) {
        let pods = self.pods();
        let pod = restricted_pod(
            name,
            &self.probe_image,
            labels,
            args.iter().map(|a| (*a).to_owned()).collect(),
        );
        pods.create(&PostParams::default(), &pod)
            .await
            .unwrap_or_else(|e| panic!("create probe pod {name}: {e}"));
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        let phase = loop {
            let phase = pods
                .get(name)
                .await
                .ok()
                .and_then(|p| p.status)
                .and_then(|s| s.phase)
                .unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                break phase;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "probe pod {name} still {phase:?} after {TIMEOUT:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let logs = pods
            .logs(name, &LogParams::default())
            .await
            .unwrap_or_else(|e| format!("<no logs: {e}>"));
        let _ = pods
            .delete(
                name,
                &DeleteParams {
                    grace_period_seconds: Some(0),
                    ..DeleteParams::default()
                },
            )
            .await;
        (phase == "Succeeded", logs)
    }
}

/// A pod that passes the restricted Pod Security Standard, running `image` with `args` once.
pub(crate) fn restricted_pod(
    name: &str,
    image: &str,
    labels: &[(&str, &str)],
    args: Vec<String>,
) -> Pod {
    let q = |s: &str| K8sQuantity(s.to_owned());
    Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .chain([("mcpctl-test/probe".to_owned(), "true".to_owned())])
                    .collect(),
            ),
            ..kube::api::ObjectMeta::default()
        },
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_owned()),
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(1000),
                run_as_group: Some(1000),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    localhost_profile: None,
                }),
                ..PodSecurityContext::default()
            }),
            containers: vec![Container {
                name: "probe".to_owned(),
                image: Some(image.to_owned()),
                image_pull_policy: Some("IfNotPresent".to_owned()),
                args: Some(args),
                resources: Some(ResourceRequirements {
                    requests: Some(BTreeMap::from([
                        ("cpu".to_owned(), q("10m")),
                        ("memory".to_owned(), q("16Mi")),
                    ])),
                    limits: Some(BTreeMap::from([
                        ("cpu".to_owned(), q("100m")),
                        ("memory".to_owned(), q("32Mi")),
                    ])),
                    ..ResourceRequirements::default()
                }),
                security_context: Some(SecurityContext {
                    allow_privilege_escalation: Some(false),
                    read_only_root_filesystem: Some(true),
                    run_as_non_root: Some(true),
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_owned()]),
                        add: None,
                    }),
                    ..SecurityContext::default()
                }),
                ..Container::default()
            }],
            ..PodSpec::default()
        }),
        status: None,
    }
}

/// A name unique to this test run, for fixture pods and servers.
pub(crate) fn unique(prefix: &str) -> String {
    let id = mcp_types::new_instance_name(prefix);
    // new_instance_name gives `mcp-<prefix>-<suffix>`: a valid DNS-1123 label.
    id.trim_start_matches("mcp-").to_owned()
}

/// Polls `f` every 250 ms until it returns `Some`, panicking with `what` after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
