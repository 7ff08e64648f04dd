//! Volumes on the process backend with real supervisors and the real test server: data kept
//! across a restart, mount paths the host lacks or already has (the host's files untouched
//! either way), read-only volumes, refusals naming the field, and two orchestrators racing
//! to create the same persistent volume.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{TestEnv, log_texts, test_server};
use mcp_orchestrator_api::fixture::{FixtureScript, missing_line, write_line};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError, OrchestratorExt};
use mcp_process::ProcessOrchestrator;
use mcp_types::{
    InstanceId, LogOptions, McpServer, RestartPolicy, StartOptions, VolumeSpec,
    persistent_volume_name,
};

const TIMEOUT: Duration = Duration::from_secs(30);
const GRACE: Duration = Duration::from_secs(5);

async fn spec(name: &str, script: &FixtureScript, volumes: Vec<VolumeSpec>) -> McpServer {
    McpServer {
        volumes,
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            name,
            test_server().await.display().to_string(),
            script.to_args(),
        )
    }
}

/// Starts `spec` and waits for `count` log lines (the script's output).
async fn run_lines(
    o: &ProcessOrchestrator,
    spec: &McpServer,
    count: usize,
) -> (InstanceId, Vec<String>) {
    let id = o
        .start_server(spec, &StartOptions::default())
        .await
        .expect("start");
    (id.clone(), lines(o, &id, count).await)
}

