//! MCP-level readiness: what the handshake told us and what the periodic pings say now.
//!
//! | Event                                   | Readiness                                  |
//! |-----------------------------------------|--------------------------------------------|
//! | not yet connected / handshake pending   | `Pending` (with the reason)                |
//! | handshake answered                      | `Ready` (server info, version, tools hash) |
//! | `failure_threshold` pings failed in row | `Unhealthy` (keeps the last `Ready` info)  |
//! | a ping succeeds again                   | `Ready`                                    |
//!
//! The gateway keeps this in memory for the instances it serves, refreshed every ping
//! interval; it is as fresh as `checked_at`.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a successful handshake reported.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadyInfo {
    /// `serverInfo.name`.
    pub server_name: String,
    /// `serverInfo.version`.
    pub server_version: String,
    /// The protocol version the server agreed to.
    pub protocol_version: String,
    /// The server's capabilities, as sent.
    pub capabilities: Value,
    /// SHA-256 (hex) of the server's tool list, see [`tools_hash`].
    pub tools_hash: String,
    /// How many tools it offers.
    pub tool_count: usize,
    /// Milliseconds from connecting to the end of the handshake.
    pub handshake_ms: u64,
}

/// The last known MCP-level state of an instance.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
pub enum Readiness {
    /// Not (yet) answered MCP.
    Pending {
        /// Why not.
        reason: String,
    },
    /// Answered the handshake and the latest ping.
    Ready {
        /// What it said.
        info: ReadyInfo,
    },
    /// Answered once, but the latest pings failed.
    Unhealthy {
        /// The last handshake's result, if any.
        info: Option<ReadyInfo>,
        /// Failed pings in a row.
        consecutive_failures: u32,
        /// The latest failure.
        error: String,
    },
}

impl Readiness {
    /// Whether this is [`Readiness::Ready`].
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }

    /// The handshake's info, if any.
    pub fn info(&self) -> Option<&ReadyInfo> {
        match self {
            Self::Ready { info } => Some(info),
            Self::Unhealthy { info, .. } => info.as_ref(),
            Self::Pending { .. } => None,
        }
    }

    /// The state after the `failures`-th failed check in a row: a `Ready` instance stays
    /// `Ready` below `threshold` and becomes `Unhealthy` (keeping its info) at it; one never
    /// ready stays `Pending` with the latest reason. A success is simply `Ready` again.
    pub fn after_failure(self, failures: u32, threshold: u32, error: String) -> Self {
        match self {
            Self::Pending { .. } => Self::Pending { reason: error },
            Self::Ready { info } if failures < threshold => Self::Ready { info },
            Self::Ready { info } => Self::Unhealthy {
                info: Some(info),
                consecutive_failures: failures,
                error,
            },
            Self::Unhealthy { info, .. } => Self::Unhealthy {
                info,
                consecutive_failures: failures,
                error,
            },
        }
    }

    /// A one-word label (`pending`, `ready`, `unhealthy`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Pending { .. } => "pending",
            Self::Ready { .. } => "ready",
            Self::Unhealthy { .. } => "unhealthy",
        }
    }
}

/// SHA-256 over the tools' canonical JSON (keys sorted by `serde_json`'s map order, tools in
/// the order the server lists them), hex encoded.
pub fn tools_hash(tools: &[Value]) -> String {
    let mut hasher = Sha256::new();
    for tool in tools {
        hasher.update(canonical(tool).as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            use std::fmt::Write as _;
            let _ = write!(s, "{b:02x}");
            s
        })
}

fn canonical(value: &Value) -> String {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            let inner: Vec<String> = keys
                .into_iter()
                .map(|k| format!("{}:{}", Value::String(k.clone()), canonical(&map[k])))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    }
}

/// Builds [`ReadyInfo`] from an `initialize` result (or a `server/discover` result, whose
/// server info sits in `_meta`).
pub(crate) fn ready_info(
    result: &Value,
    protocol_version: &str,
    tools: &[Value],
    handshake_ms: u64,
) -> ReadyInfo {
    let server_info = result.get("serverInfo").or_else(|| {
        result
            .get("_meta")
            .and_then(|m| m.get("io.modelcontextprotocol/serverInfo"))
    });
    let field = |name: &str| {
        server_info
            .and_then(|i| i.get(name))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    ReadyInfo {
        server_name: field("name"),
        server_version: field("version"),
        protocol_version: protocol_version.to_owned(),
        capabilities: result.get("capabilities").cloned().unwrap_or(Value::Null),
        tools_hash: tools_hash(tools),
        tool_count: tools.len(),
        handshake_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tools_hash_ignores_key_order_but_not_content() {
        let a = [json!({"name": "echo", "inputSchema": {"type": "object"}})];
        let b = [json!({"inputSchema": {"type": "object"}, "name": "echo"})];
        let c = [json!({"name": "echo2", "inputSchema": {"type": "object"}})];
        assert_eq!(tools_hash(&a), tools_hash(&b));
        assert_ne!(tools_hash(&a), tools_hash(&c));
        assert_eq!(tools_hash(&a).len(), 64);
    }

    #[test]
    fn a_failure_threshold_marks_unhealthy_and_a_success_ready_again() {
        let info = ready_info(
            &json!({"serverInfo": {"name": "s", "version": "1"}}),
            "2025-11-25",
            &[],
            1,
        );
        let mut state = Readiness::Ready { info: info.clone() };
        for n in 1..3 {
            state = state.after_failure(n, 3, format!("timeout {n}"));
            assert!(state.is_ready(), "below the threshold: {state:?}");
        }
        state = state.after_failure(3, 3, "timeout 3".into());
        assert_eq!(
            state,
            Readiness::Unhealthy {
                info: Some(info.clone()),
                consecutive_failures: 3,
                error: "timeout 3".into()
            }
        );
        state = state.after_failure(4, 3, "refused".into());
        assert!(
            matches!(&state, Readiness::Unhealthy { consecutive_failures: 4, error, .. } if error == "refused")
        );
        let pending = Readiness::Pending {
            reason: "starting".into(),
        }
        .after_failure(9, 3, "no answer".into());
        assert_eq!(
            pending,
            Readiness::Pending {
                reason: "no answer".into()
            }
        );
    }

    #[test]
    fn ready_info_reads_initialize_and_discover_results() {
        let tools = [json!({"name": "echo"})];
        let info = ready_info(
            &json!({"serverInfo": {"name": "s", "version": "1"}, "capabilities": {"tools": {}}}),
            "2025-11-25",
            &tools,
            3,
        );
        assert_eq!(
            (info.server_name.as_str(), info.server_version.as_str()),
            ("s", "1")
        );
        assert_eq!(info.tool_count, 1);
        assert_eq!(info.tools_hash, tools_hash(&tools));
        let discovered = ready_info(
            &json!({"_meta": {"io.modelcontextprotocol/serverInfo": {"name": "d", "version": "2"}}}),
            "2026-07-28",
            &[],
            1,
        );
        assert_eq!(discovered.server_name, "d");
        let bad = Readiness::Unhealthy {
            info: Some(info.clone()),
            consecutive_failures: 3,
            error: "timeout".into(),
        };
        assert_eq!(bad.label(), "unhealthy");
        assert_eq!(bad.info(), Some(&info));
        assert!(!bad.is_ready());
    }
}
