//! The Docker side of the benchmarks: our orchestrator and the baselines it is compared with
//! (raw bollard calls with the very same create body, the `docker` CLI with the same options),
//! on a network of the run's own, and the clean-up that proves nothing is left behind.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, HostConfigLogConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, InspectContainerOptions, ListContainersOptionsBuilder,
    RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
};
use futures::StreamExt;
use mcp_docker::container::build_container;
use mcp_docker::{DockerConfig, DockerOrchestrator};
use mcp_orchestrator_api::fixture::FixtureScript;
use mcp_types::{McpServer, Timestamp, new_instance_name};

/// How long the teardown waits for the engine to release the run network's endpoints.
const NETWORK_RELEASE: Duration = Duration::from_secs(30);

/// Label on everything a run creates, so that clean-up finds it all.
pub(crate) const RUN_LABEL: &str = "bench.mcpctl.io/run";
/// Server name of every benchmark instance.
pub(crate) const SERVER: &str = "bench";

/// One run's Docker setting: the orchestrator under test, a separate raw client (negotiated
/// the same way), the network both use and the test image.
pub(crate) struct DockerEnv {
    pub(crate) orchestrator: DockerOrchestrator,
    pub(crate) raw: Docker,
    pub(crate) network: String,
    pub(crate) run_id: String,
    pub(crate) image: String,
    pub(crate) engine_version: String,
    pub(crate) storage_driver: String,
}

