//! Volumes: removing the per-instance named volumes of an instance (labelled
//! `mcpctl.io/instance=<id>`) with it, as the Kubernetes backend removes its
//! PersistentVolumeClaims; listing and removing the persistent ones (labelled
//! `mcpctl.io/persistent=true`, one per server and spec volume, never removed by a stop);
//! giving a volume's root to the server's user before it starts; and the never-started
//! [`Helper`] container through which files reach a volume (also the secret files').

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{
    ListContainersOptionsBuilder, ListVolumesOptionsBuilder, RemoveVolumeOptionsBuilder,
};
use mcp_orchestrator_api::volumes::{
    check_server_arg, check_volume_arg, ensure_unused, in_use, volume_not_found,
};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{InstanceId, PersistentVolume, labels};

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

/// Where the ownership helper mounts the volumes (`<dir>/<n>`).
const HELPER_DIR: &str = "/mcpctl-own";

/// Gives each writable volume's root directory to the server's user (`uid:gid`, mode 0775,
/// group-writable as a Kubernetes `fsGroup` makes it), before the instance's container exists.
///
/// A new named volume's root belongs to root unless the image has the mount path (Docker then
/// copies it in), and a `FROM scratch` image has no shell or `chown` to fix that with. So a
/// helper container of the same image is created (never started; no network) with the volumes
/// mounted at `/mcpctl-own/<n>`, and a tar holding the directory entries `<n>/` with the owner
/// is extracted into `/mcpctl-own` through the archive API: an entry for a directory that
/// exists applies its owner and mode to it, and `/mcpctl-own/<n>` is the volume's root. (The
/// server's own container cannot take it: its root filesystem is read-only, and an entry `.`
/// extracted into the mount point itself is skipped by the engine.) The helper is removed
/// whatever happens.
pub(crate) async fn give_volumes_to_user(
    docker: &Docker,
    instance: &str,
    image: &str,
    owned: &[(String, u64, u64)],
    endpoint: &str,
) -> Result<()> {
    if owned.is_empty() {
        return Ok(());
    }
    let mounts = owned
        .iter()
        .enumerate()
        .map(|(i, (volume, _, _))| (volume.clone(), format!("{HELPER_DIR}/{i}")))
        .collect::<Vec<_>>();
    let tar = ownership_tar(owned).map_err(|e| {
        OrchestratorError::backend(
            crate::error::BACKEND,
            format!("building the ownership archive for {instance}: {e}"),
        )
    })?;
    let helper = Helper {
        name: format!("{instance}-own"),
        image,
        mounts: &mounts,
    };
    helper.extract(docker, HELPER_DIR, tar, endpoint).await
}

/// A never-started container of the server's image (no network) that mounts named volumes
/// read-write, so the engine's archive API can write into them before the server's container
/// exists: the only way into a volume for a `FROM scratch` image with no shell.
pub(crate) struct Helper<'a> {
    /// The container's name (`<instance>-<purpose>`).
    pub(crate) name: String,
    /// The server's image (present already; nothing is pulled).
    pub(crate) image: &'a str,
    /// (volume name, mount path inside the helper).
    pub(crate) mounts: &'a [(String, String)],
}

impl Helper<'_> {
    /// Creates the helper, extracts `tar` at `dir` inside it and removes it, whatever happens.
    /// Tar entries keep their owner and mode (no `copyUIDGID`).
    pub(crate) async fn extract(
        &self,
        docker: &Docker,
        dir: &str,
        tar: Vec<u8>,
        endpoint: &str,
    ) -> Result<()> {
        let helper = self.name.as_str();
        let err = |e| map_error(e, Target::Container(helper), endpoint);
        let mounts = self
            .mounts
            .iter()
            .map(|(volume, target)| bollard::models::Mount {
                target: Some(target.clone()),
                source: Some(volume.clone()),
                typ: Some(bollard::models::MountType::VOLUME),
                ..bollard::models::Mount::default()
            })
            .collect();
        let body = bollard::models::ContainerCreateBody {
            image: Some(self.image.to_owned()),
            labels: Some(HashMap::from([(
                labels::APP_MANAGED_BY.to_owned(),
                labels::MANAGED_BY_VALUE.to_owned(),
            )])),
            network_disabled: Some(true),
            host_config: Some(bollard::models::HostConfig {
                mounts: Some(mounts),
                network_mode: Some("none".to_owned()),
                ..bollard::models::HostConfig::default()
            }),
            ..bollard::models::ContainerCreateBody::default()
        };
        let options = bollard::query_parameters::CreateContainerOptionsBuilder::new()
            .name(helper)
            .build();
        docker
            .create_container(Some(options), body)
            .await
            .map_err(err)?;
        let options = bollard::query_parameters::UploadToContainerOptionsBuilder::new()
            .path(dir)
            .build();
        let result = docker
            .upload_to_container(helper, Some(options), bollard::body_full(tar.into()))
            .await
            .map_err(err);
        let remove = bollard::query_parameters::RemoveContainerOptionsBuilder::new()
            .force(true)
            .build();
        if let Err(e) = docker.remove_container(helper, Some(remove)).await {
            let e = err(e);
            if !e.is_not_found() {
                tracing::warn!(%helper, error = %e, "could not remove a volume helper container");
            }
        }
        result
    }
}

