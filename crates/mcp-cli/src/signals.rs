//! Ctrl-C (SIGINT) and SIGTERM as a stream the commands select on. Listening replaces the
//! default "die at once" action, so a command that started something can stop it, or say how,
//! before it exits.

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Interrupt requests (SIGINT or SIGTERM) received since [`Interrupts::listen`].
pub(crate) struct Interrupts {
    int: Signal,
    term: Signal,
}

impl Interrupts {
    /// Starts listening; from now on the signals no longer end the process by themselves.
    ///
    /// # Errors
    /// The signal handlers cannot be installed.
    pub(crate) fn listen() -> Result<Self> {
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("listening for Ctrl-C")?,
            term: signal(SignalKind::terminate()).context("listening for SIGTERM")?,
        })
    }

    /// Waits for the next interrupt (one that arrived since the last call counts at once).
    pub(crate) async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
    }
}
