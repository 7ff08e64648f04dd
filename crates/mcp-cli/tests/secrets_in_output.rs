//! No secret value reaches any output at any log level: `mcp-orch` run, ps, status, logs and
//! stop with `-v` and `RUST_LOG=trace` on the process and Docker backends, with one value given
//! as a plain env value, one through `secretRef` and one as a secret file; every byte of stdout
//! and stderr (and, for the process backend, every file in the state directory but the secret
//! file itself, which goes with the instance) is searched for the values, and for Docker the
//! container's and its volumes' `docker inspect` for the secret file's. The Docker half skips
//! with a printed reason when no engine answers, unless `MCPCTL_REQUIRE_DOCKER=1`.

mod common;

use std::fmt::Write as _;
use std::path::Path;

use bollard::Docker;
use common::{Env, stdout_of};
use mcp_factory::mcp_orchestrator_api::FixtureScript;

/// Distinctive values that no log line contains by chance.
const PLAIN: &str = "plain-Zq7x1LkP0w";
const SECRET: &str = "secretref-Hh93TmVb2c";
const FILE_SECRET: &str = "secretfile-Rw41pQz8Ka";

/// Writes `<dir>/secrets/gh/token` and `<dir>/secrets/gh/file` and returns the secrets
/// directory.
fn secrets_dir(dir: &Path) -> std::path::PathBuf {
    let secrets = dir.join("secrets");
    std::fs::create_dir_all(secrets.join("gh")).expect("secrets dir");
    std::fs::write(secrets.join("gh").join("token"), SECRET).expect("secret");
    std::fs::write(secrets.join("gh").join("file"), FILE_SECRET).expect("secret");
    secrets
}

/// The env block of a spec: one plain value, one secret reference; and one secret file.
const ENV_YAML: &str = "env:\n  PLAIN_TOKEN: plain-Zq7x1LkP0w\n  GH_TOKEN:\n    secretRef: { name: gh, key: token }\n\
     secretFiles:\n  - { path: /run/secrets/gh-file, secretRef: { name: gh, key: file }, env: GH_FILE }\n";

/// Everything a command printed, with `RUST_LOG=trace`; the command must succeed.
fn traced(env: &Env, args: &[&str], transcript: &mut String) -> String {
    let out = env
        .cmd(&[&["-v"], args].concat())
        .env("RUST_LOG", "trace")
        .output()
        .expect("mcp-orch runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let _ = writeln!(
        transcript,
        "$ mcp-orch {}\n{stdout}{stderr}",
        args.join(" ")
    );
    assert!(
        out.status.success(),
        "mcp-orch {args:?} failed:\n{stdout}\n{stderr}"
    );
    stdout.trim().to_owned()
}

/// Fails naming where a secret value showed up.
fn assert_no_secret(what: &str, text: &str) {
    for value in [PLAIN, SECRET, FILE_SECRET] {
        if let Some(at) = text.find(value) {
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i);
            panic!(
                "the value {value:?} appears in {what}:\n{}",
                &text[start..end]
            );
        }
    }
}

/// Runs the whole life of one instance with tracing at its most verbose and returns the
/// transcript; `after_run` gets the instance id once it runs.
fn lifecycle(env: &Env, spec: &Path, after_run: &dyn Fn(&str)) -> String {
    let mut transcript = String::new();
    let id = traced(
        env,
        &["run", "--skip-ready", spec.to_str().expect("utf-8")],
        &mut transcript,
    );
    let id = id.lines().last().unwrap_or_default().to_owned();
    assert!(id.starts_with("mcp-leak-"), "{transcript}");
    after_run(&id);
    traced(env, &["ps"], &mut transcript);
    traced(env, &["ps", "-o", "json"], &mut transcript);
    traced(env, &["status", &id], &mut transcript);
    traced(env, &["status", &id, "-o", "json"], &mut transcript);
    traced(env, &["logs", &id], &mut transcript);
    traced(env, &["stop", &id, "--grace", "2s"], &mut transcript);
    transcript
}

#[test]
fn the_process_backend_prints_no_secret_at_trace_level() {
    let env = Env::process();
    let secrets = secrets_dir(env.dir.path());
    let state = env.dir.path().join("state");
    std::fs::write(
        &env.config,
        format!(
            "orchestrator:\n  type: process\n  process:\n    stateDir: {}\n    secretsDir: {}\n",
            state.display(),
            secrets.display()
        ),
    )
    .expect("config");
    // The server proves it got both values without printing them: it writes them to a file
    // outside the state directory (its command line must not hold them either).
    let got = env.dir.path().join("got");
    let spec = env.spec(
        "leak.yaml",
        &format!(
            "name: leak\ncommand: [/bin/sh]\nargs: [\"-c\", 'printf \"%s %s %s\" \"$PLAIN_TOKEN\" \
             \"$GH_TOKEN\" \"$(cat \"$GH_FILE\")\" > {}; echo values-written; exec sleep 300']\n\
             restartPolicy: Never\n{ENV_YAML}",
            got.display()
        ),
    );
    let mut transcript = String::new();
    let id = traced(
        &env,
        &["run", "--skip-ready", spec.to_str().expect("utf-8")],
        &mut transcript,
    );
    let mut logs = String::new();
    for _ in 0..100 {
        logs = stdout_of(&mut env.cmd(&["logs", &id]));
        if !logs.is_empty() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(logs, "values-written");
    assert_eq!(
        std::fs::read_to_string(&got).expect("the server's file"),
        format!("{PLAIN} {SECRET} {FILE_SECRET}"),
        "the server did not get the values"
    );
    // While it runs, nothing on disk holds a value either (supervisor.log included), but the
    // secret file, which is the server's and goes with the instance.
    let secret_file = |p: &Path| p.parent().is_some_and(|d| d.ends_with("secrets"));
    assert_eq!(
        walk(&state).into_iter().filter(|p| secret_file(p)).count(),
        1
    );
    for entry in walk(&state).into_iter().filter(|p| !secret_file(p)) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert_no_secret(
            &entry.display().to_string(),
            &String::from_utf8_lossy(&bytes),
        );
    }
    traced(&env, &["ps", "-o", "json"], &mut transcript);
    traced(&env, &["status", &id, "-o", "json"], &mut transcript);
    traced(&env, &["logs", &id], &mut transcript);
    traced(&env, &["stop", &id, "--grace", "2s"], &mut transcript);
    assert_no_secret("the output of mcp-orch (process backend)", &transcript);
    for entry in walk(&state) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert_no_secret(
            &format!("{} after the stop", entry.display()),
            &String::from_utf8_lossy(&bytes),
        );
    }
}

