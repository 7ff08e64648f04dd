//! The create-time defaulting and validation the apiserver applies to the served resource types
//! (pods, services, persistentvolumeclaims, networkpolicies; their coordinates are in `kind`).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    LimitRange, PersistentVolumeClaim, PersistentVolumeClaimStatus, Pod, PodStatus, ResourceQuota,
    Secret, Service, ServiceAccount, ServiceStatus,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::kind::ResourceKind;
use crate::names;
use crate::object::{parse_typed, to_value, validate_meta};
use crate::pod_spec::{default_pod, qos_class, validate_pod, validate_protocol};
use crate::status::{ApiError, FieldError};

/// The finalizer that keeps a claim while a pod uses it.
pub(crate) const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";

/// Counters the apiserver uses to allocate addresses.
#[derive(Debug, Default)]
pub(crate) struct Allocators {
    next_cluster_ip: u32,
    next_node_port: u16,
}

impl Allocators {
    fn cluster_ip(&mut self) -> String {
        self.next_cluster_ip += 1;
        let n = self.next_cluster_ip;
        format!("10.96.{}.{}", (n / 250) % 250, n % 250 + 1)
    }

    fn node_port(&mut self) -> i32 {
        let port = 30000 + i32::from(self.next_node_port % 2768);
        self.next_node_port = self.next_node_port.wrapping_add(1);
        port
    }
}

/// Checks kind/apiVersion/namespace/resourceVersion of a create body and returns the object's
/// intended name (after `generateName` is resolved by the caller) and the defaulted, validated
/// object without its final name.
pub(crate) fn prepare_create(
    kind: ResourceKind,
    namespace: &str,
    body: &Value,
    allocators: &mut Allocators,
) -> Result<Value, ApiError> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::bad_request(format!(
            "the object provided is unrecognized (must be of type {})",
            kind.kind()
        )));
    };
    if let Some(api_version) = object.get("apiVersion").and_then(Value::as_str)
        && api_version != kind.api_version()
    {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api_version}) does not match the expected API version ({})",
            kind.api_version()
        )));
    }
    if let Some(k) = object.get("kind").and_then(Value::as_str)
        && k != kind.kind()
    {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({k}) does not match the expected kind ({})",
            kind.kind()
        )));
    }
    let meta = &body["metadata"];
    if let Some(ns) = meta["namespace"].as_str()
        && !ns.is_empty()
        && ns != namespace
    {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if meta["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let display_name = meta["name"]
        .as_str()
        .or_else(|| meta["generateName"].as_str())
        .unwrap_or_default()
        .to_owned();
    let mut errors = Vec::new();
    let prepared = match kind {
        ResourceKind::Pod => prepare_pod(body, &display_name, &mut errors)?,
        ResourceKind::Service => {
            let mut service: Service = parse_typed(kind, body)?;
            validate_meta(&service.metadata, &mut errors);
            validate_service(&service, &mut errors);
            if errors.is_empty() {
                default_service(&mut service, allocators);
            }
            service.status = Some(ServiceStatus {
                load_balancer: Some(k8s_openapi::api::core::v1::LoadBalancerStatus::default()),
                ..ServiceStatus::default()
            });
            to_value(&service)?
        }
        ResourceKind::PersistentVolumeClaim => {
            let mut pvc: PersistentVolumeClaim = parse_typed(kind, body)?;
            validate_meta(&pvc.metadata, &mut errors);
            validate_pvc(&pvc, &mut errors);
            bind_pvc(&mut pvc);
            to_value(&pvc)?
        }
        ResourceKind::NetworkPolicy => {
            let mut policy: NetworkPolicy = parse_typed(kind, body)?;
            validate_meta(&policy.metadata, &mut errors);
            crate::networking::validate_network_policy(&policy, &mut errors);
            crate::networking::default_network_policy(&mut policy);
            to_value(&policy)?
        }
        ResourceKind::Secret => {
            let mut secret: Secret = parse_typed(kind, body)?;
            validate_meta(&secret.metadata, &mut errors);
            default_secret(&mut secret);
            to_value(&secret)?
        }
        ResourceKind::ServiceAccount => only_meta::<ServiceAccount>(kind, body, &mut errors)?,
        ResourceKind::ResourceQuota => only_meta::<ResourceQuota>(kind, body, &mut errors)?,
        ResourceKind::LimitRange => only_meta::<LimitRange>(kind, body, &mut errors)?,
        ResourceKind::Deployment => crate::workloads::prepare_deployment(body, &mut errors)?,
        ResourceKind::Role => crate::rbac::prepare_role(body, &mut errors)?,
        ResourceKind::RoleBinding => crate::rbac::prepare_role_binding(body, &mut errors)?,
    };
    if errors.is_empty() {
        Ok(prepared)
    } else {
        Err(ApiError::invalid(kind, &display_name, &errors))
    }
}

/// A kind stored as sent, with only its metadata validated.
fn only_meta<T>(
    kind: ResourceKind,
    body: &Value,
    errors: &mut Vec<FieldError>,
) -> Result<Value, ApiError>
where
    T: serde::de::DeserializeOwned + serde::Serialize + k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    let object: T = parse_typed(kind, body)?;
    validate_meta(object.metadata(), errors);
    to_value(&object)
}

