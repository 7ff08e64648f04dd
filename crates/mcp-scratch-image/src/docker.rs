//! Builds and tags `FROM scratch` images through bollard, reusing an image whose label already
//! carries the binary's content hash.

use std::collections::HashMap;

use bollard::Docker;
use bollard::query_parameters::BuildImageOptionsBuilder;
use futures::StreamExt;
use sha2::{Digest, Sha256};

use crate::{Error, scratch_context_tar};

/// One `FROM scratch` image around a static binary.
#[derive(Debug, Clone, Copy)]
pub struct ScratchImage<'a> {
    /// The tag to build (and to reuse when it is current).
    pub tag: &'a str,
    /// The Dockerfile; it `COPY`s `binary_name`.
    pub dockerfile: &'a str,
    /// The binary's file name in the context.
    pub binary_name: &'a str,
    /// The binary's bytes.
    pub binary: &'a [u8],
    /// The image label that holds the hex SHA-256 of the binary and the Dockerfile.
    pub hash_label: &'a str,
    /// More labels for the image.
    pub labels: &'a [(&'a str, &'a str)],
}

impl ScratchImage<'_> {
    /// The hex SHA-256 that decides the image's content: the binary, then the Dockerfile.
    pub fn content_hash(&self) -> String {
        let mut both = Vec::with_capacity(self.binary.len() + self.dockerfile.len());
        both.extend_from_slice(self.binary);
        both.extend_from_slice(self.dockerfile.as_bytes());
        hex_sha256(&both)
    }
}

/// Makes sure image `image.tag` holds this binary and Dockerfile and returns the image id
/// (`sha256:...`): an existing image whose `hash_label` matches [`ScratchImage::content_hash`]
/// is reused; otherwise the image is built (nothing is pulled) with that label and tagged.
///
/// # Errors
/// [`Error::ImageBuild`] with the build log, [`Error::Docker`] for a refused request.
pub async fn ensure_scratch_image(
    docker: &Docker,
    image: &ScratchImage<'_>,
) -> Result<String, Error> {
    let hash = image.content_hash();
    if let Some(id) = image_with_label(docker, image.tag, image.hash_label, &hash).await? {
        return Ok(id);
    }
    let context = scratch_context_tar(image.dockerfile, image.binary_name, image.binary).map_err(
        |source| Error::Io {
            path: image.binary_name.into(),
            source,
        },
    )?;
    let mut labels = image.labels.to_vec();
    labels.push((image.hash_label, hash.as_str()));
    let log = build_image_from_context(docker, image.tag, context, &labels).await?;
    image_with_label(docker, image.tag, image.hash_label, &hash)
        .await?
        .ok_or_else(|| {
            build_error(
                image.tag,
                "the build finished but the tag does not carry the content hash",
                &log,
            )
        })
}

/// Builds `context` (a tar with a `Dockerfile`, e.g. from [`crate::scratch_context_tar`]) into
/// image `tag` with the `labels` pairs, and returns the build's output. Nothing is pulled for
/// `FROM scratch` contexts.
///
/// # Errors
/// [`Error::ImageBuild`] with the engine's message and the build output so far.
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

/// The id of image `tag` if it exists and its `label` is `value`.
async fn image_with_label(
    docker: &Docker,
    tag: &str,
    label: &str,
    value: &str,
) -> Result<Option<String>, Error> {
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
        .and_then(|l| l.get(label))
        .is_some_and(|h| h == value);
    Ok(if matches { image.id } else { None })
}

/// The lower-case hex SHA-256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    use std::fmt::Write;
    Sha256::digest(bytes)
        .iter()
        .fold(String::with_capacity(64), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
