//! Shared set-up for the CLI tests: a config file, spec files, and running `mcp-orch`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use mcp_factory::mcp_orchestrator_api::FixtureScript;

/// A scratch directory with a config file for one backend.
pub(crate) struct Env {
    pub(crate) dir: tempfile::TempDir,
    pub(crate) config: PathBuf,
    /// Every instance the backend lists belongs to this test (a private process state dir), so
    /// dropping the env may stop them all. False for Docker, where other tests share the engine.
    owns_backend: bool,
}

impl Env {
    /// A process-backend environment with its own state directory.
    pub(crate) fn process() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("mcpctl.yaml");
        let state = dir.path().join("state");
        std::fs::write(
            &config,
            format!(
                "orchestrator:\n  type: process\n  process:\n    stateDir: {}\n",
                state.display()
            ),
        )
        .expect("config");
        Self {
            dir,
            config,
            owns_backend: true,
        }
    }

    /// A Docker-backend environment on its own network.
    pub(crate) fn docker(network: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("mcpctl.yaml");
        std::fs::write(
            &config,
            format!("orchestrator:\n  type: docker\n  docker:\n    network: {network}\n"),
        )
        .expect("config");
        Self {
            dir,
            config,
            owns_backend: false,
        }
    }

    /// `mcp-orch --config <this env's config> ARGS...`, isolated from the user's environment.
    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = self.bare_cmd(&["--config", self.config.to_str().expect("utf-8 path")]);
        c.args(args);
        c
    }

    /// `mcp-orch ARGS...` without a config file, isolated from the user's environment.
    pub(crate) fn bare_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::cargo_bin("mcp-orch").expect("mcp-orch binary");
        c.args(args).env("XDG_CONFIG_HOME", self.dir.path());
        for var in [
            "MCPCTL_ORCHESTRATOR_TYPE",
            "MCPCTL_CONFIG",
            "MCPCTL_PROCESS_STATE_DIR",
            "MCPCTL_DOCKER_SOCKET",
            "RUST_LOG",
        ] {
            c.env_remove(var);
        }
        c.timeout(std::time::Duration::from_secs(120));
        c
    }

    /// Stops every instance this environment's backend lists, when they all belong to the test.
    fn stop_everything(&self) {
        if !self.owns_backend {
            return;
        }
        let Ok(out) = self.cmd(&["ps", "-o", "json"]).output() else {
            return;
        };
        let Ok(items) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            return;
        };
        for item in items.as_array().into_iter().flatten() {
            if let Some(id) = item["id"].as_str() {
                let _ = self.cmd(&["stop", id, "--grace", "2s"]).output();
            }
        }
    }

    /// Writes a spec file and returns its path.
    pub(crate) fn spec(&self, file: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(file);
        std::fs::write(&p, yaml).expect("spec");
        p
    }
}

impl Drop for Env {
    /// A test that fails half-way still leaves no server running.
    fn drop(&mut self) {
        self.stop_everything();
    }
}

/// YAML for a process-backend server running the test server's fixture script.
pub(crate) fn fixture_spec(name: &str, script: &FixtureScript) -> String {
    let bin = test_server();
    let args: Vec<String> = script.to_args().iter().map(|a| format!("{a:?}")).collect();
    format!(
        "name: {name}\ncommand: [{:?}]\nargs: [{}]\nrestartPolicy: Never\n",
        bin.display().to_string(),
        args.join(", ")
    )
}

/// The statically built test server.
pub(crate) fn test_server() -> PathBuf {
    mcp_test_server::static_binary().expect("building mcp-test-server")
}

/// Stdout of a successful run, trimmed.
pub(crate) fn stdout_of(mut c: impl std::borrow::BorrowMut<Command>) -> String {
    let out = c
        .borrow_mut()
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    String::from_utf8(out).expect("utf-8").trim().to_owned()
}

/// Stderr of a failed run; asserts it is exactly one line starting with `error:`.
pub(crate) fn one_line_error(mut c: impl std::borrow::BorrowMut<Command>) -> String {
    let out = c.borrow_mut().assert().failure().get_output().clone();
    let err = String::from_utf8(out.stderr).expect("utf-8");
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("starting "))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    lines[0].to_owned()
}

/// Whether `path` exists under the env dir.
pub(crate) fn exists(p: &Path) -> bool {
    p.exists()
}
