//! Layering and hygiene rules read from the workspace's own files (rust-analyzer's "tidy"):
//! which crate may depend on which, every source file opens with a `//!` line, every crate
//! inherits the workspace lints, and every cargo feature is documented with a `##` comment.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Third-party crates that bring IO, a runtime or an engine client.
const IO_CRATES: &[&str] = &[
    "tokio",
    "kube",
    "kube-client",
    "kube-runtime",
    "bollard",
    "hyper",
    "reqwest",
    "axum",
    "k8s-openapi",
];
/// Backends: none may depend on another.
const BACKENDS: &[&str] = &["mcp-docker", "mcp-k8s", "mcp-process"];

/// One crate's manifest, reduced to what the rules need.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) name: String,
    pub(crate) path: PathBuf,
    /// Normal and build dependencies (including target-specific ones), with optional flag.
    pub(crate) deps: BTreeMap<String, bool>,
    pub(crate) text: String,
}

impl Manifest {
    fn parse(path: &Path, text: &str) -> Result<Self> {
        let doc: toml::Table = text
            .parse()
            .with_context(|| format!("{} is not valid TOML", path.display()))?;
        let name = doc
            .get("package")
            .and_then(|p| p.get("name"))
            .and_then(|n| n.as_str())
            .with_context(|| format!("{} has no package.name", path.display()))?
            .to_owned();
        let mut deps = BTreeMap::new();
        let mut collect = |table: Option<&toml::Value>| {
            if let Some(t) = table.and_then(|t| t.as_table()) {
                for (k, v) in t {
                    let optional = v
                        .get("optional")
                        .and_then(toml::Value::as_bool)
                        .unwrap_or(false);
                    let real = v.get("package").and_then(|p| p.as_str()).unwrap_or(k);
                    deps.insert(real.to_owned(), optional);
                }
            }
        };
        collect(doc.get("dependencies"));
        collect(doc.get("build-dependencies"));
        if let Some(targets) = doc.get("target").and_then(|t| t.as_table()) {
            for t in targets.values() {
                collect(t.get("dependencies"));
                collect(t.get("build-dependencies"));
            }
        }
        Ok(Self {
            name,
            path: path.to_owned(),
            deps,
            text: text.to_owned(),
        })
    }

    fn depends_on(&self, dep: &str) -> bool {
        self.deps.contains_key(dep)
    }
}

/// Every rule violation in the workspace at `root`, as readable lines; empty when tidy.
pub(crate) fn check(root: &Path) -> Result<Vec<String>> {
    let manifests = read_manifests(root)?;
    let mut out = check_layering(&manifests);
    for m in &manifests {
        out.extend(check_manifest_hygiene(m));
    }
    for dir in member_dirs(root)? {
        out.extend(check_headers(&dir)?);
    }
    Ok(out)
}

fn read_manifests(root: &Path) -> Result<Vec<Manifest>> {
    let mut paths = member_dirs(root)?
        .into_iter()
        .map(|d| d.join("Cargo.toml"))
        .collect::<Vec<_>>();
    paths.sort();
    paths
        .iter()
        .map(|p| {
            Manifest::parse(
                p,
                &fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
        })
        .collect()
}

/// The workspace members named in the root manifest (`dir/*` globs expanded one level).
pub(crate) fn member_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string(root.join("Cargo.toml")).context("reading the root Cargo.toml")?;
    let doc: toml::Table = text
        .parse()
        .context("the root Cargo.toml is not valid TOML")?;
    let members = doc
        .get("workspace")
        .and_then(|w| w.get("members"))
        .and_then(toml::Value::as_array)
        .context("the root Cargo.toml has no workspace.members")?;
    let mut dirs = Vec::new();
    for m in members.iter().filter_map(toml::Value::as_str) {
        if let Some(parent) = m.strip_suffix("/*") {
            let entries =
                fs::read_dir(root.join(parent)).with_context(|| format!("reading {parent}/"))?;
            dirs.extend(
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.join("Cargo.toml").is_file()),
            );
        } else {
            dirs.push(root.join(m));
        }
    }
    Ok(dirs)
}

/// The layering invariants of ARCHITECTURE.md.
pub(crate) fn check_layering(manifests: &[Manifest]) -> Vec<String> {
    let mut out = Vec::new();
    for m in manifests {
        for (deps, why) in forbidden_deps(m) {
            for d in deps.iter().filter(|d| m.depends_on(d)) {
                out.push(format!("{} depends on {d}: {why}", m.name));
            }
        }
        if BACKENDS.contains(&m.name.as_str()) && !m.depends_on("mcp-orchestrator-api") {
            out.push(format!(
                "{} does not depend on mcp-orchestrator-api: every backend implements its trait",
                m.name
            ));
        }
        if m.name == "mcp-factory" {
            for b in BACKENDS.iter().filter(|b| m.deps.get(**b) == Some(&false)) {
                out.push(format!(
                    "mcp-factory depends on {b} unconditionally: each backend must sit behind a cargo feature"
                ));
            }
        }
    }
    out
}

