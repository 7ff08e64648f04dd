//! After the tests: nothing they started may still run. Looks for processes of this workspace's
//! test binaries and for containers of the test image, and names what it finds.

use std::path::Path;
use std::process::Command;

use anyhow::{Result, bail};

/// Programs the tests start (as servers, supervisors, or the CLI's embedded supervisor).
const TEST_PROGRAMS: &[&str] = &[
    "mcp-test-server",
    "mcp-process-supervisor",
    "mcp-orch",
    "mcp-k8s-probe",
];
/// The image the Docker tests run.
const TEST_IMAGE: &str = "mcp-test-server:test";

/// Fails, listing them, when test processes or containers are left.
pub(crate) fn check(root: &Path) -> Result<()> {
    let mut left = processes_under(&root.join("target"));
    left.extend(test_containers());
    if !left.is_empty() {
        bail!(
            "the tests left {} thing(s) running:\n  {}",
            left.len(),
            left.join("\n  ")
        );
    }
    println!("    no test process or container left");
    Ok(())
}

/// Processes whose executable is one of [`TEST_PROGRAMS`] under `target`.
fn processes_under(target: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let exe = std::fs::read_link(e.path().join("exe")).ok()?;
            let name = exe.file_name()?.to_str()?;
            let is_test_program = TEST_PROGRAMS.contains(&name) && exe.starts_with(target);
            is_test_program.then(|| format!("process {pid}: {}", exe.display()))
        })
        .collect()
}

/// Containers (running or not) created from the test image; none when Docker is absent.
fn test_containers() -> Vec<String> {
    let Ok(out) = Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            &format!("ancestor={TEST_IMAGE}"),
            "--format",
            "{{.Names}} ({{.Status}})",
        ])
        .output()
    else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| format!("container {l}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_running_test_program_and_nothing_else() {
        // A copy of `sleep` named like a test program, under a scratch "target".
        let dir = std::env::temp_dir().join(format!("xtask-leftovers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("mcp-test-server");
        std::fs::copy("/bin/sleep", &fake).unwrap();
        let mut child = Command::new(&fake).arg("30").spawn().unwrap();
        let found = processes_under(&dir);
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].contains(&child.id().to_string()), "{found:?}");
        assert!(processes_under(Path::new("/nonexistent")).is_empty());
    }
}