fn prepare_pod(
    body: &Value,
    display_name: &str,
    errors: &mut Vec<FieldError>,
) -> Result<Value, ApiError> {
    let kind = ResourceKind::Pod;
    if body["spec"]["containers"].is_null() {
        return Err(ApiError::invalid(
            kind,
            display_name,
            &[FieldError::required("spec.containers", "")],
        ));
    }
    let mut pod: Pod = parse_typed(kind, body)?;
    default_pod(&mut pod);
    validate_meta(&pod.metadata, errors);
    validate_pod(&pod, errors);
    pod.status = Some(PodStatus {
        phase: Some("Pending".to_owned()),
        qos_class: Some(qos_class(&pod).to_owned()),
        ..PodStatus::default()
    });
    to_value(&pod)
}

/// The registry's create strategy: `stringData` is merged into `data` (it wins on conflicts)
/// and never stored; the type defaults to `Opaque`.
fn default_secret(secret: &mut Secret) {
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(BTreeMap::new);
        for (key, value) in strings {
            data.insert(key, k8s_openapi::ByteString(value.into_bytes()));
        }
    }
    secret.type_.get_or_insert_with(|| "Opaque".to_owned());
}

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

fn validate_service(service: &Service, errors: &mut Vec<FieldError>) {
    let spec = service.spec.clone().unwrap_or_default();
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    if !SERVICE_TYPES.contains(&service_type) {
        errors.push(FieldError::not_supported(
            "spec.type",
            service_type,
            SERVICE_TYPES,
        ));
        return;
    }
    let ports = spec.ports.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if service_type == "ExternalName" {
        if spec.external_name.as_deref().is_none_or(str::is_empty) {
            errors.push(FieldError::required("spec.externalName", ""));
        }
    } else if ports.is_empty() && !headless {
        errors.push(FieldError::required("spec.ports", ""));
    }
    let mut port_names = BTreeSet::new();
    for (i, port) in ports.iter().enumerate() {
        let field = format!("spec.ports[{i}]");
        match &port.name {
            Some(name) if !name.is_empty() => {
                if let Err(message) = names::dns1123_label(name) {
                    errors.push(FieldError::invalid(format!("{field}.name"), name, message));
                } else if !port_names.insert(name.clone()) {
                    errors.push(FieldError::duplicate(format!("{field}.name"), name));
                }
            }
            _ if ports.len() > 1 => errors.push(FieldError::required(format!("{field}.name"), "")),
            _ => {}
        }
        if !(1..=65535).contains(&port.port) {
            errors.push(FieldError::invalid(
                format!("{field}.port"),
                port.port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        validate_protocol(&field, port.protocol.as_deref(), errors);
        match &port.target_port {
            Some(IntOrString::Int(n)) if !(1..=65535).contains(n) => {
                errors.push(FieldError::invalid(
                    format!("{field}.targetPort"),
                    n.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
            Some(IntOrString::String(name)) => {
                if let Err(message) = names::iana_svc_name(name) {
                    errors.push(FieldError::invalid(
                        format!("{field}.targetPort"),
                        name,
                        message,
                    ));
                }
            }
            _ => {}
        }
    }
    for (key, value) in spec.selector.iter().flatten() {
        if let Err(message) = names::qualified_name(key) {
            errors.push(FieldError::invalid("spec.selector", key, message));
        }
        if let Err(message) = names::label_value(value) {
            errors.push(FieldError::invalid("spec.selector", value, message));
        }
    }
}

fn default_service(service: &mut Service, allocators: &mut Allocators) {
    let spec = service.spec.get_or_insert_with(Default::default);
    let service_type = spec
        .type_
        .get_or_insert_with(|| "ClusterIP".to_owned())
        .clone();
    spec.session_affinity
        .get_or_insert_with(|| "None".to_owned());
    if service_type != "ExternalName" {
        let ip = spec
            .cluster_ip
            .clone()
            .filter(|ip| !ip.is_empty())
            .unwrap_or_else(|| allocators.cluster_ip());
        spec.cluster_ip = Some(ip.clone());
        spec.cluster_ips = Some(vec![ip]);
        spec.ip_families
            .get_or_insert_with(|| vec!["IPv4".to_owned()]);
        spec.ip_family_policy
            .get_or_insert_with(|| "SingleStack".to_owned());
        spec.internal_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    let external = matches!(service_type.as_str(), "NodePort" | "LoadBalancer");
    if external {
        spec.external_traffic_policy
            .get_or_insert_with(|| "Cluster".to_owned());
    }
    if service_type == "LoadBalancer" {
        spec.allocate_load_balancer_node_ports.get_or_insert(true);
    }
    for port in spec.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
        if port.target_port.is_none() {
            port.target_port = Some(IntOrString::Int(port.port));
        }
        if external && port.node_port.is_none() {
            port.node_port = Some(allocators.node_port());
        }
    }
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

fn validate_pvc(pvc: &PersistentVolumeClaim, errors: &mut Vec<FieldError>) {
    let spec = pvc.spec.clone().unwrap_or_default();
    let modes = spec.access_modes.unwrap_or_default();
    if modes.is_empty() {
        errors.push(FieldError::required(
            "spec.accessModes",
            "at least 1 access mode is required",
        ));
    }
    for mode in &modes {
        if !ACCESS_MODES.contains(&mode.as_str()) {
            errors.push(FieldError::not_supported(
                "spec.accessModes",
                mode,
                ACCESS_MODES,
            ));
        }
    }
    let has_storage = spec
        .resources
        .and_then(|r| r.requests)
        .is_some_and(|requests| requests.contains_key("storage"));
    if !has_storage {
        errors.push(FieldError::required("spec.resources[storage]", ""));
    }
    if let Some(mode) = &spec.volume_mode
        && !["Block", "Filesystem"].contains(&mode.as_str())
    {
        errors.push(FieldError::not_supported(
            "spec.volumeMode",
            mode,
            &["Block", "Filesystem"],
        ));
    }
}

/// Binds a claim at once, as a cluster with an immediate-binding default storage class would.
fn bind_pvc(pvc: &mut PersistentVolumeClaim) {
    // The StorageObjectInUseProtection admission plugin's finalizer.
    let finalizers = pvc.metadata.finalizers.get_or_insert_with(Vec::new);
    if !finalizers.iter().any(|f| f == PVC_PROTECTION) {
        finalizers.push(PVC_PROTECTION.to_owned());
    }
    let spec = pvc.spec.get_or_insert_with(Default::default);
    spec.storage_class_name
        .get_or_insert_with(|| "standard".to_owned());
    spec.volume_mode
        .get_or_insert_with(|| "Filesystem".to_owned());
    spec.volume_name
        .get_or_insert_with(|| format!("pvc-{}", names::new_uid()));
    let capacity: Option<BTreeMap<_, _>> = spec
        .resources
        .as_ref()
        .and_then(|r| r.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .map(|q| BTreeMap::from([("storage".to_owned(), q.clone())]));
    pvc.status = Some(PersistentVolumeClaimStatus {
        phase: Some("Bound".to_owned()),
        access_modes: spec.access_modes.clone(),
        capacity,
        ..PersistentVolumeClaimStatus::default()
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::validate_new_name;
    use serde_json::json;

    fn prepare(kind: ResourceKind, body: &Value) -> Result<Value, Value> {
        prepare_create(kind, "ns", body, &mut Allocators::default()).map_err(|e| e.to_status())
    }

    fn fields(status: &Value) -> Vec<String> {
        status["details"]["causes"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| c["field"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn pods_get_defaults_and_qos() {
        let pod = json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [
                {"name": "a", "image": "busybox", "ports": [{"containerPort": 80}],
                 "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}
            ]}
        });
        let out = prepare(ResourceKind::Pod, &pod).unwrap();
        assert_eq!(out["kind"], "Pod");
        assert_eq!(out["spec"]["restartPolicy"], "Always");
        assert_eq!(out["spec"]["dnsPolicy"], "ClusterFirst");
        assert_eq!(out["spec"]["serviceAccountName"], "default");
        assert_eq!(out["spec"]["containers"][0]["imagePullPolicy"], "Always");
        assert_eq!(out["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(
            out["status"],
            json!({"phase": "Pending", "qosClass": "Guaranteed"})
        );
    }

    #[test]
    fn pod_validation_reports_every_field() {
        let pod = json!({
            "metadata": {"name": "p", "labels": {"ok": "yes", "bad key": "v"}},
            "spec": {
                "volumes": [{"name": "data", "emptyDir": {}}],
                "containers": [{
                    "name": "a", "image": "x:1",
                    "ports": [{"containerPort": 0, "name": "web"}, {"containerPort": 81, "name": "web"}],
                    "volumeMounts": [{"name": "missing", "mountPath": "/m"}]
                }]
            }
        });
        let status = prepare(ResourceKind::Pod, &pod).unwrap_err();
        assert_eq!(
            fields(&status),
            [
                "metadata.labels",
                "spec.containers[0].ports[0].containerPort",
                "spec.containers[0].ports[1].name",
                "spec.containers[0].volumeMounts[0].name"
            ]
        );
        let missing = json!({"metadata": {"name": "p"}, "spec": {}});
        assert_eq!(
            fields(&prepare(ResourceKind::Pod, &missing).unwrap_err()),
            ["spec.containers"]
        );
        let wrong_kind = json!({"kind": "Service", "metadata": {"name": "p"}});
        assert_eq!(
            prepare(ResourceKind::Pod, &wrong_kind).unwrap_err()["code"],
            400
        );
    }

    #[test]
    fn node_port_services_get_ports_and_policies() {
        let service = json!({
            "metadata": {"name": "web"},
            "spec": {"type": "NodePort", "ports": [{"name": "http", "port": 80, "targetPort": "http"}]}
        });
        let out = prepare(ResourceKind::Service, &service).unwrap();
        let port = &out["spec"]["ports"][0];
        assert!(
            port["nodePort"]
                .as_i64()
                .is_some_and(|p| (30000..32768).contains(&p))
        );
        assert_eq!(port["targetPort"], "http");
        assert_eq!(out["spec"]["externalTrafficPolicy"], "Cluster");
        let two_unnamed =
            json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let status = prepare(ResourceKind::Service, &two_unnamed).unwrap_err();
        assert_eq!(
            fields(&status),
            ["spec.ports[0].name", "spec.ports[1].name"]
        );
        let headless = json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None"}});
        assert_eq!(
            prepare(ResourceKind::Service, &headless).unwrap()["spec"]["clusterIP"],
            "None"
        );
    }

    #[test]
    fn network_policies_and_claims_are_checked() {
        let policy = json!({
            "metadata": {"name": "np"},
            "spec": {
                "podSelector": {"matchExpressions": [{"key": "app", "operator": "In"}]},
                "policyTypes": ["Sideways"],
                "egress": [{"to": [{}], "ports": [{"protocol": "ICMP"}]}]
            }
        });
        let status = prepare(ResourceKind::NetworkPolicy, &policy).unwrap_err();
        // The apiserver's order: selector, each rule's ports then peers, policy types last.
        assert_eq!(
            fields(&status),
            [
                "spec.podSelector.matchExpressions[0].values",
                "spec.egress[0].ports[0].protocol",
                "spec.egress[0].to[0]",
                "spec.policyTypes[0]",
            ]
        );
        let egress = json!({"metadata": {"name": "np"}, "spec": {"egress": [{}]}});
        let out = prepare(ResourceKind::NetworkPolicy, &egress).unwrap();
        assert_eq!(out["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        assert_eq!(out["spec"]["podSelector"], json!({}));
        let empty = json!({"metadata": {"name": "np"}, "spec": {"egress": []}});
        let out = prepare(ResourceKind::NetworkPolicy, &empty).unwrap();
        assert_eq!(out["spec"]["policyTypes"], json!(["Ingress"]));
        let claim =
            json!({"metadata": {"name": "c"}, "spec": {"accessModes": ["ReadWriteSometimes"]}});
        let status = prepare(ResourceKind::PersistentVolumeClaim, &claim).unwrap_err();
        assert_eq!(
            fields(&status),
            ["spec.accessModes", "spec.resources[storage]"]
        );
    }

    #[test]
    fn names_and_generate_name_prefixes() {
        assert!(validate_new_name(ResourceKind::Pod, Some("a.b"), None).is_ok());
        assert!(validate_new_name(ResourceKind::Service, Some("a.b"), None).is_err());
        assert!(validate_new_name(ResourceKind::Pod, None, Some("web-")).is_ok());
        assert!(validate_new_name(ResourceKind::Pod, None, Some("Web-")).is_err());
        assert!(validate_new_name(ResourceKind::Pod, None, None).is_err());
        assert!(validate_new_name(ResourceKind::Pod, Some(""), Some("x-")).is_ok());
    }
}
