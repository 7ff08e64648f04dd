//! A stateful fake Kubernetes API server for tests.
//!
//! [`FakeKubeServer`] serves the Kubernetes REST API over HTTP on `127.0.0.1` (an OS-chosen
//! port), so a real [`kube::Client`] talks to it exactly as to a cluster. It keeps pods,
//! services, persistentvolumeclaims, networkpolicies, secrets, serviceaccounts, resourcequotas,
//! limitranges, deployments, roles and rolebindings with the apiserver's metadata handling
//! (generateName, uid, a global resourceVersion, 409/404/410/422 `Status` errors), lists with
//! label/field selectors and consistent `limit`/`continue` pagination, watches, graceful pod
//! deletion, the pod `log` subresource and the pod `attach` subresource over WebSocket. A
//! simulated scheduler and kubelet move pods through their phases, run each container's fixture
//! script (see `mcp_orchestrator_api::fixture`) or, for images registered with
//! [`FakeKubeHandle::run_image_as`], a real local program, and apply restart policies; tests
//! inject failures (image pull, crash loop, OOM, unschedulable) and push log lines through a
//! [`FakeKubeHandle`].
//!
//! ```no_run
//! # async fn demo() {
//! use k8s_openapi::api::core::v1::Pod;
//! use mcp_k8s_fake::{Failure, FailureTarget, FakeKubeServer, LogStream};
//!
//! let server = FakeKubeServer::start().await;
//! let pods: kube::Api<Pod> = kube::Api::default_namespaced(server.client().await);
//! let handle = server.handle();
//! handle.inject(FailureTarget::image("registry.example/broken:1"), Failure::ImagePull);
//! // ... create pods through `pods`, then:
//! let _ = handle.push_log("default", "my-pod", LogStream::Stdout, "hello");
//! # }
//! ```
//!
//! # Semantics
//! - Names: DNS-1123 subdomains (services: DNS-1035 labels); `generateName` appends 5 random
//!   characters. Labels, annotation keys and a useful subset of each kind's spec are validated
//!   (422 `Invalid` with `details.causes`); pods, services and claims get the apiserver's
//!   defaults (restart policy, grace period, cluster IP, bound claim, ...). NetworkPolicy
//!   `ipBlock`s are checked strictly (a CIDR in network form, each `except` a strict subset of
//!   its `cidr`); Deployments get the `apps/v1` defaults and `ValidateDeployment`'s checks (the
//!   selector matching the template, the template's pod spec); Roles and RoleBindings
//!   `ValidateRole`/`ValidateRoleBinding`'s (see `networking`, `workloads`, `rbac`).
//! - Lists are ordered by name (by namespace/name across namespaces). A continue token reads the
//!   snapshot of the first page; `remainingItemCount` is set when no selector is used, like an
//!   etcd-backed list. A token older than the last compaction answers 410 `Expired`; the
//!   history is compacted every [`FakeKubeOptions::compaction_interval`] (5 minutes, like the
//!   apiserver's etcd compactor, to the revision of the previous tick) and on
//!   [`FakeKubeHandle::expire_continue_tokens`]; a malformed token answers 400, as the apiserver
//!   does. The history also keeps a bounded number of events (etcd keeps them by time).
//! - Watches replay history after a resourceVersion (410 `Expired` as an ERROR event once
//!   compacted), or start with ADDED events for `resourceVersion` unset/`0`; objects entering or
//!   leaving a label selection appear as ADDED/DELETED; `timeoutSeconds`, `allowWatchBookmarks`
//!   (a BOOKMARK every [`FakeKubeOptions::bookmark_interval`], a minute by default as from the
//!   watch cache; the cache's extra bookmark just before a watch times out is not sent) and
//!   `sendInitialEvents` are honoured.
//! - A pod delete with a grace period (query or `DeleteOptions` body, else the pod's
//!   `terminationGracePeriodSeconds`) sets `deletionTimestamp`; the kubelet stops the
//!   containers (SIGTERM: exit 143 after [`KubeletTimings::termination`]; with
//!   [`Failure::IgnoreSigterm`], exit 137 when the grace period ends), then removes the pod.
//!   Grace 0, unscheduled and finished pods are removed at once. A container running a real
//!   program gets a real SIGTERM, and SIGKILL when the grace period ends.
//! - Attach (`GET .../pods/{name}/attach`, real programs only): a WebSocket upgrade with the
//!   `v5.channel.k8s.io` / `v4.channel.k8s.io` channel protocols, negotiated in the client's
//!   order as the apiserver's handshake does (kube and kubectl offer v5 first); other
//!   subprotocols are refused with 403. Channel 0 is stdin, 1 the process's exact stdout bytes,
//!   2 its stderr (only when requested; stderr always reaches the log), 3 a v1 `Status` when the
//!   process exits, 255 a client's stdin close (v5). A container's stdin pipe stays open between
//!   sessions (`stdinOnce`: closed after the first). Several clients may attach; each gets all
//!   output from the moment it attached, and one at a time holds stdin (the others' stdin bytes
//!   are dropped, never interleaved). Pre-upgrade errors are `Status` answers: 404 for a missing
//!   pod, 400 for an invalid or not running container, `stdin=true` without `stdin: true` in the
//!   spec, no stream requested, or no WebSocket upgrade.
//!
//! - Admission of new pods (also on `dryRun`), in the apiserver's order, each refusal a 403
//!   `Forbidden` naming the pod by its name or, before one is generated, its `generateName`:
//!   `ServiceAccount` (the pod's account must exist; `default` always does), `LimitRanger`
//!   (`Container` defaults with the API's defaulting of the item, then `min`/`max`, several
//!   errors aggregated in `[...]`), Pod Security `restricted` for namespaces labelled
//!   [`POD_SECURITY_ENFORCE`]`=restricted` through [`FakeKubeHandle::set_namespace_label`] (host
//!   namespaces, privileged, allowPrivilegeEscalation, capabilities, hostPath volumes,
//!   runAsNonRoot, runAsUser=0, seccompProfile, with the admission's message), and
//!   `ResourceQuota` (`pods`, `requests.*`, `limits.*` and bare `cpu`/`memory` summed over the
//!   namespace's unfinished pods; `failed quota: ...: must specify ...` when a limited resource is
//!   not set). A request above its limit is a 422 as in `ValidateResourceRequirements`.
//! - Kubelet: `secretKeyRef` variables are resolved from stored Secrets before each start (also
//!   into a real program's environment); a missing Secret or key keeps the container waiting in
//!   `CreateContainerConfigError` with the kubelet's message, retried until it appears. A real
//!   program that cannot be executed ends its run with `StartError` (exit code 128).
//!   [`FakeKubeHandle::evict_for_node_pressure`] plays the eviction manager: the pod becomes
//!   `Failed`/`Evicted` with its message and a `DisruptionTarget` condition, and its containers
//!   `ContainerStatusUnknown` (exit 137, no container id), whose log the kubelet refuses (400 "is
//!   terminated").
//!
//! - DELETE answers with the deleted object for pods, services, claims and serviceaccounts (the
//!   registries with `ReturnDeletedObject`), a `Status` for the other kinds. The log of a pod
//!   that has no node yet is an empty 200, as the registry's `LogLocation` gives no location.
//! - [`FakeKubeHandle::collect_terminated_pods`] plays the pod garbage collector's sweep of
//!   finished pods beyond a threshold (the other PodGC sweeps, of orphaned and unscheduled
//!   terminating pods, are not modelled).
//! - The `pods/eviction` subresource (policy/v1 `Eviction`) deletes the pod with the eviction's
//!   `deleteOptions` (gracefully by default) and answers 201 `Success`; no PodDisruptionBudget
//!   is modelled, so no eviction is ever refused with 429.
//! - PATCH with `application/merge-patch+json` merges into `metadata` (labels, annotations,
//!   `ownerReferences`, each of which needs apiVersion, kind, name and uid: 422 otherwise); the
//!   identity fields stay. When an object is removed, the garbage collector's background deletion
//!   removes the objects of its namespace that name its uid in `ownerReferences` (and theirs).
//! - Claims get the `kubernetes.io/pvc-protection` finalizer; deleting one that an unfinished pod
//!   mounts only sets its `deletionTimestamp`, and it goes when the last such pod is removed.
//!
//! # Deliberately independent of `mcp-types`
//! The label/field selector parser and matcher (`selector`) and the name and label checks
//! (`names`) are written here from the apiserver's behaviour, NOT shared with `mcp-types`'
//! `selector` and `names`, even where they look alike. The fake is the oracle the Kubernetes
//! backend is tested against: if both used one parser, a bug in it would agree with itself and
//! no test would notice. Do not deduplicate them; a difference between the two is a finding.
//!
//! # Not modelled
//! PUT (answered 405 `MethodNotAllowed`), PATCH other than a JSON merge patch of `metadata` (405
//! for other fields, 415 for other patch types), namespaces as objects (every namespace exists;
//! their labels are set through the handle), finalizers other than `kubernetes.io/pvc-protection`
//! (and removing that one by a patch), foreground and orphan deletion propagation and the garbage
//! collection of owned pods, PodDisruptionBudgets, automatic pod garbage collection, admission
//! races (two concurrent creates can both pass a quota), the `kubernetes.io/limit-ranger`
//! annotation, Pod Security levels other than `restricted` and its checks no pod here can trip
//! (AppArmor, SELinux, sysctls, procMount, volume types other than hostPath), the LimitRange `Pod`
//! and `PersistentVolumeClaim` types and the max/request ratio, quota scopes and object-count
//! quotas other than `pods`, probes, init containers' own runs and statuses (they are taken to
//! succeed after an image pull's time; meanwhile the pod is not `Initialized` and the other
//! containers wait in `PodInitializing`), exec and port-forward, attach over SPDY (a POST is
//! answered 400 like a request without an upgrade), TTYs (`tty=true` is refused with 400), the
//! legacy `channel.k8s.io` and base64 subprotocols, attach to fixture-script containers (400: they
//! have no byte streams), `valueFrom` env values other than `secretKeyRef`, authentication and
//! authorization (so neither RBAC's escalation check on creating a Role nor its `bind` check),
//! controllers (a Deployment makes no ReplicaSet and no pod; its status stays empty), and
//! resource kinds other than the eleven above.

