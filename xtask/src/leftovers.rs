//! After the tests: nothing they started may be left. Looks for processes of this workspace's
//! test binaries and, on the Docker engine, for containers of a test image, dangling volumes of
//! managed instances, the tests' own networks and egress companions (proxy containers and
//! internal networks), and names what it finds. When Docker is
//! required, a `docker` command that cannot run or fails fails the check instead of passing it.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};
use mcp_types::labels;

/// Programs the tests start (as servers, supervisors, or the CLI's embedded supervisor).
const TEST_PROGRAMS: &[&str] = &[
    "mcp-test-server",
    "mcp-process-supervisor",
    "mcp-orch",
    "mcp-k8s-probe",
];
/// Label of every test image (`mcp_test_server::TEST_IMAGE_LABEL`, set by its Dockerfile);
/// containers inherit their image's labels, so this finds containers of any test image tag.
const TEST_IMAGE_LABEL: &str = "mcpctl.io/test-image=true";
/// Label of every volume the Docker backend creates for an instance (`mcp_docker::volume_labels`).
/// The backend removes an instance's volumes with it, so one that no container uses is left over.
fn managed_volume_label() -> String {
    format!("{}=true", labels::MANAGED)
}
/// Label of every network the Docker backend creates (`ensure_network` in mcp-docker).
fn managed_network_label() -> String {
    format!("{}={}", labels::APP_MANAGED_BY, labels::MANAGED_BY_VALUE)
}
/// Label of the Docker backend's egress companions (proxy containers, per-instance internal
/// networks: `mcp_docker::egress::COMPANION_OF_LABEL`); the backend removes them with their
/// instance, so one left over is a leak.
const COMPANION_LABEL: &str = "mcpctl.io/companion-of";
/// Name prefixes of the networks the tests and benchmarks create (the backend's default
/// `mcpctl-network` and networks users configure are not the tests' to remove).
const TEST_NETWORK_PREFIXES: &[&str] = &[
    // crates/mcp-docker/tests/docker_engine.rs
    "mcpctl-test-",
    // crates/mcp-cli/tests/cli_docker.rs
    "mcpctl-cli-test-",
    // crates/mcp-bench/src/docker_env.rs
    "mcpctl-bench-",
];

/// What is there before the tests run (objects an earlier run or another program left, which
/// this run must neither blame on itself nor remove), to be passed to [`check`].
pub(crate) fn before(root: &Path, require_docker: bool) -> Result<Vec<String>> {
    find(root, "docker", require_docker)
}

/// Fails, listing them, when test processes, containers, volumes or networks are left that were
/// not there `before` the run, or when Docker is required and cannot be asked.
pub(crate) fn check(root: &Path, require_docker: bool, before: &[String]) -> Result<()> {
    check_with(root, "docker", require_docker, before)
}

