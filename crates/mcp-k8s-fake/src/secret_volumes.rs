//! `secret` volumes as the kubelet sets them up before a pod's containers start: each key the
//! volume projects (its `items`, or every key of the Secret) becomes a file with the mode the
//! volume gives it (`items[].mode`, else `defaultMode`, else 0644), plus group read when the
//! pod has an `fsGroup` (the kubelet's ownership change adds 0440 on read-only volumes). A
//! missing Secret or key keeps the container in `ContainerCreating` (the real kubelet reports
//! it as a `FailedMount` event) unless the volume is `optional`.
//!
//! Interpreted programs read the files through their `FileView`. A container running a real
//! local program has no mount namespace, so its secret volumes are written to a private host
//! directory ([`HostSecrets`]) removed when the run ends, and environment values naming a path
//! under such a mount are rewritten to the host copy: a server reading the file its `_FILE`
//! variable names reads the real bytes.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::json;

use crate::kind::ResourceKind;
use crate::store::{ObjectKey, Store};
use crate::volume_data::{MountSpec, SecretSource, Source};

/// Group read, added by the kubelet to every file of a read-only volume when the pod has an
/// `fsGroup`.
const FS_GROUP_READ: u32 = 0o440;
/// Mode of projected files when the volume sets none.
const DEFAULT_MODE: u32 = 0o644;

/// One projected file: its path inside the volume, its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretFile {
    pub(crate) path: String,
    pub(crate) value: Vec<u8>,
    pub(crate) mode: u32,
}

/// The files of every secret volume a container mounts, by pod volume name.
pub(crate) type Materialized = HashMap<String, Vec<SecretFile>>;

/// Reads the Secrets behind `mounts`' secret volumes; the kubelet's mount error when a
/// required Secret or key is missing.
pub(crate) fn materialize(
    store: &Store,
    namespace: &str,
    mounts: &[MountSpec],
) -> Result<Materialized, String> {
    let mut out = Materialized::new();
    for mount in mounts {
        if let Source::Secret(source) = &mount.source
            && !out.contains_key(&source.volume)
        {
            out.insert(source.volume.clone(), project(store, namespace, source)?);
        }
    }
    Ok(out)
}

fn project(
    store: &Store,
    namespace: &str,
    source: &SecretSource,
) -> Result<Vec<SecretFile>, String> {
    let key = ObjectKey::new(ResourceKind::Secret, namespace, &source.secret);
    let Some(secret) = store.get(&key) else {
        return if source.optional {
            Ok(Vec::new())
        } else {
            Err(format!(
                "MountVolume.SetUp failed for volume \"{}\" : secret \"{}\" not found",
                source.volume, source.secret
            ))
        };
    };
    let data: HashMap<String, Vec<u8>> = secret["data"]
        .as_object()
        .map(|data| {
            data.iter()
                .filter_map(|(k, v)| {
                    let bytes = serde_json::from_value::<k8s_openapi::ByteString>(json!(v)).ok()?;
                    Some((k.clone(), bytes.0))
                })
                .collect()
        })
        .unwrap_or_default();
    let mode = |item: Option<i32>| {
        let bits = item
            .or(source.default_mode)
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(DEFAULT_MODE);
        if source.fs_group.is_some() {
            bits | FS_GROUP_READ
        } else {
            bits
        }
    };
    let Some(items) = &source.items else {
        let mut files: Vec<SecretFile> = data
            .into_iter()
            .map(|(path, value)| SecretFile {
                path,
                value,
                mode: mode(None),
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        return Ok(files);
    };
    let mut files = Vec::new();
    for (key, path, item_mode) in items {
        match data.get(key) {
            Some(value) => files.push(SecretFile {
                path: path.clone(),
                value: value.clone(),
                mode: mode(*item_mode),
            }),
            None if source.optional => {}
            None => {
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{}\" : references non-existent secret key: {key}",
                    source.volume
                ));
            }
        }
    }
    Ok(files)
}

/// A real program's copy of its secret volumes on the host: `<root>/<volume>/<path>`, files
/// with their modes, removed with this value.
#[derive(Debug)]
pub(crate) struct HostSecrets {
    root: PathBuf,
}

