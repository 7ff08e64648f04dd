//! The server's Pod: one hardened container that passes the `restricted` Pod Security Standard.
//!
//! Secret files: each is a `secret` volume projecting its one key as the item
//! [`SECRET_FILE_ITEM`] with `defaultMode` 0400, mounted read-only with that item as `subPath`
//! at exactly the file's `path` (nothing else in its directory is hidden); the pod's `fsGroup`
//! lets the non-root server read it (the kubelet makes it 0440, group `fsGroup`). The pod spec
//! names the Secret and key, never the value; the file's `env` variable is set to its path.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    KeyToPath, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SeccompProfile, SecretKeySelector, SecretVolumeSource, SecurityContext,
    TCPSocketAction, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_types::labels::TRANSPORT;
use mcp_types::{
    EnvValue, InstanceId, K8sSecurityContext, McpServer, ResourceList, ValidationErrors,
};

use crate::meta::Checked;
use crate::names::{pod_volume_name, pvc_name, secret_volume_name};
use crate::{
    BuildOptions, CONTAINER_NAME, DEFAULT_IMAGE, GPU_PRODUCT_LABEL, GPU_RESOURCE, PORT_NAME,
    SECRET_FILE_ITEM, SECRET_FILE_MODE, TMP_MOUNT_PATH, TMP_VOLUME,
};

/// Builds the Pod running `spec` as instance `instance` (also the pod's name).
///
/// # Errors
/// The spec's validation errors (from [`McpServer::validate_spec`]), plus `instanceId` when the
/// id is not a DNS-1123 label and `options.*` for invalid options.
pub fn build_pod(
    spec: &McpServer,
    instance: &InstanceId,
    opts: &BuildOptions,
) -> Result<Pod, ValidationErrors> {
    Checked::new(spec, instance, opts).map(pod)
}

pub(crate) fn pod(c: Checked<'_>) -> Pod {
    let spec = c.spec;
    // Operator-wide pod labels first, then the spec's, then the reserved set on top.
    let mut extra = c.opts.pod_metadata.labels.clone();
    extra.extend(spec.labels.clone());
    let mut labels = mcp_types::labels::instance_labels(&spec.name, c.instance, &extra);
    labels.insert(TRANSPORT.to_owned(), spec.transport.as_str().to_owned());
    let mut annotations = c.opts.pod_metadata.annotations.clone();
    annotations.extend(c.annotations());
    if spec.transport.is_http() {
        annotations.insert(
            mcp_types::labels::HTTP_PATH.to_owned(),
            spec.http_path().to_owned(),
        );
    }

    let security = spec.security_context.clone().unwrap_or_default();
    let mut meta = c.object_meta(c.instance.to_owned());
    meta.labels = Some(labels);
    meta.annotations = Some(annotations);

    let mut pod = Pod {
        metadata: meta,
        spec: Some(PodSpec {
            containers: vec![container(spec, &security)],
            restart_policy: Some(spec.restart_policy.as_str().to_owned()),
            service_account_name: Some(c.opts.service_account_name().to_owned()),
            // Servers never talk to the API server; do not hand them a token.
            automount_service_account_token: Some(false),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(security.uid()),
                run_as_group: Some(security.gid()),
                fs_group: Some(security.fs_group()),
                seccomp_profile: Some(runtime_default()),
                ..PodSecurityContext::default()
            }),
            volumes: Some(volumes(c)),
            affinity: gpu_affinity(spec),
            tolerations: spec.gpu.as_ref().map(|_| {
                vec![Toleration {
                    key: Some(GPU_RESOURCE.to_owned()),
                    operator: Some("Exists".to_owned()),
                    effect: Some("NoSchedule".to_owned()),
                    ..Toleration::default()
                }]
            }),
            ..PodSpec::default()
        }),
        status: None,
    };
    crate::egress::decorate_pod(&c.egress(), c.opts, c.instance, &mut pod);
    pod
}

