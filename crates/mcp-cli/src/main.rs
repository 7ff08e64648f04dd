//! `mcp-orch`: run, list, inspect, follow and stop MCP servers on local processes, Docker or
//! Kubernetes, with kubectl/docker-like habits.

mod cli;
mod commands;
mod output;
mod serve;
mod signals;
mod time;
mod usage;
mod volumes;
mod watch;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

/// The hidden subcommand under which `mcp-orch` runs the process backend's supervisor, so the
/// embedded default backend needs no second binary.
pub(crate) const SUPERVISE: &str = "__supervise";

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Supervise { args } = &cli.command {
        return supervise(args);
    }
    init_tracing(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verbose = cli.verbose;
    // Run on a worker thread, not the `block_on` thread: a followed log stream is polled there,
    // and waking the `block_on` thread for every frame halves throughput (docs/BENCHMARKS.md).
    let outcome = runtime.block_on(async {
        tokio::spawn(commands::run(cli)).await.unwrap_or_else(|e| {
            Err(anyhow::anyhow!(
                "internal error: the command task failed: {e}"
            ))
        })
    });
    match outcome {
        Ok(code) => code,
        Err(e) => {
            let code = usage::exit_code_of(&e);
            if verbose {
                eprintln!("error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            } else {
                eprintln!("error: {e}");
            }
            code
        }
    }
}

#[cfg(feature = "process")]
fn supervise(args: &[String]) -> ExitCode {
    mcp_factory::run_process_supervisor(args.iter().cloned())
}

#[cfg(not(feature = "process"))]
fn supervise(_: &[String]) -> ExitCode {
    eprintln!("error: this mcp-orch was built without the process backend");
    ExitCode::FAILURE
}

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, or debug with `-v`), except the
/// debug and trace events of [`BODY_LOGGING_TARGETS`], which no `RUST_LOG` turns on.
fn init_tracing(verbose: bool) {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let default = if verbose { "info,mcp=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|meta| {
            !logs_request_bodies(meta.target(), *meta.level())
        }));
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(fmt)
        .try_init();
}

/// Libraries whose debug and trace events print whole request and response bodies of an engine
/// API: bollard logs every Docker request body (a container's create body holds its environment,
/// secret values included) and decoded responses (inspect returns the environment again). Their
/// events above `info` are dropped whatever `RUST_LOG` asks for, so no secret value reaches the
/// output at any log level; bollard logs nothing at `info` or above.
const BODY_LOGGING_TARGETS: &[&str] = &["bollard"];

/// Whether an event of `target` at `level` may carry request or response bodies.
fn logs_request_bodies(target: &str, level: tracing::Level) -> bool {
    level > tracing::Level::INFO
        && BODY_LOGGING_TARGETS.iter().any(|t| {
            target
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tracing::Level;

    #[test]
    fn engine_client_bodies_are_never_logged() {
        assert!(logs_request_bodies("bollard", Level::DEBUG));
        assert!(logs_request_bodies("bollard::docker", Level::TRACE));
        assert!(!logs_request_bodies("bollard::docker", Level::INFO));
        assert!(!logs_request_bodies("bollardish", Level::TRACE));
        assert!(!logs_request_bodies("mcp_docker", Level::TRACE));
    }
}
