//! The user-defined network instances join: found by exact name or created on demand, with
//! concurrent creators (on engines that accept duplicate names) agreeing on one network.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::NetworkCreateRequest;
use bollard::query_parameters::ListNetworksOptionsBuilder;
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{Timestamp, labels};
use tracing::{debug, warn};

use crate::error::{BACKEND, Target, map_error};

/// Finds the network named `name` or creates it. Engines before API 1.44 accept duplicate
/// names, so racing creators may both succeed; every creator then keeps the oldest network
/// of that name and removes its own if it is not that one, so all agree on one network.
pub(crate) async fn ensure_network(docker: &Docker, name: &str, endpoint: &str) -> Result<String> {
    let err = |e| map_error(e, Target::Network(name), endpoint);
    if let Some((_, id)) = networks_named(docker, name).await.map_err(err)?.first() {
        return Ok(id.clone());
    }
    let request = NetworkCreateRequest {
        name: name.to_owned(),
        driver: Some("bridge".to_owned()),
        labels: Some(HashMap::from([(
            labels::APP_MANAGED_BY.to_owned(),
            labels::MANAGED_BY_VALUE.to_owned(),
        )])),
        ..NetworkCreateRequest::default()
    };
    let mine = match docker.create_network(request).await.map_err(err) {
        Ok(created) => Some(created.id),
        // A newer engine refusing a duplicate: someone else created it first.
        Err(OrchestratorError::AlreadyExists { .. }) => None,
        Err(e) => return Err(e),
    };
    let found = networks_named(docker, name).await.map_err(err)?;
    let Some((_, oldest)) = found.first() else {
        return Err(OrchestratorError::backend(
            BACKEND,
            format!("network {name:?} vanished right after it was created"),
        ));
    };
    if let Some(mine) = mine.filter(|m| m != oldest) {
        debug!(network = %name, "another creator won the race; removing our duplicate");
        if let Err(e) = docker.remove_network(&mine).await {
            warn!(network = %name, error = %err(e), "could not remove a duplicate network");
        }
    }
    Ok(oldest.clone())
}

/// Networks named exactly `name` (the engine's filter matches substrings), oldest first, as
/// (created, id).
async fn networks_named(
    docker: &Docker,
    name: &str,
) -> std::result::Result<Vec<(Timestamp, String)>, bollard::errors::Error> {
    let filters = HashMap::from([("name", vec![name.to_owned()])]);
    let networks = docker
        .list_networks(Some(
            ListNetworksOptionsBuilder::new().filters(&filters).build(),
        ))
        .await?;
    let mut found: Vec<(Timestamp, String)> = networks
        .into_iter()
        .filter(|n| n.name.as_deref() == Some(name))
        .filter_map(|n| {
            // `Created` is typed by a bollard feature (string, `time` or `chrono`); its JSON
            // form is RFC 3339 in every case.
            let created = serde_json::to_value(&n)
                .ok()
                .and_then(|v| v.get("Created").and_then(|c| c.as_str()).map(str::to_owned))
                .and_then(|c| c.parse::<Timestamp>().ok())
                .unwrap_or(Timestamp::MAX);
            Some((created, n.id?))
        })
        .collect();
    found.sort();
    Ok(found)
}
