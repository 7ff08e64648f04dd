//! Spec -> container create body and volumes, as a pure function (no engine calls).
//!
//! Hardened defaults equal to the Kubernetes "restricted" profile: user `1000:1000` (or the
//! spec's `securityContext`), read-only root filesystem with a tmpfs at `/tmp`, every
//! capability dropped, `no-new-privileges`, a PID limit, and `docker-init` as PID 1 so the
//! server gets SIGTERM with its default meaning and zombies are reaped. HTTP transports
//! publish their port on 127.0.0.1 only, on a port the engine picks.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding, RestartPolicy as DockerRestartPolicy, RestartPolicyNameEnum,
    VolumeCreateRequest,
};
use mcp_orchestrator_api::{OrchestratorError, Result};
use mcp_types::{
    Egress, McpServer, Quantity, RestartPolicy, SecretString, Timestamp, Transport,
    ValidationErrors, labels,
};

use crate::egress::{EgressPlan, plan_egress};

pub use crate::conventions::{
    HOST_PORT_LABEL, NETWORK_LABEL, PATH_LABEL, PIDS_LIMIT, PORT_LABEL, SIZE_LABEL, TMP_OPTIONS,
    VOLUME_LABEL, volume_labels,
};

/// Everything `start_server` asks the engine to create for one instance. Its `Debug` hides the
/// environment, which holds secret values.
#[derive(Clone)]
pub struct ContainerPlan {
    /// The container name (the instance id).
    pub name: String,
    /// The create body. Its `Env` holds secret values: never log it.
    pub body: ContainerCreateBody,
    /// Named volumes to create first: per-instance ones labelled with the instance (the secret
    /// files' one too), persistent ones ([`labels::PERSISTENT`]) with the server only
    /// (creating an existing one is a no-op).
    pub volumes: Vec<VolumeCreateRequest>,
    /// Volumes whose root directory is given to the server's user before the start, as
    /// (volume name, uid, gid): the writable ones, whose root a new named volume otherwise
    /// gives to root.
    pub owned_mounts: Vec<(String, u64, u64)>,
    /// The effective egress policy (the spec's or the backend's default).
    pub egress_policy: Egress,
    /// How the instance is networked for it; companions to create first.
    pub egress: EgressPlan,
}

impl std::fmt::Debug for ContainerPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut body = self.body.clone();
        if let Some(env) = &mut body.env {
            for entry in env.iter_mut() {
                let key = entry.split('=').next().unwrap_or_default().to_owned();
                *entry = format!("{key}=<redacted>");
            }
        }
        f.debug_struct("ContainerPlan")
            .field("name", &self.name)
            .field("body", &body)
            .field("volumes", &self.volumes)
            .field("owned_mounts", &self.owned_mounts)
            .field("egress_policy", &self.egress_policy)
            .field("egress", &self.egress)
            .finish()
    }
}

/// The name of the Docker volume backing spec volume `volume` of instance `instance`.
pub fn volume_name(instance: &str, volume: &str) -> String {
    format!("{instance}-{volume}")
}

/// The container port key (`8080/tcp`) of an HTTP transport.
pub fn port_key(port: u16) -> String {
    format!("{port}/tcp")
}

