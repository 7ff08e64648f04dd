//! The lean decode of a pod list page: only the fields an [`Instance`] is made of.
//!
//! A page of `GET /api/v1/namespaces/{ns}/pods` carries whole pods: the spec (containers with
//! their security contexts, env, resources, volumes, ...), `managedFields`, IPs, conditions,
//! images and more. Decoding that into `ObjectList<Pod>` allocates all of it to read a dozen
//! fields. [`decode_page`] reads the page into serde structs of exactly what
//! [`pod_instance`](crate::pod_instance) reads, skipping the rest without allocating, and builds
//! from them a partial [`Pod`] (only those fields set) for the one mapping, so the listing's
//! status is by construction the status `get_status` computes from the whole pod; a test pins
//! that both decodes give the same instances.
//!
//! Read: `metadata` (`name`, `namespace`, `labels`, `annotations`, `creationTimestamp`,
//! `deletionTimestamp`), `spec` (`restartPolicy`, each container's `name` and `ports`),
//! `status` (`phase`, `reason`, `message`, the `PodScheduled` facts of `conditions`, and each
//! container status's `name`, `restartCount`, `state`, `lastState`), and the list's
//! `metadata.continue`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerState, ContainerStatus, Pod, PodCondition, PodSpec,
    PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use mcp_types::{Instance, Page};
use serde::Deserialize;

use crate::status::into_instance;

/// Decodes one page of a pod list into instances (in the server's order, every pod with a
/// name) and the page's continue token.
///
/// # Errors
/// The body is not a JSON pod list (a field of the wrong type, bad JSON).
pub fn decode_page(body: &str) -> serde_json::Result<Page<Instance>> {
    let page: PodPage = serde_json::from_str(body)?;
    Ok(page.into_instances())
}

/// A pod list page, as [`decode_page`] reads it.
#[derive(Debug, Deserialize)]
pub(crate) struct PodPage {
    #[serde(default)]
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<LeanPod>,
}

