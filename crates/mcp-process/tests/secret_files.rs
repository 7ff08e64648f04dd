//! Secret files on the process backend: each value in a 0400 file of the instance directory
//! named by its variable, never in `meta.json`, `state.json`, the supervisor's log or the
//! server's log, and gone with the instance (stop and a failed start); an unresolvable
//! reference refuses the start naming `secretFiles[i]`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestEnv;
use mcp_orchestrator_api::fixture::{FixtureScript, mode_line};
use mcp_orchestrator_api::{McpOrchestrator, OrchestratorError};
use mcp_process::{ProcessConfig, ProcessOrchestrator};
use mcp_types::{LogOptions, McpServer, RestartPolicy, SecretFile, StartOptions};

const VALUE: &str = "pr0cess-s3cret-value";

/// A secrets directory holding `files/token` = [`VALUE`] (with a trailing newline, as editors
/// write it) and an environment using it.
fn setup() -> (tempfile::TempDir, TestEnv) {
    let secrets = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(secrets.path().join("files")).expect("mkdir");
    std::fs::write(secrets.path().join("files/token"), format!("{VALUE}\n")).expect("secret");
    let dir = secrets.path().to_owned();
    let env = TestEnv::with_config(|c| ProcessConfig {
        secrets_dir: Some(dir),
        ..c
    });
    (secrets, env)
}

async fn spec(script: &FixtureScript) -> McpServer {
    let mut spec = McpServer {
        restart_policy: RestartPolicy::Never,
        ..McpServer::command(
            "secret-files",
            common::test_server().await.display().to_string(),
            script.to_args(),
        )
    };
    spec.secret_files =
        vec![SecretFile::new("/run/secrets/token.pem", "files", "token").with_env("TOKEN_FILE")];
    spec
}

/// Every regular file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => out.extend(files_under(&path)),
            Ok(t) if t.is_file() => out.push(path),
            _ => {}
        }
    }
    out
}

#[tokio::test]
async fn a_secret_file_is_private_named_by_its_variable_and_gone_after_stop() {
    let (_secrets, env) = setup();
    let o = &env.orchestrator;
    let script = FixtureScript::new()
        .print_env("TOKEN_FILE")
        .print_env_file_mode("TOKEN_FILE")
        .stdout("ready");
    let id = o
        .start_server(&spec(&script).await, &StartOptions::default())
        .await
        .expect("start");
    common::wait_for_line(o, &id, "ready").await;
    let file = o.instance_dir(&id).join("secrets/0-token.pem");
    let lines = common::log_texts(o, &id, &LogOptions::default()).await;
    assert_eq!(
        lines,
        [
            format!("TOKEN_FILE={}", file.display()),
            mode_line("TOKEN_FILE", 0o400),
            "ready".to_owned(),
        ]
    );
    // The value exactly (the newline the secrets directory's file ends with is not part of it).
    assert_eq!(std::fs::read_to_string(&file).expect("read"), VALUE);
    let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o400);
    // Only the secret file itself holds the value: not the state, the logs, the supervisor's
    // diagnostics, nor the supervisor's environment.
    for path in files_under(env.dir.path()) {
        if path == file || path.file_name().is_some_and(|n| n == "stdio.sock") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(VALUE),
            "{} holds the secret",
            path.display()
        );
    }
    let sup = o
        .processes(&id)
        .expect("processes")
        .supervisor
        .expect("sup");
    let environ = std::fs::read(format!("/proc/{}/environ", sup.pid)).expect("environ");
    assert!(!String::from_utf8_lossy(&environ).contains(VALUE));
    o.stop_server(&id, Duration::from_secs(2))
        .await
        .expect("stop");
    assert!(!file.exists(), "{} outlived the stop", file.display());
    let left: Vec<_> = files_under(env.dir.path())
        .into_iter()
        .filter(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).contains(VALUE))
        .collect();
    assert!(left.is_empty(), "the value is left in {left:?}");
    env.assert_clean().await;
}

#[tokio::test]
async fn an_unresolvable_secret_file_refuses_the_start_naming_it() {
    let (_secrets, env) = setup();
    let o = &env.orchestrator;
    let mut spec = spec(&FixtureScript::new().stdout("never")).await;
    spec.secret_files
        .push(SecretFile::new("/run/other", "files", "absent"));
    spec.secret_files
        .push(SecretFile::new("/run/third", "no-such-secret", "k"));
    let err = o
        .start_server(&spec, &StartOptions::default())
        .await
        .unwrap_err();
    let OrchestratorError::InvalidSpec(errors) = &err else {
        panic!("expected InvalidSpec, got {err}");
    };
    assert!(!errors.has_path("secretFiles[0].secretRef"), "{errors}");
    assert!(errors.has_path("secretFiles[1].secretRef"), "{errors}");
    assert!(errors.has_path("secretFiles[2].secretRef"), "{errors}");
    assert!(!err.to_string().contains(VALUE), "{err}");
    env.assert_clean().await;
}

#[tokio::test]
async fn a_failed_start_removes_the_secret_files_it_wrote() {
    let (secrets, env) = setup();
    // A supervisor that dies before launching anything: the files were already written.
    let dying = ProcessOrchestrator::new(ProcessConfig {
        secrets_dir: Some(secrets.path().to_owned()),
        ..common::config(env.dir.path()).with_supervisor("/bin/false")
    })
    .expect("orchestrator");
    let err = dying
        .start_server(&spec(&FixtureScript::new()).await, &StartOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, OrchestratorError::Unavailable { message, .. } if message.contains("failed to start")),
        "{err}"
    );
    let left: Vec<_> = files_under(env.dir.path())
        .into_iter()
        .filter(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).contains(VALUE))
        .collect();
    assert!(left.is_empty(), "a failed start left the value in {left:?}");
    env.assert_clean().await;
}
