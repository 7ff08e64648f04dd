//! Kit checks of `watch` (declared with [`Capability::Watch`]): the current state then
//! `Synced`, start -> `Added` then Running, a crash -> a `Modified` carrying the exit code and
//! the restart count, stop -> `Removed`, filters applied, each instance's events in order
//! without repeats, bad filters refused, and nothing lost or repeated across a forced
//! reconnect. A backend declaring the capability [`Support::Refused`] must answer
//! `NotSupported`; an undeclared one is not checked.
//!
//! Every check also runs [`Watcher::check_order`] over everything it saw, which enforces the
//! per-instance rules of `mcp_types::events`: one `Synced` with only `Added` before it; an
//! instance's first event is `Added`; nothing follows its `Removed` but a new `Added`; no
//! `Modified` repeats the state already told; the restart count never goes down.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use mcp_types::{
    Instance, InstanceEvent, InstanceFilters, InstanceId, LabelSelector, McpServer, Phase,
    RestartPolicy,
};

use super::{Capability, CheckResult, Failure, Harness, Support, idle, with_run};
use crate::error::OrchestratorError;
use crate::fixture::FixtureScript;
use crate::watch::InstanceEvents;

fn fail(check: &'static str, message: String) -> Failure {
    Failure { check, message }
}

/// Whether the watch checks apply: `Honoured` yes; `Refused` after checking that `watch`
/// answers `NotSupported`; undeclared no.
async fn applies(h: &Harness<'_>, check: &'static str) -> Result<bool, Failure> {
    match h.support(Capability::Watch) {
        Some(Support::Honoured) => Ok(true),
        Some(Support::Refused) => match h.orchestrator.watch(&InstanceFilters::default()).await {
            Err(OrchestratorError::NotSupported { .. }) => Ok(false),
            Err(e) => Err(fail(
                check,
                format!("watch is declared refused: expected NotSupported, got {e:?}"),
            )),
            Ok(_) => Err(fail(
                check,
                "watch is declared refused but it opened a stream".into(),
            )),
        },
        _ => Ok(false),
    }
}

fn describe(e: &InstanceEvent) -> String {
    match e.instance() {
        Some(i) => format!(
            "{:?} {} ({}, restarts {}, exit {:?}, last exit {:?})",
            e.kind(),
            i.id,
            i.status.phase,
            i.status.restart_count,
            i.status.exit_code,
            i.status.last_exit_code
        ),
        None => format!("{:?}", e.kind()),
    }
}

fn is_event(e: &InstanceEvent, kind: mcp_types::EventKind, id: &InstanceId) -> bool {
    e.kind() == kind && e.id() == Some(id)
}

/// An instance seen Running in anything but its removal.
fn runs(e: &InstanceEvent, id: &InstanceId) -> bool {
    !matches!(e, InstanceEvent::Removed(_))
        && e.instance()
            .is_some_and(|i| i.id == *id && i.status.phase == Phase::Running)
}

/// One open watch and everything it yielded.
struct Watcher {
    check: &'static str,
    stream: InstanceEvents,
    seen: Vec<InstanceEvent>,
    timeout: Duration,
}

impl Watcher {
    async fn open(
        h: &Harness<'_>,
        check: &'static str,
        filters: &InstanceFilters,
    ) -> Result<Self, Failure> {
        let stream = h
            .orchestrator
            .watch(filters)
            .await
            .map_err(|e| fail(check, format!("watch {filters:?}: {e}")))?;
        Ok(Self {
            check,
            stream,
            seen: Vec::new(),
            timeout: h.timeout,
        })
    }

    fn summary(&self) -> String {
        let all: Vec<String> = self.seen.iter().map(describe).collect();
        format!("[{}]", all.join("; "))
    }

