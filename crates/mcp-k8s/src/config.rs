//! From a [`K8sConfig`] to a kube client configuration: in-cluster, a kubeconfig file, or the
//! default loading chain, each with a clear error.

use garde::Validate;
use kube::config::{KubeConfigOptions, Kubeconfig};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{K8sConfig, ValidationErrors};

/// Checks the backend configuration (namespace, service account, pod metadata, and which
/// sources combine).
///
/// # Errors
/// `InvalidArgument { what: "kubernetes config" }` naming each invalid field.
pub(crate) fn check(config: &K8sConfig) -> Result<()> {
    let invalid = |message: String| OrchestratorError::InvalidArgument {
        what: "kubernetes config",
        message,
    };
    config
        .validate()
        .map_err(|report| invalid(ValidationErrors::from(report).to_string()))?;
    if config.in_cluster && (config.kubeconfig.is_some() || config.context.is_some()) {
        return Err(invalid(
            "inCluster uses the pod's service account and cannot be combined with kubeconfig or context"
                .to_owned(),
        ));
    }
    Ok(())
}

/// Loads the kube configuration `config` describes:
/// - `inCluster: true`: the pod's service account (`Config::incluster`);
/// - `kubeconfig: <path>`: that file, with `context` or its current context;
/// - otherwise `context` alone: the default kubeconfig (`$KUBECONFIG`, `~/.kube/config`) with
///   that context;
/// - otherwise the default chain (`Config::infer`: kubeconfig, then in-cluster).
///
/// kube's own retry layer is turned off: the backend retries idempotent requests itself
/// (see the `error` module), and two nested retry loops would multiply the attempts.
///
/// # Errors
/// `InvalidArgument` naming the source that failed (`kubeconfig` with its path, `in-cluster
/// config`, `kubeconfig context`, `kubernetes config`) and why.
pub(crate) async fn load(config: &K8sConfig) -> Result<kube::Config> {
    let mut loaded = if config.in_cluster {
        kube::Config::incluster().map_err(|e| OrchestratorError::InvalidArgument {
            what: "in-cluster config",
            message: format!(
                "inCluster is set but the in-cluster configuration cannot be loaded \
                 (is this process running in a pod with a service account token?): {e}"
            ),
        })?
    } else if let Some(path) = &config.kubeconfig {
        let file = Kubeconfig::read_from(path).map_err(|e| OrchestratorError::InvalidArgument {
            what: "kubeconfig",
            message: format!("cannot load kubeconfig {}: {e}", path.display()),
        })?;
        kube::Config::from_custom_kubeconfig(file, &options(config))
            .await
            .map_err(|e| OrchestratorError::InvalidArgument {
                what: "kubeconfig",
                message: format!("kubeconfig {}{}: {e}", path.display(), context(config)),
            })?
    } else if config.context.is_some() {
        kube::Config::from_kubeconfig(&options(config))
            .await
            .map_err(|e| OrchestratorError::InvalidArgument {
                what: "kubeconfig",
                message: format!(
                    "default kubeconfig ($KUBECONFIG or ~/.kube/config){}: {e}",
                    context(config)
                ),
            })?
    } else {
        kube::Config::infer()
            .await
            .map_err(|e| OrchestratorError::InvalidArgument {
                what: "kubernetes config",
                message: format!(
                    "no kubeconfig ($KUBECONFIG, ~/.kube/config) and no in-cluster \
                     configuration found; set kubeconfig or inCluster: {e}"
                ),
            })?
    };
    loaded.default_retry = false;
    Ok(loaded)
}

fn options(config: &K8sConfig) -> KubeConfigOptions {
    KubeConfigOptions {
        context: config.context.clone(),
        ..KubeConfigOptions::default()
    }
}

fn context(config: &K8sConfig) -> String {
    config
        .context
        .as_ref()
        .map(|c| format!(", context {c:?}"))
        .unwrap_or_default()
}
