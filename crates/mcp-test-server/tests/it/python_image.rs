//! The image of a real third-party stdio MCP server from PyPI (`mcp-server-time`): built once per
//! machine from a debootstrapped Debian userland, reused by content hash (also by concurrent
//! callers), and serving MCP over an attached stdin/stdout in a container hardened like the
//! Docker backend's (uid 1000, read-only root, tmpfs `/tmp`, no capabilities,
//! `no-new-privileges`). Skips with a reason when no engine answers, unless
//! `MCPCTL_REQUIRE_DOCKER=1`.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    AttachContainerOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use mcp_test_server::{
    PYTHON_IMAGE_HASH_LABEL, TEST_IMAGE_LABEL, TIME_SERVER_COMMAND, TIME_SERVER_PACKAGE,
    build_python_server_image, ensure_time_server_image, pinned_requirement, python_image_hash,
};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::docker::docker_or_skip;

/// Longest wait for one answer of the Python server (its start included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Removes the container when dropped, also when the test panics. Drop cannot await, so it
/// uses its own engine client on its own thread and runtime.
struct RemoveOnDrop(String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let id = self.0.clone();
        let removed = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime.block_on(async {
                let docker = Docker::connect_with_local_defaults().map_err(|e| e.to_string())?;
                let force = RemoveContainerOptionsBuilder::default().force(true).build();
                docker
                    .remove_container(&id, Some(force))
                    .await
                    .map_err(|e| e.to_string())
            })
        })
        .join();
        if !matches!(removed, Ok(Ok(()))) {
            eprintln!("could not remove container {}: {removed:?}", self.0);
        }
    }
}

/// The server's side of the conversation: newline-delimited JSON-RPC over the attach stream.
struct Session {
    output: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<LogOutput, bollard::errors::Error>> + Send>,
    >,
    input: std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
    pending: String,
    stderr: String,
}

impl Session {
    async fn send(&mut self, message: &Value) {
        let mut line = message.to_string();
        line.push('\n');
        self.input.write_all(line.as_bytes()).await.unwrap();
        self.input.flush().await.unwrap();
    }

    /// The next JSON-RPC message on stdout that answers request `id`.
    async fn answer(&mut self, id: u64) -> Value {
        let deadline = Instant::now() + ANSWER_TIMEOUT;
        loop {
            while let Some(end) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=end).collect();
                let message: Value = serde_json::from_str(line.trim())
                    .unwrap_or_else(|e| panic!("stdout line {line:?} is not JSON: {e}"));
                if message["id"] == json!(id) {
                    return message;
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = tokio::time::timeout(left, self.output.next())
                .await
                .unwrap_or_else(|_| {
                    panic!("no answer to request {id} in time; stderr: {}", self.stderr)
                });
            match chunk {
                Some(Ok(LogOutput::StdOut { message })) => {
                    self.pending.push_str(&String::from_utf8_lossy(&message));
                }
                Some(Ok(LogOutput::StdErr { message })) => {
                    self.stderr.push_str(&String::from_utf8_lossy(&message));
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("attach stream: {e}; stderr: {}", self.stderr),
                None => panic!(
                    "the server closed stdout before answering {id}; stderr: {}",
                    self.stderr
                ),
            }
        }
    }

    async fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .await;
        let answer = self.answer(id).await;
        assert!(
            answer.get("error").is_none(),
            "{method} failed: {answer}; stderr: {}",
            self.stderr
        );
        answer["result"].clone()
    }
}

/// Seconds since the epoch of `YYYY-MM-DDTHH:MM:SS` read as UTC (days from civil, H. Hinnant).
fn epoch_seconds(datetime: &str) -> i64 {
    let num = |range: std::ops::Range<usize>| -> i64 {
        datetime
            .get(range)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("not an ISO date-time: {datetime:?}"))
    };
    let (y, m, d) = (num(0..4), num(5..7), num(8..10));
    let (hh, mm, ss) = (num(11..13), num(14..16), num(17..19));
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + hh * 3600 + mm * 60 + ss
}

