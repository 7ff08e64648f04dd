//! `cargo xtask manifests`: writes `examples/k8s/*.yaml` from the `mcp-k8s-resources` builders,
//! checks them (`--check`), and validates them with `kubernetes-validate` (`--validate`).
//!
//! The examples are generated, not written by hand, so they always show what the Kubernetes
//! backend really creates; `--check` fails when a file differs from what the builders produce
//! (rust-analyzer's codegen-check style), and `--validate` checks the schemas of the oldest and
//! newest Kubernetes versions we support.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use mcp_k8s_resources::{
    BuildOptions, Manifest, build_instance, build_namespace, build_rbac, to_yaml,
};
use mcp_types::{
    EnvValue, GpuSpec, InstanceId, McpServer, Quantity, ResourceRequirements, SizePreset,
    Timestamp, Transport, VolumeSpec,
};

/// Usage of the subcommand.
pub(crate) const USAGE: &str = "\
cargo xtask manifests [--check] [--validate]

  (no flag)    regenerate examples/k8s/*.yaml from the mcp-k8s-resources builders
  --check      fail, naming each file, when a file differs from what the builders produce
  --validate   --check, then validate every file with kubernetes-validate --strict against
               Kubernetes 1.33.0 and 1.37.0 (installed by xtask into target/python-tools)";

/// Where the examples live, relative to the workspace root.
const EXAMPLES_DIR: &str = "examples/k8s";
/// The command that regenerates the files, named in their header.
const COMMAND: &str = "cargo xtask manifests";
/// Oldest and newest Kubernetes versions we support; kubernetes-validate 1.37.0 (pinned in
/// xtask/python-requirements.txt) ships the schemas of 1.28.0 to 1.37.0.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// Fixed inputs so the output is byte-for-byte stable.
const NAMESPACE: &str = "mcpctl";
const CREATED_AT: &str = "2025-01-01T00:00:00Z";

/// Runs the subcommand with the arguments that follow `manifests`.
pub(crate) fn run(args: &[String]) -> Result<()> {
    let (mut check_only, mut validate_too) = (false, false);
    for arg in args {
        match arg.as_str() {
            "--check" => check_only = true,
            "--validate" => validate_too = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown manifests option {other:?}\n\n{USAGE}"),
        }
    }
    let root = crate::workspace_root();
    if check_only || validate_too {
        check(&root)?;
    } else {
        write(&root)?;
    }
    if validate_too {
        validate(&root)?;
    }
    Ok(())
}

/// Writes every generated file that differs from what is on disk.
pub(crate) fn write(root: &Path) -> Result<()> {
    let dir = root.join(EXAMPLES_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, content) in generate()? {
        let path = dir.join(name);
        if fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {EXAMPLES_DIR}/{name}");
    }
    Ok(())
}

/// Fails, naming every stale or missing file, when the files on disk are not what the
/// builders produce.
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut stale = Vec::new();
    for (name, content) in generate()? {
        let path = root.join(EXAMPLES_DIR).join(name);
        match fs::read_to_string(&path) {
            Ok(on_disk) if on_disk == content => {}
            Ok(_) => stale.push(format!(
                "{EXAMPLES_DIR}/{name} differs from the builders' output"
            )),
            Err(e) => stale.push(format!("{EXAMPLES_DIR}/{name} cannot be read: {e}")),
        }
    }
    if stale.is_empty() {
        println!("{EXAMPLES_DIR}: up to date");
        Ok(())
    } else {
        bail!("{}\nrun `{COMMAND}` to regenerate", stale.join("\n"))
    }
}

/// Validates every generated file with `kubernetes-validate --strict` against each supported
/// Kubernetes version, installing the pinned tool into xtask's venv under `target/` first (only
/// PyPI needs to be reachable).
pub(crate) fn validate(root: &Path) -> Result<()> {
    let tool = crate::python::ensure_tools()?.join("kubernetes-validate");
    let files: Vec<PathBuf> = generate()?
        .keys()
        .map(|name| root.join(EXAMPLES_DIR).join(name))
        .collect();
    for version in KUBERNETES_VERSIONS {
        println!("kubernetes-validate --strict -k {version}: {EXAMPLES_DIR}/*.yaml");
        let status = Command::new(&tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(&files)
            .current_dir(root)
            .status()
            .with_context(|| format!("cannot run {}", tool.display()))?;
        if !status.success() {
            bail!("kubernetes-validate found problems for Kubernetes {version} (see above)");
        }
    }
    Ok(())
}

/// Every example file: its name and its full content (header included).
fn generate() -> Result<BTreeMap<&'static str, String>> {
    let created_at: Timestamp = CREATED_AT.parse()?;
    let opts = BuildOptions::new(NAMESPACE, created_at);
    let instance = |spec: &McpServer, id: &str| build_instance(spec, &InstanceId::from(id), &opts);

    let http = instance(&http_server(), "mcp-fetch-7k2m9q4x1z")?;
    let pvc = instance(&pvc_server()?, "mcp-filesystem-3d8f6h1j5n")?;
    let gpu = instance(&gpu_server(), "mcp-embeddings-9w4t2r6y8b")?;

    let mut files = BTreeMap::new();
    let mut add = |name: &'static str, about: &str, manifests: Vec<Manifest>| -> Result<()> {
        let header = format!(
            "# Generated by `{COMMAND}` from the builders in crates/mcp-k8s-resources; do not edit.\n\
             # Regenerate with `{COMMAND}`; CI runs `{COMMAND} --check`.\n\
             # {about}\n"
        );
        files.insert(name, header + &to_yaml(&manifests)?);
        Ok(())
    };
    add(
        "namespace.yaml",
        "The namespace the servers run in, enforcing the restricted Pod Security Standard.",
        vec![build_namespace(NAMESPACE)?.into()],
    )?;
    add(
        "rbac.yaml",
        "The Kubernetes backend's ServiceAccount, Role (exactly the verbs it uses) and RoleBinding.",
        build_rbac(NAMESPACE, "mcpctl")?.into(),
    )?;
    add(
        "networkpolicy.yaml",
        "NetworkPolicy of the HTTP server in sample-mcp-pod.yaml: ingress from local proxies, egress allow-list + DNS.",
        http.network_policy
            .clone()
            .map(Manifest::from)
            .into_iter()
            .collect(),
    )?;
    add(
        "sample-mcp-pod.yaml",
        "An MCP server with the streamable-http transport: its ClusterIP Service and Pod.",
        http.service
            .clone()
            .map(Manifest::from)
            .into_iter()
            .chain([http.pod.clone().into()])
            .collect(),
    )?;
    add(
        "sample-mcp-pod-with-pvc.yaml",
        "A stdio MCP server on the default image with a persistent volume: the PersistentVolumeClaim and the Pod.",
        pvc.pvcs
            .iter()
            .cloned()
            .map(Manifest::from)
            .chain([pvc.pod.clone().into()])
            .collect(),
    )?;
    add(
        "sample-mcp-pod-with-gpu.yaml",
        "A stdio MCP server on one NVIDIA A100 GPU: the Pod.",
        vec![gpu.pod.clone().into()],
    )?;
    Ok(files)
}

fn http_server() -> McpServer {
    McpServer {
        transport: Transport::StreamableHttp,
        port: Some(8080),
        args: vec![
            "--transport".into(),
            "streamable-http".into(),
            "--port".into(),
            "8080".into(),
        ],
        env: BTreeMap::from([
            ("LOG_LEVEL".into(), EnvValue::plain("info")),
            (
                "API_TOKEN".into(),
                EnvValue::secret("fetch-credentials", "token"),
            ),
        ]),
        resources: ResourceRequirements::preset(SizePreset::Small),
        labels: BTreeMap::from([("team".into(), "platform".into())]),
        egress: Some(vec!["203.0.113.0/24".into()]),
        ..McpServer::new("fetch", "ghcr.io/example/mcp-fetch:1.0.0")
    }
}

fn pvc_server() -> Result<McpServer> {
    Ok(McpServer {
        // npx needs a writable home and cache; the root filesystem is read-only.
        env: BTreeMap::from([
            ("HOME".into(), EnvValue::plain("/tmp")),
            ("NPM_CONFIG_CACHE".into(), EnvValue::plain("/tmp/.npm")),
        ]),
        volumes: vec![VolumeSpec {
            name: "data".into(),
            size: Quantity::parse("5Gi")?,
            storage_class: Some("standard".into()),
            mount_path: "/data".into(),
            access_modes: Vec::new(),
            read_only: false,
        }],
        ..McpServer::command(
            "filesystem",
            "npx",
            ["-y", "@modelcontextprotocol/server-filesystem", "/data"],
        )
    })
}

fn gpu_server() -> McpServer {
    McpServer {
        gpu: Some(GpuSpec {
            product: Some("NVIDIA-A100-SXM4-40GB".into()),
            count: 1,
        }),
        resources: ResourceRequirements::preset(SizePreset::Large),
        ..McpServer::new("embeddings", "ghcr.io/example/mcp-embeddings:0.3.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_the_generated_header_and_is_stable() {
        let files = generate().unwrap();
        assert_eq!(files.len(), 6);
        for (name, content) in &files {
            assert!(
                content.starts_with("# Generated by `cargo xtask manifests`"),
                "{name}"
            );
            assert!(content.contains("kind: "), "{name}");
        }
        assert_eq!(files, generate().unwrap());
    }

    /// Runs under plain `cargo test` too, so stale examples fail the test suite.
    #[test]
    fn committed_examples_are_up_to_date() {
        check(&crate::workspace_root()).unwrap();
    }

    #[test]
    fn check_names_each_stale_file() {
        let dir = std::env::temp_dir().join(format!("xtask-manifests-{}", std::process::id()));
        let examples = dir.join(EXAMPLES_DIR);
        let _ = fs::remove_dir_all(&dir);
        write(&dir).unwrap();
        check(&dir).unwrap();
        fs::write(examples.join("rbac.yaml"), "# edited\n").unwrap();
        fs::remove_file(examples.join("namespace.yaml")).unwrap();
        let err = check(&dir).unwrap_err().to_string();
        assert!(err.contains("examples/k8s/rbac.yaml differs"), "{err}");
        assert!(
            err.contains("examples/k8s/namespace.yaml cannot be read"),
            "{err}"
        );
        assert!(!err.contains("networkpolicy.yaml"), "{err}");
        write(&dir).unwrap();
        check(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
