//! The labels and limits every part of the Docker backend shares (the create body, egress
//! companions, secret-file and persistent volumes, gc), kept apart so that none of those
//! modules depends on another for them.

use std::collections::HashMap;

use mcp_types::labels;

/// Most processes (threads included) one instance may create.
pub const PIDS_LIMIT: i64 = 256;
/// Options of the scratch tmpfs at `/tmp`.
pub const TMP_OPTIONS: &str = "rw,nosuid,nodev,mode=1777";
/// Label on HTTP-transport containers: the container port the server listens on.
pub const PORT_LABEL: &str = "mcpctl.io/port";
/// Label holding the loopback host port an HTTP transport is published on, chosen once at
/// create so the endpoint survives engine restarts of the container.
pub const HOST_PORT_LABEL: &str = "mcpctl.io/host-port";
/// Label holding the URL path of an HTTP transport's MCP endpoint.
pub const PATH_LABEL: &str = labels::HTTP_PATH;
/// Label on volumes: the volume name from the spec.
pub const VOLUME_LABEL: &str = labels::VOLUME;
/// Label on volumes: the size the spec asked for (Docker's local driver has no size).
pub const SIZE_LABEL: &str = "mcpctl.io/size";
/// Label on per-instance volumes: the network of the orchestrator that made them, so an
/// orphan collection only considers its own.
pub const NETWORK_LABEL: &str = "mcpctl.io/network";

/// Labels of the volumes of an instance: enough to find and remove them by instance.
pub fn volume_labels(server: &str, instance: &str) -> HashMap<String, String> {
    HashMap::from([
        (labels::MANAGED.to_owned(), "true".to_owned()),
        (labels::SERVER.to_owned(), server.to_owned()),
        (labels::INSTANCE.to_owned(), instance.to_owned()),
        (
            labels::APP_MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        ),
    ])
}
