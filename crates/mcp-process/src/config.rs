//! `ProcessConfig`: where state lives, how to find the supervisor, secrets, environment and
//! restart tuning; plus the default state directory and the supervisor lookup.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mcp_types::Egress;
use serde::{Deserialize, Serialize};

/// Why allow-lists are refused, and what to use instead.
pub(crate) const ALLOW_UNSUPPORTED: &str = "a local process cannot be limited to listed \
     destinations without privileges (this backend runs a server either on the host network, \
     `egress: open`, or with no network at all, `egress: none`); use the docker or kubernetes \
     backend, which enforce allow-lists";

/// File name of the supervisor binary this crate ships.
pub const SUPERVISOR_BINARY: &str = "mcp-process-supervisor";

/// Environment variables the server inherits from the process that starts it when
/// [`ProcessConfig::inherit_env`] is not set.
pub const DEFAULT_INHERITED_ENV: &[&str] = &["PATH", "HOME", "LANG"];

/// Configuration of a [`crate::ProcessOrchestrator`].
///
/// In YAML/JSON (camelCase, unknown fields rejected):
///
/// ```yaml
/// stateDir: /home/me/.local/state/mcpctl/process   # default shown
/// supervisorPath: /usr/local/bin/mcp-process-supervisor
/// supervisorArgs: []        # arguments before the instance directory
/// secretsDir: /home/me/.config/mcpctl/secrets      # <dir>/<name>/<key> files
/// inheritEnv: [PATH, HOME, LANG]
/// logStdioTraffic: false
/// restartBackoffInitialMs: 500
/// restartBackoffMaxMs: 30000
/// startTimeoutMs: 10000
/// logMaxBytes: 10485760     # 10 MiB per log file, then it is rotated
/// logMaxFiles: 3            # rotated files kept besides the current one
/// defaultEgress: open       # or none: servers without `egress` get no network
/// ```
///
/// [`ProcessConfig::validate`] refuses values that cannot work (a relative `stateDir`, a
/// restart backoff so short that a crashing server becomes a hot loop, logs too small to
/// hold a line); [`crate::ProcessOrchestrator::new`] calls it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessConfig {
    /// Root of the state directory. Default: `$XDG_STATE_HOME/mcpctl/process`, else
    /// `~/.local/state/mcpctl/process` (see [`default_state_dir`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// The supervisor program. Default: `mcp-process-supervisor` next to the current
    /// executable (or one directory up, for test binaries under `target/*/deps`), else on
    /// `PATH` (see [`ProcessConfig::supervisor_program`]).
    ///
    /// Programs that link this crate and want no second binary can point this at themselves
    /// and route the arguments to [`crate::supervisor::run`] (see that function).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supervisor_path: Option<PathBuf>,
    /// Arguments passed to the supervisor program before the instance directory (e.g. the
    /// hidden subcommand of a program that embeds the supervisor).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supervisor_args: Vec<String>,
    /// Directory that `secretRef` environment values are read from (`<dir>/<name>/<key>`, the
    /// layout of a mounted Kubernetes secret). Without it, references are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_dir: Option<PathBuf>,
    /// Variables the server inherits from the starting process (when set there); the spec's
    /// `env` comes on top. Default: [`DEFAULT_INHERITED_ENV`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit_env: Option<Vec<String>>,
    /// Also log a stdio server's stdout while a client is attached through
    /// [`crate::ProcessOrchestrator::attach_stdio`]. Off by default: that output is the MCP
    /// protocol stream, which may carry tool results and credentials.
    #[serde(default)]
    pub log_stdio_traffic: bool,
    /// First delay before restarting an exited server (doubling per restart). At least
    /// [`MIN_BACKOFF_INITIAL_MS`].
    #[serde(default = "default_backoff_initial_ms")]
    pub restart_backoff_initial_ms: u64,
    /// Longest delay between restarts. At least [`MIN_BACKOFF_MAX_MS`] and at least
    /// `restartBackoffInitialMs`.
    #[serde(default = "default_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
    /// How long `start_server` waits for the supervisor to report that it launched the server.
    /// More than zero.
    #[serde(default = "default_start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// Size at which an instance's log file (`logs.jsonl`) is rotated, in bytes. At least
    /// [`MIN_LOG_MAX_BYTES`]; default 10 MiB.
    #[serde(default = "default_log_max_bytes")]
    pub log_max_bytes: u64,
    /// How many rotated log files (`logs.jsonl.1` newest ... `logs.jsonl.N` oldest) are kept
    /// besides the current one; older ones are deleted. 1 to [`MAX_LOG_FILES`]; default 3, so
    /// an instance's logs take at most 4 x `logMaxBytes` on disk.
    #[serde(default = "default_log_max_files")]
    pub log_max_files: u32,
    /// The egress policy of servers whose spec sets none: `open` (the default: the host's
    /// network, not restricted) or `none` (a network namespace with only a loopback
    /// interface). Allow-lists cannot be enforced by this backend and are refused.
    #[serde(default, skip_serializing_if = "is_open")]
    pub default_egress: Egress,
}