/// Checks a `get_current_time` result: the zone, the UTC offset, and a wall-clock time that is
/// now (within five minutes) once the offset is taken off.
fn check_current_time(result: &Value, zone: &str, offset: &str, offset_seconds: i64) {
    assert_ne!(result["isError"], json!(true), "{result}");
    let time: Value = match result.get("structuredContent") {
        Some(structured) if structured.is_object() => structured.clone(),
        _ => serde_json::from_str(result["content"][0]["text"].as_str().unwrap())
            .unwrap_or_else(|e| panic!("tool result is not JSON: {e}: {result}")),
    };
    assert_eq!(time["timezone"], json!(zone), "{result}");
    let datetime = time["datetime"].as_str().unwrap();
    assert!(datetime.ends_with(offset), "{datetime} not at {offset}");
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let skew = epoch_seconds(datetime) - offset_seconds - now;
    assert!(skew.abs() < 300, "{datetime} is {skew} s away from now");
}

#[test]
fn epoch_seconds_of_known_dates() {
    assert_eq!(epoch_seconds("1970-01-01T00:00:00+00:00"), 0);
    assert_eq!(epoch_seconds("2000-03-01T00:00:01"), 951_868_801);
    assert_eq!(epoch_seconds("2024-02-29T23:59:59"), 1_709_251_199);
}

/// The image's configuration: user, entry point, default arguments, environment, labels.
async fn check_image_config(docker: &Docker, tag: &str, requirement: &str) {
    let image = docker.inspect_image(tag).await.unwrap();
    let config = image.config.unwrap();
    assert_eq!(config.user.as_deref(), Some("1000:1000"));
    assert_eq!(
        config.entrypoint,
        Some(vec!["/opt/mcp-venv/bin/mcp-server-time".to_owned()])
    );
    assert_eq!(
        config.cmd,
        Some(vec!["--local-timezone".to_owned(), "UTC".to_owned()])
    );
    let env = config.env.unwrap_or_default();
    for wanted in ["PYTHONDONTWRITEBYTECODE=1", "HOME=/tmp"] {
        assert!(env.iter().any(|e| e == wanted), "{wanted} not in {env:?}");
    }
    let labels = config.labels.unwrap_or_default();
    assert_eq!(
        labels.get(TEST_IMAGE_LABEL).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        labels.get(PYTHON_IMAGE_HASH_LABEL),
        Some(&python_image_hash(requirement, TIME_SERVER_COMMAND))
    );
    let size_mb = image.size.unwrap_or_default() / 1_000_000;
    eprintln!("{tag}: {size_mb} MB");
}

/// Hardened like the Docker backend's containers, with stdin open for the stdio transport.
fn hardened_stdio_container(tag: &str) -> ContainerCreateBody {
    ContainerCreateBody {
        image: Some(tag.to_owned()),
        user: Some("1000:1000".to_owned()),
        labels: Some(HashMap::from([(
            TEST_IMAGE_LABEL.to_owned(),
            "run".to_owned(),
        )])),
        tty: Some(false),
        open_stdin: Some(true),
        stdin_once: Some(false),
        attach_stdin: Some(true),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        host_config: Some(HostConfig {
            readonly_rootfs: Some(true),
            tmpfs: Some(HashMap::from([(
                "/tmp".to_owned(),
                "rw,nosuid,nodev,mode=1777".to_owned(),
            )])),
            cap_drop: Some(vec!["ALL".to_owned()]),
            security_opt: Some(vec!["no-new-privileges".to_owned()]),
            pids_limit: Some(256),
            privileged: Some(false),
            init: Some(true),
            network_mode: Some("none".to_owned()),
            ..HostConfig::default()
        }),
        ..ContainerCreateBody::default()
    }
}

