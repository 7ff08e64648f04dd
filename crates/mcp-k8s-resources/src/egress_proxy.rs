//! The egress proxy of a namespace: what the backend creates, once, on the first start of an
//! instance whose policy names hosts (every object named [`EGRESS_PROXY_NAME`]).
//!
//! | object         | what for                                                                  |
//! |----------------|---------------------------------------------------------------------------|
//! | ServiceAccount | the proxy's identity (its token is mounted: it reads pods)                |
//! | Role           | `get` on `pods`: the proxy looks up the pod of the instance named as proxy user |
//! | RoleBinding    | the Role to the ServiceAccount                                            |
//! | NetworkPolicy  | ingress only from pods labelled [`EGRESS_PROXY_CLIENT_LABEL`] on 3128; egress everywhere outside the metadata ranges, + DNS |
//! | Service        | ClusterIP `mcp-egress-proxy:3128`, the name in the clients' `HTTP(S)_PROXY` |
//! | Deployment     | the proxy (`--kubernetes`), restricted Pod Security like the servers     |
//!
//! The objects carry no instance label: no instance owns them and stopping one never removes
//! them. They are not labelled `mcpctl.io/managed` either, so no listing mistakes the proxy's
//! pods for instances.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec, PodTemplateSpec, Probe,
    ResourceRequirements, SeccompProfile, SecurityContext, Service, ServiceAccount, ServicePort,
    ServiceSpec, TCPSocketAction,
};
use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_types::labels::{APP_COMPONENT, APP_MANAGED_BY, MANAGED_BY_VALUE};
use mcp_types::{FieldError, ValidationErrors};

use crate::egress::{
    EGRESS_PROXY_CLIENT_LABEL, EGRESS_PROXY_NAME, EGRESS_PROXY_PORT, EGRESS_PROXY_PORT_NAME,
};
pub use crate::egress::{EGRESS_PROXY_COMPONENT, proxy_selector};
use crate::network_policy::{dns_rule, match_labels, open_rule, port};
use crate::{BuildOptions, Manifest};

/// Name of the proxy's container.
pub const EGRESS_PROXY_CONTAINER: &str = "proxy";
/// Proxy replicas: two, so a node drain or a rollout does not cut every server's egress.
const REPLICAS: i32 = 2;
/// The proxy's uid and gid (non-root, as the namespace's restricted level demands).
const PROXY_UID: i64 = 1000;

/// The objects of a namespace's egress proxy, each named [`EGRESS_PROXY_NAME`].
#[derive(Debug, Clone, PartialEq)]
pub struct EgressProxyResources {
    /// The proxy's identity.
    pub service_account: ServiceAccount,
    /// `get` on `pods`.
    pub role: Role,
    /// Grants `role` to `service_account`.
    pub role_binding: RoleBinding,
    /// Who may reach the proxy and where it may connect; `None` when
    /// [`BuildOptions::network_policy`] is off.
    pub network_policy: Option<NetworkPolicy>,
    /// The name clients use.
    pub service: Service,
    /// The proxy itself.
    pub deployment: Deployment,
}

impl EgressProxyResources {
    /// The objects in the order to create them: identity and permissions first, the policy
    /// before the pods it isolates, the Deployment last.
    pub fn manifests(&self) -> Vec<Manifest> {
        let mut out = vec![
            Manifest::from(self.service_account.clone()),
            Manifest::from(self.role.clone()),
            Manifest::from(self.role_binding.clone()),
        ];
        out.extend(self.network_policy.clone().map(Manifest::from));
        out.push(Manifest::from(self.service.clone()));
        out.push(Manifest::from(self.deployment.clone()));
        out
    }
}

fn proxy_labels() -> BTreeMap<String, String> {
    let mut labels = proxy_selector();
    labels.insert(APP_COMPONENT.to_owned(), EGRESS_PROXY_COMPONENT.to_owned());
    labels.insert(APP_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned());
    labels
}

