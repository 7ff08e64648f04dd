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
//! A backend's section (the Kubernetes one included, although its type lives in `mcp-types`) is
//! parsed and validated with the backend's own config type when that backend is compiled in; when it is not, the section is kept as written (so one config file can
//! serve binaries built with different features) and selecting that backend is an error that
//! names the missing cargo feature.

use std::fmt;
use std::path::Path;

#[cfg(any(feature = "docker", feature = "kubernetes"))]
use garde::Validate;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::env::apply_env;
use crate::error::{ConfigError, Format, Source};

/// The Docker section's type: the backend's config when compiled in.
#[cfg(feature = "docker")]
pub type DockerSection = mcp_docker::DockerConfig;
/// The Docker section as written (the `docker` feature is off).
#[cfg(not(feature = "docker"))]
pub type DockerSection = Value;

/// The Kubernetes section's type: the backend's config when compiled in.
#[cfg(feature = "kubernetes")]
pub type KubernetesSection = mcp_types::K8sConfig;
/// The Kubernetes section as written (the `kubernetes` feature is off).
#[cfg(not(feature = "kubernetes"))]
pub type KubernetesSection = Value;

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
    pub kubernetes: Option<KubernetesSection>,
    /// Process backend settings (defaults when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSection>,
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
            what: "config file",
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

    /// Validates the sections the binary understands; the others are kept as written.
    #[cfg_attr(
        not(any(feature = "docker", feature = "kubernetes")),
        expect(
            clippy::unused_self,
            clippy::unnecessary_wraps,
            unused_variables,
            reason = "with neither typed section compiled in there is nothing to check"
        )
    )]
    fn check(&self, source: &Source) -> Result<(), ConfigError> {
        #[cfg(feature = "kubernetes")]
        if let Some(k) = &self.orchestrator.kubernetes {
            first_error(k.validate(), "orchestrator.kubernetes", source)?;
        }
        #[cfg(feature = "docker")]
        if let Some(d) = &self.orchestrator.docker {
            first_error(d.validate(), "orchestrator.docker", source)?;
        }
        Ok(())
    }

    /// The Kubernetes settings in effect (the section, or defaults).
    #[cfg(feature = "kubernetes")]
    pub fn kubernetes(&self) -> mcp_types::K8sConfig {
        self.orchestrator.kubernetes.clone().unwrap_or_default()
    }
}

/// The first garde error as a [`ConfigError::Field`] (path with prefix; the others in the message).
#[cfg(any(feature = "docker", feature = "kubernetes"))]
fn first_error(
    r: Result<(), garde::Report>,
    prefix: &str,
    source: &Source,
) -> Result<(), ConfigError> {
    let Err(report) = r else { return Ok(()) };
    let errors = mcp_types::ValidationErrors::from(report).prefixed(prefix);
    Err(crate::document::first_field_error(&errors, source.clone()))
}
