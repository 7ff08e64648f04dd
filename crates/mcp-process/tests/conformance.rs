//! The process backend passes the whole conformance kit with the workspace's real test server
//! as the program, and leaves no instance directory and no process behind.

mod common;

use std::time::Duration;

use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::conformance::{
    self, Capability, CommandServers, DirSecretStore, Harness, SecretFilePath, Support,
};
use mcp_process::ProcessConfig;
use mcp_types::InstanceFilters;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn process_backend_passes_the_conformance_kit() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let secrets_dir = secrets.path().to_owned();
    let env = common::TestEnv::with_config(|c| ProcessConfig {
        secrets_dir: Some(secrets_dir),
        ..c
    });
    let store = DirSecretStore::new(secrets.path());
    let servers = CommandServers {
        program: common::test_server().await.display().to_string(),
    };
    let recording = common::Recording::new(env.orchestrator.clone());
    let harness = Harness::new(&recording, &servers)
        .with_timeout(Duration::from_secs(30))
        .with_grace(Duration::from_secs(5))
        // Volumes are bind-mounted at their mount paths in a mount namespace of the server's
        // (any absolute path: the kit's are `/data`, `/keep`, `/scratch`, which the host lacks).
        .with_capability(Capability::Volumes, Support::Honoured)
        .with_capability(Capability::PersistentVolumes, Support::Honoured)
        .with_capability(Capability::GarbageCollection, Support::Honoured)
        // A local process shares the host's devices.
        .with_capability(Capability::Gpu, Support::Refused)
        // The kit's egress spec is an allow-list, which needs privileges to enforce; `none`
        // (a network namespace) and `open` are honoured and tested in `tests/egress.rs`.
        .with_capability(Capability::Egress, Support::Refused)
        // Secrets come from `secretsDir`; a secret file lives in the instance directory, named
        // by its variable only (no mount namespace), owned by the calling user.
        .with_secrets(&store)
        .with_secret_file_path(SecretFilePath::EnvOnly)
        .with_secret_file_mode(0o400);
    let breaker = env.orchestrator.watch_breaker();
    let harness = harness.with_watch_break(std::sync::Arc::new(move || breaker.break_watches()));
    if let Err(report) = conformance::run_all(&harness).await {
        panic!("{report}");
    }
    let left = env
        .orchestrator
        .list_instances(&InstanceFilters::default())
        .await
        .expect("list");
    assert!(
        left.items.is_empty(),
        "the kit left instances: {:?}",
        left.items
    );
    assert!(env.instance_dirs().is_empty(), "{:?}", env.instance_dirs());
    let secrets_left: Vec<_> = std::fs::read_dir(secrets.path()).expect("dir").collect();
    assert!(
        secrets_left.is_empty(),
        "the kit left secrets: {secrets_left:?}"
    );
    let seen = recording.seen();
    assert!(
        seen.len() > 40,
        "only {} processes were recorded",
        seen.len()
    );
    common::assert_gone(&seen).await;
    assert!(
        common::processes_mentioning(env.dir.path()).is_empty(),
        "supervisors still running for {}",
        env.dir.path().display()
    );
}
