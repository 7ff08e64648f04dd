//! The whole conformance kit against the example backend, with the fixture server built from
//! the `mcp-test-server` dependency.

use std::time::Duration;

use backend_author_example::ChildProcessOrchestrator;
use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::conformance::{self, Capability, CommandServers, Harness, Support};
use mcp_orchestrator_api::mcp_types::InstanceFilters;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn passes_the_conformance_kit() {
    let binary = tokio::task::spawn_blocking(mcp_test_server::static_binary)
        .await
        .expect("build task")
        .expect("building mcp-test-server");
    let servers = CommandServers {
        program: binary.display().to_string(),
    };
    let o = ChildProcessOrchestrator::new();
    let h = Harness::new(&o, &servers)
        .with_timeout(Duration::from_secs(20))
        .with_grace(Duration::from_secs(3))
        // A child process shares the host's file system, devices and network.
        .with_capability(Capability::Volumes, Support::Refused)
        .with_capability(Capability::Gpu, Support::Refused)
        .with_capability(Capability::Egress, Support::Refused)
        // No secret store: secret references and secret files are refused.
        .with_capability(Capability::SecretEnv, Support::Refused)
        .with_capability(Capability::SecretFiles, Support::Refused);
    if let Err(report) = conformance::run_all(&h).await {
        panic!("{report}");
    }
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(left.items.is_empty(), "the kit left {:?}", left.items);
}
