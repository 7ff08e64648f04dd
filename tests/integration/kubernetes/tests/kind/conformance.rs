//! The whole conformance kit against the real cluster, as the `mcpctl` service account.

use std::time::Duration;

use mcp_orchestrator_api::McpOrchestrator;
use mcp_orchestrator_api::conformance::{self, FollowAcrossRestarts, Harness, StreamSupport};
use mcp_types::InstanceFilters;

use crate::support::{TIMEOUT, cluster};

#[tokio::test]
#[cfg_attr(
    not(mcpctl_kind),
    ignore = "needs a kind cluster: run `cargo xtask kind-test`"
)]
async fn the_conformance_kit_passes_on_kind() {
    let kind = cluster().await;
    let servers = kind.servers();
    let h = Harness::new(&kind.orchestrator, &servers)
        .with_timeout(TIMEOUT)
        .with_grace(Duration::from_secs(5))
        // The container log merges stdout and stderr (the kubelet keeps one log per container).
        .with_streams(StreamSupport::Merged)
        // The kubelet's log follow ends with the container, restarted or not.
        .with_follow_across_restarts(FollowAcrossRestarts::Ends);
    if let Err(report) = conformance::run_all(&h).await {
        panic!("{report}");
    }
    // The kit cleans up after itself; on a real cluster nothing of it is left either. (Other
    // tests run beside it in the namespace, so only the kit's own run label is looked for.)
    let left = kind
        .orchestrator
        .list_instances(&InstanceFilters {
            label_selector: Some(mcp_types::LabelSelector::new(vec![
                mcp_types::Requirement::Exists(conformance::RUN_LABEL.to_owned()),
            ])),
            ..InstanceFilters::default()
        })
        .await
        .expect("list");
    assert!(left.items.is_empty(), "left behind: {:?}", left.items);
}
