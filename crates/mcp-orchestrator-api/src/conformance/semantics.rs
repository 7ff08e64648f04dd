//! Kit checks of the semantics the trait documents beyond the basic lifecycle: the phase filter
//! and malformed continue tokens of `list_instances`, the grace period's escalation to a kill,
//! stopping during restart back-off, env and `workingDir` reaching the server, the declared
//! spec capabilities, and `follow` combined with `tail` and `since`.

use std::time::Duration;

use futures::StreamExt;
use mcp_types::{
    EnvValue, InstanceFilters, InstanceId, LogOptions, McpServer, Phase, RestartPolicy, reasons,
};

use super::{Capability, CheckResult, Failure, Harness, Run, Support, idle, op, texts, with_run};
use crate::error::OrchestratorError;
use crate::ext::OrchestratorExt;
use crate::fixture::{FixtureScript, env_line};
use crate::orchestrator::LogLines;

fn fail(check: &'static str, message: String) -> Failure {
    Failure { check, message }
}

/// The ids a listing with these filters returns (all pages).
async fn listed(
    h: &Harness<'_>,
    check: &'static str,
    mut filters: InstanceFilters,
) -> Result<Vec<InstanceId>, Failure> {
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = op(check, "list", h.orchestrator.list_instances(&filters).await)?;
        ids.extend(page.items.into_iter().map(|i| i.id));
        match page.continue_token {
            Some(token) => filters.continue_token = Some(token),
            None => return Ok(ids),
        }
    }
    Err(fail(check, "a listing did not end within 100 pages".into()))
}

/// `phase` in the filters returns exactly the instances in that phase.
pub async fn list_phase_filter(h: &Harness<'_>) -> CheckResult {
    const C: &str = "list_phase_filter";
    with_run(h, C, |h, run| async move {
        let (running, failed) = run.running_and_failed("phase").await?;
        for (phase, want) in [
            (Phase::Running, vec![running.clone()]),
            (Phase::Failed, vec![failed.clone()]),
            (Phase::Succeeded, vec![]),
        ] {
            let got = listed(
                h,
                C,
                InstanceFilters {
                    phase: Some(phase),
                    ..run.run_filters()
                },
            )
            .await?;
            ensure!(
                C,
                got == want,
                "phase={phase}: expected {want:?}, got {got:?}"
            );
        }
        Ok(())
    })
    .await
}

/// A continue token that no listing returned is refused with
/// [`InvalidArgument`](OrchestratorError::InvalidArgument), not ignored (which would restart the
/// listing and repeat items) nor reported as an engine failure.
pub async fn continue_token_malformed(h: &Harness<'_>) -> CheckResult {
    const C: &str = "continue_token_malformed";
    let filters = InstanceFilters {
        limit: Some(2),
        continue_token: Some("not-a-continue-token".into()),
        ..InstanceFilters::default()
    };
    match h.orchestrator.list_instances(&filters).await {
        Err(OrchestratorError::InvalidArgument { .. }) => Ok(()),
        other => Err(fail(
            C,
            format!(
                "a continue token no listing returned: expected InvalidArgument, got {:?}",
                other.map(|p| p.items.len())
            ),
        )),
    }
}

/// The grace period used by [`stop_escalates_to_kill`]: whole seconds, as engines count them.
const KILL_GRACE: Duration = Duration::from_secs(2);

/// A server that ignores SIGTERM is given the grace period, then killed: `stop_server` returns
/// `Ok` no sooner than about the grace period (half of it, for engine clock slack) and within
/// the grace period plus the harness timeout, and the instance is gone.
pub async fn stop_escalates_to_kill(h: &Harness<'_>) -> CheckResult {
    const C: &str = "stop_escalates_to_kill";
    with_run(h, C, |h, run| async move {
        let script = FixtureScript::new().ignore_sigterm().stdout("ignoring");
        let id = run.start(&run.name("stubborn"), &script).await?;
        run.running(&id).await?;
        run.wait_lines(&id, 1, &LogOptions::default()).await?;
        let started = tokio::time::Instant::now();
        let stopped = tokio::time::timeout(
            KILL_GRACE + h.timeout,
            h.orchestrator.stop_server(&id, KILL_GRACE),
        )
        .await;
        let took = started.elapsed();
        match stopped {
            Err(_) => {
                return Err(fail(
                    C,
                    format!(
                        "stop with grace {KILL_GRACE:?} of a server ignoring SIGTERM did not \
                         return within {:?}: no kill after the grace period",
                        KILL_GRACE + h.timeout
                    ),
                ));
            }
            Ok(r) => op(C, &format!("stop {id} (ignoring SIGTERM)"), r)?,
        }
        run.forget(&id);
        ensure!(
            C,
            took >= KILL_GRACE / 2,
            "stop returned after {took:?}, before the grace period {KILL_GRACE:?} of a server \
             ignoring SIGTERM was over"
        );
        match h.orchestrator.get_status(&id).await {
            Err(OrchestratorError::NotFound { .. }) => Ok(()),
            other => Err(fail(
                C,
                format!("status after the kill: expected NotFound, got {other:?}"),
            )),
        }
    })
    .await
}

