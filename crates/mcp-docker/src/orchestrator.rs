//! `DockerOrchestrator`: connecting to the engine, creating, starting, stopping and listing
//! containers, and the `McpOrchestrator` operations, with images (`image`), the network
//! (`network`), volumes (`volume`), logs (`logs`) and the state mapping (`status`) delegated.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerInspectResponse, ContainerUpdateBody, NetworkDisconnectRequest, RestartPolicy,
    RestartPolicyNameEnum,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use bollard::{API_DEFAULT_VERSION, Docker};
use futures::StreamExt;
use garde::Validate;
use mcp_orchestrator_api::connect::{self, McpChannel, StdioClaims};
use mcp_orchestrator_api::continuation::{page_after, parse_after_token};
use mcp_orchestrator_api::secrets::{
    DirSecretResolver, NoSecrets, SecretResolver, resolve_env, resolve_secret_files,
};
use mcp_orchestrator_api::{InstanceEvents, LogLines, McpOrchestrator, OrchestratorError, Result};
use mcp_types::{
    GcReport, Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer, Page,
    PersistentVolume, Requirement, StartOptions, Timestamp, Transport, labels, new_instance_name,
};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::config::{CONNECT_TIMEOUT, DockerConfig, REQUEST_TIMEOUT};
use crate::container::{build_container, pin_host_port};
use crate::error::{BACKEND, Target, map_error};
use crate::image::ensure_image;
use crate::listing::{Listed, listed};
use crate::logs::read_logs;
use crate::network::ensure_network;
use crate::status::instance_from_inspect;
use crate::volume::{give_volumes_to_user, list_persistent, remove_persistent, remove_volumes};

/// Extra time a stop request may take beyond the grace period (kill, engine bookkeeping).
const STOP_SLACK: Duration = Duration::from_secs(30);
/// How long `stop_server` waits for a removed container to disappear.
const GONE_TIMEOUT: Duration = Duration::from_secs(30);
/// Concurrent inspects while listing (only containers the listing cannot answer for).
const LIST_CONCURRENCY: usize = 8;

/// Runs MCP servers as Docker containers.
///
/// Every container, and every volume it gets, carries `mcpctl.io/managed=true` and the
/// instance labels; only such containers are ever inspected, listed, read or stopped.
/// Volumes are removed with their instance on stop, as the Kubernetes backend removes its
/// PersistentVolumeClaims. Cloning shares the engine connection.
///
/// Docker specifics:
/// - the spec's annotations become container labels (Docker has no annotations), so they show
///   in [`Instance::labels`] and label selectors see them; the spec's labels win on a clash;
/// - a volume's `size`, `storageClass` and `accessModes` have no Docker equivalent and are
///   ignored; a new named volume is owned by root unless the image already has the mount
///   path (Docker then copies it, with its owner, into the empty volume), and `fsGroup` is
///   only added as a supplementary group;
/// - `secretFiles` are bound read-only at their paths from a per-instance volume filled before
///   the start (see [`crate::secret_files`]): no value is in the container's configuration;
///   `secretRef` env values are (Docker has no secret store for plain containers);
/// - egress (`crate::egress`): `none` is a container without a network (stdio) or on an
///   internal network of its own (HTTP); allow-lists add an internal network whose only way
///   out is an egress proxy container; `open` (the default unless
///   [`DockerConfig::default_egress`] says `none`) cannot block the metadata ranges without
///   host firewall rules, which the reported posture says;
/// - an HTTP server behind an egress policy is served on its container address (the engine
///   publishes no ports on internal networks; the engine's host reaches the address);
/// - `gpu.product` cannot be chosen on one host and is ignored (the count is requested);
/// - logs are one stream across restarts, so `previous` is refused with `InvalidArgument`.
#[derive(Clone)]
pub struct DockerOrchestrator {
    docker: Docker,
    config: DockerConfig,
    endpoint: String,
    network_id: String,
    secrets: std::sync::Arc<dyn SecretResolver>,
    claims: StdioClaims,
}

impl fmt::Debug for DockerOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DockerOrchestrator")
            .field("endpoint", &self.endpoint)
            .field("network", &self.config.network)
            .field("network_id", &self.network_id)
            .field("secrets", &self.secrets)
            .finish_non_exhaustive()
    }
}

