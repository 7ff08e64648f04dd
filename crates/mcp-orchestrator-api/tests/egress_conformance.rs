//! The kit's `egress_posture` check: a backend stating each instance's egress posture from its
//! spec (or its default) passes; each way of getting it wrong is caught.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use mcp_orchestrator_api::conformance::{
    self, Capability, CommandServers, Harness, HttpConnect, Support,
};
use mcp_orchestrator_api::{InMemoryOrchestrator, LogLines, McpChannel, McpOrchestrator, Result};
use mcp_types::egress::{Egress, EgressPosture};
use mcp_types::{
    Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer, Page,
    StartOptions,
};

/// How a backend reports its postures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flaw {
    /// Correctly: the spec's policy or the default, everywhere.
    Honest,
    /// Never.
    Missing,
    /// The default, whatever the spec says.
    DefaultForAll,
    /// In `get_status` only, not in listings.
    ListOmits,
    /// Says `none` leaves the metadata ranges reachable.
    NoneLeaksMetadata,
}

/// The in-memory backend with postures added on top, as `flaw` says.
#[derive(Debug)]
struct Postures {
    inner: InMemoryOrchestrator,
    flaw: Flaw,
    policies: Mutex<HashMap<String, Egress>>,
}

const DEFAULT: Egress = Egress::Open;

impl Postures {
    fn new(flaw: Flaw) -> Self {
        Self {
            inner: InMemoryOrchestrator::new(),
            flaw,
            policies: Mutex::new(HashMap::new()),
        }
    }

    fn posture(&self, id: &InstanceId) -> Option<EgressPosture> {
        let policy = self.policies.lock().unwrap().get(id.as_str()).cloned()?;
        let policy = if self.flaw == Flaw::DefaultForAll {
            DEFAULT
        } else {
            policy
        };
        let metadata_blocked = policy == Egress::None && self.flaw != Flaw::NoneLeaksMetadata;
        (self.flaw != Flaw::Missing).then(|| EgressPosture {
            policy,
            enforced_by: "test double: in-process".into(),
            metadata_blocked,
        })
    }
}

#[async_trait]
impl McpOrchestrator for Postures {
    fn backend_name(&self) -> &'static str {
        "postures"
    }
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let id = self.inner.start_server(spec, o).await?;
        self.policies
            .lock()
            .unwrap()
            .insert(id.as_str().to_owned(), spec.effective_egress(&DEFAULT));
        Ok(id)
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        self.inner.stop_server(id, g).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let mut status = self.inner.get_status(id).await?;
        status.egress = self.posture(id);
        Ok(status)
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.inner.get_logs(id, o).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        let mut page = self.inner.list_instances(f).await?;
        if self.flaw != Flaw::ListOmits {
            for i in &mut page.items {
                i.status.egress = self.posture(&i.id);
            }
        }
        Ok(page)
    }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        self.inner.connect(id).await
    }
}

async fn run(flaw: Flaw) -> std::result::Result<(), String> {
    let o = Postures::new(flaw);
    let servers = CommandServers {
        program: "mcp-test-server".into(),
    };
    let h = Harness::new(&o, &servers)
        .with_timeout(Duration::from_secs(5))
        .with_http_connect(HttpConnect::Unsupported)
        .with_capability(Capability::Egress, Support::Honoured)
        .with_egress_posture(DEFAULT);
    let result = conformance::run_check(&h, "egress_posture")
        .await
        .map_err(|f| f.message);
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(left.items.is_empty(), "the check left {:?}", left.items);
    result
}

#[tokio::test]
async fn a_backend_stating_its_postures_passes() {
    run(Flaw::Honest).await.unwrap();
}

#[tokio::test]
async fn kit_catches_postures_that_are_wrong_or_missing() {
    for (flaw, want) in [
        (Flaw::Missing, "states no egress posture"),
        (
            Flaw::DefaultForAll,
            "reports policy open (metadata denied) where the instance runs with none",
        ),
        (Flaw::ListOmits, "the listing reports posture None"),
        (
            Flaw::NoneLeaksMetadata,
            "egress none reported with the metadata ranges reachable",
        ),
    ] {
        let message = run(flaw).await.expect_err("a broken backend passed");
        assert!(message.contains(want), "{flaw:?}: {message}");
    }
}

#[tokio::test]
async fn backends_that_declare_nothing_are_not_checked() {
    let o = InMemoryOrchestrator::new();
    let servers = CommandServers {
        program: "mcp-test-server".into(),
    };
    // Posture declared but egress not honoured, and the other way round: nothing to check.
    let h = Harness::new(&o, &servers).with_egress_posture(DEFAULT);
    conformance::run_check(&h, "egress_posture").await.unwrap();
    let h = Harness::new(&o, &servers).with_capability(Capability::Egress, Support::Honoured);
    conformance::run_check(&h, "egress_posture").await.unwrap();
}
