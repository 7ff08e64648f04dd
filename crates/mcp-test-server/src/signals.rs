//! SIGTERM / SIGINT handling. Installed explicitly because as PID 1 in a container the process
//! gets no default signal actions: without handlers, `docker stop` would wait out its grace period.

use std::io;

use tokio::signal::unix::{Signal, SignalKind, signal};

/// Both stop signals, registered at creation.
#[derive(Debug)]
pub(crate) struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    /// Registers the handlers (needs a tokio runtime).
    pub(crate) fn install() -> io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// Waits for the next SIGTERM or SIGINT and names it.
    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.term.recv() => "SIGTERM",
            _ = self.int.recv() => "SIGINT",
        }
    }
}