    /// Reads events until one satisfies `want`.
    async fn until(
        &mut self,
        what: &str,
        want: impl Fn(&InstanceEvent) -> bool,
    ) -> Result<InstanceEvent, Failure> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.next()).await;
            match next {
                Ok(Some(Ok(event))) => {
                    self.seen.push(event.clone());
                    if want(&event) {
                        return Ok(event);
                    }
                }
                Ok(Some(Err(e))) => {
                    return Err(fail(
                        self.check,
                        format!(
                            "the watch yielded an error while waiting for {what}: {e}; events: {}",
                            self.summary()
                        ),
                    ));
                }
                Ok(None) => {
                    return Err(fail(
                        self.check,
                        format!(
                            "the watch ended while waiting for {what}; events: {}",
                            self.summary()
                        ),
                    ));
                }
                Err(_) => {
                    return Err(fail(
                        self.check,
                        format!(
                            "no event {what} within {:?}; events: {}",
                            self.timeout,
                            self.summary()
                        ),
                    ));
                }
            }
        }
    }

    /// Reads whatever else arrives within `quiet` (late duplicates, events after a removal).
    async fn settle(&mut self, quiet: Duration) -> CheckResult {
        while let Ok(next) = tokio::time::timeout(quiet, self.stream.next()).await {
            match next {
                Some(Ok(event)) => self.seen.push(event),
                Some(Err(e)) => {
                    return Err(fail(
                        self.check,
                        format!(
                            "the watch yielded an error: {e}; events: {}",
                            self.summary()
                        ),
                    ));
                }
                None => break,
            }
        }
        Ok(())
    }

    /// The ordering rules of `mcp_types::events` over everything seen.
    fn check_order(&self) -> CheckResult {
        let bad = |why: String| {
            Err(fail(
                self.check,
                format!("{why}; events: {}", self.summary()),
            ))
        };
        let synced: Vec<usize> = (0..self.seen.len())
            .filter(|i| matches!(self.seen[*i], InstanceEvent::Synced))
            .collect();
        if synced.len() != 1 {
            return bad(format!("expected exactly one Synced, got {}", synced.len()));
        }
        if let Some(e) = self.seen[..synced[0]]
            .iter()
            .find(|e| !matches!(e, InstanceEvent::Added(_)))
        {
            return bad(format!(
                "{} before Synced: only Added may precede it",
                describe(e)
            ));
        }
        let mut known: BTreeMap<&InstanceId, &Instance> = BTreeMap::new();
        for e in &self.seen {
            let Some(instance) = e.instance() else {
                continue;
            };
            let previous = known.get(&instance.id).copied();
            match (e, previous) {
                (InstanceEvent::Added(_), Some(_)) => {
                    return bad(format!(
                        "{} while the watch already reported it",
                        describe(e)
                    ));
                }
                (InstanceEvent::Modified(_) | InstanceEvent::Removed(_), None) => {
                    return bad(format!("{} before any Added of it", describe(e)));
                }
                (InstanceEvent::Modified(_), Some(before)) if before == instance => {
                    return bad(format!(
                        "{} repeats the state already reported",
                        describe(e)
                    ));
                }
                _ => {}
            }
            if let Some(before) = previous
                && instance.status.restart_count < before.status.restart_count
            {
                return bad(format!(
                    "{}: the restart count went down from {}",
                    describe(e),
                    before.status.restart_count
                ));
            }
            if matches!(e, InstanceEvent::Removed(_)) {
                known.remove(&instance.id);
            } else {
                known.insert(&instance.id, instance);
            }
        }
        Ok(())
    }

    /// Fails if any event is about an instance outside `ids`.
    fn only_about(&self, ids: &[&InstanceId]) -> CheckResult {
        match self
            .seen
            .iter()
            .find(|e| e.id().is_some_and(|id| !ids.contains(&id)))
        {
            Some(e) => Err(fail(
                self.check,
                format!(
                    "{} is outside the watch's filters (expected only {ids:?}); events: {}",
                    describe(e),
                    self.summary()
                ),
            )),
            None => Ok(()),
        }
    }
}

