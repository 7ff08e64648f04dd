//! `cargo xtask manifests`: writes `examples/k8s/*.yaml` from the `mcp-k8s-resources` builders,
//! checks them (`--check`), and validates them with `kubernetes-validate` (`--validate`).
//!
//! The examples are generated, not written by hand, so they always show what the Kubernetes
//! backend really creates; `--check` fails when a file differs from what the builders produce
//! (rust-analyzer's codegen-check style), and `--validate` checks the schemas of the oldest and
//! newest Kubernetes versions we support.
//!
//! `--validate` also validates every ```` ```yaml ```` block of `docs/*.md` the same way: a YAML
//! snippet in the documentation is either a reference to one of the generated files (by path,
//! never copied) or a complete object that passes `kubernetes-validate --strict` for every
//! supported version. The blocks are written to `target/doc-yaml/<doc>-L<line>.yaml` first, so
//! an error names the document and the line of the block.

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
  --validate   --check, then validate every file, and every ```yaml block of docs/*.md, with
               kubernetes-validate --strict against Kubernetes 1.33.0 and 1.37.0 (installed by
               xtask into target/python-tools)";

/// Where the examples live, relative to the workspace root.
const EXAMPLES_DIR: &str = "examples/k8s";
/// The command that regenerates the files, named in their header.
const COMMAND: &str = "cargo xtask manifests";
/// Oldest and newest Kubernetes versions we support; kubernetes-validate 1.37.0 (pinned in
/// xtask/python-requirements.txt) ships the schemas of 1.28.0 to 1.37.0.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.33.0", "1.37.0"];

/// Documentation whose ```yaml blocks are validated, relative to the workspace root.
const DOCS_DIR: &str = "docs";
/// Where the extracted blocks are written for the validator, relative to the workspace root.
const DOC_SNIPPETS_DIR: &str = "target/doc-yaml";

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

/// The `.yaml` files of the examples directory that the builders do not make.
fn strays(dir: &Path, generated: &BTreeMap<&'static str, String>) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            Path::new(n)
                .extension()
                .is_some_and(|x| x.eq_ignore_ascii_case("yaml"))
                && !generated.contains_key(n.as_str())
        })
        .collect();
    out.sort();
    out
}

/// Writes every generated file that differs from what is on disk and removes the `.yaml` files
/// the builders no longer make.
pub(crate) fn write(root: &Path) -> Result<()> {
    let dir = root.join(EXAMPLES_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let generated = generate()?;
    for name in strays(&dir, &generated) {
        let path = dir.join(&name);
        fs::remove_file(&path).with_context(|| format!("cannot remove {}", path.display()))?;
        println!("removed {EXAMPLES_DIR}/{name} (no builder makes it)");
    }
    for (name, content) in generated {
        let path = dir.join(name);
        if fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            continue;
        }
        fs::write(&path, content).with_context(|| format!("cannot write {}", path.display()))?;
        println!("wrote {EXAMPLES_DIR}/{name}");
    }
    Ok(())
}

/// Fails, naming every stale, missing or extra file, when the `.yaml` files on disk are not
/// what the builders produce.
pub(crate) fn check(root: &Path) -> Result<()> {
    let generated = generate()?;
    let mut stale: Vec<String> = strays(&root.join(EXAMPLES_DIR), &generated)
        .into_iter()
        .map(|name| format!("{EXAMPLES_DIR}/{name} is not made by the builders"))
        .collect();
    for (name, content) in generated {
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

/// Validates every generated file and every ```yaml block of `docs/*.md` with
/// `kubernetes-validate --strict` against each supported Kubernetes version, installing the
/// pinned tool into xtask's venv under `target/` first (only PyPI needs to be reachable).
pub(crate) fn validate(root: &Path) -> Result<()> {
    let tool = crate::python::ensure_tools()?.join("kubernetes-validate");
    let files: Vec<PathBuf> = generate()?
        .keys()
        .map(|name| root.join(EXAMPLES_DIR).join(name))
        .collect();
    run_validator(&tool, root, &files, &format!("{EXAMPLES_DIR}/*.yaml"))?;
    let snippets = write_doc_snippets(root)?;
    if snippets.is_empty() {
        println!("{DOCS_DIR}/*.md: no ```yaml blocks");
        return Ok(());
    }
    run_validator(
        &tool,
        root,
        &snippets,
        &format!(
            "{} ```yaml blocks of {DOCS_DIR}/*.md (as {DOC_SNIPPETS_DIR}/<doc>-L<line>.yaml)",
            snippets.len()
        ),
    )
}

fn run_validator(tool: &Path, root: &Path, files: &[PathBuf], what: &str) -> Result<()> {
    for version in KUBERNETES_VERSIONS {
        println!("kubernetes-validate --strict -k {version}: {what}");
        let status = Command::new(tool)
            .args(["--strict", "--kubernetes-version", version])
            .args(files)
            .current_dir(root)
            .status()
            .with_context(|| format!("cannot run {}", tool.display()))?;
        if !status.success() {
            bail!(
                "kubernetes-validate found problems in {what} for Kubernetes {version} (see above)"
            );
        }
    }
    Ok(())
}

/// A ```yaml block of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocSnippet {
    /// The document's file name (`KUBERNETES_DEPLOYMENT.md`).
    pub(crate) doc: String,
    /// 1-based line of the opening fence.
    pub(crate) line: usize,
    /// The block's content.
    pub(crate) yaml: String,
}

impl DocSnippet {
    /// File name of the extracted block: `<doc stem>-L<line>.yaml`.
    pub(crate) fn file_name(&self) -> String {
        let stem = self.doc.strip_suffix(".md").unwrap_or(&self.doc);
        format!("{stem}-L{}.yaml", self.line)
    }
}

/// The ```yaml (or ```yml) blocks of a Markdown text: (1-based line of the fence, content).
/// Fences may be indented (inside list items); the indentation is removed from the content.
pub(crate) fn yaml_blocks(markdown: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut open: Option<(usize, usize, String)> = None;
    for (i, line) in markdown.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.as_mut() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let lang = info.split_whitespace().next().unwrap_or("");
                    // Line 0 marks another language's block, skipped to its end.
                    let start = if lang == "yaml" || lang == "yml" {
                        i + 1
                    } else {
                        0
                    };
                    open = Some((start, indent, String::new()));
                }
            }
            Some((start, strip, body)) => {
                if trimmed.starts_with("```") {
                    if *start > 0 {
                        blocks.push((*start, std::mem::take(body)));
                    }
                    open = None;
                } else if *start > 0 {
                    body.push_str(line.get(*strip..).unwrap_or(line.trim_start()));
                    body.push('\n');
                }
            }
        }
    }
    blocks
}