/// For one crate: groups of dependencies it must not have, each with the reason.
fn forbidden_deps(m: &Manifest) -> Vec<(Vec<String>, &'static str)> {
    let owned = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    // Workspace crates other than mcp-types: forbidden for the layers that sit on mcp-types only.
    let above_types: Vec<String> = m
        .deps
        .keys()
        .filter(|d| d.starts_with("mcp-") && *d != "mcp-types")
        .cloned()
        .collect();
    let engine_clients = [
        "kube",
        "kube-client",
        "kube-runtime",
        "bollard",
        "hyper",
        "reqwest",
        "axum",
    ];
    match m.name.as_str() {
        "mcp-types" => vec![
            (
                owned(IO_CRATES),
                "mcp-types is plain data + validation (no runtime, no IO, no engine clients)",
            ),
            (
                m.deps
                    .keys()
                    .filter(|d| d.starts_with("mcp-"))
                    .cloned()
                    .collect(),
                "mcp-types is the bottom layer",
            ),
        ],
        "mcp-orchestrator-api" => vec![
            (
                [owned(&engine_clients), owned(&["k8s-openapi"])].concat(),
                "the API crate is backend-neutral",
            ),
            (above_types, "the API crate depends on mcp-types only"),
        ],
        "mcp-k8s-resources" => vec![
            (
                [owned(&engine_clients), owned(&["tokio"])].concat(),
                "builders are pure (sans-IO)",
            ),
            (above_types, "builders depend on mcp-types only"),
        ],
        name if BACKENDS.contains(&name) => vec![
            (
                owned(BACKENDS).into_iter().filter(|b| b != name).collect(),
                "backends never depend on each other",
            ),
            (
                owned(&["mcp-factory", "mcp-cli"]),
                "backends sit below the factory",
            ),
        ],
        "mcp-factory" => vec![(owned(&["mcp-cli"]), "the CLI sits on top of the factory")],
        "mcp-egress-proxy" => vec![(
            m.deps
                .keys()
                .filter(|d| {
                    d.starts_with("mcp-")
                        && !["mcp-types", "mcp-scratch-image"].contains(&d.as_str())
                })
                .cloned()
                .collect(),
            "the egress proxy depends on mcp-types (and mcp-scratch-image) only: any backend or deployment runs it",
        )],
        "mcp-scratch-image" => vec![(
            m.deps
                .keys()
                .filter(|d| d.starts_with("mcp-"))
                .cloned()
                .collect(),
            "mcp-scratch-image builds images of any package and depends on none of ours",
        )],
        "mcp-gateway" => vec![(
            [owned(BACKENDS), owned(&["mcp-factory", "mcp-cli"])].concat(),
            "the gateway reaches instances through the McpOrchestrator trait only",
        )],
        "mcp-cli" => vec![(
            owned(BACKENDS),
            "the CLI reaches backends through mcp-factory only",
        )],
        _ => Vec::new(),
    }
}

/// Every crate inherits the workspace lints and documents its features.
fn check_manifest_hygiene(m: &Manifest) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(doc) = m.text.parse::<toml::Table>() else {
        return out;
    };
    let inherits = doc
        .get("lints")
        .and_then(|l| l.get("workspace"))
        .and_then(toml::Value::as_bool)
        == Some(true);
    if !inherits {
        out.push(format!(
            "{}: missing `[lints] workspace = true`",
            m.path.display()
        ));
    }
    let lines: Vec<&str> = m.text.lines().collect();
    if let Some(start) = lines.iter().position(|l| l.trim() == "[features]") {
        for (i, line) in lines.iter().enumerate().skip(start + 1) {
            let t = line.trim();
            if t.starts_with('[') {
                break;
            }
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let name = t.split('=').next().unwrap_or("").trim();
            let documented = i > 0 && lines[i - 1].trim_start().starts_with("##");
            if name != "default" && !documented {
                out.push(format!(
                    "{}: feature `{name}` has no `##` doc comment above it",
                    m.path.display()
                ));
            }
        }
    }
    out
}

