//! `create_orchestrator`: a config in, the chosen backend out, as `Box<dyn McpOrchestrator>`.

use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError};

use crate::config::{BackendKind, OrchestratorConfig};

/// Why no orchestrator could be made.
#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    /// The configured backend is not in this binary.
    #[error(
        "backend {backend:?} is not compiled into this binary; rebuild with cargo feature `{backend}` (e.g. `--features {backend}`)"
    )]
    NotCompiled {
        /// The backend asked for.
        backend: BackendKind,
    },
    /// The backend refused its configuration or could not reach its engine.
    #[error(transparent)]
    Backend(#[from] OrchestratorError),
}

/// Builds the backend `config` selects.
///
/// # Errors
/// [`FactoryError::NotCompiled`] naming the cargo feature to enable, or the backend's own error
/// (e.g. [`OrchestratorError::Unavailable`] naming the Docker socket, an unreadable kubeconfig).
pub async fn create_orchestrator(
    config: &OrchestratorConfig,
) -> Result<Box<dyn McpOrchestrator>, FactoryError> {
    let section = &config.orchestrator;
    match section.backend {
        #[cfg(feature = "process")]
        BackendKind::Process => {
            let cfg = section.process.clone().unwrap_or_default();
            Ok(Box::new(mcp_process::ProcessOrchestrator::new(cfg)?))
        }
        #[cfg(feature = "docker")]
        BackendKind::Docker => {
            let cfg = section.docker.clone().unwrap_or_default();
            Ok(Box::new(
                mcp_docker::DockerOrchestrator::connect(cfg).await?,
            ))
        }
        #[cfg(feature = "kubernetes")]
        BackendKind::Kubernetes => Ok(Box::new(
            mcp_k8s::KubernetesOrchestrator::from_config(config.kubernetes()).await?,
        )),
        #[allow(unreachable_patterns)]
        backend => Err(FactoryError::NotCompiled { backend }),
    }
}
