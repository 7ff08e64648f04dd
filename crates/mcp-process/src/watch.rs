//! `watch` for the process backend: the state directory is the source of truth, so a watch
//! lists it (the shared `watch_by_listing` diffs each listing against what the caller was told)
//! whenever something in it changes, whoever changed it (this process, a later CLI, another
//! program, a supervisor recording an exit).
//!
//! | what happens | how the watch notices |
//! |---|---|
//! | an instance directory appears or is renamed to `trash/` (start, stop) | a notification on `<state>/instances` |
//! | a supervisor or stopper replaces `state.json`, `supervisor.json`, `meta.json`, writes `stop.json` | a notification inside the instance directory (the watch is recursive) |
//! | a supervisor dies (kill -9: the instance becomes `Orphaned` without any file changing) | the periodic rescan ([`RESCAN`]) |
//! | the inotify queue overflowed, or the notifier was restarted | the rescan after it: a full listing resyncs |
//!
//! Notifications come from the `notify` crate (inotify on Linux, on its own thread), which
//! adds watches for new instance directories as they appear. A change made before a directory
//! was watched is in the listing that follows; one after it wakes the next listing, so there
//! is no gap. Log appends are not watched: they do not change an instance's status.
//!
//! Disappearing engine: there is none; a state directory that cannot be read is an error item
//! after the shared reconnect window (`DEFAULT_RECONNECT_WINDOW`) of failed rescans.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mcp_orchestrator_api::watch::{
    DEFAULT_RECONNECT_WINDOW, InstanceEvents, ReconnectBudget, watch_by_listing,
};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::InstanceFilters;
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::watch as signal;

use crate::config::ProcessConfig;
use crate::error::{BACKEND, ProcessError};
use crate::files::create_private_dir_all;
use crate::layout::INSTANCES;
use crate::status;

/// The safety net: a full listing at least this often, for changes no file records.
pub const RESCAN: Duration = Duration::from_secs(2);
/// How long a restarted notifier stays down (see [`WatchBreaker`]).
const OUTAGE: Duration = Duration::from_millis(300);

/// Restarts the inotify notifier of every open watch of one orchestrator: the watch loses its
/// notifications for a moment and resyncs with a full listing, the path it takes after a
/// queue overflow. The conformance kit's forced reconnect uses it.
#[derive(Debug, Clone)]
pub struct WatchBreaker(Arc<signal::Sender<u64>>);

impl Default for WatchBreaker {
    fn default() -> Self {
        Self(Arc::new(signal::channel(0).0))
    }
}

impl WatchBreaker {
    /// Restarts the notifier of every watch open now.
    pub fn break_watches(&self) {
        self.0.send_modify(|v| *v += 1);
    }
}

/// A recursive watch of the instances directory; each notification (or notifier error, such
/// as a queue overflow) bumps `changes`. Dropping it stops the notifier's thread.
struct Notifier {
    _watcher: RecommendedWatcher,
    changes: signal::Receiver<u64>,
}

impl Notifier {
    fn new(root: &Path) -> notify::Result<Self> {
        let (tx, changes) = signal::channel(0u64);
        // Any event but log output, and any error (an overflowed queue included), means
        // "list again".
        let mut watcher = RecommendedWatcher::new(
            move |event: notify::Result<notify::Event>| {
                if !event.as_ref().is_ok_and(is_log_output) {
                    tx.send_modify(|v| *v += 1);
                }
            },
            notify::Config::default(),
        )?;
        watcher.watch(root, RecursiveMode::Recursive)?;
        Ok(Self {
            _watcher: watcher,
            changes,
        })
    }
}

/// Lines written to (or rotated in) the logs, which never change a status: not worth a
/// listing per line of a chatty server.
fn is_log_output(event: &notify::Event) -> bool {
    matches!(
        event.kind,
        notify::EventKind::Access(_) | notify::EventKind::Modify(_)
    ) && !event.paths.is_empty()
        && event.paths.iter().all(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(crate::layout::LOG_FILE) || n == "supervisor.log")
        })
}

struct Wake {
    root: PathBuf,
    notifier: Option<Notifier>,
    rescan: tokio::time::Interval,
    breaks: signal::Receiver<u64>,
}

impl Wake {
    /// The next reason to list again. A notifier that cannot be (re)created leaves the rescan
    /// alone to wake the watch until the next attempt.
    async fn next(&mut self) {
        if self.notifier.is_none() {
            self.notifier = Notifier::new(&self.root).ok();
        }
        let changed = async {
            match &mut self.notifier {
                Some(n) => n.changes.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            alive = changed => {
                if !alive {
                    self.notifier = None;
                }
            }
            _ = self.rescan.tick() => {}
            _ = self.breaks.changed() => {
                self.notifier = None;
                tokio::time::sleep(OUTAGE).await;
            }
        }
    }
}

/// The watch stream over `state_dir` (filters already validated).
pub(crate) fn watch(
    state_dir: &Path,
    config: &ProcessConfig,
    filters: &InstanceFilters,
    breaker: &WatchBreaker,
) -> Result<InstanceEvents> {
    let root = state_dir.join(INSTANCES);
    // Watching needs the directory; it is the one `start` creates first anyway.
    create_private_dir_all(&root).map_err(ProcessError::io("creating", &root))?;
    let notifier = Notifier::new(&root).map_err(|e| {
        OrchestratorError::unavailable(
            BACKEND,
            format!("cannot watch {} for changes: {e}", root.display()),
            Some(Box::new(e)),
        )
    })?;
    let mut rescan = tokio::time::interval(RESCAN);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let wake = Wake {
        root,
        notifier: Some(notifier),
        rescan,
        breaks: breaker.0.subscribe(),
    };
    let wakes = futures::stream::unfold(wake, |mut w| async move {
        w.next().await;
        Some(((), w))
    })
    .boxed();
    let state_dir = state_dir.to_owned();
    let config = config.clone();
    let list = move || {
        let state_dir = state_dir.clone();
        let config = config.clone();
        async move {
            status::list(&state_dir, &config, &InstanceFilters::default()).map(|page| page.items)
        }
    };
    Ok(watch_by_listing(
        filters,
        list,
        wakes,
        ReconnectBudget::new(DEFAULT_RECONNECT_WINDOW),
    ))
}
