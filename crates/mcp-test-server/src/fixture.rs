//! Executes a [`FixtureScript`]: prints its lines (flushed one by one so container log drivers
//! see them at once), sleeps, exits with its code, or idles until a stop signal.

use mcp_orchestrator_api::fixture::{FixtureScript, FixtureStep};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::signals::Signals;

/// Runs `script` and returns the process exit code: the script's own, or 0 once stopped by
/// SIGTERM/SIGINT (also in the middle of a sleep).
pub(crate) async fn run(script: &FixtureScript, mut signals: Signals) -> i32 {
    let outcome = tokio::select! {
        code = execute(script) => code,
        _ = signals.recv() => return 0,
    };
    if let Some(code) = outcome {
        return code;
    }
    signals.recv().await;
    0
}

/// Runs the steps; `Some(code)` when the script ends with an exit.
async fn execute(script: &FixtureScript) -> Option<i32> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    for step in &script.steps {
        match step {
            FixtureStep::Stdout(line) => print(&mut stdout, line).await,
            FixtureStep::Stderr(line) => print(&mut stderr, line).await,
            FixtureStep::StdoutLines { prefix, count } => {
                for i in 1..=*count {
                    print(&mut stdout, &format!("{prefix}-{i}")).await;
                }
            }
            FixtureStep::Sleep(d) => tokio::time::sleep(*d).await,
            FixtureStep::Exit(code) => return Some(*code),
        }
    }
    None
}

/// Writes one line and flushes it. Write errors are ignored on purpose: a fixture must keep
/// its lifecycle (sleep, exit code, idling) even when nobody reads its output any more.
async fn print(out: &mut (impl AsyncWrite + Unpin), line: &str) {
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line.as_bytes());
    buf.push(b'\n');
    if out.write_all(&buf).await.is_ok() {
        let _ = out.flush().await;
    }
}
