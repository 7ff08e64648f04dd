//! Volumes at any absolute mount path, in an unprivileged mount namespace: an existing
//! directory is mounted over; a missing one is created in a tmpfs that *shadows* its deepest
//! existing ancestor (every original entry bound back into it), or, when that ancestor is
//! `/`, in a new root made of the host's top-level entries (`pivot_root`). See the table in
//! the parent module.

use std::ffi::CString;
use std::os::unix::fs::{MetadataExt, symlink};
use std::path::{Component, Path, PathBuf};

use rustix::fs::StatVfsMountFlags;
use rustix::mount::{MountFlags, MountPropagationFlags, UnmountFlags};

use super::{BindMount, Refusal};

/// Where `pivot_root` puts the old root, inside the new one, until it is detached.
const OLD_ROOT: &str = ".mcp-old-root";

/// Makes every mount of the new namespace private, so nothing done here reaches the host.
pub(super) fn make_private() -> Result<(), String> {
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )
    .map_err(|e| format!("making the mounts private: {e}"))
}

/// Places the volumes, remembering which directories it may create entries in.
pub(super) struct Mounter<'a> {
    /// An empty private directory for staging.
    work: &'a Path,
    /// Directories whose entries are all ours: tmpfs roots and the directories made in them.
    ours: Vec<PathBuf>,
    /// Volumes mounted so far: everything below them is volume storage.
    volumes: Vec<PathBuf>,
    /// Staging directories used so far.
    stashes: usize,
}

impl<'a> Mounter<'a> {
    pub(super) fn new(work: &'a Path) -> Self {
        Self {
            work,
            ours: Vec::new(),
            volumes: Vec::new(),
            stashes: 0,
        }
    }

    /// Mounts every volume, in order.
    pub(super) fn place_all(mut self, mounts: &[BindMount]) -> Result<(), Refusal> {
        for m in mounts {
            self.place(m)?;
        }
        Ok(())
    }

    fn place(&mut self, m: &BindMount) -> Result<(), Refusal> {
        let field = m.field.as_str();
        let target = normalize(&m.target);
        match std::fs::metadata(&target) {
            Ok(md) if md.is_dir() => {}
            Ok(_) => {
                return Err(Refusal::invalid(
                    field,
                    format!("{} exists and is not a directory", target.display()),
                ));
            }
            // Missing, or a file on the way (named by the next step).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                self.make_mount_point(&target, field)?;
            }
            Err(e) => {
                return Err(Refusal::invalid(
                    field,
                    format!("{}: {e}", target.display()),
                ));
            }
        }
        let target = std::fs::canonicalize(&target)
            .map_err(|e| Refusal::invalid(field, format!("{}: {e}", target.display())))?;
        let refused = |doing: &str, e: rustix::io::Errno| {
            Refusal::invalid(
                field,
                format!("cannot {doing} the volume at {}: {e}", target.display()),
            )
        };
        rustix::mount::mount_bind(&m.source, &target).map_err(|e| refused("mount", e))?;
        if m.read_only {
            remount_read_only(&target, &m.source).map_err(|e| refused("make read-only", e))?;
        }
        self.volumes.push(target);
        Ok(())
    }

    /// Whether new entries of `dir` change nothing outside the namespace.
    fn is_ours(&self, dir: &Path) -> bool {
        self.ours.iter().any(|d| d == dir) || self.volumes.iter().any(|v| dir.starts_with(v))
    }

    /// Creates the missing directories of `target` without touching the host's files.
    fn make_mount_point(&mut self, target: &Path, field: &str) -> Result<(), Refusal> {
        let existing = target
            .ancestors()
            .skip(1)
            .find(|a| a.exists())
            .unwrap_or(Path::new("/"));
        let invalid = |message: String| Refusal::invalid(field, message);
        if !existing.is_dir() {
            return Err(invalid(format!(
                "{} is not a directory",
                existing.display()
            )));
        }
        let base = std::fs::canonicalize(existing)
            .map_err(|e| invalid(format!("{}: {e}", existing.display())))?;
        let rest = target.strip_prefix(existing).unwrap_or(target);
        if !self.is_ours(&base) {
            self.shadow(&base).map_err(|e| {
                invalid(format!(
                    "cannot create the mount point {} under {}: {e}",
                    target.display(),
                    base.display()
                ))
            })?;
        }
        let mut dir = base;
        for part in rest.components() {
            dir.push(part);
            match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(invalid(format!("creating {}: {e}", dir.display()))),
            }
            self.ours.push(dir.clone());
        }
        Ok(())
    }

    /// Mounts a tmpfs over `dir` holding bind mounts of its original entries.
    fn shadow(&mut self, dir: &Path) -> Result<(), String> {
        if dir == Path::new("/") {
            return self.new_root();
        }
        let mode = std::fs::metadata(dir)
            .map_err(|e| format!("reading {}: {e}", dir.display()))?
            .mode()
            & 0o7777;
        self.stashes += 1;
        let stash = self.work.join(format!("stash-{}", self.stashes));
        std::fs::create_dir(&stash).map_err(|e| format!("creating {}: {e}", stash.display()))?;
        rustix::mount::mount_bind_recursive(dir, &stash)
            .map_err(|e| format!("binding {}: {e}", dir.display()))?;
        mount_tmpfs(dir, mode)?;
        populate(&stash, dir)?;
        // The originals stay reachable through the bind mounts just made; the stash is only
        // in the way. A failure leaves it mounted in this namespace alone, which is harmless.
        let _ = rustix::mount::unmount(&stash, UnmountFlags::DETACH);
        let _ = std::fs::remove_dir(&stash);
        self.ours.push(dir.to_path_buf());
        Ok(())
    }

    /// Replaces the root with a tmpfs holding bind mounts of the host's top-level entries.
    /// Every path (the instance directory, the volumes' sources, what was mounted before)
    /// means the same in the new root.
    fn new_root(&mut self) -> Result<(), String> {
        let root = self.work.join("root");
        std::fs::create_dir(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        mount_tmpfs(&root, 0o755)?;
        // Left out of the recursive binds of the host's directories, one of which holds it.
        rustix::mount::mount_change(&root, MountPropagationFlags::UNBINDABLE)
            .map_err(|e| format!("making {} unbindable: {e}", root.display()))?;
        populate(Path::new("/"), &root)?;
        let old = root.join(OLD_ROOT);
        std::fs::create_dir(&old).map_err(|e| format!("creating {}: {e}", old.display()))?;
        rustix::process::pivot_root(&root, &old).map_err(|e| format!("pivot_root: {e}"))?;
        std::env::set_current_dir("/").map_err(|e| format!("cd /: {e}"))?;
        let old = Path::new("/").join(OLD_ROOT);
        rustix::mount::unmount(&old, UnmountFlags::DETACH)
            .map_err(|e| format!("detaching the old root: {e}"))?;
        let _ = std::fs::remove_dir(&old);
        self.ours.push(PathBuf::from("/"));
        Ok(())
    }
}

