//! Images: making sure a server's image is present, pulling it (by repository and tag) when it
//! is missing.

use bollard::Docker;
use bollard::query_parameters::CreateImageOptionsBuilder;
use futures::TryStreamExt;
use mcp_orchestrator_api::{OrchestratorError, Result};
use tracing::info;

use crate::error::{Target, map_error};

/// Makes sure `image` is present, pulling it when missing.
pub(crate) async fn ensure_image(docker: &Docker, image: &str, endpoint: &str) -> Result<()> {
    let err = |e| map_error(e, Target::Image(image), endpoint);
    match docker.inspect_image(image).await {
        Ok(_) => return Ok(()),
        Err(e) => match err(e) {
            OrchestratorError::ImageNotAvailable { .. } => {}
            other => return Err(other),
        },
    }
    info!(%image, "image not present; pulling");
    let (from_image, tag) = split_tag(image);
    let mut options = CreateImageOptionsBuilder::new().from_image(from_image);
    if let Some(tag) = tag {
        options = options.tag(tag);
    }
    docker
        .create_image(Some(options.build()), None, None)
        .try_for_each(|_| async { Ok(()) })
        .await
        .map_err(err)
}

/// `repo:tag` -> (`repo`, `Some(tag)`); an untagged reference gets `latest` (pulling a
/// repository without a tag would pull every tag); a digest reference is passed whole.
fn split_tag(image: &str) -> (&str, Option<&str>) {
    if image.contains('@') {
        return (image, None);
    }
    let last = image.rsplit('/').next().unwrap_or(image);
    match last.rfind(':') {
        Some(i) => {
            let cut = image.len() - last.len() + i;
            (&image[..cut], Some(&image[cut + 1..]))
        }
        None => (image, Some("latest")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("img", "img", Some("latest"))]
    #[case("img:1", "img", Some("1"))]
    #[case("reg:5000/team/img", "reg:5000/team/img", Some("latest"))]
    #[case("reg:5000/team/img:2.0", "reg:5000/team/img", Some("2.0"))]
    #[case("img@sha256:abc", "img@sha256:abc", None)]
    fn image_references_split_into_repo_and_tag(
        #[case] image: &str,
        #[case] repo: &str,
        #[case] tag: Option<&str>,
    ) {
        assert_eq!(split_tag(image), (repo, tag));
    }
}
