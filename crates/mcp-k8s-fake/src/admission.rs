//! Admission of new pods, in the apiserver's order: the mutating plugins (`ServiceAccount`,
//! `LimitRanger` defaults), then the validating ones (`LimitRanger` bounds, `PodSecurity`,
//! `ResourceQuota`). Each refusal is a 403 `Forbidden` whose message names the pod by its name,
//! or its `generateName` when no name was generated yet, as `admission.NewForbidden` does.
//!
//! Written from the plugins' documented behaviour and messages (kube-apiserver
//! `plugin/pkg/admission/{serviceaccount,limitranger,resourcequota}`, the Pod Security
//! admission's `restricted` checks), not from the backend's code.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::{Container, LimitRange, Pod, ResourceQuota};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::Value;

use crate::kind::ResourceKind;
use crate::quantity::{format_quantity, parse_quantity};
use crate::status::ApiError;
use crate::store::{ObjectKey, Store};

/// The namespace label that makes Pod Security admission enforce a level.
pub const POD_SECURITY_ENFORCE: &str = "pod-security.kubernetes.io/enforce";

/// Namespace labels (namespaces are not objects in the fake; tests set their labels).
#[derive(Debug, Default)]
pub(crate) struct Namespaces {
    labels: Mutex<HashMap<String, BTreeMap<String, String>>>,
}

impl Namespaces {
    pub(crate) fn set_label(&self, namespace: &str, key: &str, value: Option<&str>) {
        let mut all = self.labels.lock().unwrap_or_else(PoisonError::into_inner);
        let labels = all.entry(namespace.to_owned()).or_default();
        match value {
            Some(value) => labels.insert(key.to_owned(), value.to_owned()),
            None => labels.remove(key),
        };
    }

    fn label(&self, namespace: &str, key: &str) -> Option<String> {
        self.labels
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(namespace)
            .and_then(|l| l.get(key).cloned())
    }
}

/// Runs the admission chain on a pod about to be created; the (possibly defaulted) pod, or the
/// refusal.
pub(crate) fn admit_pod(
    store: &Store,
    namespaces: &Namespaces,
    namespace: &str,
    mut object: Value,
) -> Result<Value, ApiError> {
    let mut pod: Pod =
        serde_json::from_value(object.clone()).map_err(|e| ApiError::internal(e.to_string()))?;
    let display = pod
        .metadata
        .name
        .clone()
        .filter(|n| !n.is_empty())
        .or_else(|| pod.metadata.generate_name.clone())
        .unwrap_or_default();
    let forbidden = |message: String| {
        ApiError::forbidden(
            ResourceKind::Pod,
            &display,
            format!("pods \"{display}\" is forbidden: {message}"),
        )
    };
    service_account(store, namespace, &pod).map_err(forbidden)?;
    let limit_ranges: Vec<LimitRange> = typed(store.all(ResourceKind::LimitRange, Some(namespace)));
    if apply_limit_range_defaults(&limit_ranges, &mut pod) {
        object["spec"]["containers"] =
            serde_json::to_value(pod.spec.as_ref().map(|s| s.containers.clone()))
                .map_err(|e| ApiError::internal(e.to_string()))?;
    }
    check_limit_ranges(&limit_ranges, &pod).map_err(forbidden)?;
    if let Some(level) = namespaces.label(namespace, POD_SECURITY_ENFORCE)
        && level == "restricted"
    {
        check_restricted(&pod).map_err(forbidden)?;
    }
    check_quotas(store, namespace, &pod).map_err(forbidden)?;
    Ok(object)
}

fn typed<T: serde::de::DeserializeOwned>(values: Vec<Value>) -> Vec<T> {
    values
        .into_iter()
        .filter_map(|v| serde_json::from_value(v).ok())
        .collect()
}

/// `ServiceAccount` admission: the pod's account must exist (`default` always does: the
/// service account controller creates it in every namespace).
fn service_account(store: &Store, namespace: &str, pod: &Pod) -> Result<(), String> {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    if name == "default"
        || store
            .get(&ObjectKey::new(
                ResourceKind::ServiceAccount,
                namespace,
                &name,
            ))
            .is_some()
    {
        return Ok(());
    }
    Err(format!(
        "error looking up service account {namespace}/{name}: serviceaccount \"{name}\" not found"
    ))
}

