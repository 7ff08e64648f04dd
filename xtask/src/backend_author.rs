//! The out-of-workspace proof: package the crates a backend author depends on (`mcp-types`,
//! `mcp-orchestrator-api`, `mcp-test-server` and its `mcp-scratch-image`), check they would publish, then build
//! `examples/backend-author` from a fresh copy against the unpacked `.crate` files (patched in
//! through that copy's `.cargo/config.toml`, as a registry would serve them; never workspace
//! paths) and run its whole conformance kit.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, run_cmd, workspace_root};

/// The crates an author depends on, in dependency order.
pub(crate) const AUTHOR_CRATES: [&str; 4] = [
    "mcp-types",
    "mcp-orchestrator-api",
    "mcp-scratch-image",
    "mcp-test-server",
];
/// The example's directory, relative to the workspace root.
const EXAMPLE: &str = "examples/backend-author";
/// Scratch directory under the target dir.
const SCRATCH: &str = "backend-author";

/// Removes the author crates' sources that an earlier `cargo package` unpacked from its local
/// registry overlay into cargo's registry cache (`$CARGO_HOME/registry/src/<overlay>/`). Cargo
/// unpacks a registry crate only when its directory is missing, so a second run with the same
/// version would verify against the first run's sources. Crates from crates.io are left alone.
fn remove_unpacked_overlays(version: &str) -> Result<()> {
    let home = std::env::var_os("CARGO_HOME").map_or_else(
        || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
        PathBuf::from,
    );
    let src = home.join("registry").join("src");
    let Ok(registries) = std::fs::read_dir(&src) else {
        return Ok(());
    };
    for registry in registries.flatten() {
        // Local overlays have no host in their name (`-<hash>`); remote ones start with it.
        if !registry.file_name().to_string_lossy().starts_with('-') {
            continue;
        }
        for name in AUTHOR_CRATES {
            let unpacked = registry.path().join(format!("{name}-{version}"));
            if unpacked.exists() {
                std::fs::remove_dir_all(&unpacked)
                    .with_context(|| format!("removing {}", unpacked.display()))?;
            }
        }
    }
    Ok(())
}

/// Packages (and verifies), dry-runs the publication, then runs the example's tests.
pub(crate) fn check() -> Result<()> {
    let cargo = cargo();
    let root = workspace_root();
    let target = root.join("target");
    // `cargo package` verifies each crate against the others' packaged copies, which it takes
    // from a local registry. Cargo never checks a registry crate's build for changes, so in a
    // shared target dir an earlier copy's build with the same version would be reused and the
    // verification would compile against stale code. Its own target dir, with the author crates'
    // builds removed first, verifies the current sources every time.
    let verify_dir = target.join("package-verify");
    let verify = verify_dir.to_str().context("the target dir is not UTF-8")?;
    let mut clean = vec!["clean", "--target-dir", verify];
    for name in AUTHOR_CRATES {
        clean.extend(["-p", name]);
    }
    run_cmd(&cargo, &clean, &[])?;
    let version = workspace_version(&root)?;
    remove_unpacked_overlays(&version)?;
    let mut package = vec!["package", "--locked", "--target-dir", verify];
    let mut publish = vec!["publish", "--dry-run", "--locked", "--no-verify"];
    for name in AUTHOR_CRATES {
        package.extend(["-p", name]);
        publish.extend(["-p", name]);
    }
    run_cmd(&cargo, &package, &[])?;
    // Verified by `cargo package` above; this adds the registry's own checks (metadata, names).
    run_cmd(&cargo, &publish, &[])?;

    let scratch = target.join(SCRATCH);
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    let crates = scratch.join("crates");
    std::fs::create_dir_all(&crates)?;
    let mut patches = String::from("[patch.crates-io]\n");
    for name in AUTHOR_CRATES {
        let file = verify_dir
            .join("package")
            .join(format!("{name}-{version}.crate"));
        // `-m`: the files get the current time. `.crate` files carry fixed mtimes, which would
        // make cargo take a changed crate's old build in the shared target dir as up to date.
        let status = Command::new("tar")
            .arg("-xzmf")
            .arg(&file)
            .arg("-C")
            .arg(&crates)
            .status()
            .with_context(|| format!("running tar on {}", file.display()))?;
        if !status.success() {
            bail!("unpacking {} failed ({status})", file.display());
        }
        let dir = crates.join(format!("{name}-{version}"));
        writeln!(
            patches,
            "{name} = {{ path = {:?} }}",
            dir.display().to_string()
        )?;
    }

    let example = scratch.join("example");
    copy_dir(&root.join(EXAMPLE), &example)?;
    // The workspace's lock pins the same third-party versions CI has already built.
    std::fs::copy(root.join("Cargo.lock"), example.join("Cargo.lock"))?;
    std::fs::create_dir_all(example.join(".cargo"))?;
    std::fs::write(example.join(".cargo/config.toml"), patches)?;

    println!(
        "\n==> {EXAMPLE}: cargo test against the packaged crates (in {})",
        example.display()
    );
    // Run from the copy so its `.cargo/config.toml` applies, also to the nested cargo that
    // `mcp_test_server::static_binary` runs. The shared target dir reuses compiled dependencies.
    let status = Command::new(&cargo)
        .args(["test", "--offline"])
        .current_dir(&example)
        .env("CARGO_TARGET_DIR", &target)
        .env("CARGO_NET_OFFLINE", "true")
        .status()
        .context("running cargo test on the example")?;
    if !status.success() {
        bail!("the backend-author example failed its tests ({status})");
    }
    Ok(())
}

/// `[workspace.package] version` from the root manifest.
fn workspace_version(root: &Path) -> Result<String> {
    let text = std::fs::read_to_string(root.join("Cargo.toml"))?;
    let doc: toml::Table = toml::from_str(&text)?;
    doc.get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("version"))
        .and_then(toml::Value::as_str)
        .map(str::to_owned)
        .context("no [workspace.package] version in Cargo.toml")
}

/// Copies a source tree (files and directories only).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let dest: PathBuf = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            if entry.file_name() != "target" {
                copy_dir(&entry.path(), &dest)?;
            }
        } else {
            std::fs::copy(entry.path(), &dest)?;
        }
    }
    Ok(())
}