impl PodPage {
    pub(crate) fn into_instances(self) -> Page<Instance> {
        Page {
            items: self
                .items
                .into_iter()
                .filter_map(|p| into_instance(p.into_pod()))
                .collect(),
            continue_token: self.metadata.continue_.filter(|t| !t.is_empty()),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
struct ListMeta {
    #[serde(rename = "continue")]
    continue_: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LeanPod {
    #[serde(default)]
    metadata: LeanMeta,
    spec: Option<LeanSpec>,
    status: Option<LeanStatus>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanMeta {
    name: Option<String>,
    namespace: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanSpec {
    restart_policy: Option<String>,
    #[serde(default)]
    containers: Vec<LeanContainer>,
}

#[derive(Debug, Deserialize)]
struct LeanContainer {
    name: String,
    ports: Option<Vec<ContainerPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanStatus {
    phase: Option<String>,
    reason: Option<String>,
    message: Option<String>,
    conditions: Option<Vec<LeanCondition>>,
    container_statuses: Option<Vec<LeanContainerStatus>>,
}

#[derive(Debug, Deserialize)]
struct LeanCondition {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: Option<String>,
    message: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LeanContainerStatus {
    name: String,
    #[serde(default)]
    restart_count: i32,
    state: Option<ContainerState>,
    last_state: Option<ContainerState>,
}

impl LeanPod {
    /// A pod with only the fields read set: what the mapping in `status` reads.
    fn into_pod(self) -> Pod {
        let m = self.metadata;
        Pod {
            metadata: ObjectMeta {
                name: m.name,
                namespace: m.namespace,
                labels: m.labels,
                annotations: m.annotations,
                creation_timestamp: m.creation_timestamp,
                deletion_timestamp: m.deletion_timestamp,
                ..ObjectMeta::default()
            },
            spec: self.spec.map(|s| PodSpec {
                restart_policy: s.restart_policy,
                containers: s
                    .containers
                    .into_iter()
                    .map(|c| Container {
                        name: c.name,
                        ports: c.ports,
                        ..Container::default()
                    })
                    .collect(),
                ..PodSpec::default()
            }),
            status: self.status.map(|s| PodStatus {
                phase: s.phase,
                reason: s.reason,
                message: s.message,
                conditions: s.conditions.map(|cs| {
                    cs.into_iter()
                        .map(|c| PodCondition {
                            type_: c.type_,
                            status: c.status,
                            reason: c.reason,
                            message: c.message,
                            ..PodCondition::default()
                        })
                        .collect()
                }),
                container_statuses: s.container_statuses.map(|cs| {
                    cs.into_iter()
                        .map(|c| ContainerStatus {
                            name: c.name,
                            restart_count: c.restart_count,
                            state: c.state,
                            last_state: c.last_state,
                            ..ContainerStatus::default()
                        })
                        .collect()
                }),
                ..PodStatus::default()
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pod_instance;
    use kube::api::ObjectList;
    use serde_json::{Value, json};

    /// Pods in every shape the status mapping distinguishes, written as an API server sends
    /// them (with the fields the lean decode skips: managedFields, IPs, images, securityContext).
    fn page() -> Value {
        let pod = |name: &str, policy: &str, status: Value, extra_meta: Value| {
            let mut metadata = json!({
                "name": name,
                "namespace": "mcpctl",
                "uid": "6f1c",
                "resourceVersion": "42",
                "creationTimestamp": "2025-01-01T00:00:00Z",
                "labels": {"mcpctl.io/managed": "true", "mcpctl.io/server": "time"},
                "annotations": {(mcp_types::labels::HTTP_PATH): "/v1/mcp"},
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}],
            });
            if let (Some(m), Some(extra)) = (metadata.as_object_mut(), extra_meta.as_object()) {
                m.extend(extra.clone());
            }
            json!({
                "metadata": metadata,
                "spec": {
                    "restartPolicy": policy,
                    "containers": [{
                        "name": crate::CONTAINER_NAME,
                        "image": "mcp-test-server:1",
                        "args": ["fixture", "--serve", "stdio"],
                        "ports": [{"name": mcp_k8s_resources::PORT_NAME, "containerPort": 8080, "protocol": "TCP"}],
                        "securityContext": {"runAsNonRoot": true, "capabilities": {"drop": ["ALL"]}},
                        "resources": {"limits": {"memory": "128Mi"}},
                    }],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
                "status": status,
            })
        };
        let terminated = |code: i32, reason: &str| {
            json!({"terminated": {"exitCode": code, "reason": reason,
                "startedAt": "2025-01-01T00:00:01Z", "finishedAt": "2025-01-01T00:00:05Z",
                "containerID": "containerd://abc"}})
        };
        let container = |state: Value, last: Value, restarts: i32| {
            json!([{"name": crate::CONTAINER_NAME, "image": "mcp-test-server:1", "imageID": "sha256:1",
                "ready": true, "started": true, "restartCount": restarts,
                "state": state, "lastState": last}])
        };
        json!({
            "kind": "PodList",
            "apiVersion": "v1",
            "metadata": {"resourceVersion": "99", "continue": "token-1"},
            "items": [
                pod("mcp-a", "Always", json!({"phase": "Running", "podIP": "10.0.0.1",
                    "conditions": [{"type": "Ready", "status": "True"}],
                    "containerStatuses": container(
                        json!({"running": {"startedAt": "2025-01-01T00:00:06Z"}}),
                        terminated(1, "Error"), 2)}), Value::Null),
                pod("mcp-b", "Never", json!({"phase": "Failed",
                    "containerStatuses": container(terminated(137, "OOMKilled"), json!({}), 0)}),
                    Value::Null),
                pod("mcp-c", "Always", json!({"phase": "Pending",
                    "containerStatuses": container(json!({"waiting": {"reason": "CrashLoopBackOff",
                        "message": "back-off 10s"}}), terminated(3, "Error"), 4)}), Value::Null),
                pod("mcp-d", "Always", json!({"phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False",
                        "reason": "Unschedulable", "message": "0/1 nodes are available",
                        "lastTransitionTime": "2025-01-01T00:00:00Z"}]}), Value::Null),
                pod("mcp-e", "Always", json!({"phase": "Failed", "reason": "Evicted",
                    "message": "The node was low on resource: memory."}), Value::Null),
                pod("mcp-f", "Always", json!({"phase": "Running",
                    "containerStatuses": container(
                        json!({"running": {"startedAt": "2025-01-01T00:00:06Z"}}), json!({}), 0)}),
                    json!({"deletionTimestamp": "2025-01-01T00:01:00Z"})),
                pod("mcp-g", "OnFailure", json!({"phase": "Succeeded",
                    "containerStatuses": container(terminated(0, "Completed"), json!({}), 0)}),
                    Value::Null),
                json!({"metadata": {"namespace": "mcpctl"}}),
            ],
        })
    }

    #[test]
    fn lean_decode_maps_exactly_like_the_whole_pod() {
        let body = page().to_string();
        let whole: ObjectList<Pod> = serde_json::from_str(&body).unwrap();
        let expected: Vec<Instance> = whole.items.iter().filter_map(pod_instance).collect();
        let lean = decode_page(&body).unwrap();
        assert_eq!(lean.items, expected);
        assert_eq!(lean.items.len(), 7, "the nameless pod is skipped");
        assert_eq!(lean.continue_token.as_deref(), Some("token-1"));
        // The cases differ from each other, so the comparison above covers each mapping.
        let reasons: Vec<_> = lean
            .items
            .iter()
            .map(|i| (i.status.phase, i.status.reason.clone()))
            .collect();
        let distinct: std::collections::BTreeSet<_> =
            reasons.iter().map(|r| format!("{r:?}")).collect();
        assert_eq!(distinct.len(), reasons.len(), "{reasons:?}");
        assert_eq!(
            lean.items[0].endpoint.as_deref(),
            Some("http://mcp-a-svc.mcpctl.svc:8080/v1/mcp")
        );
    }

    #[test]
    fn an_empty_continue_token_is_none_and_missing_parts_are_empty() {
        let page = decode_page(r#"{"metadata":{"continue":""},"items":[]}"#).unwrap();
        assert!(page.items.is_empty() && page.continue_token.is_none());
        let page = decode_page(r"{}").unwrap();
        assert!(page.items.is_empty() && page.continue_token.is_none());
    }

    #[test]
    fn a_malformed_page_is_an_error_naming_the_problem() {
        let e = decode_page(r#"{"items":[{"metadata":{"name":3}}]}"#).unwrap_err();
        assert!(e.to_string().contains("invalid type"), "{e}");
    }
}
