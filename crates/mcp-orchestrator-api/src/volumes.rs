//! What every backend's volume calls share: argument checks and the in-use refusal, so that the
//! errors read the same on every backend.

use mcp_types::names::{check_dns1123_label, check_persistent_volume_name};
use mcp_types::{InstanceId, PersistentVolume};

use crate::error::{OrchestratorError, Result};

/// Checks the `server` argument of `list_volumes`.
///
/// # Errors
/// [`InvalidArgument`](OrchestratorError::InvalidArgument) with `what: "server"`.
pub fn check_server_arg(server: Option<&str>) -> Result<()> {
    match server {
        Some(s) => check_dns1123_label(s).map_err(|message| OrchestratorError::InvalidArgument {
            what: "server",
            message,
        }),
        None => Ok(()),
    }
}

/// Checks the `name` argument of `remove_volume`.
///
/// # Errors
/// [`InvalidArgument`](OrchestratorError::InvalidArgument) with `what: "volume"`.
pub fn check_volume_arg(name: &str) -> Result<()> {
    check_persistent_volume_name(name).map_err(|message| OrchestratorError::InvalidArgument {
        what: "volume",
        message,
    })
}

/// The refusal to remove volume `name` while `users` mount it.
pub fn in_use(name: &str, users: &[InstanceId]) -> OrchestratorError {
    let mut users: Vec<String> = users.iter().map(|u| u.as_str().to_owned()).collect();
    users.sort();
    users.dedup();
    OrchestratorError::InUse {
        what: format!("volume {name:?}"),
        users,
    }
}

/// Refuses the removal when `volume` is mounted: the check every backend makes before it
/// deletes anything.
///
/// # Errors
/// [`InUse`](OrchestratorError::InUse) naming the instances.
pub fn ensure_unused(volume: &PersistentVolume) -> Result<()> {
    if volume.in_use_by.is_empty() {
        Ok(())
    } else {
        Err(in_use(&volume.name, &volume.in_use_by))
    }
}

/// The error for a volume name that no persistent volume of this project has
/// ([`NotFound`](OrchestratorError::NotFound) whose `id` is the volume's name).
pub fn volume_not_found(name: &str) -> OrchestratorError {
    OrchestratorError::not_found(name)
}
