//! The kit's `watch_*` checks fail on deliberately broken watches (each wraps the in-memory
//! backend and breaks one promise of `mcp_types::events`), and hold the `Capability::Watch`
//! declaration both ways.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use mcp_orchestrator_api::conformance::{
    self, Capability, CommandServers, Harness, HttpConnect, Support, WatchBreak,
};
use mcp_orchestrator_api::{
    InMemoryOrchestrator, InstanceEvents, LogLines, McpChannel, McpOrchestrator, Result,
};
use mcp_types::{
    Instance, InstanceEvent, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer,
    Page, StartOptions,
};

/// A wrapper of the in-memory backend whose `watch` is `$watch(inner, filters)`; every other
/// method delegates.
macro_rules! wrapper {
    ($name:ident, |$inner:ident, $filters:ident| $watch:expr) => {
        #[derive(Debug, Default)]
        struct $name(InMemoryOrchestrator);

        #[async_trait]
        impl McpOrchestrator for $name {
            fn backend_name(&self) -> &'static str {
                "broken"
            }
            async fn start_server(&self, s: &McpServer, o: &StartOptions) -> Result<InstanceId> {
                self.0.start_server(s, o).await
            }
            async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
                self.0.stop_server(id, g).await
            }
            async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
                self.0.get_status(id).await
            }
            async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
                self.0.get_logs(id, o).await
            }
            async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
                self.0.list_instances(f).await
            }
            async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
                self.0.connect(id).await
            }
            async fn watch(&self, $filters: &InstanceFilters) -> Result<InstanceEvents> {
                let $inner = &self.0;
                $watch
            }
        }
    };
}

// Every event twice: a repeat the ordering rules forbid.
wrapper!(RepeatsEvents, |inner, filters| Ok(inner
    .watch(filters)
    .await?
    .flat_map(|e| match e {
        Ok(e) => futures::stream::iter(vec![Ok(e.clone()), Ok(e)]),
        Err(e) => futures::stream::iter(vec![Err(e)]),
    })
    .boxed()));

// Every change after Synced twice.
wrapper!(RepeatsChanges, |inner, filters| {
    let mut synced = false;
    Ok(inner
        .watch(filters)
        .await?
        .flat_map(move |e| {
            let twice = synced;
            synced |= matches!(e, Ok(InstanceEvent::Synced));
            match e {
                Ok(e) if twice => futures::stream::iter(vec![Ok(e.clone()), Ok(e)]),
                other => futures::stream::iter(vec![other]),
            }
        })
        .boxed())
});

// Never reports a removal.
wrapper!(NoRemoved, |inner, filters| Ok(inner
    .watch(filters)
    .await?
    .filter(|e| std::future::ready(!matches!(e, Ok(InstanceEvent::Removed(_)))))
    .boxed()));

// Starts with Synced, skipping the current state: a list-then-watch gap.
wrapper!(NoInitialState, |inner, filters| {
    let mut synced = false;
    Ok(inner
        .watch(filters)
        .await?
        .filter(move |e| {
            if matches!(e, Ok(InstanceEvent::Synced)) {
                synced = true;
            }
            std::future::ready(synced)
        })
        .boxed())
});

// Reports statuses without exit codes.
wrapper!(NoExitCode, |inner, filters| Ok(inner
    .watch(filters)
    .await?
    .map(|e| e.map(|e| match e {
        InstanceEvent::Modified(mut i) => {
            i.status.exit_code = None;
            i.status.last_exit_code = None;
            InstanceEvent::Modified(i)
        }
        other => other,
    }))
    .boxed()));

// Drops the filters it cannot use instead of refusing them.
wrapper!(NoFilterValidation, |inner, filters| {
    let lenient = InstanceFilters {
        limit: None,
        continue_token: None,
        label_selector: None,
        ..filters.clone()
    };
    inner.watch(&lenient).await
});

// Ignores the server filter.
wrapper!(IgnoresServerFilter, |inner, filters| {
    let wider = InstanceFilters {
        server: None,
        ..filters.clone()
    };
    inner.watch(&wider).await
});

// Opens a stream although it claims not to watch (declared Refused in the test).
wrapper!(WatchesAnyway, |inner, filters| inner.watch(filters).await);

/// Goes deaf after its connection breaks: nothing after the break is reported, as a watch
/// that does not reconnect and resync.
#[derive(Debug, Default)]
struct DeafAfterBreak {
    inner: InMemoryOrchestrator,
    broken: Arc<AtomicBool>,
}

#[async_trait]
impl McpOrchestrator for DeafAfterBreak {
    fn backend_name(&self) -> &'static str {
        "broken"
    }
    async fn start_server(&self, s: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        self.inner.start_server(s, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        self.inner.stop_server(id, g).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        self.inner.get_status(id).await
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.inner.get_logs(id, o).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.inner.list_instances(f).await
    }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        self.inner.connect(id).await
    }
    async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
        let broken = self.broken.clone();
        Ok(self
            .inner
            .watch(filters)
            .await?
            .filter(move |_| std::future::ready(!broken.load(Ordering::SeqCst)))
            .boxed())
    }
}

