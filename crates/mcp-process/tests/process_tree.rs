//! Every process a server starts ends with it: daemons that double-fork and call `setsid` (so
//! they leave the server's process group and session) are found through `/proc` below the
//! supervisor, a child subreaper, and ended by `stop` and when the server exits by itself.

mod common;

use std::path::Path;
use std::time::Duration;

use common::TestEnv;
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_process::ProcIdentity;
use mcp_types::{McpServer, Phase, RestartPolicy, StartOptions};

const WAIT: Duration = Duration::from_secs(20);

/// A server that starts a daemon the classic way: a subshell that exits at once (double fork)
/// runs `setsid` (a new session and process group), and the daemon starts a `sleep` of its
/// own. The daemon writes `<daemon pid> <sleep pid>` to `<marks>/pids`. Then the server runs
/// `tail`.
fn daemonizing(name: &str, marks: &Path, tail: &str) -> McpServer {
    let m = marks.display();
    let script = format!(
        "(setsid sh -c 'sleep 300 & echo $$ $! > {m}/pids.tmp; mv {m}/pids.tmp {m}/pids; wait' &); \
         while [ ! -e {m}/pids ]; do sleep 0.02; done; echo started; {tail}"
    );
    McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(name, "/bin/sh", ["-c", &script])
    }
}

/// Field `n` (1-based, as in proc(5)) of `/proc/<pid>/stat`.
fn stat_field(pid: i32, n: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// SIGKILLs what a failed test would otherwise leave running.
struct KillOnDrop(Vec<ProcIdentity>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_alive() {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &p.pid.to_string()])
                    .status();
            }
        }
    }
}

/// The daemon and its `sleep`, once the daemon has recorded them; checks that they really left
/// the server's session.
async fn daemon_processes(marks: &Path, server: Option<ProcIdentity>) -> KillOnDrop {
    let file = marks.join("pids");
    let deadline = tokio::time::Instant::now() + WAIT;
    while !file.exists() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon never wrote its pids"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let text = std::fs::read_to_string(&file).expect("pids");
    let procs: Vec<ProcIdentity> = text
        .split_whitespace()
        .map(|p| ProcIdentity::of(p.parse().expect("pid")).expect("daemon process running"))
        .collect();
    assert_eq!(procs.len(), 2, "{text}");
    let guard = KillOnDrop(procs);
    if let Some(server) = server {
        let server_session = stat_field(server.pid, 6).expect("server session");
        for p in &guard.0 {
            let session = stat_field(p.pid, 6).expect("daemon session");
            assert_ne!(session, server_session, "pid {} did not call setsid", p.pid);
            assert_eq!(stat_field(p.pid, 5), Some(session), "own process group");
        }
    }
    guard
}

async fn assert_all_gone(procs: &[ProcIdentity]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let alive: Vec<_> = procs.iter().filter(|p| p.is_alive()).collect();
        if alive.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "processes the server started survived: {alive:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn stop_ends_a_double_forked_setsid_daemon_and_its_children() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let marks = tempfile::tempdir().expect("temp dir");
    let spec = daemonizing("daemonizer", marks.path(), "exec sleep 300");
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    o.wait_until_running(&id, WAIT).await.expect("running");
    common::wait_for_line(o, &id, "started").await;
    let recorded = common::recorded(o, &id);
    let server = o.processes(&id).expect("processes").server;
    let daemon = daemon_processes(marks.path(), server).await;

    o.stop_server(&id, Duration::from_secs(2))
        .await
        .expect("stop");
    assert_all_gone(&daemon.0).await;
    common::assert_gone(&recorded).await;
    env.assert_clean().await;
}

#[tokio::test]
async fn a_server_that_exits_takes_its_setsid_daemon_with_it() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let marks = tempfile::tempdir().expect("temp dir");
    let spec = daemonizing("exits", marks.path(), "sleep 1; exit 0");
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    let daemon = daemon_processes(marks.path(), None).await;
    o.wait_for_phase(&id, Phase::Succeeded, WAIT)
        .await
        .expect("succeeded");
    assert_all_gone(&daemon.0).await;
    o.stop_server(&id, Duration::from_secs(1))
        .await
        .expect("stop");
    env.assert_clean().await;
}
