//! Starting (create the instance's objects, undo on failure) and stopping (graceful delete, wait
//! on a watch, force, remove the companion objects).
//!
//! Creation order: PersistentVolumeClaims and the NetworkPolicy first, then the Pod, then (at
//! once) the Service, the owner patches and the egress proxy. Claims must exist before the pod can mount them, and the policy is in place before
//! the pod starts so the server never runs unisolated. The Service comes after the pod and carries
//! an ownerReference to it; the claims and the policy, created before the pod had a uid, get
//! theirs by a merge patch once it exists (the Role grants `patch` on them for exactly this).
//! So every per-instance companion is owned by its pod, and the garbage collector removes it
//! however the pod goes (eviction, node drain, pod garbage collection, `kubectl delete`); `stop`
//! still removes them by label, and sweeps the leftovers of a pod that is already gone.
//! Persistent claims (one per server and persistent spec volume) come first, are created only
//! when missing, carry no instance label and no owner, and are left alone by stop and
//! roll-back (see `volumes`). For a policy naming hosts, the namespace's egress proxy is
//! ensured once the pod exists (see `egress_proxy`); it is shared, so neither stop nor
//! roll-back removes it.

use std::fmt::Debug;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::wait::await_condition;
use kube::{Resource, ResourceExt};
use mcp_k8s_resources::names::instance_selector;
use mcp_k8s_resources::{BuildOptions, InstanceResources, build_instance};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{
    GcReport, InstanceId, McpServer, Orphan, OrphanKind, StartOptions, Timestamp, labels,
    new_instance_name,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::KubernetesOrchestrator;
use crate::error::{
    RETRY_ATTEMPTS, RETRY_FIRST_DELAY, RETRY_MAX_DELAY, Target, idempotent, map_error, once,
};
use crate::status::{has_run, is_finished, is_managed};

/// How long after the grace period a stop waits for the pod to go before forcing it.
pub(crate) const STOP_MARGIN: Duration = Duration::from_secs(10);
/// How long a stop waits after forcing the deletion before giving up with `Timeout`.
pub(crate) const FORCE_WAIT: Duration = Duration::from_secs(10);

/// An object `start` created (or may have created), to remove if a later step fails.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Created {
    Claim(String),
    Policy(String),
    Pod(String),
    Service(String),
}

