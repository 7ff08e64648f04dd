//! Exit codes and usage errors: a bad flag value found after clap parsed the command line exits
//! with 2, like clap's own usage errors; every other failure exits with 1.

use std::fmt;
use std::process::ExitCode;

/// The operation failed (the engine refused, the server did not come up, a file is invalid).
pub(crate) const FAILED: u8 = 1;
/// The command line is wrong (unknown flag, bad flag value); nothing was attempted.
pub(crate) const USAGE: u8 = 2;

/// A flag or argument value that cannot be used; the message names the flag and the rule.
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A usage error as an `anyhow` error, for `?`.
pub(crate) fn usage(message: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(UsageError(message.into()))
}

/// The exit code for a failed command: [`USAGE`] for a usage error, [`FAILED`] otherwise.
pub(crate) fn exit_code_of(e: &anyhow::Error) -> ExitCode {
    if e.downcast_ref::<UsageError>().is_some() {
        ExitCode::from(USAGE)
    } else {
        ExitCode::from(FAILED)
    }
}
