//! Test helpers around the `mcp-test-server` binary, for other crates' tests: build it once as a
//! fully static binary ([`static_binary`]), pack it into a `FROM scratch` Docker build context
//! ([`docker_context_tar`]) and, with the `docker` feature, build and tag that image once per
//! process ([`ensure_docker_image`]).
//!
//! The binary (`src/main.rs`) is a real MCP server (`stdio`, `http --port P`) with the tools
//! `echo {text}`, `add {a, b}` and `env {name}`, and the runner for
//! [`mcp_orchestrator_api::fixture::FixtureScript`]s (`fixture ...`).
//!
//! # Use from another crate's tests
//!
//! Add `mcp-test-server = "0.1"` to `[dev-dependencies]` (with `features = ["docker"]` for the
//! image helpers; inside this repository `mcp-test-server.workspace = true`), then:
//!
//! ```no_run
//! use mcp_orchestrator_api::fixture::FixtureScript;
//!
//! // Blocking; from async tests wrap it in `tokio::task::spawn_blocking`.
//! let binary = mcp_test_server::static_binary()?;
//! let status = std::process::Command::new(&binary)
//!     .args(FixtureScript::new().stdout("hi").exit(3).to_args())
//!     .status()?;
//! assert_eq!(status.code(), Some(3));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! With the `docker` feature, `ensure_docker_image(&docker, DEFAULT_IMAGE_TAG).await?` gives an
//! image whose entry point is the binary: run it with `fixture ...`, `stdio` (the default
//! command) or `http --port 8080` as container arguments. The same image from a shell, with no
//! Rust code: `cargo install mcp-test-server --features docker` and then
//! `mcp-test-server build-image [--tag TAG]` (in this repository:
//! `cargo run -p mcp-test-server --features docker -- build-image`); it prints the tag and the
//! image id.
//!
//! Also with the `docker` feature, `ensure_time_server_image(&docker).await?` gives the tag of
//! an image running a real third-party stdio MCP server from PyPI (`mcp-server-time`, pinned in
//! `xtask/python-requirements.txt`), built locally from a debootstrapped Debian userland and
//! reused by content hash ([`ensure_python_server_image`] for other PyPI servers).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

#[cfg(feature = "docker")]
mod docker;
#[cfg(feature = "docker")]
pub use docker::{
    BINARY_HASH_LABEL, DEFAULT_IMAGE_TAG, build_docker_image, build_image_from_context,
    ensure_docker_image,
};
#[cfg(feature = "docker")]
mod python_image;
#[cfg(feature = "docker")]
pub use python_image::{
    DEBIAN_PACKAGES, DEBIAN_SUITE, PYTHON_IMAGE_HASH_LABEL, PYTHON_IMAGE_REPOSITORY,
    TIME_SERVER_COMMAND, TIME_SERVER_PACKAGE, VENV_DIR, build_python_server_image,
    ensure_python_server_image, ensure_time_server_image, pinned_requirement, python_image_hash,
    python_image_tag,
};

/// The binary's name (and the package's).
pub const BINARY_NAME: &str = "mcp-test-server";
/// The target the static binary is built for; naming it keeps the static `RUSTFLAGS` away from
/// build scripts and proc-macros, which are built for the host.
pub const STATIC_TARGET: &str = "x86_64-unknown-linux-gnu";
/// The cargo profile of the static build (defined by [`static_binary`] through environment
/// variables; this repository's `Cargo.toml` also declares it).
pub const STATIC_PROFILE: &str = "test-static";
/// Directory under the caller's target dir that holds the static build, so that it never
/// invalidates the normal build's artifacts.
pub const STATIC_TARGET_DIR: &str = "static-test-server";
/// Where the binary sits in the test image (its entry point).
pub const IMAGE_BINARY_PATH: &str = "/mcp-test-server";
/// Label carried by every test image, with the value `true`.
pub const TEST_IMAGE_LABEL: &str = "mcpctl.io/test-image";
/// The user the test image runs as.
pub const IMAGE_USER: &str = "1000:1000";

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
    /// Something the build needs is missing (root, debootstrap, a pinned requirement); the
    /// message names what to install or change.
    #[cfg(feature = "docker")]
    #[error("{0}")]
    Prerequisite(String),
}

