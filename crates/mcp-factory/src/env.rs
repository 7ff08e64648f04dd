//! Environment overrides (`MCPCTL_*`), applied to the raw document before it is typed so that
//! precedence is simply defaults < file < environment and errors keep their field paths.

use serde_json::{Map, Value};

use crate::error::ConfigError;

/// How an override's text becomes a value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Bool,
    Port,
}

/// Every override: variable, document path, kind.
pub const OVERRIDES: &[(&str, &[&str])] = &[
    ("MCPCTL_ORCHESTRATOR_TYPE", &["orchestrator", "type"]),
    (
        "MCPCTL_DOCKER_SOCKET",
        &["orchestrator", "docker", "socketPath"],
    ),
    ("MCPCTL_DOCKER_HOST", &["orchestrator", "docker", "host"]),
    ("MCPCTL_DOCKER_PORT", &["orchestrator", "docker", "port"]),
    (
        "MCPCTL_DOCKER_NETWORK",
        &["orchestrator", "docker", "network"],
    ),
    (
        "MCPCTL_K8S_NAMESPACE",
        &["orchestrator", "kubernetes", "namespace"],
    ),
    (
        "MCPCTL_KUBECONFIG",
        &["orchestrator", "kubernetes", "kubeconfig"],
    ),
    (
        "MCPCTL_K8S_CONTEXT",
        &["orchestrator", "kubernetes", "context"],
    ),
    (
        "MCPCTL_K8S_IN_CLUSTER",
        &["orchestrator", "kubernetes", "inCluster"],
    ),
    (
        "MCPCTL_PROCESS_STATE_DIR",
        &["orchestrator", "process", "stateDir"],
    ),
];

fn kind_of(var: &str) -> Kind {
    match var {
        "MCPCTL_K8S_IN_CLUSTER" => Kind::Bool,
        "MCPCTL_DOCKER_PORT" => Kind::Port,
        _ => Kind::Text,
    }
}

/// Writes every set, non-empty override into `doc`.
///
/// # Errors
/// [`ConfigError::Env`] for a value of the wrong kind or a document that is not a mapping.
pub(crate) fn apply_env(
    doc: &mut Value,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (var, path) in OVERRIDES {
        let Some(raw) = env(var).filter(|v| !v.trim().is_empty()) else {
            continue;
        };
        let raw = raw.trim();
        let value = match kind_of(var) {
            Kind::Text => Value::String(raw.to_owned()),
            Kind::Bool => match raw.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" => Value::Bool(true),
                "0" | "false" | "no" => Value::Bool(false),
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("{raw:?} is not a boolean (true/false)"),
                    });
                }
            },
            Kind::Port => match raw.parse::<u16>() {
                Ok(p) if p > 0 => Value::from(p),
                _ => {
                    return Err(ConfigError::Env {
                        var,
                        message: format!("{raw:?} is not a port (1-65535)"),
                    });
                }
            },
        };
        set_path(doc, path, value).map_err(|message| ConfigError::Env { var, message })?;
    }
    Ok(())
}

fn set_path(doc: &mut Value, path: &[&str], value: Value) -> Result<(), String> {
    let Some((last, parents)) = path.split_last() else {
        return Ok(());
    };
    let mut node = doc;
    let mut walked = Vec::new();
    for key in parents {
        walked.push(*key);
        let map = node.as_object_mut().ok_or_else(|| {
            format!(
                "cannot override: {} is not a mapping in the config file",
                walked[..walked.len() - 1].join(".")
            )
        })?;
        let child = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if child.is_null() {
            *child = Value::Object(Map::new());
        }
        node = child;
    }
    node.as_object_mut()
        .ok_or_else(|| {
            format!(
                "cannot override: {} is not a mapping in the config file",
                parents.join(".")
            )
        })?
        .insert((*last).to_owned(), value);
    Ok(())
}