pub(crate) async fn start(
    o: &KubernetesOrchestrator,
    spec: &McpServer,
    options: &StartOptions,
) -> Result<InstanceId> {
    let spec = options.apply(spec)?;
    let mut retried = false;
    loop {
        let id = InstanceId::new(new_instance_name(&spec.name));
        let resources = build_instance(
            &spec,
            &id,
            &BuildOptions::from_config(&o.config, Timestamp::now()),
        )?;
        match Box::pin(create_instance(o, &id, resources)).await {
            Ok(()) => return Ok(id),
            // Names are random, so a collision is a fluke (or a leftover): try a fresh name once.
            Err(OrchestratorError::AlreadyExists { what }) if !retried => {
                tracing::warn!(%id, %what, "instance name taken; retrying with a fresh name");
                retried = true;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn create_instance(
    o: &KubernetesOrchestrator,
    id: &InstanceId,
    resources: InstanceResources,
) -> Result<()> {
    let mut created = Vec::new();
    let result = Box::pin(create_all(o, id.as_str(), resources, &mut created)).await;
    if result.is_err() {
        roll_back(o, id.as_str(), &created).await;
    }
    result
}

async fn create_all(
    o: &KubernetesOrchestrator,
    id: &str,
    resources: InstanceResources,
    created: &mut Vec<Created>,
) -> Result<()> {
    for claim in &resources.persistent_pvcs {
        crate::volumes::ensure_persistent_claim(o, claim, id).await?;
    }
    for claim in &resources.pvcs {
        create(
            &o.claims,
            "persistentvolumeclaim",
            claim,
            id,
            created,
            Created::Claim,
        )
        .await?;
    }
    if let Some(policy) = &resources.network_policy {
        create(
            &o.policies,
            "networkpolicy",
            policy,
            id,
            created,
            Created::Policy,
        )
        .await?;
    }
    let pod = create(&o.pods, "pod", &resources.pod, id, created, Created::Pod).await?;
    // The rest only needs the pod, not one another: sent at once, they cost the start one
    // round trip instead of one each (the status polls of a wait begin sooner).
    let owner = owner_reference(&pod);
    let before_pod = created.clone();
    let mut service_created = Vec::new();
    let (service, proxy) = (resources.service, resources.egress_proxy);
    let service = async {
        let Some(mut service) = service else {
            return Ok(());
        };
        if let Some(owner) = &owner {
            service.metadata.owner_references = Some(vec![owner.clone()]);
        }
        create(
            &o.services,
            "service",
            &service,
            id,
            &mut service_created,
            Created::Service,
        )
        .await
        .map(drop)
    };
    // After the pod, so that a garbage collection racing this start cannot leave the server
    // without its proxy (see `egress_proxy`).
    let proxy = async {
        match &proxy {
            Some(proxy) => Box::pin(crate::egress_proxy::ensure(o, proxy, id)).await,
            None => Ok(()),
        }
    };
    let owners = futures::future::try_join_all(before_pod.iter().filter_map(|object| {
        let owner = owner.as_ref()?;
        Some(async move {
            match object {
                Created::Claim(name) => {
                    own(&o.claims, "persistentvolumeclaim", name, id, owner).await
                }
                Created::Policy(name) => own(&o.policies, "networkpolicy", name, id, owner).await,
                Created::Pod(_) | Created::Service(_) => Ok(()),
            }
        })
    }));
    let (service, proxy, owners) = tokio::join!(service, proxy, owners);
    // Recorded whatever failed, so that a roll-back removes it.
    created.extend(service_created);
    service?;
    proxy?;
    owners?;
    Ok(())
}

/// Makes the pod the owner of a companion created before it (a merge patch of
/// `metadata.ownerReferences`: idempotent, so retried like a read).
async fn own<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    instance: &str,
    owner: &OwnerReference,
) -> Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    #[derive(Debug, Serialize)]
    struct OwnerPatch<'a> {
        metadata: OwnerMeta<'a>,
    }
    #[derive(Debug, Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OwnerMeta<'a> {
        owner_references: [&'a OwnerReference; 1],
    }
    let target = Target::object("set the owner of", kind, name, instance);
    let patch = Patch::Merge(OwnerPatch {
        metadata: OwnerMeta {
            owner_references: [owner],
        },
    });
    let params = PatchParams::default();
    idempotent(&target, || Box::pin(api.patch(name, &params, &patch)))
        .await
        .map(drop)
}

/// Creates one object (a single attempt: a create is not idempotent). An object whose create
/// failed in a way that leaves its fate unknown (a dropped connection, a 5xx) is recorded too,
/// so the roll-back removes it if it was created after all.
async fn create<K>(
    api: &Api<K>,
    kind: &'static str,
    object: &K,
    instance: &str,
    created: &mut Vec<Created>,
    record: fn(String) -> Created,
) -> Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let target = Target::object("create", kind, &name, instance);
    let result = once(
        &target,
        Box::pin(api.create(&PostParams::default(), object)),
    )
    .await;
    match &result {
        Ok(_) => created.push(record(name)),
        Err(e) if e.is_transient() => created.push(record(name)),
        Err(_) => {}
    }
    result
}

fn owner_reference(pod: &Pod) -> Option<OwnerReference> {
    Some(OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: pod.metadata.name.clone()?,
        uid: pod.metadata.uid.clone()?,
        ..OwnerReference::default()
    })
}