/// Builds `mcp-test-server` as a fully static executable (glibc, `+crt-static`) for
/// [`STATIC_TARGET`] with the [`STATIC_PROFILE`] profile, in `<target dir>/`
/// [`STATIC_TARGET_DIR`], and returns its path. It runs anywhere, including a `FROM scratch`
/// image.
///
/// The build uses this crate's own manifest (in this repository: its workspace; as a
/// dependency: the package source, with the `Cargo.lock` it was published with), and puts the
/// result under the *calling* package's target directory (found from the `CARGO_MANIFEST_DIR`
/// that `cargo test` sets for the test process, or else from a `Cargo.toml` in the current
/// directory, as when `mcp-test-server build-image` is run by hand in a project), so nothing is
/// written next to a registry's sources. Cargo configuration found from the current directory (such as a
/// `[patch.crates-io]`) applies as usual. The profile is defined through
/// `CARGO_PROFILE_TEST_STATIC_*` variables, so no workspace needs a `[profile.test-static]`
/// section.
///
/// The build runs once per process (later calls return the cached path at once); concurrent
/// processes are serialized by cargo's own lock on the target dir. It blocks, and takes minutes
/// the first time (seconds when nothing changed); the time taken is printed to stderr. Call it
/// from async code through `tokio::task::spawn_blocking` when other tasks must keep running.
///
/// # Errors
/// [`Error`] when cargo cannot be run or the build fails (the error carries cargo's output).
pub fn static_binary() -> Result<PathBuf, Error> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    // A panic elsewhere while holding the lock leaves a still-valid Option behind.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = built.as_ref() {
        return Ok(path.clone());
    }
    let path = build_static()?;
    *built = Some(path.clone());
    Ok(path)
}

/// The running test's package manifest (cargo sets `CARGO_MANIFEST_DIR` at run time too), whose
/// target directory receives the build; this crate's own when there is none.
fn caller_manifest() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(|dir| Path::new(&dir).join("Cargo.toml"))
        .filter(|m| m.is_file())
        // `mcp-test-server build-image` run by hand from a project: that project's target dir.
        .or_else(|| Some(PathBuf::from("Cargo.toml")).filter(|m| m.is_file()))
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
}

/// The `cargo build` command for the static binary (also what [`static_binary_command`]
/// prints).
fn static_build_command(cargo: &OsString, manifest: &Path, target_dir: &Path) -> Command {
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(manifest)
        .args(["--package", BINARY_NAME, "--bin", BINARY_NAME])
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

/// The command line [`static_binary`] runs for this crate's manifest at `manifest` (for
/// documentation and for building the binary by hand), as one shell-ready string.
pub fn static_binary_command(manifest: &Path) -> String {
    format!(
        "CARGO_ENCODED_RUSTFLAGS={STATIC_RUSTFLAGS} CARGO_PROFILE_TEST_STATIC_INHERITS=dev \
         CARGO_PROFILE_TEST_STATIC_DEBUG=false CARGO_PROFILE_TEST_STATIC_STRIP=true \
         cargo build --manifest-path {} --package {BINARY_NAME} --bin {BINARY_NAME} \
         --profile {STATIC_PROFILE} --target {STATIC_TARGET}",
        manifest.display()
    )
}

fn build_static() -> Result<PathBuf, Error> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let target_dir = workspace_target_dir(&cargo, &caller_manifest())?.join(STATIC_TARGET_DIR);
    let started = Instant::now();
    run(&mut static_build_command(&cargo, &manifest, &target_dir))?;
    let binary = target_dir
        .join(STATIC_TARGET)
        .join(STATIC_PROFILE)
        .join(BINARY_NAME);
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
        "mcp-test-server: static build ready in {:.1?}: {}",
        started.elapsed(),
        binary.display()
    );
    Ok(binary)
}