/// Every ```yaml block of every `docs/*.md`, in file then line order.
pub(crate) fn doc_snippets(root: &Path) -> Result<Vec<DocSnippet>> {
    let dir = root.join(DOCS_DIR);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    let mut docs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    let mut out = Vec::new();
    for path in docs {
        let text =
            fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let doc = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.extend(
            yaml_blocks(&text)
                .into_iter()
                .map(|(line, yaml)| DocSnippet {
                    doc: doc.clone(),
                    line,
                    yaml,
                }),
        );
    }
    Ok(out)
}

/// Writes the blocks to `target/doc-yaml/` (emptied first) and returns their paths.
fn write_doc_snippets(root: &Path) -> Result<Vec<PathBuf>> {
    let dir = root.join(DOC_SNIPPETS_DIR);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    doc_snippets(root)?
        .into_iter()
        .map(|s| {
            let path = dir.join(s.file_name());
            fs::write(&path, &s.yaml)
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(path)
        })
        .collect()
}

/// Every example file: its name and its full content (header included).
///
/// Each `sample-*` file holds everything the backend creates for that one instance, in the
/// order it creates them (`InstanceResources::manifests`): its claims, NetworkPolicy, Service
/// and Pod, and for a policy naming hosts the namespace's egress proxy (made by the first such
/// start, shared afterwards), so an example is exactly what the backend applies.
fn generate() -> Result<BTreeMap<&'static str, String>> {
    let created_at: Timestamp = CREATED_AT.parse()?;
    let opts = BuildOptions::new(NAMESPACE, created_at);
    let instance = |spec: &McpServer, id: &str| build_instance(spec, &InstanceId::from(id), &opts);

    let http = instance(&http_server(), "mcp-fetch-7k2m9q4x1z")?;
    let pvc = instance(&pvc_server()?, "mcp-filesystem-3d8f6h1j5n")?;
    let gpu = instance(&gpu_server(), "mcp-embeddings-9w4t2r6y8b")?;
    let proxied = instance(&proxied_server(), "mcp-github-5c2v8n4m6k")?;

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
        "sample-mcp-pod.yaml",
        "An MCP server with the streamable-http transport and a CIDR egress allow-list: its NetworkPolicy (ingress from local proxies, egress to the CIDR + DNS), ClusterIP Service and Pod.",
        http.manifests(),
    )?;
    add(
        "sample-mcp-pod-with-pvc.yaml",
        "A stdio MCP server on the default image with a per-instance volume and the default egress (open, metadata denied): its PersistentVolumeClaim, NetworkPolicy and Pod.",
        pvc.manifests(),
    )?;
    add(
        "sample-mcp-pod-with-gpu.yaml",
        "A stdio MCP server on one NVIDIA A100 GPU with egress none: its NetworkPolicy (no egress at all) and Pod.",
        gpu.manifests(),
    )?;
    add(
        "sample-mcp-pod-with-egress-proxy.yaml",
        "A stdio MCP server allowed to reach two host names: the namespace's egress proxy (ServiceAccount, Role, RoleBinding, NetworkPolicy, Service, Deployment; created by the first such start, then shared), the server's NetworkPolicy (egress to the proxy + DNS) and its Pod (HTTP(S)_PROXY names the instance).",
        proxied.manifests(),
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
        egress: Some(mcp_types::Egress::Allow(vec![mcp_types::EgressRule::cidr(
            "203.0.113.0/24",
            [],
        )])),
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
            persistent: false,
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
        // A local model: nothing to reach.
        egress: Some(mcp_types::Egress::None),
        ..McpServer::new("embeddings", "ghcr.io/example/mcp-embeddings:0.3.0")
    }
}