/// Every regular file under `dir`.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => files.push(path),
                _ => {}
            }
        }
    }
    files
}

async fn engine() -> Option<Docker> {
    let required = std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d,
        Err(e) if !required => {
            eprintln!("skipping: no Docker engine ({e})");
            return None;
        }
        Err(e) => panic!("MCPCTL_REQUIRE_DOCKER=1 but no Docker engine: {e}"),
    };
    match docker.negotiate_version().await {
        Ok(d) if d.ping().await.is_ok() => Some(d),
        other if !required => {
            eprintln!(
                "skipping: the Docker engine does not answer ({:?})",
                other.err()
            );
            None
        }
        other => panic!(
            "MCPCTL_REQUIRE_DOCKER=1 but the Docker engine does not answer: {:?}",
            other.err()
        ),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_docker_backend_prints_no_secret_at_trace_level() {
    let Some(docker) = engine().await else { return };
    let image = mcp_test_server::ensure_docker_image(&docker, mcp_test_server::DEFAULT_IMAGE_TAG)
        .await
        .expect("test image");
    let network = format!("mcpctl-secrets-test-{}", std::process::id());
    let env = Env::docker(&network);
    let secrets = secrets_dir(env.dir.path());
    std::fs::write(
        &env.config,
        format!(
            "orchestrator:\n  type: docker\n  docker:\n    network: {network}\n    secretsDir: {}\n",
            secrets.display()
        ),
    )
    .expect("config");
    let args: Vec<String> = FixtureScript::new()
        .stdout("up")
        .to_args()
        .iter()
        .map(|a| format!("{a:?}"))
        .collect();
    let spec = env.spec(
        "leak.yaml",
        &format!(
            "name: leak\nimage: {image}\nargs: [{}]\nrestartPolicy: Never\n{ENV_YAML}",
            args.join(", ")
        ),
    );
    let runtime = tokio::runtime::Handle::current();
    // The engine really got both values, so there was something to leak.
    let values_reached_the_engine = |id: &str| {
        let inspect = runtime
            .block_on(docker.inspect_container(id, None))
            .expect("inspect the container");
        let container_env = inspect.config.and_then(|c| c.env).unwrap_or_default();
        assert!(
            container_env.contains(&format!("PLAIN_TOKEN={PLAIN}"))
                && container_env.contains(&format!("GH_TOKEN={SECRET}"))
                && container_env.contains(&"GH_FILE=/run/secrets/gh-file".to_owned()),
            "the container lacks the values (names: {:?})",
            container_env
                .iter()
                .map(|kv| kv.split('=').next().unwrap_or_default())
                .collect::<Vec<_>>()
        );
        // A secret file's value is in no inspect: not the container's, not its volumes'.
        let inspect = runtime
            .block_on(docker.inspect_container(id, None))
            .expect("inspect the container");
        let mut shown = serde_json::to_string(&inspect).expect("json");
        for mount in inspect.mounts.unwrap_or_default() {
            if let Some(volume) = mount.name {
                let v = runtime
                    .block_on(docker.inspect_volume(&volume))
                    .expect("inspect a volume");
                shown.push_str(&serde_json::to_string(&v).expect("json"));
            }
        }
        assert!(
            shown.contains("/run/secrets/gh-file") && !shown.contains(FILE_SECRET),
            "docker inspect shows the secret file's value or not the file: {shown}"
        );
    };
    let outcome = tokio::task::block_in_place(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            lifecycle(&env, &spec, &values_reached_the_engine)
        }))
    });
    // Whatever the assertions left behind, then the test network.
    let leftovers = stdout_of(&mut env.cmd(&["ps", "-o", "json", "--server", "leak"]));
    if let Ok(serde_json::Value::Array(items)) = serde_json::from_str(&leftovers) {
        for item in items {
            if let Some(id) = item["id"].as_str() {
                let _ = env.cmd(&["stop", id, "--grace", "1s"]).output();
            }
        }
    }
    let _ = docker.remove_network(&network).await;
    match outcome {
        Ok(transcript) => {
            assert_no_secret("the output of mcp-orch (Docker backend)", &transcript);
        }
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
