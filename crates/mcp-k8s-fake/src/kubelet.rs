//! The simulated scheduler and kubelet: one task per pod binds it to the fake node, pulls images,
//! runs each container's program (a real local program for images registered with
//! `FakeKubeHandle::run_image_as`, else a fixture script or "run forever"), applies the restart
//! policy with CrashLoopBackOff, honours injected failures, and carries out graceful deletion.

use std::collections::HashMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::failures::{Failure, Failures};
use crate::fixture;
use crate::kind::ResourceKind;
use crate::logs::{LogStore, LogStream};
use crate::process::{Launch, Programs, RealProcess, StdioHubs};
use crate::secret_volumes::{HostSecrets, Materialized};
use crate::store::{DeleteAction, ObjectKey, Store, stamp_deletion};
use crate::volume_data::{FileView, Files, MountSpec, Source, ViewMount, VolumeData, mounts_of};
use crate::{names, time};
use mcp_orchestrator_api::fixture::FixtureStep as Step;

/// The name of the single fake node pods are bound to.
pub const NODE_NAME: &str = "fake-node";
const NODE_IP: &str = "10.0.0.2";

/// How long each simulated step takes. Defaults are tens of milliseconds so tests run fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletTimings {
    /// From creation to the scheduler binding the pod (and between re-tries while unschedulable).
    pub schedule: Duration,
    /// From binding to the containers starting (the image pull).
    pub image_pull: Duration,
    /// How long each of `ErrImagePull` and `ImagePullBackOff` lasts before the next pull attempt.
    pub image_pull_backoff: Duration,
    /// The first CrashLoopBackOff wait; it doubles with each restart, up to 8 times this.
    pub restart_backoff: Duration,
    /// How long an injected crash or OOM-kill lets a container run.
    pub crash_after: Duration,
    /// How long a container takes to exit after SIGTERM (a graceful delete).
    pub termination: Duration,
}

impl Default for KubeletTimings {
    fn default() -> Self {
        Self {
            schedule: Duration::from_millis(10),
            image_pull: Duration::from_millis(20),
            image_pull_backoff: Duration::from_millis(40),
            restart_backoff: Duration::from_millis(40),
            crash_after: Duration::from_millis(20),
            termination: Duration::from_millis(20),
        }
    }
}

/// The first two octets of pod IPs unless [`crate::FakeKubeOptions::pod_network`] says
/// otherwise (kind's and kubeadm's usual pod CIDR, 10.244.0.0/16).
pub const DEFAULT_POD_NETWORK: [u8; 2] = [10, 244];

/// What the API tells a pod's task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum PodSignal {
    #[default]
    Live,
    /// Graceful deletion: stop the containers, at the latest by `deadline`.
    Terminate { deadline: Instant },
    /// The kubelet's eviction manager ended the pod (node pressure): the containers are killed
    /// at once, their runtime records are gone, and the pod stays `Failed`/`Evicted`.
    Evicted,
    /// The object is gone from the API.
    Removed,
}

/// The kubelet shared by every pod task.
#[derive(Debug)]
pub(crate) struct Kubelet {
    store: Arc<Store>,
    logs: Arc<LogStore>,
    failures: Arc<Failures>,
    timings: KubeletTimings,
    cancel: CancellationToken,
    tracker: TaskTracker,
    pods: Mutex<HashMap<String, watch::Sender<PodSignal>>>,
    runtimes: Mutex<HashMap<String, Arc<PodRuntime>>>,
    next_ip: AtomicU32,
    /// The first two octets of every pod IP.
    pod_network: [u8; 2],
    programs: Arc<Programs>,
    hubs: Arc<StdioHubs>,
    /// The data of mounted volumes (see `volume_data`).
    volume_data: VolumeData,
}

impl Kubelet {
    pub(crate) fn new(
        store: Arc<Store>,
        logs: Arc<LogStore>,
        failures: Arc<Failures>,
        timings: KubeletTimings,
        cancel: CancellationToken,
        tracker: TaskTracker,
        programs: Arc<Programs>,
    ) -> Self {
        Self {
            store,
            logs,
            failures,
            timings,
            cancel,
            tracker,
            pods: Mutex::new(HashMap::new()),
            runtimes: Mutex::new(HashMap::new()),
            next_ip: AtomicU32::new(0),
            pod_network: DEFAULT_POD_NETWORK,
            programs,
            hubs: Arc::new(StdioHubs::default()),
            volume_data: VolumeData::default(),
        }
    }

    /// Pod IPs in `<a>.<b>.0.0/16` instead of [`DEFAULT_POD_NETWORK`].
    pub(crate) fn with_pod_network(mut self, network: [u8; 2]) -> Self {
        self.pod_network = network;
        self
    }

    /// The stdio hubs of containers that run real programs (for attach).
    pub(crate) fn hubs(&self) -> &Arc<StdioHubs> {
        &self.hubs
    }

    /// Whether containers of `image` run a real program.
    pub(crate) fn runs_program(&self, image: &str) -> bool {
        self.programs.lookup(image).is_some()
    }