/// Deletes what a failed start created, newest first; failures are logged, not returned, so the
/// caller sees the error that made the start fail.
async fn roll_back(o: &KubernetesOrchestrator, id: &str, created: &[Created]) {
    let now = DeleteParams {
        grace_period_seconds: Some(0),
        ..DeleteParams::default()
    };
    for object in created.iter().rev() {
        let result = match object {
            Created::Service(name) => delete_named(&o.services, "service", name, id, &now).await,
            Created::Pod(name) => delete_named(&o.pods, "pod", name, id, &now).await,
            Created::Policy(name) => {
                delete_named(&o.policies, "networkpolicy", name, id, &now).await
            }
            Created::Claim(name) => {
                delete_named(&o.claims, "persistentvolumeclaim", name, id, &now).await
            }
        };
        if let Err(error) = result {
            tracing::warn!(instance = id, ?object, %error, "could not remove an object of a failed start");
        }
    }
}

/// Deletes one object; `Ok(true)` when it is gone (or was already), `Ok(false)` when its
/// deletion is in progress (graceful pod termination, finalizers).
async fn delete_named<K>(
    api: &Api<K>,
    kind: &'static str,
    name: &str,
    instance: &str,
    params: &DeleteParams,
) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let target = Target::object("delete", kind, name, instance);
    match idempotent(&target, || Box::pin(api.delete(name, params))).await {
        Ok(either) => Ok(either.is_right()),
        Err(e) if e.is_not_found() => Ok(true),
        Err(e) => Err(e),
    }
}

/// Deletes every managed object of `kind` labelled with the instance
/// (`mcpctl.io/managed=true,mcpctl.io/instance=<id>`). Lists then deletes one by one: Services
/// have no `deletecollection`, and the backend's Role does not grant it.
async fn delete_labelled<K>(api: &Api<K>, kind: &'static str, id: &str) -> Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let selector = format!("{}=true,{}", labels::MANAGED, instance_selector(id));
    let params = ListParams::default().labels(&selector);
    let target = Target::collection("list", kind);
    let list = idempotent(&target, || Box::pin(api.list(&params))).await?;
    let mut first_error = None;
    for object in list.items {
        let name = object.name_any();
        if let Err(e) = delete_named(api, kind, &name, id, &DeleteParams::default()).await {
            first_error.get_or_insert(e);
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// See [`KubernetesOrchestrator::sweep_orphans`].
pub(crate) async fn sweep_orphans(
    o: &KubernetesOrchestrator,
    min_age: Duration,
) -> Result<Vec<String>> {
    let report = find_orphans(o, min_age, false).await?;
    Ok(report
        .orphans
        .iter()
        .filter(|orphan| orphan.removed)
        .map(|orphan| format!("{}/{}", kind_name(orphan.kind), orphan.name))
        .collect())
}

fn kind_name(kind: OrphanKind) -> &'static str {
    match kind {
        OrphanKind::Service => "service",
        OrphanKind::NetworkPolicy => "networkpolicy",
        _ => "persistentvolumeclaim",
    }
}

/// The companions (Services, NetworkPolicies, per-instance PersistentVolumeClaims) whose
/// instance has no pod and that are older than `min_age`, removed unless `dry_run`. Persistent
/// claims carry no instance label and are never considered.
pub(crate) async fn find_orphans(
    o: &KubernetesOrchestrator,
    min_age: Duration,
    dry_run: bool,
) -> Result<GcReport> {
    let managed = format!("{}=true", labels::MANAGED);
    let params = ListParams::default().labels(&managed);
    let target = Target::collection("list", "pod");
    let pods = idempotent(&target, || Box::pin(o.pods.list(&params))).await?;
    let live: std::collections::BTreeSet<String> = pods
        .items
        .iter()
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    let cutoff = jiff_cutoff(min_age);
    let sweep = Sweep {
        params: &params,
        live: &live,
        cutoff,
        dry_run,
    };
    let (services, policies, claims) = futures::join!(
        remove_orphans(&o.services, "service", OrphanKind::Service, &sweep),
        remove_orphans(
            &o.policies,
            "networkpolicy",
            OrphanKind::NetworkPolicy,
            &sweep
        ),
        remove_orphans(
            &o.claims,
            "persistentvolumeclaim",
            OrphanKind::Volume,
            &sweep
        ),
    );
    let mut report = GcReport::new(dry_run);
    report.orphans = services?;
    report.orphans.extend(policies?);
    report.orphans.extend(claims?);
    report.sort();
    Ok(report)
}

/// What [`remove_orphans`] looks for and whether it removes.
struct Sweep<'a> {
    params: &'a ListParams,
    live: &'a std::collections::BTreeSet<String>,
    cutoff: Option<Timestamp>,
    dry_run: bool,
}

/// The creation time before which a companion counts as old enough to sweep.
fn jiff_cutoff(min_age: Duration) -> Option<Timestamp> {
    let now = Timestamp::now();
    let age = jiff::SignedDuration::try_from(min_age).ok()?;
    now.checked_sub(age).ok()
}

async fn remove_orphans<K>(
    api: &Api<K>,
    kind: &'static str,
    orphan_kind: OrphanKind,
    sweep: &Sweep<'_>,
) -> Result<Vec<Orphan>>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let Sweep {
        params,
        live,
        cutoff,
        dry_run,
    } = *sweep;
    let target = Target::collection("list", kind);
    let list = idempotent(&target, || Box::pin(api.list(params))).await?;
    let mut removed = Vec::new();
    for object in list.items {
        let meta = object.meta();
        let Some(instance) = meta.labels.as_ref().and_then(|l| l.get(labels::INSTANCE)) else {
            continue;
        };
        let old_enough = match (cutoff, meta.creation_timestamp.as_ref()) {
            (Some(cutoff), Some(created)) => created.0 <= cutoff,
            // Without a creation time (or with an unrepresentable age) it is kept.
            _ => false,
        };
        if live.contains(instance) || !old_enough {
            continue;
        }
        let name = object.name_any();
        if !dry_run {
            delete_named(api, kind, &name, instance, &DeleteParams::default()).await?;
        }
        removed.push(Orphan {
            kind: orphan_kind,
            name,
            reason: format!("its pod {instance} is gone"),
            removed: !dry_run,
        });
    }
    Ok(removed)
}