/// Builds the create body for `spec` (already validated and merged with its start options)
/// as instance `instance`, created at `created_at`, with resolved `env`, on `network`, for the
/// spec's egress policy or `default_egress` (see [`crate::egress`] for what each policy
/// changes: the network, the published port, the proxy environment, the labels).
///
/// # Errors
/// [`InvalidSpec`](OrchestratorError::InvalidSpec) when the spec has no image or a resource
/// amount does not fit the engine's integers.
pub fn build_container(
    spec: &McpServer,
    instance: &str,
    created_at: Timestamp,
    env: &[(String, SecretString)],
    network: &str,
    default_egress: &Egress,
) -> Result<ContainerPlan> {
    let image = spec.image.clone().ok_or_else(|| {
        OrchestratorError::InvalidSpec(ValidationErrors::single(
            "image",
            "the docker backend runs images: set `image`",
        ))
    })?;

    // Annotations become labels too (Docker has no annotations); the spec's labels win.
    let mut all_labels: BTreeMap<String, String> = spec.annotations.clone();
    all_labels.extend(labels::instance_labels(&spec.name, instance, &spec.labels));
    all_labels.insert(labels::CREATED_AT.to_owned(), created_at.to_string());
    all_labels.insert(
        labels::TRANSPORT.to_owned(),
        spec.transport.as_str().to_owned(),
    );

    if let Some(port) = spec.port.filter(|_| spec.transport.is_http()) {
        all_labels.insert(PORT_LABEL.to_owned(), port.to_string());
        all_labels.insert(PATH_LABEL.to_owned(), spec.http_path().to_owned());
    }

    let sc = spec.security_context.clone().unwrap_or_default();

    let (mounts, volumes) = volume_parts(spec, instance, network)?;
    let owned_mounts = spec
        .volumes
        .iter()
        .filter(|v| !v.read_only)
        .map(|v| {
            let id = |n: i64| u64::try_from(n).unwrap_or_default();
            (
                source_of(spec, instance, v),
                id(sc.uid()),
                id(sc.fs_group()),
            )
        })
        .collect();

    let (exposed_ports, port_bindings) = match spec.port.filter(|_| spec.transport.is_http()) {
        Some(port) => (
            Some(vec![port_key(port)]),
            Some(HashMap::from([(
                port_key(port),
                Some(vec![PortBinding {
                    host_ip: Some("127.0.0.1".to_owned()),
                    host_port: None,
                }]),
            )])),
        ),
        None => (None, None),
    };

    let device_requests = spec.gpu.as_ref().map(|gpu| {
        vec![DeviceRequest {
            driver: Some("nvidia".to_owned()),
            count: Some(i64::from(gpu.count)),
            capabilities: Some(vec![vec!["gpu".to_owned()]]),
            ..DeviceRequest::default()
        }]
    });

    let host_config = HostConfig {
        port_bindings,
        mounts: (!mounts.is_empty()).then_some(mounts),
        device_requests,
        ..hardened_host_config(spec, network)?
    };

    let body = ContainerCreateBody {
        image: Some(image),
        user: Some(format!("{}:{}", sc.uid(), sc.gid())),
        entrypoint: (!spec.command.is_empty()).then(|| spec.command.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(
            env.iter()
                .map(|(k, v)| format!("{k}={}", v.expose()))
                .chain(crate::secret_files::env_entries(spec))
                .collect(),
        ),
        working_dir: spec.working_dir.clone(),
        labels: Some(all_labels.into_iter().collect()),
        exposed_ports,
        tty: Some(false),
        // A stdio server reads its MCP channel from stdin: keep it open for the container's
        // whole life, across attached clients (`StdinOnce=false`), so that a server with no
        // client waits instead of reading EOF and exiting.
        open_stdin: Some(spec.transport == Transport::Stdio),
        stdin_once: Some(false),
        attach_stdin: Some(false),
        attach_stdout: Some(false),
        attach_stderr: Some(false),
        host_config: Some(host_config),
        networking_config: Some(NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                network.to_owned(),
                EndpointSettings::default(),
            )])),
        }),
        ..ContainerCreateBody::default()
    };
    let mut body = body;
    let egress_policy = spec.effective_egress(default_egress);
    let egress = plan_egress(&egress_policy, spec.transport, instance);
    crate::egress::apply(&mut body, &egress, &egress_policy, instance, network);
    Ok(ContainerPlan {
        name: instance.to_owned(),
        body,
        volumes,
        owned_mounts,
        egress_policy,
        egress,
    })
}

/// Publishes the HTTP transport's container port on loopback port `host_port` and records it
/// in [`HOST_PORT_LABEL`]; a plan without an HTTP port is left alone.
pub fn pin_host_port(plan: &mut ContainerPlan, host_port: u16) {
    let Some(port) = plan
        .body
        .labels
        .as_ref()
        .and_then(|l| l.get(PORT_LABEL))
        .and_then(|p| p.parse::<u16>().ok())
    else {
        return;
    };
    if let Some(bindings) = plan
        .body
        .host_config
        .as_mut()
        .and_then(|hc| hc.port_bindings.as_mut())
        .and_then(|pb| pb.get_mut(&port_key(port)))
        .and_then(Option::as_mut)
    {
        for b in bindings {
            b.host_port = Some(host_port.to_string());
        }
    }
    if let Some(labels) = plan.body.labels.as_mut() {
        labels.insert(HOST_PORT_LABEL.to_owned(), host_port.to_string());
    }
}

/// The MCP URL of an instance from its labels (HTTP transports with a pinned host port).
pub fn endpoint_from_labels(labels: &BTreeMap<String, String>) -> Option<String> {
    labels.get(PORT_LABEL)?;
    let host_port: u16 = labels.get(HOST_PORT_LABEL)?.parse().ok()?;
    let path = labels
        .get(PATH_LABEL)
        .map_or(mcp_types::DEFAULT_HTTP_PATH, String::as_str);
    Some(mcp_types::http_url("127.0.0.1", host_port, path))
}