/// How long the kit keeps reading after the last expected event, to catch repeats.
const QUIET: Duration = Duration::from_millis(500);

/// The current state comes first (an instance running before the watch opened is `Added`
/// before `Synced`); a started instance is `Added` and then seen Running; a stopped one is
/// `Removed` by the time `stop` returned and the kit read on; a watch filtered by server sees
/// only that server's instances; the events of each instance follow the ordering rules.
pub async fn watch_lifecycle(h: &Harness<'_>) -> CheckResult {
    const C: &str = "watch_lifecycle";
    if !applies(h, C).await? {
        return Ok(());
    }
    with_run(h, C, |h, run| async move {
        let before = run.start(&run.name("w-before"), &idle()).await?;
        run.running(&before).await?;
        let all = run.run_filters();
        let new_name = run.name("w-new");
        let one_server = InstanceFilters {
            server: Some(new_name.clone()),
            ..all.clone()
        };
        let mut w = Watcher::open(h, C, &all).await?;
        let mut by_server = Watcher::open(h, C, &one_server).await?;
        w.until("Synced", |e| matches!(e, InstanceEvent::Synced))
            .await?;
        let initial: Vec<&InstanceId> = w.seen.iter().filter_map(InstanceEvent::id).collect();
        if initial != [&before] {
            return Err(fail(
                C,
                format!(
                    "the initial state must be exactly Added {before}, got {}",
                    w.summary()
                ),
            ));
        }
        if !runs(&w.seen[0], &before) {
            return Err(fail(
                C,
                format!("{before} runs, but its Added says {}", describe(&w.seen[0])),
            ));
        }
        by_server
            .until("Synced", |e| matches!(e, InstanceEvent::Synced))
            .await?;
        let id = run.start(&new_name, &idle()).await?;
        w.until(&format!("Added {id}"), |e| {
            is_event(e, mcp_types::EventKind::Added, &id)
        })
        .await?;
        if !w.seen.last().is_some_and(|e| runs(e, &id)) {
            w.until(&format!("{id} Running"), |e| runs(e, &id)).await?;
        }
        by_server
            .until(&format!("{id} Running"), |e| runs(e, &id))
            .await?;
        run.stop(&id).await?;
        w.until(&format!("Removed {id}"), |e| {
            is_event(e, mcp_types::EventKind::Removed, &id)
        })
        .await?;
        by_server
            .until(&format!("Removed {id}"), |e| {
                is_event(e, mcp_types::EventKind::Removed, &id)
            })
            .await?;
        run.stop(&before).await?;
        w.until(&format!("Removed {before}"), |e| {
            is_event(e, mcp_types::EventKind::Removed, &before)
        })
        .await?;
        w.settle(QUIET).await?;
        by_server.settle(QUIET).await?;
        w.only_about(&[&before, &id])?;
        by_server.only_about(&[&id])?;
        w.check_order()?;
        by_server.check_order()
    })
    .await
}

/// A server that crashes and is restarted (`OnFailure`, exit 3) is reported by a `Modified`
/// whose status has exit code 3 (as `exitCode` or `lastExitCode`) and a restart count of at
/// least 1.
pub async fn watch_crash(h: &Harness<'_>) -> CheckResult {
    const C: &str = "watch_crash";
    if !applies(h, C).await? {
        return Ok(());
    }
    with_run(h, C, |h, run| async move {
        let filters = run.run_filters();
        let mut w = Watcher::open(h, C, &filters).await?;
        w.until("Synced", |e| matches!(e, InstanceEvent::Synced))
            .await?;
        let spec = McpServer {
            restart_policy: RestartPolicy::OnFailure,
            ..h.servers.server(
                &run.name("w-crash"),
                &FixtureScript::new()
                    .stdout("run")
                    .sleep(Duration::from_millis(500))
                    .exit(3),
            )
        };
        let id = run.start_spec(&spec, &[]).await?;
        w.until(
            &format!("Modified {id} with exit code 3 and a restart count >= 1"),
            |e| {
                matches!(e, InstanceEvent::Modified(i) if i.id == id
                    && i.status.restart_count >= 1
                    && (i.status.exit_code == Some(3) || i.status.last_exit_code == Some(3)))
            },
        )
        .await?;
        run.stop(&id).await?;
        w.until(&format!("Removed {id}"), |e| {
            is_event(e, mcp_types::EventKind::Removed, &id)
        })
        .await?;
        w.settle(QUIET).await?;
        w.only_about(&[&id])?;
        w.check_order()
    })
    .await
}

