//! Volumes of the process backend, on the starter's side: what each spec volume is on disk
//! and the persistent volumes' listing and removal. The supervisor mounts them
//! (`sandbox.rs`).
//!
//! | volume | directory | removed |
//! |---|---|---|
//! | per-instance | `<instance dir>/volumes/<name>` | with the instance (stop, failed start, orphan collection) |
//! | persistent | `<state dir>/volumes/<mcp-server-volume>/data`, next to `volume.json` | by `remove_volume`, refused while an instance mounts it |
//!
//! A persistent volume is built under a temporary name and renamed into place, so it is
//! always complete, and two starters creating it at once both end up with the one that won
//! the rename. Starts hold `volumes.lock` shared from the volume's creation until the
//! instance's `meta.json` (which names the volumes it mounts) is written; a removal holds it
//! exclusive while it finds the users and moves the volume to the trash, so it never removes
//! a volume that a start is about to mount. Sizes are recorded and listed, not enforced: the
//! directories share the state directory's file system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use mcp_types::{
    InstanceId, McpServer, PersistentVolume, Quantity, Timestamp, ValidationErrors, VolumeSpec,
    persistent_volume_name,
};
use serde::{Deserialize, Serialize};

use crate::error::ProcessError;
use crate::files::{create_private_dir, create_private_dir_all, read_json, write_json};
use crate::layout::{INSTANCES, InstancePaths, Meta, TRASH, VOLUMES, VOLUMES_LOCK};
use crate::sandbox::BindMount;

/// Prefix of a persistent volume being built (renamed into place when complete).
const BUILDING: &str = ".new-";
/// How long a volume may stay half-built before orphan collection removes it.
pub(crate) const ABANDONED_AFTER: Duration = Duration::from_secs(60);
/// How long a start or a removal waits for `volumes.lock`.
const LOCK_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(20);

/// `volume.json`: what a persistent volume was created for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct VolumeRecord {
    server: String,
    volume: String,
    size: Quantity,
    created_at: Timestamp,
}

/// The persistent volumes under one state directory.
pub(crate) struct VolumeStore<'a> {
    state_dir: &'a Path,
}

impl<'a> VolumeStore<'a> {
    pub(crate) fn new(state_dir: &'a Path) -> Self {
        Self { state_dir }
    }

    fn root(&self) -> PathBuf {
        self.state_dir.join(VOLUMES)
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root().join(name)
    }

    /// Refuses mount paths no instance can use, before anything is created: `/` itself, and
    /// paths that would hide the state directory from the supervisor.
    pub(crate) fn check_mount_paths(&self, spec: &McpServer) -> Result<(), ValidationErrors> {
        for (i, v) in spec.volumes.iter().enumerate() {
            let field = format!("volumes[{i}].mountPath");
            let path = Path::new(&v.mount_path);
            if path.parent().is_none() {
                return Err(ValidationErrors::single(
                    field,
                    "cannot mount a volume over /",
                ));
            }
            if self.state_dir.starts_with(path) {
                return Err(ValidationErrors::single(
                    field,
                    format!(
                        "{} would hide the process backend's state directory {}",
                        v.mount_path,
                        self.state_dir.display()
                    ),
                ));
            }
            if path.exists() && !path.is_dir() {
                return Err(ValidationErrors::single(
                    field,
                    format!("{} exists and is not a directory", v.mount_path),
                ));
            }
        }
        Ok(())
    }

    /// The mounts of `spec`'s volumes for the instance at `paths` (per-instance directories
    /// created, persistent volumes created when missing), parents before children, and the
    /// names of the persistent volumes. The names of the persistent volumes it created are
    /// added to `created` (also when it fails half-way), so that a failed start can remove
    /// them. Call it holding [`VolumeStore::lock`] shared.
    pub(crate) fn prepare(
        &self,
        spec: &McpServer,
        paths: &InstancePaths,
        created: &mut Vec<String>,
    ) -> Result<(Vec<BindMount>, Vec<String>), ProcessError> {
        let mut mounts = Vec::new();
        let mut persistent = Vec::new();
        for (i, v) in spec.volumes.iter().enumerate() {
            let source = if v.persistent {
                let (name, data, new) = self.ensure(&spec.name, v)?;
                if new {
                    created.push(name.clone());
                }
                persistent.push(name);
                data
            } else {
                let dir = paths.volume(&v.name);
                create_private_dir_all(&dir).map_err(ProcessError::io("creating", &dir))?;
                dir
            };
            mounts.push(BindMount {
                source,
                target: PathBuf::from(&v.mount_path),
                read_only: v.read_only,
                field: format!("volumes[{i}].mountPath"),
            });
        }
        mounts.sort_by_key(|m| m.target.components().count());
        Ok((mounts, persistent))
    }

