//! The engine side of egress: an instance's companions (its internal network and its egress
//! proxy container, see [`crate::egress`]) created before the server and removed with it,
//! found by their labels.
//!
//! | step (start)                        | on failure                                   |
//! |-------------------------------------|----------------------------------------------|
//! | internal network created            | the start fails; the caller discards what exists |
//! | proxy image present (built or pulled) | `ImageNotAvailable` naming the image        |
//! | proxy created on the shared network, connected to the internal one, started | the engine's error |
//! | proxy logged that it listens (within [`PROXY_READY_TIMEOUT`]) | `Unavailable` with the proxy's last log lines |
//!
//! Removal lists containers and networks labelled [`COMPANION_OF_LABEL`] = the instance,
//! force-removes the containers, then removes the networks (after dropping any endpoint the
//! engine kept), so it also cleans up after a start that failed half-way.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{EndpointSettings, NetworkConnectRequest, NetworkDisconnectRequest};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder,
};
use futures::StreamExt;
use mcp_orchestrator_api::{OrchestratorError, Result};
use tracing::{debug, warn};

use crate::config::DockerConfig;
use crate::container::{ContainerPlan, NETWORK_LABEL};
use crate::egress::{COMPANION_OF_LABEL, internal_network, proxy_container};
use crate::error::{BACKEND, Target, map_error};
use crate::image::ensure_image;