    fn pods(&self) -> MutexGuard<'_, HashMap<String, watch::Sender<PodSignal>>> {
        self.pods.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts simulating a newly created pod.
    pub(crate) fn spawn(self: &Arc<Self>, pod: &Value) {
        let Ok(pod) = serde_json::from_value::<Pod>(pod.clone()) else {
            return;
        };
        let (Some(uid), Some(name), Some(namespace)) = (
            pod.metadata.uid.clone(),
            pod.metadata.name.clone(),
            pod.metadata.namespace.clone(),
        ) else {
            return;
        };
        let (signal_tx, signal_rx) = watch::channel(PodSignal::Live);
        self.pods().insert(uid.clone(), signal_tx);
        let ip = self.next_ip.fetch_add(1, Ordering::Relaxed);
        let runtime = Arc::new(PodRuntime::new(
            Arc::clone(self),
            ObjectKey::new(ResourceKind::Pod, &namespace, &name),
            uid.clone(),
            &pod,
            format!(
                "{}.{}.{}.{}",
                self.pod_network[0],
                self.pod_network[1],
                (ip / 250) % 250,
                ip % 250 + 2
            ),
        ));
        self.runtimes().insert(uid.clone(), Arc::clone(&runtime));
        let kubelet = Arc::clone(self);
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = Arc::clone(&runtime).drive(signal_rx) => {}
            }
            kubelet.logs.remove(&runtime.instance_ids());
            kubelet.pods().remove(&uid);
            kubelet.runtimes().remove(&uid);
            kubelet.volume_data.forget_pod(&uid);
        });
    }

    /// A graceful delete set the pod's deletionTimestamp: stop it within `grace_seconds`.
    pub(crate) fn terminate(&self, uid: &str, grace_seconds: i64) {
        let grace = Duration::from_secs(u64::try_from(grace_seconds).unwrap_or(0));
        let deadline = later(grace);
        if let Some(tx) = self.pods().get(uid) {
            tx.send_if_modified(|signal| match signal {
                PodSignal::Terminate { deadline: current } if *current <= deadline => false,
                PodSignal::Removed => false,
                _ => {
                    *signal = PodSignal::Terminate { deadline };
                    true
                }
            });
        }
    }

    /// The eviction manager evicts the pod for node pressure on `resource` (`memory`,
    /// `ephemeral-storage`): its containers are killed without a grace period and reported as
    /// `ContainerStatusUnknown` (the runtime no longer knows them), the pod becomes `Failed` with
    /// reason `Evicted`. `false` if the kubelet does not run that pod.
    pub(crate) fn evict(&self, uid: &str, resource: &str) -> bool {
        let Some(runtime) = self.runtimes().get(uid).cloned() else {
            return false;
        };
        // The eviction manager's message (pkg/kubelet/eviction/helpers.go, evictionMessage).
        let message = format!(
            "The node was low on resource: {resource}. Threshold quantity: 100Mi, available: 42Mi. "
        );
        runtime.state().evicted = Some(message);
        if let Some(tx) = self.pods().get(uid) {
            tx.send_if_modified(|signal| {
                if *signal == PodSignal::Live {
                    *signal = PodSignal::Evicted;
                    true
                } else {
                    false
                }
            });
        }
        true
    }

    fn runtimes(&self) -> MutexGuard<'_, HashMap<String, Arc<PodRuntime>>> {
        self.runtimes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pod object was removed from the API.
    pub(crate) fn removed(&self, uid: &str) {
        if let Some(tx) = self.pods().get(uid) {
            tx.send_replace(PodSignal::Removed);
        }
    }
}

/// One container's spec, as far as the kubelet cares.
#[derive(Debug, Clone)]
struct ContainerSpec {
    name: String,
    image: String,
    command: Vec<String>,
    args: Vec<String>,
    /// Literal `env` values.
    env: Vec<(String, String)>,
    /// `env` values from `secretKeyRef`s, resolved before each start.
    secret_env: Vec<SecretEnv>,
    /// `workingDir` (interpreted programs print it; the image's default is `/`).
    working_dir: Option<String>,
    stdin: bool,
    stdin_once: bool,
    /// `volumeMounts`, with the pod volume each names.
    mounts: Vec<MountSpec>,
}

/// An environment variable taken from a key of a Secret.
#[derive(Debug, Clone)]
struct SecretEnv {
    var: String,
    secret: String,
    key: String,
    optional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RestartPolicy {
    Always,
    OnFailure,
    Never,
}

#[derive(Debug, Clone, PartialEq)]
struct Terminated {
    /// Empty when the runtime lost the container (`ContainerStatusUnknown`).
    container_id: String,
    exit_code: i32,
    reason: String,
    started: Timestamp,
    finished: Timestamp,
}

#[derive(Debug, Clone, PartialEq)]
enum RunState {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        container_id: String,
        started: Timestamp,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone)]
