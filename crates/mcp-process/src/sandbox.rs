//! The namespaces a server runs in, set up by its supervisor before the supervisor starts its
//! async runtime (a process must be single-threaded to create a user namespace), so that every
//! run of the server (restarts included) inherits them, and no `unsafe` `pre_exec` is needed.
//!
//! | what the spec asks | namespaces | set up |
//! |---|---|---|
//! | volumes | user + mount | each volume's directory bind-mounted at its `mountPath` |
//! | `egress: none` | user + network | only `lo`, brought up |
//!
//! Everything is unprivileged: a user namespace that maps the caller's uid and gid to
//! themselves (so files the server writes belong to the caller, and the server holds no
//! capability once it `exec`s), which grants the mount and network privileges inside it.
//!
//! A mount path that exists as a directory is mounted over. A missing one has to be created,
//! and a directory the caller does not own (`/`, `/srv`) cannot take new entries. So the
//! deepest existing ancestor is *shadowed*: a tmpfs mounted over it receives a bind mount of
//! every original entry (a symlink is copied), and the missing directories are created in
//! the tmpfs. The root itself cannot be mounted over; for it the tmpfs becomes the new root
//! (`pivot_root`) with the host's top-level entries bound into it. The host's file system
//! is never changed; the server sees the host's files everywhere, its volumes at their mount
//! paths, and new entries it creates directly in a shadowed directory are lost with it.
//!
//! The supervisor reports a refusal on its stdout instead of `ready` ([`REFUSED`] and a
//! [`Refusal`] as JSON); the starter turns it into `NotSupported` (no user namespaces here) or
//! `InvalidSpec` naming `volumes[i].mountPath` (that path cannot be mounted).

mod loopback;
mod mounts;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The word that starts the supervisor's refusal line (followed by a [`Refusal`] as JSON).
pub(crate) const REFUSED: &str = "refused";

/// What the supervisor sets up before it starts the server (`meta.json`, in `launch`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Sandbox {
    /// A network namespace of the server's own, with only loopback (`egress: none`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) isolate_network: bool,
    /// Bind mounts, made in this order (a mount path before those below it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) mounts: Vec<BindMount>,
}

/// One volume: a host directory mounted at a path the server sees.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BindMount {
    /// The volume's directory on the host.
    pub(crate) source: PathBuf,
    /// Where the server sees it (`mountPath`, absolute).
    pub(crate) target: PathBuf,
    /// Mounted read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) read_only: bool,
    /// The spec field it comes from (`volumes[0].mountPath`), for errors.
    pub(crate) field: String,
}

/// Why the supervisor could not set the sandbox up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Refusal {
    /// What kind of failure.
    pub(crate) kind: RefusalKind,
    /// The spec field at fault, for [`RefusalKind::InvalidSpec`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) field: Option<String>,
    /// What happened and what to do instead.
    pub(crate) message: String,
}

/// The kinds of [`Refusal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum RefusalKind {
    /// This host does not let an unprivileged process create the namespaces.
    Unsupported,
    /// A field of the spec cannot be honoured (a mount path that cannot be mounted).
    InvalidSpec,
    /// Anything else.
    Failed,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{field}: {}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl Refusal {
    fn failed(message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::Failed,
            field: None,
            message: message.into(),
        }
    }

    fn invalid(field: &str, message: impl Into<String>) -> Self {
        Self {
            kind: RefusalKind::InvalidSpec,
            field: Some(field.to_owned()),
            message: message.into(),
        }
    }

    /// The line the supervisor prints instead of `ready`.
    pub(crate) fn to_line(&self) -> String {
        let json = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"kind":"failed","message":"unencodable refusal"}"#.into());
        format!("{REFUSED} {json}")
    }

    /// Reads a line printed by [`Refusal::to_line`]; `None` for any other line.
    pub(crate) fn from_line(line: &str) -> Option<Self> {
        let json = line.trim_end().strip_prefix(REFUSED)?.strip_prefix(' ')?;
        serde_json::from_str(json).ok()
    }
}

impl Sandbox {
    /// Whether there is anything to set up.
    pub(crate) fn is_needed(&self) -> bool {
        self.isolate_network || !self.mounts.is_empty()
    }

