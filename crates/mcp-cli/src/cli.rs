//! Command-line syntax of `mcp-orch` (clap derive).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Run and manage MCP servers on local processes, Docker or Kubernetes.
#[derive(Debug, Parser)]
#[command(
    name = "mcp-orch",
    version,
    about,
    propagate_version = true,
    after_help = "Exit codes: 0 done, 1 the operation failed, 2 the command line is wrong."
)]
pub(crate) struct Cli {
    /// Configuration file (YAML or JSON). Default: $MCPCTL_CONFIG, else
    /// $XDG_CONFIG_HOME/mcpctl/config.yaml when it exists, else built-in defaults.
    #[arg(long, global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Backend to use, overriding the configuration (process, docker, kubernetes).
    #[arg(long, global = true, value_name = "TYPE")]
    pub(crate) backend: Option<String>,
    /// Show the cause chain of errors (and debug logs unless RUST_LOG is set).
    #[arg(short, long, global = true)]
    pub(crate) verbose: bool,
    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Start a server from a spec file, wait until it runs, print its id.
    Run(RunArgs),
    /// List managed instances.
    Ps(PsArgs),
    /// Show the status of an instance.
    Status {
        /// Instance id.
        id: String,
        /// Output format.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
    },
    /// Print an instance's logs: the current run on the process and Kubernetes backends (see
    /// --previous), every run on Docker (the engine keeps one log across restarts).
    Logs(LogsArgs),
    /// Connect this program's stdin/stdout to a stdio server's MCP channel, byte for byte, so an
    /// MCP client can launch `mcp-orch attach <id>` as its server command. For an HTTP server it
    /// names the URL to use instead and exits with 1.
    Attach {
        /// Instance id.
        id: String,
    },
    /// Serve every instance as MCP streamable HTTP (`/servers/<id>/mcp`), with a listing of
    /// instances and their readiness (`/servers`) and Prometheus metrics (`/metrics`).
    Serve(crate::serve::ServeArgs),
    /// Stop instances gracefully and remove them.
    Stop {
        /// Instance ids.
        #[arg(required = true)]
        ids: Vec<String>,
        /// Time to exit after SIGTERM before being killed (e.g. 10s, 1m).
        #[arg(long, default_value = "10s", value_parser = crate::time::parse_duration)]
        grace: std::time::Duration,
    },
    /// Persistent volumes (`persistent: true` in a spec): list them, remove unused ones.
    Volumes {
        /// What to do.
        #[command(subcommand)]
        action: VolumesAction,
    },
    /// Find managed objects with no live owner (a container whose network or volume is gone, a
    /// Kubernetes companion whose pod is gone, a process instance whose supervisor died) and
    /// remove them. Persistent volumes are never orphans. Run it when nothing is starting.
    Gc {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Render the Kubernetes objects for a spec as YAML (no cluster needed).
    #[cfg(feature = "kubernetes")]
    Manifests {
        /// Server spec file.
        file: PathBuf,
        /// Namespace (default: the configuration's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Configuration commands.
    Config {
        /// What to do.
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Runs an instance supervisor for the process backend (internal).
    #[command(name = "__supervise", hide = true)]
    Supervise {
        /// Arguments for the supervisor.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// `volumes` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum VolumesAction {
    /// List persistent volumes with the instances that mount them.
    Ls {
        /// Only the volumes of this server.
        #[arg(long)]
        server: Option<String>,
        /// Output format.
        #[arg(short, long, value_enum, default_value = "table")]
        output: Output,
    },
    /// Remove persistent volumes and their data; refused while an instance mounts one.
    Rm {
        /// Volume names (as `volumes ls` shows them).
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigAction {
    /// Validate a configuration and print it with defaults and environment overrides applied.
    Check {
        /// File to check (default: the one in use).
        file: Option<PathBuf>,
    },
}

/// `run` arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// Server spec file (YAML or JSON).
    pub(crate) file: PathBuf,
    /// Stream the logs until Ctrl-C, then stop the server gracefully.
    #[arg(short = 'a', long, visible_alias = "follow", short_alias = 'f')]
    pub(crate) attach: bool,
    /// Extra environment variable (KEY=VALUE), repeatable.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub(crate) env: Vec<String>,
    /// Extra label (key=value), repeatable.
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub(crate) labels: Vec<String>,
    /// How long to wait for the server to run.
    #[arg(long, default_value = "2m", value_parser = crate::time::parse_duration)]
    pub(crate) timeout: std::time::Duration,
    /// How long the server must keep running before `run` reports success (a server that exits
    /// within it is reported as failed). Not used with --attach.
    #[arg(long, default_value = "1s", value_parser = crate::time::parse_duration)]
    pub(crate) settle: std::time::Duration,
    /// Grace period when stopping: after --attach, or after a failed or interrupted run.
    #[arg(long, default_value = "10s", value_parser = crate::time::parse_duration)]
    pub(crate) grace: std::time::Duration,
    /// When the server does not come up (or Ctrl-C interrupts the wait), keep the instance for
    /// debugging instead of stopping and removing it; `run` prints how to stop it.
    #[arg(long)]
    pub(crate) keep_on_failure: bool,
    /// Report success once the server runs, without waiting for it to answer MCP (for servers
    /// that do not speak MCP, or that a client cannot reach from here, such as a Kubernetes
    /// Service address).
    #[arg(long)]
    pub(crate) skip_ready: bool,
}

/// `ps` arguments.
#[derive(Debug, Args)]
pub(crate) struct PsArgs {
    /// Only instances of this server.
    #[arg(long)]
    pub(crate) server: Option<String>,
    /// Label selector (e.g. `team=a,tier in (x,y)`).
    #[arg(short = 'l', long = "selector")]
    pub(crate) selector: Option<String>,
    /// Only instances in this phase.
    #[arg(long)]
    pub(crate) phase: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Table)]
    pub(crate) output: Output,
    /// How long each running instance's live MCP probe (READY, PROTOCOL) may take.
    #[arg(long, default_value = "3s", value_parser = crate::time::parse_duration)]
    pub(crate) probe_timeout: std::time::Duration,
    /// Skip the live MCP probe (READY and PROTOCOL show `-`).
    #[arg(long)]
    pub(crate) no_probe: bool,
    /// Keep printing instance events as they happen (the current instances first, then
    /// `-- synced --`, then changes) until interrupted; JSON prints one event per line.
    #[arg(short, long)]
    pub(crate) watch: bool,
}

/// `logs` arguments.
#[derive(Debug, Args)]
pub(crate) struct LogsArgs {
    /// Instance id.
    pub(crate) id: String,
    /// Keep streaming new lines until the instance stops (or Ctrl-C).
    #[arg(short, long)]
    pub(crate) follow: bool,
    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    pub(crate) tail: Option<u64>,
    /// Only lines since a duration ago (10m) or a time (RFC 3339).
    #[arg(long, value_name = "WHEN")]
    pub(crate) since: Option<String>,
    /// Prefix each line with its RFC 3339 time.
    #[arg(short, long)]
    pub(crate) timestamps: bool,
    /// Which stream.
    #[arg(long, value_enum, default_value_t = StreamArg::All)]
    pub(crate) stream: StreamArg,
    /// The run before the last restart (process, Kubernetes). Refused before any restart, and
    /// on Docker, whose plain `logs` already shows every run.
    #[arg(short, long)]
    pub(crate) previous: bool,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Output {
    /// Human-readable.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Stream choice for `logs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum StreamArg {
    /// Both.
    All,
    /// Standard output only.
    Stdout,
    /// Standard error only.
    Stderr,
}