    /// The persistent volume of `server`'s spec volume `v`, created when missing: its name,
    /// data directory, and whether this call created it.
    fn ensure(
        &self,
        server: &str,
        v: &VolumeSpec,
    ) -> Result<(String, PathBuf, bool), ProcessError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = persistent_volume_name(server, &v.name);
        let dir = self.dir(&name);
        if let Some(record) = self.record(&name)? {
            return Self::owned_by(&name, &record, server, &v.name)
                .map(|()| (name, dir.join("data"), false));
        }
        let root = self.root();
        create_private_dir_all(&root).map_err(ProcessError::io("creating", &root))?;
        let building = root.join(format!(
            "{BUILDING}{name}.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let record = VolumeRecord {
            server: server.to_owned(),
            volume: v.name.clone(),
            size: v.size.clone(),
            created_at: Timestamp::now(),
        };
        let built = create_private_dir(&building)
            .and_then(|()| create_private_dir(&building.join("data")))
            .and_then(|()| write_json(&building.join("volume.json"), &record))
            .map_err(ProcessError::io("creating", &building))
            .and_then(|()| match std::fs::rename(&building, &dir) {
                Ok(()) => Ok(true),
                // Another starter won the race: use its volume.
                Err(e) if e.raw_os_error().is_some_and(is_taken) => Ok(false),
                Err(e) => Err(ProcessError::io("moving into place", &dir)(e)),
            });
        if !matches!(built, Ok(true)) {
            let _ = std::fs::remove_dir_all(&building);
        }
        if built? {
            return Ok((name, dir.join("data"), true));
        }
        let record = self
            .record(&name)?
            .ok_or_else(|| ProcessError::VolumeNotFound(name.clone()))?;
        Self::owned_by(&name, &record, server, &v.name).map(|()| (name, dir.join("data"), false))
    }

    fn owned_by(
        name: &str,
        record: &VolumeRecord,
        server: &str,
        volume: &str,
    ) -> Result<(), ProcessError> {
        if record.server == server && record.volume == volume {
            Ok(())
        } else {
            Err(ProcessError::VolumeTaken {
                name: name.to_owned(),
                owner: record.server.clone(),
                volume: record.volume.clone(),
            })
        }
    }

    /// The record of volume `name`, `None` when there is no such volume.
    fn record(&self, name: &str) -> Result<Option<VolumeRecord>, ProcessError> {
        let path = self.dir(name).join("volume.json");
        read_json(&path).map_err(ProcessError::io("reading", &path))
    }

