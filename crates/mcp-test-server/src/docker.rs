//! Builds and tags the `FROM scratch` test image through bollard, once per process and tag,
//! reusing an image already carrying the current binary's content hash.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;

use crate::{Error, context_tar, static_binary};

/// The tag tests use for the test image unless they need their own.
pub const DEFAULT_IMAGE_TAG: &str = "mcp-test-server:test";
/// Image label holding the hex SHA-256 of the binary inside, set at build time.
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
/// (on a blocking thread), reuses the image `tag` when its [`BINARY_HASH_LABEL`] matches the
/// binary's SHA-256, and otherwise builds it from [`crate::docker_context_tar`]'s context
/// (`FROM scratch`: nothing is pulled) with that label, and tags it. Returns the image id.
///
/// # Errors
/// [`Error`] when the binary cannot be built or the engine refuses a request or the build.
pub async fn build_docker_image(docker: &Docker, tag: &str) -> Result<String, Error> {
    let (binary, bytes) = tokio::task::spawn_blocking(|| {
        let binary = static_binary()?;
        let bytes = std::fs::read(&binary).map_err(|source| Error::Io {
            path: binary.clone(),
            source,
        })?;
        Ok::<_, Error>((binary, bytes))
    })
    .await
    .map_err(|e| Error::Io {
        path: crate::BINARY_NAME.into(),
        source: std::io::Error::other(e),
    })??;
    let hash = hex_sha256(&bytes);

    if let Some(id) = image_with_hash(docker, tag, &hash).await? {
        return Ok(id);
    }
    let context = context_tar(&bytes).map_err(|source| Error::Io {
        path: binary.clone(),
        source,
    })?;
    let log = build_image_from_context(docker, tag, context, &[(BINARY_HASH_LABEL, hash.as_str())])
        .await?;
    image_with_hash(docker, tag, &hash).await?.ok_or_else(|| {
        build_error(
            tag,
            "the build finished but the tag does not carry the binary's hash",
            &log,
        )
    })
}

/// Builds `context` (a tar with a `Dockerfile`, e.g. from [`crate::scratch_context_tar`]) into
/// image `tag` with the `labels` pairs, and returns the build's output. Nothing is pulled for
/// `FROM scratch` contexts.
///
/// # Errors
/// [`Error::ImageBuild`] with the engine's message and the build output so far, or
/// [`Error::Docker`] for a refused request.
pub async fn build_image_from_context(
    docker: &Docker,
    tag: &str,
    context: Vec<u8>,
    labels: &[(&str, &str)],
) -> Result<String, Error> {
    let labels: HashMap<&str, &str> = labels.iter().copied().collect();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(tag)
        .labels(&labels)
        .rm(true)
        .forcerm(true)
        .build();
    let mut log = String::new();
    let mut progress = docker.build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(item) = progress.next().await {
        match item {
            Ok(info) => {
                if let Some(line) = info.stream {
                    log.push_str(&line);
                }
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    return Err(build_error(tag, &message, &log));
                }
            }
            Err(e) => return Err(build_error(tag, &e.to_string(), &log)),
        }
    }
    Ok(log)
}

fn build_error(tag: &str, message: &str, log: &str) -> Error {
    Error::ImageBuild {
        tag: tag.to_owned(),
        message: format!("{message}\n{log}"),
    }
}

/// The id of image `tag` if it exists and was built from a binary with this hash.
async fn image_with_hash(docker: &Docker, tag: &str, hash: &str) -> Result<Option<String>, Error> {
    let image = match docker.inspect_image(tag).await {
        Ok(image) => image,
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let matches = image
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(BINARY_HASH_LABEL))
        .is_some_and(|h| h == hash);
    Ok(if matches { image.id } else { None })
}

fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