/// A tar of the directories `<n>/`, each owned by its `uid:gid`, mode 0775.
fn ownership_tar(owned: &[(String, u64, u64)]) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    for (i, (_, uid, gid)) in owned.iter().enumerate() {
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_path(format!("{i}/"))?;
        header.set_mode(0o775);
        header.set_uid(*uid);
        header.set_gid(*gid);
        header.set_size(0);
        header.set_mtime(0);
        header.set_cksum();
        builder.append(&header, std::io::empty())?;
    }
    builder.into_inner()
}

/// The managed containers (any state) that mount volume `name`, ordered by name.
pub(crate) async fn users_of(
    docker: &Docker,
    name: &str,
    endpoint: &str,
) -> Result<Vec<InstanceId>> {
    let filters = HashMap::from([
        ("volume", vec![name.to_owned()]),
        ("label", vec![format!("{}=true", labels::MANAGED)]),
    ]);
    let containers = docker
        .list_containers(Some(
            ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .map_err(|e| map_error(e, Target::Volume(name), endpoint))?;
    let mut users: Vec<InstanceId> = containers
        .into_iter()
        .filter_map(|c| {
            c.names?
                .first()
                .map(|n| InstanceId::new(n.trim_start_matches('/')))
        })
        .collect();
    users.sort();
    Ok(users)
}

/// The persistent volumes of this project (of `server`, or all), ordered by name.
pub(crate) async fn list_persistent(
    docker: &Docker,
    server: Option<&str>,
    endpoint: &str,
) -> Result<Vec<PersistentVolume>> {
    check_server_arg(server)?;
    let mut label = vec![
        format!("{}=true", labels::MANAGED),
        format!("{}=true", labels::PERSISTENT),
    ];
    if let Some(s) = server {
        label.push(format!("{}={s}", labels::SERVER));
    }
    let filters = HashMap::from([("label", label)]);
    let listed = docker
        .list_volumes(Some(
            ListVolumesOptionsBuilder::new().filters(&filters).build(),
        ))
        .await
        .map_err(|e| map_error(e, Target::Engine, endpoint))?;
    let mut out = Vec::new();
    for v in listed.volumes.unwrap_or_default() {
        let in_use_by = users_of(docker, &v.name, endpoint).await?;
        out.push(describe(v, in_use_by));
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn describe(v: bollard::models::Volume, in_use_by: Vec<InstanceId>) -> PersistentVolume {
    let label = |k: &str| v.labels.get(k).cloned().unwrap_or_default();
    PersistentVolume {
        server: label(labels::SERVER),
        volume: label(labels::VOLUME),
        size: v
            .labels
            .get(crate::conventions::SIZE_LABEL)
            .and_then(|s| mcp_types::Quantity::parse(s).ok()),
        in_use_by,
        created_at: v.created_at.as_deref().and_then(|t| t.parse().ok()),
        details: BTreeMap::from([
            ("driver".to_owned(), v.driver.clone()),
            ("mountpoint".to_owned(), v.mountpoint.clone()),
        ]),
        name: v.name,
    }
}

/// Removes persistent volume `name` unless a managed container mounts it.
pub(crate) async fn remove_persistent(docker: &Docker, name: &str, endpoint: &str) -> Result<()> {
    check_volume_arg(name)?;
    let err = |e| map_error(e, Target::Volume(name), endpoint);
    let volume = match docker.inspect_volume(name).await.map_err(err) {
        Ok(v) => v,
        Err(OrchestratorError::NotFound { .. }) => return Err(volume_not_found(name)),
        Err(e) => return Err(e),
    };
    let ours = |k: &str| volume.labels.get(k).is_some_and(|v| v == "true");
    if !(ours(labels::MANAGED) && ours(labels::PERSISTENT)) {
        return Err(volume_not_found(name));
    }
    let users = users_of(docker, name, endpoint).await?;
    ensure_unused(&describe(volume, users))?;
    match docker
        .remove_volume(name, Some(RemoveVolumeOptionsBuilder::new().build()))
        .await
        .map_err(err)
    {
        Ok(()) => Ok(()),
        Err(OrchestratorError::NotFound { .. }) => Err(volume_not_found(name)),
        // 409: a container started using it since the check.
        Err(OrchestratorError::AlreadyExists { .. }) => {
            let users = users_of(docker, name, endpoint).await?;
            Err(in_use(name, &users))
        }
        Err(e) => Err(e),
    }
}
