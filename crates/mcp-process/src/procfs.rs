//! Process identity that survives pid reuse (a pid plus the start time from `/proc/<pid>/stat`),
//! and signalling helpers that check that identity before they send anything.

use std::io;

use rustix::process::{Pid, Signal};
use serde::{Deserialize, Serialize};

/// One process, identified so that a recycled pid is never mistaken for it: the pid and the
/// process's start time (field 22 of `/proc/<pid>/stat`, clock ticks since boot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcIdentity {
    /// The process id.
    pub pid: i32,
    /// Start time in clock ticks since boot.
    pub start_time: u64,
}

/// The fields of `/proc/<pid>/stat` this crate uses.
#[derive(Debug, Clone, Copy)]
struct Stat {
    /// One-letter state (`R`, `S`, `Z`, ...).
    state: char,
    /// Parent process id.
    ppid: i32,
    /// Process group id.
    pgrp: i32,
    /// Start time in clock ticks since boot.
    start_time: u64,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may itself contain spaces and ')'.
    let rest = text.get(text.rfind(')')? + 1..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `fields[0]` is field 3 (state), so field N is `fields[N - 3]`.
    Some(Stat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_time: fields.get(19)?.parse().ok()?,
    })
}

fn is_dead(state: char) -> bool {
    // Zombies have exited and only wait to be reaped; `X` is the instant of reaping.
    matches!(state, 'Z' | 'X' | 'x')
}

impl ProcIdentity {
    /// The identity of the process that has `pid` now, if it exists.
    pub fn of(pid: u32) -> Option<Self> {
        let pid = i32::try_from(pid).ok()?;
        read_stat(pid).map(|s| Self {
            pid,
            start_time: s.start_time,
        })
    }

    /// Whether this very process still runs (same pid and start time, not a zombie).
    pub fn is_alive(&self) -> bool {
        read_stat(self.pid).is_some_and(|s| s.start_time == self.start_time && !is_dead(s.state))
    }

    /// Whether this process, or any member of the process group it leads, still runs.
    ///
    /// When the leader is gone its group id cannot be handed to a new process while members
    /// remain, so members found under the same group id that started no earlier than the
    /// leader are the leader's; a different process now owning the pid proves the old group
    /// gone.
    pub fn group_alive(&self) -> bool {
        if self.is_alive() {
            return true;
        }
        if let Some(s) = read_stat(self.pid)
            && s.start_time != self.start_time
            && !is_dead(s.state)
            && s.pgrp == self.pid
        {
            // The pid (and so the group id) now belongs to a different process.
            return false;
        }
        group_members(self.pid, self.start_time) > 0
    }

    /// Sends `signal` to this process if it is still this process.
    ///
    /// Returns whether a signal was sent.
    ///
    /// # Errors
    /// The kernel's refusal (for example `EPERM`); a process that vanished is not an error.
    pub(crate) fn signal(&self, signal: Signal) -> io::Result<bool> {
        if !self.is_alive() {
            return Ok(false);
        }
        let Some(pid) = Pid::from_raw(self.pid) else {
            return Ok(false);
        };
        match rustix::process::kill_process(pid, signal) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `signal` to the process group this process leads, if that group still exists
    /// (see [`ProcIdentity::group_alive`]).
    ///
    /// Returns whether a signal was sent.
    ///
    /// # Errors
    /// The kernel's refusal; a group that vanished is not an error.
    pub(crate) fn signal_group(&self, signal: Signal) -> io::Result<bool> {
        if !self.group_alive() {
            return Ok(false);
        }
        let Some(pgid) = Pid::from_raw(self.pid) else {
            return Ok(false);
        };
        match rustix::process::kill_process_group(pgid, signal) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::SRCH) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// How many live processes are in group `pgid` and started at or after `not_before`.
fn group_members(pgid: i32, not_before: u64) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(read_stat)
        .filter(|s| s.pgrp == pgid && s.start_time >= not_before && !is_dead(s.state))
        .count()
}

/// One process found under another in the process tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descendant {
    /// Who it is.
    pub(crate) identity: ProcIdentity,
    /// Its parent's pid.
    pub(crate) ppid: i32,
    /// Whether it has exited and waits to be reaped (a zombie).
    pub(crate) dead: bool,
}

