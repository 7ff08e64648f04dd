//! Kit check of what a following log stream does when the server exits and is restarted: it
//! either continues into the next run or ends at the exit, as the backend declares with
//! [`Harness::with_follow_across_restarts`](super::Harness::with_follow_across_restarts).

use std::time::Duration;

use futures::StreamExt;
use mcp_types::{LogOptions, McpServer, RestartPolicy};

use super::{CheckResult, Failure, FollowAcrossRestarts, Harness, op, with_run};
use crate::fixture::FixtureScript;

fn fail(check: &'static str, message: String) -> Failure {
    Failure { check, message }
}

/// How long each run of the fixture lives before it exits 1: long enough for the follow request
/// to open during the first run on every engine.
const RUN: Duration = Duration::from_millis(2500);

/// A server printing `tick` and exiting 1 after [`RUN`], restarted `OnFailure`, followed from
/// its first run. [`FollowAcrossRestarts::Continues`]: the stream stays open past the exit and
/// yields the second run's `tick`. [`FollowAcrossRestarts::Ends`]: the stream ends by itself
/// (nobody stops the server) after exactly the first run's `tick`.
pub async fn follow_across_restarts(h: &Harness<'_>) -> CheckResult {
    const C: &str = "follow_across_restarts";
    with_run(h, C, |h, run| async move {
        let script = FixtureScript::new().stdout("tick").sleep(RUN).exit(1);
        let spec = McpServer {
            restart_policy: RestartPolicy::OnFailure,
            ..h.servers.server(&run.name("follow-restart"), &script)
        };
        let id = run.start_spec(&spec, &[]).await?;
        let mut stream = op(
            C,
            "follow from the first run",
            h.orchestrator.get_logs(&id, &LogOptions::follow()).await,
        )?;
        let mut ticks = 0_usize;
        let mut ended = false;
        // Two runs and the back-off between them, plus the usual allowance for one change.
        let deadline = tokio::time::Instant::now() + 2 * RUN + h.timeout;
        loop {
            let wanted_more = match h.follow_restarts {
                FollowAcrossRestarts::Continues => ticks < 2,
                FollowAcrossRestarts::Ends => true,
            };
            if !wanted_more {
                break;
            }
            match tokio::time::timeout_at(deadline, stream.next()).await {
                Ok(Some(line)) => {
                    if op(C, "a followed line", line)?.text == "tick" {
                        ticks += 1;
                    }
                }
                Ok(None) => {
                    ended = true;
                    break;
                }
                Err(_) => break,
            }
        }
        match h.follow_restarts {
            FollowAcrossRestarts::Continues => {
                if ticks < 2 {
                    let how = if ended {
                        "the stream ended"
                    } else {
                        "nothing more came"
                    };
                    return Err(fail(
                        C,
                        format!(
                            "declared Continues: following from the first run should yield the \
                             restarted run's \"tick\" too, but after {ticks} tick(s) {how}"
                        ),
                    ));
                }
            }
            FollowAcrossRestarts::Ends => {
                if !ended {
                    return Err(fail(
                        C,
                        format!(
                            "declared Ends: the following stream should end by itself when the \
                             first run exits, but it was still open after {ticks} tick(s)"
                        ),
                    ));
                }
                if ticks != 1 {
                    return Err(fail(
                        C,
                        format!(
                            "declared Ends: following from the first run should yield exactly \
                             its one \"tick\" before ending, got {ticks}"
                        ),
                    ));
                }
            }
        }
        Ok(())
    })
    .await
}