impl DockerEnv {
    /// Connects (or returns `None` with the reason when the engine is absent and not
    /// required), builds the test image when missing and creates the run's network.
    pub(crate) async fn setup(run_id: &str, require: bool) -> Result<Option<Self>> {
        let raw = match connect_raw().await {
            Ok(raw) => raw,
            Err(e) if !require => {
                println!(
                    "docker: skipped, no engine ({e:#}); MCPCTL_REQUIRE_DOCKER=1 fails instead"
                );
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let image = mcp_test_server::ensure_docker_image(&raw, mcp_test_server::DEFAULT_IMAGE_TAG)
            .await
            .context("building the test image")?;
        let network = format!("mcpctl-bench-{run_id}");
        let orchestrator = DockerOrchestrator::connect(DockerConfig::with_network(&network))
            .await
            .context("connecting the Docker orchestrator")?;
        let version = raw.version().await.context("docker version")?;
        let info = raw.info().await.context("docker info")?;
        Ok(Some(Self {
            orchestrator,
            raw,
            network,
            run_id: run_id.to_owned(),
            image,
            engine_version: version.version.unwrap_or_default(),
            storage_driver: info.driver.unwrap_or_default(),
        }))
    }

    /// `bench.mcpctl.io/run=<run id>`.
    pub(crate) fn run_selector(&self) -> String {
        format!("{RUN_LABEL}={}", self.run_id)
    }

    /// A spec running `script` in the test image, labelled with the run.
    pub(crate) fn spec(&self, script: &FixtureScript) -> McpServer {
        let mut spec = McpServer::new(SERVER, &self.image);
        spec.args = script.to_args();
        spec.labels
            .insert(RUN_LABEL.to_owned(), self.run_id.clone());
        spec
    }

    /// The create body `start_server` would send for `spec`, under a fresh instance name.
    pub(crate) fn plan(&self, spec: &McpServer) -> Result<(String, ContainerCreateBody)> {
        let id = new_instance_name(SERVER);
        let plan = build_container(
            spec,
            &id,
            Timestamp::now(),
            &[],
            &self.network,
            &mcp_types::Egress::Open,
        )
        .context("building the container body")?;
        Ok((id, plan.body))
    }

    /// The engine's own cost: create + start with the body our backend builds.
    pub(crate) async fn raw_start(&self, id: &str, body: ContainerCreateBody) -> Result<()> {
        self.raw
            .create_container(
                Some(CreateContainerOptionsBuilder::new().name(id).build()),
                body,
            )
            .await
            .with_context(|| format!("raw create {id}"))?;
        self.raw
            .start_container(id, None)
            .await
            .with_context(|| format!("raw start {id}"))
    }

    /// Raw stop (with `grace`) and remove, as a client without our bookkeeping would.
    pub(crate) async fn raw_stop(&self, id: &str, grace: Duration) -> Result<()> {
        let t = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
        self.raw
            .stop_container(id, Some(StopContainerOptionsBuilder::new().t(t).build()))
            .await
            .with_context(|| format!("raw stop {id}"))?;
        self.raw
            .remove_container(
                id,
                Some(RemoveContainerOptionsBuilder::new().v(true).build()),
            )
            .await
            .with_context(|| format!("raw remove {id}"))
    }

    /// `docker run -d` with the options of `body` (see [`run_args`]); returns when the CLI
    /// exits, which is once the container has started.
    pub(crate) async fn cli_run(&self, id: &str, body: &ContainerCreateBody) -> Result<()> {
        let args = run_args(id, body);
        let out = tokio::process::Command::new("docker")
            .args(&args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running the docker CLI")?;
        if !out.status.success() {
            bail!(
                "docker {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// Runs `docker <args>` and returns its stdout.
    pub(crate) async fn cli_output(args: &[&str]) -> Result<String> {
        let out = tokio::process::Command::new("docker")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .await
            .context("running the docker CLI")?;
        if !out.status.success() {
            bail!(
                "docker {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Force-removes one container (not timed).
    pub(crate) async fn remove(&self, id: &str) -> Result<()> {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        match self.raw.remove_container(id, Some(options)).await {
            Ok(())
            | Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404, ..
            }) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("removing {id}")),
        }
    }

    /// Names of every container (running or not) carrying the run label.
    pub(crate) async fn leftovers(&self) -> Result<Vec<String>> {
        let filters = HashMap::from([("label", vec![self.run_selector()])]);
        let list = self
            .raw
            .list_containers(Some(
                ListContainersOptionsBuilder::new()
                    .all(true)
                    .filters(&filters)
                    .build(),
            ))
            .await
            .context("listing the run's containers")?;
        Ok(list
            .into_iter()
            .map(|c| {
                c.names
                    .and_then(|n| n.first().cloned())
                    .unwrap_or_else(|| c.id.unwrap_or_default())
            })
            .collect())
    }

    /// Fails when any container of the run is left (after a benchmark's own clean-up).
    pub(crate) async fn assert_clean(&self, bench: &str) -> Result<()> {
        let left = self.leftovers().await?;
        if !left.is_empty() {
            bail!(
                "{bench}: {} container(s) left behind: {}",
                left.len(),
                left.join(", ")
            );
        }
        Ok(())
    }

    /// Removes whatever the run left (after an error too) and the network; fails if a container
    /// survives. Returns a note when only the engine's bookkeeping kept the network (below).
    pub(crate) async fn teardown(&self) -> Result<Option<String>> {
        let left = self.leftovers().await?;
        futures::stream::iter(
            left.iter()
                .map(|name| self.remove(name.trim_start_matches('/'))),
        )
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>>>()?;
        self.assert_clean("teardown").await?;
        // The engine (20.10) releases a removed container's network endpoint asynchronously:
        // right after a burst of removals it may still refuse with "has active endpoints"
        // although no container is left (asserted just above).
        let deadline = tokio::time::Instant::now() + NETWORK_RELEASE;
        loop {
            match self.raw.remove_network(&self.network).await {
                Ok(())
                | Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return Ok(None),
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 403,
                    message,
                }) if message.contains("active endpoints") => {
                    if tokio::time::Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        continue;
                    }
                    // Seen once on this engine after a burst of starts and removals with runc
                    // errors in its log: an endpoint no container holds (the network lists no
                    // container, `docker network disconnect -f` does not find it), gone after
                    // a restart of dockerd. No container of the run is left (asserted above).
                    self.assert_clean("teardown").await?;
                    let note = format!(
                        "docker: the engine kept network {} with an endpoint no container holds \
                         (no container of the run is left; a restart of dockerd removes it)",
                        self.network
                    );
                    eprintln!("mcp-bench: warning: {note}");
                    return Ok(Some(note));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("removing network {}", self.network));
                }
            }
        }
    }

    /// Waits until the container has exited, returning its exit code.
    pub(crate) async fn wait_exited(&self, id: &str, timeout: Duration) -> Result<i64> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let info = self
                .raw
                .inspect_container(id, None::<InspectContainerOptions>)
                .await
                .with_context(|| format!("inspecting {id}"))?;
            let state = info.state.unwrap_or_default();
            if state.running != Some(true)
                && state
                    .status
                    .is_some_and(|s| s == bollard::models::ContainerStateStatusEnum::EXITED)
            {
                return Ok(state.exit_code.unwrap_or_default());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!("{id} still running after {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// A raw client as our backend makes one: the local socket, negotiated down to the engine.
async fn connect_raw() -> Result<Docker> {
    let docker = Docker::connect_with_socket_defaults().context("docker socket")?;
    tokio::time::timeout(Duration::from_secs(10), docker.negotiate_version())
        .await
        .context("the engine did not answer in 10 s")?
        .context("negotiating the API version")
}

/// A json-file log large enough to hold `bytes` of output without rotation (the engine's
/// default here rotates at 10 MB), so that every line can be read back.
pub(crate) fn unrotated_log(body: &mut ContainerCreateBody, bytes: u64) {
    let size_mb = (bytes * 3 / (1024 * 1024)).max(16);
    let host = body.host_config.get_or_insert_with(HostConfig::default);
    host.log_config = Some(HostConfigLogConfig {
        typ: Some("json-file".to_owned()),
        config: Some(HashMap::from([
            ("max-size".to_owned(), format!("{size_mb}m")),
            ("max-file".to_owned(), "1".to_owned()),
        ])),
    });
}

/// `docker run -d --name <id> ...` arguments carrying the options of `body` that our backend
/// sets (user, env, labels, hardening, resources, restart policy, network, ports, entry point).
pub(crate) fn run_args(id: &str, body: &ContainerCreateBody) -> Vec<String> {
    let mut a: Vec<String> = vec!["run".into(), "-d".into(), "--name".into(), id.into()];
    let mut flag = |name: &str, value: String| {
        a.push(format!("--{name}"));
        a.push(value);
    };
    if let Some(user) = &body.user {
        flag("user", user.clone());
    }
    if let Some(entrypoint) = body.entrypoint.as_ref().and_then(|e| e.first()) {
        flag("entrypoint", entrypoint.clone());
    }
    for env in body.env.iter().flatten() {
        flag("env", env.clone());
    }
    let mut labels: Vec<_> = body.labels.iter().flatten().collect();
    labels.sort();
    for (k, v) in labels {
        flag("label", format!("{k}={v}"));
    }
    if let Some(dir) = &body.working_dir {
        flag("workdir", dir.clone());
    }
    if let Some(h) = &body.host_config {
        host_args(h, &mut flag);
    }
    let mut tail: Vec<String> = Vec::new();
    if h_init(body) {
        a.push("--init".into());
    }
    if body
        .host_config
        .as_ref()
        .and_then(|h| h.readonly_rootfs)
        .unwrap_or(false)
    {
        a.push("--read-only".into());
    }
    tail.push(body.image.clone().unwrap_or_default());
    // With an entry point override, its remaining words come before the arguments.
    tail.extend(body.entrypoint.iter().flatten().skip(1).cloned());
    tail.extend(body.cmd.iter().flatten().cloned());
    a.extend(tail);
    a
}

fn h_init(body: &ContainerCreateBody) -> bool {
    body.host_config
        .as_ref()
        .and_then(|h| h.init)
        .unwrap_or(false)
}

fn host_args(h: &HostConfig, flag: &mut impl FnMut(&str, String)) {
    if let Some(m) = h.memory {
        flag("memory", m.to_string());
    }
    if let Some(m) = h.memory_reservation {
        flag("memory-reservation", m.to_string());
    }
    if let Some(n) = h.nano_cpus {
        // The CLI takes CPUs as a decimal; nano-CPUs are exact as a fraction of 1e9.
        #[allow(clippy::cast_precision_loss)]
        flag("cpus", format!("{}", n as f64 / 1e9));
    }
    if let Some(p) = h.pids_limit {
        flag("pids-limit", p.to_string());
    }
    let mut tmpfs: Vec<_> = h.tmpfs.iter().flatten().collect();
    tmpfs.sort();
    for (path, opts) in tmpfs {
        flag("tmpfs", format!("{path}:{opts}"));
    }
    for cap in h.cap_drop.iter().flatten() {
        flag("cap-drop", cap.clone());
    }
    for opt in h.security_opt.iter().flatten() {
        flag("security-opt", opt.clone());
    }
    for g in h.group_add.iter().flatten() {
        flag("group-add", g.clone());
    }
    if let Some(name) = h.restart_policy.as_ref().and_then(|r| r.name) {
        flag("restart", name.to_string());
    }
    if let Some(net) = &h.network_mode {
        flag("network", net.clone());
    }
    for (port, bindings) in h.port_bindings.iter().flatten() {
        for b in bindings.iter().flatten() {
            let ip = b.host_ip.clone().unwrap_or_default();
            let host_port = b.host_port.clone().unwrap_or_default();
            flag("publish", format!("{ip}:{host_port}:{port}"));
        }
    }
    for m in h.mounts.iter().flatten() {
        let mut spec = format!(
            "type=volume,source={},target={}",
            m.source.clone().unwrap_or_default(),
            m.target.clone().unwrap_or_default()
        );
        if m.read_only == Some(true) {
            spec.push_str(",readonly");
        }
        flag("mount", spec);
    }
    if let Some(log) = &h.log_config {
        if let Some(t) = &log.typ {
            flag("log-driver", t.clone());
        }
        let mut opts: Vec<_> = log.config.iter().flatten().collect();
        opts.sort();
        for (k, v) in opts {
            flag("log-opt", format!("{k}={v}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_arguments_carry_the_backend_options() {
        let mut spec = McpServer::new(SERVER, "img:1");
        spec.args = FixtureScript::new().stdout("hi").to_args();
        spec.labels.insert(RUN_LABEL.to_owned(), "r1".to_owned());
        let plan = build_container(
            &spec,
            "mcp-bench-x",
            Timestamp::now(),
            &[],
            "net1",
            &mcp_types::Egress::Open,
        )
        .unwrap();
        let args = run_args("mcp-bench-x", &plan.body);
        let joined = args.join(" ");
        for want in [
            "run -d --name mcp-bench-x",
            "--user 1000:1000",
            "--label bench.mcpctl.io/run=r1",
            "--label mcpctl.io/managed=true",
            "--pids-limit 256",
            "--tmpfs /tmp:rw,nosuid,nodev,mode=1777",
            "--cap-drop ALL",
            "--security-opt no-new-privileges",
            "--restart always",
            "--network net1",
            "--init",
            "--read-only",
        ] {
            assert!(joined.contains(want), "{want:?} not in {joined}");
        }
        assert!(joined.ends_with("img:1 fixture --stdout hi"), "{joined}");
    }

    #[test]
    fn unrotated_log_is_larger_than_the_output() {
        let mut body = ContainerCreateBody::default();
        unrotated_log(&mut body, 100 * 1024 * 1024);
        let log = body.host_config.unwrap().log_config.unwrap();
        assert_eq!(log.config.unwrap()["max-size"], "300m");
    }
}
