//! `cargo xtask ci`: exactly what CI runs, in order, failing fast.

use std::time::Instant;

use anyhow::{Result, bail};

use crate::{
    backend_author, bench, cargo, features, kind_test, leftovers, manifests, python, run_cmd, tidy,
    workspace_root,
};

/// Runs every CI step. `--skip-tests` stops after the static checks (for quick local runs).
pub(crate) fn run(args: &[String]) -> Result<()> {
    let skip_tests = args.iter().any(|a| a == "--skip-tests");
    if let Some(unknown) = args.iter().find(|a| a.as_str() != "--skip-tests") {
        bail!("unknown ci option {unknown:?} (known: --skip-tests)");
    }
    let started = Instant::now();
    let cargo = cargo();

    run_cmd(&cargo, &["fmt", "--all", "--", "--check"], &[])?;

    println!("\n==> tidy (layering, file headers, feature docs)");
    let violations = tidy::check(&workspace_root())?;
    if !violations.is_empty() {
        bail!(
            "tidy found {} problem(s):\n  {}",
            violations.len(),
            violations.join("\n  ")
        );
    }

    run_cmd(
        &cargo,
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--all-features",
            "--locked",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;

    // Each backend alone: no other backend's engine client in the tree, clippy clean, and the
    // backends left out are refused with the feature to enable.
    features::check()?;

    println!("\n==> generated example manifests are up to date");
    manifests::check(&workspace_root())?;
    println!("\n==> example manifests pass kubernetes-validate --strict");
    manifests::validate(&workspace_root())?;
    // CI has no kind: the plan is printed (and its construction exercised); a real cluster run
    // is `cargo xtask kind-test` where kind, kubectl and Docker are installed.
    println!("\n==> cargo xtask kind-test --dry-run");
    kind_test::run(&["--dry-run".to_owned()])?;

    if !skip_tests {
        // What earlier runs or other programs left is not this run's to answer for.
        let before = leftovers::before(&workspace_root(), true)?;
        let tools = python::ensure_tools()?;
        let path = python::path_with_tools(&tools);
        // Engines and tools that CI has must be present: a missing one fails instead of skipping.
        run_cmd(
            &cargo,
            &[
                "test",
                "--workspace",
                "--all-features",
                "--locked",
                "--no-fail-fast",
            ],
            &[
                ("MCPCTL_REQUIRE_DOCKER", "1"),
                ("MCPCTL_REQUIRE_PYTHON_MCP", "1"),
                ("PATH", &path),
            ],
        )?;
        // From outside: the packaged author crates, and a backend that is no workspace member
        // passing the whole kit against them.
        println!("\n==> backend-author example against the packaged crates");
        backend_author::check()?;
        // Every benchmark at tiny sizes: proves they work; timings never gate.
        bench::ci_smoke()?;
        println!("\n==> nothing left running");
        // The tests ran with MCPCTL_REQUIRE_DOCKER=1: an engine that cannot be asked fails.
        leftovers::check(&workspace_root(), true, &before)?;
    }
    println!("\nci: all steps passed in {:.0?}", started.elapsed());
    Ok(())
}
