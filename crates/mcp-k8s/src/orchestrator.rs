//! `KubernetesOrchestrator`: construction, and the `McpOrchestrator` operations that read
//! (status, logs, list). Starting and stopping live in `lifecycle`.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, ListParams};
use mcp_orchestrator_api::connect::{self, HttpEndpoint, McpChannel, StdioChannel, StdioClaims};
use mcp_orchestrator_api::{InstanceEvents, LogLines, McpOrchestrator, OrchestratorError, Result};
use mcp_types::names::check_label_value;
use mcp_types::{
    GcReport, Instance, InstanceFilters, InstanceId, InstanceStatus, K8sConfig, LogOptions,
    McpServer, Page, PersistentVolume, StartOptions, labels,
};

use crate::error::{BACKEND, Target, idempotent};
use crate::listing::PodPage;
use crate::status::{has_previous_run, has_run, instance_status, is_managed, pod_instance};
use crate::{config, lifecycle, logs};

/// Runs MCP servers as pods in one namespace.
///
/// Each instance is a pod named after its id (`mcp-<server>-<suffix>`), with the NetworkPolicy
/// (unless `networkPolicies: false`), PersistentVolumeClaims and Service (HTTP transports) that
/// [`mcp_k8s_resources::build_instance`] builds, all labelled `mcpctl.io/instance=<id>`. Cloning
/// is cheap and shares the client.
#[derive(Clone)]
pub struct KubernetesOrchestrator {
    pub(crate) client: kube::Client,
    pub(crate) config: K8sConfig,
    pub(crate) pods: Api<Pod>,
    pub(crate) services: Api<Service>,
    pub(crate) claims: Api<PersistentVolumeClaim>,
    pub(crate) policies: Api<NetworkPolicy>,
    /// The egress proxy's Deployment, ServiceAccount, Role and RoleBinding (`egress_proxy`).
    pub(crate) deployments: Api<Deployment>,
    pub(crate) service_accounts: Api<ServiceAccount>,
    pub(crate) roles: Api<Role>,
    pub(crate) role_bindings: Api<RoleBinding>,
    /// Instances a client is attached to (`attach_stdio`), shared by clones.
    pub(crate) attached: StdioClaims,
}

/// A log read the kubelet refused (400) because the run is gone by now (the runtime lost the
/// container, e.g. an eviction between looking at the pod and reading): no lines. Any other
/// failure stays what it was.
async fn lost_run(
    pods: &Api<Pod>,
    id: &str,
    previous: bool,
    error: OrchestratorError,
) -> Result<Vec<mcp_types::LogLine>> {
    if !matches!(error, OrchestratorError::InvalidArgument { .. }) {
        return Err(error);
    }
    let target = Target::pod("get pod", id);
    let Ok(pod) = idempotent(&target, || Box::pin(pods.get(id))).await else {
        return Err(error);
    };
    let readable = if previous {
        has_previous_run(&pod)
    } else {
        has_run(&pod)
    };
    if readable { Err(error) } else { Ok(Vec::new()) }
}

impl fmt::Debug for KubernetesOrchestrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesOrchestrator")
            .field("namespace", &self.config.namespace)
            .field("network_policies", &self.config.network_policies)
            .finish_non_exhaustive()
    }
}

impl KubernetesOrchestrator {
    /// Connects as `config` says: in-cluster (`inCluster: true`), a kubeconfig file
    /// (`kubeconfig`, with `context` or the file's current context), or the default loading chain
    /// (`$KUBECONFIG`, `~/.kube/config`, then in-cluster). No request is sent until the first
    /// operation.
    ///
    /// # Errors
    /// - [`InvalidArgument`](OrchestratorError::InvalidArgument) `kubernetes config` for an
    ///   invalid configuration (the namespace must be a DNS-1123 label; `inCluster` excludes
    ///   `kubeconfig` and `context`).
    /// - [`InvalidArgument`](OrchestratorError::InvalidArgument) `kubeconfig` naming the path
    ///   when the file is missing, unreadable or invalid, or lacks the context; `in-cluster
    ///   config` outside a pod.
    /// - [`Unavailable`](OrchestratorError::Unavailable) or
    ///   [`PermissionDenied`](OrchestratorError::PermissionDenied) when kube cannot build a
    ///   client from the loaded configuration (TLS, credentials).
    pub async fn from_config(config: K8sConfig) -> Result<Self> {
        config::check(&config)?;
        let loaded = config::load(&config).await?;
        let client = kube::Client::try_from(loaded).map_err(|e| {
            crate::error::map_error(e, &Target::collection("build a client", "client"))
        })?;
        Ok(Self::assemble(client, config))
    }

    /// Uses a client the caller built (tests, callers that share one client). The client's own
    /// default namespace is ignored: everything goes to `config.namespace`.
    ///
    /// # Errors
    /// [`InvalidArgument`](OrchestratorError::InvalidArgument) `kubernetes config` for an invalid
    /// configuration.
    pub fn with_client(client: kube::Client, config: K8sConfig) -> Result<Self> {
        config::check(&config)?;
        Ok(Self::assemble(client, config))
    }

