//! What the simulated kubelet's file steps write into, as a node would keep it: a path under a
//! container's `volumeMounts` goes to that volume's data (a PersistentVolumeClaim's data lives
//! as long as the claim object, keyed by its uid, so every pod mounting the claim sees it and a
//! claim deleted and created again starts empty; an `emptyDir` lives as long as the pod; a
//! `secret` volume holds the Secret's keys, read when the container is set up, see
//! `secret_volumes`), any other path to the container's writable layer (one run). A mount with
//! a `subPath` shows that path of its volume.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Container, PodSpec, SecretVolumeSource};

/// Path inside the volume -> the one line written.
pub(crate) type Files = Arc<Mutex<HashMap<String, String>>>;

/// Where a mounted volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A `persistentVolumeClaim` volume: the claim's name.
    Claim(String),
    /// Any other volume (`emptyDir`, ...): lives with the pod.
    Pod(String),
    /// A `secret` volume: its files come from the Secret.
    Secret(SecretSource),
}

/// A `secret` volume as the kubelet projects it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SecretSource {
    /// The pod volume's name.
    pub(crate) volume: String,
    /// `secretName`.
    pub(crate) secret: String,
    /// `items` (key, path, mode); `None` projects every key as a file of its name.
    pub(crate) items: Option<Vec<(String, String, Option<i32>)>>,
    /// `defaultMode` (0644 when absent).
    pub(crate) default_mode: Option<i32>,
    /// `optional`: a missing Secret or key is not an error.
    pub(crate) optional: bool,
    /// The pod's `fsGroup`, which adds group read to every file (the volume is read-only).
    pub(crate) fs_group: Option<i64>,
}

impl SecretSource {
    fn of(volume: &str, source: &SecretVolumeSource, fs_group: Option<i64>) -> Self {
        Self {
            volume: volume.to_owned(),
            secret: source.secret_name.clone().unwrap_or_default(),
            items: source.items.as_ref().map(|items| {
                items
                    .iter()
                    .map(|i| (i.key.clone(), i.path.clone(), i.mode))
                    .collect()
            }),
            default_mode: source.default_mode,
            optional: source.optional.unwrap_or(false),
            fs_group,
        }
    }
}

/// One `volumeMount` of a container.
#[derive(Debug, Clone)]
pub(crate) struct MountSpec {
    pub(crate) path: String,
    pub(crate) source: Source,
    pub(crate) read_only: bool,
    /// `subPath` (empty: the volume's root).
    pub(crate) sub_path: String,
}

/// The mounts of `container` in `pod` (mounts naming no pod volume are skipped: the API
/// server's validation refuses them).
pub(crate) fn mounts_of(pod: &PodSpec, container: &Container) -> Vec<MountSpec> {
    let fs_group = pod.security_context.as_ref().and_then(|s| s.fs_group);
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name)?;
            let source = match (&volume.persistent_volume_claim, &volume.secret) {
                (Some(claim), _) => Source::Claim(claim.claim_name.clone()),
                (None, Some(secret)) => {
                    Source::Secret(SecretSource::of(&volume.name, secret, fs_group))
                }
                (None, None) => Source::Pod(volume.name.clone()),
            };
            Some(MountSpec {
                path: m.mount_path.trim_end_matches('/').to_owned(),
                source,
                // Secret volumes are always mounted read-only.
                read_only: m.read_only.unwrap_or(false) || volume.secret.is_some(),
                sub_path: m
                    .sub_path
                    .as_deref()
                    .unwrap_or_default()
                    .trim_matches('/')
                    .to_owned(),
            })
        })
        .collect()
}

/// Every volume's data on the node, by key (`claim/<uid>`, `pod/<uid>/<volume>`).
#[derive(Debug, Default)]
pub(crate) struct VolumeData {
    data: Mutex<HashMap<String, Files>>,
}

impl VolumeData {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Files>> {
        self.data.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The data stored under `key`, created empty on first use.
    pub(crate) fn files(&self, key: &str) -> Files {
        self.lock().entry(key.to_owned()).or_default().clone()
    }

    /// Forgets the data of a pod's own volumes when it goes.
    pub(crate) fn forget_pod(&self, pod_uid: &str) {
        let prefix = format!("pod/{pod_uid}/");
        self.lock().retain(|k, _| !k.starts_with(&prefix));
    }
}

/// One mount of a container's view, resolved when the run starts.
#[derive(Debug)]
pub(crate) struct ViewMount {
    /// Where it is mounted.
    pub(crate) path: String,
    /// The volume's data (keys are paths inside the volume, `/`-prefixed).
    pub(crate) files: Files,
    pub(crate) read_only: bool,
    /// The `subPath` shown at `path` (empty: the volume's root).
    pub(crate) sub_path: String,
    /// Permission bits of the volume's files that are not 0644 (a secret volume's).
    pub(crate) modes: HashMap<String, u32>,
}

/// A container's view of the file system for one run.
#[derive(Debug)]
pub(crate) struct FileView {
    /// The mounts, resolved when the run starts.
    pub(crate) mounts: Vec<ViewMount>,
    /// The writable layer of this run.
    pub(crate) layer: Files,
}

/// Permission bits of a file a container wrote (the runtime's default umask 022).
const WRITTEN_MODE: u32 = 0o644;

impl FileView {
    /// The mount holding `path` (the longest mount path), and the key of `path` in it.
    fn mount_of(&self, path: &str) -> Option<(&ViewMount, String)> {
        let mount = self
            .mounts
            .iter()
            .filter(|m| {
                path.strip_prefix(m.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|m| m.path.len())?;
        let rest = &path[mount.path.len()..];
        let key = if mount.sub_path.is_empty() {
            rest.to_owned()
        } else {
            format!("/{}{rest}", mount.sub_path)
        };
        Some((mount, key))
    }

    fn store(&self, path: &str) -> (Files, String, bool) {
        match self.mount_of(path) {
            Some((m, key)) => (m.files.clone(), key, m.read_only),
            None => (self.layer.clone(), path.to_owned(), false),
        }
    }

    /// The permission bits of the file at `path`, if it exists.
    pub(crate) fn mode(&self, path: &str) -> Option<u32> {
        let (files, key, _) = self.store(path);
        if !files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&key)
        {
            return None;
        }
        let mode = self
            .mount_of(path)
            .and_then(|(m, key)| m.modes.get(&key).copied());
        Some(mode.unwrap_or(WRITTEN_MODE))
    }

    /// A write step: `None` when done, or the error (a read-only mount).
    pub(crate) fn write(&self, path: &str, content: &str) -> Option<&'static str> {
        let (files, key, read_only) = self.store(path);
        if read_only {
            return Some("read-only file system");
        }
        files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, content.to_owned());
        None
    }

    /// A read step.
    pub(crate) fn read(&self, path: &str) -> Option<String> {
        let (files, key, _) = self.store(path);
        files
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
            .cloned()
    }
}
