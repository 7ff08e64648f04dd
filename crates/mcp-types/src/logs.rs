//! Log retrieval options and log lines.

use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl fmt::Display for LogStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
        })
    }
}

/// Which streams to read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamSelector {
    /// Both, interleaved in time order.
    #[default]
    All,
    /// Only stdout.
    Stdout,
    /// Only stderr.
    Stderr,
}

impl StreamSelector {
    /// Whether lines of `stream` are wanted.
    pub fn includes(self, stream: LogStream) -> bool {
        match self {
            Self::All => true,
            Self::Stdout => stream == LogStream::Stdout,
            Self::Stderr => stream == LogStream::Stderr,
        }
    }
}

/// How to read logs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Only the last N lines (of the selected streams) that exist at the time of the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tail: Option<u64>,
    /// Only lines written at or after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Timestamp>,
    /// Fill [`LogLine::timestamp`].
    #[serde(default)]
    pub timestamps: bool,
    /// Keep the stream open and yield new lines until the instance stops.
    #[serde(default)]
    pub follow: bool,
    /// Which streams.
    #[serde(default)]
    pub stream: StreamSelector,
    /// The previous run's logs after a restart (where the backend keeps them).
    #[serde(default)]
    pub previous: bool,
}

impl LogOptions {
    /// The last `n` lines.
    pub fn tail(n: u64) -> Self {
        Self {
            tail: Some(n),
            ..Self::default()
        }
    }

    /// Following, from now on plus what exists.
    pub fn follow() -> Self {
        Self {
            follow: true,
            ..Self::default()
        }
    }
}

/// One line of output, without its trailing newline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    /// Stream of origin (backends that cannot tell report stdout).
    pub stream: LogStream,
    /// When it was written; `Some` exactly when [`LogOptions::timestamps`] was set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<Timestamp>,
    /// The text.
    pub text: String,
}