mod admission;
mod api;
mod attach;
mod failures;
mod fixture;
mod kind;
mod kubelet;
mod logs;
mod names;
mod networking;
mod object;
mod pod_spec;
mod pod_volumes;
mod process;
mod quantity;
mod rbac;
mod requests;
mod resources;
mod secret_volumes;
mod selector;
mod status;
mod store;
mod time;
mod volume_data;
mod workloads;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admission::POD_SECURITY_ENFORCE;
pub use failures::{Failure, FailureTarget};
pub use kind::ResourceKind;
pub use kubelet::{DEFAULT_POD_NETWORK, KubeletTimings, NODE_NAME};
pub use logs::LogStream;
pub use requests::RecordedRequest;

use crate::api::AppState;
use crate::kubelet::Kubelet;
use crate::logs::LogStore;
use crate::store::{DeleteAction, ObjectKey, Store, stamp_deletion};

/// Errors of the fake's test-facing API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FakeKubeError {
    /// Binding the loopback listener failed.
    #[error("cannot listen on 127.0.0.1: {0}")]
    Bind(#[from] std::io::Error),
    /// Building a kube client for the fake failed.
    #[error("cannot build a kube client for the fake apiserver: {0}")]
    Client(#[from] kube::Error),
    /// The pod does not exist.
    #[error("pod {namespace}/{name} not found")]
    PodNotFound {
        /// Namespace of the pod.
        namespace: String,
        /// Name of the pod.
        name: String,
    },
    /// The pod has no such container, or no container at all.
    #[error("pod {pod} has no container {container:?}")]
    ContainerNotFound {
        /// The pod (`namespace/name`).
        pod: String,
        /// The requested container (None: the pod has none).
        container: Option<String>,
    },
    /// The container is not running, so it cannot write log lines.
    #[error("container {container} of pod {pod} is not running")]
    ContainerNotRunning {
        /// The pod (`namespace/name`).
        pod: String,
        /// The container.
        container: String,
    },
}

/// One version of a watched object.
enum Version<'a> {
    Present(&'a serde_json::Value),
    Deleted,
}

/// Settings of a [`FakeKubeServer`].
#[derive(Debug, Clone)]
pub struct FakeKubeOptions {
    /// The namespace clients built by [`FakeKubeServer::client`] default to.
    pub default_namespace: String,
    /// How fast the simulated kubelet moves.
    pub timings: KubeletTimings,
    /// How often watches with `allowWatchBookmarks=true` get a BOOKMARK event (the apiserver's
    /// watch cache: about once a minute).
    pub bookmark_interval: Duration,
    /// How often the history is compacted to the revision of the previous compaction, as
    /// kube-apiserver's etcd compactor does (`--etcd-compaction-interval`, 5 minutes): a continue
    /// token or watch position lives one to two intervals. `None`: only
    /// [`FakeKubeHandle::expire_continue_tokens`] compacts.
    pub compaction_interval: Option<Duration>,
    /// The first two octets of pod IPs (`<a>.<b>.x.y`, [`DEFAULT_POD_NETWORK`] by default).
    /// `[127, n]` puts pods on loopback addresses (all of 127.0.0.0/8 is local on Linux), so
    /// a test can open a real connection *from* a pod's address by binding its socket to it.
    pub pod_network: [u8; 2],
}

impl Default for FakeKubeOptions {
    fn default() -> Self {
        Self {
            default_namespace: "default".to_owned(),
            timings: KubeletTimings::default(),
            bookmark_interval: Duration::from_secs(60),
            compaction_interval: Some(Duration::from_secs(5 * 60)),
            pod_network: DEFAULT_POD_NETWORK,
        }
    }
}

/// A running fake apiserver. Dropping it stops the server, the simulated kubelet, and every
/// open watch and log stream.
#[derive(Debug)]
pub struct FakeKubeServer {
    url: String,
    default_namespace: String,
    handle: FakeKubeHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
    serve: Option<JoinHandle<()>>,
}

impl FakeKubeServer {
    /// Starts a server with default options.
    ///
    /// # Panics
    /// If no loopback port can be bound (see [`FakeKubeServer::try_start`]).
    pub async fn start() -> Self {
        Self::with_options(FakeKubeOptions::default()).await
    }

    /// Starts a server with these options.
    ///
    /// # Panics
    /// If no loopback port can be bound (see [`FakeKubeServer::try_start_with`]).
    pub async fn with_options(options: FakeKubeOptions) -> Self {
        match Self::try_start_with(options).await {
            Ok(server) => server,
            Err(error) => panic!("mcp-k8s-fake: {error}"),
        }
    }

    /// Starts a server with default options.
    ///
    /// # Errors
    /// [`FakeKubeError::Bind`] if no loopback port can be bound.
    pub async fn try_start() -> Result<Self, FakeKubeError> {
        Self::try_start_with(FakeKubeOptions::default()).await
    }

    /// Starts a server with these options.
    ///
    /// # Errors
    /// [`FakeKubeError::Bind`] if no loopback port can be bound.
    pub async fn try_start_with(options: FakeKubeOptions) -> Result<Self, FakeKubeError> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let address = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let store = Arc::new(Store::new());
        let logs = Arc::new(LogStore::default());
        let failures = Arc::new(failures::Failures::default());
        let programs = Arc::new(process::Programs::default());
        let kubelet = Arc::new(
            Kubelet::new(
                Arc::clone(&store),
                Arc::clone(&logs),
                Arc::clone(&failures),
                options.timings.clone(),
                cancel.clone(),
                tracker.clone(),
                Arc::clone(&programs),
            )
            .with_pod_network(options.pod_network),
        );
        let requests = Arc::new(Mutex::new(Vec::new()));
        let namespaces = Arc::new(admission::Namespaces::default());
        let watch_resets = Arc::new(tokio::sync::watch::channel(0u64).0);
        let state = Arc::new(AppState {
            store: Arc::clone(&store),
            logs: Arc::clone(&logs),
            kubelet: Arc::clone(&kubelet),
            requests: Arc::clone(&requests),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            bookmark_interval: options.bookmark_interval,
            namespaces: Arc::clone(&namespaces),
            watch_resets: Arc::clone(&watch_resets),
        });
        if let Some(interval) = options.compaction_interval.filter(|i| !i.is_zero()) {
            let store = Arc::clone(&store);
            let cancel = cancel.clone();
            tracker.spawn(async move {
                // Each tick compacts to the revision the previous tick saw.
                let mut previous = store.resource_version();
                loop {
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(interval) => {}
                    }
                    store.compact_to(previous);
                    previous = store.resource_version();
                }
            });
        }
        let app = api::router(state);
        let shutdown = cancel.clone();
        let serve = tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "mcp-k8s-fake server stopped");
            }
        });
        Ok(Self {
            url: format!("http://{address}"),
            default_namespace: options.default_namespace,
            handle: FakeKubeHandle {
                store,
                logs,
                failures,
                programs,
                requests,
                kubelet,
                namespaces,
                watch_resets,
            },
            cancel,
            tracker,
            serve: Some(serve),
        })
    }

    /// The base URL, e.g. `http://127.0.0.1:43567`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A kube config pointing at the fake, defaulting to the configured namespace.
    pub fn config(&self) -> kube::Config {
        self.config_in(&self.default_namespace)
    }

    /// A kube config pointing at the fake, defaulting to `namespace`.
    ///
    /// # Panics
    /// Never in practice: the URL is always a valid `http://127.0.0.1:port`.
    pub fn config_in(&self, namespace: &str) -> kube::Config {
        let uri = self
            .url
            .parse()
            .unwrap_or_else(|_| http::Uri::from_static("http://127.0.0.1"));
        let mut config = kube::Config::new(uri);
        namespace.clone_into(&mut config.default_namespace);
        config.read_timeout = None;
        config
    }

    /// A kube client for the fake (default namespace as configured).
    ///
    /// # Panics
    /// If kube cannot build a client for a plain-HTTP config (see [`FakeKubeServer::try_client`]).
    pub async fn client(&self) -> kube::Client {
        match self.try_client().await {
            Ok(client) => client,
            Err(error) => panic!("mcp-k8s-fake: {error}"),
        }
    }

    /// A kube client for the fake.
    ///
    /// # Errors
    /// [`FakeKubeError::Client`] if kube rejects the config.
    pub async fn try_client(&self) -> Result<kube::Client, FakeKubeError> {
        self.try_client_in(&self.default_namespace).await
    }

    /// A kube client for the fake whose default namespace is `namespace`.
    ///
    /// # Panics
    /// If kube cannot build a client for a plain-HTTP config (see
    /// [`FakeKubeServer::try_client_in`]).
    pub async fn client_in(&self, namespace: &str) -> kube::Client {
        match self.try_client_in(namespace).await {
            Ok(client) => client,
            Err(error) => panic!("mcp-k8s-fake: {error}"),
        }
    }

    /// A kube client for the fake whose default namespace is `namespace`.
    ///
    /// # Errors
    /// [`FakeKubeError::Client`] if kube rejects the config.
    #[allow(
        clippy::unused_async,
        reason = "kube's client spawns a buffer task, so it must be built inside a runtime"
    )]
    pub async fn try_client_in(&self, namespace: &str) -> Result<kube::Client, FakeKubeError> {
        Ok(kube::Client::try_from(self.config_in(namespace))?)
    }

    /// The test-control handle (clone it freely).
    pub fn handle(&self) -> FakeKubeHandle {
        self.handle.clone()
    }

    /// Stops the server and waits until every task it started has ended.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        self.tracker.close();
        if let Some(serve) = self.serve.take() {
            let _ = serve.await;
        }
        self.tracker.wait().await;
    }
}

