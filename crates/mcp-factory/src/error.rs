//! `ConfigError` and what it names: the [`Source`] of a document and its [`Format`]. Kept apart
//! from `config` so that `config`, `document` and `env` all depend on it and not on each other.

use std::fmt;
use std::path::{Path, PathBuf};

/// Where configuration text comes from, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file.
    File(PathBuf),
    /// Text given directly (tests, stdin).
    Inline,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(p) => write!(f, "{}", p.display()),
            Self::Inline => f.write_str("<inline config>"),
        }
    }
}

/// Text format of a config document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML (also accepts JSON, which is YAML).
    Yaml,
    /// JSON.
    Json,
}

impl Format {
    /// JSON for `.json` files, YAML otherwise.
    pub fn of_path(path: &Path) -> Self {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::Json
        } else {
            Self::Yaml
        }
    }
}

/// A configuration that cannot be used. Names the source and the field path.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// The file's role: "config file" or "spec file".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The text is not valid YAML/JSON.
    #[error("{origin}: not valid {format}: {message}")]
    Syntax {
        /// Where the text came from.
        origin: Source,
        /// YAML or JSON.
        format: &'static str,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A field has the wrong shape or an unknown name.
    #[error("{origin}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
    Field {
        /// Where the text came from.
        origin: Source,
        /// Field path, e.g. `orchestrator.docker.network`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// An environment override is malformed.
    #[error("environment variable {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        message: String,
    },
}
