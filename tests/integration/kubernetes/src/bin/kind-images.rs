//! `kind-images`: builds the images the kind integration tests run, in the local Docker engine,
//! for `cargo xtask kind-test` to `kind load` into the cluster: the test MCP server (through
//! `mcp_test_server::ensure_docker_image`) and the probe (a `FROM scratch` image around the
//! static `mcp-k8s-probe` binary). Nothing is pulled: both images are `FROM scratch`.
//!
//! Usage: `kind-images --server-tag TAG --probe-tag TAG --probe-binary PATH`

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use bollard::Docker;

/// Where the probe sits in its image (the entry point).
const PROBE_PATH: &str = "/mcp-k8s-probe";
/// Label marking images built for the tests, as the test server's image does.
const TEST_IMAGE_LABEL: &str = "mcpctl.io/test-image";

struct Args {
    server_tag: String,
    probe_tag: String,
    probe_binary: PathBuf,
}

fn parse(args: &[String]) -> Result<Args> {
    let (mut server_tag, mut probe_tag, mut probe_binary) = (None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it
            .next()
            .with_context(|| format!("{flag} needs a value"))?
            .clone();
        match flag.as_str() {
            "--server-tag" => server_tag = Some(value),
            "--probe-tag" => probe_tag = Some(value),
            "--probe-binary" => probe_binary = Some(PathBuf::from(value)),
            other => bail!("unknown flag {other:?}"),
        }
    }
    Ok(Args {
        server_tag: server_tag.context("--server-tag is required")?,
        probe_tag: probe_tag.context("--probe-tag is required")?,
        probe_binary: probe_binary.context("--probe-binary is required")?,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args = parse(&args)
        .context("usage: kind-images --server-tag TAG --probe-tag TAG --probe-binary PATH")?;
    let docker = Docker::connect_with_local_defaults()
        .context("no Docker engine configured")?
        .negotiate_version()
        .await
        .context("the Docker engine does not answer")?;

    let id = mcp_test_server::ensure_docker_image(&docker, &args.server_tag)
        .await
        .with_context(|| format!("building {}", args.server_tag))?;
    println!("{}: {id}", args.server_tag);

    let id = build_probe_image(&docker, &args.probe_tag, &args.probe_binary).await?;
    println!("{}: {id}", args.probe_tag);
    Ok(())
}

/// The probe's Dockerfile: the binary as entry point, as the restricted profile's uid 1000.
fn dockerfile() -> String {
    format!(
        "FROM scratch\n\
         LABEL {TEST_IMAGE_LABEL}=\"true\"\n\
         COPY mcp-k8s-probe {PROBE_PATH}\n\
         USER 1000:1000\n\
         ENTRYPOINT [\"{PROBE_PATH}\"]\n"
    )
}

async fn build_probe_image(docker: &Docker, tag: &str, binary: &Path) -> Result<String> {
    let bytes = std::fs::read(binary).with_context(|| {
        format!(
            "cannot read the static probe {} (cargo xtask kind-test builds it first)",
            binary.display()
        )
    })?;
    let context = mcp_test_server::scratch_context_tar(&dockerfile(), "mcp-k8s-probe", &bytes)
        .context("packing the build context")?;
    let log = mcp_test_server::build_image_from_context(
        docker,
        tag,
        context,
        &[(TEST_IMAGE_LABEL, "true")],
    )
    .await
    .with_context(|| format!("building {tag}"))?;
    let image = docker
        .inspect_image(tag)
        .await
        .with_context(|| format!("{tag} is missing after its build:\n{log}"))?;
    image
        .id
        .with_context(|| format!("{tag} has no id after its build"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        let a: Vec<String> = [
            "--server-tag",
            "s:kind",
            "--probe-tag",
            "p:kind",
            "--probe-binary",
            "/x",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        let parsed = parse(&a).unwrap();
        assert_eq!(
            (parsed.server_tag.as_str(), parsed.probe_tag.as_str()),
            ("s:kind", "p:kind")
        );
        assert!(parse(&a[..4]).is_err());
        assert!(parse(&["--bogus".to_owned(), "1".to_owned()]).is_err());
    }

    #[test]
    fn context_holds_a_scratch_dockerfile_and_the_binary() {
        let bytes =
            mcp_test_server::scratch_context_tar(&dockerfile(), "mcp-k8s-probe", b"\x7fELF")
                .unwrap();
        let mut archive = tar::Archive::new(bytes.as_slice());
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["Dockerfile", "mcp-k8s-probe"]);
        let df = dockerfile();
        assert!(
            df.starts_with("FROM scratch\n") && df.contains("USER 1000:1000"),
            "{df}"
        );
    }
}
