//! A pod's spec as the apiserver defaults and validates it at creation (also inside a
//! workload's pod template), and the QoS class it derives.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::names;
use crate::status::FieldError;

/// `ValidateResourceRequirements`: each request at most its limit.
fn validate_requests_within_limits(
    path: &str,
    container: &Container,
    errors: &mut Vec<FieldError>,
) {
    let Some(resources) = &container.resources else {
        return;
    };
    let limits = resources.limits.clone().unwrap_or_default();
    for (name, request) in resources.requests.iter().flatten() {
        if let Some(limit) = limits.get(name)
            && crate::quantity::parse_quantity(&request.0)
                > crate::quantity::parse_quantity(&limit.0)
        {
            errors.push(FieldError::invalid(
                format!("{path}.resources.requests[{name}]"),
                &request.0,
                format!("must be less than or equal to {name} limit of {}", limit.0),
            ));
        }
    }
}

pub(crate) fn default_pod(pod: &mut Pod) {
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.restart_policy
        .get_or_insert_with(|| "Always".to_owned());
    spec.termination_grace_period_seconds.get_or_insert(30);
    spec.dns_policy
        .get_or_insert_with(|| "ClusterFirst".to_owned());
    spec.scheduler_name
        .get_or_insert_with(|| "default-scheduler".to_owned());
    let account = spec
        .service_account_name
        .get_or_insert_with(|| "default".to_owned())
        .clone();
    spec.service_account.get_or_insert(account);
    spec.security_context.get_or_insert_with(Default::default);
    spec.enable_service_links.get_or_insert(true);
    spec.priority.get_or_insert(0);
    spec.preemption_policy
        .get_or_insert_with(|| "PreemptLowerPriority".to_owned());
    // The scheduler, not the client, binds pods (a client-set nodeName is kept, as the real
    // apiserver does).
    for container in spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten())
    {
        default_container(container);
    }
}

fn default_container(container: &mut Container) {
    if container.image_pull_policy.is_none() {
        let image = container.image.as_deref().unwrap_or_default();
        let last = image.rsplit('/').next().unwrap_or(image);
        let pinned = image.contains('@');
        let tag = last.split_once(':').map(|(_, tag)| tag);
        let policy = if !pinned && tag.is_none_or(|t| t == "latest") {
            "Always"
        } else {
            "IfNotPresent"
        };
        container.image_pull_policy = Some(policy.to_owned());
    }
    container
        .termination_message_path
        .get_or_insert_with(|| "/dev/termination-log".to_owned());
    container
        .termination_message_policy
        .get_or_insert_with(|| "File".to_owned());
    container.resources.get_or_insert_with(Default::default);
    for port in container.ports.iter_mut().flatten() {
        port.protocol.get_or_insert_with(|| "TCP".to_owned());
    }
}

/// The QoS class the apiserver derives from requests and limits.
pub(crate) fn qos_class(pod: &Pod) -> &'static str {
    let Some(spec) = &pod.spec else {
        return "BestEffort";
    };
    let containers: Vec<&Container> = spec.containers.iter().collect();
    let mut any = false;
    let mut guaranteed = true;
    for container in &containers {
        let resources = container.resources.clone().unwrap_or_default();
        let requests = resources.requests.unwrap_or_default();
        let limits = resources.limits.unwrap_or_default();
        if !requests.is_empty() || !limits.is_empty() {
            any = true;
        }
        for resource in ["cpu", "memory"] {
            let limit = limits.get(resource);
            let request = requests.get(resource).or(limit);
            if limit.is_none() || request != limit {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort"
    } else if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];

/// A port's `protocol`, when set, is one the apiserver knows (pod, Service and
/// NetworkPolicy ports alike).
pub(crate) fn validate_protocol(path: &str, protocol: Option<&str>, errors: &mut Vec<FieldError>) {
    if let Some(protocol) = protocol
        && !PROTOCOLS.contains(&protocol)
    {
        errors.push(FieldError::not_supported(
            format!("{path}.protocol"),
            protocol,
            PROTOCOLS,
        ));
    }
}

pub(crate) fn validate_pod(pod: &Pod, errors: &mut Vec<FieldError>) {
    let Some(spec) = &pod.spec else {
        errors.push(FieldError::required("spec.containers", ""));
        return;
    };
    if spec.containers.is_empty() {
        errors.push(FieldError::required("spec.containers", ""));
    }
    if let Some(policy) = &spec.restart_policy
        && !["Always", "OnFailure", "Never"].contains(&policy.as_str())
    {
        errors.push(FieldError::not_supported(
            "spec.restartPolicy",
            policy,
            &["Always", "Never", "OnFailure"],
        ));
    }
    if let Some(seconds) = spec.termination_grace_period_seconds
        && seconds < 0
    {
        errors.push(FieldError::invalid(
            "spec.terminationGracePeriodSeconds",
            seconds.to_string(),
            "must be greater than or equal to 0",
        ));
    }
    let volumes =
        crate::pod_volumes::validate_volumes(spec.volumes.as_deref().unwrap_or_default(), errors);
    let mut container_names = BTreeSet::new();
    let groups = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (path, containers) in groups {
        for (i, container) in containers.iter().enumerate() {
            validate_container(
                &format!("{path}[{i}]"),
                container,
                &volumes,
                &mut container_names,
                errors,
            );
        }
    }
}

fn validate_container(
    path: &str,
    container: &Container,
    volumes: &BTreeSet<String>,
    seen: &mut BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) {
    if container.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    } else if let Err(message) = names::dns1123_label(&container.name) {
        errors.push(FieldError::invalid(
            format!("{path}.name"),
            &container.name,
            message,
        ));
    } else if !seen.insert(container.name.clone()) {
        errors.push(FieldError::duplicate(
            format!("{path}.name"),
            &container.name,
        ));
    }
    if container
        .image
        .as_deref()
        .is_none_or(|i| i.trim().is_empty())
    {
        errors.push(FieldError::required(format!("{path}.image"), ""));
    }
    if let Some(policy) = &container.image_pull_policy
        && !["Always", "IfNotPresent", "Never"].contains(&policy.as_str())
    {
        errors.push(FieldError::not_supported(
            format!("{path}.imagePullPolicy"),
            policy,
            &["Always", "IfNotPresent", "Never"],
        ));
    }
    validate_requests_within_limits(path, container, errors);
    let mut port_names = BTreeSet::new();
    for (j, port) in container.ports.iter().flatten().enumerate() {
        let field = format!("{path}.ports[{j}]");
        if !(1..=65535).contains(&port.container_port) {
            errors.push(FieldError::invalid(
                format!("{field}.containerPort"),
                port.container_port.to_string(),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(name) = &port.name {
            if let Err(message) = names::iana_svc_name(name) {
                errors.push(FieldError::invalid(format!("{field}.name"), name, message));
            } else if !port_names.insert(name.clone()) {
                errors.push(FieldError::duplicate(format!("{field}.name"), name));
            }
        }
        validate_protocol(&field, port.protocol.as_deref(), errors);
    }
    crate::pod_volumes::validate_mounts(
        path,
        container.volume_mounts.as_deref().unwrap_or_default(),
        volumes,
        errors,
    );
    for (j, env) in container.env.iter().flatten().enumerate() {
        if env.name.is_empty() || env.name.contains('=') || env.name.chars().any(char::is_control) {
            errors.push(FieldError::invalid(
                format!("{path}.env[{j}].name"),
                &env.name,
                "a valid environment variable name must consist only of printable ASCII characters other than '='",
            ));
        }
    }
}