impl DockerOrchestrator {
    /// Connects to the engine, negotiates the API version (older engines speak an older
    /// one than bollard's default), and creates the network unless it exists.
    ///
    /// # Errors
    /// - [`InvalidArgument`](OrchestratorError::InvalidArgument) for an invalid config.
    /// - [`Unavailable`](OrchestratorError::Unavailable) naming the socket path or host when
    ///   the engine cannot be reached within a few seconds.
    /// - [`PermissionDenied`](OrchestratorError::PermissionDenied) when the engine refuses.
    pub async fn connect(config: DockerConfig) -> Result<Self> {
        config
            .validate()
            .map_err(|e| OrchestratorError::InvalidArgument {
                what: "docker config",
                message: e.to_string(),
            })?;
        let endpoint = config.endpoint();
        let secs = REQUEST_TIMEOUT.as_secs();
        let docker =
            if let Some(host) = &config.host {
                Docker::connect_with_http(
                    &format!("http://{host}:{}", config.port.unwrap_or(2375)),
                    secs,
                    API_DEFAULT_VERSION,
                )
            } else {
                let path = config.socket_path.to_str().ok_or_else(|| {
                    OrchestratorError::InvalidArgument {
                        what: "docker config",
                        message: format!(
                            "socketPath {} is not valid UTF-8",
                            config.socket_path.display()
                        ),
                    }
                })?;
                Docker::connect_with_socket(path, secs, API_DEFAULT_VERSION)
            }
            .map_err(|e| map_error(e, Target::Engine, &endpoint))?;
        let unanswered = || {
            OrchestratorError::unavailable(
                BACKEND,
                format!(
                    "the Docker engine at {endpoint} did not answer within {CONNECT_TIMEOUT:?}"
                ),
                None,
            )
        };
        let docker = tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version())
            .await
            .map_err(|_| unanswered())?
            .map_err(|e| map_error(e, Target::Engine, &endpoint))?;
        let network_id = tokio::time::timeout(
            CONNECT_TIMEOUT,
            ensure_network(&docker, &config.network, &endpoint),
        )
        .await
        .map_err(|_| unanswered())??;
        let secrets: std::sync::Arc<dyn SecretResolver> = match &config.secrets_dir {
            Some(dir) => std::sync::Arc::new(DirSecretResolver::new(dir)),
            None => std::sync::Arc::new(NoSecrets),
        };
        debug!(%endpoint, network = %config.network, "connected to the Docker engine");
        Ok(Self {
            docker,
            config,
            endpoint,
            network_id,
            secrets,
            claims: StdioClaims::new(BACKEND),
        })
    }

    /// The bollard client, for callers that need engine calls this crate does not wrap.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    /// The configuration this orchestrator was connected with.
    pub fn config(&self) -> &DockerConfig {
        &self.config
    }

    /// Where the engine is (`unix:///var/run/docker.sock`, `tcp://host:2375`).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The id of the network instances join.
    pub fn network_id(&self) -> &str {
        &self.network_id
    }

    fn err(&self, target: Target<'_>) -> impl FnOnce(bollard::errors::Error) -> OrchestratorError {
        let endpoint = self.endpoint.clone();
        let target = match target {
            Target::Engine => Owned::Engine,
            Target::Container(s) => Owned::Container(s.to_owned()),
            Target::Image(s) => Owned::Image(s.to_owned()),
            Target::Network(s) => Owned::Network(s.to_owned()),
            Target::Volume(s) => Owned::Volume(s.to_owned()),
        };
        move |e| map_error(e, target.as_target(), &endpoint)
    }

    /// Inspects a container that must be managed and named exactly `id`; anything else is
    /// `NotFound` (the engine would also resolve id prefixes and unmanaged containers).
    async fn inspect_managed(&self, id: &InstanceId) -> Result<ContainerInspectResponse> {
        if mcp_types::names::check_dns1123_label(id.as_str()).is_err() {
            return Err(OrchestratorError::not_found(id.as_str()));
        }
        let info = self
            .docker
            .inspect_container(id.as_str(), None)
            .await
            .map_err(self.err(Target::Container(id.as_str())))?;
        let managed = info
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(labels::MANAGED))
            .is_some_and(|v| v == "true");
        let named = info
            .name
            .as_deref()
            .is_some_and(|n| n.trim_start_matches('/') == id.as_str());
        if managed && named {
            Ok(info)
        } else {
            Err(OrchestratorError::not_found(id.as_str()))
        }
    }

    /// One managed instance with its status and endpoint.
    ///
    /// # Errors
    /// [`NotFound`](OrchestratorError::NotFound) for an unknown or unmanaged id;
    /// [`Unavailable`](OrchestratorError::Unavailable) when the engine is unreachable.
    pub async fn instance(&self, id: &InstanceId) -> Result<Instance> {
        let info = self.inspect_managed(id).await?;
        Ok(instance_from_inspect(id, &info))
    }
}

