//! Orphan collection: the managed objects of this orchestrator's network that lost their
//! owner or a part they need.
//!
//! | object | orphan when | removal |
//! |---|---|---|
//! | managed container on the network (or labelled with it: instances behind an egress policy) | the network, its own internal network or a volume it mounts is missing (it cannot start again) | force-remove, with its per-instance volumes and companions |
//! | per-instance volume made for the network (`mcpctl.io/network`) | no container of its instance exists | remove |
//! | egress companion of the network (proxy container, internal network: `mcpctl.io/companion-of`) | no container of its instance exists | force-remove |
//! | the network itself (labelled `managed-by: mcpctl`) | no container is attached or refers to it | remove (`start_server` creates it again) |
//!
//! Persistent volumes are never orphans: they outlive instances on purpose. Only objects of the
//! orchestrator's own network are considered, so orchestrators on other networks (other
//! projects, other test runs on the same engine) are left alone.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListNetworksOptionsBuilder, ListVolumesOptionsBuilder,
    RemoveContainerOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{GcReport, OrphanKind, labels};

use crate::container::NETWORK_LABEL;
use crate::egress::COMPANION_OF_LABEL;
use crate::error::{Target, map_error};
use crate::volume::remove_volumes;

/// Finds (and unless `dry_run` removes) the orphans of `network`, in the order of the table
/// above (one story: the later steps depend on what the earlier ones removed).
#[allow(clippy::too_many_lines)]
pub(crate) async fn collect(
    docker: &Docker,
    network: &str,
    endpoint: &str,
    dry_run: bool,
) -> Result<GcReport> {
    let engine = |e| map_error(e, Target::Engine, endpoint);
    let mut report = GcReport::new(dry_run);
    let network_info = match docker.inspect_network(network, None).await {
        Ok(n) => Some(n),
        Err(e) => match map_error(e, Target::Network(network), endpoint) {
            OrchestratorError::NotFound { .. } => None,
            other => return Err(other),
        },
    };
    let volumes: BTreeSet<String> = docker
        .list_volumes(None::<bollard::query_parameters::ListVolumesOptions>)
        .await
        .map_err(engine)?
        .volumes
        .unwrap_or_default()
        .into_iter()
        .map(|v| v.name)
        .collect();
    let managed = HashMap::from([("label", vec![format!("{}=true", labels::MANAGED)])]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&managed)
                .build(),
        ))
        .await
        .map_err(engine)?;
    let mut instances = BTreeSet::new();
    let mut on_network = 0usize;
    for c in &containers {
        let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        let name = name.trim_start_matches('/').to_owned();
        instances.insert(name.clone());
        let mode = c
            .host_config
            .as_ref()
            .and_then(|h| h.network_mode.as_deref());
        // Instances behind an egress policy run on a network of their own (or none) and are
        // this orchestrator's by their label.
        let labelled = c
            .labels
            .as_ref()
            .and_then(|l| l.get(NETWORK_LABEL))
            .is_some_and(|n| n == network);
        if mode != Some(network) && !labelled {
            continue;
        }
        on_network += 1;
        let private_network = mode.filter(|m| *m != network && *m != "none" && !m.contains(':'));
        let own_network_missing = match private_network {
            Some(own) => match docker.inspect_network(own, None).await {
                Ok(_) => false,
                Err(e) => match map_error(e, Target::Network(own), endpoint) {
                    OrchestratorError::NotFound { .. } => true,
                    other => return Err(other),
                },
            },
            None => false,
        };
        let missing: Vec<String> = c
            .mounts
            .iter()
            .flatten()
            .filter(|m| m.typ.as_deref() == Some("volume"))
            .filter_map(|m| m.name.clone())
            .filter(|v| !volumes.contains(v))
            .collect();
        let reason = if own_network_missing {
            format!(
                "its network {:?} is missing",
                private_network.unwrap_or_default()
            )
        } else if network_info.is_none() && private_network.is_none() && mode == Some(network) {
            format!("its network {network:?} is missing")
        } else if !missing.is_empty() {
            format!("its volumes {missing:?} are missing")
        } else {
            continue;
        };
        if !dry_run {
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            match docker
                .remove_container(&name, Some(options))
                .await
                .map_err(|e| map_error(e, Target::Container(&name), endpoint))
            {
                Ok(()) | Err(OrchestratorError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
            remove_volumes(docker, &name, endpoint).await?;
            crate::companions::remove(docker, &name, endpoint).await?;
            instances.remove(&name);
            on_network -= 1;
        }
        report.push(OrphanKind::Instance, name, reason, true);
    }
    let mine = HashMap::from([(
        "label",
        vec![
            format!("{}=true", labels::MANAGED),
            format!("{NETWORK_LABEL}={network}"),
        ],
    )]);
    let instance_volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&mine).build(),
        ))
        .await
        .map_err(engine)?
        .volumes
        .unwrap_or_default();
    for v in instance_volumes {
        let Some(owner) = v.labels.get(labels::INSTANCE) else {
            continue;
        };
        if instances.contains(owner) || v.labels.contains_key(labels::PERSISTENT) {
            continue;
        }
        let mut removed = true;
        if !dry_run {
            match docker
                .remove_volume(&v.name, Some(RemoveVolumeOptionsBuilder::new().build()))
                .await
                .map_err(|e| map_error(e, Target::Volume(&v.name), endpoint))
            {
                Ok(()) | Err(OrchestratorError::NotFound { .. }) => {}
                // In use after all (a container of another name mounts it): keep it.
                Err(OrchestratorError::AlreadyExists { .. }) => removed = false,
                Err(e) => return Err(e),
            }
        }
        report.push(
            OrphanKind::Volume,
            v.name,
            format!("its instance {owner} is gone"),
            removed,
        );
    }
    collect_companions(docker, network, endpoint, dry_run, &instances, &mut report).await?;
    if let Some(info) = network_info {
        let attached = info.containers.as_ref().is_some_and(|c| !c.is_empty());
        let ours = info
            .labels
            .as_ref()
            .and_then(|l| l.get(labels::APP_MANAGED_BY))
            .is_some_and(|v| v == labels::MANAGED_BY_VALUE);
        if ours && !attached && on_network == 0 {
            let mut removed = true;
            if !dry_run {
                match docker
                    .remove_network(network)
                    .await
                    .map_err(|e| map_error(e, Target::Network(network), endpoint))
                {
                    Ok(()) | Err(OrchestratorError::NotFound { .. }) => {}
                    // A container joined meanwhile.
                    Err(OrchestratorError::AlreadyExists { .. }) => removed = false,
                    Err(e) => return Err(e),
                }
            }
            report.push(
                OrphanKind::Network,
                network,
                "no container is attached to it",
                removed,
            );
        }
    }
    report.sort();
    Ok(report)
}

