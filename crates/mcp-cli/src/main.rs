//! `mcp-orch`: run, list, inspect, follow and stop MCP servers on local processes, Docker or
//! Kubernetes, with kubectl/docker-like habits.

mod cli;
mod commands;
mod output;
mod serve;
mod time;

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
            if verbose {
                eprintln!("error: {e}");
                for cause in e.chain().skip(1) {
                    eprintln!("  caused by: {cause}");
                }
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::FAILURE
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

/// Logs to stderr, filtered by `RUST_LOG` (default: warnings, or debug with `-v`).
fn init_tracing(verbose: bool) {
    let default = if verbose { "info,mcp=debug" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
}