impl Drop for FakeKubeServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        self.tracker.close();
    }
}

/// Test control over a running fake: inspect objects, inject failures, push logs, expire
/// continue tokens, read the request log.
#[derive(Debug, Clone)]
pub struct FakeKubeHandle {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    failures: Arc<failures::Failures>,
    programs: Arc<process::Programs>,
    requests: Arc<Mutex<Vec<RecordedRequest>>>,
    kubelet: Arc<Kubelet>,
    namespaces: Arc<admission::Namespaces>,
    watch_resets: Arc<tokio::sync::watch::Sender<u64>>,
}

impl FakeKubeHandle {
    /// Ends every watch open now, cleanly (the chunked response just ends), as an apiserver
    /// restart or a proxy's idle timeout does. Clients resume from their last
    /// resourceVersion; with [`FakeKubeHandle::expire_continue_tokens`] first, that resume
    /// gets the 410 `Expired` ERROR event and the client has to list again.
    pub fn close_watches(&self) {
        self.watch_resets.send_modify(|v| *v += 1);
    }

    /// The pod garbage collector's terminated-pod sweep (kube-controller-manager
    /// `--terminated-pod-gc-threshold`): while more than `threshold` pods have finished
    /// (`Succeeded` or `Failed`, evicted ones included), the oldest by creation are deleted at
    /// once. Returns the deleted pods as `namespace/name`. Owned objects follow (garbage
    /// collector), and so do claims only they kept (pvc-protection).
    pub fn collect_terminated_pods(&self, threshold: usize) -> Vec<String> {
        let mut finished: Vec<serde_json::Value> = self
            .store
            .all(ResourceKind::Pod, None)
            .into_iter()
            .filter(|p| matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .collect();
        finished.sort_by(|a, b| {
            let created = |p: &serde_json::Value| {
                p["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            created(a).cmp(&created(b))
        });
        let excess = finished.len().saturating_sub(threshold);
        let mut deleted = Vec::new();
        for pod in finished.into_iter().take(excess) {
            let (Some(namespace), Some(name), Some(uid)) = (
                pod["metadata"]["namespace"].as_str(),
                pod["metadata"]["name"].as_str(),
                pod["metadata"]["uid"].as_str(),
            ) else {
                continue;
            };
            let key = ObjectKey::new(ResourceKind::Pod, namespace, name);
            let removed = self.store.delete(&key, Some(uid), |pod| {
                Ok(DeleteAction::RemoveAs(stamp_deletion(pod, 0)))
            });
            if matches!(removed, Ok(Some(_))) {
                self.kubelet.removed(uid);
                deleted.push(format!("{namespace}/{name}"));
            }
        }
        deleted
    }

    /// Sets (`Some`) or removes (`None`) a label of a namespace (namespaces are not objects in
    /// the fake). Admission reads them: [`POD_SECURITY_ENFORCE`] `=restricted` makes every new
    /// pod of the namespace pass the restricted Pod Security level or be refused (403, the
    /// admission's `violates PodSecurity "restricted:latest": ...` message).
    pub fn set_namespace_label(&self, namespace: &str, key: &str, value: Option<&str>) {
        self.namespaces.set_label(namespace, key, value);
    }

    /// The kubelet's eviction manager evicts a pod for node pressure on `resource` (`memory`,
    /// `ephemeral-storage`, ...), as a real node low on it does: every container still running or
    /// waiting is killed at once and, the runtime no longer knowing it, reported as terminated
    /// with reason `ContainerStatusUnknown`, exit code 137 and no container id (so its log can
    /// no longer be read: 400 "is terminated"); the pod becomes `Failed` with reason `Evicted`,
    /// the eviction manager's message and a `DisruptionTarget` condition. The pod object stays
    /// until it is deleted.
    ///
    /// # Errors
    /// [`FakeKubeError::PodNotFound`] if the pod does not exist or is not on the node yet.
    pub fn evict_for_node_pressure(
        &self,
        namespace: &str,
        pod: &str,
        resource: &str,
    ) -> Result<(), FakeKubeError> {
        let not_found = || FakeKubeError::PodNotFound {
            namespace: namespace.to_owned(),
            name: pod.to_owned(),
        };
        let object = self.pod(namespace, pod).ok_or_else(not_found)?;
        let uid = object.metadata.uid.clone().ok_or_else(not_found)?;
        if self.kubelet.evict(&uid, resource) {
            Ok(())
        } else {
            Err(not_found())
        }
    }

    /// Injects a failure for the containers or pods `target` designates; it applies to pods
    /// scheduled and containers started or pulled from now on.
    pub fn inject(&self, target: FailureTarget, failure: Failure) {
        self.failures.inject(target, failure);
    }

    /// Runs containers whose `image` is exactly `image` as the real local program `path`
    /// (for pods started from now on) instead of interpreting fixture scripts.
    ///
    /// The program plays the image's entry point: a container `command` replaces it (its first
    /// word, the binary's path inside the image, is dropped) and `args` follow. The process gets
    /// only the container's literal `env` values. Its stdout and stderr lines go to the container
    /// log; with `stdin: true` its stdin is a pipe that outlives attach sessions (closed after
    /// the first one with `stdinOnce: true`), served by the `attach` subresource. A graceful
    /// delete sends SIGTERM, then SIGKILL when the grace period ends; the exit code (128 +
    /// signal when a signal ended it) is reported in the container status and the restart
    /// policy applies. Injected crash and OOM failures still win. No process outlives the
    /// server: stopping or dropping it kills them.
    pub fn run_image_as(&self, image: &str, path: impl AsRef<std::path::Path>) {
        self.programs.register(image, path.as_ref());
    }

    /// Removes every failure injected for `target`.
    pub fn clear_failures(&self, target: &FailureTarget) {
        self.failures.clear(target);
    }

    /// Removes every injected failure.
    pub fn clear_all_failures(&self) {
        self.failures.clear_all();
    }

    /// Writes `text` (one line per `\n`) to the only or first container of a pod.
    ///
    /// # Errors
    /// If the pod does not exist or its first container is not running.
    pub fn push_log(
        &self,
        namespace: &str,
        pod: &str,
        stream: LogStream,
        text: &str,
    ) -> Result<(), FakeKubeError> {
        self.push_container_log(namespace, pod, None, stream, text)
    }

    /// Writes `text` to a named container of a pod (`None`: the first container).
    ///
    /// # Errors
    /// If the pod or container does not exist, or the container is not running.
    pub fn push_container_log(
        &self,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
        stream: LogStream,
        text: &str,
    ) -> Result<(), FakeKubeError> {
        let object = self
            .pod(namespace, pod)
            .ok_or_else(|| FakeKubeError::PodNotFound {
                namespace: namespace.to_owned(),
                name: pod.to_owned(),
            })?;
        let pod_id = format!("{namespace}/{pod}");
        let spec = object.spec.clone().unwrap_or_default();
        let name = match container {
            Some(name) => name.to_owned(),
            None => spec
                .containers
                .first()
                .map(|c| c.name.clone())
                .ok_or_else(|| FakeKubeError::ContainerNotFound {
                    pod: pod_id.clone(),
                    container: None,
                })?,
        };
        if !spec.containers.iter().any(|c| c.name == name) {
            return Err(FakeKubeError::ContainerNotFound {
                pod: pod_id,
                container: Some(name),
            });
        }
        let not_running = || FakeKubeError::ContainerNotRunning {
            pod: pod_id.clone(),
            container: name.clone(),
        };
        let container_id = object
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|statuses| statuses.iter().find(|s| s.name == name))
            .filter(|s| s.state.as_ref().is_some_and(|st| st.running.is_some()))
            .and_then(|s| s.container_id.clone())
            .ok_or_else(not_running)?;
        if self.logs.append(&container_id, stream, text) {
            Ok(())
        } else {
            Err(not_running())
        }
    }

    /// Invalidates every continue token and watch resourceVersion issued so far, like an etcd
    /// compaction: continuing such a list answers 410 Gone (reason Expired).
    pub fn expire_continue_tokens(&self) {
        self.store.compact();
    }

    /// The latest resourceVersion of the store.
    pub fn resource_version(&self) -> u64 {
        self.store.resource_version()
    }

    /// A stored pod.
    pub fn pod(&self, namespace: &str, name: &str) -> Option<Pod> {
        self.get(namespace, name)
    }

    /// A stored object of a served type (`Pod`, `Service`, `PersistentVolumeClaim`,
    /// `NetworkPolicy`, `Secret`, `ServiceAccount`, `ResourceQuota`, `LimitRange`); `None` if
    /// absent or the type is not served.
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let kind = ResourceKind::from_kind(K::GROUP, K::KIND)?;
        let value = self.store.get(&ObjectKey::new(kind, namespace, name))?;
        serde_json::from_value(value).ok()
    }

    /// Every stored object of a served type, in `namespace` or (None) in all namespaces,
    /// ordered by namespace and name.
    pub fn list<K>(&self, namespace: Option<&str>) -> Vec<K>
    where
        K: k8s_openapi::Resource + DeserializeOwned,
    {
        let Some(kind) = ResourceKind::from_kind(K::GROUP, K::KIND) else {
            return Vec::new();
        };
        self.store
            .all(kind, namespace)
            .into_iter()
            .filter_map(|value| serde_json::from_value(value).ok())
            .collect()
    }

    /// A stored object as raw JSON.
    pub fn object(
        &self,
        kind: ResourceKind,
        namespace: &str,
        name: &str,
    ) -> Option<serde_json::Value> {
        self.store.get(&ObjectKey::new(kind, namespace, name))
    }

    /// Waits until the pod exists and satisfies `condition`, at most `timeout`. Every version
    /// the pod goes through from now on is checked, so short-lived states (ContainerCreating,
    /// ErrImagePull) are not missed. Returns the first matching version, `None` on timeout.
    pub async fn wait_for_pod(
        &self,
        namespace: &str,
        name: &str,
        timeout: Duration,
        condition: impl Fn(&Pod) -> bool,
    ) -> Option<Pod> {
        let key = ObjectKey::new(ResourceKind::Pod, namespace, name);
        let matching = |object: Option<serde_json::Value>| {
            object
                .and_then(|o| serde_json::from_value::<Pod>(o).ok())
                .filter(|pod| condition(pod))
        };
        self.wait_for(&key, timeout, |version| match version {
            Version::Present(object) => matching(Some((*object).clone())),
            Version::Deleted => None,
        })
        .await
    }

    /// Waits until the pod no longer exists, at most `timeout`; `true` if it is gone.
    pub async fn wait_for_pod_gone(&self, namespace: &str, name: &str, timeout: Duration) -> bool {
        let key = ObjectKey::new(ResourceKind::Pod, namespace, name);
        self.wait_for(&key, timeout, |version| {
            matches!(version, Version::Deleted).then_some(())
        })
        .await
        .is_some()
    }

    /// Checks the object's current state, then each later version, until `probe` accepts one.
    async fn wait_for<T>(
        &self,
        key: &ObjectKey,
        timeout: Duration,
        probe: impl Fn(&Version<'_>) -> Option<T>,
    ) -> Option<T> {
        let (current, mut events) = self.store.get_and_subscribe(key);
        let state = |object: Option<&serde_json::Value>| match object {
            Some(object) => probe(&Version::Present(object)),
            None => probe(&Version::Deleted),
        };
        if let Some(found) = state(current.as_ref()) {
            return Some(found);
        }
        let wait = async {
            loop {
                match events.recv().await {
                    Ok(event) if event.key == *key => {
                        let object = (event.event_type != store::EventType::Deleted)
                            .then_some(&event.object);
                        if let Some(found) = state(object) {
                            return Some(found);
                        }
                    }
                    Ok(_) => {}
                    // Fell behind: fall back to the current state.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        if let Some(found) = state(self.store.get(key).as_ref()) {
                            return Some(found);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.ok().flatten()
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}