    fn assemble(client: kube::Client, config: K8sConfig) -> Self {
        let ns = config.namespace.as_str();
        Self {
            pods: Api::namespaced(client.clone(), ns),
            services: Api::namespaced(client.clone(), ns),
            claims: Api::namespaced(client.clone(), ns),
            policies: Api::namespaced(client.clone(), ns),
            deployments: Api::namespaced(client.clone(), ns),
            service_accounts: Api::namespaced(client.clone(), ns),
            roles: Api::namespaced(client.clone(), ns),
            role_bindings: Api::namespaced(client.clone(), ns),
            attached: StdioClaims::new(BACKEND),
            client,
            config,
        }
    }

    /// The kube client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The configuration.
    pub fn config(&self) -> &K8sConfig {
        &self.config
    }

    /// The namespace every object goes to.
    pub fn namespace(&self) -> &str {
        &self.config.namespace
    }

    /// Removes the per-instance companions (managed Services, NetworkPolicies and
    /// PersistentVolumeClaims) whose instance has no pod any more and that are older than
    /// `min_age`; returns them as `kind/name`. The garbage collector does this for companions
    /// owned by their pod; this catches the rest: those created before companions were owned, or
    /// left by a start interrupted between the first create and the ownership patch. `min_age`
    /// spares a start in progress (its claims and policy exist before its pod); a minute is
    /// plenty.
    ///
    /// # Errors
    /// A failed list or delete (the sweep stops at the first failure of each kind).
    pub async fn sweep_orphans(&self, min_age: Duration) -> Result<Vec<String>> {
        lifecycle::sweep_orphans(self, min_age).await
    }

    /// The pod of a managed instance.
    ///
    /// # Errors
    /// `NotFound` for a missing pod or one without `mcpctl.io/managed=true`; request errors.
    pub(crate) async fn managed_pod(&self, id: &InstanceId, action: &'static str) -> Result<Pod> {
        let target = Target::pod(action, id.as_str());
        let pod = idempotent(&target, || Box::pin(self.pods.get(id.as_str()))).await?;
        if is_managed(&pod) {
            Ok(pod)
        } else {
            Err(OrchestratorError::not_found(id.as_str()))
        }
    }

    /// The label selector of a listing: managed pods, of a server, matching the filter's
    /// selector.
    pub(crate) fn list_selector(filters: &InstanceFilters) -> Result<String> {
        let mut selector = format!("{}=true", labels::MANAGED);
        if let Some(server) = &filters.server {
            check_label_value(server).map_err(|message| OrchestratorError::InvalidArgument {
                what: "server filter",
                message,
            })?;
            for part in [",", labels::SERVER, "=", server] {
                selector.push_str(part);
            }
        }
        if let Some(extra) = filters.label_selector.as_ref().filter(|s| !s.is_empty()) {
            selector.push(',');
            selector.push_str(&extra.to_string());
        }
        Ok(selector)
    }
}

