//! The official MCP Python SDK (`mcp` from PyPI, pinned in `xtask/python-requirements.txt`)
//! reaches what `mcp-orch run` started, exactly as a user wires it: a stdio server through
//! `mcp-orch attach <id>` as the client's server command, an HTTP server through the endpoint
//! `mcp-orch ps` prints. On the process backend and on Docker, plus `mcp-server-time` from PyPI
//! in a container built locally from Debian packages, and through the gateway (`mcp-orch serve`)
//! to servers in containers. Skips without the SDK unless
//! `MCPCTL_REQUIRE_PYTHON_MCP=1` (CI), and without Docker unless `MCPCTL_REQUIRE_DOCKER=1`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use bollard::Docker;
use common::{Env, stdout_of, test_server};

/// The venv `cargo xtask` installs the Python tools into, when it has the SDK.
fn python() -> Option<PathBuf> {
    let venv =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/python-tools/bin/python");
    let has_sdk = std::process::Command::new(&venv)
        .args(["-c", "import mcp.client.streamable_http"])
        .output()
        .is_ok_and(|o| o.status.success());
    if has_sdk {
        return Some(venv);
    }
    assert!(
        std::env::var("MCPCTL_REQUIRE_PYTHON_MCP").as_deref() != Ok("1"),
        "MCPCTL_REQUIRE_PYTHON_MCP=1 but {} cannot import the MCP SDK",
        venv.display()
    );
    eprintln!(
        "skipping: no MCP Python SDK at {} (`cargo xtask ci` installs it)",
        venv.display()
    );
    None
}

/// Runs the SDK client; returns its JSON summary. Proxy variables are dropped: every target is
/// on loopback or a local command.
fn sdk(
    python: &PathBuf,
    mode: &str,
    tool: &str,
    args: &serde_json::Value,
    target: &[&str],
) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_client.py");
    let mut c = std::process::Command::new(python);
    c.arg(script)
        .args([mode, tool, &args.to_string()])
        .args(target);
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        c.env_remove(var);
    }
    let out = c.output().expect("running the Python SDK client");
    assert!(
        out.status.success(),
        "the Python SDK client failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client's JSON summary")
}