/// Every Rust source file starts with a `//!` line saying what it holds.
fn check_headers(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            let name = e.file_name();
            if p.is_dir() {
                if name != "target"
                    && name != "snapshots"
                    && !name.to_string_lossy().starts_with('.')
                {
                    stack.push(p);
                }
            } else if p.extension().is_some_and(|x| x == "rs") {
                let text =
                    fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?;
                if !text.trim_start().starts_with("//!") {
                    out.push(format!(
                        "{}: does not start with a `//!` doc line",
                        p.display()
                    ));
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workspace_root;

    fn manifest(name: &str, deps: &str) -> Manifest {
        let text = format!(
            "[package]\nname = \"{name}\"\n\n[dependencies]\n{deps}\n\n[lints]\nworkspace = true\n"
        );
        Manifest::parse(Path::new("Cargo.toml"), &text).unwrap()
    }

    #[test]
    fn the_workspace_is_tidy() {
        let members = member_dirs(&workspace_root()).unwrap();
        assert!(
            members.iter().any(|d| d.ends_with("xtask")) && members.len() > 8,
            "{members:?}"
        );
        let violations = check(&workspace_root()).unwrap();
        assert!(
            violations.is_empty(),
            "tidy violations:\n  {}",
            violations.join("\n  ")
        );
    }

    #[test]
    fn tokio_in_mcp_types_is_refused() {
        let real =
            fs::read_to_string(workspace_root().join("crates/mcp-types/Cargo.toml")).unwrap();
        let broken = real.replace(
            "[dependencies]\n",
            "[dependencies]\ntokio = { workspace = true }\n",
        );
        assert_ne!(
            real, broken,
            "mcp-types manifest has no [dependencies] table to edit"
        );
        let m = Manifest::parse(Path::new("crates/mcp-types/Cargo.toml"), &broken).unwrap();
        let v = check_layering(&[m]);
        assert!(
            v.iter().any(|l| l.contains("mcp-types depends on tokio")),
            "{v:?}"
        );
    }

    #[test]
    fn renamed_and_target_specific_deps_are_seen() {
        let text = "[package]\nname = \"mcp-types\"\n[target.'cfg(unix)'.dependencies]\nrt = { package = \"tokio\", version = \"1\" }\n";
        let m = Manifest::parse(Path::new("Cargo.toml"), text).unwrap();
        assert!(check_layering(&[m]).iter().any(|l| l.contains("tokio")));
    }

    #[test]
    fn backend_on_backend_is_refused() {
        let m = manifest(
            "mcp-docker",
            "mcp-orchestrator-api = { workspace = true }\nmcp-k8s = { workspace = true }",
        );
        assert!(
            check_layering(&[m])
                .iter()
                .any(|l| l.contains("never depend on each other"))
        );
    }

    #[test]
    fn gateway_on_a_backend_is_refused() {
        let m = manifest(
            "mcp-gateway",
            "mcp-orchestrator-api = { workspace = true }\nmcp-process = { workspace = true }",
        );
        let v = check_layering(&[m]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("McpOrchestrator trait only"), "{v:?}");
    }

    #[test]
    fn factory_backends_must_be_optional() {
        let m = manifest(
            "mcp-factory",
            "mcp-docker = { workspace = true }\nmcp-k8s = { workspace = true, optional = true }",
        );
        let v = check_layering(&[m]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("mcp-docker unconditionally"));
    }

    #[test]
    fn api_crate_stays_backend_neutral() {
        let m = manifest(
            "mcp-orchestrator-api",
            "mcp-types = { workspace = true }\nbollard = \"0.21\"",
        );
        assert!(
            check_layering(&[m])
                .iter()
                .any(|l| l.contains("backend-neutral"))
        );
    }

    #[test]
    fn egress_proxy_stays_below_the_backends() {
        let m = manifest(
            "mcp-egress-proxy",
            "mcp-types = { workspace = true }\nmcp-scratch-image = { workspace = true }\nmcp-orchestrator-api = { workspace = true }",
        );
        let v = check_layering(&[m]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("mcp-orchestrator-api: the egress proxy"),
            "{v:?}"
        );
        let m = manifest("mcp-scratch-image", "mcp-types = { workspace = true }");
        assert!(check_layering(&[m])[0].contains("depends on none of ours"));
    }

    #[test]
    fn undocumented_feature_is_reported() {
        let text = "[package]\nname = \"x\"\n[features]\ndefault = []\n## documented\na = []\nb = []\n[lints]\nworkspace = true\n";
        let m = Manifest::parse(Path::new("Cargo.toml"), text).unwrap();
        let v = check_manifest_hygiene(&m);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(v[0].contains("feature `b`"));
    }
}