/// A `Container` limit range item with the API defaults (`SetDefaults_LimitRangeItem`): the
/// default limit falls back to `max`, the default request to the default limit, then `min`.
struct ContainerLimits {
    default: BTreeMap<String, Quantity>,
    default_request: BTreeMap<String, Quantity>,
    max: BTreeMap<String, Quantity>,
    min: BTreeMap<String, Quantity>,
}

fn container_limits(ranges: &[LimitRange]) -> Vec<ContainerLimits> {
    ranges
        .iter()
        .flat_map(|r| r.spec.iter().flat_map(|s| s.limits.iter()))
        .filter(|item| item.type_ == "Container")
        .map(|item| {
            let max = item.max.clone().unwrap_or_default();
            let min = item.min.clone().unwrap_or_default();
            let mut default = item.default.clone().unwrap_or_default();
            for (k, v) in &max {
                default.entry(k.clone()).or_insert_with(|| v.clone());
            }
            let mut default_request = item.default_request.clone().unwrap_or_default();
            for (k, v) in default.iter().chain(&min) {
                default_request
                    .entry(k.clone())
                    .or_insert_with(|| v.clone());
            }
            ContainerLimits {
                default,
                default_request,
                max,
                min,
            }
        })
        .collect()
}

/// `LimitRanger`'s mutation: containers get the default limits and requests they lack.
fn apply_limit_range_defaults(ranges: &[LimitRange], pod: &mut Pod) -> bool {
    let items = container_limits(ranges);
    let mut changed = false;
    for c in pod.spec.iter_mut().flat_map(|s| s.containers.iter_mut()) {
        for item in &items {
            let resources = c.resources.get_or_insert_with(Default::default);
            for (which, defaults) in [(true, &item.default), (false, &item.default_request)] {
                let list = if which {
                    resources.limits.get_or_insert_with(BTreeMap::new)
                } else {
                    resources.requests.get_or_insert_with(BTreeMap::new)
                };
                for (k, v) in defaults {
                    if !list.contains_key(k) {
                        list.insert(k.clone(), v.clone());
                        changed = true;
                    }
                }
            }
        }
    }
    changed
}

/// `LimitRanger`'s validation of each container against `min` and `max`.
fn check_limit_ranges(ranges: &[LimitRange], pod: &Pod) -> Result<(), String> {
    let mut errors = Vec::new();
    for item in container_limits(ranges) {
        for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
            let requests = resource_list(c, false);
            let limits = resource_list(c, true);
            for (resource, min) in &item.min {
                let min_value = parse_quantity(&min.0);
                match requests.get(resource) {
                    None => errors.push(format!(
                        "minimum {resource} usage per Container is {}.  No request is specified",
                        min.0
                    )),
                    Some(r) if parse_quantity(&r.0) < min_value => errors.push(format!(
                        "minimum {resource} usage per Container is {}, but request is {}",
                        min.0, r.0
                    )),
                    Some(_) => {}
                }
            }
            for (resource, max) in &item.max {
                let max_value = parse_quantity(&max.0);
                match limits.get(resource) {
                    None => errors.push(format!(
                        "maximum {resource} usage per Container is {}.  No limit is specified",
                        max.0
                    )),
                    Some(l) if parse_quantity(&l.0) > max_value => errors.push(format!(
                        "maximum {resource} usage per Container is {}, but limit is {}",
                        max.0, l.0
                    )),
                    Some(_) => {}
                }
            }
        }
    }
    aggregate(errors)
}

/// `utilerrors.NewAggregate(...).Error()`: one message as is, several in brackets.
fn aggregate(errors: Vec<String>) -> Result<(), String> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.into_iter().next().unwrap_or_default()),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

fn resource_list(c: &Container, limits: bool) -> BTreeMap<String, Quantity> {
    c.resources
        .as_ref()
        .and_then(|r| {
            if limits {
                r.limits.clone()
            } else {
                r.requests.clone()
            }
        })
        .unwrap_or_default()
}

