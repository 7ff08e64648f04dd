//! The Python tools tests need (kubernetes-validate, the MCP Python SDK, mcp-server-time),
//! installed into a project-owned virtualenv under `target/` so a fresh machine needs nothing
//! installed by hand.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

const REQUIREMENTS: &str = include_str!("../python-requirements.txt");

/// The virtualenv directory.
pub(crate) fn venv_dir() -> PathBuf {
    workspace_root().join("target/python-tools")
}

/// The pinned requirements of benchmark 9's baseline `mcp-proxy` (it needs `mcp<2`, the tools
/// venv has 2.x), installed into their own venv.
const MCP_PROXY_REQUIREMENTS: &str = include_str!("../mcp-proxy-requirements.txt");

/// The venv's `bin` directory, creating the venv and installing the pinned requirements when
/// they changed since the last install.
pub(crate) fn ensure_tools() -> Result<PathBuf> {
    ensure_venv(&venv_dir(), REQUIREMENTS)
}

/// `mcp-proxy` from its own venv (`target/mcp-proxy-venv`), installed when missing or when
/// its pinned requirements changed (about 30 s on 2 cores, once).
pub(crate) fn ensure_mcp_proxy() -> Result<PathBuf> {
    let bin = ensure_venv(
        &workspace_root().join("target/mcp-proxy-venv"),
        MCP_PROXY_REQUIREMENTS,
    )?;
    Ok(bin.join("mcp-proxy"))
}

/// A venv at `venv` holding exactly `requirements`, reused while its stamp matches.
fn ensure_venv(venv: &std::path::Path, requirements: &str) -> Result<PathBuf> {
    let bin = venv.join("bin");
    let stamp = venv.join(".requirements");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == requirements)
        && bin.join("python").exists()
    {
        return Ok(bin);
    }
    println!("\n==> installing Python tools into {}", venv.display());
    let python = ["python3", "python"]
        .into_iter()
        .find(|p| {
            Command::new(p)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .context(
            "no python3 on PATH: the manifest validation and MCP interop tests need Python 3.9+",
        )?;
    if !bin.join("python").exists() {
        let status = Command::new(python)
            .args(["-m", "venv"])
            .arg(venv)
            .status()
            .context("running python3 -m venv")?;
        if !status.success() {
            bail!(
                "`{python} -m venv {}` failed ({status}); on Debian install the python3-venv package",
                venv.display()
            );
        }
    }
    let reqs = venv.join("requirements.txt");
    std::fs::write(&reqs, requirements).context("writing requirements")?;
    let status = Command::new(bin.join("pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(&reqs)
        .status()
        .context("running pip")?;
    if !status.success() {
        bail!("pip install of {} failed ({status})", reqs.display());
    }
    std::fs::write(&stamp, requirements).context("writing the install stamp")?;
    Ok(bin)
}

/// `PATH` with the venv's `bin` first.
pub(crate) fn path_with_tools(bin: &std::path::Path) -> String {
    let old = std::env::var("PATH").unwrap_or_default();
    format!("{}:{old}", bin.display())
}
