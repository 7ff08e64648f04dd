//! Benchmark 6: what each backend costs in the `mcp-orch` binary and in build time. Release
//! builds go to `target/bench-footprint` (never the normal target dir); the clean builds each
//! get a fresh directory that is removed afterwards.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::logs::as_f64;
use crate::report::Row;
use crate::stats::{Target, bytes, number, seconds};

/// The `mcp-cli` feature sets whose binaries are compared (name, features).
const BINARIES: &[(&str, &str)] = &[
    ("process", "process"),
    ("docker", "docker"),
    ("kubernetes", "kubernetes"),
    ("all", "process,docker,kubernetes"),
];

fn dir(workspace: &Path) -> PathBuf {
    workspace.join("target").join("bench-footprint")
}

fn binary(workspace: &Path, name: &str) -> PathBuf {
    dir(workspace).join(format!("mcp-orch-{name}"))
}

/// Builds (unless `build` is false: then only binaries built earlier are measured) and
/// compares the binaries, and with `build` times clean builds of the factory.
pub(crate) fn run(workspace: &Path, build: bool) -> Result<(Vec<Row>, String)> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    if build {
        let target_dir = dir(workspace).join("bins");
        for (name, features) in BINARIES {
            cargo_build(
                &cargo,
                workspace,
                &["-p", "mcp-cli", "--features", features],
                &target_dir,
            )?;
            std::fs::copy(
                target_dir.join("release").join("mcp-orch"),
                binary(workspace, name),
            )
            .with_context(|| format!("copying the {name} binary"))?;
        }
    }
    let sizes: Vec<Option<u64>> = BINARIES
        .iter()
        .map(|(name, _)| {
            std::fs::metadata(binary(workspace, name))
                .ok()
                .map(|m| m.len())
        })
        .collect();
    let mut rows = Vec::new();
    let mut note = String::new();
    if let [Some(process), Some(docker), Some(kubernetes), Some(all)] = sizes[..] {
        let size = as_f64;
        rows.push(Row {
            bench: "6 footprint".to_owned(),
            metric: "release `mcp-orch` size, docker only vs all backends".to_owned(),
            ours: bytes(size(docker)),
            baseline: bytes(size(all)),
            value: size(docker) / size(all),
            shown: format!("{}x", number(size(docker) / size(all))),
            target: Target::AtMost(0.60),
        });
        for (name, s) in [("process", process), ("kubernetes", kubernetes)] {
            rows.push(Row {
                bench: "6 footprint".to_owned(),
                metric: format!("release `mcp-orch` size, {name} only vs all backends"),
                ours: bytes(size(s)),
                baseline: bytes(size(all)),
                value: size(s) / size(all),
                shown: format!("{}x", number(size(s) / size(all))),
                target: Target::Info,
            });
        }
        if !build {
            note = format!(
                "footprint: sizes of the binaries in {} from the last `--footprint` run",
                dir(workspace).display()
            );
        }
    } else {
        note = format!(
            "footprint: skipped (no binaries in {}; `cargo xtask bench --footprint` builds them)",
            dir(workspace).display()
        );
    }
    if build {
        let mut times = Vec::new();
        for (name, features) in [("docker", "docker"), ("all", "process,docker,kubernetes")] {
            let fresh = dir(workspace).join(format!("clean-{name}"));
            let _ = std::fs::remove_dir_all(&fresh);
            let started = Instant::now();
            cargo_build(
                &cargo,
                workspace,
                &["-p", "mcp-factory", "--features", features],
                &fresh,
            )?;
            times.push(started.elapsed());
            std::fs::remove_dir_all(&fresh)
                .with_context(|| format!("removing {}", fresh.display()))?;
        }
        if let [docker, all] = times[..] {
            let record = format!(
                "{} {} {}\n",
                docker.as_secs_f64(),
                all.as_secs_f64(),
                jiff::Timestamp::now().strftime("%Y-%m-%d %H:%M UTC")
            );
            std::fs::write(dir(workspace).join(CLEAN_BUILDS), record)
                .context("recording the clean build times")?;
        }
    }
    // The clean builds take many minutes: a run without --footprint reports the last ones.
    if let Some((docker, all, when)) = recorded_clean_builds(workspace) {
        let mut row = clean_build_row(docker, all);
        if !build {
            row.metric = format!("{}, measured {when}", row.metric);
        }
        rows.push(row);
    }
    Ok((rows, note))
}

/// File under the footprint directory with the last clean build times: `docker all date`.
const CLEAN_BUILDS: &str = "clean-builds.txt";

fn recorded_clean_builds(workspace: &Path) -> Option<(Duration, Duration, String)> {
    let text = std::fs::read_to_string(dir(workspace).join(CLEAN_BUILDS)).ok()?;
    let mut parts = text.trim().splitn(3, ' ');
    let docker = parts.next()?.parse::<f64>().ok()?;
    let all = parts.next()?.parse::<f64>().ok()?;
    let when = parts.next()?.to_owned();
    Some((
        Duration::try_from_secs_f64(docker).ok()?,
        Duration::try_from_secs_f64(all).ok()?,
        when,
    ))
}

fn clean_build_row(docker: Duration, all: Duration) -> Row {
    let ratio = docker.as_secs_f64() / all.as_secs_f64();
    Row {
        bench: "6 footprint".to_owned(),
        metric: "clean release build of mcp-factory, docker only vs all (one each)".to_owned(),
        ours: seconds(docker.as_secs_f64()),
        baseline: seconds(all.as_secs_f64()),
        value: ratio,
        shown: format!("{}x", number(ratio)),
        target: Target::Info,
    }
}

fn cargo_build(cargo: &str, workspace: &Path, what: &[&str], target_dir: &Path) -> Result<()> {
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--locked", "--no-default-features"])
        .args(what)
        .arg("--target-dir")
        .arg(target_dir)
        .current_dir(workspace)
        .env_remove("CARGO_TARGET_DIR");
    println!("footprint: {cmd:?}");
    let status = cmd.status().context("running cargo")?;
    if !status.success() {
        bail!("cargo build {} failed ({status})", what.join(" "));
    }
    Ok(())
}