/// The MCP conversation: initialize, initialized, tools/list, and calls of `get_current_time`.
async fn converse(session: &mut Session, requirement: &str) {
    let started = Instant::now();
    let init = session
        .request(
            1,
            "initialize",
            json!({
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "mcp-test-server-it", "version": "0"}
            }),
        )
        .await;
    eprintln!("initialize answered {:.1?} after start", started.elapsed());
    assert_eq!(init["serverInfo"]["name"], json!("mcp-time"), "{init}");
    let version = requirement.split("==").nth(1).unwrap();
    assert_eq!(init["serverInfo"]["version"], json!(version), "{init}");
    assert!(init["protocolVersion"].is_string(), "{init}");
    assert!(init["capabilities"]["tools"].is_object(), "{init}");
    session
        .send(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        .await;

    let tools = session.request(2, "tools/list", json!({})).await;
    let mut names: Vec<&str> = tools["tools"]
        .as_array()
        .unwrap_or_else(|| panic!("{tools}"))
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["convert_time", "get_current_time"]);

    let utc = session
        .request(
            3,
            "tools/call",
            json!({"name": "get_current_time", "arguments": {"timezone": "UTC"}}),
        )
        .await;
    check_current_time(&utc, "UTC", "+00:00", 0);
    // A zone from the tz database (the `tzdata` wheel): the image has one.
    let tokyo = session
        .request(
            4,
            "tools/call",
            json!({"name": "get_current_time", "arguments": {"timezone": "Asia/Tokyo"}}),
        )
        .await;
    check_current_time(&tokyo, "Asia/Tokyo", "+09:00", 9 * 3600);
}

#[tokio::test]
async fn time_server_image_builds_once_and_serves_mcp_over_attached_stdio() {
    let Some(docker) = docker_or_skip().await else {
        return;
    };
    let requirement = pinned_requirement(TIME_SERVER_PACKAGE).unwrap();

    // Two callers at once (the process cache bypassed by one): one builds, the other waits on
    // the lock and finds the image.
    let started = Instant::now();
    let (first, second) = tokio::join!(
        ensure_time_server_image(&docker),
        build_python_server_image(&docker, requirement, TIME_SERVER_COMMAND),
    );
    let tag = first.unwrap();
    assert_eq!(second.unwrap(), tag);
    eprintln!("{tag} ready in {:.1?}", started.elapsed());

    // Built: the next call only looks the tag up.
    let started = Instant::now();
    assert_eq!(
        build_python_server_image(&docker, requirement, TIME_SERVER_COMMAND)
            .await
            .unwrap(),
        tag
    );
    let reuse = started.elapsed();
    eprintln!("{tag} reused in {reuse:.1?}");
    assert!(reuse < Duration::from_secs(2), "reuse took {reuse:?}");

    check_image_config(&docker, &tag, requirement).await;

    let body = hardened_stdio_container(&tag);
    let id = docker.create_container(None, body).await.unwrap().id;
    let _remove = RemoveOnDrop(id.clone());
    let attach = AttachContainerOptionsBuilder::default()
        .stdin(true)
        .stdout(true)
        .stderr(true)
        .stream(true)
        .build();
    let attached = docker.attach_container(&id, Some(attach)).await.unwrap();
    docker.start_container(&id, None).await.unwrap();
    let mut session = Session {
        output: attached.output,
        input: attached.input,
        pending: String::new(),
        stderr: String::new(),
    };

    converse(&mut session, requirement).await;

    // With `StdinOnce=false` stdin stays open after the client leaves (so that clients can
    // attach again), so the server ends on SIGTERM, which it must not ignore: PID 1 is
    // docker-init, which forwards it.
    let stopping = Instant::now();
    let stop = StopContainerOptionsBuilder::default().t(10).build();
    docker.stop_container(&id, Some(stop)).await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stop took {:?}; stderr: {}",
        stopping.elapsed(),
        session.stderr
    );
    let state = docker
        .inspect_container(&id, None)
        .await
        .unwrap()
        .state
        .unwrap();
    assert_eq!(state.running, Some(false));
    assert_eq!(state.oom_killed, Some(false));
}
