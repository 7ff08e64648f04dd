//! `OrchestratorConfig`: which backend to use and how, read from YAML or JSON and the
//! environment, with defaults < file < environment.
//!
//! ```yaml
//! orchestrator:
//!   type: docker        # process (default), docker or kubernetes
//!   docker: { socketPath: /var/run/docker.sock, network: mcpctl-network }
//!   kubernetes: { namespace: mcpctl, kubeconfig: /path, inCluster: false, context: dev }
//!   process: { stateDir: /var/lib/mcpctl/process }
//! ```
//!
//! A backend's section is parsed and validated with the backend's own config type when that
//! backend is compiled in; when it is not, the section is kept as written (so one config file can
//! serve binaries built with different features) and selecting that backend is an error that
//! names the missing cargo feature.

use std::fmt;
use std::path::{Path, PathBuf};

use garde::Validate;
use mcp_types::K8sConfig;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::apply_env;

/// The Docker section's type: the backend's config when compiled in.
#[cfg(feature = "docker")]
pub type DockerSection = mcp_docker::DockerConfig;
/// The Docker section as written (the `docker` feature is off).
#[cfg(not(feature = "docker"))]
pub type DockerSection = Value;

/// The process section's type: the backend's config when compiled in.
#[cfg(feature = "process")]
pub type ProcessSection = mcp_process::ProcessConfig;
/// The process section as written (the `process` feature is off).
#[cfg(not(feature = "process"))]
pub type ProcessSection = Value;

/// Which backend runs the servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// Local processes with a per-instance supervisor; needs nothing installed.
    #[default]
    Process,
    /// Containers on a Docker engine.
    Docker,
    /// Pods on a Kubernetes cluster.
    #[serde(alias = "k8s")]
    Kubernetes,
}

impl BackendKind {
    /// Every backend, in documentation order.
    pub const ALL: [Self; 3] = [Self::Process, Self::Docker, Self::Kubernetes];

    /// The config spelling, which is also the cargo feature name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Process => "process",
            Self::Docker => "docker",
            Self::Kubernetes => "kubernetes",
        }
    }

    /// Whether this binary was built with the backend's cargo feature.
    pub fn is_compiled_in(self) -> bool {
        match self {
            Self::Process => cfg!(feature = "process"),
            Self::Docker => cfg!(feature = "docker"),
            Self::Kubernetes => cfg!(feature = "kubernetes"),
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "process" => Ok(Self::Process),
            "docker" => Ok(Self::Docker),
            "kubernetes" | "k8s" => Ok(Self::Kubernetes),
            other => Err(format!(
                "unknown orchestrator type {other:?}; expected process, docker or kubernetes"
            )),
        }
    }
}

/// The whole configuration document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestratorConfig {
    /// The orchestrator settings.
    #[serde(default)]
    pub orchestrator: OrchestratorSection,
}

/// `orchestrator:` — the chosen backend and each backend's settings.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OrchestratorSection {
    /// The backend to use.
    #[serde(default, rename = "type")]
    pub backend: BackendKind,
    /// Docker settings (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerSection>,
    /// Kubernetes settings (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<K8sConfig>,
    /// Process backend settings (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSection>,
}

/// Where configuration text comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Text given directly (tests, stdin).
    Inline,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Inline => f.write_str("<inline config>"),
        }
    }
}

/// Text format of a config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (also accepts JSON, which is YAML).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON for `.json` files, YAML otherwise.
    pub fn of_path(path: &Path) -> Self {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::Json
        } else {
            Self::Yaml
        }
    }
}

/// A configuration that cannot be used. Names the source and the field path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The text is not valid YAML/JSON.
    #[error("{origin}: not valid {format}: {message}")]
    Syntax {
        /// Where the text came from.
        origin: Source,
        /// YAML or JSON.
        format: &'static str,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A field has the wrong shape or an unknown name.
    #[error("{origin}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Field {
        /// Where the text came from.
        origin: Source,
        /// Field path, e.g. `orchestrator.docker.network`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is malformed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
}

impl OrchestratorConfig {
    /// Defaults plus environment overrides (no file).
    ///
    /// # Errors
    /// As [`OrchestratorConfig::from_text`].
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        Self::from_value(Value::Object(serde_json::Map::new()), &Source::Inline, env)
    }

    /// Reads a YAML or JSON file (by extension), then applies environment overrides.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and the field.
    pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_text(
            &text,
            Format::of_path(path),
            &Source::File(path.to_owned()),
            env,
        )
    }

    /// Parses text, applies environment overrides, then checks every field.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for malformed text, [`ConfigError::Field`] with the field path for
    /// unknown fields, wrong types, unknown backend types and invalid values,
    /// [`ConfigError::Env`] for malformed overrides.
    pub fn from_text(
        text: &str,
        format: Format,
        source: &Source,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let value: Value = crate::document::parse_document(text, format, source)?;
        Self::from_value(value, source, env)
    }

    fn from_value(
        mut value: Value,
        source: &Source,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        apply_env(&mut value, env)?;
        let config: Self = crate::document::from_value(&value, source)?;
        config.check(source)?;
        Ok(config)
    }

    /// Validates the sections the binary understands.
    fn check(&self, source: &Source) -> Result<(), ConfigError> {
        let field = |path: String, message: String| ConfigError::Field {
            origin: source.clone(),
            path,
            message,
        };
        if let Some(k) = &self.orchestrator.kubernetes {
            first_error(k.validate(), "orchestrator.kubernetes").map_err(|(p, m)| field(p, m))?;
        }
        #[cfg(feature = "docker")]
        if let Some(d) = &self.orchestrator.docker {
            first_error(d.validate(), "orchestrator.docker").map_err(|(p, m)| field(p, m))?;
        }
        Ok(())
    }

    /// The Kubernetes settings in effect (the section, or defaults).
    pub fn kubernetes(&self) -> K8sConfig {
        self.orchestrator.kubernetes.clone().unwrap_or_default()
    }
}

/// The first garde error as (path with prefix, message).
fn first_error(r: Result<(), garde::Report>, prefix: &str) -> Result<(), (String, String)> {
    let Err(report) = r else { return Ok(()) };
    let errors = mcp_types::ValidationErrors::from(report).prefixed(prefix);
    match errors.errors() {
        [] => Ok(()),
        [first, ..] => {
            let rest = errors.errors().len() - 1;
            let more = if rest > 0 {
                format!(" (and {rest} more: {errors})")
            } else {
                String::new()
            };
            Err((first.path.clone(), format!("{}{more}", first.message)))
        }
    }
}