/// The Docker volume behind spec volume `v` of `instance`: the server's persistent volume
/// ([`mcp_types::persistent_volume_name`]) or the instance's own.
fn source_of(spec: &McpServer, instance: &str, v: &mcp_types::VolumeSpec) -> String {
    if v.persistent {
        mcp_types::persistent_volume_name(&spec.name, &v.name)
    } else {
        volume_name(instance, &v.name)
    }
}

/// The mounts of the container and the named volumes behind them: the spec's volumes, and the
/// secret files' volume (their binds are added once it is filled, see `secret_files`).
fn volume_parts(
    spec: &McpServer,
    instance: &str,
    network: &str,
) -> Result<(Vec<Mount>, Vec<VolumeCreateRequest>)> {
    crate::secret_files::check_paths(spec)?;
    let mut mounts: Vec<Mount> = spec
        .volumes
        .iter()
        .map(|v| Mount {
            target: Some(v.mount_path.clone()),
            source: Some(source_of(spec, instance, v)),
            typ: Some(MountType::VOLUME),
            read_only: Some(v.read_only),
            ..Mount::default()
        })
        .collect();
    let mut volumes: Vec<VolumeCreateRequest> = spec
        .volumes
        .iter()
        .map(|v| {
            let mut l = if v.persistent {
                labels::persistent_volume_labels(&spec.name, &v.name)
                    .into_iter()
                    .collect()
            } else {
                let mut l = volume_labels(&spec.name, instance);
                l.insert(NETWORK_LABEL.to_owned(), network.to_owned());
                l
            };
            l.insert(VOLUME_LABEL.to_owned(), v.name.clone());
            l.insert(SIZE_LABEL.to_owned(), v.size.to_string());
            VolumeCreateRequest {
                name: Some(source_of(spec, instance, v)),
                driver: Some("local".to_owned()),
                labels: Some(l),
                ..VolumeCreateRequest::default()
            }
        })
        .collect();
    if let Some((volume, mount)) = crate::secret_files::volume_parts(spec, instance, network) {
        volumes.push(volume);
        mounts.push(mount);
    }
    Ok((mounts, volumes))
}

/// Resources, hardening, restart policy and network: the parts of the host config that do not
/// depend on the instance.
fn hardened_host_config(spec: &McpServer, network: &str) -> Result<HostConfig> {
    let (requests, limits) = spec.resources.effective();
    let sc = spec.security_context.clone().unwrap_or_default();
    Ok(HostConfig {
        memory: amount(
            limits.memory.as_ref(),
            "resources.limits.memory",
            Quantity::to_bytes,
        )?,
        memory_reservation: amount(
            requests.memory.as_ref(),
            "resources.requests.memory",
            Quantity::to_bytes,
        )?,
        nano_cpus: amount(
            limits.cpu.as_ref(),
            "resources.limits.cpu",
            Quantity::to_nanos,
        )?,
        pids_limit: Some(PIDS_LIMIT),
        readonly_rootfs: Some(sc.read_only_root()),
        tmpfs: Some(HashMap::from([("/tmp".to_owned(), TMP_OPTIONS.to_owned())])),
        cap_drop: Some(vec!["ALL".to_owned()]),
        security_opt: Some(vec!["no-new-privileges".to_owned()]),
        group_add: Some(vec![sc.fs_group().to_string()]),
        privileged: Some(false),
        init: Some(true),
        restart_policy: Some(DockerRestartPolicy {
            name: Some(match spec.restart_policy {
                RestartPolicy::Always => RestartPolicyNameEnum::ALWAYS,
                RestartPolicy::OnFailure => RestartPolicyNameEnum::ON_FAILURE,
                RestartPolicy::Never => RestartPolicyNameEnum::NO,
            }),
            maximum_retry_count: None,
        }),
        network_mode: Some(network.to_owned()),
        ..HostConfig::default()
    })
}

