//! Executes a [`FixtureScript`]: prints its lines (flushed one by one so container log drivers
//! see them at once), an environment variable, the working directory, files (also one named by
//! a variable, and its mode), tries a TCP connection, fetches URLs, sleeps, exits with its code,
//! serves MCP, or idles until a stop signal (which it may be told to ignore).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use std::os::unix::fs::PermissionsExt;

use mcp_orchestrator_api::fixture::{
    FixtureScript, FixtureStep, ServeMode, connect_line, env_file_name, env_line, missing_line,
    mode_line, write_line,
};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::signals::Signals;

/// Runs `script` and returns the process exit code: the script's own, 1 when serving MCP
/// failed, or 0 once stopped by SIGTERM/SIGINT (also in the middle of a sleep) unless an
/// [`FixtureStep::IgnoreSigterm`] step ran.
pub(crate) async fn run(script: &FixtureScript, mut signals: Signals) -> i32 {
    let outcome = execute(script, &mut signals).await;
    let Some(outcome) = outcome else { return 0 };
    let served = match outcome {
        End::Exit(code) => return code,
        End::Idle => {
            signals.recv().await;
            return 0;
        }
        End::Serve(ServeMode::Stdio) => crate::server::serve_stdio(signals, false).await,
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

/// Runs the steps up to an exit or a serve step; `None` when a stop signal came first.
async fn execute(script: &FixtureScript, signals: &mut Signals) -> Option<End> {
    let ignore = signals.ignore_switch();
    tokio::select! {
        end = steps(script, &ignore) => Some(end),
        _ = signals.recv() => None,
    }
}

async fn steps(script: &FixtureScript, ignore: &AtomicBool) -> End {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    for step in &script.steps {
        match step {
            FixtureStep::PrintEnv(name) => {
                let value = std::env::var(name).ok();
                print(&mut stdout, &env_line(name, value.as_deref())).await;
            }
            FixtureStep::PrintCwd => {
                let cwd = std::env::current_dir()
                    .map_or_else(|e| format!("unknown: {e}"), |d| d.display().to_string());
                print(&mut stdout, &cwd).await;
            }
            FixtureStep::IgnoreSigterm => ignore.store(true, Ordering::SeqCst),
            FixtureStep::WriteFile { path, content } => {
                let written = std::fs::write(path, format!("{content}\n"));
                let error = written.err().map(|e| e.to_string());
                print(&mut stdout, &write_line(path, error.as_deref())).await;
            }
            FixtureStep::PrintFile(path) => match std::fs::read_to_string(path) {
                Ok(text) => {
                    for line in text.lines() {
                        print(&mut stdout, line).await;
                    }
                }
                Err(_) => print(&mut stdout, &missing_line(path)).await,
            },
            FixtureStep::Connect(target) => {
                let error = connect(target).await.err();
                print(&mut stdout, &connect_line(target, error.as_deref())).await;
            }
            FixtureStep::PrintEnvFile(name) => {
                match std::env::var_os(name).map(std::fs::read_to_string) {
                    Some(Ok(text)) => {
                        for line in text.lines() {
                            print(&mut stdout, line).await;
                        }
                    }
                    _ => print(&mut stdout, &missing_line(&env_file_name(name))).await,
                }
            }
            FixtureStep::PrintEnvFileMode(name) => {
                let line = match std::env::var_os(name).map(std::fs::metadata) {
                    Some(Ok(meta)) => mode_line(name, meta.permissions().mode()),
                    _ => missing_line(&env_file_name(name)),
                };
                print(&mut stdout, &line).await;
            }
            FixtureStep::Fetch(url) => {
                let url = url.clone();
                let line = tokio::task::spawn_blocking(move || crate::fetch::fetch(&url))
                    .await
                    .unwrap_or_else(|e| format!("fetch failed: {e}"));
                print(&mut stdout, &line).await;
            }
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

/// Opens (and drops) a TCP connection to `target`, within 5 s.
async fn connect(target: &str) -> Result<(), String> {
    let attempt = tokio::net::TcpStream::connect(target);
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out after 5s".into()),
    }
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
