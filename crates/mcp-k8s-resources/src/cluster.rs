//! Cluster-level objects: the namespace (with Pod Security admission labels) and the backend's
//! ServiceAccount, Role and RoleBinding.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mcp_types::ValidationErrors;
use mcp_types::labels::{APP_MANAGED_BY, MANAGED_BY_VALUE};
use mcp_types::names::{check_dns1123_label, check_dns1123_subdomain};

use crate::EGRESS_PROXY_NAME;

/// One RBAC rule of the backend's Role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleRule {
    /// API group (`""` for the core group).
    pub api_group: &'static str,
    /// Resource or subresource (`pods/log`).
    pub resource: &'static str,
    /// Allowed verbs.
    pub verbs: &'static [&'static str],
    /// The only objects the rule applies to (all of the resource when empty). RBAC cannot
    /// restrict `create` or `list` by name, so such rules come in pairs: `create` for all,
    /// the other verbs for the named objects.
    pub resource_names: &'static [&'static str],
}

/// Exactly what the Kubernetes backend does: manage pods (read their logs, attach to a stdio
/// server's stdin/stdout), the NetworkPolicies, PersistentVolumeClaims and Services created
/// with them, and the namespace's egress proxy.
const BACKEND_RULES: &[RoleRule] = &[
    RoleRule {
        api_group: "",
        resource: "pods",
        verbs: &["create", "get", "list", "watch", "delete"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "",
        resource: "pods/log",
        verbs: &["get"],
        resource_names: &[],
    },
    // `attach_stdio`: kube attaches over a WebSocket, an HTTP GET upgrade. The apiserver
    // authorizes that GET as `get` on pods/attach, and since Kubernetes 1.35
    // (AuthorizePodWebsocketUpgradeCreatePermission, on by default) also checks `create`, the
    // verb SPDY's POST always needed. Both are required to attach on 1.33 through 1.37.
    RoleRule {
        api_group: "",
        resource: "pods/attach",
        verbs: &["create", "get"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "networking.k8s.io",
        resource: "networkpolicies",
        // `patch`: the pod becomes its owner once it exists (see mcp-k8s `lifecycle`).
        verbs: &["create", "get", "list", "patch", "delete"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "",
        resource: "persistentvolumeclaims",
        verbs: &["create", "get", "list", "patch", "delete"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "",
        resource: "services",
        verbs: &["create", "get", "list", "delete"],
        resource_names: &[],
    },
    // The namespace's egress proxy (`build_egress_proxy`): created when a start needs it and
    // missing, removed by `collect_garbage` when no instance needs it. Its Service and
    // NetworkPolicy fall under the rules above. Reading and deleting is limited to the proxy's
    // own objects, so the backend can neither read nor remove other Roles or bindings (its
    // own included). Creating the proxy's Role (`get` on pods) and RoleBinding needs no
    // `escalate` or `bind`: the backend holds that permission itself.
    RoleRule {
        api_group: "apps",
        resource: "deployments",
        verbs: &["create"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "apps",
        resource: "deployments",
        verbs: &["get", "delete"],
        resource_names: &[EGRESS_PROXY_NAME],
    },
    RoleRule {
        api_group: "",
        resource: "serviceaccounts",
        verbs: &["create"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "",
        resource: "serviceaccounts",
        verbs: &["get", "delete"],
        resource_names: &[EGRESS_PROXY_NAME],
    },
    RoleRule {
        api_group: "rbac.authorization.k8s.io",
        resource: "roles",
        verbs: &["create"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "rbac.authorization.k8s.io",
        resource: "roles",
        verbs: &["get", "delete"],
        resource_names: &[EGRESS_PROXY_NAME],
    },
    RoleRule {
        api_group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        verbs: &["create"],
        resource_names: &[],
    },
    RoleRule {
        api_group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        verbs: &["get", "delete"],
        resource_names: &[EGRESS_PROXY_NAME],
    },
];

/// The rules of the backend's Role: one per resource, two where reading and deleting are
/// limited to named objects.
pub fn backend_role_rules() -> &'static [RoleRule] {
    BACKEND_RULES
}

/// The backend's identity in its namespace.
#[derive(Debug, Clone, PartialEq)]
pub struct RbacResources {
    /// The account the backend runs as.
    pub service_account: ServiceAccount,
    /// The permissions of [`backend_role_rules`].
    pub role: Role,
    /// Grants `role` to `service_account`.
    pub role_binding: RoleBinding,
}

/// Pod Security admission labels enforcing (and auditing and warning about) the `restricted`
/// profile at the latest version.
pub fn pod_security_labels() -> BTreeMap<String, String> {
    ["enforce", "audit", "warn"]
        .into_iter()
        .flat_map(|mode| {
            let key = format!("pod-security.kubernetes.io/{mode}");
            [
                (format!("{key}-version"), "latest".to_owned()),
                (key, "restricted".to_owned()),
            ]
        })
        .collect()
}

/// Builds the namespace the servers run in, with [`pod_security_labels`].
///
/// # Errors
/// `name` when it is not a DNS-1123 label.
pub fn build_namespace(name: &str) -> Result<Namespace, ValidationErrors> {
    check_dns1123_label(name).map_err(|e| ValidationErrors::single("name", e))?;
    let mut labels = pod_security_labels();
    labels.insert(APP_MANAGED_BY.to_owned(), MANAGED_BY_VALUE.to_owned());
    Ok(Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        spec: None,
        status: None,
    })
}

/// Builds the ServiceAccount, Role and RoleBinding, all named `name`, that let the backend
/// manage instances in `namespace`.
///
/// # Errors
/// `namespace` when it is not a DNS-1123 label, `name` when it is not a DNS-1123 subdomain.
pub fn build_rbac(namespace: &str, name: &str) -> Result<RbacResources, ValidationErrors> {
    let errors: Vec<_> = [
        ("namespace", check_dns1123_label(namespace)),
        ("name", check_dns1123_subdomain(name)),
    ]
    .into_iter()
    .filter_map(|(path, r)| {
        r.err().map(|message| mcp_types::FieldError {
            path: path.to_owned(),
            message,
        })
    })
    .collect();
    if let Some(e) = ValidationErrors::from_vec(errors) {
        return Err(e);
    }
    let meta = ObjectMeta {
        name: Some(name.to_owned()),
        namespace: Some(namespace.to_owned()),
        labels: Some(BTreeMap::from([(
            APP_MANAGED_BY.to_owned(),
            MANAGED_BY_VALUE.to_owned(),
        )])),
        ..ObjectMeta::default()
    };
    let rules = BACKEND_RULES
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.api_group.to_owned()]),
            resources: Some(vec![r.resource.to_owned()]),
            verbs: r.verbs.iter().map(|v| (*v).to_owned()).collect(),
            resource_names: (!r.resource_names.is_empty())
                .then(|| r.resource_names.iter().map(|n| (*n).to_owned()).collect()),
            ..PolicyRule::default()
        })
        .collect();
    Ok(RbacResources {
        service_account: ServiceAccount {
            metadata: meta.clone(),
            ..ServiceAccount::default()
        },
        role: Role {
            metadata: meta.clone(),
            rules: Some(rules),
        },
        role_binding: RoleBinding {
            metadata: meta,
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "Role".to_owned(),
                name: name.to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "ServiceAccount".to_owned(),
                name: name.to_owned(),
                namespace: Some(namespace.to_owned()),
                api_group: None,
            }]),
        },
    })
}