impl crate::watch::Source for DockerOrchestrator {
    fn client(&self) -> &Docker {
        &self.docker
    }

    fn engine(&self) -> &str {
        &self.endpoint
    }

    async fn inspected(&self, id: &InstanceId) -> Result<Instance> {
        self.instance(id).await
    }
}

impl DockerOrchestrator {
    /// Removes a container that never became a running instance, and its volumes.
    async fn discard(&self, instance: &str) {
        let options = RemoveContainerOptionsBuilder::new()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(instance, Some(options)).await {
            let e = self.err(Target::Container(instance))(e);
            if !e.is_not_found() {
                warn!(%instance, error = %e, "could not remove a container that failed to start");
            }
        }
        if let Err(e) = remove_volumes(&self.docker, instance, &self.endpoint).await {
            warn!(%instance, error = %e, "could not remove the volumes of a failed start");
        }
        if let Err(e) = crate::companions::remove(&self.docker, instance, &self.endpoint).await {
            warn!(%instance, error = %e, "could not remove the egress companions of a failed start");
        }
    }

    async fn start_inner(&self, spec: &McpServer, id: &str) -> Result<()> {
        let env = resolve_env(&spec.env, self.secrets.as_ref())?;
        let secret_values = resolve_secret_files(&spec.secret_files, self.secrets.as_ref())?;
        let mut plan = build_container(
            spec,
            id,
            Timestamp::now(),
            &env,
            &self.config.network,
            &self.config.default_egress,
        )?;
        if spec.transport.is_http() && plan.egress.publishes_ports() {
            pin_host_port(&mut plan, free_loopback_port()?);
        }
        let image = spec.image.as_deref().unwrap_or_default();
        ensure_image(&self.docker, image, &self.endpoint).await?;
        for volume in &plan.volumes {
            let name = volume.name.clone().unwrap_or_default();
            if let Err(e) = self.docker.create_volume(volume.clone()).await {
                self.discard(id).await;
                return Err(self.err(Target::Volume(&name))(e));
            }
        }
        if let Err(e) =
            give_volumes_to_user(&self.docker, id, image, &plan.owned_mounts, &self.endpoint).await
        {
            self.discard(id).await;
            return Err(e);
        }
        if !spec.secret_files.is_empty() {
            let sc = spec.security_context.clone().unwrap_or_default();
            let owner = (
                u64::try_from(sc.uid()).unwrap_or_default(),
                u64::try_from(sc.gid()).unwrap_or_default(),
            );
            let filled = crate::secret_files::fill(
                &self.docker,
                id,
                image,
                spec,
                &secret_values,
                owner,
                &self.endpoint,
            )
            .await;
            match (filled, plan.body.host_config.as_mut()) {
                (Ok(binds), Some(hc)) => hc.mounts.get_or_insert_with(Vec::new).extend(binds),
                (Ok(_), None) => {}
                (Err(e), _) => {
                    self.discard(id).await;
                    return Err(e);
                }
            }
        }
        // The network and the proxy exist before the server: it never runs without its policy.
        if let Err(e) = crate::companions::create(
            &self.docker,
            &self.config,
            &self.endpoint,
            &plan,
            &spec.name,
        )
        .await
        {
            self.discard(id).await;
            return Err(e);
        }
        if let Err(e) = self.create_and_start(id, image, plan.body).await {
            self.discard(id).await;
            return Err(e);
        }
        Ok(())
    }

