//! A host that refuses unprivileged user namespaces, made for real without touching this
//! machine's settings: the supervisor runs inside a user namespace whose
//! `user.max_user_namespaces` is 0 (the limit is per namespace), so its own `unshare` fails as
//! on such a host. Volumes and `egress: none` are then `NotSupported`, naming the setting and
//! what to use instead; specs without them still run.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{TestEnv, test_server};
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_types::{Egress, McpServer, RestartPolicy, StartOptions, VolumeSpec};

/// Whether `unshare -Ur` works here (it needs util-linux and user namespaces itself).
fn can_nest() -> bool {
    std::process::Command::new("unshare")
        .args(["-Ur", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_user_namespaces_volumes_and_egress_none_are_not_supported() {
    if !can_nest() {
        eprintln!("skipped: `unshare -Ur true` fails here, so no supervisor can be nested");
        return;
    }
    let scripts = tempfile::tempdir().expect("temp dir");
    let wrapper = scripts.path().join("supervisor-without-userns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -Ur sh -c 'echo 0 > /proc/sys/user/max_user_namespaces && exec \"$0\" \"$@\"' {} \"$@\"\n",
            common::supervisor().display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let env = TestEnv::with_config(|c| c.with_supervisor(&wrapper));
    let o = &env.orchestrator;
    let base = McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            "nons",
            test_server().await.display().to_string(),
            FixtureScript::new().to_args(),
        )
    };
    // The wrapper itself works: a plain spec runs.
    let id = o
        .start_server(&base, &StartOptions::default())
        .await
        .expect("plain start");
    o.wait_until_running(&id, Duration::from_secs(30))
        .await
        .expect("running");
    o.stop_server(&id, Duration::from_secs(5))
        .await
        .expect("stop");

    let volumes = McpServer {
        volumes: vec![
            VolumeSpec::new("data", "1Mi", "/mcp-test-nons")
                .unwrap()
                .persistent(),
        ],
        ..base.clone()
    };
    let none = McpServer {
        egress: Some(Egress::None),
        ..base.clone()
    };
    for (spec, what) in [(volumes, "volumes need"), (none, "`egress: none` needs")] {
        match o.start_server(&spec, &StartOptions::default()).await {
            Err(e @ OrchestratorError::NotSupported { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(what)
                        && text.contains("user.max_user_namespaces is 0")
                        && text.contains("docker or kubernetes backend"),
                    "{text}"
                );
            }
            other => panic!("{what}: expected NotSupported, got {other:?}"),
        }
    }
    // The persistent volume the refused start created went with it.
    assert!(o.list_volumes(None).await.expect("list").is_empty());
    env.assert_clean().await;
}
