//! The kit's persistent-volume and orphan-collection checks fail against deliberately broken
//! backends (one per bug they exist to catch), and pass against the in-memory backend in
//! every declaration.

use std::time::Duration;

use async_trait::async_trait;
use mcp_orchestrator_api::conformance::{
    self, Capability, CommandServers, Harness, HttpConnect, Support,
};
use mcp_orchestrator_api::{
    InMemoryOrchestrator, LogLines, McpChannel, McpOrchestrator, OrchestratorError, Result,
};
use mcp_types::{
    GcReport, Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer,
    OrphanKind, Page, PersistentVolume, StartOptions,
};

fn servers() -> CommandServers {
    CommandServers {
        program: "mcp-test-server".into(),
    }
}

/// Runs `check` with the two capabilities declared as given; returns the failure message.
async fn outcome(o: &dyn McpOrchestrator, check: &str, support: Support) -> Result<(), String> {
    let s = servers();
    let h = Harness::new(o, &s)
        .with_timeout(Duration::from_secs(5))
        .with_http_connect(HttpConnect::Unsupported)
        .with_capability(Capability::PersistentVolumes, support)
        .with_capability(Capability::GarbageCollection, support);
    conformance::run_check(&h, check).await.map_err(|f| {
        assert_eq!(f.check, check);
        f.message
    })
}

async fn fails(o: &dyn McpOrchestrator, check: &str) -> String {
    match outcome(o, check, Support::Honoured).await {
        Ok(()) => panic!("{check} passed against a broken backend"),
        Err(m) => m,
    }
}

/// The trait's methods delegated to the in-memory backend, except those given.
macro_rules! broken {
    ($t:ident { $($body:tt)* }) => {
        #[derive(Debug, Default)]
        struct $t(InMemoryOrchestrator);
        #[async_trait]
        impl McpOrchestrator for $t {
            fn backend_name(&self) -> &'static str { "broken" }
            async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
            async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
            async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
            async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
            async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
            $($body)*
        }
    };
}

// Treats persistent volumes as per-instance ones: the data is lost on restart.
broken!(ForgetsPersistence {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let mut spec = spec.clone();
        for v in &mut spec.volumes { v.persistent = false; }
        self.0.start_server(&spec, o).await
    }
    async fn list_volumes(&self, s: Option<&str>) -> Result<Vec<PersistentVolume>> { self.0.list_volumes(s).await }
    async fn remove_volume(&self, n: &str) -> Result<()> { self.0.remove_volume(n).await }
});

// Keeps every volume per server, per-instance ones included.
broken!(EverythingPersists {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let mut spec = spec.clone();
        for v in &mut spec.volumes { v.persistent = true; }
        self.0.start_server(&spec, o).await
    }
    async fn list_volumes(&self, s: Option<&str>) -> Result<Vec<PersistentVolume>> {
        // Lists only the volumes the spec asked to keep, hiding the extra ones.
        let mut v = self.0.list_volumes(s).await?;
        v.retain(|v| v.volume == "keep");
        Ok(v)
    }
    async fn remove_volume(&self, n: &str) -> Result<()> {
        let scratch = n.replace("-keep", "-scratch");
        let _ = self.0.remove_volume(&scratch).await;
        self.0.remove_volume(n).await
    }
});

// Removes a volume that an instance still mounts (pretends to, here: answers Ok).
broken!(RemovesMounted {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn list_volumes(&self, s: Option<&str>) -> Result<Vec<PersistentVolume>> { self.0.list_volumes(s).await }
    async fn remove_volume(&self, n: &str) -> Result<()> {
        match self.0.remove_volume(n).await {
            Err(OrchestratorError::InUse { .. }) => Ok(()),
            other => other,
        }
    }
});

// Refuses, but without naming who mounts the volume.
broken!(UnnamedRefusal {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn list_volumes(&self, s: Option<&str>) -> Result<Vec<PersistentVolume>> { self.0.list_volumes(s).await }
    async fn remove_volume(&self, n: &str) -> Result<()> {
        match self.0.remove_volume(n).await {
            Err(OrchestratorError::InUse { what, .. }) => Err(OrchestratorError::InUse { what, users: Vec::new() }),
            other => other,
        }
    }
});