    /// The persistent volumes (of `server`, or all), ordered by name, each with the instances
    /// that mount it.
    pub(crate) fn list(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>, ProcessError> {
        let root = self.root();
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ProcessError::io("listing", &root)(e)),
        };
        let users = self.users()?;
        let mut out = Vec::new();
        for entry in entries.filter_map(Result::ok) {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if mcp_types::names::check_persistent_volume_name(&name).is_err() {
                continue;
            }
            let record = match self.record(&name) {
                Ok(Some(record)) => record,
                // Removed meanwhile.
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(volume = name, "skipping an unreadable volume: {e}");
                    continue;
                }
            };
            if server.is_some_and(|s| s != record.server) {
                continue;
            }
            out.push(PersistentVolume {
                in_use_by: users.get(&name).cloned().unwrap_or_default(),
                details: BTreeMap::from([(
                    "path".to_owned(),
                    self.dir(&name).join("data").display().to_string(),
                )]),
                name,
                server: record.server,
                volume: record.volume,
                size: Some(record.size),
                created_at: Some(record.created_at),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes volume `name` unless an instance mounts it. Call it holding
    /// [`VolumeStore::lock`] exclusive.
    pub(crate) fn remove(&self, name: &str) -> Result<(), ProcessError> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        if self.record(name)?.is_none() {
            return Err(ProcessError::VolumeNotFound(name.to_owned()));
        }
        if let Some(users) = self.users()?.remove(name) {
            return Err(ProcessError::VolumeInUse {
                name: name.to_owned(),
                users,
            });
        }
        let trash = self.state_dir.join(TRASH);
        create_private_dir_all(&trash).map_err(ProcessError::io("creating", &trash))?;
        let target = trash.join(format!(
            "volume-{name}.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let dir = self.dir(name);
        std::fs::rename(&dir, &target).map_err(ProcessError::io("moving to the trash", &dir))?;
        remove_tree(&target)
    }

    /// Persistent volume name -> the instances that mount it, ordered by id.
    fn users(&self) -> Result<BTreeMap<String, Vec<InstanceId>>, ProcessError> {
        let root = self.state_dir.join(INSTANCES);
        let entries = match std::fs::read_dir(&root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(ProcessError::io("listing", &root)(e)),
        };
        let mut users: BTreeMap<String, Vec<InstanceId>> = BTreeMap::new();
        for entry in entries.filter_map(Result::ok) {
            let paths = InstancePaths::new(entry.path());
            match read_json::<Meta>(&paths.meta()) {
                Ok(Some(meta)) => {
                    for v in meta.persistent_volumes {
                        users.entry(v).or_default().push(meta.id.clone());
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(
                    "{} is unreadable ({e}); its volumes are not counted as in use",
                    paths.meta().display()
                ),
            }
        }
        for ids in users.values_mut() {
            ids.sort();
        }
        Ok(users)
    }

    /// Volumes left half-built (by a starter that died) for longer than
    /// [`ABANDONED_AFTER`].
    pub(crate) fn abandoned(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(self.root()) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with(BUILDING))
            .filter(|e| {
                e.metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| t.elapsed().ok())
                    .is_some_and(|age| age > ABANDONED_AFTER)
            })
            .map(|e| e.path())
            .collect()
    }

    /// Takes `volumes.lock` (shared or exclusive), polling so the runtime is never blocked.
    pub(crate) async fn lock(&self, exclusive: bool) -> Result<std::fs::File, ProcessError> {
        use rustix::fs::{FlockOperation, flock};
        create_private_dir_all(self.state_dir)
            .map_err(ProcessError::io("creating", self.state_dir))?;
        let path = self.state_dir.join(VOLUMES_LOCK);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(ProcessError::io("opening", &path))?;
        let op = if exclusive {
            FlockOperation::NonBlockingLockExclusive
        } else {
            FlockOperation::NonBlockingLockShared
        };
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match flock(&file, op) {
                Ok(()) => return Ok(file),
                Err(rustix::io::Errno::WOULDBLOCK | rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ProcessError::io("locking", &path)(e.into())),
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ProcessError::Timeout {
                    what: format!("the lock on {}", path.display()),
                    after: LOCK_WAIT,
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// Whether a failed rename means the destination was created meanwhile.
fn is_taken(errno: i32) -> bool {
    errno == rustix::io::Errno::EXIST.raw_os_error()
        || errno == rustix::io::Errno::NOTEMPTY.raw_os_error()
}

/// Deletes a directory tree that a server filled: directories it made unwritable are made
/// writable again first.
pub(crate) fn remove_tree(dir: &Path) -> Result<(), ProcessError> {
    if std::fs::remove_dir_all(dir).is_ok() {
        return Ok(());
    }
    make_writable(dir);
    std::fs::remove_dir_all(dir).map_err(ProcessError::io("deleting", dir))
}

fn make_writable(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                make_writable(&entry.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(server: &str, volumes: Vec<VolumeSpec>) -> McpServer {
        McpServer {
            volumes,
            ..McpServer::command(server, "/bin/true", Vec::<String>::new())
        }
    }

    #[test]
    fn mount_paths_that_cannot_work_are_refused_naming_the_field() {
        let state = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(state.path());
        let file = state.path().join("a-file");
        std::fs::write(&file, "x").unwrap();
        let cases = [
            ("/", "over /"),
            (state.path().to_str().unwrap(), "would hide"),
            (
                state.path().parent().unwrap().to_str().unwrap(),
                "would hide",
            ),
            (file.to_str().unwrap(), "is not a directory"),
        ];
        for (path, says) in cases {
            let s = spec(
                "s",
                vec![
                    VolumeSpec::new("ok", "1Mi", "/data").unwrap(),
                    VolumeSpec::new("bad", "1Mi", path).unwrap(),
                ],
            );
            let e = store.check_mount_paths(&s).unwrap_err();
            assert!(
                e.has_path("volumes[1].mountPath") && e.to_string().contains(says),
                "{path}: {e}"
            );
        }
        let usable = spec("s", vec![VolumeSpec::new("d", "1Mi", "/srv/x/y").unwrap()]);
        assert!(store.check_mount_paths(&usable).is_ok());
    }

    #[test]
    fn persistent_volumes_are_created_once_and_listed_with_their_users() {
        let state = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(state.path());
        let keep = VolumeSpec::new("keep", "16Mi", "/keep")
            .unwrap()
            .persistent();
        let (name, data, new) = store.ensure("srv", &keep).unwrap();
        assert_eq!((name.as_str(), new), ("mcp-srv-keep", true));
        std::fs::write(data.join("f"), "x").unwrap();
        // A second start finds the same volume and its data.
        let (again, data2, new) = store.ensure("srv", &keep).unwrap();
        assert_eq!(
            (again.as_str(), data2.join("f").exists(), new),
            ("mcp-srv-keep", true, false)
        );
        let listed = store.list(None).unwrap();
        assert_eq!(listed.len(), 1);
        let v = &listed[0];
        assert_eq!(
            (
                v.server.as_str(),
                v.volume.as_str(),
                v.size.as_ref().map(ToString::to_string)
            ),
            ("srv", "keep", Some("16Mi".to_owned()))
        );
        assert!(v.in_use_by.is_empty() && v.created_at.is_some());
        assert!(store.list(Some("other")).unwrap().is_empty());
        // An instance whose meta names it uses it; removal is refused naming it.
        let inst = state.path().join(INSTANCES).join("mcp-srv-1");
        std::fs::create_dir_all(&inst).unwrap();
        let meta = serde_json::json!({
            "id": "mcp-srv-1", "server": "srv", "labels": {}, "createdAt": "2024-01-01T00:00:00Z",
            "persistentVolumes": ["mcp-srv-keep"],
            "launch": {"program": "/bin/true", "args": [], "cwd": "/", "transport": "stdio",
                "restartPolicy": "Never", "backoffInitialMs": 10, "backoffMaxMs": 100}
        });
        std::fs::write(inst.join("meta.json"), meta.to_string()).unwrap();
        assert_eq!(
            store.list(Some("srv")).unwrap()[0].in_use_by,
            [InstanceId::new("mcp-srv-1")]
        );
        assert!(matches!(
            store.remove("mcp-srv-keep"),
            Err(ProcessError::VolumeInUse { users, .. }) if users == [InstanceId::new("mcp-srv-1")]
        ));
        std::fs::remove_dir_all(&inst).unwrap();
        // A read-only directory the server left behind does not stop the removal.
        let locked = data.join("locked");
        std::fs::create_dir(&locked).unwrap();
        std::fs::write(locked.join("f"), "x").unwrap();
        std::fs::set_permissions(
            &locked,
            <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o500),
        )
        .unwrap();
        store.remove("mcp-srv-keep").unwrap();
        assert!(store.list(None).unwrap().is_empty());
        assert!(matches!(
            store.remove("mcp-srv-keep"),
            Err(ProcessError::VolumeNotFound(_))
        ));
    }

    #[test]
    fn concurrent_creations_share_one_volume() {
        let state = tempfile::tempdir().unwrap();
        let keep = VolumeSpec::new("keep", "16Mi", "/keep")
            .unwrap()
            .persistent();
        let made: Vec<(PathBuf, bool)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    s.spawn(|| {
                        let (_, dir, new) =
                            VolumeStore::new(state.path()).ensure("srv", &keep).unwrap();
                        (dir, new)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(made.windows(2).all(|w| w[0].0 == w[1].0), "{made:?}");
        assert_eq!(
            made.iter().filter(|m| m.1).count(),
            1,
            "one creator: {made:?}"
        );
        let names: Vec<String> = std::fs::read_dir(state.path().join(VOLUMES))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            ["mcp-srv-keep"],
            "half-built volumes were left behind"
        );
    }

    #[test]
    fn a_name_taken_by_another_server_is_refused() {
        let state = tempfile::tempdir().unwrap();
        let store = VolumeStore::new(state.path());
        let keep = VolumeSpec::new("keep", "16Mi", "/keep")
            .unwrap()
            .persistent();
        let (name, _, _) = store.ensure("srv", &keep).unwrap();
        let record = VolumeRecord {
            server: "other".into(),
            volume: "keep".into(),
            size: keep.size.clone(),
            created_at: Timestamp::now(),
        };
        write_json(&store.dir(&name).join("volume.json"), &record).unwrap();
        assert!(matches!(
            store.ensure("srv", &keep),
            Err(ProcessError::VolumeTaken { owner, .. }) if owner == "other"
        ));
    }
}