/// Every process below `root` in the process tree (children, their children, ...), found
/// through the parent pids in `/proc`, zombies included (marked `dead`).
///
/// A process that left the session or process group of its parent (`setsid`, `setpgid`) is
/// still found as long as its parent chain leads to `root`; when `root` is a child subreaper,
/// orphans below it are reparented to it and so stay in the tree.
pub(crate) fn descendants(root: i32) -> Vec<Descendant> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let all: Vec<(i32, Stat)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| read_stat(pid).map(|s| (pid, s)))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for (pid, stat) in &all {
            if stat.ppid == parent
                && *pid != root
                && !found.iter().any(|d: &Descendant| d.identity.pid == *pid)
            {
                found.push(Descendant {
                    identity: ProcIdentity {
                        pid: *pid,
                        start_time: stat.start_time,
                    },
                    ppid: stat.ppid,
                    dead: is_dead(stat.state),
                });
                frontier.push(*pid);
            }
        }
    }
    found
}

/// The live processes whose working directory is `dir`.
pub(crate) fn with_cwd(dir: &std::path::Path) -> Vec<ProcIdentity> {
    let Ok(dir) = dir.canonicalize() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/cwd")).is_ok_and(|c| c == dir))
        .filter_map(ProcIdentity::of)
        .filter(ProcIdentity::is_alive)
        .collect()
}

/// The identity of the calling process.
#[cfg(test)]
pub(crate) fn current() -> Option<ProcIdentity> {
    ProcIdentity::of(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_identity_is_alive_and_a_changed_start_time_is_not() {
        let me = current().unwrap();
        assert!(me.is_alive());
        let other = ProcIdentity {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(!other.is_alive());
        assert!(!other.signal(Signal::TERM).unwrap());
    }

    #[test]
    fn reaped_child_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcIdentity::of(child.id()).unwrap();
        child.wait().unwrap();
        assert!(!id.is_alive());
        assert!(!id.group_alive());
    }

    #[test]
    fn descendants_include_grandchildren_in_another_session() {
        // sh -> (subshell exits) ; setsid sh -> sleep: the setsid'd shell is reparented to the
        // nearest subreaper or init, so only the direct chain is checked here: sh -> sleep.
        let mut child = std::process::Command::new("sh")
            .args(["-c", "setsid sleep 30 & wait"])
            .spawn()
            .unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let found = loop {
            let found = descendants(me);
            let sleeps = found
                .iter()
                .filter(|d| {
                    std::fs::read_to_string(format!("/proc/{}/comm", d.identity.pid))
                        .is_ok_and(|c| c.trim() == "sleep")
                })
                .count();
            if sleeps == 1 || std::time::Instant::now() > deadline {
                break found;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        let sh = i32::try_from(child.id()).unwrap();
        assert!(found.iter().any(|d| d.identity.pid == sh && d.ppid == me));
        let sleep = found
            .iter()
            .find(|d| d.ppid == sh)
            .expect("the sleep under sh");
        assert!(!sleep.dead);
        sleep.identity.signal(Signal::KILL).unwrap();
        child.wait().unwrap();
        assert!(!sleep.identity.is_alive());
    }

    #[test]
    fn processes_are_found_by_working_directory() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        let id = ProcIdentity::of(child.id()).unwrap();
        assert_eq!(with_cwd(dir.path()), [id]);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(with_cwd(dir.path()).is_empty());
    }

    #[test]
    fn zombie_is_dead() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let id = ProcIdentity::of(child.id()).unwrap();
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while id.is_alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!id.is_alive());
        child.wait().unwrap();
    }
}