/// Egress companions (proxy containers, internal networks) of `network`'s instances whose
/// instance is gone.
async fn collect_companions(
    docker: &Docker,
    network: &str,
    endpoint: &str,
    dry_run: bool,
    instances: &BTreeSet<String>,
    report: &mut GcReport,
) -> Result<()> {
    let engine = |e| map_error(e, Target::Engine, endpoint);
    let mine = HashMap::from([(
        "label",
        vec![
            COMPANION_OF_LABEL.to_owned(),
            format!("{NETWORK_LABEL}={network}"),
        ],
    )]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&mine)
                .build(),
        ))
        .await
        .map_err(engine)?;
    for c in containers {
        let Some(owner) = c.labels.as_ref().and_then(|l| l.get(COMPANION_OF_LABEL)) else {
            continue;
        };
        let Some(name) = c.names.as_ref().and_then(|n| n.first()) else {
            continue;
        };
        if instances.contains(owner) {
            continue;
        }
        let name = name.trim_start_matches('/');
        if !dry_run {
            crate::companions::remove_container(docker, name, endpoint).await?;
        }
        report.push(
            OrphanKind::EgressProxy,
            name,
            format!("its instance {owner} is gone"),
            true,
        );
    }
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&mine).build(),
        ))
        .await
        .map_err(engine)?;
    for n in networks {
        let (Some(owner), Some(name)) = (
            n.labels.as_ref().and_then(|l| l.get(COMPANION_OF_LABEL)),
            n.name.as_deref(),
        ) else {
            continue;
        };
        if instances.contains(owner) {
            continue;
        }
        if !dry_run {
            crate::companions::remove_network(docker, name, &[], endpoint).await?;
        }
        report.push(
            OrphanKind::Network,
            name,
            format!("its instance {owner} is gone"),
            true,
        );
    }
    Ok(())
}