/// How long a new proxy may take to listen.
pub(crate) const PROXY_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Creates the companions `plan` needs for `instance` of `server` (none for `open` and for
/// `none` on stdio).
pub(crate) async fn create(
    docker: &Docker,
    config: &DockerConfig,
    endpoint: &str,
    plan: &ContainerPlan,
    server: &str,
) -> Result<()> {
    let instance = plan.name.as_str();
    let shared = config.network.as_str();
    let Some(network) = plan.egress.internal_network() else {
        return Ok(());
    };
    docker
        .create_network(internal_network(network, instance, server, shared))
        .await
        .map_err(|e| map_error(e, Target::Network(network), endpoint))?;
    debug!(%instance, %network, "internal network created");
    let Some(proxy) = plan.egress.proxy() else {
        return Ok(());
    };
    let image = proxy_image(docker, config, endpoint).await?;
    let err = |e| map_error(e, Target::Container(proxy), endpoint);
    let body = proxy_container(&image, &plan.egress_policy, instance, server, shared);
    docker
        .create_container(
            Some(CreateContainerOptionsBuilder::new().name(proxy).build()),
            body,
        )
        .await
        .map_err(err)?;
    docker
        .connect_network(
            network,
            NetworkConnectRequest {
                container: proxy.to_owned(),
                endpoint_config: Some(EndpointSettings::default()),
            },
        )
        .await
        .map_err(|e| map_error(e, Target::Network(network), endpoint))?;
    docker.start_container(proxy, None).await.map_err(err)?;
    wait_listening(docker, proxy, endpoint).await?;
    debug!(%instance, %proxy, "egress proxy listening");
    Ok(())
}

/// The configured proxy image (pulled when missing), or ours, built from source once per
/// process.
async fn proxy_image(docker: &Docker, config: &DockerConfig, endpoint: &str) -> Result<String> {
    if let Some(image) = &config.egress_proxy_image {
        ensure_image(docker, image, endpoint).await?;
        return Ok(image.clone());
    }
    let tag = mcp_egress_proxy::DEFAULT_IMAGE_TAG;
    mcp_egress_proxy::ensure_proxy_image(docker, tag)
        .await
        .map_err(|e| OrchestratorError::ImageNotAvailable {
            image: tag.to_owned(),
            message: format!(
                "building the egress proxy image from the mcp-egress-proxy sources failed \
                 (set egressProxyImage to a prebuilt image where no Rust toolchain is): {e}"
            ),
        })?;
    Ok(tag.to_owned())
}

/// Waits until the proxy logs [`mcp_egress_proxy::LISTENING_MESSAGE`].
async fn wait_listening(docker: &Docker, proxy: &str, endpoint: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + PROXY_READY_TIMEOUT;
    loop {
        let log = proxy_log(docker, proxy)
            .await
            .map_err(|e| map_error(e, Target::Container(proxy), endpoint))?;
        if log.contains(mcp_egress_proxy::LISTENING_MESSAGE) {
            return Ok(());
        }
        let running = docker
            .inspect_container(proxy, None)
            .await
            .map_err(|e| map_error(e, Target::Container(proxy), endpoint))?
            .state
            .and_then(|s| s.running)
            .unwrap_or(false);
        if !running || tokio::time::Instant::now() >= deadline {
            let tail: Vec<&str> = log.lines().rev().take(10).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(OrchestratorError::unavailable(
                BACKEND,
                format!(
                    "egress proxy {proxy} {} (its log: {})",
                    if running {
                        format!("did not listen within {PROXY_READY_TIMEOUT:?}")
                    } else {
                        "exited before it listened".to_owned()
                    },
                    tail.join(" | ")
                ),
                None,
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Everything the proxy wrote so far (it logs targets and reasons, never credentials).
async fn proxy_log(
    docker: &Docker,
    proxy: &str,
) -> std::result::Result<String, bollard::errors::Error> {
    let options = LogsOptionsBuilder::new().stdout(true).stderr(true).build();
    let mut stream = docker.logs(proxy, Some(options));
    let mut text = String::new();
    while let Some(chunk) = stream.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
    }
    Ok(text)
}

/// Removes every companion of `instance` (containers first, then networks). Objects already
/// gone are fine.
pub(crate) async fn remove(docker: &Docker, instance: &str, endpoint: &str) -> Result<()> {
    let owner = HashMap::from([("label", vec![format!("{COMPANION_OF_LABEL}={instance}")])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&owner)
                .build(),
        ))
        .await
        .map_err(|e| map_error(e, Target::Engine, endpoint))?;
    for c in &containers {
        let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        let name = name.trim_start_matches('/');
        remove_container(docker, name, endpoint).await?;
        // As for instances (`stop_server`): under load the engine can keep a removed
        // container's endpoint on the shared network, which then refuses removal.
        if let Some(shared) = c.labels.as_ref().and_then(|l| l.get(NETWORK_LABEL)) {
            let request = NetworkDisconnectRequest {
                container: name.to_owned(),
                force: Some(true),
            };
            let _ = docker.disconnect_network(shared, request).await;
        }
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&owner).build(),
        ))
        .await
        .map_err(|e| map_error(e, Target::Engine, endpoint))?;
    for network in networks.iter().filter_map(|n| n.name.as_deref()) {
        remove_network(docker, network, &[instance], endpoint).await?;
    }
    Ok(())
}

/// Force-removes a companion container.
pub(crate) async fn remove_container(docker: &Docker, name: &str, endpoint: &str) -> Result<()> {
    let options = RemoveContainerOptionsBuilder::new()
        .force(true)
        .v(true)
        .build();
    match docker
        .remove_container(name, Some(options))
        .await
        .map_err(|e| map_error(e, Target::Container(name), endpoint))
    {
        // Gone, or another remover is at it.
        Ok(())
        | Err(OrchestratorError::NotFound { .. } | OrchestratorError::AlreadyExists { .. }) => {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Removes a companion network; when the engine still counts endpoints on it (a removed
/// container's, kept under load), they are dropped and the removal is tried again.
pub(crate) async fn remove_network(
    docker: &Docker,
    network: &str,
    members: &[&str],
    endpoint: &str,
) -> Result<()> {
    let err = |e| map_error(e, Target::Network(network), endpoint);
    let mut attempts = 0;
    loop {
        attempts += 1;
        match docker.remove_network(network).await.map_err(err) {
            Ok(()) | Err(OrchestratorError::NotFound { .. }) => return Ok(()),
            Err(e) if attempts >= 3 => {
                warn!(%network, error = %e, "the network keeps endpoints; giving up");
                return Err(e);
            }
            Err(e) => {
                debug!(%network, error = %e, "network still in use; dropping its endpoints");
                let attached: Vec<String> = match docker.inspect_network(network, None).await {
                    Ok(info) => info
                        .containers
                        .unwrap_or_default()
                        .into_values()
                        .filter_map(|c| c.name)
                        .chain(members.iter().map(|m| (*m).to_owned()))
                        .collect(),
                    Err(_) => members.iter().map(|m| (*m).to_owned()).collect(),
                };
                for container in attached {
                    let request = NetworkDisconnectRequest {
                        container,
                        force: Some(true),
                    };
                    if let Err(e) = docker.disconnect_network(network, request).await {
                        debug!(%network, error = %e, "disconnect");
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