    /// What needs the namespaces, for messages: `volumes`, `egress: none`, or both.
    fn purpose(&self) -> &'static str {
        match (self.mounts.is_empty(), self.isolate_network) {
            (false, true) => "volumes and `egress: none` need",
            (false, false) => "volumes need",
            (true, _) => "`egress: none` needs",
        }
    }

    /// Moves the calling process into new namespaces as planned: user (always), mount (with
    /// volumes), network (with `egress: none`). `work` (created here) is a private directory
    /// for staging, in the instance directory. The process must be single-threaded.
    ///
    /// # Errors
    /// A [`Refusal`] saying what could not be set up.
    pub(crate) fn enter(&self, work: &Path) -> Result<(), Refusal> {
        use rustix::thread::UnshareFlags;
        if !self.mounts.is_empty() {
            crate::files::create_private_dir_all(work)
                .map_err(|e| Refusal::failed(format!("creating {}: {e}", work.display())))?;
        }
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let mut flags = UnshareFlags::NEWUSER;
        if !self.mounts.is_empty() {
            flags |= UnshareFlags::NEWNS;
        }
        if self.isolate_network {
            flags |= UnshareFlags::NEWNET;
        }
        // Deprecated because `FILES` can invalidate descriptors other threads hold; these flags
        // do not touch descriptors, and the supervisor has no other thread yet.
        #[allow(deprecated)]
        rustix::thread::unshare(flags).map_err(|e| self.unsupported(&format!("unshare: {e}")))?;
        map_ids(uid, gid).map_err(|e| self.unsupported(&e))?;
        if !self.mounts.is_empty() {
            // Mounts made here must never propagate back to the host. This is also the first
            // use of the namespace's privileges: a host that grants the namespace but not its
            // privileges (an AppArmor restriction) fails here.
            mounts::make_private().map_err(|e| self.unsupported(&e))?;
            mounts::Mounter::new(work).place_all(&self.mounts)?;
        }
        if self.isolate_network {
            loopback::bring_up().map_err(|e| {
                if e.denied {
                    self.unsupported(&e.message)
                } else {
                    Refusal::failed(format!("bringing up the loopback interface: {}", e.message))
                }
            })?;
        }
        Ok(())
    }

    /// The refusal for a host without (usable) unprivileged user namespaces.
    fn unsupported(&self, cause: &str) -> Refusal {
        let mut why = cause.to_owned();
        if let Some(setting) = userns_setting(Path::new("/proc/sys")) {
            why = format!("{why}; {setting}");
        }
        Refusal {
            kind: RefusalKind::Unsupported,
            field: None,
            message: format!(
                "{} an unprivileged user namespace, which this host refuses ({why}); allow them \
                 (sysctl user.max_user_namespaces, kernel.unprivileged_userns_clone, AppArmor's \
                 kernel.apparmor_restrict_unprivileged_userns) or use the docker or kubernetes \
                 backend",
                self.purpose()
            ),
        }
    }
}

/// Maps the caller's uid and gid to themselves in the new user namespace (`setgroups` must be
/// denied before an unprivileged process may write `gid_map`).
fn map_ids(uid: u32, gid: u32) -> Result<(), String> {
    let write = |file: &str, text: String| {
        std::fs::write(format!("/proc/self/{file}"), text)
            .map_err(|e| format!("writing /proc/self/{file}: {e}"))
    };
    write("setgroups", "deny".into())?;
    write("uid_map", format!("{uid} {uid} 1\n"))?;
    write("gid_map", format!("{gid} {gid} 1\n"))
}

/// The setting that disables unprivileged user namespaces on this host, if one does: read
/// under `proc_sys` (`/proc/sys`).
pub(crate) fn userns_setting(proc_sys: &Path) -> Option<String> {
    let read = |file: &str| {
        std::fs::read_to_string(proc_sys.join(file))
            .ok()
            .map(|v| v.trim().to_owned())
    };
    [
        ("kernel/unprivileged_userns_clone", "0"),
        ("user/max_user_namespaces", "0"),
        ("kernel/apparmor_restrict_unprivileged_userns", "1"),
    ]
    .into_iter()
    .find(|(file, off)| read(file).as_deref() == Some(*off))
    .map(|(file, off)| format!("{} is {off}", file.replace('/', ".")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_lines_round_trip() {
        let r = Refusal::invalid("volumes[1].mountPath", "/etc/hosts is not a directory");
        let line = r.to_line();
        assert!(line.starts_with("refused {"), "{line}");
        assert_eq!(Refusal::from_line(&format!("{line}\n")), Some(r.clone()));
        assert_eq!(
            r.to_string(),
            "volumes[1].mountPath: /etc/hosts is not a directory"
        );
        assert_eq!(Refusal::from_line("ready"), None);
        assert_eq!(Refusal::from_line("refused nonsense"), None);
    }

    #[test]
    fn the_setting_that_disables_user_namespaces_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let proc_sys = dir.path();
        std::fs::create_dir_all(proc_sys.join("kernel")).unwrap();
        std::fs::create_dir_all(proc_sys.join("user")).unwrap();
        assert_eq!(userns_setting(proc_sys), None);
        std::fs::write(proc_sys.join("user/max_user_namespaces"), "15000\n").unwrap();
        std::fs::write(proc_sys.join("kernel/unprivileged_userns_clone"), "1\n").unwrap();
        assert_eq!(userns_setting(proc_sys), None);
        std::fs::write(proc_sys.join("user/max_user_namespaces"), "0\n").unwrap();
        assert_eq!(
            userns_setting(proc_sys).as_deref(),
            Some("user.max_user_namespaces is 0")
        );
        std::fs::write(proc_sys.join("kernel/unprivileged_userns_clone"), "0\n").unwrap();
        assert_eq!(
            userns_setting(proc_sys).as_deref(),
            Some("kernel.unprivileged_userns_clone is 0")
        );
    }

    #[test]
    fn refusals_name_what_needs_the_namespace_and_the_way_out() {
        let both = Sandbox {
            isolate_network: true,
            mounts: vec![BindMount {
                source: "/s".into(),
                target: "/data".into(),
                read_only: false,
                field: "volumes[0].mountPath".into(),
            }],
        };
        let r = both.unsupported("unshare: Operation not permitted");
        assert_eq!(r.kind, RefusalKind::Unsupported);
        assert!(
            r.message
                .starts_with("volumes and `egress: none` need an unprivileged user namespace")
                && r.message.contains("unshare: Operation not permitted")
                && r.message.contains("docker or kubernetes backend"),
            "{}",
            r.message
        );
        let net = Sandbox {
            isolate_network: true,
            mounts: Vec::new(),
        };
        assert!(
            net.is_needed()
                && net
                    .unsupported("x")
                    .message
                    .starts_with("`egress: none` needs")
        );
        assert!(!Sandbox::default().is_needed());
    }
}
