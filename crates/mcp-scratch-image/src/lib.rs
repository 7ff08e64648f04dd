//! Static binaries of this workspace's programs and the `FROM scratch` images around them,
//! built locally (nothing is pulled) and reused by content hash.
//!
//! [`static_binary`] runs `cargo build` for one package's binary as a fully static executable
//! (glibc, `+crt-static`) for [`STATIC_TARGET`] with the [`STATIC_PROFILE`] profile, under the
//! calling package's target directory in [`STATIC_TARGET_DIR`]; every program built this way
//! shares that directory, so their common dependencies compile once. [`scratch_context_tar`]
//! packs a Dockerfile and the binary into a build context, and (feature `docker`)
//! [`ensure_scratch_image`] builds and tags it through bollard unless the tag already carries
//! the binary's hash. The test server (`mcp-test-server`) and the egress proxy
//! (`mcp-egress-proxy`) are built this way.
//!
//! A static glibc program cannot load the NSS modules `getaddrinfo` needs, so programs in such
//! images resolve names themselves (from `/etc/resolv.conf`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

#[cfg(feature = "docker")]
mod docker;
#[cfg(feature = "docker")]
pub use docker::{ScratchImage, build_image_from_context, ensure_scratch_image, hex_sha256};

/// The target static binaries are built for; naming it keeps the static `RUSTFLAGS` away from
/// build scripts and proc-macros, which are built for the host.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile of the static build (defined by [`static_binary`] through environment
/// variables; this repository's `Cargo.toml` also declares it): unoptimized (about half the
/// compile time of opt-level 1) and stripped.
pub const STATIC_PROFILE: &str = "test-static";
/// Directory under the caller's target dir that holds the static builds, so that they never
/// invalidate the normal build's artifacts.
pub const STATIC_TARGET_DIR: &str = "static-test-server";

const STATIC_RUSTFLAGS: &str = "-Ctarget-feature=+crt-static";

/// Errors of the helpers.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A command could not be started.
    #[error("cannot run {command}: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("{command} failed ({status}):\n{output}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The end of its stderr.
        output: String,
    },
    /// `cargo metadata` output without a usable `target_directory`.
    #[error("cargo metadata: {0}")]
    Metadata(String),
    /// Reading or inspecting a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The Docker engine refused a request.
    #[cfg(feature = "docker")]
    #[error("docker: {0}")]
    Docker(#[from] bollard::errors::Error),
    /// The image build failed; carries the build log.
    #[cfg(feature = "docker")]
    #[error("building image {tag}: {message}")]
    ImageBuild {
        /// The tag being built.
        tag: String,
        /// The engine's error and the build output.
        message: String,
    },
    /// Something a build needs is missing (root, a tool, a pinned requirement); the message
    /// names what to install or change.
    #[error("{0}")]
    Prerequisite(String),
}

/// One binary of one package, to be built statically.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticBuild<'a> {
    /// The package's own `Cargo.toml` (`concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")` in
    /// that package): inside this repository its workspace, as a dependency its published
    /// source with its `Cargo.lock`.
    pub manifest: &'a Path,
    /// The package name.
    pub package: &'a str,
    /// The binary's name.
    pub bin: &'a str,
}

/// Builds `build`'s binary as a fully static executable and returns its path, once per
/// process and binary (later calls return the cached path at once). It runs anywhere,
/// including a `FROM scratch` image.
///
/// The result goes under the *calling* package's target directory (found from the
/// `CARGO_MANIFEST_DIR` that `cargo test` sets for the test process, or else from a
/// `Cargo.toml` in the current directory), in [`STATIC_TARGET_DIR`], so nothing is written
/// next to a registry's sources. Cargo configuration found from the current directory (such as
/// a `[patch.crates-io]`) applies as usual. The profile is defined through
/// `CARGO_PROFILE_TEST_STATIC_*` variables, so no workspace needs a `[profile.test-static]`
/// section. Concurrent processes are serialized by cargo's own lock on the target dir. It
/// blocks, and takes minutes the first time (seconds when nothing changed); the time taken is
/// printed to stderr. Call it from async code through `tokio::task::spawn_blocking`.
///
/// # Errors
/// [`Error`] when cargo cannot be run or the build fails (the error carries cargo's output).
pub fn static_binary(build: &StaticBuild<'_>) -> Result<PathBuf, Error> {
    static BUILT: Mutex<BTreeMap<(String, String), PathBuf>> = Mutex::new(BTreeMap::new());
    let key = (build.package.to_owned(), build.bin.to_owned());
    // Held through the build: two threads asking for one binary build it once.
    let mut cache = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = cache.get(&key) {
        return Ok(path.clone());
    }
    let path = build_static(build)?;
    cache.insert(key, path.clone());
    Ok(path)
}

/// The running test's package manifest (cargo sets `CARGO_MANIFEST_DIR` at run time too), whose
/// target directory receives the build; `fallback` when there is none.
fn caller_manifest(fallback: &Path) -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|dir| Path::new(&dir).join("Cargo.toml"))
        .filter(|m| m.is_file())
        // A program run by hand from a project: that project's target dir.
        .or_else(|| Some(PathBuf::from("Cargo.toml")).filter(|m| m.is_file()))
        .unwrap_or_else(|| fallback.to_owned())
}