    /// Creates and starts the container. The engine answers 404 when the image (at create) or
    /// the network (at start, on older engines) is missing: the image is checked again, a
    /// network removed since `connect` is created again, and the container is tried once more.
    async fn create_and_start(
        &self,
        id: &str,
        image: &str,
        body: bollard::models::ContainerCreateBody,
    ) -> Result<()> {
        let attempt = |body| async move {
            let options = CreateContainerOptionsBuilder::new().name(id).build();
            self.docker
                .create_container(Some(options), body)
                .await
                .map_err(self.err(Target::Container(id)))?;

            self.docker
                .start_container(id, None)
                .await
                .map_err(self.err(Target::Container(id)))
        };
        match attempt(body.clone()).await {
            Err(OrchestratorError::NotFound { .. }) => {}
            other => return other,
        }
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self
            .docker
            .remove_container(id, Some(options))
            .await
            .map_err(self.err(Target::Container(id)))
        {
            Ok(()) | Err(OrchestratorError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        ensure_image(&self.docker, image, &self.endpoint).await?;
        ensure_network(&self.docker, &self.config.network, &self.endpoint).await?;
        attempt(body).await.map_err(|e| match e {
            OrchestratorError::NotFound { .. } => OrchestratorError::backend(
                BACKEND,
                format!(
                    "starting container {id}: the engine reports its image {image:?} or \
                     network {:?} missing, yet both exist",
                    self.config.network
                ),
            ),
            other => other,
        })
    }

    /// Waits until the engine no longer knows `id`.
    async fn wait_gone(&self, id: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + GONE_TIMEOUT;
        loop {
            match self.docker.inspect_container(id, None).await {
                Err(e) => match self.err(Target::Container(id))(e) {
                    OrchestratorError::NotFound { .. } => return Ok(()),
                    other => return Err(other),
                },
                Ok(_) if tokio::time::Instant::now() >= deadline => {
                    return Err(OrchestratorError::Timeout {
                        what: format!("container {id} to be removed"),
                        after: GONE_TIMEOUT,
                    });
                }
                Ok(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }
}

/// A loopback port nothing listens on now, chosen by the OS: an HTTP transport is published on
/// it for the container's whole life, so its URL stays the same across engine restarts.
fn free_loopback_port() -> Result<u16> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| {
            OrchestratorError::unavailable(
                BACKEND,
                format!("no free loopback port to publish the server on: {e}"),
                None,
            )
        })
}

/// Owned copy of a [`Target`] for error closures.
enum Owned {
    Engine,
    Container(String),
    Image(String),
    Network(String),
    Volume(String),
}

impl Owned {
    fn as_target(&self) -> Target<'_> {
        match self {
            Self::Engine => Target::Engine,
            Self::Container(s) => Target::Container(s),
            Self::Image(s) => Target::Image(s),
            Self::Network(s) => Target::Network(s),
            Self::Volume(s) => Target::Volume(s),
        }
    }
}

#[async_trait]
impl McpOrchestrator for DockerOrchestrator {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId> {
        let spec = options.apply(spec)?;
        let id = new_instance_name(&spec.name);
        let span = info_span!(
            "docker.start",
            instance = %id,
            server = %spec.name,
            image = spec.image.as_deref().unwrap_or_default()
        );
        async {
            self.start_inner(&spec, &id).await?;
            info!("started");
            Ok(InstanceId::new(id.clone()))
        }
        .instrument(span)
        .await
    }

    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        let span = info_span!("docker.stop", instance = %id, ?grace);
        async {
            let info = self.inspect_managed(id).await?;
            // A container the engine may restart is first told not to: removing one that is
            // between restarts can leave its network endpoint behind in the engine (the network
            // then cannot be removed), and a restart racing the stop would start it again.
            let restarts = info
                .host_config
                .as_ref()
                .and_then(|h| h.restart_policy.as_ref())
                .and_then(|p| p.name)
                .is_some_and(|n| !matches!(n, RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY));
            if restarts {
                let never = ContainerUpdateBody {
                    restart_policy: Some(RestartPolicy {
                        name: Some(RestartPolicyNameEnum::NO),
                        maximum_retry_count: None,
                    }),
                    ..ContainerUpdateBody::default()
                };
                match self
                    .docker
                    .update_container(id.as_str(), never)
                    .await
                    .map_err(self.err(Target::Container(id.as_str())))
                {
                    Ok(()) | Err(OrchestratorError::NotFound { .. }) => {}
                    Err(e) => warn!(instance = %id, error = %e, "could not turn off restarts before the stop"),
                }
            }
            let secs = i32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0))
                .unwrap_or(i32::MAX);
            let stopper = self.docker.clone().with_timeout(grace + STOP_SLACK);
            stopper
                .stop_container(
                    id.as_str(),
                    Some(StopContainerOptionsBuilder::new().t(secs).build()),
                )
                .await
                .map_err(self.err(Target::Container(id.as_str())))?;
            let options = RemoveContainerOptionsBuilder::new()
                .force(true)
                .v(true)
                .build();
            match self
                .docker
                .remove_container(id.as_str(), Some(options))
                .await
                .map_err(self.err(Target::Container(id.as_str())))
            {
                // Gone already, or another remover is at it: wait for it either way.
                Ok(())
                | Err(
                    OrchestratorError::NotFound { .. } | OrchestratorError::AlreadyExists { .. },
                ) => {}
                Err(e) => return Err(e),
            }
            self.wait_gone(id.as_str()).await?;
            // Under load the engine can keep a removed container's endpoint on the network
            // (the network then refuses removal, and the name can clash later): drop it. When
            // nothing is left, as usual, the engine answers that the container is not connected.
            let _ = self
                .docker
                .disconnect_network(
                    &self.config.network,
                    NetworkDisconnectRequest {
                        container: id.as_str().to_owned(),
                        force: Some(true),
                    },
                )
                .await;
            crate::attach::forget(id);
            remove_volumes(&self.docker, id.as_str(), &self.endpoint).await?;
            crate::companions::remove(&self.docker, id.as_str(), &self.endpoint).await?;
            info!("stopped and removed");
            Ok(())
        }
        .instrument(span)
        .await
    }

    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let info = self.inspect_managed(id).await?;
        Ok(instance_from_inspect(id, &info).status)
    }

    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        self.inspect_managed(id).await?;
        if options.previous {
            return Err(OrchestratorError::InvalidArgument {
                what: "previous",
                message: "the docker backend keeps one log across restarts; read it without \
                          `previous` (use `since` to see only the current run)"
                    .into(),
            });
        }
        read_logs(&self.docker, id.as_str(), options, &self.endpoint).await
    }

    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let info = self.inspect_managed(id).await?;
        let instance = instance_from_inspect(id, &info);
        if instance.status.phase != mcp_types::Phase::Running {
            return Err(connect::not_running(BACKEND, id, instance.status.phase));
        }
        let transport = instance
            .labels
            .get(labels::TRANSPORT)
            .and_then(|t| Transport::parse(t))
            .unwrap_or_default();
        let target = crate::attach::Target {
            id,
            transport,
            endpoint: instance.endpoint.as_deref(),
        };
        crate::attach::connect(
            &self.docker,
            &self.claims,
            target,
            self.err(Target::Container(id.as_str())),
        )
        .await
    }

    /// The engine's events API (filtered to managed containers) plus an inspect per event,
    /// resuming with `since` and a resync after the stream breaks; see `watch.rs`.
    async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
        mcp_orchestrator_api::validate_watch_filters(filters)?;
        crate::watch::watch(self.clone(), filters).await
    }

    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        mcp_orchestrator_api::validate_filters(filters)?;
        let after = filters
            .continue_token
            .as_deref()
            .map(parse_after_token)
            .transpose()?;
        let mut label_filters = vec![format!("{}=true", labels::MANAGED)];
        if let Some(server) = &filters.server {
            label_filters.push(format!("{}={server}", labels::SERVER));
        }
        // The engine narrows by the requirements it can express; `matches` decides below.
        if let Some(selector) = &filters.label_selector {
            label_filters.extend(selector.requirements().iter().filter_map(|r| match r {
                Requirement::Equals(k, v) => Some(format!("{k}={v}")),
                Requirement::Exists(k) => Some(k.clone()),
                _ => None,
            }));
        }
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&HashMap::from([("label", label_filters)]))
            .build();
        let summaries = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(self.err(Target::Engine))?;
        // Server, labels and (for live containers) the status come from the listing; the
        // phase filter runs on the listed status, except for the rows only an inspect can
        // answer (`listing`), which are inspected through a sliding window.
        let without_phase = InstanceFilters {
            phase: None,
            ..filters.clone()
        };
        let mut candidates: Vec<Listed> = summaries
            .iter()
            .filter_map(listed)
            .filter(|l| after.as_deref().is_none_or(|a| l.instance.id.as_str() > a))
            .filter(|l| without_phase.matches(&l.instance))
            .filter(|l| l.needs_inspect || filters.matches(&l.instance))
            .collect();
        candidates.sort_by(|a, b| a.instance.id.cmp(&b.instance.id));
        let want = filters.limit.map_or(usize::MAX, |l| {
            usize::try_from(l).unwrap_or(usize::MAX).saturating_add(1)
        });
        // In id order, resolving inspects `LIST_CONCURRENCY` at a time, until a page is full.
        let mut resolved = futures::stream::iter(candidates)
            .map(|l| async move {
                if l.needs_inspect {
                    self.instance(&l.instance.id).await
                } else {
                    Ok(l.instance)
                }
            })
            .buffered(LIST_CONCURRENCY);
        let mut items = Vec::new();
        while items.len() < want
            && let Some(r) = resolved.next().await
        {
            match r {
                Ok(i) if filters.matches(&i) => items.push(i),
                // Removed or changed since the listing.
                Ok(_) | Err(OrchestratorError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        items.truncate(want);
        Ok(page_after(items, after.as_deref(), filters.limit))
    }

    async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
        list_persistent(&self.docker, server, &self.endpoint).await
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        remove_persistent(&self.docker, name, &self.endpoint).await
    }

    async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        crate::gc::collect(&self.docker, &self.config.network, &self.endpoint, dry_run).await
    }
}