/// Stopping a server that is backing off between restarts returns promptly (the grace period
/// plus the harness timeout at most), removes it and ends the restarts.
pub async fn stop_during_backoff(h: &Harness<'_>) -> CheckResult {
    const C: &str = "stop_during_backoff";
    with_run(h, C, |h, run| async move {
        let spec = McpServer {
            restart_policy: RestartPolicy::Always,
            ..h.servers
                .server(&run.name("backoff"), &FixtureScript::new().exit(1))
        };
        let id = run.start_spec(&spec, &[]).await?;
        op(
            C,
            "wait for CrashLoopBackOff",
            h.orchestrator
                .wait_for(&id, h.timeout, "backing off after a restart", |s| {
                    s.restart_count >= 1 && s.reason.as_deref() == Some(reasons::CRASH_LOOP_BACKOFF)
                })
                .await,
        )?;
        let limit = h.grace + h.timeout;
        match tokio::time::timeout(limit, h.orchestrator.stop_server(&id, h.grace)).await {
            Err(_) => {
                return Err(fail(
                    C,
                    format!("stop during back-off did not return within {limit:?}"),
                ));
            }
            Ok(r) => op(C, &format!("stop {id} during back-off"), r)?,
        }
        run.forget(&id);
        // Long enough for a forgotten restart timer to fire.
        tokio::time::sleep(Duration::from_secs(1)).await;
        match h.orchestrator.get_status(&id).await {
            Err(OrchestratorError::NotFound { .. }) => {}
            other => {
                return Err(fail(
                    C,
                    format!("status after stop during back-off: expected NotFound, got {other:?}"),
                ));
            }
        }
        let left = listed(h, C, run.run_filters()).await?;
        ensure!(
            C,
            left.is_empty(),
            "instances listed after stop during back-off: {left:?}"
        );
        Ok(())
    })
    .await
}

/// The lines a server printed once it printed `n` of them.
async fn printed(run: &Run<'_, '_>, id: &InstanceId, n: usize) -> Result<Vec<String>, Failure> {
    let lines = run.wait_lines(id, n, &LogOptions::default()).await?;
    Ok(texts(&lines).into_iter().map(str::to_owned).collect())
}

/// The spec's plain `env` values reach the server (and a variable the spec does not set is
/// not invented); the host environment is not part of the contract and is not checked.
pub async fn env_propagation(h: &Harness<'_>) -> CheckResult {
    const C: &str = "env_propagation";
    with_run(h, C, |h, run| async move {
        let script = FixtureScript::new()
            .print_env("MCP_KIT_GREETING")
            .print_env("MCP_KIT_EMPTY")
            .print_env("MCP_KIT_NEVER_SET");
        let mut spec = h.servers.server(&run.name("env"), &script);
        spec.env
            .insert("MCP_KIT_GREETING".into(), EnvValue::plain("hello world=1"));
        spec.env.insert("MCP_KIT_EMPTY".into(), EnvValue::plain(""));
        let id = run.start_spec(&spec, &[]).await?;
        let got = printed(&run, &id, 3).await?;
        let want = [
            env_line("MCP_KIT_GREETING", Some("hello world=1")),
            env_line("MCP_KIT_EMPTY", Some("")),
            env_line("MCP_KIT_NEVER_SET", None),
        ];
        ensure!(C, got == want, "env: expected {want:?}, got {got:?}");
        Ok(())
    })
    .await
}

