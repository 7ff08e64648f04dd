//! Builds and tags the `FROM scratch` test image through `mcp_scratch_image`, once per process
//! and tag, reusing an image already carrying the current content hash.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use mcp_scratch_image::{ScratchImage, ensure_scratch_image};
use tokio::sync::OnceCell;

use crate::{BINARY_NAME, Error, TEST_IMAGE_LABEL, dockerfile, static_binary};

/// The tag tests use for the test image unless they need their own.
pub const DEFAULT_IMAGE_TAG: &str = "mcp-test-server:test";
/// Image label holding the hex SHA-256 of the binary and Dockerfile inside, set at build time.
pub const BINARY_HASH_LABEL: &str = "mcpctl.io/test-image-binary-sha256";

/// Makes sure the Docker image `tag` holds the current [`static_binary`] and returns the image
/// id (`sha256:...`), once per tag and process: later calls return the same id at once (see
/// [`build_docker_image`] for what the first call does). Either the tag or the id can be used
/// to create containers. Pass a client whose API version is negotiated
/// (`Docker::connect_with_local_defaults()?.negotiate_version().await?`).
///
/// # Errors
/// [`Error`] when the binary cannot be built or the engine refuses a request or the build; a
/// failed attempt is not cached.
pub async fn ensure_docker_image(docker: &Docker, tag: &str) -> Result<String, Error> {
    static IMAGES: Mutex<BTreeMap<String, Arc<OnceCell<String>>>> = Mutex::new(BTreeMap::new());
    let cell = IMAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(tag.to_owned())
        .or_default()
        .clone();
    cell.get_or_try_init(|| build_docker_image(docker, tag))
        .await
        .cloned()
}

/// [`ensure_docker_image`] without the per-process cache: builds the static binary if needed
/// (on a blocking thread), reuses the image `tag` when its [`BINARY_HASH_LABEL`] matches, and
/// otherwise builds it from [`crate::docker_context_tar`]'s context (`FROM scratch`: nothing
/// is pulled) with that label, and tags it. Returns the image id.
///
/// # Errors
/// [`Error`] when the binary cannot be built or the engine refuses a request or the build.
pub async fn build_docker_image(docker: &Docker, tag: &str) -> Result<String, Error> {
    let bytes = tokio::task::spawn_blocking(|| {
        let binary = static_binary()?;
        std::fs::read(&binary).map_err(|source| Error::Io {
            path: binary.clone(),
            source,
        })
    })
    .await
    .map_err(|e| Error::Io {
        path: BINARY_NAME.into(),
        source: std::io::Error::other(e),
    })??;
    let dockerfile = dockerfile();
    ensure_scratch_image(
        docker,
        &ScratchImage {
            tag,
            dockerfile: &dockerfile,
            binary_name: BINARY_NAME,
            binary: &bytes,
            hash_label: BINARY_HASH_LABEL,
            labels: &[(TEST_IMAGE_LABEL, "true")],
        },
    )
    .await
}
