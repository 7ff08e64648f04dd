//! Conveniences built on the five trait operations, for every orchestrator.

use std::time::Duration;

use async_trait::async_trait;
use mcp_types::{InstanceFilters, InstanceId, InstanceStatus, McpServer, Phase, StartOptions};

use crate::error::{OrchestratorError, Result};
use crate::orchestrator::McpOrchestrator;

/// Status polls come every `POLL_MIN` for the first `POLL_FAST_FOR`, then the pause doubles up
/// to `POLL_MAX`. What callers wait for is often near: the fake API server (like a fast node)
/// runs a pod some 30-40 ms after its creation, and a pause doubling from the first poll saw it
/// up to twice as late as it happened (`docs/BENCHMARKS.md`, benchmark 10). A status read costs
/// a file read, an inspect or a GET: twenty of them in the first 100 ms cost little next to a
/// start, and the Docker backend's start returns once its container runs, so its first read
/// already ends the wait.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_FAST_FOR: Duration = Duration::from_millis(100);
const POLL_MAX: Duration = Duration::from_millis(500);

/// The pause after `pause`, once `waited` has passed since the wait began.
fn next_pause(pause: Duration, waited: Duration) -> Duration {
    if waited < POLL_FAST_FOR {
        POLL_MIN
    } else {
        (pause * 2).min(POLL_MAX)
    }
}

/// Waiting, restarting and bulk stopping, implemented for every [`McpOrchestrator`].
#[async_trait]
pub trait OrchestratorExt: McpOrchestrator {
    /// Polls the status until `done` accepts it.
    ///
    /// # Errors
    /// [`Timeout`](OrchestratorError::Timeout) after `timeout`; any `get_status` error.
    async fn wait_for<F>(
        &self,
        id: &InstanceId,
        timeout: Duration,
        what: &str,
        done: F,
    ) -> Result<InstanceStatus>
    where
        F: Fn(&InstanceStatus) -> bool + Send + Sync,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + timeout;
        let mut pause = POLL_MIN;
        loop {
            let status = self.get_status(id).await?;
            if done(&status) {
                return Ok(status);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Err(OrchestratorError::Timeout {
                    what: format!("{id} to be {what} (last phase {})", status.phase),
                    after: timeout,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = next_pause(pause, now - started);
        }
    }

    /// Waits until the instance is in `phase`.
    ///
    /// # Errors
    /// As [`OrchestratorExt::wait_for`].
    async fn wait_for_phase(
        &self,
        id: &InstanceId,
        phase: Phase,
        timeout: Duration,
    ) -> Result<InstanceStatus> {
        self.wait_for(id, timeout, phase.as_str(), |s| s.phase == phase)
            .await
    }

    /// Waits until the instance runs.
    ///
    /// # Errors
    /// [`Exited`](OrchestratorError::Exited) when it finishes instead (a failed start, a crash
    /// loop), [`Timeout`](OrchestratorError::Timeout), or any `get_status` error.
    async fn wait_until_running(
        &self,
        id: &InstanceId,
        timeout: Duration,
    ) -> Result<InstanceStatus> {
        let status = self
            .wait_for(id, timeout, "Running", |s| {
                s.phase == Phase::Running || s.phase.is_terminal() || s.is_not_coming_up()
            })
            .await?;
        if status.phase == Phase::Running {
            Ok(status)
        } else {
            Err(OrchestratorError::Exited {
                id: id.to_string(),
                status: Box::new(status),
            })
        }
    }

    /// Stops `id` and starts `spec` again, returning the new instance's id (ids are never
    /// reused). The spec's persistent volumes are kept by the stop and mounted by the new
    /// instance, so it finds their data; per-instance volumes start empty.
    ///
    /// # Errors
    /// Errors of `stop_server` and `start_server`.
    async fn restart(
        &self,
        id: &InstanceId,
        spec: &McpServer,
        options: &StartOptions,
        grace: Duration,
    ) -> Result<InstanceId> {
        self.stop_server(id, grace).await?;
        self.start_server(spec, options).await
    }

    /// Stops every managed instance matching `filters` (all pages), returning how many.
    /// Instances that vanish meanwhile are not an error.
    ///
    /// # Errors
    /// The first listing or stop error other than `NotFound`.
    async fn stop_all(&self, filters: &InstanceFilters, grace: Duration) -> Result<usize> {
        let mut ids = Vec::new();
        let mut f = InstanceFilters {
            continue_token: None,
            ..filters.clone()
        };
        loop {
            let page = self.list_instances(&f).await?;
            ids.extend(page.items.into_iter().map(|i| i.id));
            match page.continue_token {
                Some(t) => f.continue_token = Some(t),
                None => break,
            }
        }
        let results =
            futures::future::join_all(ids.iter().map(|id| self.stop_server(id, grace))).await;
        let mut stopped = 0;
        for r in results {
            match r {
                Ok(()) => stopped += 1,
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(e),
            }
        }
        Ok(stopped)
    }
}

impl<T: McpOrchestrator + ?Sized> OrchestratorExt for T {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The times (from the start of a wait) at which status is read, up to `until`.
    fn polls(until: Duration) -> Vec<Duration> {
        let (mut at, mut pause, mut reads) = (Duration::ZERO, POLL_MIN, vec![Duration::ZERO]);
        while at < until {
            at += pause;
            reads.push(at);
            pause = next_pause(pause, at);
        }
        reads
    }

    #[test]
    fn what_happens_in_the_first_100_ms_is_seen_within_one_short_pause() {
        let reads = polls(Duration::from_secs(1));
        for happened in (0..100).map(Duration::from_millis) {
            let seen = reads.iter().find(|r| **r >= happened).unwrap();
            assert!(
                seen.saturating_sub(happened) <= POLL_MIN,
                "{happened:?} seen at {seen:?}"
            );
        }
    }

    #[test]
    fn later_the_pause_doubles_to_its_cap_and_the_reads_stay_few() {
        let reads = polls(Duration::from_secs(10));
        // 21 reads in the first 100 ms, then 10, 20, ... 320 ms, then every 500 ms.
        assert!(reads.len() < 21 + 6 + 20, "{} reads in 10 s", reads.len());
        let last_pauses: Vec<Duration> = reads
            .windows(2)
            .map(|w| w[1].saturating_sub(w[0]))
            .rev()
            .take(3)
            .collect();
        assert_eq!(last_pauses, vec![POLL_MAX; 3]);
        for happened in (100..10_000).step_by(7).map(Duration::from_millis) {
            let seen = reads.iter().find(|r| **r >= happened).unwrap();
            // Never later than the pause cap, nor than the time already waited.
            assert!(
                seen.saturating_sub(happened) <= POLL_MAX.min(happened),
                "{happened:?} seen at {seen:?}"
            );
        }
    }
}
