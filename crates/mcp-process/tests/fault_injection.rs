//! Faults under load: 20 concurrent starts while the supervisor of another instance is killed
//! with SIGKILL and the state file of a third is corrupted. Every start either returns an id
//! that is then listed (running) or fails with an error; every instance, the damaged ones
//! included, is listed with a status that says what happened; and stopping everything listed
//! leaves no instance directory and no process behind.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Recording, TestEnv};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorExt};
use mcp_process::ProcIdentity;
use mcp_types::{InstanceFilters, InstanceId, McpServer, Phase, RestartPolicy, StartOptions};

const WAIT: Duration = Duration::from_secs(60);
const CONCURRENT: usize = 20;

fn server(name: &str) -> McpServer {
    McpServer {
        restart_policy: RestartPolicy::Always,
        ..McpServer::command(name, "/bin/sh", ["-c", "echo up; exec sleep 300"])
    }
}

fn kill_9(pid: i32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

/// Every instance listed, all pages, by id.
async fn listed(o: &impl McpOrchestrator) -> Vec<mcp_types::Instance> {
    let mut all = Vec::new();
    let mut filters = InstanceFilters {
        limit: Some(7),
        ..InstanceFilters::default()
    };
    loop {
        let page = o.list_instances(&filters).await.expect("list");
        all.extend(page.items);
        match page.continue_token {
            Some(t) => filters.continue_token = Some(t),
            None => return all,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_starts_with_a_killed_supervisor_and_a_corrupted_state_file() {
    let env = TestEnv::new();
    let o = Recording::new(env.orchestrator.clone());
    let options = StartOptions::default();

    // The victims, running before the storm.
    let killed = o
        .start_server(&server("killed"), &options)
        .await
        .expect("start");
    let corrupted = o
        .start_server(&server("corrupted"), &options)
        .await
        .expect("start");
    for id in [&killed, &corrupted] {
        o.wait_until_running(id, WAIT).await.expect("running");
    }
    let killed_sup = env
        .orchestrator
        .processes(&killed)
        .expect("processes")
        .supervisor
        .expect("supervisor recorded");
    let corrupted_procs: Vec<ProcIdentity> = common::recorded(&env.orchestrator, &corrupted);
    let state_file = env.orchestrator.instance_dir(&corrupted).join("state.json");

    // The storm: 20 starts, with both faults injected while they run.
    let starts = futures::future::join_all((0..CONCURRENT).map(|i| {
        let o = &o;
        let options = &options;
        async move { o.start_server(&server(&format!("load{i}")), options).await }
    }));
    let faults = async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        kill_9(killed_sup.pid);
        tokio::time::sleep(Duration::from_millis(30)).await;
        std::fs::write(&state_file, b"{\"status\": {\"phase\": \"Runn").expect("corrupt");
    };
    let (results, ()) = tokio::join!(starts, faults);

    let mut started: BTreeSet<InstanceId> = BTreeSet::new();
    for result in results {
        match result {
            Ok(id) => {
                started.insert(id);
            }
            // Cleanly reported: an error with a message, nothing half-made listed for it.
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    // On a healthy machine every start succeeds; the faults are elsewhere.
    assert_eq!(started.len(), CONCURRENT, "starts failed under faults");
    for id in &started {
        o.wait_until_running(id, WAIT).await.expect("running");
    }

    let instances = listed(&o).await;
    let ids: BTreeSet<InstanceId> = instances.iter().map(|i| i.id.clone()).collect();
    for id in &started {
        assert!(ids.contains(id), "{id} started but is not listed");
    }
    let status_of = |id: &InstanceId| {
        instances
            .iter()
            .find(|i| &i.id == id)
            .unwrap_or_else(|| panic!("{id} is not listed"))
            .status
            .clone()
    };
    // The orphan: its server still runs unsupervised, and the status says so.
    let orphan = status_of(&killed);
    assert_eq!(orphan.phase, Phase::Unknown, "{orphan:?}");
    assert_eq!(orphan.reason.as_deref(), Some(mcp_types::reasons::ORPHANED));
    // The corrupted one: listed, not Running, and the status names the unreadable file.
    let damaged = status_of(&corrupted);
    assert_eq!(damaged.phase, Phase::Unknown, "{damaged:?}");
    assert!(
        damaged
            .message
            .as_deref()
            .is_some_and(|m| m.contains("state.json")),
        "{damaged:?}"
    );
    let direct = o
        .get_status(&corrupted)
        .await
        .expect("status of the damaged instance");
    assert_eq!(direct.phase, Phase::Unknown);
    assert_eq!(ids.len(), CONCURRENT + 2, "{ids:?}");

    // Orphan collection: exactly the instance whose supervisor died (the damaged one still has
    // its supervisor); a dry run removes nothing, the real one stops it.
    collects_only(&o, &killed).await;

    // Stop everything listed: all of it goes, processes included.
    let stopped = o
        .stop_all(&InstanceFilters::default(), Duration::from_secs(2))
        .await
        .expect("stop all");
    assert_eq!(stopped, CONCURRENT + 1);
    assert!(listed(&o).await.is_empty());
    common::assert_gone(&o.seen()).await;
    common::assert_gone(&corrupted_procs).await;
    env.assert_clean().await;
}

/// `collect_garbage` finds exactly `killed` (whose supervisor died): a dry run reports it and
/// removes nothing, the real run stops it.
async fn collects_only(o: &Recording, killed: &InstanceId) {
    let dry = o.collect_garbage(true).await.expect("gc dry run");
    let found: Vec<_> = dry
        .orphans
        .iter()
        .map(|x| (x.name.as_str(), x.removed))
        .collect();
    assert_eq!(found, [(killed.as_str(), false)], "{dry:?}");
    assert!(
        o.get_status(killed).await.is_ok(),
        "a dry run removed {killed}"
    );
    let real = o.collect_garbage(false).await.expect("gc");
    let found: Vec<_> = real
        .orphans
        .iter()
        .map(|x| (x.name.as_str(), x.removed))
        .collect();
    assert_eq!(found, [(killed.as_str(), true)], "{real:?}");
    assert!(o.get_status(killed).await.unwrap_err().is_not_found());
}