impl HostSecrets {
    /// Writes `materialized` under `root` (created, private).
    pub(crate) fn write(root: PathBuf, materialized: &Materialized) -> std::io::Result<Self> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let this = Self { root };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&this.root)?;
        for (volume, files) in materialized {
            for file in files {
                let target = this.root.join(volume).join(&file.path);
                if let Some(parent) = target.parent() {
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(parent)?;
                }
                let mut out = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(file.mode)
                    .open(&target)?;
                std::io::Write::write_all(&mut out, &file.value)?;
            }
        }
        Ok(this)
    }

    /// The host path of container path `value` when it lies under one of `mounts`' secret
    /// volumes (the mount with the longest path wins), else `None`.
    pub(crate) fn translate(&self, mounts: &[MountSpec], value: &str) -> Option<String> {
        let (mount, volume) = mounts
            .iter()
            .filter_map(|m| match &m.source {
                Source::Secret(s) => Some((m, s.volume.as_str())),
                _ => None,
            })
            .filter(|(m, _)| {
                value
                    .strip_prefix(m.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|(m, _)| m.path.len())?;
        let rest = value[mount.path.len()..].trim_start_matches('/');
        let mut host = self.root.join(volume);
        if !mount.sub_path.is_empty() {
            host.push(&mount.sub_path);
        }
        if !rest.is_empty() {
            host.push(rest);
        }
        Some(host.display().to_string())
    }
}

impl Drop for HostSecrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn source(
        items: Option<Vec<(&str, &str, Option<i32>)>>,
        fs_group: Option<i64>,
    ) -> SecretSource {
        SecretSource {
            volume: "s".into(),
            secret: "gh".into(),
            items: items.map(|items| {
                items
                    .into_iter()
                    .map(|(k, p, m)| (k.to_owned(), p.to_owned(), m))
                    .collect()
            }),
            default_mode: Some(0o400),
            optional: false,
            fs_group,
        }
    }

    fn store_with_secret() -> Store {
        let store = Store::default();
        store
            .create(
                ResourceKind::Secret,
                "ns",
                json!({"metadata": {"name": "gh"}, "data": {"token": "dG9rLTE=", "other": "b3RoZXI="}}),
            )
            .unwrap();
        store
    }

    #[test]
    fn items_take_their_modes_and_fs_group_adds_group_read() {
        let store = store_with_secret();
        let files = project(
            &store,
            "ns",
            &source(
                Some(vec![("token", "value", None), ("other", "o", Some(0o600))]),
                Some(1000),
            ),
        )
        .unwrap();
        assert_eq!(
            files,
            [
                SecretFile {
                    path: "value".into(),
                    value: b"tok-1".to_vec(),
                    mode: 0o440
                },
                SecretFile {
                    path: "o".into(),
                    value: b"other".to_vec(),
                    mode: 0o640
                },
            ]
        );
        let all = project(&store, "ns", &source(None, None)).unwrap();
        let paths: Vec<_> = all.iter().map(|f| (f.path.as_str(), f.mode)).collect();
        assert_eq!(paths, [("other", 0o400), ("token", 0o400)]);
    }

    #[test]
    fn missing_secrets_and_keys_are_mount_errors_unless_optional() {
        let store = store_with_secret();
        let err =
            project(&store, "ns", &source(Some(vec![("nope", "v", None)]), None)).unwrap_err();
        assert!(err.contains("non-existent secret key: nope"), "{err}");
        let mut absent = source(None, None);
        absent.secret = "absent".into();
        let err = project(&store, "ns", &absent).unwrap_err();
        assert!(err.contains("secret \"absent\" not found"), "{err}");
        absent.optional = true;
        assert!(project(&store, "ns", &absent).unwrap().is_empty());
    }

    #[test]
    fn host_copies_keep_modes_translate_paths_and_go_away() {
        let root =
            std::env::temp_dir().join(format!("mcp-k8s-fake-secrets-test-{}", std::process::id()));
        let materialized = Materialized::from([(
            "s".to_owned(),
            vec![SecretFile {
                path: "value".into(),
                value: b"v".to_vec(),
                mode: 0o440,
            }],
        )]);
        let mounts = [MountSpec {
            path: "/run/secrets/token".into(),
            source: Source::Secret(source(None, None)),
            read_only: true,
            sub_path: "value".into(),
        }];
        let host = HostSecrets::write(root.clone(), &materialized).unwrap();
        let file = host.translate(&mounts, "/run/secrets/token").unwrap();
        assert_eq!(file, root.join("s/value").display().to_string());
        assert_eq!(std::fs::read(&file).unwrap(), b"v");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o440);
        assert_eq!(host.translate(&mounts, "/run/secrets/tokenx"), None);
        assert_eq!(host.translate(&mounts, "plain"), None);
        drop(host);
        assert!(!root.exists());
    }
}