/// Creates, in `to`, a placeholder for every entry of `from` and binds the entry onto it
/// (recursively, so mounts below come along); symlinks are copied.
fn populate(from: &Path, to: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(from).map_err(|e| format!("listing {}: {e}", from.display()))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("listing {}: {e}", from.display()))?;
        let name = entry.file_name();
        let (src, dst) = (from.join(&name), to.join(&name));
        let kind = entry
            .file_type()
            .map_err(|e| format!("reading {}: {e}", src.display()))?;
        if kind.is_symlink() {
            let link =
                std::fs::read_link(&src).map_err(|e| format!("reading {}: {e}", src.display()))?;
            symlink(&link, &dst).map_err(|e| format!("creating {}: {e}", dst.display()))?;
            continue;
        }
        let placed = if kind.is_dir() {
            std::fs::create_dir(&dst)
        } else {
            std::fs::File::create(&dst).map(drop)
        };
        placed.map_err(|e| format!("creating {}: {e}", dst.display()))?;
        rustix::mount::mount_bind_recursive(&src, &dst)
            .map_err(|e| format!("binding {}: {e}", src.display()))?;
    }
    Ok(())
}

fn mount_tmpfs(dir: &Path, mode: u32) -> Result<(), String> {
    let data = CString::new(format!("mode={mode:o}")).map_err(|e| e.to_string())?;
    rustix::mount::mount(
        "tmpfs",
        dir,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        Some(data.as_c_str()),
    )
    .map_err(|e| format!("mounting a tmpfs on {}: {e}", dir.display()))
}

/// Makes the bind mount at `target` read-only. Inside a user namespace a remount must keep the
/// flags the source's mount has (they are locked), so those are passed along.
fn remount_read_only(target: &Path, source: &Path) -> rustix::io::Result<()> {
    let locked = rustix::fs::statvfs(source)?.f_flag;
    let mut flags = MountFlags::BIND | MountFlags::RDONLY;
    for (st, ms) in [
        (StatVfsMountFlags::NOSUID, MountFlags::NOSUID),
        (StatVfsMountFlags::NODEV, MountFlags::NODEV),
        (StatVfsMountFlags::NOEXEC, MountFlags::NOEXEC),
        (StatVfsMountFlags::NOATIME, MountFlags::NOATIME),
        (StatVfsMountFlags::NODIRATIME, MountFlags::NODIRATIME),
        (StatVfsMountFlags::RELATIME, MountFlags::RELATIME),
    ] {
        if locked.contains(st) {
            flags |= ms;
        }
    }
    rustix::mount::mount_remount(target, flags, "")
}

/// `path` without `.` components or repeated separators.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalized_paths() {
        assert_eq!(normalize(Path::new("/a//b/./c/")), PathBuf::from("/a/b/c"));
        assert_eq!(normalize(Path::new("/")), PathBuf::from("/"));
    }

    #[test]
    fn entries_below_volumes_and_tmpfs_roots_are_ours() {
        let work = Path::new("/w");
        let mut m = Mounter::new(work);
        m.ours.push("/".into());
        m.ours.push("/data".into());
        m.volumes.push("/data/keep".into());
        assert!(m.is_ours(Path::new("/")));
        assert!(m.is_ours(Path::new("/data")));
        assert!(m.is_ours(Path::new("/data/keep/sub")));
        // A host directory bound into a tmpfs root is not.
        assert!(!m.is_ours(Path::new("/home")));
        assert!(!m.is_ours(Path::new("/data/other")));
    }
}