/// A backend with the trait's default `watch`.
#[derive(Debug, Default)]
struct DefaultWatch(InMemoryOrchestrator);

#[async_trait]
impl McpOrchestrator for DefaultWatch {
    fn backend_name(&self) -> &'static str {
        "default-watch"
    }
    async fn start_server(&self, s: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        self.0.start_server(s, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        self.0.stop_server(id, g).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        self.0.get_status(id).await
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, o).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.0.list_instances(f).await
    }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        self.0.connect(id).await
    }
}

fn servers() -> CommandServers {
    CommandServers {
        program: "mcp-test-server".into(),
    }
}

fn no_op_break() -> WatchBreak {
    Arc::new(|| {})
}

async fn outcome(
    o: &dyn McpOrchestrator,
    check: &str,
    hook: Option<WatchBreak>,
) -> Result<(), String> {
    let s = servers();
    let mut h = Harness::new(o, &s)
        .with_timeout(Duration::from_secs(3))
        .with_http_connect(HttpConnect::Unsupported);
    h = match hook {
        Some(hook) => h.with_watch_break(hook),
        None => h.with_capability(Capability::Watch, Support::Honoured),
    };
    conformance::run_check(&h, check).await.map_err(|f| {
        assert_eq!(f.check, check);
        f.message
    })
}

async fn fails(o: &dyn McpOrchestrator, check: &str) -> String {
    match outcome(o, check, Some(no_op_break())).await {
        Ok(()) => panic!("{check} passed against a broken backend"),
        Err(message) => message,
    }
}

#[tokio::test]
async fn kit_catches_repeated_events() {
    let msg = fails(&RepeatsEvents::default(), "watch_lifecycle").await;
    // The first repeat is in the initial state: the same instance Added twice.
    assert!(msg.contains("initial state must be exactly"), "{msg}");
}

#[tokio::test]
async fn kit_catches_repeated_changes() {
    // Repeats after the initial state only: caught by the ordering rules.
    let msg = fails(&RepeatsChanges::default(), "watch_crash").await;
    assert!(
        msg.contains("already reported") || msg.contains("repeats"),
        "{msg}"
    );
}

#[tokio::test]
async fn kit_catches_a_watch_without_removals() {
    let msg = fails(&NoRemoved::default(), "watch_lifecycle").await;
    assert!(msg.contains("no event Removed"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_watch_without_the_initial_state() {
    let msg = fails(&NoInitialState::default(), "watch_lifecycle").await;
    assert!(msg.contains("initial state"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_crash_reported_without_its_exit_code() {
    let msg = fails(&NoExitCode::default(), "watch_crash").await;
    assert!(msg.contains("exit code 3"), "{msg}");
}

#[tokio::test]
async fn kit_catches_filters_that_are_not_validated() {
    let msg = fails(&NoFilterValidation::default(), "watch_invalid_filters").await;
    assert!(msg.contains("`limit`"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_watch_that_ignores_the_server_filter() {
    let msg = fails(&IgnoresServerFilter::default(), "watch_lifecycle").await;
    assert!(msg.contains("outside the watch's filters"), "{msg}");
}

#[tokio::test]
async fn kit_catches_a_watch_that_does_not_resync_after_a_break() {
    let o = DeafAfterBreak::default();
    let broken = o.broken.clone();
    let hook: WatchBreak = Arc::new(move || broken.store(true, Ordering::SeqCst));
    let msg = outcome(&o, "watch_reconnect", Some(hook))
        .await
        .unwrap_err();
    assert!(msg.contains("after the break"), "{msg}");
}

#[tokio::test]
async fn kit_demands_a_break_hook_from_a_backend_that_watches() {
    let o = InMemoryOrchestrator::new();
    let msg = outcome(&o, "watch_reconnect", None).await.unwrap_err();
    assert!(msg.contains("with_watch_break"), "{msg}");
}

#[tokio::test]
async fn refused_watch_must_be_not_supported() {
    let s = servers();
    for check in [
        "watch_lifecycle",
        "watch_crash",
        "watch_invalid_filters",
        "watch_reconnect",
    ] {
        let default = DefaultWatch::default();
        let h = Harness::new(&default, &s).with_capability(Capability::Watch, Support::Refused);
        conformance::run_check(&h, check)
            .await
            .unwrap_or_else(|f| panic!("the default watch is NotSupported: {f}"));
        let liar = WatchesAnyway::default();
        let h = Harness::new(&liar, &s).with_capability(Capability::Watch, Support::Refused);
        let f = conformance::run_check(&h, check).await.unwrap_err();
        assert!(f.message.contains("declared refused"), "{f}");
    }
    // Declared honoured, the default's NotSupported fails.
    let default = DefaultWatch::default();
    let msg = fails(&default, "watch_lifecycle").await;
    assert!(msg.contains("does not support watching"), "{msg}");
}
