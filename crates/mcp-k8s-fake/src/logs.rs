//! Container logs: the lines of every container instance, each with its timestamp and stream,
//! and a change signal so that `follow=true` readers see new lines as they are written.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;

use crate::time;

/// Which output stream a log line was written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One stored log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogLine {
    pub(crate) time: Timestamp,
    pub(crate) stream: LogStream,
    pub(crate) text: String,
}

#[derive(Debug, Default)]
struct Instance {
    lines: Vec<LogLine>,
    finished: bool,
}

/// What a reader gets from one read.
#[derive(Debug)]
pub(crate) struct LogRead {
    pub(crate) lines: Vec<LogLine>,
    pub(crate) next: usize,
    pub(crate) finished: bool,
}

/// Logs by container id (`containerd://...`), one entry per container instance.
#[derive(Debug)]
pub(crate) struct LogStore {
    instances: Mutex<HashMap<String, Instance>>,
    changed: watch::Sender<u64>,
}

impl Default for LogStore {
    fn default() -> Self {
        Self {
            instances: Mutex::new(HashMap::new()),
            changed: watch::channel(0).0,
        }
    }
}

impl LogStore {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Instance>> {
        self.instances
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Registers a new container instance.
    pub(crate) fn start(&self, container_id: &str) {
        self.lock()
            .insert(container_id.to_owned(), Instance::default());
        self.notify();
    }

    /// Appends `text` (split on newlines) to a running instance; `false` if it is not running.
    pub(crate) fn append(&self, container_id: &str, stream: LogStream, text: &str) -> bool {
        let mut instances = self.lock();
        let Some(instance) = instances.get_mut(container_id).filter(|i| !i.finished) else {
            return false;
        };
        let text = text.strip_suffix('\n').unwrap_or(text);
        let now = time::now();
        for line in text.split('\n') {
            instance.lines.push(LogLine {
                time: now,
                stream,
                text: line.strip_suffix('\r').unwrap_or(line).to_owned(),
            });
        }
        drop(instances);
        self.notify();
        true
    }

    /// Marks an instance as exited: followers stop after its last line.
    pub(crate) fn finish(&self, container_id: &str) {
        if let Some(instance) = self.lock().get_mut(container_id) {
            instance.finished = true;
        }
        self.notify();
    }

    /// Forgets instances (their pod is gone).
    pub(crate) fn remove(&self, container_ids: &[String]) {
        let mut instances = self.lock();
        for id in container_ids {
            instances.remove(id);
        }
        drop(instances);
        self.notify();
    }

    /// Lines from index `from` on; `None` if the instance is unknown (treated as finished).
    pub(crate) fn read(&self, container_id: &str, from: usize) -> Option<LogRead> {
        let instances = self.lock();
        let instance = instances.get(container_id)?;
        let lines = instance.lines.get(from..).unwrap_or_default().to_vec();
        Some(LogRead {
            next: from + lines.len(),
            lines,
            finished: instance.finished,
        })
    }

    /// A receiver that changes whenever any log changes.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_splits_lines_and_stops_after_finish() {
        let logs = LogStore::default();
        assert!(!logs.append("c1", LogStream::Stdout, "nope"));
        logs.start("c1");
        assert!(logs.append("c1", LogStream::Stdout, "a\nb\n"));
        assert!(logs.append("c1", LogStream::Stderr, "c"));
        let read = logs.read("c1", 1).unwrap();
        let texts: Vec<&str> = read.lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, ["b", "c"]);
        assert_eq!(read.next, 3);
        assert_eq!(read.lines[1].stream, LogStream::Stderr);
        logs.finish("c1");
        assert!(!logs.append("c1", LogStream::Stdout, "late"));
        assert!(logs.read("c1", 0).unwrap().finished);
        logs.remove(&["c1".to_owned()]);
        assert!(logs.read("c1", 0).is_none());
    }
}
