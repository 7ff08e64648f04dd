//! `mcp-orch` end to end on the Docker backend against the real engine: run, ps, status, logs,
//! stop. Skips with a printed reason when no engine answers, unless `MCPCTL_REQUIRE_DOCKER=1`.

mod common;

use bollard::Docker;
use common::{Env, one_line_error, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;

async fn engine() -> Option<Docker> {
    let required = std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) if !required => {
            eprintln!("skipping: no Docker engine ({e})");
            return None;
        }
        Err(e) => panic!("MCPCTL_REQUIRE_DOCKER=1 but no Docker engine: {e}"),
    };
    match docker.negotiate_version().await {
        Ok(d) if d.ping().await.is_ok() => Some(d),
        other if !required => {
            eprintln!(
                "skipping: the Docker engine does not answer ({:?})",
                other.err()
            );
            None
        }
        other => panic!(
            "MCPCTL_REQUIRE_DOCKER=1 but the Docker engine does not answer: {:?}",
            other.err()
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_subcommand_on_docker() {
    let Some(docker) = engine().await else { return };
    let image = mcp_test_server::ensure_docker_image(&docker, mcp_test_server::DEFAULT_IMAGE_TAG)
        .await
        .expect("test image");
    let network = format!("mcpctl-cli-test-{}", std::process::id());
    let _guard = NetworkGuard(network.clone());
    let env = Env::docker(&network);
    let script = FixtureScript::new()
        .stdout("hello from docker")
        .stderr("to stderr");
    let args: Vec<String> = script.to_args().iter().map(|a| format!("{a:?}")).collect();
    let spec = env.spec(
        "srv.yaml",
        &format!(
            "name: dock\nimage: {image}\nargs: [{}]\nrestartPolicy: Never\n",
            args.join(", ")
        ),
    );

    let run = {
        let env_cmd = env.cmd(&["run", "--skip-ready", spec.to_str().unwrap()]);
        tokio::task::spawn_blocking(move || {
            let mut c = env_cmd;
            stdout_of(&mut c)
        })
    };
    let id = run.await.unwrap();
    let result = std::panic::AssertUnwindSafe(async {
        assert!(id.starts_with("mcp-dock-"), "{id}");
        let table = stdout_of(&mut env.cmd(&["ps", "--server", "dock"]));
        assert!(table.contains(&id) && table.contains("Running"), "{table}");
        let status = stdout_of(&mut env.cmd(&["status", &id, "-o", "json"]));
        let v: serde_json::Value = serde_json::from_str(&status).unwrap();
        assert_eq!(v["phase"], "Running");
        let mut logs = String::new();
        for _ in 0..50 {
            logs = stdout_of(&mut env.cmd(&["logs", &id, "--stream", "stdout"]));
            if !logs.is_empty() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert_eq!(logs, "hello from docker");
        assert_eq!(stdout_of(&mut env.cmd(&["stop", &id, "--grace", "2s"])), id);
        let line = one_line_error(&mut env.cmd(&["status", &id]));
        assert!(line.contains("not found"), "{line}");
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    // Clean up whatever the assertions left behind, then the test network.
    let _ = env.cmd(&["stop", &id, "--grace", "1s"]).output();
    let _ = docker.remove_network(&network).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Removes every container on the test's network and then the network, however the test ends
/// (also when `run` itself fails or is killed before the test could learn the instance's id).
struct NetworkGuard(String);

impl Drop for NetworkGuard {
    fn drop(&mut self) {
        let listed = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter"])
            .arg(format!("network={}", self.0))
            .output();
        if let Ok(out) = listed {
            for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f", "-v", id])
                    .output();
            }
        }
        let _ = std::process::Command::new("docker")
            .args(["network", "rm", &self.0])
            .output();
    }
}

/// Containers (running or not) on `network`, by name.
async fn containers_on(docker: &Docker, network: &str) -> Vec<String> {
    let filters = std::collections::HashMap::from([("network", vec![network.to_owned()])]);
    docker
        .list_containers(Some(
            bollard::query_parameters::ListContainersOptionsBuilder::new()
                .all(true)
                .filters(&filters)
                .build(),
        ))
        .await
        .expect("listing containers")
        .into_iter()
        .flat_map(|c| c.names.unwrap_or_default())
        .collect()
}

/// Issue #14, item 1 on Docker: a server that exits at once with code 3 and one whose argument
/// list is too long (the engine starts it and it fails) restart forever under the default
/// policy; a failed `run` removes the container, and neither the engine nor `ps` lists it.
#[tokio::test(flavor = "multi_thread")]
async fn failed_runs_leave_no_container() {
    let Some(docker) = engine().await else { return };
    let image = mcp_test_server::ensure_docker_image(&docker, mcp_test_server::DEFAULT_IMAGE_TAG)
        .await
        .expect("test image");
    let network = format!("mcpctl-cli-fail-{}", std::process::id());
    let _guard = NetworkGuard(network.clone());
    let env = Env::docker(&network);
    let spec_for = |name: &str, script: &FixtureScript| {
        let args: Vec<String> = script.to_args().iter().map(|a| format!("{a:?}")).collect();
        env.spec(
            &format!("{name}.yaml"),
            &format!(
                "name: {name}\nimage: {image}\nargs: [{}]\n",
                args.join(", ")
            ),
        )
    };
    let cases = [
        (
            spec_for("dexits", &FixtureScript::new().stderr("boom").exit(3)),
            "exit code 3",
        ),
        (
            spec_for("dlong", &FixtureScript::new().stdout("x".repeat(200_000))),
            "argument list too long",
        ),
    ];
    let result = std::panic::AssertUnwindSafe(async {
        for (spec, why) in &cases {
            let cmd = env.cmd(&[
                "run",
                "--skip-ready",
                spec.to_str().unwrap(),
                "--timeout",
                "60s",
                "--grace",
                "1s",
            ]);
            let out = tokio::task::spawn_blocking(move || {
                let mut c = cmd;
                c.assert().code(1).get_output().clone()
            })
            .await
            .unwrap();
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert!(stderr.contains(why), "{stderr}");
            assert!(stderr.contains("removed mcp-d"), "{stderr}");
            assert_eq!(
                containers_on(&docker, &network).await,
                Vec::<String>::new(),
                "{stderr}"
            );
        }
        let json = stdout_of(&mut env.cmd(&["ps", "-o", "json", "--server", "dexits"]));
        assert_eq!(json, "[]");
        let json = stdout_of(&mut env.cmd(&["ps", "-o", "json", "--server", "dlong"]));
        assert_eq!(json, "[]");
    });
    let outcome = futures::FutureExt::catch_unwind(result).await;
    for server in ["dexits", "dlong"] {
        if let Ok(out) = env.cmd(&["ps", "-o", "json", "--server", server]).output()
            && let Ok(items) = serde_json::from_slice::<serde_json::Value>(&out.stdout)
        {
            for id in items
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|i| i["id"].as_str())
            {
                let _ = env.cmd(&["stop", id, "--grace", "1s"]).output();
            }
        }
    }
    let _ = docker.remove_network(&network).await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
