//! SIGTERM / SIGINT handling. Installed explicitly because as PID 1 in a container the process
//! gets no default signal actions: without handlers, `docker stop` would wait out its grace period.
//! A fixture script can make the process ignore them ([`Signals::ignore`]): only a kill stops it.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both stop signals, registered at creation.
#[derive(Debug)]
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
    /// Received signals are dropped instead of reported.
    ignoring: Arc<AtomicBool>,
}

impl Signals {
    /// Registers the handlers (needs a tokio runtime).
    pub(crate) fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            ignoring: Arc::default(),
        })
    }

    /// A switch: once set, stop signals are consumed and logged on stderr, never reported, so
    /// [`Signals::recv`] waits forever and only SIGKILL ends the process. The handlers stay
    /// installed: removing them would give SIGTERM its default action (except as PID 1).
    pub(crate) fn ignore_switch(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.ignoring)
    }

    /// Waits for the next SIGTERM or SIGINT that is not ignored and names it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        loop {
            let name = tokio::select! {
                _ = self.term.recv() => "SIGTERM",
                _ = self.int.recv() => "SIGINT",
            };
            if !self.ignoring.load(Ordering::SeqCst) {
                return name;
            }
            eprintln!("mcp-test-server: ignoring {name}");
        }
    }
}