struct ContainerRuntime {
    spec: ContainerSpec,
    image_id: Option<String>,
    state: RunState,
    last: Option<Terminated>,
    restart_count: i32,
    instance_ids: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheduling {
    Pending,
    Unschedulable,
    Bound,
}

#[derive(Debug)]
struct PodState {
    scheduling: Scheduling,
    scheduled_at: Option<Timestamp>,
    started_at: Option<Timestamp>,
    containers: Vec<ContainerRuntime>,
    terminating: bool,
    /// The eviction manager's message once the pod was evicted.
    evicted: Option<String>,
    /// Init containers are still running (each is taken to succeed after an image pull's time).
    initializing: bool,
    /// Last transition times by condition type and status.
    transitions: HashMap<&'static str, (bool, Timestamp)>,
}

/// How one container run ended.
#[derive(Debug, Clone)]
struct Exit {
    code: i32,
    reason: &'static str,
}

impl Exit {
    fn from_code(code: i32) -> Self {
        Self {
            code,
            reason: if code == 0 { "Completed" } else { "Error" },
        }
    }
}

/// A pod as the kubelet runs it.
#[derive(Debug)]
struct PodRuntime {
    kubelet: Arc<Kubelet>,
    key: ObjectKey,
    uid: String,
    restart_policy: RestartPolicy,
    pod_ip: String,
    state: Mutex<PodState>,
}

impl PodRuntime {
    fn new(kubelet: Arc<Kubelet>, key: ObjectKey, uid: String, pod: &Pod, pod_ip: String) -> Self {
        let spec = pod.spec.clone().unwrap_or_default();
        let restart_policy = match spec.restart_policy.as_deref() {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        };
        let initializing = spec.init_containers.as_ref().is_some_and(|c| !c.is_empty());
        let containers = spec
            .containers
            .iter()
            .map(|c| ContainerRuntime {
                spec: ContainerSpec {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    command: c.command.clone().unwrap_or_default(),
                    args: c.args.clone().unwrap_or_default(),
                    env: c
                        .env
                        .iter()
                        .flatten()
                        .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
                        .collect(),
                    secret_env: c
                        .env
                        .iter()
                        .flatten()
                        .filter_map(|e| {
                            let r = e.value_from.as_ref()?.secret_key_ref.as_ref()?;
                            Some(SecretEnv {
                                var: e.name.clone(),
                                secret: r.name.clone(),
                                key: r.key.clone(),
                                optional: r.optional.unwrap_or(false),
                            })
                        })
                        .collect(),
                    working_dir: c.working_dir.clone(),
                    stdin: c.stdin.unwrap_or(false),
                    stdin_once: c.stdin_once.unwrap_or(false),
                    mounts: mounts_of(&spec, c),
                },
                image_id: None,
                // While init containers run, the kubelet reports the others as PodInitializing.
                state: RunState::Waiting {
                    reason: if initializing {
                        "PodInitializing"
                    } else {
                        "ContainerCreating"
                    }
                    .to_owned(),
                    message: None,
                },
                last: None,
                restart_count: 0,
                instance_ids: Vec::new(),
            })
            .collect();
        Self {
            kubelet,
            key,
            uid,
            restart_policy,
            pod_ip,
            state: Mutex::new(PodState {
                scheduling: Scheduling::Pending,
                scheduled_at: None,
                started_at: None,
                containers,
                terminating: false,
                evicted: None,
                initializing,
                transitions: HashMap::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, PodState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn instance_ids(&self) -> Vec<String> {
        self.state()
            .containers
            .iter()
            .flat_map(|c| c.instance_ids.iter().cloned())
            .collect()
    }

    fn timings(&self) -> &KubeletTimings {
        &self.kubelet.timings
    }

    /// The file system a run of `spec` sees: its mounts' data (a claim's by the claim's current
    /// uid, a missing claim's as an empty scratch store, a secret volume's as set up for the
    /// container) and a fresh writable layer.
    fn file_view(&self, spec: &ContainerSpec, secrets: &Materialized) -> FileView {
        let mounts = spec
            .mounts
            .iter()
            .map(|m| {
                let mut modes = HashMap::new();
                let key = match &m.source {
                    Source::Claim(claim) => {
                        let object = ObjectKey::new(
                            ResourceKind::PersistentVolumeClaim,
                            &self.key.namespace,
                            claim,
                        );
                        let uid = self
                            .kubelet
                            .store
                            .get(&object)
                            .and_then(|c| c["metadata"]["uid"].as_str().map(str::to_owned));
                        match uid {
                            Some(uid) => format!("claim/{uid}"),
                            None => format!("pod/{}/missing-claim-{claim}", self.uid),
                        }
                    }
                    Source::Pod(volume) => format!("pod/{}/{volume}", self.uid),
                    Source::Secret(source) => {
                        let files = Files::default();
                        let mut data = files.lock().unwrap_or_else(PoisonError::into_inner);
                        for file in secrets.get(&source.volume).into_iter().flatten() {
                            let key = format!("/{}", file.path);
                            data.insert(key.clone(), String::from_utf8_lossy(&file.value).into());
                            modes.insert(key, file.mode);
                        }
                        drop(data);
                        return ViewMount {
                            path: m.path.clone(),
                            files,
                            read_only: true,
                            sub_path: m.sub_path.clone(),
                            modes,
                        };
                    }
                };
                ViewMount {
                    path: m.path.clone(),
                    files: self.kubelet.volume_data.files(&key),
                    read_only: m.read_only,
                    sub_path: m.sub_path.clone(),
                    modes,
                }
            })
            .collect();
        FileView {
            mounts,
            layer: Files::default(),
        }
    }

    fn failure(&self, image: Option<&str>, pick: impl Fn(&Failure) -> bool) -> Option<Failure> {
        self.kubelet
            .failures
            .find(&self.key.namespace, &self.key.name, image, pick)
    }

    /// Writes the rendered status (and, on binding, the node name); `false` if the pod is gone.
    fn publish(&self, bind: bool) -> bool {
        let status = {
            let mut state = self.state();
            let rendered = render_status(&mut state, self.restart_policy, &self.pod_ip);
            serde_json::to_value(rendered).unwrap_or(Value::Null)
        };
        let result = self
            .kubelet
            .store
            .update(&self.key, Some(&self.uid), |pod| {
                let mut changed = false;
                if bind {
                    if !pod["metadata"]["deletionTimestamp"].is_null() {
                        return Err(());
                    }
                    pod["spec"]["nodeName"] = json!(NODE_NAME);
                    changed = true;
                }
                if pod["status"] != status {
                    pod["status"] = status;
                    changed = true;
                }
                Ok(changed)
            });
        match result {
            Ok(_) => self
                .kubelet
                .store
                .get(&self.key)
                .is_some_and(|pod| pod["metadata"]["uid"].as_str() == Some(self.uid.as_str())),
            Err(()) => false,
        }
    }

    /// Sleeps for `duration` unless the pod is told to stop first; `true` if it slept fully.
    async fn sleep(&self, duration: Duration, signal: &mut watch::Receiver<PodSignal>) -> bool {
        let stop = wait_for_stop(signal);
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            _ = stop => false,
        }
    }

    async fn drive(self: Arc<Self>, mut signal: watch::Receiver<PodSignal>) {
        // The scheduler.
        loop {
            if !self.sleep(self.timings().schedule, &mut signal).await {
                return self.finish(&signal).await;
            }
            if self
                .failure(None, |f| *f == Failure::Unschedulable)
                .is_some()
            {
                let first = {
                    let mut state = self.state();
                    let first = state.scheduling != Scheduling::Unschedulable;
                    state.scheduling = Scheduling::Unschedulable;
                    first
                };
                if first && !self.publish(false) {
                    return;
                }
                continue;
            }
            break;
        }
        {
            let mut state = self.state();
            state.scheduling = Scheduling::Bound;
            state.scheduled_at = Some(time::now());
        }
        if !self.publish(true) {
            return;
        }
        // The kubelet admits the pod and creates its sandbox.
        self.state().started_at = Some(time::now());
        if !self.publish(false) {
            return;
        }
        if self.state().initializing {
            if !self.sleep(self.timings().image_pull, &mut signal).await {
                return self.finish(&signal).await;
            }
            {
                let mut state = self.state();
                state.initializing = false;
                for c in &mut state.containers {
                    c.state = RunState::Waiting {
                        reason: "ContainerCreating".to_owned(),
                        message: None,
                    };
                }
            }
            if !self.publish(false) {
                return;
            }
        }
        let count = self.state().containers.len();
        let runs = (0..count).map(|index| {
            let this = Arc::clone(&self);
            let signal = signal.clone();
            async move { this.run_container(index, signal).await }
        });
        futures::future::join_all(runs).await;
        self.finish(&signal).await;
    }

    /// Every container has stopped: remove the pod if it is being deleted, else stay terminal
    /// until it is.
    async fn finish(&self, signal: &watch::Receiver<PodSignal>) {
        let mut signal = signal.clone();
        loop {
            let current = *signal.borrow_and_update();
            match current {
                PodSignal::Removed => return,
                PodSignal::Terminate { .. } => {
                    self.state().terminating = true;
                    if self.state().scheduling == Scheduling::Bound {
                        self.publish(false);
                    }
                    let _ = self
                        .kubelet
                        .store
                        .delete(&self.key, Some(&self.uid), |pod| {
                            // The kubelet's final delete, with grace period 0.
                            Ok(DeleteAction::RemoveAs(stamp_deletion(pod, 0)))
                        });
                    return;
                }
                PodSignal::Live | PodSignal::Evicted => {
                    if self.state().scheduling == Scheduling::Bound && !self.publish(false) {
                        return;
                    }
                }
            }
            if signal.changed().await.is_err() {
                return;
            }
        }
    }

    fn set_state(&self, index: usize, update: impl FnOnce(&mut ContainerRuntime)) -> bool {
        {
            let mut state = self.state();
            let Some(container) = state.containers.get_mut(index) else {
                return false;
            };
            update(container);
        }
        self.publish(false)
    }

    /// Pulls the image, going through ErrImagePull/ImagePullBackOff while a pull failure is
    /// injected; `false` if the pod stopped first.
    async fn pull_image(
        &self,
        index: usize,
        image: &str,
        signal: &mut watch::Receiver<PodSignal>,
    ) -> bool {
        loop {
            if !self.sleep(self.timings().image_pull, signal).await {
                return false;
            }
            if self
                .failure(Some(image), |f| *f == Failure::ImagePull)
                .is_none()
            {
                return true;
            }
            let message = format!(
                "rpc error: code = NotFound desc = failed to pull and unpack image \"{image}\": not found (injected by mcp-k8s-fake)"
            );
            if !self.set_state(index, |c| {
                c.state = RunState::Waiting {
                    reason: "ErrImagePull".to_owned(),
                    message: Some(message),
                };
            }) {
                return false;
            }
            if !self.sleep(self.timings().image_pull_backoff, signal).await {
                return false;
            }
            let message = format!("Back-off pulling image \"{image}\"");
            if !self.set_state(index, |c| {
                c.state = RunState::Waiting {
                    reason: "ImagePullBackOff".to_owned(),
                    message: Some(message),
                };
            }) {
                return false;
            }
            if !self.sleep(self.timings().image_pull_backoff, signal).await {
                return false;
            }
        }
    }

    /// The values of the container's `secretKeyRef` variables, or the kubelet's error
    /// (`makeEnvironmentVariables`) when a Secret or key is missing.
    fn resolve_secret_env(&self, spec: &ContainerSpec) -> Result<Vec<(String, String)>, String> {
        let mut resolved = Vec::new();
        for var in &spec.secret_env {
            let key = ObjectKey::new(ResourceKind::Secret, &self.key.namespace, &var.secret);
            let Some(secret) = self.kubelet.store.get(&key) else {
                if var.optional {
                    continue;
                }
                return Err(format!("secret \"{}\" not found", var.secret));
            };
            let value = secret["data"][var.key.as_str()]
                .as_str()
                .and_then(|b64| serde_json::from_value::<k8s_openapi::ByteString>(json!(b64)).ok());
            match value {
                Some(bytes) => resolved.push((
                    var.var.clone(),
                    String::from_utf8_lossy(&bytes.0).into_owned(),
                )),
                None if var.optional => {}
                None => {
                    return Err(format!(
                        "couldn't find key {} in Secret {}/{}",
                        var.key, self.key.namespace, var.secret
                    ));
                }
            }
        }
        Ok(resolved)
    }

    /// Sets up the container's secret volumes, waiting (in `ContainerCreating`: the real
    /// kubelet reports the failed mount as an event only) until every required Secret and key
    /// exists; `None` if the pod stopped first.
    async fn mount_volumes(
        &self,
        spec: &ContainerSpec,
        signal: &mut watch::Receiver<PodSignal>,
    ) -> Option<Materialized> {
        loop {
            if let Ok(materialized) = crate::secret_volumes::materialize(
                &self.kubelet.store,
                &self.key.namespace,
                &spec.mounts,
            ) {
                return Some(materialized);
            }
            if !self.sleep(self.timings().image_pull_backoff, signal).await {
                return None;
            }
        }
    }

    /// Waits in `CreateContainerConfigError` until every referenced Secret key exists; the
    /// resolved values, or `None` if the pod stopped first.
    async fn container_config(
        &self,
        index: usize,
        spec: &ContainerSpec,
        signal: &mut watch::Receiver<PodSignal>,
    ) -> Option<Vec<(String, String)>> {
        loop {
            match self.resolve_secret_env(spec) {
                Ok(resolved) => return Some(resolved),
                Err(message) => {
                    let changed = {
                        let state = self.state();
                        state.containers.get(index).is_none_or(|c| {
                            !matches!(&c.state, RunState::Waiting { reason, message: m }
                                if reason == "CreateContainerConfigError" && m.as_ref() == Some(&message))
                        })
                    };
                    if changed
                        && !self.set_state(index, |c| {
                            c.state = RunState::Waiting {
                                reason: "CreateContainerConfigError".to_owned(),
                                message: Some(message),
                            };
                        })
                    {
                        return None;
                    }
                }
            }
            if !self.sleep(self.timings().image_pull_backoff, signal).await {
                return None;
            }
        }
    }

    async fn run_container(&self, index: usize, mut signal: watch::Receiver<PodSignal>) {
        let Some(mut spec) = self.state().containers.get(index).map(|c| c.spec.clone()) else {
            return;
        };
        let literal_env = spec.env.clone();
        // Volumes are set up before the image is pulled, once for every run of the container.
        let Some(secrets) = self.mount_volumes(&spec, &mut signal).await else {
            return;
        };
        if !self.pull_image(index, &spec.image, &mut signal).await {
            return;
        }
        let image_id = format!(
            "{}@sha256:{}",
            spec.image.split(':').next().unwrap_or(&spec.image),
            names::random_hex(64)
        );
        let mut backoff = self.timings().restart_backoff;
        loop {
            // The kubelet builds the container's config (its environment) before each start.
            let Some(resolved) = self.container_config(index, &spec, &mut signal).await else {
                return;
            };
            spec.env = literal_env.iter().cloned().chain(resolved).collect();
            let container_id = format!("containerd://{}", names::random_hex(64));
            self.kubelet.logs.start(&container_id);
            let started = time::now();
            if !self.set_state(index, |c| {
                c.image_id = Some(image_id.clone());
                c.instance_ids.push(container_id.clone());
                c.state = RunState::Running {
                    container_id: container_id.clone(),
                    started,
                };
            }) {
                return;
            }
            let exit = self
                .execute(&spec, &secrets, &container_id, &mut signal)
                .await;
            self.kubelet.logs.finish(&container_id);
            let Some(exit) = exit else {
                return;
            };
            let terminated = Terminated {
                container_id: container_id.clone(),
                exit_code: exit.code,
                reason: exit.reason.to_owned(),
                started,
                finished: time::now(),
            };
            let stopping = !matches!(*signal.borrow(), PodSignal::Live);
            if !self.set_state(index, |c| {
                c.state = RunState::Terminated(terminated.clone());
            }) {
                return;
            }
            let restart = match self.restart_policy {
                RestartPolicy::Always => true,
                RestartPolicy::OnFailure => exit.code != 0,
                RestartPolicy::Never => false,
            };
            if stopping || !restart {
                return;
            }
            let message = format!(
                "back-off {}ms restarting failed container={} pod={}_{}({})",
                backoff.as_millis(),
                spec.name,
                self.key.name,
                self.key.namespace,
                self.uid
            );
            if !self.set_state(index, |c| {
                c.last = Some(terminated.clone());
                c.state = RunState::Waiting {
                    reason: "CrashLoopBackOff".to_owned(),
                    message: Some(message),
                };
            }) {
                return;
            }
            if !self.sleep(backoff, &mut signal).await {
                return;
            }
            backoff = backoff
                .saturating_mul(2)
                .min(self.timings().restart_backoff.saturating_mul(8));
            if let Some(c) = self.state().containers.get_mut(index) {
                c.restart_count += 1;
            }
        }
    }

    /// Runs one container instance until it exits (`Some`) or the pod vanishes (`None`).
    async fn execute(
        &self,
        spec: &ContainerSpec,
        secrets: &Materialized,
        container_id: &str,
        signal: &mut watch::Receiver<PodSignal>,
    ) -> Option<Exit> {
        let image = Some(spec.image.as_str());
        let injected = self.failure(image, |f| {
            matches!(f, Failure::CrashLoop { .. } | Failure::OomKilled)
        });
        let steps = fixture::program_for(&spec.command, &spec.args);
        let ignores_sigterm = self
            .failure(image, |f| *f == Failure::IgnoreSigterm)
            .is_some()
            || steps.contains(&Step::IgnoreSigterm);
        if injected.is_none()
            && let Some(program) = self.kubelet.programs.lookup(&spec.image)
        {
            return self
                .execute_real(spec, secrets, &program, container_id, signal)
                .await;
        }
        let crash_after = self.timings().crash_after;
        let logs = Arc::clone(&self.kubelet.logs);
        let view = self.file_view(spec, secrets);
        let program = async move {
            match injected {
                Some(Failure::OomKilled) => {
                    tokio::time::sleep(crash_after).await;
                    Exit {
                        code: 137,
                        reason: "OOMKilled",
                    }
                }
                Some(Failure::CrashLoop { exit_code }) => {
                    tokio::time::sleep(crash_after).await;
                    Exit::from_code(exit_code)
                }
                _ => run_program(&steps, spec, &logs, container_id, &view).await,
            }
        };
        let mut program = pin!(program);
        let stop = tokio::select! {
            exit = &mut program => return Some(exit),
            stop = wait_for_stop(signal) => stop,
        };
        let deadline = match stop {
            PodSignal::Terminate { deadline } => deadline,
            PodSignal::Removed | PodSignal::Live | PodSignal::Evicted => return None,
        };
        // SIGTERM: a normal process exits after a moment; one that ignores it is SIGKILLed when
        // the grace period ends.
        let (stop_at, forced) = if ignores_sigterm {
            (
                deadline,
                Exit {
                    code: 137,
                    reason: "Error",
                },
            )
        } else {
            (
                deadline.min(later(self.timings().termination)),
                Exit {
                    code: 143,
                    reason: "Error",
                },
            )
        };
        tokio::select! {
            exit = &mut program => Some(exit),
            () = tokio::time::sleep_until(stop_at) => Some(forced),
            () = wait_for_removed(signal) => None,
        }
    }
}

impl PodRuntime {
    /// Runs one container instance as a real process: SIGTERM on a graceful delete, SIGKILL
    /// when the grace period ends or the pod is removed.
    async fn execute_real(
        &self,
        spec: &ContainerSpec,
        secrets: &Materialized,
        program: &std::path::Path,
        container_id: &str,
        signal: &mut watch::Receiver<PodSignal>,
    ) -> Option<Exit> {
        // No mount namespace: the secret volumes go to a private host directory for this run,
        // and variables naming a file in them are pointed at the copy.
        let run_dir = std::env::temp_dir().join(format!(
            "mcp-k8s-fake-secrets-{}-{}",
            std::process::id(),
            container_id.rsplit('/').next().unwrap_or(container_id)
        ));
        let host = if secrets.is_empty() {
            None
        } else {
            match HostSecrets::write(run_dir, secrets) {
                Ok(host) => Some(host),
                Err(error) => {
                    self.kubelet.logs.append(
                        container_id,
                        LogStream::Stderr,
                        &format!("setting up secret volumes: {error}"),
                    );
                    return Some(Exit {
                        code: 128,
                        reason: "StartError",
                    });
                }
            }
        };
        let env: Vec<(String, String)> = spec
            .env
            .iter()
            .map(|(k, v)| {
                let v = host
                    .as_ref()
                    .and_then(|h| h.translate(&spec.mounts, v))
                    .unwrap_or_else(|| v.clone());
                (k.clone(), v)
            })
            .collect();
        let launch = Launch {
            program,
            command: &spec.command,
            args: &spec.args,
            env: &env,
            stdin: spec.stdin,
            stdin_once: spec.stdin_once,
        };
        let mut process = match RealProcess::spawn(
            &launch,
            &self.kubelet.logs,
            &self.kubelet.hubs,
            container_id,
        ) {
            Ok(process) => process,
            Err(error) => {
                // What a runtime reports when the entry point cannot be executed.
                self.kubelet.logs.append(
                    container_id,
                    LogStream::Stderr,
                    &format!("exec {}: {error}", program.display()),
                );
                return Some(Exit {
                    code: 128,
                    reason: "StartError",
                });
            }
        };
        let stop = tokio::select! {
            code = process.wait() => return Some(Exit::from_code(code)),
            stop = wait_for_stop(signal) => stop,
        };
        let PodSignal::Terminate { deadline } = stop else {
            process.kill().await;
            return None;
        };
        process.terminate();
        let exit = tokio::select! {
            code = process.wait() => Some(code),
            () = tokio::time::sleep_until(deadline) => None,
            () = wait_for_removed(signal) => {
                process.kill().await;
                return None;
            }
        };
        let code = match exit {
            Some(code) => code,
            None => process.kill().await,
        };
        Some(Exit::from_code(code))
    }
}

/// `now + duration`, or a year from now when that overflows (a huge grace period from input).
fn later(duration: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(duration)
        .or_else(|| now.checked_add(Duration::from_secs(365 * 24 * 3600)))
        .unwrap_or(now)
}

/// Resolves when the pod is told to stop (terminate or removed).
async fn wait_for_stop(signal: &mut watch::Receiver<PodSignal>) -> PodSignal {
    loop {
        let current = *signal.borrow_and_update();
        if current != PodSignal::Live {
            return current;
        }
        if signal.changed().await.is_err() {
            return PodSignal::Removed;
        }
    }
}

/// Resolves when the pod object is removed.
async fn wait_for_removed(signal: &mut watch::Receiver<PodSignal>) {
    loop {
        if *signal.borrow_and_update() == PodSignal::Removed {
            return;
        }
        if signal.changed().await.is_err() {
            return;
        }
    }
}

/// The value of variable `name` in the container's environment.
fn env_value<'a>(spec: &'a ContainerSpec, name: &str) -> Option<&'a str> {
    spec.env
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Executes a container program; a program without `Exit` runs until it is stopped.
async fn run_program(
    steps: &[Step],
    spec: &ContainerSpec,
    logs: &LogStore,
    container_id: &str,
    files: &FileView,
) -> Exit {
    for step in steps {
        match step {
            Step::PrintEnv(name) => {
                let value = spec.env.iter().find(|(k, _)| k == name).map(|(_, v)| v);
                let line = mcp_orchestrator_api::fixture::env_line(name, value.map(String::as_str));
                logs.append(container_id, LogStream::Stdout, &line);
            }
            Step::PrintCwd => {
                let cwd = spec.working_dir.as_deref().unwrap_or("/");
                logs.append(container_id, LogStream::Stdout, cwd);
            }
            // Decided before the program starts (`ignores_sigterm` in `execute`).
            Step::IgnoreSigterm => {}
            Step::WriteFile { path, content } => {
                let error = files.write(path, content);
                let line = mcp_orchestrator_api::fixture::write_line(path, error);
                logs.append(container_id, LogStream::Stdout, &line);
            }
            Step::PrintFile(path) => {
                let line = files
                    .read(path)
                    .unwrap_or_else(|| mcp_orchestrator_api::fixture::missing_line(path));
                logs.append(container_id, LogStream::Stdout, &line);
            }
            // A simulated container has no network of its own (the fake runs no CNI).
            Step::Connect(target) => {
                let line = mcp_orchestrator_api::fixture::connect_line(
                    target,
                    Some("a simulated container of the fake kubelet has no network"),
                );
                logs.append(container_id, LogStream::Stdout, &line);
            }
            Step::PrintEnvFile(name) => {
                let line = env_value(spec, name)
                    .and_then(|path| files.read(path))
                    .unwrap_or_else(|| {
                        mcp_orchestrator_api::fixture::missing_line(
                            &mcp_orchestrator_api::fixture::env_file_name(name),
                        )
                    });
                logs.append(container_id, LogStream::Stdout, &line);
            }
            Step::PrintEnvFileMode(name) => {
                let line = env_value(spec, name)
                    .and_then(|path| files.mode(path))
                    .map_or_else(
                        || {
                            mcp_orchestrator_api::fixture::missing_line(
                                &mcp_orchestrator_api::fixture::env_file_name(name),
                            )
                        },
                        |mode| mcp_orchestrator_api::fixture::mode_line(name, mode),
                    );
                logs.append(container_id, LogStream::Stdout, &line);
            }
            // The fake cluster has no pod network: nothing is sent anywhere.
            Step::Fetch(url) => {
                let line = mcp_orchestrator_api::fixture::fetch_line(
                    url,
                    Err("the fake kubelet has no pod network"),
                    "(not sent)",
                );
                logs.append(container_id, LogStream::Stdout, &line);
            }
            Step::Stdout(text) => {
                logs.append(container_id, LogStream::Stdout, text);
            }
            Step::Stderr(text) => {
                logs.append(container_id, LogStream::Stderr, text);
            }
            Step::StdoutLines { prefix, count } => {
                for n in 1..=*count {
                    logs.append(container_id, LogStream::Stdout, &format!("{prefix}-{n}"));
                }
            }
            Step::Sleep(duration) => tokio::time::sleep(*duration).await,
            Step::Exit(code) => return Exit::from_code(*code),
            // Serving MCP needs the real program (`FakeKubeHandle::run_image_as`); interpreted,
            // the container runs until it is stopped.
            Step::Serve(_) => break,
        }
    }
    std::future::pending().await
}

fn condition(
    transitions: &mut HashMap<&'static str, (bool, Timestamp)>,
    type_: &'static str,
    status: bool,
    reason: Option<&str>,
    message: Option<String>,
) -> PodCondition {
    let now = time::now();
    let since = match transitions.get(type_) {
        Some((previous, since)) if *previous == status => *since,
        _ => {
            transitions.insert(type_, (status, now));
            now
        }
    };
    PodCondition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.map(str::to_owned),
        message,
        last_transition_time: Some(time::k8s(since)),
        ..PodCondition::default()
    }
}

fn terminated_state(t: &Terminated) -> ContainerState {
    ContainerState {
        terminated: Some(ContainerStateTerminated {
            container_id: Some(t.container_id.clone()),
            exit_code: t.exit_code,
            reason: Some(t.reason.clone()),
            started_at: Some(time::k8s(t.started)),
            finished_at: Some(time::k8s(t.finished)),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    }
}

/// The pod phase, following the kubelet's rules.
fn phase(
    containers: &[ContainerRuntime],
    policy: RestartPolicy,
    terminating: bool,
) -> &'static str {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for container in containers {
        match &container.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            RunState::Waiting { .. } => match &container.last {
                Some(last) => {
                    stopped += 1;
                    if last.exit_code == 0 {
                        succeeded += 1;
                    }
                }
                None => waiting += 1,
            },
        }
    }
    if terminating && running == 0 {
        return if stopped > 0 && stopped == succeeded && waiting == 0 {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match policy {
        RestartPolicy::Always => "Running",
        _ if stopped == succeeded => "Succeeded",
        RestartPolicy::Never => "Failed",
        RestartPolicy::OnFailure => "Running",
    }
}

/// One container's status.
fn container_status(c: &ContainerRuntime) -> ContainerStatus {
    let (state, container_id, running) = match &c.state {
        RunState::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..ContainerState::default()
            },
            None,
            false,
        ),
        RunState::Running {
            container_id,
            started,
        } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(time::k8s(*started)),
                }),
                ..ContainerState::default()
            },
            Some(container_id.clone()),
            true,
        ),
        RunState::Terminated(t) => (terminated_state(t), Some(t.container_id.clone()), false),
    };
    ContainerStatus {
        name: c.spec.name.clone(),
        image: c.spec.image.clone(),
        image_id: c.image_id.clone().unwrap_or_default(),
        container_id,
        ready: running,
        started: Some(running),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(c.last.as_ref().map(terminated_state).unwrap_or_default()),
        ..ContainerStatus::default()
    }
}

