//! The in-memory reference backend passes the whole conformance kit, directly and through
//! `Arc<dyn McpOrchestrator>`; deliberately broken backends make the kit fail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mcp_orchestrator_api::conformance::{
    self, Capability, CommandServers, FollowAcrossRestarts, Harness, HttpConnect, PreviousLogs,
    StreamSupport, Support,
};
use mcp_orchestrator_api::{
    DynOrchestrator, InMemoryOrchestrator, LogLines, McpChannel, McpOrchestrator,
    OrchestratorError, Result, StdioChannel,
};
use mcp_types::{
    Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, LogStream, McpServer, Page,
    Phase, RestartPolicy, StartOptions, StreamSelector,
};

fn servers() -> CommandServers {
    // The in-memory backend interprets fixture arguments itself; the program is never run.
    CommandServers {
        program: "mcp-test-server".into(),
    }
}

/// A secrets directory for the kit's secrets, removed when dropped.
struct Secrets {
    dir: std::path::PathBuf,
    store: conformance::DirSecretStore,
}

impl Secrets {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("mcp-kit-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            store: conformance::DirSecretStore::new(&dir),
            dir,
        }
    }

    fn resolver(&self) -> Arc<mcp_orchestrator_api::secrets::DirSecretResolver> {
        Arc::new(mcp_orchestrator_api::secrets::DirSecretResolver::new(
            &self.dir,
        ))
    }
}