// Lists volumes without the instances that mount them.
broken!(NoUsers {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn list_volumes(&self, s: Option<&str>) -> Result<Vec<PersistentVolume>> {
        let mut v = self.0.list_volumes(s).await?;
        for v in &mut v { v.in_use_by.clear(); }
        Ok(v)
    }
    async fn remove_volume(&self, n: &str) -> Result<()> { self.0.remove_volume(n).await }
});

// Declares persistent volumes honoured but keeps the trait's defaults (NotSupported).
broken!(DefaultsOnly {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
});

// Reports every live instance as an orphan.
broken!(GcReportsLive {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        let mut report = self.0.collect_garbage(dry_run).await?;
        for i in self.0.list_instances(&InstanceFilters::default()).await?.items {
            report.push(OrphanKind::Instance, i.id.as_str(), "no supervisor", true);
        }
        Ok(report)
    }
});

// Removes on a dry run (reports removals).
broken!(GcIgnoresDryRun {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn collect_garbage(&self, _dry_run: bool) -> Result<GcReport> {
        let mut report = self.0.collect_garbage(false).await?;
        report.push(OrphanKind::Network, "mcpctl-stale", "no container", true);
        Ok(report)
    }
});

#[tokio::test]
async fn in_memory_passes_both_checks_in_every_declaration() {
    let o = InMemoryOrchestrator::new();
    for check in ["persistent_volumes", "garbage_collection"] {
        outcome(&o, check, Support::Honoured).await.unwrap();
    }
    // Declared refused, the in-memory backend (which honours them) is caught.
    let m = outcome(&o, "persistent_volumes", Support::Refused)
        .await
        .unwrap_err();
    assert!(m.contains("expected NotSupported"), "{m}");
    let m = outcome(&o, "garbage_collection", Support::Refused)
        .await
        .unwrap_err();
    assert!(m.contains("expected NotSupported"), "{m}");
    assert!(o.list_volumes(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn trait_defaults_answer_not_supported() {
    let o = DefaultsOnly::default();
    outcome(&o, "persistent_volumes", Support::Refused)
        .await
        .unwrap();
    outcome(&o, "garbage_collection", Support::Refused)
        .await
        .unwrap();
    let m = fails(&o, "persistent_volumes").await;
    assert!(m.contains("not support"), "{m}");
    let m = fails(&o, "garbage_collection").await;
    assert!(m.contains("not support"), "{m}");
}

#[tokio::test]
async fn kit_catches_persistent_data_lost_on_restart() {
    let m = fails(&ForgetsPersistence::default(), "persistent_volumes").await;
    assert!(m.contains("expected exactly the volume"), "{m}");
}

#[tokio::test]
async fn kit_catches_per_instance_data_carried_over() {
    let m = fails(&EverythingPersists::default(), "persistent_volumes").await;
    assert!(m.contains("the per-instance one gone"), "{m}");
}

#[tokio::test]
async fn kit_catches_removal_of_a_mounted_volume() {
    let m = fails(&RemovesMounted::default(), "persistent_volumes").await;
    assert!(m.contains("expected InUse, got Ok"), "{m}");
}

#[tokio::test]
async fn kit_catches_a_refusal_that_names_nobody() {
    let m = fails(&UnnamedRefusal::default(), "persistent_volumes").await;
    assert!(m.contains("must name the instance"), "{m}");
}

#[tokio::test]
async fn kit_catches_a_listing_without_users() {
    let m = fails(&NoUsers::default(), "persistent_volumes").await;
    assert!(m.contains("in use by"), "{m}");
}

#[tokio::test]
async fn kit_catches_live_instances_reported_as_orphans() {
    let m = fails(&GcReportsLive::default(), "garbage_collection").await;
    assert!(m.contains("reported as orphans"), "{m}");
}

#[tokio::test]
async fn kit_catches_a_dry_run_that_removes() {
    let m = fails(&GcIgnoresDryRun::default(), "garbage_collection").await;
    assert!(m.contains("dry run"), "{m}");
}
