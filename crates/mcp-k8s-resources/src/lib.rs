//! Pure builders from an MCP server spec to the Kubernetes objects that run it.
//!
//! Everything here is sans-IO: the functions take a validated [`mcp_types::McpServer`], an
//! instance id and [`BuildOptions`], and return `k8s-openapi` values. No client, no runtime,
//! no clock (the creation timestamp is an input), so the output is deterministic and can be
//! snapshot-tested, rendered to YAML by [`to_yaml`], or sent to a cluster by a backend.
//!
//! The entry point for one instance is [`build_instance`]; cluster-level objects (the namespace
//! and the backend's own RBAC) come from [`build_namespace`] and [`build_rbac`], and the
//! namespace's egress proxy (shared by the instances whose egress policy names hosts) from
//! [`build_egress_proxy`].
//!
//! Every object an instance owns carries the label [`mcp_types::labels::INSTANCE`], so a backend
//! removes them all with the selector from [`names::instance_selector`].

mod cluster;
mod egress;
mod egress_proxy;
mod instance;
mod meta;
pub mod names;
mod network_policy;
mod options;
mod pod;
mod service;
mod storage;
mod yaml;

pub use cluster::{
    RbacResources, RoleRule, backend_role_rules, build_namespace, build_rbac, pod_security_labels,
};
pub use egress::{
    EGRESS_PROXY_CLIENT_LABEL, EGRESS_PROXY_NAME, EGRESS_PROXY_PORT, EGRESS_PROXY_PORT_NAME,
    NETWORK_POLICY_ANNOTATION, PROXY_ENV_NAMES, egress_annotation, no_proxy, proxy_url,
};
pub use egress_proxy::{
    EGRESS_PROXY_COMPONENT, EGRESS_PROXY_CONTAINER, EgressProxyResources, build_egress_proxy,
    proxy_selector,
};
pub use instance::{InstanceResources, build_instance};
pub use network_policy::build_network_policy;
pub use options::BuildOptions;
pub use pod::build_pod;
pub use service::build_service;
pub use storage::build_pvcs;
pub use yaml::{Manifest, RenderError, to_yaml};

/// Re-exported so callers name exactly the `k8s-openapi` types the builders return.
pub use k8s_openapi;

/// Name of the server's container in every pod.
pub const CONTAINER_NAME: &str = "mcp-server";
/// Image used when the spec names none (the seed's Node.js runtime for `npx`-style servers).
pub const DEFAULT_IMAGE: &str = "node:20-alpine";
/// Service account the server pods run as unless the options name another.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";
/// Name of the container port (and Service port) of HTTP transports.
pub const PORT_NAME: &str = "mcp";
/// Name of the scratch `emptyDir` volume mounted at [`TMP_MOUNT_PATH`].
pub const TMP_VOLUME: &str = "tmp";
/// Where the scratch volume is mounted, so servers can write with a read-only root filesystem.
pub const TMP_MOUNT_PATH: &str = "/tmp";
/// The item (file name) a secret file's `secret` volume projects its key as; the container
/// mounts it with this `subPath` at the file's path.
pub const SECRET_FILE_ITEM: &str = "value";
/// `defaultMode` of secret file volumes: read by the owner only (the kubelet adds group read
/// for the pod's `fsGroup`, which is how the non-root server reads it).
pub const SECRET_FILE_MODE: i32 = 0o400;
/// Extended resource name of NVIDIA GPUs (device plugin).
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// Node label carrying the GPU product (GPU feature discovery).
pub const GPU_PRODUCT_LABEL: &str = "nvidia.com/gpu.product";
/// Label that Kubernetes sets on every namespace to its name.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";
/// Namespace of the cluster DNS.
pub const DNS_NAMESPACE: &str = "kube-system";
/// Label key and value selecting the cluster DNS pods (CoreDNS keeps the kube-dns label).
pub const DNS_POD_LABEL: (&str, &str) = ("k8s-app", "kube-dns");