/// The `restricted` Pod Security level's checks (a subset: the ones a pod of this project can
/// trip), with the admission's message format: `violates PodSecurity "restricted:latest": `
/// and each failed check as `name (detail)`, joined by `, `.
fn check_restricted(pod: &Pod) -> Result<(), String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let pod_sc = spec.security_context.clone().unwrap_or_default();
    let containers = &spec.containers;
    let mut failures: Vec<String> = host_namespaces(spec).into_iter().collect();
    let names = |pick: &dyn Fn(&Container) -> bool| container_names(containers, pick);
    let privileged = names(&|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    });
    if !privileged.is_empty() {
        failures.push(format!(
            "privileged ({} must not set securityContext.privileged=true)",
            subject(&privileged)
        ));
    }
    let escalation = names(&|c| {
        c.security_context
            .as_ref()
            .and_then(|s| s.allow_privilege_escalation)
            != Some(false)
    });
    if !escalation.is_empty() {
        failures.push(format!(
            "allowPrivilegeEscalation != false ({} must set securityContext.allowPrivilegeEscalation=false)",
            subject(&escalation)
        ));
    }
    let no_drop = names(&|c| {
        !c.security_context
            .as_ref()
            .and_then(|s| s.capabilities.as_ref())
            .and_then(|caps| caps.drop.as_ref())
            .is_some_and(|d| d.iter().any(|x| x == "ALL"))
    });
    if !no_drop.is_empty() {
        failures.push(format!(
            "unrestricted capabilities ({} must set securityContext.capabilities.drop=[\"ALL\"])",
            subject(&no_drop)
        ));
    }
    failures.extend(host_path_volumes(spec));
    let pod_non_root = pod_sc.run_as_non_root == Some(true);
    let not_non_root = names(
        &|c| match c.security_context.as_ref().and_then(|s| s.run_as_non_root) {
            Some(v) => !v,
            None => !pod_non_root,
        },
    );
    if !not_non_root.is_empty() {
        failures.push(format!(
            "runAsNonRoot != true (pod or {} must set securityContext.runAsNonRoot=true)",
            subject(&not_non_root)
        ));
    }
    let root = names(&|c| c.security_context.as_ref().and_then(|s| s.run_as_user) == Some(0));
    if pod_sc.run_as_user == Some(0) {
        failures.push("runAsUser=0 (pod must not set runAsUser=0)".to_owned());
    } else if !root.is_empty() {
        failures.push(format!(
            "runAsUser=0 ({} must not set runAsUser=0)",
            subject(&root)
        ));
    }
    failures.extend(seccomp(&pod_sc, containers));
    if failures.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "violates PodSecurity \"restricted:latest\": {}",
            failures.join(", ")
        ))
    }
}

/// The restricted `seccompProfile` check.
fn seccomp(
    pod_sc: &k8s_openapi::api::core::v1::PodSecurityContext,
    containers: &[Container],
) -> Option<String> {
    let allowed = |t: Option<&str>| matches!(t, Some("RuntimeDefault" | "Localhost"));
    let pod_seccomp = allowed(pod_sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()));
    let no_seccomp = container_names(containers, &|c| match c
        .security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
    {
        Some(p) => !allowed(Some(p.type_.as_str())),
        None => !pod_seccomp,
    });
    (!no_seccomp.is_empty()).then(|| {
        format!(
            "seccompProfile (pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
            subject(&no_seccomp)
        )
    })
}

fn container_names(containers: &[Container], pick: &dyn Fn(&Container) -> bool) -> Vec<String> {
    containers
        .iter()
        .filter(|c| pick(c))
        .map(|c| format!("\"{}\"", c.name))
        .collect()
}

fn subject(names: &[String]) -> String {
    if names.len() == 1 {
        format!("container {}", names[0])
    } else {
        format!("containers {}", names.join(", "))
    }
}

