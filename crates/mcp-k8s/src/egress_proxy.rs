//! The namespace's egress proxy (see `mcp_k8s_resources::build_egress_proxy`): created by the
//! first start whose egress policy names hosts, shared by every such instance, never removed
//! with an instance; `collect_garbage` removes it once no instance needs it.
//!
//! | step                          | what happens                                                   |
//! |-------------------------------|----------------------------------------------------------------|
//! | start, after the pod exists   | each object created (the Deployment last, the others at once); `409 AlreadyExists` is success (racing starts both succeed, an existing proxy is used as it is) |
//! | stop                          | nothing: the proxy is no instance's                            |
//! | `collect_garbage`             | when no unfinished managed pod carries the proxy-client label: every proxy object deleted (a dry run lists them), then the pods looked at again and the proxy restored if a start slipped in |
//!
//! Why a start creates the proxy *after* its pod, and why the collection looks again: a start
//! makes its pod, then ensures the proxy; a collection deletes, then lists the pods again. If
//! the start's pod came before that second list, the collection sees it and restores the proxy;
//! if after, the start's ensure runs after every delete and creates what is missing. Either way
//! a server that needs the proxy ends with one.

use std::fmt::Debug;

use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::{Api, DeleteParams, ListParams};
use mcp_k8s_resources::{
    BuildOptions, EGRESS_PROXY_CLIENT_LABEL, EGRESS_PROXY_NAME, EgressProxyResources,
    build_egress_proxy,
};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{Orphan, OrphanKind, Timestamp, labels};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::KubernetesOrchestrator;
use crate::error::{Target, idempotent};
use crate::status::is_finished;

/// Creates every object of the proxy that is missing. `instance` is the start it is for (named
/// in errors).
pub(crate) async fn ensure(
    o: &KubernetesOrchestrator,
    proxy: &EgressProxyResources,
    instance: &str,
) -> Result<()> {
    // Everything the proxy's pods need, at once; then the Deployment, so that its pods never
    // run without their identity or unisolated.
    let policy = async {
        match &proxy.network_policy {
            Some(policy) => keep_or_create(&o.policies, "networkpolicy", policy, instance).await,
            None => Ok(()),
        }
    };
    let (account, role, binding, policy, service) = futures::join!(
        keep_or_create(
            &o.service_accounts,
            "serviceaccount",
            &proxy.service_account,
            instance
        ),
        keep_or_create(&o.roles, "role", &proxy.role, instance),
        keep_or_create(
            &o.role_bindings,
            "rolebinding",
            &proxy.role_binding,
            instance
        ),
        policy,
        keep_or_create(&o.services, "service", &proxy.service, instance),
    );
    account.and(role).and(binding).and(policy).and(service)?;
    keep_or_create(&o.deployments, "deployment", &proxy.deployment, instance).await
}