/// The workspace's target directory, as cargo sees it (honours `CARGO_TARGET_DIR` and config).
fn workspace_target_dir(cargo: &OsString, manifest: &Path) -> Result<PathBuf, Error> {
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

/// Runs `cmd` to completion and returns its stdout; failures carry the end of its stderr.
fn run(cmd: &mut Command) -> Result<Vec<u8>, Error> {
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

/// The Dockerfile of the test image (inside [`docker_context_tar`]'s context).
pub fn dockerfile() -> String {
    format!(
        "FROM scratch\n\
         LABEL {TEST_IMAGE_LABEL}=\"true\"\n\
         COPY {BINARY_NAME} {IMAGE_BINARY_PATH}\n\
         USER {IMAGE_USER}\n\
         ENTRYPOINT [\"{IMAGE_BINARY_PATH}\"]\n\
         CMD [\"stdio\"]\n"
    )
}

/// An in-memory (uncompressed) tar build context for the test image: a `Dockerfile`
/// (`FROM scratch`, the binary at [`IMAGE_BINARY_PATH`] as the entry point, `CMD ["stdio"]`,
/// [`IMAGE_USER`], label [`TEST_IMAGE_LABEL`]`=true`) and `binary`, which must be static (see
/// [`static_binary`]). Feed it to the engine's build API, e.g. bollard's
/// `Docker::build_image(options, None, Some(bollard::body_full(tar.into())))`.
///
/// # Errors
/// [`Error::Io`] when `binary` cannot be read.
pub fn docker_context_tar(binary: &Path) -> Result<Vec<u8>, Error> {
    let bytes = std::fs::read(binary).map_err(|source| Error::Io {
        path: binary.to_owned(),
        source,
    })?;
    context_tar(&bytes).map_err(|source| Error::Io {
        path: binary.to_owned(),
        source,
    })
}

/// The build context around the binary's bytes.
pub(crate) fn context_tar(binary: &[u8]) -> std::io::Result<Vec<u8>> {
    scratch_context_tar(&dockerfile(), BINARY_NAME, binary)
}

/// An in-memory build context holding `dockerfile` (as `Dockerfile`) and an executable
/// `binary_name`, for `FROM scratch` images of static binaries. Entries carry fixed metadata
/// (mtime 0, root owner) so that the same inputs always give the same context.
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
    fn context_holds_dockerfile_and_executable_binary() {
        let tar_bytes = context_tar(b"\x7fELF fake").unwrap();
        let mut archive = tar::Archive::new(tar_bytes.as_slice());
        let mut seen = Vec::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mode = entry.header().mode().unwrap();
            let mut body = String::new();
            std::io::Read::read_to_string(&mut entry, &mut body).unwrap();
            seen.push((path, mode, body));
        }
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0].0, "Dockerfile");
        let df = &seen[0].2;
        assert!(df.starts_with("FROM scratch\n"), "{df}");
        assert!(
            df.contains("COPY mcp-test-server /mcp-test-server\n"),
            "{df}"
        );
        assert!(df.contains("USER 1000:1000\n"), "{df}");
        assert!(df.contains("ENTRYPOINT [\"/mcp-test-server\"]\n"), "{df}");
        assert!(df.contains("LABEL mcpctl.io/test-image=\"true\"\n"), "{df}");
        assert_eq!(
            seen[1],
            (
                "mcp-test-server".to_owned(),
                0o755,
                "\x7fELF fake".to_owned()
            )
        );
        // Deterministic: same binary, same bytes.
        assert_eq!(tar_bytes, context_tar(b"\x7fELF fake").unwrap());
    }

    #[test]
    fn missing_binary_is_an_io_error() {
        let err = docker_context_tar(Path::new("/nonexistent/mcp-test-server")).unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
    }
}