fn is_open(e: &Egress) -> bool {
    *e == Egress::Open
}

/// Smallest accepted `restartBackoffInitialMs`.
pub const MIN_BACKOFF_INITIAL_MS: u64 = 10;
/// Smallest accepted `restartBackoffMaxMs`: a server that keeps crashing is restarted at most
/// ten times a second.
pub const MIN_BACKOFF_MAX_MS: u64 = 100;
/// Smallest accepted `logMaxBytes`.
pub const MIN_LOG_MAX_BYTES: u64 = 4096;
/// Largest accepted `logMaxFiles`.
pub const MAX_LOG_FILES: u32 = 100;

fn default_backoff_initial_ms() -> u64 {
    500
}
fn default_backoff_max_ms() -> u64 {
    30_000
}
fn default_start_timeout_ms() -> u64 {
    10_000
}
fn default_log_max_bytes() -> u64 {
    10 * 1024 * 1024
}
fn default_log_max_files() -> u32 {
    3
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            state_dir: None,
            supervisor_path: None,
            supervisor_args: Vec::new(),
            secrets_dir: None,
            inherit_env: None,
            log_stdio_traffic: false,
            restart_backoff_initial_ms: default_backoff_initial_ms(),
            restart_backoff_max_ms: default_backoff_max_ms(),
            start_timeout_ms: default_start_timeout_ms(),
            log_max_bytes: default_log_max_bytes(),
            log_max_files: default_log_max_files(),
            default_egress: Egress::Open,
        }
    }
}

