//! Persistent volumes as PersistentVolumeClaims: one per server and persistent spec volume,
//! named [`mcp_types::persistent_volume_name`], labelled with the server and the volume
//! (`mcpctl.io/persistent=true`) and never with an instance, and without an ownerReference,
//! so neither `stop` (which deletes by instance label) nor the garbage collector (which
//! follows owners) removes them.
//!
//! | call | requests |
//! |---|---|
//! | start | `create` the claim; 409 -> `get` it: ours (managed, persistent, same server and volume) is reused, anything else is `AlreadyExists` |
//! | `list_volumes` | `list` claims by label, `list` managed pods; users = pods whose volumes name the claim |
//! | `remove_volume` | `get` the claim (not ours -> `NotFound`), `list` pods: any user -> `InUse` naming them; else `delete` |
//!
//! A claim's users are the managed pods that still exist, whatever their phase: an instance
//! mounts its volumes until it is stopped. The library refuses before deleting, naming the
//! pods; Kubernetes' own `kubernetes.io/pvc-protection` would only postpone the deletion
//! until the pods go, and the data would then vanish under the next instance.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use mcp_orchestrator_api::volumes::{
    check_server_arg, check_volume_arg, ensure_unused, volume_not_found,
};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{InstanceId, PersistentVolume, labels};

use crate::KubernetesOrchestrator;
use crate::error::{Target, idempotent, once};

const KIND: &str = "persistentvolumeclaim";

fn label<'a>(claim: &'a PersistentVolumeClaim, key: &str) -> Option<&'a str> {
    claim.labels().get(key).map(String::as_str)
}

/// Whether `claim` is one of this project's persistent volumes.
fn is_persistent(claim: &PersistentVolumeClaim) -> bool {
    label(claim, labels::MANAGED) == Some("true")
        && label(claim, labels::PERSISTENT) == Some("true")
}

/// Creates the persistent claim `claim` for instance `instance` unless it exists. Two
/// orchestrators racing both succeed: the loser's create is a 409 and it reuses the winner's.
pub(crate) async fn ensure_persistent_claim(
    o: &KubernetesOrchestrator,
    claim: &PersistentVolumeClaim,
    instance: &str,
) -> Result<()> {
    let name = claim.name_any();
    let target = Target::object("create", KIND, &name, instance);
    match once(
        &target,
        Box::pin(o.claims.create(&PostParams::default(), claim)),
    )
    .await
    {
        Ok(_) => Ok(()),
        Err(OrchestratorError::AlreadyExists { what }) => {
            let target = Target::object("get", KIND, &name, instance);
            let existing = idempotent(&target, || Box::pin(o.claims.get(&name))).await?;
            let same = is_persistent(&existing)
                && label(&existing, labels::SERVER) == label(claim, labels::SERVER)
                && label(&existing, labels::VOLUME) == label(claim, labels::VOLUME);
            if same {
                Ok(())
            } else {
                Err(OrchestratorError::AlreadyExists {
                    what: format!(
                        "{what}, and it is not this server's persistent volume (labels {:?})",
                        existing.labels()
                    ),
                })
            }
        }
        Err(e) => Err(e),
    }
}

/// The managed pods that mount claim `name`, ordered by name.
fn users(pods: &[Pod], name: &str) -> Vec<InstanceId> {
    let mut users: Vec<InstanceId> = pods
        .iter()
        .filter(|p| {
            p.spec
                .iter()
                .flat_map(|s| s.volumes.iter().flatten())
                .any(|v| {
                    v.persistent_volume_claim
                        .as_ref()
                        .is_some_and(|c| c.claim_name == name)
                })
        })
        .map(|p| InstanceId::new(p.name_any()))
        .collect();
    users.sort();
    users
}

async fn managed_pods(o: &KubernetesOrchestrator) -> Result<Vec<Pod>> {
    let params = ListParams::default().labels(&format!("{}=true", labels::MANAGED));
    let target = Target::collection("list", "pod");
    Ok(idempotent(&target, || Box::pin(o.pods.list(&params)))
        .await?
        .items)
}

fn describe(claim: &PersistentVolumeClaim, in_use_by: Vec<InstanceId>) -> PersistentVolume {
    let spec = claim.spec.as_ref();
    let mut details = std::collections::BTreeMap::new();
    if let Some(class) = spec.and_then(|s| s.storage_class_name.clone()) {
        details.insert("storageClass".to_owned(), class);
    }
    if let Some(phase) = claim.status.as_ref().and_then(|s| s.phase.clone()) {
        details.insert("phase".to_owned(), phase);
    }
    if let Some(pv) = spec.and_then(|s| s.volume_name.clone()) {
        details.insert("persistentVolume".to_owned(), pv);
    }
    PersistentVolume {
        name: claim.name_any(),
        server: label(claim, labels::SERVER).unwrap_or_default().to_owned(),
        volume: label(claim, labels::VOLUME).unwrap_or_default().to_owned(),
        size: spec
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| mcp_types::Quantity::parse(&q.0).ok()),
        in_use_by,
        created_at: claim.metadata.creation_timestamp.as_ref().map(|t| t.0),
        details,
    }
}

pub(crate) async fn list(
    o: &KubernetesOrchestrator,
    server: Option<&str>,
) -> Result<Vec<PersistentVolume>> {
    check_server_arg(server)?;
    let mut selector = format!("{}=true,{}=true", labels::MANAGED, labels::PERSISTENT);
    if let Some(s) = server {
        selector = format!("{selector},{}={s}", labels::SERVER);
    }
    let params = ListParams::default().labels(&selector);
    let target = Target::collection("list", KIND);
    let claims = idempotent(&target, || Box::pin(o.claims.list(&params))).await?;
    let pods = managed_pods(o).await?;
    let mut out: Vec<PersistentVolume> = claims
        .items
        .iter()
        .map(|c| describe(c, users(&pods, &c.name_any())))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

pub(crate) async fn remove(o: &KubernetesOrchestrator, name: &str) -> Result<()> {
    check_volume_arg(name)?;
    let target = Target::object("get", KIND, name, name);
    let claim = match idempotent(&target, || Box::pin(o.claims.get(name))).await {
        Ok(c) if is_persistent(&c) => c,
        Ok(_) => return Err(volume_not_found(name)),
        Err(e) if e.is_not_found() => return Err(volume_not_found(name)),
        Err(e) => return Err(e),
    };
    let pods = managed_pods(o).await?;
    ensure_unused(&describe(&claim, users(&pods, name)))?;
    let target = Target::object("delete", KIND, name, name);
    let params = DeleteParams::default();
    match idempotent(&target, || Box::pin(o.claims.delete(name, &params))).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Err(volume_not_found(name)),
        Err(e) => Err(e),
    }
}
