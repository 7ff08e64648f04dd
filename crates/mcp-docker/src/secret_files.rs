//! Secret files on Docker, kept out of the container's configuration (`docker inspect` shows
//! paths, never values).
//!
//! Design, for Docker 20.10 (API 1.41), a `FROM scratch` image and a non-root user with a
//! read-only root file system:
//!
//! 1. One small named volume per instance, `<instance>_secrets` (an `_` cannot appear in a spec
//!    volume's name, so it never clashes with one), labelled like the instance's other volumes:
//!    removed with the instance on stop or a failed start, and by orphan collection.
//! 2. Filled before the server's container exists, through the engine's archive API on a
//!    never-started helper container of the server's image ([`Helper`]): a directory `s/`
//!    owned by root, mode 0700, holding `s/<i>` = the value of secret file `i`, owned by the
//!    server's `uid:gid`, mode 0400. (Nothing inside the image can write it: no shell, and the
//!    server's own root file system is read-only.)
//! 3. The server's container binds each file read-only at exactly its `path` (source
//!    `<volume mount point>/s/<i>`, on the engine's host like the volume itself), so nothing
//!    else at the file's directory is hidden, and mounts the volume read-only at
//!    [`SECRETS_MOUNT`]: that keeps the volume in use while the container exists (no
//!    `docker volume prune` can take the files from under a restart), and lets orphan
//!    collection see a container whose secrets are gone. The server cannot list `s/` there
//!    (root, 0700); it reaches its files at their paths only.
//! 4. Each file's `env` variable is set to its `path`.
//!
//! The values travel to the engine only in the archive upload's body and live in the volume
//! under the engine's data root (readable by root on the engine's host).

use bollard::Docker;
use bollard::models::{Mount, MountType, VolumeCreateRequest};
use mcp_orchestrator_api::secrets::SECRET_FILE_MODE;
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{McpServer, SecretString, ValidationErrors};

use crate::conventions::{NETWORK_LABEL, volume_labels};
use crate::error::{BACKEND, Target, map_error};
use crate::volume::Helper;

/// Where the server's container mounts its secrets volume (read-only; not listable by the
/// server). Secret files may not be put below it.
pub const SECRETS_MOUNT: &str = "/.mcpctl-secret-files";
/// The directory inside the volume holding the files.
const FILES_DIR: &str = "s";
/// Where the helper mounts the volume.
const HELPER_DIR: &str = "/mcpctl-secrets";

/// The name of instance `instance`'s secrets volume.
pub fn secrets_volume_name(instance: &str) -> String {
    format!("{instance}_secrets")
}

/// Refuses secret file paths the backend needs for itself.
pub(crate) fn check_paths(spec: &McpServer) -> Result<()> {
    let reserved = spec
        .secret_files
        .iter()
        .position(|f| f.path == SECRETS_MOUNT || f.path.starts_with(&format!("{SECRETS_MOUNT}/")));
    match reserved {
        Some(i) => Err(OrchestratorError::InvalidSpec(ValidationErrors::single(
            format!("secretFiles[{i}].path"),
            format!("{SECRETS_MOUNT} is reserved by the docker backend"),
        ))),
        None => Ok(()),
    }
}

/// The secrets volume of `instance` and the container's mount of it, or nothing when the spec
/// has no secret files.
pub(crate) fn volume_parts(
    spec: &McpServer,
    instance: &str,
    network: &str,
) -> Option<(VolumeCreateRequest, Mount)> {
    if spec.secret_files.is_empty() {
        return None;
    }
    let name = secrets_volume_name(instance);
    let mut labels = volume_labels(&spec.name, instance);
    labels.insert(NETWORK_LABEL.to_owned(), network.to_owned());
    let volume = VolumeCreateRequest {
        name: Some(name.clone()),
        driver: Some("local".to_owned()),
        labels: Some(labels),
        ..VolumeCreateRequest::default()
    };
    let mount = Mount {
        target: Some(SECRETS_MOUNT.to_owned()),
        source: Some(name),
        typ: Some(MountType::VOLUME),
        read_only: Some(true),
        ..Mount::default()
    };
    Some((volume, mount))
}

/// The `env` entries of the secret files: each variable names its file's path.
pub(crate) fn env_entries(spec: &McpServer) -> impl Iterator<Item = String> + '_ {
    spec.secret_files
        .iter()
        .filter_map(|f| f.env.as_ref().map(|var| format!("{var}={}", f.path)))
}

/// Fills the (created) secrets volume of `instance` with `values` (spec order) owned by
/// `uid:gid`, and returns the read-only bind mounts that put each file at its path.
pub(crate) async fn fill(
    docker: &Docker,
    instance: &str,
    image: &str,
    spec: &McpServer,
    values: &[SecretString],
    owner: (u64, u64),
    endpoint: &str,
) -> Result<Vec<Mount>> {
    let name = secrets_volume_name(instance);
    let volume = docker
        .inspect_volume(&name)
        .await
        .map_err(|e| map_error(e, Target::Volume(&name), endpoint))?;
    let tar = files_tar(values, owner).map_err(|e| {
        OrchestratorError::backend(
            BACKEND,
            format!("building the secret files' archive for {instance}: {e}"),
        )
    })?;
    let helper = Helper {
        name: format!("{instance}-secrets"),
        image,
        mounts: &[(name, HELPER_DIR.to_owned())],
    };
    helper.extract(docker, HELPER_DIR, tar, endpoint).await?;
    Ok(binds(spec, &volume.mountpoint))
}