#[async_trait]
impl McpOrchestrator for KubernetesOrchestrator {
    fn backend_name(&self) -> &'static str {
        BACKEND
    }

    async fn start_server(&self, spec: &McpServer, options: &StartOptions) -> Result<InstanceId> {
        Box::pin(lifecycle::start(self, spec, options)).await
    }

    async fn stop_server(&self, id: &InstanceId, grace: Duration) -> Result<()> {
        lifecycle::stop(self, id, grace).await
    }

    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        Ok(instance_status(&self.managed_pod(id, "get pod").await?))
    }

    /// Reads the `mcp-server` container's log. Every line is reported as stdout (the container
    /// log merges stdout and stderr); `stream` must be `All`. A container that has not started
    /// yet has no lines; following it waits until it starts (or its pod goes away). With
    /// `follow`, the stream ends when the container ends.
    ///
    /// `sinceTime` has one-second precision, so `since` is sent rounded down and filtered
    /// exactly here (the log is always read with `timestamps=true`; the times are dropped
    /// unless asked for). `tailLines` is sent only when that filter drops nothing; otherwise the
    /// tail is taken here, after the filter, and a follow reads the existing lines first and
    /// then follows from the last of them.
    async fn get_logs(&self, id: &InstanceId, options: &LogOptions) -> Result<LogLines> {
        logs::check_stream(options.stream)?;
        let pod = self.managed_pod(id, "get pod").await?;
        if options.previous && !has_previous_run(&pod) {
            return Err(OrchestratorError::InvalidArgument {
                what: "previous",
                message: format!("instance {id} has no previous run"),
            });
        }
        let plan = logs::plan(options);
        let started = options.previous || has_run(&pod);
        if !options.follow {
            if !started {
                return Ok(stream::empty().boxed());
            }
            let lines = match logs::read_all(&self.pods, id.as_str(), &plan).await {
                Ok(lines) => lines,
                Err(e) => lost_run(&self.pods, id.as_str(), options.previous, e).await?,
            };
            return Ok(stream::iter(lines.into_iter().map(Ok)).boxed());
        }
        let pods = self.pods.clone();
        let id = id.as_str().to_owned();
        let uid = pod.metadata.uid.clone();
        let previous = options.previous;
        let lines = async move {
            if !started {
                match lifecycle::wait_until_started(&pods, &id, uid).await {
                    Ok(true) => {}
                    Ok(false) => return stream::empty().boxed(),
                    Err(e) => return stream::once(async { Err(e) }).boxed(),
                }
            }
            match logs::follow(pods.clone(), id.clone(), plan).await {
                Ok(lines) => lines,
                Err(e) => match lost_run(&pods, &id, previous, e).await {
                    Ok(_) => stream::empty().boxed(),
                    Err(e) => stream::once(async { Err(e) }).boxed(),
                },
            }
        };
        Ok(stream::once(lines).flatten().boxed())
    }

    /// A stdio server's channel is the pod's attach subresource (stdin + stdout over
    /// WebSocket); an HTTP server's is its Service URL, reachable from inside the cluster.
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        let pod = self.managed_pod(id, "get pod").await?;
        let instance =
            pod_instance(&pod).ok_or_else(|| OrchestratorError::not_found(id.as_str()))?;
        if instance.status.phase != mcp_types::Phase::Running {
            return Err(connect::not_running(BACKEND, id, instance.status.phase));
        }
        let transport = instance
            .labels
            .get(mcp_types::labels::TRANSPORT)
            .and_then(|t| mcp_types::Transport::parse(t))
            .unwrap_or_default();
        if transport.is_http() {
            let url = instance.endpoint.ok_or_else(|| {
                OrchestratorError::unavailable(
                    BACKEND,
                    format!("{id} serves {transport} but its pod declares no MCP port"),
                    None,
                )
            })?;
            return Ok(McpChannel::Http(HttpEndpoint { url, transport }));
        }
        let stream = self.attach_stdio(id).await?;
        Ok(McpChannel::Stdio(StdioChannel::from_stream(stream)))
    }

    /// Lists pods labelled `mcpctl.io/managed=true` (plus `mcpctl.io/server=<name>` and the
    /// filter's selector, all evaluated by the API server), a page of at most `limit` pods at a
    /// time with the API server's `continue` token. The phase filter is applied on the client
    /// after the server has cut the page, so a page can hold fewer than `limit` instances (even
    /// none) while a continue token is still returned: keep paging until the token is `None`.
    async fn list_instances(&self, filters: &InstanceFilters) -> Result<Page<Instance>> {
        mcp_orchestrator_api::validate_filters(filters)?;
        let params = ListParams {
            label_selector: Some(Self::list_selector(filters)?),
            limit: filters.limit,
            continue_token: filters.continue_token.clone(),
            ..ListParams::default()
        };
        let argument = if filters.continue_token.is_some() {
            "continue token or filter"
        } else {
            "list filters"
        };
        let target = Target::collection("list pods", "pod").with_argument(argument);
        // The request `Api::<Pod>::list` sends, decoded lean (`listing`): only the fields an
        // instance is made of.
        let request = kube::core::Request::new(<Pod as kube::Resource>::url_path(
            &(),
            Some(&self.config.namespace),
        ));
        let page = idempotent(&target, || {
            let request = request.list(&params).map_err(kube::Error::BuildRequest);
            Box::pin(async move {
                let mut request = request?;
                request.extensions_mut().insert("list");
                self.client.request::<PodPage>(request).await
            })
        })
        .await?;
        let mut page = page.into_instances();
        page.items
            .retain(|i| filters.phase.is_none_or(|p| p == i.status.phase));
        page.items.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(page)
    }

    /// kube's `watcher` on the managed pods (bookmarks, resume from the last resourceVersion,
    /// a re-list after 410 Gone); see `watch.rs`.
    async fn watch(&self, filters: &InstanceFilters) -> Result<InstanceEvents> {
        mcp_orchestrator_api::validate_watch_filters(filters)?;
        let selector = Self::list_selector(filters)?;
        Ok(crate::watch::watch(self.pods.clone(), &selector, filters))
    }

    async fn list_volumes(&self, server: Option<&str>) -> Result<Vec<PersistentVolume>> {
        crate::volumes::list(self, server).await
    }

    async fn remove_volume(&self, name: &str) -> Result<()> {
        crate::volumes::remove(self, name).await
    }

    /// Per-instance companions whose pod is gone, and the namespace's egress proxy once no
    /// instance routes through it (see `egress_proxy`).
    async fn collect_garbage(&self, dry_run: bool) -> Result<GcReport> {
        let mut report = lifecycle::find_orphans(self, Duration::ZERO, dry_run).await?;
        report
            .orphans
            .extend(crate::egress_proxy::collect(self, dry_run).await?);
        report.sort();
        Ok(report)
    }
}