impl ProcessConfig {
    /// A configuration with this state directory and supervisor, everything else defaulted.
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self {
            state_dir: Some(state_dir.into()),
            ..Self::default()
        }
    }

    /// Sets the supervisor program.
    pub fn with_supervisor(mut self, path: impl Into<PathBuf>) -> Self {
        self.supervisor_path = Some(path.into());
        self
    }

    /// Checks the values that parse but cannot work.
    ///
    /// # Errors
    /// The first problem found, as a message that starts with the field's name (camelCase, as
    /// in the configuration file) and states the rule.
    pub fn validate(&self) -> Result<(), String> {
        for (field, dir) in [
            ("stateDir", &self.state_dir),
            ("secretsDir", &self.secrets_dir),
        ] {
            if let Some(d) = dir
                && !d.is_absolute()
            {
                return Err(format!(
                    "{field} must be an absolute path, not {:?}: a relative one would be resolved \
                     against whichever directory each command runs in",
                    d.display().to_string()
                ));
            }
        }
        if self.restart_backoff_initial_ms < MIN_BACKOFF_INITIAL_MS {
            return Err(format!(
                "restartBackoffInitialMs must be at least {MIN_BACKOFF_INITIAL_MS} (got {}): a \
                 shorter delay restarts a crashing server in a hot loop",
                self.restart_backoff_initial_ms
            ));
        }
        if self.restart_backoff_max_ms < MIN_BACKOFF_MAX_MS {
            return Err(format!(
                "restartBackoffMaxMs must be at least {MIN_BACKOFF_MAX_MS} (got {}): a shorter \
                 delay restarts a crashing server in a hot loop",
                self.restart_backoff_max_ms
            ));
        }
        if self.restart_backoff_max_ms < self.restart_backoff_initial_ms {
            return Err(format!(
                "restartBackoffMaxMs ({}) must not be less than restartBackoffInitialMs ({})",
                self.restart_backoff_max_ms, self.restart_backoff_initial_ms
            ));
        }
        if self.start_timeout_ms == 0 {
            return Err("startTimeoutMs must be more than 0".into());
        }
        if self.log_max_bytes < MIN_LOG_MAX_BYTES {
            return Err(format!(
                "logMaxBytes must be at least {MIN_LOG_MAX_BYTES} (got {})",
                self.log_max_bytes
            ));
        }
        if !(1..=MAX_LOG_FILES).contains(&self.log_max_files) {
            return Err(format!(
                "logMaxFiles must be between 1 and {MAX_LOG_FILES} (got {})",
                self.log_max_files
            ));
        }
        if let Egress::Allow(_) = self.default_egress {
            return Err(format!(
                "defaultEgress must be `open` or `none` (got {}): {}",
                self.default_egress.summary(),
                ALLOW_UNSUPPORTED
            ));
        }
        Ok(())
    }

    /// The state directory in effect.
    ///
    /// # Errors
    /// A message when no state directory is configured and neither `XDG_STATE_HOME` nor
    /// `HOME` is set.
    pub fn state_dir(&self) -> Result<PathBuf, String> {
        match &self.state_dir {
            Some(d) => Ok(d.clone()),
            None => default_state_dir(),
        }
    }

    /// The supervisor program in effect: [`ProcessConfig::supervisor_path`], else
    /// `mcp-process-supervisor` next to the current executable (or in the parent directory
    /// when the executable sits in a `deps` directory, as cargo's test binaries do), else the
    /// first one on `PATH`.
    ///
    /// # Errors
    /// A message naming every place looked at when none is found.
    pub fn supervisor_program(&self) -> Result<PathBuf, String> {
        if let Some(p) = &self.supervisor_path {
            return if is_executable(p) {
                Ok(p.clone())
            } else {
                Err(format!(
                    "the configured supervisorPath {} is not an executable file",
                    p.display()
                ))
            };
        }
        let mut looked = Vec::new();
        if let Ok(exe) = std::env::current_exe()
            && let Some(dir) = exe.parent()
        {
            let mut dirs = vec![dir.to_path_buf()];
            if dir.file_name().is_some_and(|n| n == "deps")
                && let Some(up) = dir.parent()
            {
                dirs.push(up.to_path_buf());
            }
            for d in dirs {
                let candidate = d.join(SUPERVISOR_BINARY);
                if is_executable(&candidate) {
                    return Ok(candidate);
                }
                looked.push(d.display().to_string());
            }
        }
        if let Some(found) = search_path(SUPERVISOR_BINARY, std::env::var_os("PATH").as_deref()) {
            return Ok(found);
        }
        looked.push("PATH".into());
        Err(format!(
            "cannot find the supervisor program `{SUPERVISOR_BINARY}` (looked in {}); install it \
             next to this program or on PATH (`cargo install mcp-process` builds it), or set \
             supervisorPath in the process backend configuration",
            looked.join(", ")
        ))
    }

    /// The variables inherited from the starting process.
    pub fn inherited_env_names(&self) -> Vec<String> {
        self.inherit_env.clone().unwrap_or_else(|| {
            DEFAULT_INHERITED_ENV
                .iter()
                .map(|s| (*s).to_owned())
                .collect()
        })
    }

    pub(crate) fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }

    /// How long an instance may have no recorded supervisor before it counts as abandoned.
    pub(crate) fn startup_window(&self) -> jiff::SignedDuration {
        jiff::SignedDuration::try_from(self.start_timeout() + SUPERVISOR_MARGIN)
            .unwrap_or(jiff::SignedDuration::from_secs(60))
    }
}

/// How long after the grace period a stop waits for the supervisor before killing it.
pub(crate) const SUPERVISOR_MARGIN: Duration = Duration::from_secs(5);

/// `$XDG_STATE_HOME/mcpctl/process` when `XDG_STATE_HOME` is an absolute path, else
/// `$HOME/.local/state/mcpctl/process`.
///
/// # Errors
/// A message when neither variable is usable.
pub fn default_state_dir() -> Result<PathBuf, String> {
    let from = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    if let Some(xdg) = from("XDG_STATE_HOME") {
        return Ok(xdg.join("mcpctl").join("process"));
    }
    if let Some(home) = from("HOME") {
        return Ok(home.join(".local/state/mcpctl/process"));
    }
    Err(
        "no state directory: set stateDir in the process backend configuration, or \
         XDG_STATE_HOME or HOME"
            .into(),
    )
}