/// Builds the egress proxy of `opts.namespace`, running `opts.egress_proxy_image`.
///
/// # Errors
/// `options.*` for invalid options (namespace, image).
pub fn build_egress_proxy(opts: &BuildOptions) -> Result<EgressProxyResources, ValidationErrors> {
    let mut errors: Vec<FieldError> = Vec::new();
    opts.check(&mut errors);
    if let Some(e) = ValidationErrors::from_vec(errors) {
        return Err(e);
    }
    let meta = ObjectMeta {
        name: Some(EGRESS_PROXY_NAME.to_owned()),
        namespace: Some(opts.namespace.clone()),
        labels: Some(proxy_labels()),
        ..ObjectMeta::default()
    };
    Ok(EgressProxyResources {
        service_account: ServiceAccount {
            metadata: meta.clone(),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta.clone(),
            rules: Some(vec![PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".to_owned()]),
                verbs: vec!["get".to_owned()],
                ..PolicyRule::default()
            }]),
        },
        role_binding: RoleBinding {
            metadata: meta.clone(),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "Role".to_owned(),
                name: EGRESS_PROXY_NAME.to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: EGRESS_PROXY_NAME.to_owned(),
                namespace: Some(opts.namespace.clone()),
                api_group: None,
            }]),
        },
        network_policy: opts.network_policy.then(|| network_policy(meta.clone())),
        service: Service {
            metadata: meta.clone(),
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".to_owned()),
                selector: Some(proxy_selector()),
                ports: Some(vec![ServicePort {
                    name: Some(EGRESS_PROXY_PORT_NAME.to_owned()),
                    port: i32::from(EGRESS_PROXY_PORT),
                    target_port: Some(IntOrString::String(EGRESS_PROXY_PORT_NAME.to_owned())),
                    protocol: Some("TCP".to_owned()),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        },
        deployment: deployment(meta, &opts.egress_proxy_image),
    })
}

fn network_policy(meta: ObjectMeta) -> NetworkPolicy {
    let (key, value) = EGRESS_PROXY_CLIENT_LABEL;
    NetworkPolicy {
        metadata: meta,
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(proxy_selector()),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_owned(), "Egress".to_owned()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![NetworkPolicyPeer {
                    pod_selector: Some(match_labels([(key, value)])),
                    ..NetworkPolicyPeer::default()
                }]),
                ports: Some(vec![port("TCP", i32::from(EGRESS_PROXY_PORT))]),
            }]),
            egress: Some(vec![open_rule(), dns_rule()]),
        }),
    }
}

fn deployment(meta: ObjectMeta, image: &str) -> Deployment {
    let quantities = |cpu: &str, memory: &str| {
        BTreeMap::from([
            ("cpu".to_owned(), Quantity(cpu.to_owned())),
            ("memory".to_owned(), Quantity(memory.to_owned())),
        ])
    };
    let container = Container {
        name: EGRESS_PROXY_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        args: Some(vec![
            "--kubernetes".to_owned(),
            "--listen".to_owned(),
            format!("0.0.0.0:{EGRESS_PROXY_PORT}"),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some(EGRESS_PROXY_PORT_NAME.to_owned()),
            container_port: i32::from(EGRESS_PROXY_PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String(EGRESS_PROXY_PORT_NAME.to_owned()),
                ..TCPSocketAction::default()
            }),
            period_seconds: Some(5),
            ..Probe::default()
        }),
        resources: Some(ResourceRequirements {
            requests: Some(quantities("50m", "32Mi")),
            limits: Some(quantities("500m", "128Mi")),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    };
    let template_meta = ObjectMeta {
        labels: Some(proxy_labels()),
        ..ObjectMeta::default()
    };
    Deployment {
        metadata: meta,
        spec: Some(DeploymentSpec {
            replicas: Some(REPLICAS),
            selector: LabelSelector {
                match_labels: Some(proxy_selector()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(template_meta),
                spec: Some(PodSpec {
                    containers: vec![container],
                    service_account_name: Some(EGRESS_PROXY_NAME.to_owned()),
                    // The proxy reads pods: its token is needed.
                    automount_service_account_token: Some(true),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(PROXY_UID),
                        run_as_group: Some(PROXY_UID),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".to_owned(),
                            localhost_profile: None,
                        }),
                        ..PodSecurityContext::default()
                    }),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}
