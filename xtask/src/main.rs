//! Project automation entry point (`cargo xtask <command>`), in the cargo-xtask style: plain
//! Rust instead of shell scripts, so "green locally" means green CI.

mod backend_author;
mod bench;
mod ci;
mod features;
mod kind_test;
mod leftovers;
mod manifests;
mod python;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  ci                 everything CI runs: fmt, clippy, layering, generated files, tests
  tidy               layering and file-header rules only
  manifests          regenerate examples/k8s (--check: fail if stale; --validate: also kubernetes-validate)
  kind-test          Kubernetes integration tests on a throw-away kind cluster (--dry-run, --keep, --require)
  bench              side-by-side benchmarks, writes docs/BENCHMARKS.md (--smoke, --footprint, --only LIST, --no-write)
  backend-author     package the author crates, publish --dry-run, run examples/backend-author's kit against them";

fn main() {
    if let Err(e) = run() {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    match cmd.as_str() {
        "ci" => ci::run(rest),
        "manifests" => manifests::run(rest),
        "kind-test" => kind_test::run(rest),
        "bench" => bench::run(rest),
        "backend-author" => backend_author::check(),
        "tidy" => {
            let violations = tidy::check(&workspace_root())?;
            if violations.is_empty() {
                println!("tidy: ok");
                Ok(())
            } else {
                bail!(
                    "tidy found {} problem(s):\n  {}",
                    violations.len(),
                    violations.join("\n  ")
                )
            }
        }
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// The workspace root (the parent of this crate's directory).
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// The cargo that runs us (so toolchain overrides carry through).
pub(crate) fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

/// Runs a command in the workspace root, echoing it, and fails if it fails.
pub(crate) fn run_cmd(program: &str, args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let shown = format!("{program} {}", args.join(" "));
    println!("\n==> {shown}");
    let mut cmd = Command::new(program);
    cmd.args(args).current_dir(workspace_root());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let status = cmd
        .status()
        .with_context(|| format!("could not run {shown}"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}