/// Removes the instance's Services, NetworkPolicies and PersistentVolumeClaims.
async fn delete_companions(o: &KubernetesOrchestrator, id: &str) -> Result<()> {
    let (services, policies, claims) = futures::join!(
        delete_labelled(&o.services, "service", id),
        delete_labelled(&o.policies, "networkpolicy", id),
        delete_labelled(&o.claims, "persistentvolumeclaim", id),
    );
    services.and(policies).and(claims)
}

pub(crate) async fn stop(
    o: &KubernetesOrchestrator,
    id: &InstanceId,
    grace: Duration,
) -> Result<()> {
    let target = Target::pod("get pod", id.as_str());
    let pod = match idempotent(&target, || Box::pin(o.pods.get(id.as_str()))).await {
        Ok(pod) if is_managed(&pod) => pod,
        // A namesake we do not manage: not ours to stop, nor its companions.
        Ok(_) => return Err(OrchestratorError::not_found(id.as_str())),
        Err(e) if e.is_not_found() => {
            // No pod, but a stop that failed half-way or a pod deleted by hand can leave the
            // companions behind: sweep them (they are ours by their labels), then report.
            if let Err(sweep) = delete_companions(o, id.as_str()).await {
                tracing::warn!(%id, error = %sweep, "could not remove leftover objects of an instance");
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let uid = pod.metadata.uid.clone();
    let grace_seconds =
        u32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).unwrap_or(u32::MAX);
    let result = terminate(o, id.as_str(), uid, grace_seconds, grace + STOP_MARGIN).await;
    let companions = delete_companions(o, id.as_str()).await;
    result.and(companions)
}

/// Deletes the pod gracefully and waits for it to go; forces it after `patience`.
async fn terminate(
    o: &KubernetesOrchestrator,
    id: &str,
    uid: Option<String>,
    grace_seconds: u32,
    patience: Duration,
) -> Result<()> {
    let delete = |seconds: u32| DeleteParams {
        grace_period_seconds: Some(seconds),
        // Delete exactly the pod that was looked at, not a namesake created since.
        preconditions: uid.clone().map(|uid| Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    if pod_delete(o, id, &delete(grace_seconds)).await?
        || wait_gone(&o.pods, id, uid.clone(), patience).await?
    {
        return Ok(());
    }
    tracing::warn!(
        pod = id,
        ?patience,
        "pod still present after its grace period; forcing"
    );
    if pod_delete(o, id, &delete(0)).await? || wait_gone(&o.pods, id, uid, FORCE_WAIT).await? {
        return Ok(());
    }
    Err(OrchestratorError::Timeout {
        what: format!("pod {id} to be deleted (still present after a forced delete)"),
        after: patience + FORCE_WAIT,
    })
}

/// A pod delete; `true` when the pod is gone already. A failed uid precondition (409) means the
/// pod that was looked at no longer exists.
async fn pod_delete(o: &KubernetesOrchestrator, id: &str, params: &DeleteParams) -> Result<bool> {
    match delete_named(&o.pods, "pod", id, id, params).await {
        Err(OrchestratorError::AlreadyExists { .. }) => Ok(true),
        other => other,
    }
}

/// Watches the pod (a watch on `metadata.name`, through `await_condition`) until it is gone or
/// replaced by a namesake; `Ok(false)` when `within` passes first.
async fn wait_gone(
    api: &Api<Pod>,
    id: &str,
    uid: Option<String>,
    within: Duration,
) -> Result<bool> {
    let deadline = Instant::now() + within;
    let gone = move |pod: Option<&Pod>| {
        pod.is_none_or(|p| {
            uid.as_deref()
                .is_some_and(|u| p.metadata.uid.as_deref() != Some(u))
        })
    };
    watch_until(api, id, Some(deadline), gone)
        .await
        .map(|found| found.is_some())
}

/// Watches the pod until the container has started (`Ok(true)`) or the pod is gone, replaced or
/// finished without a readable run (`Ok(false)`: evicted before its container started, say),
/// however long that takes.
pub(crate) async fn wait_until_started(
    api: &Api<Pod>,
    id: &str,
    uid: Option<String>,
) -> Result<bool> {
    let same = move |p: &Pod| uid.is_none() || p.metadata.uid == uid;
    let cond = {
        let same = same.clone();
        move |pod: Option<&Pod>| pod.is_none_or(|p| !same(p) || has_run(p) || is_finished(p))
    };
    let found = watch_until(api, id, None, cond).await?;
    Ok(found.flatten().is_some_and(|p| same(&p) && has_run(&p)))
}

/// `await_condition` bounded by `deadline` (if any), re-established after transient watch
/// failures (a few in a row at most). `None` when the deadline passes, `Some(the object)`
/// otherwise.
async fn watch_until<C>(
    api: &Api<Pod>,
    id: &str,
    deadline: Option<Instant>,
    cond: C,
) -> Result<Option<Option<Pod>>>
where
    C: Fn(Option<&Pod>) -> bool + Clone + Send + 'static,
{
    let target = Target::pod("watch pod", id);
    let mut failures = 0;
    let mut delay = RETRY_FIRST_DELAY;
    loop {
        let wait = Box::pin(await_condition(api.clone(), id, cond.clone()));
        match until(deadline, wait).await {
            Err(_elapsed) => return Ok(None),
            Ok(Ok(pod)) => return Ok(Some(pod)),
            Ok(Err(error)) => {
                let mapped = map_error(error, &target);
                failures += 1;
                let retry = mapped.is_transient()
                    || matches!(mapped, OrchestratorError::ContinueExpired { .. });
                if !retry || failures >= RETRY_ATTEMPTS {
                    return Err(mapped);
                }
                tracing::debug!(pod = id, error = %mapped, "watch failed; watching again");
                if until(deadline, tokio::time::sleep(delay)).await.is_err() {
                    return Ok(None);
                }
                delay = (delay * 2).min(RETRY_MAX_DELAY);
            }
        }
    }
}

/// `future`, cut short at `deadline` when there is one.
async fn until<F: std::future::Future>(
    deadline: Option<Instant>,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, future).await,
        None => Ok(future.await),
    }
}
