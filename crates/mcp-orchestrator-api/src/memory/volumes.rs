//! The in-memory backend's simulated filesystem and volumes: a file step's path is looked up
//! in the instance's mounts (longest mount path first), falling back to the instance's own
//! root filesystem. A per-instance volume is a store made with the instance; a persistent one
//! lives in the orchestrator, keyed by [`persistent_volume_name`], shared by every instance of
//! the server that mounts it and kept when they stop.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use mcp_types::{
    GcReport, InstanceId, McpServer, PersistentVolume, Quantity, Timestamp, persistent_volume_name,
};

use super::{Entry, InMemoryOrchestrator, lock};
use crate::error::Result;
use crate::fixture::write_line;
use crate::secrets::SECRET_FILE_MODE;
use crate::volumes::{check_server_arg, check_volume_arg, ensure_unused, volume_not_found};

/// Path (relative to the mount, or absolute on the root) -> the one line written.
pub(super) type Files = Arc<Mutex<BTreeMap<String, String>>>;

/// The orchestrator's persistent volumes by name.
pub(super) type Volumes = BTreeMap<String, Arc<MemVolume>>;

/// A persistent volume of the orchestrator.
#[derive(Debug)]
pub(super) struct MemVolume {
    server: String,
    volume: String,
    size: Quantity,
    created_at: Timestamp,
    files: Files,
}

/// One volume mounted into an instance.
#[derive(Debug)]
pub(super) struct Mount {
    path: String,
    files: Files,
    read_only: bool,
    /// The persistent volume's name, `None` for a per-instance volume.
    persistent: Option<String>,
}

impl InMemoryOrchestrator {
    /// The mounts of a new instance of `spec`, creating its persistent volumes on first use.
    pub(super) fn mounts_for(volumes: &mut Volumes, spec: &McpServer) -> Vec<Mount> {
        spec.volumes
            .iter()
            .map(|v| {
                let (files, persistent) = if v.persistent {
                    let name = persistent_volume_name(&spec.name, &v.name);
                    let volume = volumes.entry(name.clone()).or_insert_with(|| {
                        Arc::new(MemVolume {
                            server: spec.name.clone(),
                            volume: v.name.clone(),
                            size: v.size.clone(),
                            created_at: Timestamp::now(),
                            files: Files::default(),
                        })
                    });
                    (volume.files.clone(), Some(name))
                } else {
                    (Files::default(), None)
                };
                Mount {
                    path: v.mount_path.trim_end_matches('/').to_owned(),
                    files,
                    read_only: v.read_only,
                    persistent,
                }
            })
            .collect()
    }

    fn describe(&self, name: &str, v: &MemVolume) -> PersistentVolume {
        let mut in_use_by: Vec<InstanceId> = lock(&self.instances)
            .values()
            .filter(|e| {
                e.mounts
                    .iter()
                    .any(|m| m.persistent.as_deref() == Some(name))
            })
            .map(|e| e.id.clone())
            .collect();
        in_use_by.sort();
        PersistentVolume {
            name: name.to_owned(),
            server: v.server.clone(),
            volume: v.volume.clone(),
            size: Some(v.size.clone()),
            in_use_by,
            created_at: Some(v.created_at),
            details: BTreeMap::from([("files".to_owned(), lock(&v.files).len().to_string())]),
        }
    }

    pub(super) fn list_persistent(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
        check_server_arg(server)?;
        let volumes: Vec<(String, Arc<MemVolume>)> = lock(&self.volumes)
            .iter()
            .filter(|(_, v)| server.is_none_or(|s| v.server == s))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        Ok(volumes.iter().map(|(k, v)| self.describe(k, v)).collect())
    }

    pub(super) fn remove_persistent(&self, name: &str) -> Result<()> {
        check_volume_arg(name)?;
        // Starts mount under this lock, so no instance can start using it before it is gone.
        let mut volumes = lock(&self.volumes);
        let volume = volumes
            .get(name)
            .cloned()
            .ok_or_else(|| volume_not_found(name))?;
        ensure_unused(&self.describe(name, &volume))?;
        volumes.remove(name);
        Ok(())
    }

    /// Nothing can outlive its owner in memory: the report is always empty.
    pub(super) fn gc(dry_run: bool) -> GcReport {
        GcReport::new(dry_run)
    }
}

impl Entry {
    /// The store holding `path` and the key in it, and whether it is read-only.
    fn store(&self, path: &str) -> (Files, String, bool) {
        let mount = self
            .mounts
            .iter()
            .filter(|m| {
                path.strip_prefix(m.path.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
            .max_by_key(|m| m.path.len());
        match mount {
            Some(m) => (
                m.files.clone(),
                path[m.path.len()..].to_owned(),
                m.read_only,
            ),
            None => (self.files.clone(), path.to_owned(), false),
        }
    }

    /// A `WriteFile` step: the line it prints.
    pub(super) fn write_file(&self, path: &str, content: &str) -> String {
        if self.secret_files.contains_key(path) {
            return write_line(path, Some("read-only file system"));
        }
        let (files, key, read_only) = self.store(path);
        if read_only {
            return write_line(path, Some("read-only file system"));
        }
        lock(&files).insert(key, content.to_owned());
        write_line(path, None)
    }

    /// A `PrintFile` step: the file's line, if it exists (a secret file first: it is mounted
    /// over whatever the path held).
    pub(super) fn read_file(&self, path: &str) -> Option<String> {
        if let Some(value) = self.secret_files.get(path) {
            return Some(value.clone());
        }
        let (files, key, _) = self.store(path);
        lock(&files).get(&key).cloned()
    }

    /// The permission bits of the file at `path`, if it exists: a secret file's
    /// [`SECRET_FILE_MODE`], 0644 for files the server wrote (the usual umask).
    pub(super) fn file_mode(&self, path: &str) -> Option<u32> {
        if self.secret_files.contains_key(path) {
            return Some(SECRET_FILE_MODE);
        }
        let (files, key, _) = self.store(path);
        lock(&files).contains_key(&key).then_some(0o644)
    }
}
