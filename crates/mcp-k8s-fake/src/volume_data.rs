//! What the simulated kubelet's file steps write into, as a node would keep it: a path under a
//! container's `volumeMounts` goes to that volume's data (a PersistentVolumeClaim's data lives
//! as long as the claim object, keyed by its uid, so every pod mounting the claim sees it and a
//! claim deleted and created again starts empty; an `emptyDir` lives as long as the pod), any
//! other path to the container's writable layer (one run).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use k8s_openapi::api::core::v1::{Container, PodSpec};

/// Path inside the volume -> the one line written.
pub(crate) type Files = Arc<Mutex<HashMap<String, String>>>;

/// Where a mounted volume's data comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A `persistentVolumeClaim` volume: the claim's name.
    Claim(String),
    /// Any other volume (`emptyDir`, ...): lives with the pod.
    Pod(String),
}

/// One `volumeMount` of a container.
#[derive(Debug, Clone)]
pub(crate) struct MountSpec {
    pub(crate) path: String,
    pub(crate) source: Source,
    pub(crate) read_only: bool,
}

/// The mounts of `container` in `pod` (mounts naming no pod volume are skipped: the API
/// server's validation refuses them).
pub(crate) fn mounts_of(pod: &PodSpec, container: &Container) -> Vec<MountSpec> {
    container
        .volume_mounts
        .iter()
        .flatten()
        .filter_map(|m| {
            let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name)?;
            let source = match &volume.persistent_volume_claim {
                Some(claim) => Source::Claim(claim.claim_name.clone()),
                None => Source::Pod(volume.name.clone()),
            };
            Some(MountSpec {
                path: m.mount_path.trim_end_matches('/').to_owned(),
                source,
                read_only: m.read_only.unwrap_or(false),
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

/// A container's view of the file system for one run.
#[derive(Debug)]
pub(crate) struct FileView {
    /// (mount path, data, read-only), resolved when the run starts.
    pub(crate) mounts: Vec<(String, Files, bool)>,
    /// The writable layer of this run.
    pub(crate) layer: Files,
}

impl FileView {
    fn store(&self, path: &str) -> (Files, String, bool) {
        let mount = self
            .mounts
            .iter()
            .filter(|(m, _, _)| {
                path.strip_prefix(m.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|(m, _, _)| m.len());
        match mount {
            Some((m, files, ro)) => (files.clone(), path[m.len()..].to_owned(), *ro),
            None => (self.layer.clone(), path.to_owned(), false),
        }
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
