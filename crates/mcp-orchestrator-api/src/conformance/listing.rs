//! Kit check of what a listed status may leave out: `list_instances` may answer from the
//! engine's listing alone (Docker does, instead of an inspect per container), so its status can
//! be a summary, but never a different answer than `get_status`.

use mcp_types::InstanceStatus;

use super::{CheckResult, Failure, Harness, op, with_run};

/// A listed instance's phase, reason, message and exit code are exactly what `get_status`
/// says; its restart count is at most `get_status`'s (0 where the listing does not carry it)
/// and its start and finish times are either absent or the same.
pub async fn list_agrees_with_status(h: &Harness<'_>) -> CheckResult {
    const C: &str = "list_agrees_with_status";
    with_run(h, C, |h, run| async move {
        let (running, failed) = run.running_and_failed("agree").await?;
        let page = run.list_run().await?;
        let ids: Vec<_> = page.items.iter().map(|i| &i.id).collect();
        ensure!(
            C,
            ids.len() == 2 && ids.contains(&&running) && ids.contains(&&failed),
            "expected {running} and {failed}, listed {ids:?}"
        );
        for item in &page.items {
            let status = op(C, "status", h.orchestrator.get_status(&item.id).await)?;
            agrees(&item.status, &status).map_err(|message| Failure {
                check: C,
                message: format!("{}: {message}", item.id),
            })?;
        }
        Ok(())
    })
    .await
}

/// Whether a listed status is `full` or a summary of it (see [`list_agrees_with_status`]).
fn agrees(listed: &InstanceStatus, full: &InstanceStatus) -> Result<(), String> {
    let same = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
        let (a, b) = (format!("{a:?}"), format!("{b:?}"));
        if a == b {
            Ok(())
        } else {
            Err(format!("listed {what} {a}, get_status {b}"))
        }
    };
    same("phase", &listed.phase, &full.phase)?;
    same("reason", &listed.reason, &full.reason)?;
    same("message", &listed.message, &full.message)?;
    same("exit code", &listed.exit_code, &full.exit_code)?;
    if listed.restart_count > full.restart_count {
        return Err(format!(
            "listed restart count {} above get_status's {}",
            listed.restart_count, full.restart_count
        ));
    }
    for (what, l, f) in [
        ("startedAt", listed.started_at, full.started_at),
        ("finishedAt", listed.finished_at, full.finished_at),
    ] {
        if l.is_some() && l != f {
            return Err(format!("listed {what} {l:?}, get_status {f:?}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_types::Phase;

    #[test]
    fn a_summary_agrees_and_a_different_answer_does_not() {
        let mut full = InstanceStatus::phase(Phase::Failed).with_reason("Error");
        full.exit_code = Some(3);
        full.restart_count = 2;
        full.started_at = Some("2025-01-01T00:00:00Z".parse().unwrap());
        let mut summary = full.clone();
        summary.restart_count = 0;
        summary.started_at = None;
        assert_eq!(agrees(&summary, &full), Ok(()));
        assert_eq!(agrees(&full, &full), Ok(()));
        let mut other = summary.clone();
        other.exit_code = Some(1);
        assert!(agrees(&other, &full).unwrap_err().contains("exit code"));
        let mut other = summary.clone();
        other.reason = None;
        assert!(agrees(&other, &full).unwrap_err().contains("reason"));
        let mut other = summary.clone();
        other.restart_count = 3;
        assert!(agrees(&other, &full).unwrap_err().contains("restart count"));
        let mut other = summary;
        other.started_at = Some("2025-01-01T00:00:01Z".parse().unwrap());
        assert!(agrees(&other, &full).unwrap_err().contains("startedAt"));
    }
}