/// With [`Capability::WorkingDir`] honoured, a server runs in the spec's `workingDir` (`/tmp`,
/// which every backend's servers have); refused, such a spec is `NotSupported`.
pub async fn working_dir(h: &Harness<'_>) -> CheckResult {
    const C: &str = "working_dir";
    if h.support(Capability::WorkingDir) != Some(Support::Honoured) {
        // Refusal is checked with the other capabilities.
        return Ok(());
    }
    with_run(h, C, |h, run| async move {
        let mut spec = h
            .servers
            .server(&run.name("cwd"), &FixtureScript::new().print_cwd());
        spec.working_dir = Some("/tmp".into());
        let id = run.start_spec(&spec, &[]).await?;
        let got = printed(&run, &id, 1).await?;
        ensure!(
            C,
            got == ["/tmp"],
            "workingDir /tmp: the server printed {got:?} as its working directory"
        );
        Ok(())
    })
    .await
}

/// A spec using `capability`, valid otherwise.
fn spec_using(
    h: &Harness<'_>,
    run: &Run<'_, '_>,
    capability: Capability,
) -> Result<Option<McpServer>, Failure> {
    let mut spec = h.servers.server(&run.name("capability"), &idle());
    match capability {
        Capability::WorkingDir => spec.working_dir = Some("/tmp".into()),
        Capability::Volumes => {
            spec.volumes = vec![mcp_types::VolumeSpec {
                name: "data".into(),
                size: mcp_types::Quantity::parse("16Mi")
                    .map_err(|e| fail("spec_capabilities", format!("quantity 16Mi: {e}")))?,
                storage_class: None,
                mount_path: h.mount_path("data"),
                access_modes: Vec::new(),
                read_only: false,
                persistent: false,
            }];
        }
        Capability::Gpu => {
            spec.gpu = Some(mcp_types::GpuSpec {
                product: None,
                count: 1,
            });
        }
        Capability::Egress => {
            spec.egress = Some(mcp_types::Egress::Allow(vec![mcp_types::EgressRule::cidr(
                "10.0.0.0/8",
                [],
            )]));
        }
        Capability::PersistentVolumes => {
            let volume = mcp_types::VolumeSpec::new("keep", "16Mi", h.mount_path("keep"))
                .map_err(|e| fail("spec_capabilities", format!("quantity 16Mi: {e}")))?;
            spec.volumes = vec![volume.persistent()];
        }
        Capability::SecretEnv => {
            spec.env.insert(
                "MCP_KIT_SECRET".into(),
                EnvValue::secret(run.name("absent"), "token"),
            );
        }
        Capability::SecretFiles => {
            spec.secret_files = vec![
                mcp_types::SecretFile::new("/run/mcp-kit/token", run.name("absent"), "token")
                    .with_env("MCP_KIT_TOKEN_FILE"),
            ];
        }
        // Operations, not spec fields: the `watch_*` checks and `garbage_collection` hold them.
        Capability::Watch | Capability::GarbageCollection => return Ok(None),
    }
    Ok(Some(spec))
}

/// Every spec capability declared [`Support::Refused`] is refused with
/// [`NotSupported`](OrchestratorError::NotSupported) and starts nothing; `volumes` and `egress`
/// declared [`Support::Honoured`] start a server that runs (honoured persistent volumes are
/// checked by [`super::persistent_volumes`], which also removes the volume it creates).
pub async fn spec_capabilities(h: &Harness<'_>) -> CheckResult {
    const C: &str = "spec_capabilities";
    with_run(h, C, |h, run| async move {
        for capability in Capability::ALL {
            let Some(spec) = spec_using(h, &run, capability)? else {
                continue;
            };
            match h.support(capability) {
                Some(Support::Refused) => {
                    match h.orchestrator.start_server(&spec, &run.options(&[])).await {
                        Err(OrchestratorError::NotSupported { .. }) => {}
                        Ok(id) => {
                            run.adopt(id.clone());
                            return Err(fail(
                                C,
                                format!(
                                    "`{}` is declared refused but a spec using it started {id}",
                                    capability.field()
                                ),
                            ));
                        }
                        Err(e) => {
                            return Err(fail(
                                C,
                                format!(
                                    "`{}` is declared refused: expected NotSupported, got {e:?}",
                                    capability.field()
                                ),
                            ));
                        }
                    }
                }
                Some(Support::Honoured)
                    if matches!(capability, Capability::Volumes | Capability::Egress) =>
                {
                    let id = run.start_spec(&spec, &[]).await?;
                    run.running(&id).await?;
                    run.stop(&id).await?;
                }
                _ => {}
            }
        }
        let left = listed(h, C, run.run_filters()).await?;
        ensure!(C, left.is_empty(), "refused specs left {left:?} behind");
        Ok(())
    })
    .await
}

