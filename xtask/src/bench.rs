//! `cargo xtask bench`: builds the `mcp-bench` binary and runs every benchmark, each comparing
//! our code with its baseline in the same run; writes `docs/BENCHMARKS.md`. Benchmarks measure
//! and never gate: a missed target is printed, only errors fail.
//!
//! - `cargo xtask bench`: release build, full sizes, writes `docs/BENCHMARKS.md`.
//! - `cargo xtask bench --footprint`: also builds the per-backend release `mcp-orch` binaries
//!   and times clean builds of the factory (slow; in `target/bench-footprint`).
//! - `cargo xtask bench --smoke`: tiny sizes, the dev-profile binary, prints only (what CI runs).
//! - `--only a,b` runs some benchmarks (and does not write the report); `--no-write` keeps the
//!   report file as it is.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::{cargo, run_cmd, workspace_root};

/// Full sizes with the release binary, or tiny sizes with the dev one.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Mode {
    #[default]
    Full,
    Smoke,
}

/// Options of `cargo xtask bench`.
#[derive(Debug, Default, PartialEq, Eq)]
struct Options {
    mode: Mode,
    footprint: bool,
    write: bool,
    only: Option<String>,
    require_docker: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        write: true,
        ..Options::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--smoke" => o.mode = Mode::Smoke,
            "--footprint" => o.footprint = true,
            "--no-write" => o.write = false,
            "--require-docker" => o.require_docker = true,
            "--only" => match it.next() {
                Some(v) => o.only = Some(v.clone()),
                None => bail!("--only needs a comma-separated list of benchmarks"),
            },
            other => bail!(
                "unknown bench option {other:?} (known: --smoke, --footprint, --only LIST, \
                 --no-write, --require-docker)"
            ),
        }
    }
    // The report holds full runs of every benchmark only.
    o.write &= o.mode == Mode::Full && o.only.is_none();
    Ok(o)
}

/// Runs `cargo xtask bench [options]`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let started = Instant::now();
    let cargo = cargo();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), PathBuf::from);
    let binary = if o.mode == Mode::Smoke {
        // The binary exactly as the workspace test build makes it (its CLI test needs it), so
        // that right after CI's test step nothing is compiled again.
        run_cmd(
            &cargo,
            &[
                "test",
                "--workspace",
                "--all-features",
                "--locked",
                "--no-run",
            ],
            &[],
        )?;
        target.join("debug").join("mcp-bench")
    } else {
        // The supervisor binary of the process backend goes next to the bench binary.
        run_cmd(
            &cargo,
            &[
                "build",
                "--release",
                "--locked",
                "-p",
                "mcp-bench",
                "-p",
                "mcp-process",
                "-p",
                "mcp-cli",
                "--bins",
            ],
            &[],
        )?;
        target.join("release").join("mcp-bench")
    };
    let mut bench_args: Vec<String> = Vec::new();
    let mut shown = vec!["cargo xtask bench".to_owned()];
    if o.mode == Mode::Smoke {
        bench_args.push("--smoke".into());
        shown.push("--smoke".into());
    }
    if o.footprint {
        bench_args.push("--footprint".into());
        shown.push("--footprint".into());
    }
    if let Some(only) = &o.only {
        bench_args.extend(["--only".into(), only.clone()]);
        shown.extend(["--only".into(), only.clone()]);
    }
    let root = workspace_root();
    // Benchmark 9's baselines: mcp-proxy in its own venv (about 30 s to create, once, so CI's
    // smoke creates it too) and the Python SDK client of the tools venv.
    if o.only
        .as_deref()
        .is_none_or(|only| only.split(',').any(|b| b == "gateway"))
    {
        let proxy = crate::python::ensure_mcp_proxy()?;
        let python = crate::python::ensure_tools()?.join("python");
        bench_args.extend(["--mcp-proxy".into(), proxy.display().to_string()]);
        bench_args.extend(["--python".into(), python.display().to_string()]);
    }
    bench_args.extend(["--workspace".into(), root.display().to_string()]);
    bench_args.extend(["--command".into(), shown.join(" ")]);
    if o.write {
        let doc = root.join("docs").join("BENCHMARKS.md");
        bench_args.extend(["--write".into(), doc.display().to_string()]);
    }
    let bench_args: Vec<&str> = bench_args.iter().map(String::as_str).collect();
    let mut envs = vec![("CARGO", cargo.as_str())];
    if o.require_docker {
        envs.push(("MCPCTL_REQUIRE_DOCKER", "1"));
    }
    run_cmd(&binary.display().to_string(), &bench_args, &envs)?;
    println!(
        "\nbench: done in {:.0?} (build included)",
        started.elapsed()
    );
    Ok(())
}

/// What CI runs: every benchmark at tiny sizes, with the Docker engine required.
pub(crate) fn ci_smoke() -> Result<()> {
    run(&["--smoke".to_owned(), "--require-docker".to_owned()])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn full_runs_write_the_report_smoke_and_partial_runs_do_not() {
        assert!(parse(&[]).unwrap().write);
        assert!(!parse(&args(&["--smoke"])).unwrap().write);
        let o = parse(&args(&["--only", "logs,process"])).unwrap();
        assert_eq!(o.only.as_deref(), Some("logs,process"));
        assert!(!o.write);
        assert!(!parse(&args(&["--no-write"])).unwrap().write);
        assert!(parse(&args(&["--footprint"])).unwrap().footprint);
    }

    #[test]
    fn unknown_options_are_refused() {
        assert!(parse(&args(&["--fast"])).is_err());
        assert!(parse(&args(&["--only"])).is_err());
    }
}
