//! Executes a [`FixtureScript`]: prints its lines (flushed one by one so container log drivers
//! see them at once), sleeps, exits with its code, serves MCP, or idles until a stop signal.

use std::net::{Ipv4Addr, SocketAddr};

use mcp_orchestrator_api::fixture::{FixtureScript, FixtureStep, ServeMode};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::signals::Signals;

/// Runs `script` and returns the process exit code: the script's own, 1 when serving MCP
/// failed, or 0 once stopped by SIGTERM/SIGINT (also in the middle of a sleep).
pub(crate) async fn run(script: &FixtureScript, mut signals: Signals) -> i32 {
    let outcome = tokio::select! {
        end = execute(script) => end,
        _ = signals.recv() => return 0,
    };
    let served = match outcome {
        End::Exit(code) => return code,
        End::Idle => {
            signals.recv().await;
            return 0;
        }
        End::Serve(ServeMode::Stdio) => crate::server::serve_stdio(signals).await,
        End::Serve(ServeMode::Http { port }) => {
            crate::http::serve(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), signals).await
        }
    };
    match served {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mcp-test-server: {e}");
            1
        }
    }
}

/// How the steps ended.
enum End {
    Exit(i32),
    Serve(ServeMode),
    Idle,
}

/// Runs the steps up to an exit or a serve step.
async fn execute(script: &FixtureScript) -> End {
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
            FixtureStep::Exit(code) => return End::Exit(*code),
            FixtureStep::Serve(mode) => return End::Serve(*mode),
        }
    }
    End::Idle
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