/// The read-only binds of each secret file from the volume at `mountpoint` to its path.
fn binds(spec: &McpServer, mountpoint: &str) -> Vec<Mount> {
    let root = mountpoint.trim_end_matches('/');
    spec.secret_files
        .iter()
        .enumerate()
        .map(|(i, f)| Mount {
            target: Some(f.path.clone()),
            source: Some(format!("{root}/{FILES_DIR}/{i}")),
            typ: Some(MountType::BIND),
            read_only: Some(true),
            ..Mount::default()
        })
        .collect()
}

/// `s/` (root, 0700) and `s/<i>` = value `i` (`uid:gid`, [`SECRET_FILE_MODE`]).
fn files_tar(values: &[SecretString], (uid, gid): (u64, u64)) -> std::io::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dir = tar::Header::new_ustar();
    dir.set_entry_type(tar::EntryType::Directory);
    dir.set_path(format!("{FILES_DIR}/"))?;
    dir.set_mode(0o700);
    dir.set_uid(0);
    dir.set_gid(0);
    dir.set_size(0);
    dir.set_mtime(0);
    dir.set_cksum();
    builder.append(&dir, std::io::empty())?;
    for (i, value) in values.iter().enumerate() {
        let bytes = value.expose().as_bytes();
        let mut file = tar::Header::new_ustar();
        file.set_entry_type(tar::EntryType::Regular);
        file.set_path(format!("{FILES_DIR}/{i}"))?;
        file.set_mode(SECRET_FILE_MODE);
        file.set_uid(uid);
        file.set_gid(gid);
        file.set_size(u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        file.set_mtime(0);
        file.set_cksum();
        builder.append(&file, bytes)?;
    }
    builder.into_inner()
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use mcp_types::SecretFile;

    fn spec() -> McpServer {
        let mut spec = McpServer::new("s", "img:1");
        spec.secret_files = vec![
            SecretFile::new("/run/secrets/token", "gh", "token").with_env("TOKEN_FILE"),
            SecretFile::new("/etc/app/key.pem", "gh", "key"),
        ];
        spec
    }

    #[test]
    fn the_archive_holds_private_files_in_a_root_only_directory() {
        let tar = files_tar(
            &[SecretString::new("v-0"), SecretString::new("v-1")],
            (1000, 2000),
        )
        .unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let h = entry.header().clone();
            let mut body = String::new();
            entry.read_to_string(&mut body).unwrap();
            seen.push((
                h.path().unwrap().display().to_string(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                body,
            ));
        }
        assert_eq!(
            seen,
            [
                ("s/".to_owned(), 0o700, 0, 0, String::new()),
                ("s/0".to_owned(), 0o400, 1000, 2000, "v-0".to_owned()),
                ("s/1".to_owned(), 0o400, 1000, 2000, "v-1".to_owned()),
            ]
        );
    }

    #[test]
    fn each_file_is_bound_read_only_at_its_path_and_named_by_its_variable() {
        let spec = spec();
        let binds = binds(&spec, "/var/lib/docker/volumes/x_secrets/_data/");
        assert_eq!(binds.len(), 2);
        assert_eq!(binds[0].target.as_deref(), Some("/run/secrets/token"));
        assert_eq!(
            binds[0].source.as_deref(),
            Some("/var/lib/docker/volumes/x_secrets/_data/s/0")
        );
        assert_eq!(binds[1].target.as_deref(), Some("/etc/app/key.pem"));
        assert!(
            binds
                .iter()
                .all(|b| b.typ == Some(MountType::BIND) && b.read_only == Some(true))
        );
        let env: Vec<String> = env_entries(&spec).collect();
        assert_eq!(env, ["TOKEN_FILE=/run/secrets/token"]);
        let (volume, mount) = volume_parts(&spec, "mcp-s-0123456789", "net").unwrap();
        assert_eq!(volume.name.as_deref(), Some("mcp-s-0123456789_secrets"));
        let labels = volume.labels.unwrap();
        assert_eq!(labels[mcp_types::labels::INSTANCE], "mcp-s-0123456789");
        assert_eq!(labels[NETWORK_LABEL], "net");
        assert_eq!(mount.target.as_deref(), Some(SECRETS_MOUNT));
        assert_eq!(mount.read_only, Some(true));
        assert!(volume_parts(&McpServer::new("s", "img"), "i", "net").is_none());
    }

    #[test]
    fn the_reserved_mount_is_refused_as_a_path() {
        check_paths(&spec()).unwrap();
        let mut spec = spec();
        spec.secret_files[1].path = format!("{SECRETS_MOUNT}/x");
        let err = check_paths(&spec).unwrap_err();
        assert!(
            matches!(&err, OrchestratorError::InvalidSpec(e) if e.has_path("secretFiles[1].path")),
            "{err}"
        );
    }
}