/// Whether `p` is a regular file with an execute bit.
pub(crate) fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first executable `name` in the directories of `path` (a `PATH` value).
pub(crate) fn search_path(name: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    std::env::split_paths(path?)
        .filter(|d| d.is_absolute())
        .map(|d| d.join(name))
        .find(|c| is_executable(c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_shape_is_camel_case_and_strict() {
        let c: ProcessConfig = serde_json::from_str(
            r#"{"stateDir":"/s","supervisorPath":"/bin/sup","secretsDir":"/sec","inheritEnv":["PATH"],"restartBackoffInitialMs":10}"#,
        )
        .unwrap();
        assert_eq!(c.state_dir.as_deref(), Some(Path::new("/s")));
        assert_eq!(c.restart_backoff_initial_ms, 10);
        assert_eq!(c.restart_backoff_max_ms, 30_000);
        assert_eq!(c.inherited_env_names(), ["PATH"]);
        assert!(serde_json::from_str::<ProcessConfig>(r#"{"statedir":"/s"}"#).is_err());
        assert_eq!(
            serde_json::from_str::<ProcessConfig>("{}").unwrap(),
            ProcessConfig::default()
        );
    }

    #[test]
    fn values_that_cannot_work_are_refused_naming_the_field() {
        assert_eq!(ProcessConfig::default().validate(), Ok(()));
        let cases = [
            (r#"{"stateDir":"state"}"#, "stateDir"),
            (r#"{"secretsDir":"./secrets"}"#, "secretsDir"),
            (
                r#"{"restartBackoffInitialMs":0}"#,
                "restartBackoffInitialMs",
            ),
            (
                r#"{"restartBackoffInitialMs":10,"restartBackoffMaxMs":0}"#,
                "restartBackoffMaxMs",
            ),
            (
                r#"{"restartBackoffInitialMs":5000,"restartBackoffMaxMs":1000}"#,
                "restartBackoffMaxMs",
            ),
            (r#"{"startTimeoutMs":0}"#, "startTimeoutMs"),
            (r#"{"logMaxBytes":10}"#, "logMaxBytes"),
            (r#"{"logMaxFiles":0}"#, "logMaxFiles"),
            (r#"{"defaultEgress":["10.0.0.0/8"]}"#, "defaultEgress"),
        ];
        for (json, field) in cases {
            let c: ProcessConfig = serde_json::from_str(json).unwrap();
            let err = c.validate().unwrap_err();
            assert!(err.starts_with(field), "{json}: {err}");
        }
        let c: ProcessConfig = serde_json::from_str(
            r#"{"stateDir":"/s","restartBackoffInitialMs":10,"restartBackoffMaxMs":100,"logMaxBytes":4096,"logMaxFiles":1}"#,
        )
        .unwrap();
        assert_eq!(c.validate(), Ok(()));
        let c: ProcessConfig = serde_json::from_str(r#"{"defaultEgress":"none"}"#).unwrap();
        assert_eq!(
            (c.default_egress.clone(), c.validate()),
            (Egress::None, Ok(()))
        );
        // The default is left out when writing a configuration back.
        let written = serde_json::to_string(&ProcessConfig::default()).unwrap();
        assert!(!written.contains("defaultEgress"), "{written}");
    }

    #[test]
    fn missing_supervisor_is_a_clear_error() {
        let c = ProcessConfig::default().with_supervisor("/nonexistent/mcp-process-supervisor");
        let err = c.supervisor_program().unwrap_err();
        assert!(err.contains("supervisorPath"), "{err}");
    }

    #[test]
    fn path_search_finds_executables_only() {
        let found = search_path(
            "sh",
            Some(std::ffi::OsStr::new("/nonexistent:/bin:/usr/bin")),
        );
        assert!(found.is_some_and(|p| p.ends_with("sh")));
        assert!(search_path("sh", Some(std::ffi::OsStr::new("relative/bin"))).is_none());
    }
}