/// The `host namespaces` check (baseline, so restricted too).
fn host_namespaces(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    let set: Vec<String> = [
        (spec.host_network, "hostNetwork"),
        (spec.host_pid, "hostPID"),
        (spec.host_ipc, "hostIPC"),
    ]
    .into_iter()
    .filter(|(flag, _)| *flag == Some(true))
    .map(|(_, name)| format!("{name}=true"))
    .collect();
    (!set.is_empty()).then(|| format!("host namespaces ({})", set.join(", ")))
}

/// The restricted `volume types` check, as far as `hostPath` goes.
fn host_path_volumes(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<String> {
    let host_path: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| format!("\"{}\"", v.name))
        .collect();
    if host_path.is_empty() {
        return None;
    }
    let (noun, verb) = if host_path.len() == 1 {
        ("volume", "uses")
    } else {
        ("volumes", "use")
    };
    Some(format!(
        "restricted volume types ({noun} {} {verb} restricted volume type \"hostPath\")",
        host_path.join(", ")
    ))
}

/// `ResourceQuota` admission for pods: `pods`, `requests.*`/`limits.*` (and bare `cpu`/`memory`
/// as requests) summed over the namespace's pods that are not finished.
fn check_quotas(store: &Store, namespace: &str, pod: &Pod) -> Result<(), String> {
    let quotas: Vec<ResourceQuota> = typed(store.all(ResourceKind::ResourceQuota, Some(namespace)));
    if quotas.is_empty() {
        return Ok(());
    }
    let existing: Vec<Pod> = typed(store.all(ResourceKind::Pod, Some(namespace)));
    let active = existing.iter().filter(|p| {
        !matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        )
    });
    let mut used: BTreeMap<String, f64> = BTreeMap::new();
    for p in active {
        for (k, v) in pod_usage(p) {
            *used.entry(k).or_default() += v;
        }
    }
    let requested = pod_usage(pod);
    for quota in &quotas {
        let name = quota.metadata.name.clone().unwrap_or_default();
        let hard = quota
            .spec
            .as_ref()
            .and_then(|s| s.hard.clone())
            .unwrap_or_default();
        let missing: Vec<&str> = hard
            .keys()
            .filter(|k| k.as_str() != "pods" && !requested.contains_key(k.as_str()))
            .map(String::as_str)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "failed quota: {name}: must specify {}",
                missing.join(",")
            ));
        }
        let exceeded: Vec<&String> = hard
            .iter()
            .filter(|(k, limit)| {
                let want = requested.get(k.as_str()).copied().unwrap_or(0.0);
                let have = used.get(k.as_str()).copied().unwrap_or(0.0);
                want > 0.0 && have + want > parse_quantity(&limit.0)
            })
            .map(|(k, _)| k)
            .collect();
        if !exceeded.is_empty() {
            let show = |values: &dyn Fn(&str) -> String| {
                exceeded
                    .iter()
                    .map(|k| format!("{k}={}", values(k)))
                    .collect::<Vec<_>>()
                    .join(",")
            };
            return Err(format!(
                "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
                show(&|k| format_quantity(k, requested.get(k).copied().unwrap_or(0.0))),
                show(&|k| format_quantity(k, used.get(k).copied().unwrap_or(0.0))),
                show(&|k| hard.get(k).map(|q| q.0.clone()).unwrap_or_default()),
            ));
        }
    }
    Ok(())
}

/// What one pod counts against a quota.
fn pod_usage(pod: &Pod) -> BTreeMap<String, f64> {
    let mut usage = BTreeMap::from([("pods".to_owned(), 1.0)]);
    for c in pod.spec.iter().flat_map(|s| s.containers.iter()) {
        for (limits, prefix) in [(false, "requests."), (true, "limits.")] {
            for (k, v) in resource_list(c, limits) {
                let value = parse_quantity(&v.0);
                *usage.entry(format!("{prefix}{k}")).or_default() += value;
                if !limits {
                    *usage.entry(k).or_default() += value;
                }
            }
        }
    }
    usage
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_errors_aggregate_in_brackets() {
        assert_eq!(aggregate(vec![]), Ok(()));
        assert_eq!(aggregate(vec!["a".into()]), Err("a".into()));
        assert_eq!(
            aggregate(vec!["a".into(), "b".into()]),
            Err("[a, b]".into())
        );
    }
}