fn container(spec: &McpServer, security: &K8sSecurityContext) -> Container {
    let (requests, limits) = spec.resources.effective();
    let requests = quantities(&requests);
    let mut limits = quantities(&limits);
    if let Some(gpu) = &spec.gpu {
        // Extended resources go in limits only; the request defaults to the limit.
        limits.insert(GPU_RESOURCE.to_owned(), Quantity(gpu.count.to_string()));
    }
    let mut mounts = vec![VolumeMount {
        name: TMP_VOLUME.to_owned(),
        mount_path: TMP_MOUNT_PATH.to_owned(),
        ..VolumeMount::default()
    }];
    mounts.extend(spec.volumes.iter().map(|v| VolumeMount {
        name: pod_volume_name(&v.name),
        mount_path: v.mount_path.clone(),
        read_only: v.read_only.then_some(true),
        ..VolumeMount::default()
    }));
    mounts.extend(
        spec.secret_files
            .iter()
            .enumerate()
            .map(|(i, f)| VolumeMount {
                name: secret_volume_name(i),
                mount_path: f.path.clone(),
                sub_path: Some(SECRET_FILE_ITEM.to_owned()),
                read_only: Some(true),
                ..VolumeMount::default()
            }),
    );
    Container {
        name: CONTAINER_NAME.to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| DEFAULT_IMAGE.to_owned()),
        ),
        command: non_empty(&spec.command),
        args: non_empty(&spec.args),
        working_dir: spec.working_dir.clone(),
        env: (!spec.env.is_empty() || spec.secret_files.iter().any(|f| f.env.is_some()))
            .then(|| env(spec)),
        ports: spec.port.filter(|_| spec.transport.is_http()).map(|port| {
            vec![ContainerPort {
                name: Some(PORT_NAME.to_owned()),
                container_port: i32::from(port),
                protocol: Some("TCP".to_owned()),
                ..ContainerPort::default()
            }]
        }),
        // An HTTP server is Ready (and gets Service traffic) once its port accepts connections;
        // MCP-level readiness (a handshake) is the gateway's and `mcp-orch run`'s to check.
        readiness_probe: spec
            .port
            .filter(|_| spec.transport.is_http())
            .map(|_| Probe {
                tcp_socket: Some(TCPSocketAction {
                    port: IntOrString::String(PORT_NAME.to_owned()),
                    ..TCPSocketAction::default()
                }),
                period_seconds: Some(5),
                failure_threshold: Some(3),
                ..Probe::default()
            }),
        // stdio servers speak MCP on stdin; the backend attaches to it.
        stdin: (!spec.transport.is_http()).then_some(true),
        resources: Some(ResourceRequirements {
            requests: Some(requests),
            limits: Some(limits),
            ..ResourceRequirements::default()
        }),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(security.read_only_root()),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                add: None,
            }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    }
}

fn env(spec: &McpServer) -> Vec<EnvVar> {
    spec.env
        .iter()
        .map(|(name, value)| match value {
            EnvValue::Plain(v) => EnvVar {
                name: name.clone(),
                value: Some(v.expose().to_owned()),
                value_from: None,
            },
            EnvValue::Secret { secret_ref } => EnvVar {
                name: name.clone(),
                value: None,
                value_from: Some(EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: secret_ref.name.clone(),
                        key: secret_ref.key.clone(),
                        optional: None,
                    }),
                    ..EnvVarSource::default()
                }),
            },
        })
        .chain(spec.secret_files.iter().filter_map(|f| {
            Some(EnvVar {
                name: f.env.clone()?,
                value: Some(f.path.clone()),
                value_from: None,
            })
        }))
        .collect()
}

fn volumes(c: Checked<'_>) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }];
    volumes.extend(c.spec.volumes.iter().map(|v| Volume {
        name: pod_volume_name(&v.name),
        persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
            claim_name: if v.persistent {
                mcp_types::persistent_volume_name(&c.spec.name, &v.name)
            } else {
                pvc_name(c.instance, &v.name)
            },
            read_only: v.read_only.then_some(true),
        }),
        ..Volume::default()
    }));
    volumes.extend(c.spec.secret_files.iter().enumerate().map(|(i, f)| Volume {
        name: secret_volume_name(i),
        secret: Some(SecretVolumeSource {
            secret_name: Some(f.secret_ref.name.clone()),
            items: Some(vec![KeyToPath {
                key: f.secret_ref.key.clone(),
                path: SECRET_FILE_ITEM.to_owned(),
                mode: None,
            }]),
            default_mode: Some(SECRET_FILE_MODE),
            optional: None,
        }),
        ..Volume::default()
    }));
    volumes
}

fn gpu_affinity(spec: &McpServer) -> Option<Affinity> {
    let product = spec.gpu.as_ref()?.product.clone()?;
    Some(Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(vec![NodeSelectorRequirement {
                        key: GPU_PRODUCT_LABEL.to_owned(),
                        operator: "In".to_owned(),
                        values: Some(vec![product]),
                    }]),
                    match_fields: None,
                }],
            }),
            ..NodeAffinity::default()
        }),
        ..Affinity::default()
    })
}

fn quantities(list: &ResourceList) -> BTreeMap<String, Quantity> {
    [("cpu", &list.cpu), ("memory", &list.memory)]
        .into_iter()
        .filter_map(|(k, q)| Some((k.to_owned(), Quantity(q.as_ref()?.as_str().to_owned()))))
        .collect()
}

fn runtime_default() -> SeccompProfile {
    SeccompProfile {
        type_: "RuntimeDefault".to_owned(),
        localhost_profile: None,
    }
}

fn non_empty(v: &[String]) -> Option<Vec<String>> {
    (!v.is_empty()).then(|| v.to_vec())
}