/// Creates `object` unless it exists. Since an existing object is success, a create whose fate
/// is unknown (a dropped connection, a 5xx) can be sent again: retried like a read.
async fn keep_or_create<K>(
    api: &Api<K>,
    kind: &'static str,
    object: &K,
    instance: &str,
) -> Result<()>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.meta().name.clone().unwrap_or_default();
    let target = Target::object("create the egress proxy's", kind, &name, instance);
    let params = kube::api::PostParams::default();
    match idempotent(&target, || Box::pin(api.create(&params, object))).await {
        Ok(_) | Err(OrchestratorError::AlreadyExists { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

/// A managed pod that needs the proxy, if any (its name).
async fn client(o: &KubernetesOrchestrator) -> Result<Option<String>> {
    let (key, value) = EGRESS_PROXY_CLIENT_LABEL;
    let selector = format!("{}=true,{key}={value}", labels::MANAGED);
    let params = ListParams::default().labels(&selector);
    let target = Target::collection("list", "pod");
    let pods = idempotent(&target, || Box::pin(o.pods.list(&params))).await?;
    Ok(pods
        .items
        .iter()
        .find(|p| is_client(p))
        .and_then(|p| p.metadata.name.clone()))
}

/// Whether a pod routes its egress through the proxy and may still run.
fn is_client(pod: &Pod) -> bool {
    let (key, value) = EGRESS_PROXY_CLIENT_LABEL;
    let labelled = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .is_some_and(|v| v == value);
    labelled && pod.metadata.deletion_timestamp.is_none() && !is_finished(pod)
}

/// The proxy's objects when no managed pod needs them: removed unless `dry_run`, and reported
/// either way.
pub(crate) async fn collect(o: &KubernetesOrchestrator, dry_run: bool) -> Result<Vec<Orphan>> {
    if client(o).await?.is_some() {
        return Ok(Vec::new());
    }
    let present = present(o).await?;
    if present.is_empty() || dry_run {
        return Ok(orphans(&present, !dry_run, None));
    }
    for kind in &present {
        remove(o, kind).await?;
    }
    // A start that needed the proxy may have slipped in: restore it for that start.
    if let Some(instance) = client(o).await? {
        let proxy = build_egress_proxy(&BuildOptions::from_config(&o.config, Timestamp::now()))?;
        ensure(o, &proxy, &instance).await?;
        return Ok(orphans(
            &present,
            false,
            Some(format!(
                "kept: {instance} started meanwhile and routes through it"
            )),
        ));
    }
    Ok(orphans(&present, true, None))
}

fn orphans(present: &[&'static str], removed: bool, reason: Option<String>) -> Vec<Orphan> {
    let reason = reason.unwrap_or_else(|| {
        format!(
            "no instance routes its egress through it (no running pod labelled {}={})",
            EGRESS_PROXY_CLIENT_LABEL.0, EGRESS_PROXY_CLIENT_LABEL.1
        )
    });
    present
        .iter()
        .map(|kind| Orphan {
            kind: OrphanKind::EgressProxy,
            name: format!("{kind}/{EGRESS_PROXY_NAME}"),
            reason: reason.clone(),
            removed,
        })
        .collect()
}

/// The kinds of which the proxy's object exists.
async fn present(o: &KubernetesOrchestrator) -> Result<Vec<&'static str>> {
    let (deployment, service, policy, binding, role, account) = futures::join!(
        exists(&o.deployments, "deployment"),
        exists(&o.services, "service"),
        exists(&o.policies, "networkpolicy"),
        exists(&o.role_bindings, "rolebinding"),
        exists(&o.roles, "role"),
        exists(&o.service_accounts, "serviceaccount"),
    );
    let found = [
        ("deployment", deployment?),
        ("service", service?),
        ("networkpolicy", policy?),
        ("rolebinding", binding?),
        ("role", role?),
        ("serviceaccount", account?),
    ];
    Ok(found
        .into_iter()
        .filter_map(|(kind, there)| there.then_some(kind))
        .collect())
}

async fn exists<K>(api: &Api<K>, kind: &'static str) -> Result<bool>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let target = Target::object("get", kind, EGRESS_PROXY_NAME, EGRESS_PROXY_NAME);
    match idempotent(&target, || Box::pin(api.get(EGRESS_PROXY_NAME))).await {
        Ok(_) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}

async fn remove(o: &KubernetesOrchestrator, kind: &'static str) -> Result<()> {
    match kind {
        "deployment" => delete(&o.deployments, kind).await,
        "service" => delete(&o.services, kind).await,
        "networkpolicy" => delete(&o.policies, kind).await,
        "rolebinding" => delete(&o.role_bindings, kind).await,
        "role" => delete(&o.roles, kind).await,
        _ => delete(&o.service_accounts, kind).await,
    }
}

async fn delete<K>(api: &Api<K>, kind: &'static str) -> Result<()>
where
    K: Resource + Clone + Debug + DeserializeOwned,
{
    let target = Target::object("delete", kind, EGRESS_PROXY_NAME, EGRESS_PROXY_NAME);
    // Background propagation: the Deployment's ReplicaSets and pods follow it.
    let params = DeleteParams::background();
    match idempotent(&target, || Box::pin(api.delete(EGRESS_PROXY_NAME, &params))).await {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}
