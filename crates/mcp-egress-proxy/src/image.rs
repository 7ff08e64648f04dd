//! The proxy's container image: the static binary in a `FROM scratch` image, built locally
//! through `mcp_scratch_image` (nothing is pulled) and reused while the binary and Dockerfile
//! are unchanged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bollard::Docker;
use mcp_scratch_image::{Error, ScratchImage, StaticBuild, ensure_scratch_image};
use tokio::sync::OnceCell;

use crate::{BINARY_NAME, DEFAULT_PORT};

/// The tag the Docker backend builds and uses unless configured otherwise.
pub const DEFAULT_IMAGE_TAG: &str = "mcp-egress-proxy:local";
/// Image label holding the hex SHA-256 of the binary and Dockerfile inside.
pub const IMAGE_HASH_LABEL: &str = "mcpctl.io/egress-proxy-sha256";
/// Label set to `true` on the image.
pub const IMAGE_LABEL: &str = "mcpctl.io/egress-proxy-image";
/// Where the binary sits in the image (its entry point).
pub const IMAGE_BINARY_PATH: &str = "/mcp-egress-proxy";
/// The user the image runs as.
pub const IMAGE_USER: &str = "1000:1000";

/// The Dockerfile: the binary as entry point, and a default command that admits nothing
/// (a container started without a policy refuses everything).
pub fn dockerfile() -> String {
    format!(
        "FROM scratch\n\
         LABEL {IMAGE_LABEL}=\"true\"\n\
         COPY {BINARY_NAME} {IMAGE_BINARY_PATH}\n\
         USER {IMAGE_USER}\n\
         EXPOSE {DEFAULT_PORT}\n\
         ENTRYPOINT [\"{IMAGE_BINARY_PATH}\"]\n\
         CMD [\"--listen\", \"0.0.0.0:{DEFAULT_PORT}\", \"--policy-json\", \"\\\"none\\\"\"]\n"
    )
}

/// Builds the proxy as a fully static executable (see [`mcp_scratch_image::static_binary`]),
/// once per process, and returns its path. Blocking.
///
/// # Errors
/// When cargo cannot be run or the build fails.
pub fn static_binary() -> Result<PathBuf, Error> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    mcp_scratch_image::static_binary(&StaticBuild {
        manifest: &manifest,
        package: env!("CARGO_PKG_NAME"),
        bin: BINARY_NAME,
    })
}

/// Makes sure image `tag` holds the current static proxy and returns its id, once per tag and
/// process (later calls answer at once; a failed attempt is not cached). The first call builds
/// the binary with cargo (minutes the first time, seconds when nothing changed) and the image
/// when the tag does not already carry the content hash.
///
/// # Errors
/// When the binary cannot be built or the engine refuses a request or the build.
pub async fn ensure_proxy_image(docker: &Docker, tag: &str) -> Result<String, Error> {
    static IMAGES: Mutex<BTreeMap<String, Arc<OnceCell<String>>>> = Mutex::new(BTreeMap::new());
    let cell = IMAGES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(tag.to_owned())
        .or_default()
        .clone();
    cell.get_or_try_init(|| build(docker, tag)).await.cloned()
}

async fn build(docker: &Docker, tag: &str) -> Result<String, Error> {
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
            hash_label: IMAGE_HASH_LABEL,
            labels: &[],
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfile_defaults_to_admitting_nothing() {
        let df = dockerfile();
        assert!(df.starts_with("FROM scratch\n"), "{df}");
        assert!(df.contains("ENTRYPOINT [\"/mcp-egress-proxy\"]"), "{df}");
        assert!(
            df.contains(r#"CMD ["--listen", "0.0.0.0:3128", "--policy-json", "\"none\""]"#),
            "{df}"
        );
        assert!(df.contains("USER 1000:1000\n"), "{df}");
    }
}
