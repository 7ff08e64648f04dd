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

use std::path::{Path, PathBuf};

pub use mcp_scratch_image::{
    Error, STATIC_PROFILE, STATIC_TARGET, STATIC_TARGET_DIR, StaticBuild, scratch_context_tar,
};

#[cfg(feature = "docker")]
mod docker;
#[cfg(feature = "docker")]
pub use docker::{BINARY_HASH_LABEL, DEFAULT_IMAGE_TAG, build_docker_image, ensure_docker_image};
#[cfg(feature = "docker")]
pub use mcp_scratch_image::build_image_from_context;
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
/// Where the binary sits in the test image (its entry point).
pub const IMAGE_BINARY_PATH: &str = "/mcp-test-server";
/// Label carried by every test image, with the value `true`.
pub const TEST_IMAGE_LABEL: &str = "mcpctl.io/test-image";
/// The user the test image runs as.
pub const IMAGE_USER: &str = "1000:1000";

/// Builds `mcp-test-server` as a fully static executable (glibc, `+crt-static`) for
/// [`STATIC_TARGET`] with the [`STATIC_PROFILE`] profile, in `<target dir>/`
/// [`STATIC_TARGET_DIR`], and returns its path. It runs anywhere, including a `FROM scratch`
/// image.
///
/// This is [`mcp_scratch_image::static_binary`] for this package. The build uses this crate's
/// own manifest (in this repository: its workspace; as a
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
    mcp_scratch_image::static_binary(&static_build(&own_manifest()))
}

/// This crate's own manifest, which the static build uses.
fn own_manifest() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")
}

fn static_build(manifest: &Path) -> StaticBuild<'_> {
    StaticBuild {
        manifest,
        package: BINARY_NAME,
        bin: BINARY_NAME,
    }
}

/// The command line [`static_binary`] runs for this crate's manifest at `manifest` (for
/// documentation and for building the binary by hand), as one shell-ready string.
pub fn static_binary_command(manifest: &Path) -> String {
    mcp_scratch_image::static_binary_command(&static_build(manifest))
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