async fn lines(o: &ProcessOrchestrator, id: &InstanceId, count: usize) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let got = log_texts(o, id, &LogOptions::default()).await;
        if got.len() >= count || tokio::time::Instant::now() > deadline {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_what_a_server_wrote_to_its_persistent_volume() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    // Neither path exists on the host: each is created in the server's own view only.
    let (data, cache) = ("/mcp-test-data", "/var/mcp-test-cache");
    let (df, cf) = (format!("{data}/notes"), format!("{cache}/notes"));
    let script = FixtureScript::new()
        .print_file(&df)
        .print_file(&cf)
        .write_file(&df, "written by the first instance")
        .write_file(&cf, "per instance");
    let volumes = vec![
        VolumeSpec::new("data", "1Gi", data).unwrap().persistent(),
        VolumeSpec::new("cache", "64Mi", cache).unwrap(),
    ];
    let spec = spec("keeper", &script, volumes).await;
    let (first, got) = run_lines(o, &spec, 4).await;
    assert_eq!(
        got,
        [
            missing_line(&df),
            missing_line(&cf),
            write_line(&df, None),
            write_line(&cf, None)
        ]
    );
    let second = o
        .restart(&first, &spec, &StartOptions::default(), GRACE)
        .await
        .expect("restart");
    assert_ne!(first, second);
    assert!(o.get_status(&first).await.unwrap_err().is_not_found());
    let got = lines(o, &second, 4).await;
    assert_eq!(
        got[..2],
        [
            "written by the first instance".to_owned(),
            missing_line(&cf)
        ],
        "{got:?}"
    );
    // The data is on the host, in the state directory, where the listing says.
    let name = persistent_volume_name("keeper", "data");
    let listed = o.list_volumes(Some("keeper")).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), &listed[0].in_use_by[..]),
        (name.as_str(), &[second.clone()][..])
    );
    let on_host = Path::new(&listed[0].details["path"]).join("notes");
    assert!(on_host.starts_with(env.dir.path()), "{}", on_host.display());
    assert_eq!(
        std::fs::read_to_string(&on_host).unwrap(),
        "written by the first instance\n"
    );
    for path in [data, cache] {
        assert!(!Path::new(path).exists(), "{path} was created on the host");
    }
    o.stop_server(&second, GRACE).await.expect("stop");
    o.remove_volume(&name).await.expect("remove");
    assert!(!on_host.exists());
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_directories_are_mounted_over_or_shadowed_never_changed() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let host = tempfile::tempdir().expect("host dir");
    std::fs::write(host.path().join("sibling.txt"), "from the host").unwrap();
    let existing = host.path().join("existing");
    std::fs::create_dir(&existing).unwrap();
    std::fs::write(existing.join("hidden.txt"), "under the mount").unwrap();
    let path = |p: &Path| p.display().to_string();
    // `existing` is mounted over; `new/deeper` is created in a tmpfs over `host`.
    let new = host.path().join("new/deeper");
    let script = FixtureScript::new()
        .print_file(path(&existing.join("hidden.txt")))
        .print_file(path(&host.path().join("sibling.txt")))
        .write_file(path(&existing.join("a")), "a")
        .write_file(path(&new.join("b")), "b")
        .print_file(path(&new.join("b")));
    let volumes = vec![
        VolumeSpec::new("over", "1Mi", path(&existing)).unwrap(),
        VolumeSpec::new("under", "1Mi", path(&new)).unwrap(),
    ];
    let (id, got) = run_lines(o, &spec("shadow", &script, volumes).await, 5).await;
    assert_eq!(
        got,
        [
            missing_line(&path(&existing.join("hidden.txt"))),
            "from the host".to_owned(),
            write_line(&path(&existing.join("a")), None),
            write_line(&path(&new.join("b")), None),
            "b".to_owned(),
        ]
    );
    assert_eq!(entries(host.path()), ["existing", "sibling.txt"]);
    assert_eq!(entries(&existing), ["hidden.txt"]);
    // The files went to the per-instance volumes, in the instance directory.
    let dir = o.instance_dir(&id);
    assert_eq!(
        std::fs::read_to_string(dir.join("volumes/over/a")).unwrap(),
        "a\n"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("volumes/under/b")).unwrap(),
        "b\n"
    );
    o.stop_server(&id, GRACE).await.expect("stop");
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_volume_refuses_writes() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let file = "/mcp-test-ro/f";
    let mut ro = VolumeSpec::new("ro", "1Mi", "/mcp-test-ro").unwrap();
    ro.read_only = true;
    let script = FixtureScript::new().write_file(file, "x");
    let (id, got) = run_lines(o, &spec("readonly", &script, vec![ro]).await, 1).await;
    assert!(
        got.len() == 1
            && got[0].starts_with(&format!("wrote {file} failed: "))
            && got[0].contains("Read-only"),
        "{got:?}"
    );
    o.stop_server(&id, GRACE).await.expect("stop");
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mount_paths_that_cannot_be_mounted_are_refused_naming_the_field() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let host = tempfile::tempdir().expect("host dir");
    let file = host.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    // Found by the starter (the path is a file) and by the supervisor (a file on the way).
    for bad in [file.clone(), file.join("below")] {
        let volumes = vec![
            VolumeSpec::new("fine", "1Mi", "/mcp-test-fine").unwrap(),
            VolumeSpec::new("bad", "1Mi", bad.display().to_string()).unwrap(),
        ];
        let spec = spec("badmount", &FixtureScript::new(), volumes).await;
        match o.start_server(&spec, &StartOptions::default()).await {
            Err(OrchestratorError::InvalidSpec(errors)) => {
                assert!(errors.has_path("volumes[1].mountPath"), "{errors}");
                assert!(errors.to_string().contains("not a directory"), "{errors}");
            }
            other => panic!("{}: expected InvalidSpec, got {other:?}", bad.display()),
        }
    }
    assert_eq!(entries(host.path()), ["a-file"]);
    let over_root = spec(
        "badmount",
        &FixtureScript::new(),
        vec![VolumeSpec::new("root", "1Mi", "/").unwrap()],
    )
    .await;
    let e = o
        .start_server(&over_root, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, OrchestratorError::InvalidSpec(v) if v.has_path("volumes[0].mountPath")),
        "{e}"
    );
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_orchestrators_racing_to_create_a_persistent_volume_share_it() {
    let env = TestEnv::new();
    let (a, b) = (env.orchestrator.clone(), env.fresh());
    let script = FixtureScript::new();
    let volumes = vec![
        VolumeSpec::new("shared", "1Mi", "/mcp-test-shared")
            .unwrap()
            .persistent(),
    ];
    let spec = spec("racer", &script, volumes).await;
    let options = StartOptions::default();
    let (x, y) = tokio::join!(
        a.start_server(&spec, &options),
        b.start_server(&spec, &options)
    );
    let (x, y) = (x.expect("first start"), y.expect("second start"));
    for id in [&x, &y] {
        a.wait_until_running(id, TIMEOUT).await.expect("running");
    }
    let name = persistent_volume_name("racer", "shared");
    let listed = b.list_volumes(None).await.expect("list");
    let mut users = vec![x.clone(), y.clone()];
    users.sort();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), &listed[0].in_use_by),
        (name.as_str(), &users)
    );
    match a.remove_volume(&name).await {
        Err(OrchestratorError::InUse { users: named, .. }) => {
            let want: Vec<String> = users.iter().map(ToString::to_string).collect();
            assert_eq!(named, want);
        }
        other => panic!("expected InUse, got {other:?}"),
    }
    a.stop_server(&x, GRACE).await.expect("stop");
    assert!(matches!(
        b.remove_volume(&name).await,
        Err(OrchestratorError::InUse { users, .. }) if users == [y.to_string()]
    ));
    b.stop_server(&y, GRACE).await.expect("stop");
    b.remove_volume(&name).await.expect("remove");
    assert!(a.list_volumes(None).await.expect("list").is_empty());
    assert!(a.remove_volume(&name).await.unwrap_err().is_not_found());
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_keeps_its_volumes_across_its_own_restarts() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    // Restarted by the supervisor (same instance): the namespaces are set up once and every
    // run starts in them, so the second run reads what the first wrote.
    let f = "/mcp-test-runs/count";
    let script = FixtureScript::new()
        .print_file(f)
        .write_file(f, "run")
        .exit(1);
    let spec = McpServer {
        restart_policy: RestartPolicy::OnFailure,
        ..spec(
            "rerun",
            &script,
            vec![VolumeSpec::new("runs", "1Mi", "/mcp-test-runs").unwrap()],
        )
        .await
    };
    let id = o
        .start_server(&spec, &StartOptions::default())
        .await
        .expect("start");
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    let later_run = loop {
        let status = o.get_status(&id).await.expect("status");
        let now = log_texts(o, &id, &LogOptions::default()).await;
        if status.restart_count >= 1 && !now.is_empty() {
            break now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no restart: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(later_run[0], "run", "{later_run:?}");
    o.stop_server(&id, GRACE).await.expect("stop");
    env.assert_clean().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_volume_left_half_built_is_an_orphan_once_old() {
    let env = TestEnv::new();
    let o = &env.orchestrator;
    let volumes = env.dir.path().join("volumes");
    let (old, fresh) = (
        volumes.join(".new-mcp-gone-data.1.0"),
        volumes.join(".new-mcp-busy-data.2.0"),
    );
    for dir in [&old, &fresh] {
        std::fs::create_dir_all(dir.join("data")).expect("half-built volume");
    }
    let an_hour_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&old)
        .and_then(|d| d.set_modified(an_hour_ago))
        .expect("age it");
    let report = o.collect_garbage(true).await.expect("dry run");
    let names: Vec<&str> = report.orphans.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, [old.display().to_string()], "{report:?}");
    assert!(old.exists() && !report.orphans[0].removed);
    let report = o.collect_garbage(false).await.expect("collect");
    assert!(report.orphans[0].removed, "{report:?}");
    assert!(!old.exists(), "removed");
    assert!(
        fresh.exists(),
        "a volume being built right now is left alone"
    );
    assert!(o.list_volumes(None).await.expect("list").is_empty());
}
