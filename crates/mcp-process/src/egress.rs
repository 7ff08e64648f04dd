//! What each egress policy becomes for a local process, and the posture its status reports.
//!
//! | effective policy | the server runs | posture `enforcedBy` | metadata blocked |
//! |---|---|---|---|
//! | `open` | on the host's network | `not enforced: host network` | no |
//! | `none` | in its own network namespace with only `lo` (up) | `network namespace (loopback only)` | yes |
//! | `allow` | refused (`NotSupported`): no unprivileged way to filter by destination | - | - |
//!
//! An HTTP server under `none` is refused too: nothing outside its namespace could reach the
//! port it listens on. The effective policy is the spec's, else `defaultEgress`
//! ([`crate::ProcessConfig::default_egress`]); it is recorded in `meta.json`, so every status,
//! listing and watch event reports the posture the instance was started with.

use mcp_orchestrator_api::OrchestratorError;
use mcp_types::{Egress, EgressPosture, McpServer};

use crate::config::ALLOW_UNSUPPORTED;
use crate::error::BACKEND;

/// Whether the server gets a network namespace of its own (`none`) or the host's (`open`).
///
/// # Errors
/// [`NotSupported`](OrchestratorError::NotSupported) naming `egress` for an allow-list, and
/// for `none` on an HTTP server.
pub(crate) fn isolates_network(
    spec: &McpServer,
    effective: &Egress,
) -> Result<bool, OrchestratorError> {
    match effective {
        Egress::Open => Ok(false),
        Egress::None if spec.transport.is_http() => Err(OrchestratorError::NotSupported {
            backend: BACKEND,
            what: format!(
                "`egress: none` for a server with transport {}: it would listen inside a network \
                 namespace of its own, which nothing on the host can reach; use transport stdio \
                 (reached through connect) or `egress: open`",
                spec.transport
            ),
        }),
        Egress::None => Ok(true),
        Egress::Allow(_) => Err(OrchestratorError::NotSupported {
            backend: BACKEND,
            what: format!(
                "egress allow-lists ({}): {ALLOW_UNSUPPORTED}",
                effective.summary()
            ),
        }),
    }
}

/// The posture of an instance started with `policy`.
pub(crate) fn posture(policy: &Egress) -> EgressPosture {
    let (enforced_by, metadata_blocked) = match policy {
        Egress::None => ("network namespace (loopback only)", true),
        Egress::Open => ("not enforced: host network", false),
        // Never started (refused above); reported honestly should an old record hold one.
        Egress::Allow(_) => (
            "not enforced: allow-lists are refused by this backend",
            false,
        ),
    };
    EgressPosture {
        policy: policy.clone(),
        enforced_by: enforced_by.into(),
        metadata_blocked,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_types::{EgressRule, Transport};

    #[test]
    fn policies_map_to_namespaces_or_refusals() {
        let stdio = McpServer::command("s", "/bin/true", Vec::<String>::new());
        let http = McpServer {
            transport: Transport::StreamableHttp,
            port: Some(8080),
            ..stdio.clone()
        };
        assert!(!isolates_network(&stdio, &Egress::Open).unwrap());
        assert!(isolates_network(&stdio, &Egress::None).unwrap());
        assert!(!isolates_network(&http, &Egress::Open).unwrap());
        let allow = Egress::Allow(vec![EgressRule::cidr("10.0.0.0/8", [])]);
        for (spec, policy, names) in [
            (&http, Egress::None, "transport"),
            (&stdio, allow, "docker or kubernetes"),
        ] {
            let e = isolates_network(spec, &policy).unwrap_err();
            let text = e.to_string();
            assert!(
                matches!(e, OrchestratorError::NotSupported { .. })
                    && text.contains("egress")
                    && text.contains(names),
                "{text}"
            );
        }
    }

    #[test]
    fn posture_says_what_enforces_it() {
        let none = posture(&Egress::None);
        assert!(none.metadata_blocked && none.enforced_by.contains("namespace"));
        let open = posture(&Egress::Open);
        assert_eq!(
            (
                open.policy,
                open.metadata_blocked,
                open.enforced_by.as_str()
            ),
            (Egress::Open, false, "not enforced: host network")
        );
    }
}