fn amount(q: Option<&Quantity>, path: &str, unit: fn(&Quantity) -> u64) -> Result<Option<i64>> {
    q.map(|q| {
        i64::try_from(unit(q)).map_err(|_| {
            OrchestratorError::InvalidSpec(ValidationErrors::single(
                path,
                format!("{q} is too large for the Docker engine"),
            ))
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcp_types::{GpuSpec, K8sSecurityContext, VolumeSpec};

    const ID: &str = "mcp-time-0123456789";

    fn now() -> Timestamp {
        "2025-06-01T12:00:00Z".parse().unwrap()
    }

    fn build(spec: &McpServer) -> ContainerPlan {
        build_container(
            spec,
            ID,
            now(),
            &[("TOKEN".into(), SecretString::new("s3cr3t"))],
            "net",
            &Egress::Open,
        )
        .unwrap()
    }

    fn hc(plan: &ContainerPlan) -> &HostConfig {
        plan.body.host_config.as_ref().unwrap()
    }

    #[test]
    fn hardened_defaults() {
        let plan = build(&McpServer::new("time", "img:1"));
        let h = hc(&plan);
        assert_eq!(plan.body.user.as_deref(), Some("1000:1000"));
        assert_eq!(h.readonly_rootfs, Some(true));
        assert_eq!(h.cap_drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert_eq!(
            h.security_opt.as_deref(),
            Some(&["no-new-privileges".to_owned()][..])
        );
        assert_eq!(h.pids_limit, Some(PIDS_LIMIT));
        assert_eq!(h.tmpfs.as_ref().unwrap()["/tmp"], TMP_OPTIONS);
        assert_eq!(h.privileged, Some(false));
        assert_eq!(plan.body.tty, Some(false));
        assert_eq!(h.network_mode.as_deref(), Some("net"));
        assert!(
            plan.body
                .networking_config
                .as_ref()
                .unwrap()
                .endpoints_config
                .as_ref()
                .unwrap()
                .contains_key("net")
        );
        // Default resources: limits 512Mi / 500m, requests 128Mi.
        assert_eq!(h.memory, Some(512 << 20));
        assert_eq!(h.nano_cpus, Some(500_000_000));
        assert_eq!(h.memory_reservation, Some(128 << 20));
        assert_eq!(
            h.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::ALWAYS)
        );
        assert!(h.port_bindings.is_none() && plan.body.exposed_ports.is_none());
        assert!(h.device_requests.is_none() && h.mounts.is_none() && plan.volumes.is_empty());
    }

    #[test]
    fn security_context_overrides() {
        let spec = McpServer {
            security_context: Some(K8sSecurityContext {
                run_as_user: Some(2000),
                run_as_group: Some(3000),
                fs_group: Some(4000),
                read_only_root_filesystem: Some(false),
            }),
            ..McpServer::new("time", "img:1")
        };
        let plan = build(&spec);
        assert_eq!(plan.body.user.as_deref(), Some("2000:3000"));
        assert_eq!(hc(&plan).readonly_rootfs, Some(false));
        assert_eq!(
            hc(&plan).group_add.as_deref(),
            Some(&["4000".to_owned()][..])
        );
    }

    #[test]
    fn labels_annotations_command_args_env() {
        let mut spec = McpServer {
            command: vec!["/bin/server".into()],
            args: vec!["--flag".into(), "x".into()],
            working_dir: Some("/work".into()),
            ..McpServer::new("time", "img:1")
        };
        spec.labels.insert("team".into(), "search".into());
        spec.annotations.insert("note".into(), "hi".into());
        spec.annotations.insert("team".into(), "loses".into());
        let plan = build(&spec);
        let l = plan.body.labels.as_ref().unwrap();
        for (k, v) in [
            (labels::SERVER, "time"),
            (labels::MANAGED, "true"),
            (labels::INSTANCE, ID),
            (labels::APP_NAME, "time"),
            (labels::APP_INSTANCE, ID),
            (labels::APP_MANAGED_BY, "mcpctl"),
            (labels::CREATED_AT, "2025-06-01T12:00:00Z"),
            (labels::TRANSPORT, "stdio"),
            ("team", "search"),
            ("note", "hi"),
        ] {
            assert_eq!(l.get(k).map(String::as_str), Some(v), "label {k}");
        }
        assert_eq!(plan.body.entrypoint.as_deref(), Some(&spec.command[..]));
        assert_eq!(plan.body.cmd.as_deref(), Some(&spec.args[..]));
        assert_eq!(plan.body.working_dir.as_deref(), Some("/work"));
        assert_eq!(
            plan.body.env.as_deref(),
            Some(&["TOKEN=s3cr3t".to_owned()][..])
        );
        assert_eq!(plan.name, ID);
    }

    #[test]
    fn http_port_published_on_loopback_only() {
        let spec = McpServer {
            transport: Transport::StreamableHttp,
            port: Some(8080),
            ..McpServer::new("web", "img:1")
        };
        let plan = build(&spec);
        assert_eq!(
            plan.body.exposed_ports.as_deref(),
            Some(&["8080/tcp".to_owned()][..])
        );
        let bindings = hc(&plan).port_bindings.as_ref().unwrap()["8080/tcp"]
            .clone()
            .unwrap();
        assert_eq!(bindings.len(), 1);
        assert_eq!(bindings[0].host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(bindings[0].host_port, None);
    }

    #[test]
    fn resources_gpu_volumes_restart_policy() {
        let spec: McpServer = serde_json::from_str(
            r#"{"name":"big","image":"img:1","restartPolicy":"OnFailure",
                "resources":{"requests":{"cpu":"250m","memory":"256Mi"},"limits":{"cpu":"1.5","memory":"1Gi"}},
                "gpu":{"count":2},
                "volumes":[{"name":"data","size":"1Gi","mountPath":"/data"},
                           {"name":"ro","size":"1Gi","mountPath":"/ro","readOnly":true}]}"#,
        )
        .unwrap();
        spec.validate_spec().unwrap();
        let plan = build(&spec);
        let h = hc(&plan);
        assert_eq!(h.memory, Some(1 << 30));
        assert_eq!(h.memory_reservation, Some(256 << 20));
        assert_eq!(h.nano_cpus, Some(1_500_000_000));
        assert_eq!(
            h.restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::ON_FAILURE)
        );
        let gpu = &h.device_requests.as_ref().unwrap()[0];
        assert_eq!(gpu.driver.as_deref(), Some("nvidia"));
        assert_eq!(gpu.count, Some(2));
        assert_eq!(gpu.capabilities, Some(vec![vec!["gpu".to_owned()]]));
        let mounts = h.mounts.as_ref().unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(
            mounts[0].source.as_deref(),
            Some("mcp-time-0123456789-data")
        );
        assert_eq!(mounts[0].target.as_deref(), Some("/data"));
        assert_eq!(mounts[0].typ, Some(MountType::VOLUME));
        assert_eq!(mounts[1].read_only, Some(true));
        assert_eq!(plan.volumes.len(), 2);
        let vl = plan.volumes[0].labels.as_ref().unwrap();
        assert_eq!(vl[labels::INSTANCE], ID);
        assert_eq!(vl[VOLUME_LABEL], "data");
        let never = McpServer {
            restart_policy: RestartPolicy::Never,
            gpu: Some(GpuSpec {
                product: None,
                count: 1,
            }),
            volumes: vec![VolumeSpec {
                name: "x".into(),
                size: Quantity::parse("1Gi").unwrap(),
                storage_class: None,
                mount_path: "/x".into(),
                access_modes: vec![],
                read_only: false,
                persistent: false,
            }],
            ..McpServer::new("n", "img")
        };
        assert_eq!(
            hc(&build(&never)).restart_policy.as_ref().unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
    }

    #[test]
    fn refusals() {
        let no_image = McpServer::command("p", "/bin/true", Vec::<String>::new());
        let err = build_container(&no_image, ID, now(), &[], "net", &Egress::Open).unwrap_err();
        assert!(
            matches!(err, OrchestratorError::InvalidSpec(ref e) if e.has_path("image")),
            "{err}"
        );
    }

    #[test]
    fn the_spec_egress_wins_over_the_default() {
        let allow = Egress::Allow(vec![mcp_types::EgressRule::cidr("10.0.0.0/8", [])]);
        let spec = McpServer {
            egress: Some(allow.clone()),
            ..McpServer::new("e", "img")
        };
        let plan = build_container(&spec, ID, now(), &[], "net", &Egress::None).unwrap();
        assert_eq!(plan.egress_policy, allow);
        assert!(plan.egress.proxy().is_some());
        // Without its own, the default applies: `none` takes the network away from stdio.
        let plan = build_container(
            &McpServer::new("e", "img"),
            ID,
            now(),
            &[],
            "net",
            &Egress::None,
        )
        .unwrap();
        assert_eq!(plan.egress, EgressPlan::NoNetwork);
        let h = plan.body.host_config.as_ref().unwrap();
        assert_eq!(h.network_mode.as_deref(), Some("none"));
    }

    #[test]
    fn debug_of_the_spec_never_shows_env_values() {
        let mut spec = McpServer::new("time", "img:1");
        spec.env
            .insert("TOKEN".into(), mcp_types::EnvValue::plain("s3cr3t"));
        assert!(!format!("{spec:?}").contains("s3cr3t"));
        let plan = build(&spec);
        let shown = format!("{plan:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("TOKEN=<redacted>"),
            "{shown}"
        );
    }
}
