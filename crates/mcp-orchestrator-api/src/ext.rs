//! Conveniences built on the five trait operations, for every orchestrator.

use std::time::Duration;

use async_trait::async_trait;
use mcp_types::{InstanceFilters, InstanceId, InstanceStatus, McpServer, Phase, StartOptions};

use crate::error::{OrchestratorError, Result};
use crate::orchestrator::McpOrchestrator;

/// First and longest pause between status polls. The first is short because what callers wait
/// for is often near: a pod the fake (or a fast node) runs 30 ms after its creation was seen
/// only at the third poll, 75 ms in, with a first pause of 25 ms (`docs/BENCHMARKS.md`, 9);
/// doubling from 5 ms costs two more status reads in the first 100 ms.
const POLL_MIN: Duration = Duration::from_millis(5);
const POLL_MAX: Duration = Duration::from_millis(500);

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
        let deadline = tokio::time::Instant::now() + timeout;
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
            pause = (pause * 2).min(POLL_MAX);
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