/// One container's status after an eviction: a container that had not ended is one the runtime
/// no longer knows, which the kubelet's status manager reports as terminated with reason
/// `ContainerStatusUnknown`, exit code 137 and no container id (`generateAPIPodStatus`).
fn lost_container_status(c: &ContainerRuntime) -> ContainerStatus {
    let mut status = container_status(c);
    if matches!(c.state, RunState::Terminated(_)) {
        return status;
    }
    status.container_id = None;
    status.ready = false;
    status.started = Some(false);
    status.state = Some(ContainerState {
        terminated: Some(ContainerStateTerminated {
            exit_code: 137,
            reason: Some("ContainerStatusUnknown".to_owned()),
            message: Some(
                "The container could not be located when the pod was terminated".to_owned(),
            ),
            ..ContainerStateTerminated::default()
        }),
        ..ContainerState::default()
    });
    status
}

/// The reason and message of the `Ready` and `ContainersReady` conditions.
fn readiness(
    ready: bool,
    terminal: bool,
    unready: &[&str],
) -> (Option<&'static str>, Option<String>) {
    if ready {
        (None, None)
    } else if terminal {
        (Some("PodCompleted"), None)
    } else {
        (
            Some("ContainersNotReady"),
            Some(format!(
                "containers with unready status: [{}]",
                unready.join(" ")
            )),
        )
    }
}

