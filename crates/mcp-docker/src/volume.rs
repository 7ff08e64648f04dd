//! Volumes: removing the named volumes of an instance (labelled `mcpctl.io/instance=<id>`) with
//! it, as the Kubernetes backend removes its PersistentVolumeClaims.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::labels;

use crate::error::{Target, map_error};

/// Removes every volume of `instance`, waiting a little for volumes the container's removal
/// is still releasing.
pub(crate) async fn remove_volumes(docker: &Docker, instance: &str, endpoint: &str) -> Result<()> {
    let filters = HashMap::from([("label", vec![format!("{}={instance}", labels::INSTANCE)])]);
    let volumes = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| map_error(e, Target::Container(instance), endpoint))?;
    for v in volumes.volumes.unwrap_or_default() {
        let mut tries = 0;
        loop {
            match docker
                .remove_volume(&v.name, Some(RemoveVolumeOptionsBuilder::new().build()))
                .await
                .map_err(|e| map_error(e, Target::Volume(&v.name), endpoint))
            {
                Ok(()) | Err(OrchestratorError::NotFound { .. }) => break,
                // In use: the container's removal may still be releasing it.
                Err(OrchestratorError::AlreadyExists { .. }) if tries < 20 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}