/// Reads a follow stream until `want` lines arrived (or it ends, or the timeout passes).
async fn follow_lines(
    check: &'static str,
    stream: &mut LogLines,
    want: usize,
    timeout: Duration,
) -> Result<Vec<String>, Failure> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while got.len() < want {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(line)) => got.push(op(check, "follow line", line)?.text),
            Ok(None) | Err(_) => break,
        }
    }
    Ok(got)
}

/// The two follows of [`follow_with_tail_and_since`]: the last 2 lines, and from `since`.
async fn open_follows(
    h: &Harness<'_>,
    id: &InstanceId,
    since: mcp_types::Timestamp,
) -> Result<(LogLines, LogLines), Failure> {
    const C: &str = "follow_with_tail_and_since";
    let tail = op(
        C,
        "follow with tail 2",
        h.orchestrator
            .get_logs(
                id,
                &LogOptions {
                    tail: Some(2),
                    ..LogOptions::follow()
                },
            )
            .await,
    )?;
    let since = op(
        C,
        "follow with since",
        h.orchestrator
            .get_logs(
                id,
                &LogOptions {
                    since: Some(since),
                    ..LogOptions::follow()
                },
            )
            .await,
    )?;
    Ok((tail, since))
}

/// `follow` with `tail: N` starts with the last N existing lines, then yields new ones; with
/// `since: T` it starts with the existing lines at or after T, then yields new ones (`since`
/// filters first, `tail` counts the lines it kept; neither limits the lines that come later).
pub async fn follow_with_tail_and_since(h: &Harness<'_>) -> CheckResult {
    const C: &str = "follow_with_tail_and_since";
    with_run(h, C, |h, run| async move {
        // "new" comes a pause after old-1..old-5; the follows must open within that pause (a
        // follow opened after "new" rightly starts with it). On a machine slow enough to miss
        // the pause, the check starts over with a longer one.
        let mut pauses = [2_500, 6_000, 15_000]
            .into_iter()
            .map(Duration::from_millis);
        let (id, existing, mut tail, mut since, after_old) = loop {
            let Some(pause) = pauses.next() else {
                return Err(fail(
                    C,
                    "the follows never opened within 15 s of the server's first output".into(),
                ));
            };
            let script = FixtureScript::new()
                .stdout_lines("old", 5)
                .sleep(pause)
                .stdout("new");
            let before_start = std::time::Instant::now();
            let id = run.start(&run.name("follow-tail"), &script).await?;
            run.running(&id).await?;
            let existing = run
                .wait_lines(
                    &id,
                    5,
                    &LogOptions {
                        timestamps: true,
                        ..LogOptions::default()
                    },
                )
                .await?;
            let Some(last_old) = existing.get(4).and_then(|l| l.timestamp) else {
                return Err(fail(C, "timestamps missing with timestamps: true".into()));
            };
            let after_old = last_old + jiff::SignedDuration::from_millis(1);
            let (tail, since) = open_follows(h, &id, after_old).await?;
            // The server printed its old lines after the start began, so "new" cannot exist
            // before `pause` has passed since then (a margin for the stream's first read).
            if before_start.elapsed() + Duration::from_millis(300) < pause {
                break (id, existing, tail, since, after_old);
            }
        };
        let at_old_4 = existing.get(3).and_then(|l| l.timestamp);
        let got = follow_lines(C, &mut tail, 3, h.timeout).await?;
        ensure!(
            C,
            got == ["old-4", "old-5", "new"],
            "follow with tail 2 after old-1..old-5: expected the last 2 then \"new\", got {got:?}"
        );
        let got = follow_lines(C, &mut since, 1, h.timeout).await?;
        ensure!(
            C,
            got == ["new"],
            "follow with since {after_old} (just after old-5): expected only \"new\", got {got:?}"
        );
        // Not following: `since` first, then `tail` on what it kept.
        // Only when old-3 and old-4 carry different times (lines printed together may not).
        let at_old_3 = existing.get(2).and_then(|l| l.timestamp);
        if let (Some(at_old_4), Some(at_old_3)) = (at_old_4, at_old_3)
            && at_old_4 > at_old_3
        {
            let lines = run
                .logs(
                    &id,
                    &LogOptions {
                        since: Some(at_old_4),
                        tail: Some(5),
                        ..LogOptions::default()
                    },
                )
                .await?;
            ensure!(
                C,
                texts(&lines) == ["old-4", "old-5", "new"],
                "since old-4's time with tail 5: got {:?}",
                texts(&lines)
            );
        }
        Ok(())
    })
    .await
}