/// The pod status as the kubelet would report it.
/// The status of a pod the kubelet has not started (`Err`), else when it started it (`Ok`).
fn not_started_status(state: &mut PodState) -> Result<Timestamp, Box<PodStatus>> {
    let transitions = &mut state.transitions;
    match state.scheduling {
        Scheduling::Pending => {
            return Err(Box::new(PodStatus {
                phase: Some("Pending".to_owned()),
                ..PodStatus::default()
            }));
        }
        Scheduling::Unschedulable => {
            return Err(Box::new(PodStatus {
                phase: Some("Pending".to_owned()),
                conditions: Some(vec![condition(
                    transitions,
                    "PodScheduled",
                    false,
                    Some("Unschedulable"),
                    Some("0/1 nodes are available: 1 node(s) were unschedulable (injected by mcp-k8s-fake). preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling.".to_owned()),
                )]),
                ..PodStatus::default()
            }));
        }
        Scheduling::Bound => {}
    }
    let Some(started_at) = state.started_at else {
        // Bound by the scheduler, not yet seen by the kubelet.
        return Err(Box::new(PodStatus {
            phase: Some("Pending".to_owned()),
            conditions: Some(vec![condition(
                transitions,
                "PodScheduled",
                true,
                None,
                None,
            )]),
            ..PodStatus::default()
        }));
    };
    Ok(started_at)
}