/// Filters a watch cannot use are refused with `InvalidArgument` naming the field, before any
/// stream is opened: `limit`, `continueToken`, and a malformed selector (`labelSelector`).
pub async fn watch_invalid_filters(h: &Harness<'_>) -> CheckResult {
    const C: &str = "watch_invalid_filters";
    if !applies(h, C).await? {
        return Ok(());
    }
    let cases = [
        (
            "limit",
            InstanceFilters {
                limit: Some(10),
                ..InstanceFilters::default()
            },
        ),
        (
            "continueToken",
            InstanceFilters {
                continue_token: Some("bWNwLWE".into()),
                ..InstanceFilters::default()
            },
        ),
        (
            "labelSelector",
            InstanceFilters {
                label_selector: Some(LabelSelector::from_equalities([("not a key!", "x")])),
                ..InstanceFilters::default()
            },
        ),
    ];
    for (field, filters) in cases {
        match h.orchestrator.watch(&filters).await {
            Err(OrchestratorError::InvalidArgument { what, .. }) if what == field => {}
            Err(e) => {
                return Err(fail(
                    C,
                    format!(
                        "watch with a bad `{field}`: expected InvalidArgument naming it, got {e:?}"
                    ),
                ));
            }
            Ok(_) => {
                return Err(fail(
                    C,
                    format!(
                        "watch with a bad `{field}` opened a stream instead of InvalidArgument"
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Nothing is lost or repeated when the watch's connection breaks (the harness's
/// [`Harness::with_watch_break`] hook): an instance stopped and another started while the
/// connection is down are reported (`Removed`, `Added`, Running) once it is back, a second
/// break is survived too, and the ordering rules hold over the whole stream.
pub async fn watch_reconnect(h: &Harness<'_>) -> CheckResult {
    const C: &str = "watch_reconnect";
    if !applies(h, C).await? {
        return Ok(());
    }
    let Some(hook) = h.watch_break.clone() else {
        return Err(fail(
            C,
            "`watch` is declared honoured but the harness has no hook to break its connection \
             (Harness::with_watch_break)"
                .into(),
        ));
    };
    with_run(h, C, |h, run| async move {
        let filters = run.run_filters();
        let mut w = Watcher::open(h, C, &filters).await?;
        w.until("Synced", |e| matches!(e, InstanceEvent::Synced))
            .await?;
        let a = run.start(&run.name("w-a"), &idle()).await?;
        w.until(&format!("{a} Running"), |e| runs(e, &a)).await?;
        hook();
        run.stop(&a).await?;
        let b = run.start(&run.name("w-b"), &idle()).await?;
        run.running(&b).await?;
        w.until(&format!("Removed {a} after the break"), |e| {
            is_event(e, mcp_types::EventKind::Removed, &a)
        })
        .await?;
        if !w.seen.iter().any(|e| runs(e, &b)) {
            w.until(&format!("{b} Running after the break"), |e| runs(e, &b))
                .await?;
        }
        hook();
        run.stop(&b).await?;
        w.until(&format!("Removed {b} after the second break"), |e| {
            is_event(e, mcp_types::EventKind::Removed, &b)
        })
        .await?;
        w.settle(QUIET).await?;
        w.only_about(&[&a, &b])?;
        w.check_order()
    })
    .await
}
