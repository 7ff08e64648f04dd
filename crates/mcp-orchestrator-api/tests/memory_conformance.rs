//! The in-memory reference backend passes the whole conformance kit, directly and through
//! `Arc<dyn McpOrchestrator>`; deliberately broken backends make the kit fail.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mcp_orchestrator_api::conformance::{
    self, CommandServers, Harness, HttpConnect, StreamSupport,
};
use mcp_orchestrator_api::{
    DynOrchestrator, InMemoryOrchestrator, LogLines, McpChannel, McpOrchestrator,
    OrchestratorError, Result, StdioChannel,
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
        http_connect: HttpConnect::Unsupported,
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
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
});

delegate_except!(LeakyStop {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, _: Duration) -> Result<()> { self.0.get_status(id).await.map(drop) }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
});

delegate_except!(NoTail {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, &LogOptions { tail: None, ..o.clone() }).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
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
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
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
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
});

delegate_except!(MergedButSelects {
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        Ok(all_stdout(self.0.get_logs(id, &LogOptions { stream: StreamSelector::All, ..o.clone() }).await?))
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> { self.0.connect(id).await }
});

async fn fails(o: &dyn McpOrchestrator, check: &str) -> String {
    fails_with(o, check, StreamSupport::Separate).await
}

async fn fails_with(o: &dyn McpOrchestrator, check: &str, streams: StreamSupport) -> String {
    let s = servers();
    let h = Harness {
        timeout: Duration::from_secs(3),
        streams,
        http_connect: HttpConnect::Unsupported,
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
        delegate_except!($t {
            async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> { self.0.start_server(spec, o).await }
            async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> { self.0.stop_server(id, g).await }
            async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> { self.0.get_status(id).await }
            async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> { self.0.get_logs(id, o).await }
            async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> { self.0.list_instances(f).await }
            $connect
        });
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
    let h = Harness {
        timeout: Duration::from_secs(3),
        ..Harness::new(&o, &s)
    };
    let f = conformance::run_check(&h, "connect_http")
        .await
        .unwrap_err();
    assert!(f.message.contains("expected its URL"), "{f}");
}