fn proxied_server() -> McpServer {
    McpServer {
        env: BTreeMap::from([(
            "GITHUB_TOKEN".into(),
            EnvValue::secret("github-credentials", "token"),
        )]),
        resources: ResourceRequirements::preset(SizePreset::Small),
        egress: Some(mcp_types::Egress::Allow(vec![
            mcp_types::EgressRule::host("api.github.com", [443]),
            mcp_types::EgressRule::host("*.githubusercontent.com", [443]),
        ])),
        ..McpServer::new("github", "ghcr.io/example/mcp-github:2.1.0")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_has_the_generated_header_and_is_stable() {
        let files = generate().unwrap();
        assert_eq!(files.len(), 6);
        // Every sample pod comes with its companions.
        for (name, content) in files.iter().filter(|(n, _)| n.starts_with("sample-")) {
            assert!(content.contains("kind: NetworkPolicy"), "{name}");
            assert!(content.contains("kind: Pod"), "{name}");
        }
        let proxied = &files["sample-mcp-pod-with-egress-proxy.yaml"];
        for kind in [
            "ServiceAccount",
            "Role",
            "RoleBinding",
            "Service",
            "Deployment",
        ] {
            assert!(proxied.contains(&format!("kind: {kind}\n")), "{kind}");
        }
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
    fn yaml_blocks_are_found_with_their_lines_and_others_skipped() {
        let md = "# T\n\n```yaml\napiVersion: v1\nkind: Namespace\n```\n\n```sh\nkubectl get pods\n```\n\n- item\n\n  ```yml\n  a: 1\n    b: 2\n  ```\n```text\nkind: Pod\n```\n";
        let blocks = yaml_blocks(md);
        assert_eq!(
            blocks,
            vec![
                (3, "apiVersion: v1\nkind: Namespace\n".to_owned()),
                (14, "a: 1\n  b: 2\n".to_owned()),
            ]
        );
        let s = DocSnippet {
            doc: "GUIDE.md".into(),
            line: 7,
            yaml: String::new(),
        };
        assert_eq!(s.file_name(), "GUIDE-L7.yaml");
    }

    /// Runs under plain `cargo test` (no Python): every ```yaml block of the docs is one complete
    /// Kubernetes object, so `--validate` has something real to check; kubernetes-validate
    /// itself runs in `cargo xtask ci`.
    #[test]
    fn doc_yaml_blocks_are_complete_objects() {
        let snippets = doc_snippets(&crate::workspace_root()).unwrap();
        for s in &snippets {
            let where_ = format!("{} line {}", s.doc, s.line);
            let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&s.yaml)
                .unwrap_or_else(|e| panic!("{where_}: not YAML: {e}"));
            assert!(!docs.is_empty(), "{where_}: empty block");
            for d in docs {
                for field in ["apiVersion", "kind"] {
                    assert!(
                        d.get(field).is_some_and(serde_json::Value::is_string),
                        "{where_}: no {field}"
                    );
                }
                assert!(
                    d.pointer("/metadata/name")
                        .is_some_and(serde_json::Value::is_string),
                    "{where_}: no metadata.name"
                );
            }
        }
    }

    /// Paths of generated or checked-in files that the docs name exist.
    #[test]
    fn files_named_by_the_docs_exist() {
        let root = crate::workspace_root();
        let Ok(entries) = fs::read_dir(root.join(DOCS_DIR)) else {
            return;
        };
        for entry in entries.flatten() {
            let text = fs::read_to_string(entry.path()).unwrap();
            for word in text.split(|c: char| c.is_whitespace() || "`()[]<>\"',".contains(c)) {
                let word = word.trim_end_matches(['.', ':', ';']);
                let named = ["examples/", "tests/integration/", "crates/", "xtask/"]
                    .iter()
                    .any(|p| word.starts_with(p));
                if named && !word.contains('*') && !word.contains('{') {
                    assert!(
                        root.join(word).exists(),
                        "{} names {word}, which does not exist",
                        entry.path().display()
                    );
                }
            }
        }
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
        assert!(!err.contains("sample-mcp-pod.yaml"), "{err}");
        // A file the builders do not make is stale too; writing removes it.
        fs::write(examples.join("old.yaml"), "kind: Pod\n").unwrap();
        fs::write(examples.join("notes.txt"), "kept\n").unwrap();
        let err = check(&dir).unwrap_err().to_string();
        assert!(
            err.contains("examples/k8s/old.yaml is not made by the builders"),
            "{err}"
        );
        write(&dir).unwrap();
        check(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