/// The same as [`sdk`], retried while an HTTP server may still be binding its port.
fn sdk_http(python: &PathBuf, url: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/sdk_client.py");
        let probe = std::process::Command::new(python)
            .arg(&script)
            .args(["http", "echo", r#"{"text":"probe"}"#, url])
            .env_remove("HTTP_PROXY")
            .env_remove("http_proxy")
            .output()
            .expect("python");
        if probe.status.success() || std::time::Instant::now() > deadline {
            return sdk(
                python,
                "http",
                "echo",
                &serde_json::json!({"text": "over http"}),
                &[url],
            );
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn attach_command(env: &Env, id: &str) -> Vec<String> {
    vec![
        assert_cmd::cargo::cargo_bin("mcp-orch")
            .display()
            .to_string(),
        "--config".into(),
        env.config.display().to_string(),
        "attach".into(),
        id.to_owned(),
    ]
}

fn through_attach(
    python: &PathBuf,
    env: &Env,
    id: &str,
    tool: &str,
    args: &serde_json::Value,
) -> serde_json::Value {
    let cmd = attach_command(env, id);
    let mut target = vec!["--"];
    target.extend(cmd.iter().map(String::as_str));
    sdk(python, "stdio", tool, args, &target)
}

fn endpoint_of(env: &Env, id: &str) -> String {
    let ps = stdout_of(env.cmd(&["ps", "-o", "json"]));
    let items: serde_json::Value = serde_json::from_str(&ps).expect("ps json");
    items
        .as_array()
        .into_iter()
        .flatten()
        .find(|i| i["id"] == id)
        .and_then(|i| i["endpoint"].as_str())
        .unwrap_or_else(|| panic!("no endpoint for {id} in {ps}"))
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn assert_echo(summary: &serde_json::Value, text: &str) {
    assert_eq!(summary["text"], text, "{summary}");
    assert!(
        summary["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|n| n == "echo")),
        "{summary}"
    );
}

#[test]
fn python_sdk_reaches_stdio_and_http_servers_on_the_process_backend() {
    let Some(python) = python() else { return };
    let env = Env::process();
    let bin = test_server().display().to_string();
    let stdio = env.spec(
        "stdio.yaml",
        &format!("name: py-stdio\ncommand: [{bin:?}]\nargs: [stdio]\n"),
    );
    let id = stdout_of(env.cmd(&["run", stdio.to_str().unwrap()]));

    let first = through_attach(
        &python,
        &env,
        &id,
        "echo",
        &serde_json::json!({"text": "hello"}),
    );
    assert_echo(&first, "hello");
    // The client went away; the server runs on and the next client is served.
    let second = through_attach(
        &python,
        &env,
        &id,
        "echo",
        &serde_json::json!({"text": "again"}),
    );
    assert_echo(&second, "again");

    let port = free_port();
    let http = env.spec(
        "http.yaml",
        &format!(
            "name: py-http\ncommand: [{bin:?}]\nargs: [http, --port, \"{port}\", --host, 127.0.0.1]\n\
             transport: streamable-http\nport: {port}\n"
        ),
    );
    let http_id = stdout_of(env.cmd(&["run", http.to_str().unwrap()]));
    let url = endpoint_of(&env, &http_id);
    assert_eq!(url, format!("http://127.0.0.1:{port}/mcp"));
    assert_echo(&sdk_http(&python, &url), "over http");

    // attach names the URL of an HTTP server and fails.
    let out = env.cmd(&["attach", &http_id]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&url));
    assert!(out.stdout.is_empty());

    for id in [&id, &http_id] {
        stdout_of(env.cmd(&["stop", id, "--grace", "2s"]));
    }
}

async fn engine() -> Option<Docker> {
    let required = std::env::var("MCPCTL_REQUIRE_DOCKER").is_ok_and(|v| v == "1");
    let docker = match Docker::connect_with_local_defaults() {
        Ok(d) => d.negotiate_version().await.ok(),
        Err(_) => None,
    };
    match docker {
        Some(d) if d.ping().await.is_ok() => Some(d),
        _ => {
            assert!(
                !required,
                "MCPCTL_REQUIRE_DOCKER=1 but no Docker engine answers"
            );
            eprintln!("skipping: no Docker engine");
            None
        }
    }
}

/// Stops the instances and removes the network however the test ends.
struct DockerCleanup<'a> {
    env: &'a Env,
    rt: &'a tokio::runtime::Runtime,
    docker: Docker,
    network: String,
    ids: Vec<String>,
}

impl Drop for DockerCleanup<'_> {
    fn drop(&mut self) {
        for id in &self.ids {
            let _ = self.env.cmd(&["stop", id, "--grace", "2s"]).output();
        }
        let _ = self.rt.block_on(self.docker.remove_network(&self.network));
    }
}

#[test]
fn python_sdk_reaches_servers_in_containers_including_mcp_server_time() {
    let Some(python) = python() else { return };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Some(docker) = rt.block_on(engine()) else {
        return;
    };
    let image = rt
        .block_on(mcp_test_server::ensure_docker_image(
            &docker,
            mcp_test_server::DEFAULT_IMAGE_TAG,
        ))
        .expect("test image");
    let time_image = rt
        .block_on(mcp_test_server::ensure_time_server_image(&docker))
        .expect("mcp-server-time image");
    let network = format!("mcpctl-cli-py-{}", std::process::id());
    let env = Env::docker(&network);
    let mut cleanup = DockerCleanup {
        env: &env,
        rt: &rt,
        docker,
        network,
        ids: Vec::new(),
    };

    let stdio = env.spec(
        "stdio.yaml",
        &format!("name: py-dstdio\nimage: {image}\nargs: [stdio]\n"),
    );
    let id = stdout_of(env.cmd(&["run", stdio.to_str().unwrap()]));
    cleanup.ids.push(id.clone());
    let first = through_attach(
        &python,
        &env,
        &id,
        "echo",
        &serde_json::json!({"text": "in docker"}),
    );
    assert_echo(&first, "in docker");
    let again = through_attach(
        &python,
        &env,
        &id,
        "echo",
        &serde_json::json!({"text": "re-attached"}),
    );
    assert_echo(&again, "re-attached");

    // A real third-party stdio server from PyPI, in a container, through attach.
    let time = env.spec(
        "time.yaml",
        &format!("name: py-time\nimage: {time_image}\n"),
    );
    let time_id = stdout_of(env.cmd(&["run", time.to_str().unwrap()]));
    cleanup.ids.push(time_id.clone());
    let now = through_attach(
        &python,
        &env,
        &time_id,
        "get_current_time",
        &serde_json::json!({"timezone": "UTC"}),
    );
    assert_eq!(now["server"], "mcp-time", "{now}");
    assert!(
        now["text"].as_str().is_some_and(|t| t.contains("UTC")),
        "{now}"
    );

    let http = env.spec(
        "http.yaml",
        &format!(
            "name: py-dhttp\nimage: {image}\nargs: [http, --port, \"8080\"]\n\
             transport: streamable-http\nport: 8080\n"
        ),
    );
    let http_id = stdout_of(env.cmd(&["run", http.to_str().unwrap()]));
    cleanup.ids.push(http_id.clone());
    let url = endpoint_of(&env, &http_id);
    assert!(
        url.starts_with("http://127.0.0.1:") && url.ends_with("/mcp"),
        "{url}"
    );
    assert_echo(&sdk_http(&python, &url), "over http");

    through_the_gateway(&python, &env, &id, &time_id);
    drop(cleanup);
}

/// The gateway in front of the same containers: the SDK's streamable-HTTP client reaches the
/// stdio server in a container and mcp-server-time through `mcp-orch serve`.
fn through_the_gateway(python: &PathBuf, env: &Env, id: &str, time_id: &str) {
    let port = free_port();
    let serving = Serving(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("mcp-orch"))
            .args([
                "--config",
                env.config.to_str().unwrap(),
                "serve",
                "--listen",
            ])
            .arg(format!("127.0.0.1:{port}"))
            .env("XDG_CONFIG_HOME", env.dir.path())
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("mcp-orch serve"),
    );
    let gateway = |id: &str| format!("http://127.0.0.1:{port}/servers/{id}/mcp");
    assert_echo(&sdk_http(python, &gateway(id)), "over http");
    let now = sdk(
        python,
        "http",
        "get_current_time",
        &serde_json::json!({"timezone": "UTC"}),
        &[&gateway(time_id)],
    );
    assert_eq!(now["server"], "mcp-time", "{now}");
    drop(serving);
}

/// Kills `mcp-orch serve` however the test ends.
struct Serving(std::process::Child);

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