fn render_status(state: &mut PodState, policy: RestartPolicy, pod_ip: &str) -> PodStatus {
    let started_at = match not_started_status(state) {
        Ok(started_at) => started_at,
        Err(status) => return *status,
    };
    let transitions = &mut state.transitions;
    let evicted = state.evicted.clone();
    let initializing = state.initializing;
    let phase = if evicted.is_some() {
        "Failed"
    } else {
        phase(&state.containers, policy, state.terminating)
    };
    let terminal = matches!(phase, "Succeeded" | "Failed");
    let unready: Vec<&str> = state
        .containers
        .iter()
        .filter(|c| !matches!(c.state, RunState::Running { .. }))
        .map(|c| c.spec.name.as_str())
        .collect();
    let ready = unready.is_empty();
    let (ready_reason, ready_message) = readiness(ready, terminal, &unready);
    let mut conditions = vec![
        condition(
            transitions,
            "PodReadyToStartContainers",
            !terminal,
            None,
            None,
        ),
        condition(
            transitions,
            "Initialized",
            !initializing,
            initializing.then_some("ContainersNotInitialized"),
            None,
        ),
        condition(
            transitions,
            "Ready",
            ready,
            ready_reason,
            ready_message.clone(),
        ),
        condition(
            transitions,
            "ContainersReady",
            ready,
            ready_reason,
            ready_message,
        ),
        condition(transitions, "PodScheduled", true, None, None),
    ];
    conditions.extend(evicted.as_ref().map(|message| {
        let reason = Some("TerminationByKubelet");
        condition(
            transitions,
            "DisruptionTarget",
            true,
            reason,
            Some(message.clone()),
        )
    }));
    let render = if evicted.is_some() {
        lost_container_status
    } else {
        container_status
    };
    let container_statuses = state.containers.iter().map(render).collect();
    PodStatus {
        phase: Some(phase.to_owned()),
        reason: evicted.as_ref().map(|_| "Evicted".to_owned()),
        message: evicted,
        conditions: Some(conditions),
        container_statuses: Some(container_statuses),
        host_ip: Some(NODE_IP.to_owned()),
        host_ips: Some(vec![HostIP {
            ip: NODE_IP.to_owned(),
        }]),
        pod_ip: Some(pod_ip.to_owned()),
        pod_ips: Some(vec![PodIP {
            ip: pod_ip.to_owned(),
        }]),
        start_time: Some(time::k8s(started_at)),
        ..PodStatus::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(state: RunState, last: Option<i32>) -> ContainerRuntime {
        let now = time::now();
        ContainerRuntime {
            spec: ContainerSpec {
                name: "c".to_owned(),
                image: "img".to_owned(),
                command: Vec::new(),
                args: Vec::new(),
                env: Vec::new(),
                secret_env: Vec::new(),
                working_dir: None,
                stdin: false,
                stdin_once: false,
                mounts: Vec::new(),
            },
            image_id: None,
            state,
            last: last.map(|code| Terminated {
                container_id: "x".to_owned(),
                exit_code: code,
                reason: "Error".to_owned(),
                started: now,
                finished: now,
            }),
            restart_count: 0,
            instance_ids: Vec::new(),
        }
    }

    fn terminated(code: i32) -> RunState {
        let now = time::now();
        RunState::Terminated(Terminated {
            container_id: "x".to_owned(),
            exit_code: code,
            reason: "Error".to_owned(),
            started: now,
            finished: now,
        })
    }

    fn waiting() -> RunState {
        RunState::Waiting {
            reason: "CrashLoopBackOff".to_owned(),
            message: None,
        }
    }

    #[test]
    fn phases_follow_the_kubelet_rules() {
        let running = RunState::Running {
            container_id: "x".to_owned(),
            started: time::now(),
        };
        let cases = [
            (
                vec![container(waiting(), None)],
                RestartPolicy::Always,
                false,
                "Pending",
            ),
            (
                vec![container(running.clone(), None)],
                RestartPolicy::Never,
                false,
                "Running",
            ),
            (
                vec![container(terminated(0), None)],
                RestartPolicy::Never,
                false,
                "Succeeded",
            ),
            (
                vec![container(terminated(1), None)],
                RestartPolicy::Never,
                false,
                "Failed",
            ),
            (
                vec![container(terminated(1), None)],
                RestartPolicy::OnFailure,
                false,
                "Running",
            ),
            (
                vec![container(terminated(0), None)],
                RestartPolicy::OnFailure,
                false,
                "Succeeded",
            ),
            (
                vec![container(waiting(), Some(1))],
                RestartPolicy::Always,
                false,
                "Running",
            ),
            (
                vec![container(running, None), container(terminated(0), None)],
                RestartPolicy::Never,
                false,
                "Running",
            ),
            (
                vec![container(terminated(143), None)],
                RestartPolicy::Always,
                true,
                "Failed",
            ),
            (
                vec![container(terminated(0), None)],
                RestartPolicy::Always,
                true,
                "Succeeded",
            ),
        ];
        for (containers, policy, terminating, expected) in cases {
            assert_eq!(
                phase(&containers, policy, terminating),
                expected,
                "{containers:?} {policy:?}"
            );
        }
    }
}
