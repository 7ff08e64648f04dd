//! Label and annotation keys shared by every backend (`mcpctl.io/*`, `app.kubernetes.io/*`).

use std::collections::BTreeMap;

/// Server name.
pub const SERVER: &str = "mcpctl.io/server";
/// `"true"` on everything this project manages; lists always filter on it.
pub const MANAGED: &str = "mcpctl.io/managed";
/// The instance id.
pub const INSTANCE: &str = "mcpctl.io/instance";
/// Creation time (RFC 3339); an annotation on Kubernetes, a label on Docker.
pub const CREATED_AT: &str = "mcpctl.io/created-at";
/// Component role, e.g. `local-proxy` for pods allowed to reach servers.
pub const COMPONENT: &str = "mcpctl.io/component";
/// MCP transport.
pub const TRANSPORT: &str = "mcpctl.io/transport";
/// URL path of an HTTP transport's MCP endpoint (an annotation on Kubernetes, a label on Docker).
pub const HTTP_PATH: &str = "mcpctl.io/path";
/// `app.kubernetes.io/name`: the server name.
pub const APP_NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`: the instance id.
pub const APP_INSTANCE: &str = "app.kubernetes.io/instance";
/// `app.kubernetes.io/component`: always `mcp-server`.
pub const APP_COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/managed-by`: always `mcpctl`.
pub const APP_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Value of [`APP_COMPONENT`].
pub const COMPONENT_VALUE: &str = "mcp-server";
/// Value of [`APP_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "mcpctl";
/// Value of [`COMPONENT`] for the proxies allowed to reach servers.
pub const LOCAL_PROXY: &str = "local-proxy";
/// The spec's volume name, on every volume object (per-instance and persistent).
pub const VOLUME: &str = "mcpctl.io/volume";
/// `"true"` on a persistent volume (one per server, kept when instances stop).
pub const PERSISTENT: &str = "mcpctl.io/persistent";
/// The instance's effective egress policy as JSON (an annotation on Kubernetes, where the
/// egress proxy reads it from the pod).
pub const EGRESS: &str = "mcpctl.io/egress";
/// Prefixes users may not set themselves.
pub const RESERVED_LABEL_PREFIXES: &[&str] = &["mcpctl.io/", "app.kubernetes.io/"];

/// The labels every backend puts on an instance: the `mcpctl.io/*` set and its
/// `app.kubernetes.io/*` equivalents, plus the spec's own labels.
pub fn instance_labels(
    server: &str,
    instance: &str,
    extra: &BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let mut labels = extra.clone();
    for (k, v) in [
        (SERVER, server),
        (MANAGED, "true"),
        (INSTANCE, instance),
        (APP_NAME, server),
        (APP_INSTANCE, instance),
        (APP_COMPONENT, COMPONENT_VALUE),
        (APP_MANAGED_BY, MANAGED_BY_VALUE),
    ] {
        labels.insert(k.to_owned(), v.to_owned());
    }
    labels
}

/// The labels every backend puts on a persistent volume: enough to list a server's volumes
/// and to tell them from per-instance ones (which carry [`INSTANCE`] instead).
pub fn persistent_volume_labels(server: &str, volume: &str) -> BTreeMap<String, String> {
    [
        (SERVER, server),
        (MANAGED, "true"),
        (VOLUME, volume),
        (PERSISTENT, "true"),
        (APP_NAME, server),
        (APP_MANAGED_BY, MANAGED_BY_VALUE),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}