/// The identity of a finding: its kind and name (`network X`, `container Y`, `process 12:`),
/// without the status that changes while it sits there.
fn identity(found: &str) -> String {
    found
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// [`check`] asking `docker` (the program to run).
fn check_with(root: &Path, docker: &str, require_docker: bool, before: &[String]) -> Result<()> {
    let earlier: std::collections::BTreeSet<String> = before.iter().map(|b| identity(b)).collect();
    let (old, left): (Vec<String>, Vec<String>) = find(root, docker, require_docker)?
        .into_iter()
        .partition(|f| earlier.contains(&identity(f)));
    for o in &old {
        println!("    there before this run (not counted): {o}");
    }
    if !left.is_empty() {
        bail!(
            "the tests left {} thing(s) behind:\n  {}",
            left.len(),
            left.join("\n  ")
        );
    }
    println!("    no test process, container, volume or network left");
    Ok(())
}

/// Everything left: processes under `root/target`, then what `docker` (the program) reports.
fn find(root: &Path, docker: &str, require_docker: bool) -> Result<Vec<String>> {
    let mut left = processes_under(&root.join("target"));
    match docker_leftovers(docker) {
        Ok(found) => left.extend(found),
        Err(e) if require_docker => {
            return Err(e.context("Docker is required, so the leftovers check must reach it"));
        }
        Err(e) => println!("    Docker not checked (not required): {e:#}"),
    }
    Ok(left)
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

/// Test containers (running or not), dangling managed volumes and test networks.
fn docker_leftovers(docker: &str) -> Result<Vec<String>> {
    let filter = |label: &str| format!("label={label}");
    let containers = docker_lines(
        docker,
        &[
            "ps",
            "-a",
            "--filter",
            &filter(TEST_IMAGE_LABEL),
            "--format",
            "{{.Names}} ({{.Image}}, {{.Status}})",
        ],
    )?;
    let volumes = docker_lines(
        docker,
        &[
            "volume",
            "ls",
            "--filter",
            &filter(&managed_volume_label()),
            "--filter",
            "dangling=true",
            "--format",
            "{{.Name}}",
        ],
    )?;
    let networks = docker_lines(
        docker,
        &[
            "network",
            "ls",
            "--filter",
            &filter(&managed_network_label()),
            "--format",
            "{{.Name}}",
        ],
    )?;
    let companions = docker_lines(
        docker,
        &[
            "ps",
            "-a",
            "--filter",
            &filter(COMPANION_LABEL),
            "--format",
            "{{.Names}} ({{.Image}}, {{.Status}})",
        ],
    )?;
    let companion_networks = docker_lines(
        docker,
        &[
            "network",
            "ls",
            "--filter",
            &filter(COMPANION_LABEL),
            "--format",
            "{{.Name}}",
        ],
    )?;
    Ok(containers
        .into_iter()
        .chain(companions)
        .map(|c| format!("container {c}"))
        .chain(volumes.into_iter().map(|v| format!("volume {v}")))
        .chain(
            test_networks(&networks)
                .into_iter()
                .chain(companion_networks)
                .map(|n| format!("network {n}")),
        )
        .collect())
}

/// The names among `networks` that a test or benchmark made.
fn test_networks(networks: &[String]) -> Vec<String> {
    networks
        .iter()
        .filter(|n| TEST_NETWORK_PREFIXES.iter().any(|p| n.starts_with(p)))
        .cloned()
        .collect()
}

/// Runs `docker args`, returning its non-empty output lines; an error when it cannot be run or
/// exits unsuccessfully.
fn docker_lines(docker: &str, args: &[&str]) -> Result<Vec<String>> {
    let shown = format!("{docker} {}", args.join(" "));
    let out = Command::new(docker)
        .args(args)
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

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

    /// A scratch directory (as the workspace root, with no `target`) holding a stub `docker`
    /// script with `body`; removed on drop.
    struct Stub {
        dir: PathBuf,
    }

    impl Stub {
        fn new(name: &str, body: &str) -> Self {
            use std::os::unix::fs::PermissionsExt;
            let dir =
                std::env::temp_dir().join(format!("xtask-leftovers-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            let docker = dir.join("docker");
            std::fs::write(&docker, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&docker, std::fs::Permissions::from_mode(0o755)).unwrap();
            Self { dir }
        }

        fn find(&self, require_docker: bool) -> Result<Vec<String>> {
            find(
                &self.dir,
                self.dir.join("docker").to_str().unwrap(),
                require_docker,
            )
        }
    }

    impl Drop for Stub {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    #[test]
    fn finds_test_containers_dangling_managed_volumes_and_test_networks() {
        // Answers each listing only when asked with the filters the check relies on.
        let stub = Stub::new(
            "found",
            r#"case "$*" in
  "ps -a --filter label=mcpctl.io/test-image=true "*) echo "mcp-echo-1 (mcp-test-server:test, Exited (0))";;
  "volume ls --filter label=mcpctl.io/managed=true --filter dangling=true "*) echo mcp-echo-1-data;;
  "network ls --filter label=app.kubernetes.io/managed-by=mcpctl "*)
    printf 'mcpctl-network\nmcpctl-test-logs-abc\nmcpctl-cli-test-42\nmcpctl-bench-7\nteam-net\n';;
  "ps -a --filter label=mcpctl.io/companion-of "*) echo "mcp-web-1-egress-proxy (mcp-egress-proxy:local, Up 1 second)";;
  "network ls --filter label=mcpctl.io/companion-of "*) echo mcp-web-1-egress;;
  *) echo "unexpected: $*" >&2; exit 1;;
esac"#,
        );
        let found = stub.find(true).unwrap();
        assert_eq!(
            found,
            [
                "container mcp-echo-1 (mcp-test-server:test, Exited (0))",
                "container mcp-web-1-egress-proxy (mcp-egress-proxy:local, Up 1 second)",
                "volume mcp-echo-1-data",
                "network mcpctl-test-logs-abc",
                "network mcpctl-cli-test-42",
                "network mcpctl-bench-7",
                "network mcp-web-1-egress",
            ]
        );
        let docker = stub.dir.join("docker");
        let err = check_with(&stub.dir, docker.to_str().unwrap(), false, &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the tests left 7 thing(s) behind")
                && err.contains("volume mcp-echo-1-data"),
            "{err}"
        );
        // What was there before the run is not counted, whatever its status has become since.
        let before = [
            "container mcp-echo-1 (mcp-test-server:test, Up 3 seconds)".to_owned(),
            "network mcpctl-test-logs-abc".to_owned(),
        ];
        let err = check_with(&stub.dir, docker.to_str().unwrap(), false, &before)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("the tests left 5 thing(s) behind")
                && !err.contains("mcp-echo-1 ")
                && !err.contains("mcpctl-test-logs-abc"),
            "{err}"
        );
        let all: Vec<String> = found.clone();
        check_with(&stub.dir, docker.to_str().unwrap(), false, &all).unwrap();
    }

    #[test]
    fn a_clean_engine_passes() {
        let stub = Stub::new("clean", "exit 0");
        assert!(stub.find(true).unwrap().is_empty());
    }

    #[test]
    fn a_failing_docker_fails_the_check_only_when_docker_is_required() {
        let stub = Stub::new(
            "failing",
            "echo 'Cannot connect to the Docker daemon' >&2; exit 1",
        );
        let err = stub.find(true).unwrap_err();
        assert!(
            format!("{err:#}").contains("Cannot connect to the Docker daemon"),
            "{err:#}"
        );
        assert!(stub.find(false).unwrap().is_empty());

        let missing = find(Path::new("/nonexistent"), "/nonexistent/docker", true).unwrap_err();
        assert!(
            format!("{missing:#}").contains("cannot run `/nonexistent/docker ps"),
            "{missing:#}"
        );
        assert!(
            find(Path::new("/nonexistent"), "/nonexistent/docker", false)
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn the_names_and_labels_are_the_ones_the_tests_use() {
        let root = crate::workspace_root();
        let test_server = std::fs::read_to_string(root.join("crates/mcp-test-server/src/lib.rs"));
        let (key, value) = TEST_IMAGE_LABEL.split_once('=').unwrap();
        assert!(
            test_server
                .unwrap()
                .contains(&format!("TEST_IMAGE_LABEL: &str = \"{key}\"")),
            "mcp-test-server's TEST_IMAGE_LABEL is no longer {key}"
        );
        assert_eq!(value, "true");
        let egress = std::fs::read_to_string(root.join("crates/mcp-docker/src/egress.rs")).unwrap();
        assert!(
            egress.contains(&format!("COMPANION_OF_LABEL: &str = \"{COMPANION_LABEL}\"")),
            "mcp-docker's COMPANION_OF_LABEL is no longer {COMPANION_LABEL}"
        );
        for (file, prefix) in [
            ("crates/mcp-docker/tests/docker_engine.rs", "\"mcpctl-test-"),
            ("crates/mcp-cli/tests/cli_docker.rs", "\"mcpctl-cli-test-"),
            ("crates/mcp-bench/src/docker_env.rs", "\"mcpctl-bench-"),
        ] {
            let text = std::fs::read_to_string(root.join(file)).unwrap();
            assert!(text.contains(prefix), "{file} no longer names {prefix}");
            assert!(
                TEST_NETWORK_PREFIXES.contains(&&prefix[1..]),
                "{prefix} missing from TEST_NETWORK_PREFIXES"
            );
        }
    }
}