/// The `cargo build` command for the static binary.
fn static_build_command(cargo: &OsString, build: &StaticBuild<'_>, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(build.manifest)
        .args(["--package", build.package, "--bin", build.bin])
        .args(["--profile", STATIC_PROFILE, "--target", STATIC_TARGET])
        .arg("--target-dir")
        .arg(target_dir)
        // CARGO_ENCODED_RUSTFLAGS wins over every other rustflags source (env or config), so a
        // caller's own flags cannot drop crt-static.
        .env("CARGO_ENCODED_RUSTFLAGS", STATIC_RUSTFLAGS)
        // The profile, for workspaces that do not define it (values as in this repository's).
        .env("CARGO_PROFILE_TEST_STATIC_INHERITS", "dev")
        .env("CARGO_PROFILE_TEST_STATIC_DEBUG", "false")
        .env("CARGO_PROFILE_TEST_STATIC_STRIP", "true")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    cmd
}

/// The command line [`static_binary`] runs for `build` (for documentation and for building
/// the binary by hand), as one shell-ready string.
pub fn static_binary_command(build: &StaticBuild<'_>) -> String {
    format!(
        "CARGO_ENCODED_RUSTFLAGS={STATIC_RUSTFLAGS} CARGO_PROFILE_TEST_STATIC_INHERITS=dev \
         CARGO_PROFILE_TEST_STATIC_DEBUG=false CARGO_PROFILE_TEST_STATIC_STRIP=true \
         cargo build --manifest-path {} --package {} --bin {} \
         --profile {STATIC_PROFILE} --target {STATIC_TARGET}",
        build.manifest.display(),
        build.package,
        build.bin
    )
}

fn build_static(build: &StaticBuild<'_>) -> Result<PathBuf, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let target_dir =
        workspace_target_dir(&cargo, &caller_manifest(build.manifest))?.join(STATIC_TARGET_DIR);
    let started = Instant::now();
    run(&mut static_build_command(&cargo, build, &target_dir))?;
    let binary = target_dir
        .join(STATIC_TARGET)
        .join(STATIC_PROFILE)
        .join(build.bin);
    if !binary.is_file() {
        return Err(Error::Io {
            path: binary,
            source: std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "cargo build succeeded but the binary is missing",
            ),
        });
    }
    eprintln!(
        "{}: static build ready in {:.1?}: {}",
        build.bin,
        started.elapsed(),
        binary.display()
    );
    Ok(binary)
}

/// The target directory of the workspace of `manifest`, as cargo sees it (honours
/// `CARGO_TARGET_DIR` and config).
///
/// # Errors
/// When `cargo metadata` fails or its output has no target directory.
pub fn workspace_target_dir(cargo: &OsString, manifest: &Path) -> Result<PathBuf, Error> {
    let mut cmd = Command::new(cargo);
    cmd.args([
        "metadata",
        "--format-version",
        "1",
        "--no-deps",
        "--offline",
    ])
    .arg("--manifest-path")
    .arg(manifest);
    let stdout = run(&mut cmd)?;
    let meta: serde_json::Value =
        serde_json::from_slice(&stdout).map_err(|e| Error::Metadata(e.to_string()))?;
    meta.get("target_directory")
        .and_then(serde_json::Value::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| Error::Metadata("no target_directory in its output".to_owned()))
}

/// Runs `cmd` to completion (stdin closed) and returns its stdout; failures carry the end of
/// its stderr.
///
/// # Errors
/// [`Error::Spawn`] when it cannot start, [`Error::CommandFailed`] when it fails.
pub fn run(cmd: &mut Command) -> Result<Vec<u8>, Error> {
    let command = format!("{cmd:?}");
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            command: command.clone(),
            source,
        })?;
    if out.status.success() {
        return Ok(out.stdout);
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(60)..].join("\n");
    Err(Error::CommandFailed {
        command,
        status: out.status,
        output: tail,
    })
}

/// An in-memory build context holding `dockerfile` (as `Dockerfile`) and an executable
/// `binary_name`, for `FROM scratch` images of static binaries. Entries carry fixed metadata
/// (mtime 0, root owner) so that the same inputs always give the same context. Feed it to the
/// engine's build API (e.g. [`build_image_from_context`]).
///
/// # Errors
/// An IO error from the tar writer.
pub fn scratch_context_tar(
    dockerfile: &str,
    binary_name: &str,
    binary: &[u8],
) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut append = |name: &str, mode: u32, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, name, data)
    };
    append("Dockerfile", 0o644, dockerfile.as_bytes())?;
    append(binary_name, 0o755, binary)?;
    tar.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_is_deterministic_with_an_executable_binary() {
        let tar_bytes = scratch_context_tar("FROM scratch\n", "prog", b"\x7fELF").unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let entries: Vec<(String, u32)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            entries,
            vec![("Dockerfile".to_owned(), 0o644), ("prog".to_owned(), 0o755)]
        );
        assert_eq!(
            tar_bytes,
            scratch_context_tar("FROM scratch\n", "prog", b"\x7fELF").unwrap()
        );
    }

    #[test]
    fn the_command_names_package_bin_profile_and_target() {
        let build = StaticBuild {
            manifest: Path::new("/src/p/Cargo.toml"),
            package: "p",
            bin: "prog",
        };
        let line = static_binary_command(&build);
        for part in [
            "--manifest-path /src/p/Cargo.toml",
            "--package p --bin prog",
            "--profile test-static",
            "--target x86_64-unknown-linux-gnu",
            "+crt-static",
        ] {
            assert!(line.contains(part), "{part} not in {line}");
        }
    }

    #[test]
    fn a_failing_command_carries_its_stderr() {
        let err = run(Command::new("sh").args(["-c", "echo boom >&2; exit 3"])).unwrap_err();
        assert!(
            matches!(&err, Error::CommandFailed { output, .. } if output.contains("boom")),
            "{err}"
        );
        let err = run(&mut Command::new("/nonexistent/program")).unwrap_err();
        assert!(matches!(err, Error::Spawn { .. }), "{err}");
    }
}
