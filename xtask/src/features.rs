//! Feature isolation: built with one backend, the factory links none of the others' engine
//! clients (`cargo tree` proves it), passes clippy, and refuses the backends it lacks.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, run_cmd, workspace_root};

/// Each single-backend feature set, with the crates its dependency tree must not contain.
pub(crate) const ISOLATION: &[(&str, &[&str])] = &[
    (
        "docker",
        &[
            "kube",
            "kube-client",
            "k8s-openapi",
            "mcp-k8s",
            "mcp-process",
        ],
    ),
    ("kubernetes", &["bollard", "mcp-docker", "mcp-process"]),
    (
        "process",
        &[
            "bollard",
            "kube",
            "kube-client",
            "k8s-openapi",
            "mcp-docker",
            "mcp-k8s",
        ],
    ),
];

/// Runs the isolation checks for every feature set.
pub(crate) fn check() -> Result<()> {
    let cargo = cargo();
    for (feature, forbidden) in ISOLATION {
        println!("\n==> mcp-factory with only `{feature}`: dependency tree");
        let out = Command::new(&cargo)
            .args([
                "tree",
                "--locked",
                "-p",
                "mcp-factory",
                "--no-default-features",
                "--features",
                feature,
            ])
            .args(["-e", "normal,build", "--prefix", "none", "--format", "{p}"])
            .current_dir(workspace_root())
            .output()
            .context("running cargo tree")?;
        if !out.status.success() {
            bail!(
                "cargo tree failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let tree = String::from_utf8_lossy(&out.stdout);
        let found = forbidden_in_tree(&tree, forbidden);
        if !found.is_empty() {
            bail!(
                "mcp-factory with only `{feature}` still depends on {}",
                found.join(", ")
            );
        }
        println!("    none of {} in the tree", forbidden.join(", "));
        let features = ["--no-default-features", "--features", feature];
        run_cmd(
            &cargo,
            &[
                &["clippy", "--locked", "-p", "mcp-factory", "--all-targets"][..],
                &features,
                &["--", "-D", "warnings"],
            ]
            .concat(),
            &[],
        )?;
        run_cmd(
            &cargo,
            &[
                &[
                    "test",
                    "--locked",
                    "-p",
                    "mcp-factory",
                    "--test",
                    "features",
                ][..],
                &features,
            ]
            .concat(),
            &[],
        )?;
    }
    Ok(())
}

/// The forbidden package names that appear in `cargo tree --prefix none --format {p}` output.
pub(crate) fn forbidden_in_tree(tree: &str, forbidden: &[&str]) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| forbidden.contains(name))
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_forbidden_packages_by_exact_name() {
        let tree = "mcp-factory v0.1.0 (/w/crates/mcp-factory)\nbollard v0.21.1\nkube-core v5.0.0\nk8s-openapi v0.29.0\nbollard v0.21.1 (*)\n";
        assert_eq!(
            forbidden_in_tree(tree, &["kube", "k8s-openapi", "bollard"]),
            ["bollard", "k8s-openapi"]
        );
        assert!(
            forbidden_in_tree(tree, &["kube"]).is_empty(),
            "kube-core is not kube"
        );
    }

    /// Every feature of `mcp-factory` (its `Cargo.toml`, the source of truth) but `default` is a
    /// backend, and each has an isolation check.
    #[test]
    fn every_backend_feature_is_checked() {
        let path = crate::workspace_root().join("crates/mcp-factory/Cargo.toml");
        let manifest: toml::Table = std::fs::read_to_string(&path).unwrap().parse().unwrap();
        let mut backends: Vec<&str> = manifest["features"]
            .as_table()
            .unwrap()
            .keys()
            .map(String::as_str)
            .filter(|f| *f != "default")
            .collect();
        backends.sort_unstable();
        let mut checked: Vec<&str> = ISOLATION.iter().map(|(f, _)| *f).collect();
        checked.sort_unstable();
        assert_eq!(checked, backends, "features of {}", path.display());
        assert_eq!(backends, ["docker", "kubernetes", "process"]);
        // Built with one backend, the others' crates (`dep:` of their features) are forbidden.
        let deps_of = |feature: &str| -> Vec<String> {
            manifest["features"][feature]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_str()?.strip_prefix("dep:").map(str::to_owned))
                .collect()
        };
        for (feature, forbidden) in ISOLATION {
            for other in backends.iter().filter(|b| *b != feature) {
                for dep in deps_of(other) {
                    assert!(
                        forbidden.contains(&dep.as_str()),
                        "`{feature}` alone must not depend on {dep} (feature `{other}`)"
                    );
                }
            }
        }
    }
}