impl Drop for Secrets {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn harness<'a>(o: &'a dyn McpOrchestrator, s: &'a CommandServers) -> Harness<'a> {
    Harness::new(o, s)
        .with_timeout(Duration::from_secs(10))
        .with_http_connect(HttpConnect::Unsupported)
        .with_capability(Capability::PersistentVolumes, Support::Honoured)
        .with_capability(Capability::GarbageCollection, Support::Honoured)
}

#[tokio::test]
async fn in_memory_passes_every_check() {
    let secrets = Secrets::new("every-check");
    let o = InMemoryOrchestrator::new().with_secrets(secrets.resolver());
    let s = servers();
    let breaker = o.watch_breaker();
    let h = harness(&o, &s)
        .with_watch_break(Arc::new(move || breaker.break_watches()))
        .with_secrets(&secrets.store)
        .with_secret_file_mode(0o400);
    if let Err(report) = conformance::run_all(&h).await {
        panic!("{report}");
    }
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(
        left.items.is_empty(),
        "the kit left instances behind: {:?}",
        left.items
    );
    let volumes = o.list_volumes(None).await.unwrap();
    assert!(
        volumes.is_empty(),
        "the kit left volumes behind: {volumes:?}"
    );
}

#[tokio::test]
async fn in_memory_passes_through_arc_dyn() {
    let secrets = Secrets::new("arc-dyn");
    let memory = InMemoryOrchestrator::new().with_secrets(secrets.resolver());
    let breaker = memory.watch_breaker();
    let o: Arc<DynOrchestrator> = Arc::new(memory);
    let s = servers();
    let h = harness(&o, &s)
        .with_watch_break(Arc::new(move || breaker.break_watches()))
        .with_secrets(&secrets.store);
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

/// Implements the trait for a wrapper of the in-memory backend with the given methods, `connect`
/// delegated.
macro_rules! delegate_except {
    ($t:ident { $($body:tt)* }) => {
        #[async_trait]
        impl McpOrchestrator for $t {
            fn backend_name(&self) -> &'static str { "broken" }
            $($body)*
            async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
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
    let h = Harness::new(o, &s)
        .with_timeout(Duration::from_secs(3))
        .with_streams(streams)
        .with_http_connect(HttpConnect::Unsupported);
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
async fn kit_catches_merged_streams_on_a_backend_that_claims_separate_ones() {
    let msg = fails(&MergedStreams::default(), "logs_timestamps_and_streams").await;
    assert!(msg.contains("streams: expected"), "{msg}");
}

#[tokio::test]
async fn merged_stream_backends_pass_when_they_say_so() {
    let o = MergedStreams::default();
    let s = servers();
    let h = Harness::new(&o, &s)
        .with_timeout(Duration::from_secs(10))
        .with_streams(StreamSupport::Merged);
    for check in ["logs_timestamps_and_streams", "logs_previous"] {
        if let Err(f) = conformance::run_check(&h, check).await {
            panic!("{f}");
        }
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

// ---------------------------------------------------------------------------------------------
// One broken backend for every check, each caught by the check it breaks.

/// Treats stopping an unknown id as success (an "idempotent" stop).
#[derive(Debug, Default)]
struct StopUnknownOk(InMemoryOrchestrator);

delegate_except!(StopUnknownOk {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        match self.0.stop_server(id, g).await {
            Err(OrchestratorError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_a_stop_of_an_unknown_id_that_succeeds() {
    let msg = fails(&StopUnknownOk::default(), "stop_unknown_is_not_found").await;
    assert!(msg.contains("expected NotFound, got Ok(())"), "{msg}");
}

/// Answers the logs of an unknown id with an empty stream.
#[derive(Debug, Default)]
struct LogsOfUnknownAreEmpty(InMemoryOrchestrator);

delegate_except!(LogsOfUnknownAreEmpty {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        match self.0.get_logs(id, o).await {
            Err(OrchestratorError::NotFound { .. }) => Ok(futures::stream::empty().boxed()),
            other => other,
        }
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_logs_of_an_unknown_id_that_are_empty() {
    let msg = fails(
        &LogsOfUnknownAreEmpty::default(),
        "status_unknown_is_not_found",
    )
    .await;
    assert!(
        msg.contains("logs: expected NotFound, got a stream"),
        "{msg}"
    );
}

/// Drops the spec's resources instead of validating them.
#[derive(Debug, Default)]
struct IgnoresResources(InMemoryOrchestrator);

delegate_except!(IgnoresResources {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        self.0.start_server(&McpServer { resources: mcp_types::ResourceRequirements::default(), ..spec.clone() }, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_a_spec_that_is_not_validated() {
    let msg = fails(&IgnoresResources::default(), "invalid_spec_rejected").await;
    assert!(
        msg.contains("request > limit: expected InvalidSpec, got Ok"),
        "{msg}"
    );
}

/// Filters `since` at whole seconds, like an engine's own `since` (Docker's, the Kubernetes
/// API's `sinceTime`).
#[derive(Debug, Default)]
struct WholeSecondSince(InMemoryOrchestrator);

delegate_except!(WholeSecondSince {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        let since = o.since.map(|t| mcp_types::Timestamp::from_second(t.as_second()).unwrap());
        self.0.get_logs(id, &LogOptions { since, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_since_at_whole_seconds() {
    let msg = fails(&WholeSecondSince::default(), "logs_since").await;
    assert!(msg.contains("1 ms after \"early\""), "{msg}");
}

/// Ignores `follow`: the stream ends with the lines that exist.
#[derive(Debug, Default)]
struct NoFollow(InMemoryOrchestrator);

delegate_except!(NoFollow {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, &LogOptions { follow: false, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_a_follow_that_does_not_follow() {
    let msg = fails(&NoFollow::default(), "logs_follow").await;
    assert!(msg.contains("stream ended before \"after\""), "{msg}");
}

/// Ignores the label selector when listing.
#[derive(Debug, Default)]
struct IgnoresLabelSelector(InMemoryOrchestrator);

delegate_except!(IgnoresLabelSelector {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.0.list_instances(&InstanceFilters { label_selector: None, ..f.clone() }).await
    }
});

#[tokio::test]
async fn kit_catches_an_ignored_label_selector() {
    let msg = fails(&IgnoresLabelSelector::default(), "list_filters").await;
    assert!(msg.contains("tier=front"), "{msg}");
}

/// Names instances after the server and the current second, so starts of one server within a
/// second collide.
#[derive(Debug, Default)]
struct SecondNamedIds(
    InMemoryOrchestrator,
    std::sync::Mutex<std::collections::BTreeSet<(String, i64)>>,
);

delegate_except!(SecondNamedIds {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let key = (spec.name.clone(), mcp_types::Timestamp::now().as_second());
        if !self.1.lock().unwrap().insert(key) {
            return Err(OrchestratorError::AlreadyExists { what: format!("instance of {}", spec.name) });
        }
        self.0.start_server(spec, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_concurrent_starts_that_collide() {
    let msg = fails(&SecondNamedIds::default(), "concurrent_starts").await;
    assert!(msg.contains("already exists"), "{msg}");
}

/// Lists instances without their `app.kubernetes.io/instance` label.
#[derive(Debug, Default)]
struct NoAppInstanceLabel(InMemoryOrchestrator);

fn without_app_instance(mut page: Page<Instance>) -> Page<Instance> {
    for i in &mut page.items {
        i.labels.remove(mcp_types::labels::APP_INSTANCE);
    }
    page
}

delegate_except!(NoAppInstanceLabel {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.0.list_instances(f).await.map(without_app_instance)
    }
});

#[tokio::test]
async fn kit_catches_a_missing_app_instance_label() {
    let msg = fails(&NoAppInstanceLabel::default(), "labels_follow_conventions").await;
    assert!(msg.contains("label app.kubernetes.io/instance"), "{msg}");
}

/// Answers a stdout-only selection with both streams.
#[derive(Debug, Default)]
struct StdoutSelectsAll(InMemoryOrchestrator);

delegate_except!(StdoutSelectsAll {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        let stream = if o.stream == StreamSelector::Stdout { StreamSelector::All } else { o.stream };
        self.0.get_logs(id, &LogOptions { stream, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_a_stdout_selection_with_stderr_lines() {
    let msg = fails(&StdoutSelectsAll::default(), "logs_timestamps_and_streams").await;
    assert!(msg.contains("stdout only"), "{msg}");
}

/// All matching instances, in id order, ignoring limit and token.
async fn everything_matching(
    o: &InMemoryOrchestrator,
    f: &InstanceFilters,
) -> Result<Vec<Instance>> {
    let all = InstanceFilters {
        limit: None,
        continue_token: None,
        ..f.clone()
    };
    Ok(o.list_instances(&all).await?.items)
}

fn page_of(items: Vec<Instance>, token: Option<String>) -> Page<Instance> {
    Page {
        items,
        continue_token: token,
    }
}

/// Pages by offset: the token is how many items were returned so far.
#[derive(Debug, Default)]
struct OffsetPaging(InMemoryOrchestrator);

delegate_except!(OffsetPaging {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        let all = everything_matching(&self.0, f).await?;
        let from: usize = f.continue_token.as_deref().map_or(0, |t| t.parse().unwrap());
        let limit = f.limit.map_or(usize::MAX, |l| l as usize);
        let to = from.saturating_add(limit).min(all.len());
        let token = (to < all.len()).then(|| to.to_string());
        Ok(page_of(all.get(from..to).unwrap_or_default().to_vec(), token))
    }
});

#[tokio::test]
async fn kit_catches_offset_paging_when_an_instance_is_added() {
    let msg = fails(&OffsetPaging::default(), "pagination").await;
    assert!(
        msg.contains("with an instance started between pages: an instance appeared twice"),
        "{msg}"
    );
}

/// Pages with a token naming the next id to return, and starts over when that id is gone.
#[derive(Debug, Default)]
struct NextIdPaging(InMemoryOrchestrator);

delegate_except!(NextIdPaging {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        let all = everything_matching(&self.0, f).await?;
        let from = f.continue_token.as_deref().and_then(|t| all.iter().position(|i| i.id.as_str() == t)).unwrap_or(0);
        let limit = f.limit.map_or(usize::MAX, |l| l as usize);
        let to = from.saturating_add(limit).min(all.len());
        let token = all.get(to).map(|i| i.id.to_string());
        Ok(page_of(all[from..to].to_vec(), token))
    }
});

#[tokio::test]
async fn kit_catches_paging_that_loses_its_place_when_the_next_instance_stops() {
    let msg = fails(&NextIdPaging::default(), "pagination").await;
    assert!(
        msg.contains("not yet returned") && msg.contains("an instance appeared twice"),
        "{msg}"
    );
}

/// Returns an empty first page with a continue token (as a backend filtering on the client
/// side may), then pages normally.
#[derive(Debug, Default)]
struct EmptyFirstPage(InMemoryOrchestrator);

delegate_except!(EmptyFirstPage {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        match f.continue_token.as_deref() {
            None if f.limit.is_some() => Ok(page_of(Vec::new(), Some("first".into()))),
            Some("first") => self.0.list_instances(&InstanceFilters { continue_token: None, ..f.clone() }).await,
            _ => self.0.list_instances(f).await,
        }
    }
});

#[tokio::test]
async fn pagination_accepts_an_empty_page_with_a_token() {
    let o = EmptyFirstPage::default();
    let s = servers();
    if let Err(f) = conformance::run_check(&harness(&o, &s), "pagination").await {
        panic!("{f}");
    }
}

/// Ignores the restart policy: every server runs once.
#[derive(Debug, Default)]
struct NeverRestarts(InMemoryOrchestrator);

delegate_except!(NeverRestarts {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        self.0.start_server(&McpServer { restart_policy: RestartPolicy::Never, ..spec.clone() }, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_an_ignored_restart_policy() {
    let msg = fails(&NeverRestarts::default(), "restart_policy").await;
    assert!(
        msg.contains("OnFailure, exit 1: a server that will be restarted was reported Failed"),
        "{msg}"
    );
}

/// Restarts after exit 0 under `OnFailure` (treats it as `Always`).
#[derive(Debug, Default)]
struct OnFailureAlways(InMemoryOrchestrator);

delegate_except!(OnFailureAlways {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let restart_policy = match spec.restart_policy {
            RestartPolicy::OnFailure => RestartPolicy::Always,
            other => other,
        };
        self.0.start_server(&McpServer { restart_policy, ..spec.clone() }, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_a_restart_after_success_under_on_failure() {
    let msg = fails(&OnFailureAlways::default(), "restart_policy").await;
    assert!(msg.contains("OnFailure, exit 0"), "{msg}");
}

/// Reports a crash-looping server as Failed while it waits to be restarted.
#[derive(Debug, Default)]
struct FailedWhileRestarting(InMemoryOrchestrator);

delegate_except!(FailedWhileRestarting {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let mut s = self.0.get_status(id).await?;
        if s.reason.as_deref() == Some(mcp_types::reasons::CRASH_LOOP_BACKOFF) { s.phase = Phase::Failed; }
        Ok(s)
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_a_crash_loop_reported_as_failed() {
    let msg = fails(&FailedWhileRestarting::default(), "restart_policy").await;
    assert!(
        msg.contains("will be restarted was reported Failed"),
        "{msg}"
    );
}

/// Ignores `previous`: always the current run.
#[derive(Debug, Default)]
struct IgnoresPrevious(InMemoryOrchestrator);

delegate_except!(IgnoresPrevious {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, &LogOptions { previous: false, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_an_ignored_previous() {
    let msg = fails(&IgnoresPrevious::default(), "logs_previous").await;
    assert!(
        msg.contains("previous on a first run: expected InvalidArgument for `previous`, got lines"),
        "{msg}"
    );
}

/// Answers `previous` with every earlier run's lines plus the current run's.
#[derive(Debug, Default)]
struct PreviousOfAllRuns(InMemoryOrchestrator);

delegate_except!(PreviousOfAllRuns {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        let earlier = self.0.get_logs(id, o).await?;
        if !o.previous {
            return Ok(earlier);
        }
        let current = self.0.get_logs(id, &LogOptions { previous: false, ..o.clone() }).await?;
        Ok(earlier.chain(current).boxed())
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_previous_logs_of_more_than_one_run() {
    let msg = fails(&PreviousOfAllRuns::default(), "logs_previous").await;
    assert!(msg.contains("previous after two restarts"), "{msg}");
}

/// Keeps one log across restarts and refuses `previous`, like Docker.
#[derive(Debug, Default)]
struct RefusesPrevious(InMemoryOrchestrator);

delegate_except!(RefusesPrevious {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        if o.previous {
            self.0.get_status(id).await?;
            return Err(OrchestratorError::InvalidArgument { what: "previous", message: "one log across restarts".into() });
        }
        self.0.get_logs(id, o).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

async fn previous_check(
    o: &dyn McpOrchestrator,
    previous_logs: PreviousLogs,
) -> conformance::CheckResult {
    let s = servers();
    let h = Harness::new(o, &s)
        .with_timeout(Duration::from_secs(10))
        .with_previous_logs(previous_logs);
    conformance::run_check(&h, "logs_previous").await
}

#[tokio::test]
async fn previous_logs_are_held_to_what_the_backend_claims() {
    // Refusing is fine for a backend that says so, and caught for one that claims to keep them.
    if let Err(f) = previous_check(&RefusesPrevious::default(), PreviousLogs::Refused).await {
        panic!("{f}");
    }
    let f = previous_check(&RefusesPrevious::default(), PreviousLogs::Kept)
        .await
        .unwrap_err();
    assert!(f.message.contains("invalid previous"), "{f}");
    // Answering `previous` after a restart is caught for a backend that claims to refuse it.
    let f = previous_check(&InMemoryOrchestrator::new(), PreviousLogs::Refused)
        .await
        .unwrap_err();
    assert!(
        f.message
            .contains("previous on a backend that keeps one log across restarts"),
        "{f}"
    );
}

#[tokio::test]
async fn run_all_reports_every_failure() {
    let s = servers();
    let o = ManyBugs::default();
    let h = Harness::new(&o, &s).with_timeout(Duration::from_secs(3));
    let report = conformance::run_all(&h).await.unwrap_err();
    for check in [
        "exit_code_reaches_failed",
        "logs_tail",
        "labels_follow_conventions",
        "stop_unknown_is_not_found",
    ] {
        assert!(
            report.failures.iter().any(|f| f.check == check),
            "{check} not reported: {report}"
        );
    }
    assert_eq!(report.ran, conformance::checks().len());
    assert!(
        report.to_string().starts_with(&format!(
            "{} of {} conformance checks failed",
            report.failures.len(),
            report.ran
        )),
        "{report}"
    );
}

/// Never reports Failed, ignores `tail`, drops a label and stops unknown ids "successfully".
#[derive(Debug, Default)]
struct ManyBugs(NeverFails);

delegate_except!(ManyBugs {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        match self.0.stop_server(id, g).await {
            Err(OrchestratorError::NotFound { .. }) => Ok(()),
            other => other,
        }
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, &LogOptions { tail: None, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.0.list_instances(f).await.map(without_app_instance)
    }
});

/// Sends a line of its own before the server's output (a greeting), as a private protocol would.
#[derive(Debug, Default)]
struct Greets(InMemoryOrchestrator);

/// Lets a second client attach to a stdio server that already has one.
#[derive(Debug, Default)]
struct SharesStdio(InMemoryOrchestrator);

/// Stops the server when its client detaches.
#[derive(Debug, Default)]
struct DetachKills(InMemoryOrchestrator);

/// Answers connect to an exited instance with a stream that nothing serves.
#[derive(Debug, Default)]
struct DeadStreams(InMemoryOrchestrator);

macro_rules! delegate_all_but_connect {
    ($t:ident, $connect:item) => {
        #[async_trait]
        impl McpOrchestrator for $t {
            fn backend_name(&self) -> &'static str { "broken" }
            async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
            async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
            async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
            async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
            async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
            $connect
        }
    };
}

delegate_all_but_connect!(
    Greets,
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let McpChannel::Stdio(inner) = self.0.connect(id).await? else {
            unreachable!("memory serves stdio only")
        };
        let (reader, writer) = tokio::io::split(inner);
        let greeting: &[u8] = b"ATTACHED ok\n";
        Ok(McpChannel::Stdio(StdioChannel::new(
            tokio::io::AsyncReadExt::chain(greeting, reader),
            writer,
        )))
    }
);

delegate_all_but_connect!(
    SharesStdio,
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        match self.0.connect(id).await {
            Err(OrchestratorError::Unavailable { message, .. })
                if message.contains("another client") =>
            {
                let (ours, _theirs) = tokio::io::duplex(64);
                Ok(McpChannel::Stdio(StdioChannel::from_stream(ours)))
            }
            other => other,
        }
    }
);

/// Stops the instance when dropped.
struct StopOnDrop(InMemoryOrchestrator, InstanceId);
impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let (o, id) = (self.0.clone(), self.1.clone());
        tokio::spawn(async move { o.stop_server(&id, Duration::ZERO).await });
    }
}

delegate_all_but_connect!(
    DetachKills,
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        match self.0.connect(id).await? {
            McpChannel::Stdio(ch) => Ok(McpChannel::Stdio(
                ch.with_guard(StopOnDrop(self.0.clone(), id.clone())),
            )),
            other => Ok(other),
        }
    }
);

delegate_all_but_connect!(
    DeadStreams,
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        match self.0.connect(id).await {
            Err(OrchestratorError::Unavailable { message, .. })
                if message.contains("not running") =>
            {
                let (ours, _theirs) = tokio::io::duplex(64);
                Ok(McpChannel::Stdio(StdioChannel::from_stream(ours)))
            }
            other => other,
        }
    }
);

#[tokio::test]
async fn kit_catches_a_greeting_on_the_stdio_channel() {
    let msg = fails(&Greets::default(), "connect_stdio").await;
    assert!(msg.contains("exactly the server's stdout"), "{msg}");
}

#[tokio::test]
async fn kit_catches_two_clients_on_one_stdio_server() {
    let msg = fails(&SharesStdio::default(), "connect_stdio").await;
    assert!(msg.contains("second client"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_detach_that_kills_the_server() {
    let msg = fails(&DetachKills::default(), "connect_stdio").await;
    assert!(
        msg.contains("handshake") || msg.contains("connect to") || msg.contains("running"),
        "{msg}"
    );
}

#[tokio::test]
async fn kit_catches_a_dead_stream_for_an_exited_instance() {
    let msg = fails(&DeadStreams::default(), "connect_refused").await;
    assert!(msg.contains("exited instance"), "{msg}");
}

#[tokio::test]
async fn kit_holds_backends_to_their_http_connect_claim() {
    // The in-memory backend cannot serve HTTP; a harness claiming it can makes the check fail.
    let s = servers();
    let o = InMemoryOrchestrator::new();
    let h = Harness::new(&o, &s).with_timeout(Duration::from_secs(3));
    let f = conformance::run_check(&h, "connect_http")
        .await
        .unwrap_err();
    assert!(f.message.contains("expected its URL"), "{f}");
}

#[tokio::test]
async fn a_restarted_server_shows_the_last_exit_code_while_it_runs_again() {
    use mcp_orchestrator_api::conformance::ServerFactory as _;
    use mcp_orchestrator_api::{FixtureScript, OrchestratorExt as _};
    let o = InMemoryOrchestrator::new();
    let script = FixtureScript::new()
        .sleep(Duration::from_millis(400))
        .exit(4);
    let spec = McpServer {
        restart_policy: RestartPolicy::OnFailure,
        ..servers().server("last-exit", &script)
    };
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap();
    let first = o.get_status(&id).await.unwrap();
    assert_eq!(first.last_exit_code, None, "{first:?}");
    let again = o
        .wait_for(&id, Duration::from_secs(10), "running again", |s| {
            s.phase == Phase::Running && s.restart_count >= 1
        })
        .await
        .unwrap();
    assert_eq!(
        (again.exit_code, again.last_exit_code),
        (None, Some(4)),
        "{again:?}"
    );
    o.stop_server(&id, Duration::from_secs(1)).await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Broken backends for the semantics checks (`conformance::semantics`).

/// Ignores the phase filter when listing.
#[derive(Debug, Default)]
struct IgnoresPhase(InMemoryOrchestrator);

/// Treats a continue token it never returned as "from the start".
#[derive(Debug, Default)]
struct LenientTokens(InMemoryOrchestrator);

/// Kills at once, ignoring the grace period.
#[derive(Debug, Default)]
struct KillsAtOnce(InMemoryOrchestrator);

/// Sends SIGTERM, waits out the grace period and gives up with `Timeout` instead of killing.
#[derive(Debug, Default)]
struct NeverKills(InMemoryOrchestrator);

/// Thinks an instance backing off between restarts is already stopped.
#[derive(Debug, Default)]
struct StopSkipsBackoff(InMemoryOrchestrator);

/// Drops the spec's env.
#[derive(Debug, Default)]
struct DropsEnv(InMemoryOrchestrator);

/// Drops the spec's `workingDir`.
#[derive(Debug, Default)]
struct DropsWorkingDir(InMemoryOrchestrator);

/// Refuses GPUs with `NotSupported` (a correct refusal).
#[derive(Debug, Default)]
struct RefusesGpu(InMemoryOrchestrator);

/// Refuses GPUs, but as an invalid spec.
#[derive(Debug, Default)]
struct RefusesGpuAsInvalid(InMemoryOrchestrator);

/// Applies `tail` only when not following.
#[derive(Debug, Default)]
struct FollowIgnoresTail(InMemoryOrchestrator);

/// Applies `since` only when not following.
#[derive(Debug, Default)]
struct FollowIgnoresSince(InMemoryOrchestrator);

delegate_except!(IgnoresPhase {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.0.list_instances(&InstanceFilters { phase: None, ..f.clone() }).await
    }
});

delegate_except!(LenientTokens {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        match self.0.list_instances(f).await {
            Err(OrchestratorError::InvalidArgument { .. }) => {
                self.0.list_instances(&InstanceFilters { continue_token: None, ..f.clone() }).await
            }
            other => other,
        }
    }
});

delegate_except!(KillsAtOnce {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, _: Duration) -> Result<()> { self.0.stop_server(id, Duration::ZERO).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(NeverKills {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        // The process is still there after the grace period: report it instead of killing it.
        tokio::time::sleep(g).await;
        match self.0.get_status(id).await?.phase {
            Phase::Running => Err(OrchestratorError::Timeout { what: format!("stopping {id}"), after: g }),
            _ => self.0.stop_server(id, g).await,
        }
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(StopSkipsBackoff {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        if self.0.get_status(id).await?.phase == Phase::Pending {
            return Ok(());
        }
        self.0.stop_server(id, g).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(DropsEnv {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        self.0.start_server(&McpServer { env: std::collections::BTreeMap::new(), ..spec.clone() }, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(DropsWorkingDir {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        self.0.start_server(&McpServer { working_dir: None, ..spec.clone() }, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(RefusesGpu {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        if spec.gpu.is_some() {
            return Err(OrchestratorError::NotSupported { backend: "broken", what: "GPUs".into() });
        }
        self.0.start_server(spec, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(RefusesGpuAsInvalid {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        if spec.gpu.is_some() {
            return Err(OrchestratorError::InvalidSpec(mcp_types::ValidationErrors::single("gpu", "no GPUs here")));
        }
        self.0.start_server(spec, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(FollowIgnoresTail {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        let tail = if o.follow { None } else { o.tail };
        self.0.get_logs(id, &LogOptions { tail, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

delegate_except!(FollowIgnoresSince {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        let since = if o.follow { None } else { o.since };
        self.0.get_logs(id, &LogOptions { since, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
});

#[tokio::test]
async fn kit_catches_an_ignored_phase_filter() {
    let msg = fails(&IgnoresPhase::default(), "list_phase_filter").await;
    assert!(msg.contains("phase=Running"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_malformed_continue_token_taken_as_a_fresh_listing() {
    let msg = fails(&LenientTokens::default(), "continue_token_malformed").await;
    assert!(msg.contains("expected InvalidArgument"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_stop_that_skips_the_grace_period() {
    let msg = fails(&KillsAtOnce::default(), "stop_escalates_to_kill").await;
    assert!(msg.contains("before the grace period"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_stop_that_never_kills() {
    let msg = fails(&NeverKills::default(), "stop_escalates_to_kill").await;
    assert!(
        msg.contains("ignoring SIGTERM") && msg.contains("timed out"),
        "{msg}"
    );
}

#[tokio::test]
async fn kit_catches_a_stop_that_skips_instances_in_backoff() {
    let msg = fails(&StopSkipsBackoff::default(), "stop_during_backoff").await;
    assert!(msg.contains("expected NotFound"), "{msg}");
}

#[tokio::test]
async fn kit_catches_dropped_env() {
    let msg = fails(&DropsEnv::default(), "env_propagation").await;
    assert!(msg.contains("MCP_KIT_GREETING unset"), "{msg}");
}

#[tokio::test]
async fn kit_catches_an_ignored_working_dir() {
    let msg = fails(&DropsWorkingDir::default(), "working_dir").await;
    assert!(msg.contains("[\"/\"]"), "{msg}");
}

async fn capabilities_check(o: &dyn McpOrchestrator) -> std::result::Result<(), String> {
    let s = servers();
    let h = harness(o, &s).with_capability(Capability::Gpu, Support::Refused);
    conformance::run_check(&h, "spec_capabilities")
        .await
        .map_err(|f| f.message)
}

#[tokio::test]
async fn kit_catches_a_capability_declared_refused_but_accepted() {
    let msg = capabilities_check(&InMemoryOrchestrator::new())
        .await
        .unwrap_err();
    assert!(
        msg.contains("declared refused but a spec using it started"),
        "{msg}"
    );
    let msg = capabilities_check(&RefusesGpuAsInvalid::default())
        .await
        .unwrap_err();
    assert!(msg.contains("expected NotSupported"), "{msg}");
    // The same check passes for a backend that refuses as it declares.
    capabilities_check(&RefusesGpu::default()).await.unwrap();
}

#[tokio::test]
async fn kit_catches_follow_ignoring_tail_or_since() {
    let msg = fails(&FollowIgnoresTail::default(), "follow_with_tail_and_since").await;
    assert!(msg.contains("follow with tail 2"), "{msg}");
    let msg = fails(&FollowIgnoresSince::default(), "follow_with_tail_and_since").await;
    assert!(msg.contains("follow with since"), "{msg}");
}

/// Ends every following stream when the instance stops running (the first exit), like an
/// engine whose follow request ends with the container.
#[derive(Debug, Default)]
struct FollowEndsAtExit(InMemoryOrchestrator);

delegate_except!(FollowEndsAtExit {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        let lines = self.0.get_logs(id, o).await?;
        if !o.follow {
            return Ok(lines);
        }
        let (backend, id) = (self.0.clone(), id.clone());
        let exited = async move {
            let mut seen_running = false;
            loop {
                match backend.get_status(&id).await {
                    Ok(s) if s.phase == Phase::Running => seen_running = true,
                    Ok(_) if !seen_running => {}
                    _ => return,
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        Ok(lines.take_until(Box::pin(exited)).boxed())
    }
});

async fn follow_restarts_check(
    o: &dyn McpOrchestrator,
    follow: FollowAcrossRestarts,
) -> std::result::Result<(), String> {
    let s = servers();
    let h = harness(o, &s).with_follow_across_restarts(follow);
    conformance::run_check(&h, "follow_across_restarts")
        .await
        .map_err(|f| f.message)
}

#[tokio::test]
async fn kit_holds_follow_across_restarts_to_the_declaration() {
    let (continues, ends) = (FollowAcrossRestarts::Continues, FollowAcrossRestarts::Ends);
    // The in-memory backend continues, as it declares by default.
    follow_restarts_check(&InMemoryOrchestrator::new(), continues)
        .await
        .unwrap();
    let msg = follow_restarts_check(&InMemoryOrchestrator::new(), ends)
        .await
        .unwrap_err();
    assert!(
        msg.contains("declared Ends") && msg.contains("still open"),
        "{msg}"
    );
    let msg = follow_restarts_check(&FollowEndsAtExit::default(), continues)
        .await
        .unwrap_err();
    assert!(
        msg.contains("declared Continues") && msg.contains("the stream ended"),
        "{msg}"
    );
    // A backend that ends at the exit passes when it says so.
    follow_restarts_check(&FollowEndsAtExit::default(), ends)
        .await
        .unwrap();
}
