//! The in-memory reference backend passes the whole conformance kit, directly and through
//! `Arc<dyn McpOrchestrator>`; deliberately broken backends make the kit fail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mcp_orchestrator_api::conformance::{self, CommandServers, Harness, StreamSupport};
use mcp_orchestrator_api::{
    DynOrchestrator, InMemoryOrchestrator, LogLines, McpOrchestrator, OrchestratorError, Result,
};
use mcp_types::{
    Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, LogStream, McpServer, Page,
    Phase, StartOptions, StreamSelector,
};

fn servers() -> CommandServers {
    // The in-memory backend interprets fixture arguments itself; the program is never run.
    CommandServers {
        program: "mcp-test-server".into(),
    }
}

fn harness<'a>(o: &'a dyn McpOrchestrator, s: &'a CommandServers) -> Harness<'a> {
    Harness {
        timeout: Duration::from_secs(10),
        ..Harness::new(o, s)
    }
}

#[tokio::test]
async fn in_memory_passes_every_check() {
    let o = InMemoryOrchestrator::new();
    let s = servers();
    if let Err(report) = conformance::run_all(&harness(&o, &s)).await {
        panic!("{report}");
    }
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(
        left.items.is_empty(),
        "the kit left instances behind: {:?}",
        left.items
    );
}

#[tokio::test]
async fn in_memory_passes_through_arc_dyn() {
    let o: Arc<DynOrchestrator> = Arc::new(InMemoryOrchestrator::new());
    let s = servers();
    let h = harness(&o, &s);
    for check in conformance::checks() {
        if let Err(f) = conformance::run_check(&h, check).await {
            panic!("{f}");
        }
    }
    assert_eq!(o.backend_name(), "memory");
}

/// Reports every exited instance as still Running: the bug "never reports Failed".
#[derive(Debug, Default)]
struct NeverFails(InMemoryOrchestrator);

/// Forgets to remove instances on stop.
#[derive(Debug, Default)]
struct LeakyStop(InMemoryOrchestrator);

/// Ignores `tail`.
#[derive(Debug, Default)]
struct NoTail(InMemoryOrchestrator);

/// Returns every instance on every page.
#[derive(Debug, Default)]
struct BadPaging(InMemoryOrchestrator);

macro_rules! delegate_except {
    ($t:ident { $($body:tt)* }) => {
        #[async_trait]
        impl McpOrchestrator for $t {
            fn backend_name(&self) -> &'static str { "broken" }
            $($body)*
        }
    };
}

delegate_except!(NeverFails {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let mut s = self.0.get_status(id).await?;
        if s.phase.is_terminal() { s.phase = Phase::Running; s.exit_code = None; }
        Ok(s)
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(LeakyStop {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, _: Duration) -> Result<()> { self.0.get_status(id).await.map(drop) }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(NoTail {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, &LogOptions { tail: None, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(BadPaging {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        let mut page = self.0.list_instances(&InstanceFilters { continue_token: None, ..f.clone() }).await?;
        if f.continue_token.is_some() { page.continue_token = None; }
        Ok(page)
    }
});

/// Behaves like an engine that merges stdout and stderr (Kubernetes): every line is stdout and a
/// single-stream selection is refused.
#[derive(Debug, Default)]
struct MergedStreams(InMemoryOrchestrator);

/// Merges the streams like [`MergedStreams`] but still answers single-stream selections.
#[derive(Debug, Default)]
struct MergedButSelects(InMemoryOrchestrator);

fn all_stdout(lines: LogLines) -> LogLines {
    lines
        .map(|l| {
            l.map(|mut l| {
                l.stream = LogStream::Stdout;
                l
            })
        })
        .boxed()
}

delegate_except!(MergedStreams {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        if o.stream != StreamSelector::All {
            return Err(OrchestratorError::NotSupported { backend: "broken", what: "one stream alone".into() });
        }
        Ok(all_stdout(self.0.get_logs(id, o).await?))
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(MergedButSelects {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        Ok(all_stdout(self.0.get_logs(id, &LogOptions { stream: StreamSelector::All, ..o.clone() }).await?))
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

async fn fails(o: &dyn McpOrchestrator, check: &str) -> String {
    fails_with(o, check, StreamSupport::Separate).await
}

async fn fails_with(o: &dyn McpOrchestrator, check: &str, streams: StreamSupport) -> String {
    let s = servers();
    let h = Harness {
        timeout: Duration::from_secs(3),
        streams,
        ..Harness::new(o, &s)
    };
    match conformance::run_check(&h, check).await {
        Ok(()) => panic!("{check} passed against a broken backend"),
        Err(f) => {
            assert_eq!(f.check, check);
            f.message
        }
    }
}

#[tokio::test]
async fn kit_catches_a_backend_that_never_reports_failed() {
    let msg = fails(&NeverFails::default(), "exit_code_reaches_failed").await;
    assert!(msg.contains("Failed") || msg.contains("timed out"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_stop_that_does_not_remove() {
    let msg = fails(&LeakyStop::default(), "start_status_stop").await;
    assert!(msg.contains("expected NotFound"), "{msg}");
}

#[tokio::test]
async fn kit_catches_ignored_tail() {
    let msg = fails(&NoTail::default(), "logs_tail").await;
    assert!(msg.contains("tail 3"), "{msg}");
}

#[tokio::test]
async fn kit_catches_pages_that_repeat() {
    let msg = fails(&BadPaging::default(), "pagination").await;
    assert!(msg.contains("limit 2") || msg.contains("twice"), "{msg}");
}

#[tokio::test]
async fn run_all_reports_every_failure() {
    let s = servers();
    let o = NeverFails::default();
    let h = Harness {
        timeout: Duration::from_secs(3),
        ..Harness::new(&o, &s)
    };
    let report = conformance::run_all(&h).await.unwrap_err();
    assert!(
        report
            .failures
            .iter()
            .any(|f| f.check == "exit_code_reaches_failed"),
        "{report}"
    );
    assert_eq!(report.ran, conformance::checks().len());
}

#[tokio::test]
async fn kit_catches_merged_streams_on_a_backend_that_claims_separate_ones() {
    let msg = fails(&MergedStreams::default(), "logs_timestamps_and_streams").await;
    assert!(msg.contains("streams: expected"), "{msg}");
}

#[tokio::test]
async fn merged_stream_backends_pass_when_they_say_so() {
    let o = MergedStreams::default();
    let s = servers();
    let h = Harness {
        timeout: Duration::from_secs(10),
        streams: StreamSupport::Merged,
        ..Harness::new(&o, &s)
    };
    if let Err(f) = conformance::run_check(&h, "logs_timestamps_and_streams").await {
        panic!("{f}");
    }
}

#[tokio::test]
async fn kit_holds_merged_stream_backends_to_their_claim() {
    // Labels stderr lines as stderr: not what a merged log can know.
    let msg = fails_with(
        &InMemoryOrchestrator::new(),
        "logs_timestamps_and_streams",
        StreamSupport::Merged,
    )
    .await;
    assert!(msg.contains("every line as stdout"), "{msg}");
    // Answers a single-stream selection with lines that may belong to the other stream.
    let msg = fails_with(
        &MergedButSelects::default(),
        "logs_timestamps_and_streams",
        StreamSupport::Merged,
    )
    .await;
    assert!(msg.contains("must be NotSupported"), "{msg}");
}
