//! Builder tests: YAML snapshots of each builder's output, and focused checks per option.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, Pod, PodSpec, Service};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyPort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use mcp_k8s_resources::{
    BuildOptions, InstanceResources, Manifest, backend_role_rules, build_instance, build_namespace,
    build_network_policy, build_pod, build_pvcs, build_rbac, build_service, names, to_yaml,
};
use mcp_types::names::{check_dns1123_label, new_instance_name};
use mcp_types::{
    Egress, EgressRule, EnvValue, GpuSpec, InstanceId, K8sSecurityContext, McpServer, Quantity,
    ResourceRequirements, SecretFile, SizePreset, Timestamp, Transport, VolumeSpec, labels,
};
use rstest::rstest;

const INSTANCE: &str = "mcp-time-0123456789";

fn id() -> InstanceId {
    InstanceId::from(INSTANCE)
}

fn opts() -> BuildOptions {
    BuildOptions::new(
        "mcpctl",
        "2025-01-02T03:04:05Z".parse::<Timestamp>().unwrap(),
    )
}

fn stdio() -> McpServer {
    McpServer::new("time", "mcp/time:1.0")
}

fn http() -> McpServer {
    McpServer {
        transport: Transport::StreamableHttp,
        port: Some(8080),
        ..stdio()
    }
}

fn volume(name: &str, mount: &str) -> VolumeSpec {
    VolumeSpec {
        name: name.into(),
        size: Quantity::parse("1Gi").unwrap(),
        storage_class: None,
        mount_path: mount.into(),
        access_modes: Vec::new(),
        read_only: false,
        persistent: false,
    }
}

fn build(spec: &McpServer) -> InstanceResources {
    build_instance(spec, &id(), &opts()).unwrap()
}

fn pod_spec(r: &InstanceResources) -> &PodSpec {
    r.pod.spec.as_ref().unwrap()
}

fn container(r: &InstanceResources) -> &Container {
    &pod_spec(r).containers[0]
}

/// The one snapshot helper: renders objects exactly as `to_yaml` ships them.
fn assert_manifests(name: &str, manifests: impl Into<Vec<Manifest>>) {
    let yaml = to_yaml(&manifests.into()).unwrap();
    insta::assert_snapshot!(name, yaml);
}

#[test]
fn snapshot_stdio_instance() {
    assert_manifests("stdio_instance", build(&stdio()));
}

#[test]
fn snapshot_http_instance() {
    let spec = McpServer {
        command: vec!["node".into()],
        args: vec!["server.js".into(), "--port".into(), "8080".into()],
        env: BTreeMap::from([
            ("LOG_LEVEL".into(), EnvValue::plain("debug")),
            ("API_TOKEN".into(), EnvValue::secret("github", "token")),
        ]),
        resources: ResourceRequirements::preset(SizePreset::Medium),
        labels: BTreeMap::from([("team".into(), "search".into())]),
        annotations: BTreeMap::from([("example.com/owner".into(), "search-team".into())]),
        egress: Some(Egress::Allow(vec![
            EgressRule::cidr("10.0.0.0/8", []),
            EgressRule::cidr("192.168.0.0/16", []),
        ])),
        working_dir: Some("/app".into()),
        ..http()
    };
    assert_manifests("http_instance", build(&spec));
}

#[test]
fn snapshot_pod() {
    assert_manifests(
        "pod",
        vec![build_pod(&stdio(), &id(), &opts()).unwrap().into()],
    );
}

#[test]
fn snapshot_network_policy() {
    let spec = McpServer {
        egress: Some(Egress::Allow(vec![EgressRule::cidr("203.0.113.0/24", [])])),
        ..http()
    };
    assert_manifests(
        "network_policy",
        vec![build_network_policy(&spec, &id(), &opts()).unwrap().into()],
    );
}

#[test]
fn snapshot_service() {
    let svc = build_service(&http(), &id(), &opts()).unwrap().unwrap();
    assert_manifests("service", vec![svc.into()]);
}

#[test]
fn snapshot_volume_instance() {
    let spec = McpServer {
        volumes: vec![VolumeSpec {
            storage_class: Some("fast-ssd".into()),
            access_modes: vec![mcp_types::AccessMode::ReadWriteOncePod],
            ..volume("data", "/data")
        }],
        ..stdio()
    };
    assert_manifests(
        "pvcs",
        build_pvcs(&spec, &id(), &opts())
            .unwrap()
            .into_iter()
            .map(Manifest::from)
            .collect::<Vec<_>>(),
    );
    assert_manifests("volume_instance", build(&spec));
}

#[test]
fn snapshot_gpu_instance() {
    let spec = McpServer {
        gpu: Some(GpuSpec {
            product: Some("NVIDIA-A100-SXM4-40GB".into()),
            count: 2,
        }),
        ..stdio()
    };
    assert_manifests("gpu_instance", build(&spec));
}

#[test]
fn snapshot_namespace() {
    assert_manifests("namespace", vec![build_namespace("mcpctl").unwrap().into()]);
}

#[test]
fn snapshot_rbac() {
    assert_manifests("rbac", build_rbac("mcpctl", "mcpctl").unwrap());
}

#[rstest]
#[case(None, ("100m", "128Mi"), ("500m", "512Mi"))]
#[case(Some(SizePreset::Small), ("100m", "128Mi"), ("100m", "128Mi"))]
#[case(Some(SizePreset::Medium), ("500m", "512Mi"), ("500m", "512Mi"))]
#[case(Some(SizePreset::Large), ("1000m", "2Gi"), ("1000m", "2Gi"))]
fn resources_follow_presets(
    #[case] preset: Option<SizePreset>,
    #[case] requests: (&str, &str),
    #[case] limits: (&str, &str),
) {
    let spec = McpServer {
        resources: ResourceRequirements {
            preset,
            ..ResourceRequirements::default()
        },
        ..stdio()
    };
    let r = build(&spec);
    let res = container(&r).resources.as_ref().unwrap();
    let pair =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>| {
            let m = m.as_ref().unwrap();
            (m["cpu"].0.clone(), m["memory"].0.clone())
        };
    assert_eq!(pair(&res.requests), (requests.0.into(), requests.1.into()));
    assert_eq!(pair(&res.limits), (limits.0.into(), limits.1.into()));
}

#[test]
fn env_plain_and_secret_refs() {
    let spec = McpServer {
        env: BTreeMap::from([
            ("PLAIN".into(), EnvValue::plain("v")),
            ("TOKEN".into(), EnvValue::secret("gh-creds", "token")),
        ]),
        ..stdio()
    };
    let r = build(&spec);
    let env = container(&r).env.as_ref().unwrap();
    assert_eq!(env[0].name, "PLAIN");
    assert_eq!(env[0].value.as_deref(), Some("v"));
    assert_eq!(env[1].name, "TOKEN");
    assert_eq!(env[1].value, None);
    let sel = env[1]
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!((sel.name.as_str(), sel.key.as_str()), ("gh-creds", "token"));
}

fn with_secret_files() -> McpServer {
    McpServer {
        env: BTreeMap::from([("PLAIN".into(), EnvValue::plain("v"))]),
        secret_files: vec![
            SecretFile::new("/run/secrets/token", "gh-creds", "token").with_env("TOKEN_FILE"),
            SecretFile::new("/etc/app/key.pem", "tls", "tls.key"),
        ],
        ..stdio()
    }
}

#[test]
fn snapshot_secret_files_pod() {
    let pod = build_pod(&with_secret_files(), &id(), &opts()).unwrap();
    assert_manifests("secret_files_pod", vec![Manifest::from(pod)]);
}

#[test]
fn secret_files_are_secret_volumes_mounted_read_only_at_their_paths() {
    let r = build(&with_secret_files());
    let volumes = pod_spec(&r).volumes.as_ref().unwrap();
    let secret = |name: &str| {
        volumes
            .iter()
            .find(|v| v.name == name)
            .and_then(|v| v.secret.clone())
            .unwrap()
    };
    let first = secret("secret-file-0");
    assert_eq!(first.secret_name.as_deref(), Some("gh-creds"));
    assert_eq!(first.default_mode, Some(0o400));
    let items = first.items.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("token", mcp_k8s_resources::SECRET_FILE_ITEM)
    );
    assert_eq!(secret("secret-file-1").items.unwrap()[0].key, "tls.key");
    let mounts = container(&r).volume_mounts.as_ref().unwrap();
    let mount = |path: &str| mounts.iter().find(|m| m.mount_path == path).unwrap();
    for (path, volume) in [
        ("/run/secrets/token", "secret-file-0"),
        ("/etc/app/key.pem", "secret-file-1"),
    ] {
        assert_eq!(mount(path).name, volume);
        assert_eq!(mount(path).read_only, Some(true));
        assert_eq!(
            mount(path).sub_path.as_deref(),
            Some(mcp_k8s_resources::SECRET_FILE_ITEM)
        );
    }
    let env = container(&r).env.as_ref().unwrap();
    let names: Vec<_> = env
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("PLAIN", Some("v")),
            ("TOKEN_FILE", Some("/run/secrets/token"))
        ]
    );
    // The non-root server reads the files through the pod's fsGroup.
    let psc = pod_spec(&r).security_context.as_ref().unwrap();
    assert_eq!(psc.fs_group, Some(1000));
    // A secret file's variable alone gives the container an env list.
    let only_files = McpServer {
        env: BTreeMap::new(),
        ..with_secret_files()
    };
    assert_eq!(
        container(&build(&only_files)).env.as_ref().unwrap().len(),
        1
    );
}

#[test]
fn volumes_get_claims_and_mounts() {
    let spec = McpServer {
        volumes: vec![
            volume("data", "/data"),
            VolumeSpec {
                read_only: true,
                persistent: false,
                access_modes: vec![mcp_types::AccessMode::ReadOnlyMany],
                storage_class: Some("shared".into()),
                ..volume("models", "/models")
            },
        ],
        ..stdio()
    };
    let r = build(&spec);
    let pvc_names: Vec<_> = r
        .pvcs
        .iter()
        .map(|p| p.metadata.name.clone().unwrap())
        .collect();
    assert_eq!(
        pvc_names,
        [format!("{INSTANCE}-data"), format!("{INSTANCE}-models")]
    );
    let pvc_spec = |p: &PersistentVolumeClaim| p.spec.clone().unwrap();
    assert_eq!(
        pvc_spec(&r.pvcs[0]).access_modes.unwrap(),
        ["ReadWriteOnce"]
    );
    assert_eq!(pvc_spec(&r.pvcs[0]).storage_class_name, None);
    assert_eq!(
        pvc_spec(&r.pvcs[0]).resources.unwrap().requests.unwrap()["storage"].0,
        "1Gi"
    );
    assert_eq!(pvc_spec(&r.pvcs[1]).access_modes.unwrap(), ["ReadOnlyMany"]);
    assert_eq!(
        pvc_spec(&r.pvcs[1]).storage_class_name.as_deref(),
        Some("shared")
    );

    let volumes = pod_spec(&r).volumes.as_ref().unwrap();
    let claims: Vec<_> = volumes
        .iter()
        .filter_map(|v| Some((v.name.clone(), v.persistent_volume_claim.clone()?)))
        .collect();
    assert_eq!(claims.len(), 2);
    assert_eq!(claims[0].0, "pvc-data");
    assert_eq!(claims[0].1.claim_name, pvc_names[0]);
    assert_eq!(claims[1].1.read_only, Some(true));
    let mounts = container(&r).volume_mounts.as_ref().unwrap();
    let mount = |path: &str| mounts.iter().find(|m| m.mount_path == path).unwrap();
    assert_eq!(mount("/data").name, "pvc-data");
    assert_eq!(mount("/data").read_only, None);
    assert_eq!(mount("/models").read_only, Some(true));
    assert_eq!(mount("/tmp").name, "tmp");
}

#[rstest]
#[case(Some("NVIDIA-A100-SXM4-40GB"), 2)]
#[case(None, 1)]
fn gpu_limits_tolerations_and_affinity(#[case] product: Option<&str>, #[case] count: u32) {
    let spec = McpServer {
        gpu: Some(GpuSpec {
            product: product.map(Into::into),
            count,
        }),
        ..stdio()
    };
    let r = build(&spec);
    let limits = container(&r).resources.clone().unwrap().limits.unwrap();
    assert_eq!(limits["nvidia.com/gpu"].0, count.to_string());
    let tol = &pod_spec(&r).tolerations.as_ref().unwrap()[0];
    assert_eq!(
        (
            tol.key.as_deref(),
            tol.operator.as_deref(),
            tol.effect.as_deref()
        ),
        (Some("nvidia.com/gpu"), Some("Exists"), Some("NoSchedule"))
    );
    let affinity = pod_spec(&r).affinity.as_ref();
    match product {
        None => assert!(affinity.is_none()),
        Some(p) => {
            let terms = &affinity
                .unwrap()
                .node_affinity
                .as_ref()
                .unwrap()
                .required_during_scheduling_ignored_during_execution
                .as_ref()
                .unwrap()
                .node_selector_terms;
            let req = &terms[0].match_expressions.as_ref().unwrap()[0];
            assert_eq!(req.key, "nvidia.com/gpu.product");
            assert_eq!(req.operator, "In");
            assert_eq!(req.values.as_deref(), Some(&[p.to_owned()][..]));
        }
    }
}

#[test]
fn no_gpu_no_gpu_scheduling() {
    let r = build(&stdio());
    assert!(pod_spec(&r).tolerations.is_none() && pod_spec(&r).affinity.is_none());
    let limits = container(&r).resources.clone().unwrap().limits.unwrap();
    assert!(!limits.contains_key("nvidia.com/gpu"));
}

fn ingress_ports(np: &NetworkPolicy) -> Option<Vec<NetworkPolicyPort>> {
    np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0]
        .ports
        .clone()
}

#[test]
fn http_transport_exposes_its_port() {
    let r = build(&http());
    let c = container(&r);
    let port = &c.ports.as_ref().unwrap()[0];
    assert_eq!(
        (port.container_port, port.name.as_deref()),
        (8080, Some("mcp"))
    );
    assert_eq!(c.stdin, None);
    let svc: &Service = r.service.as_ref().unwrap();
    let svc_spec = svc.spec.as_ref().unwrap();
    assert_eq!(svc_spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(
        svc_spec.selector.as_ref().unwrap(),
        &BTreeMap::from([(labels::INSTANCE.to_owned(), INSTANCE.to_owned())])
    );
    let sp = &svc_spec.ports.as_ref().unwrap()[0];
    assert_eq!(sp.port, 8080);
    assert_eq!(sp.target_port, Some(IntOrString::String("mcp".into())));
    let ports = ingress_ports(r.network_policy.as_ref().unwrap()).unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].port, Some(IntOrString::Int(8080)));
}

#[test]
fn stdio_transport_has_stdin_and_no_port() {
    let r = build(&stdio());
    let c = container(&r);
    assert!(c.ports.is_none());
    assert_eq!(c.stdin, Some(true));
    assert!(r.service.is_none());
    assert!(build_service(&stdio(), &id(), &opts()).unwrap().is_none());
    assert!(ingress_ports(r.network_policy.as_ref().unwrap()).is_none());
}

#[test]
fn ingress_only_from_local_proxies() {
    let r = build(&http());
    let spec = r.network_policy.unwrap().spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap(),
        BTreeMap::from([(labels::INSTANCE.to_owned(), INSTANCE.to_owned())])
    );
    let ingress = spec.ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    let from = ingress[0].from.as_ref().unwrap();
    assert_eq!(from.len(), 1);
    assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());
    assert_eq!(
        from[0].pod_selector.clone().unwrap().match_labels.unwrap(),
        BTreeMap::from([("mcpctl.io/component".to_owned(), "local-proxy".to_owned())])
    );
    assert_eq!(spec.policy_types.unwrap(), ["Ingress", "Egress"]);
}

fn egress_of(egress: Option<Egress>) -> Vec<NetworkPolicyEgressRule> {
    let spec = McpServer { egress, ..stdio() };
    build(&spec)
        .network_policy
        .unwrap()
        .spec
        .unwrap()
        .egress
        .unwrap()
}

#[test]
fn egress_open_and_none() {
    // Unset and `open`: everywhere but the metadata ranges, one ipBlock per address family.
    for open in [None, Some(Egress::Open)] {
        let rules = egress_of(open);
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].ports, None);
        let blocks: Vec<_> = rules[0]
            .to
            .iter()
            .flatten()
            .map(|p| p.ip_block.clone().unwrap())
            .map(|b| (b.cidr, b.except.unwrap()))
            .collect();
        assert_eq!(
            blocks,
            [
                ("0.0.0.0/0".to_owned(), vec!["169.254.0.0/16".to_owned()]),
                (
                    "::/0".to_owned(),
                    vec!["fe80::/10".to_owned(), "fd00:ec2::254/128".to_owned()]
                ),
            ]
        );
    }
    // `none`: an egress policy with no rule admits nothing, DNS included.
    assert_eq!(egress_of(Some(Egress::None)), []);
}

#[test]
fn egress_cidr_ports_stay_with_their_cidrs() {
    let rules = egress_of(Some(Egress::Allow(vec![
        EgressRule::cidr("10.0.0.0/8", [5432]),
        EgressRule::cidr("192.168.0.0/16", []),
        EgressRule::cidr("172.16.0.0/12", [5432]),
    ])));
    let shape: Vec<(Vec<String>, Vec<String>)> = rules[..2]
        .iter()
        .map(|r| {
            (
                r.to.iter()
                    .flatten()
                    .map(|p| p.ip_block.clone().unwrap().cidr)
                    .collect(),
                r.ports
                    .iter()
                    .flatten()
                    .map(|p| format!("{:?}", p.port.clone().unwrap()))
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            (vec!["192.168.0.0/16".to_owned()], vec![]),
            (
                vec!["10.0.0.0/8".to_owned(), "172.16.0.0/12".to_owned()],
                vec!["Int(5432)".to_owned()]
            ),
        ]
    );
    assert_eq!(rules.len(), 3, "the CIDR rules plus DNS");
}

#[test]
fn egress_allow_list_adds_dns() {
    let egress = vec!["10.0.0.0/8".to_owned(), "2001:db8::/32".to_owned()];
    let rules = egress_of(Some(Egress::Allow(
        egress.iter().map(|c| EgressRule::cidr(c, [])).collect(),
    )));
    let blocks: Vec<_> = rules
        .iter()
        .flat_map(|r| r.to.iter().flatten())
        .filter_map(|p| p.ip_block.as_ref().map(|b| b.cidr.clone()))
        .collect();
    assert_eq!(blocks, egress);
    let dns_rule = rules.last().unwrap();
    let peer = &dns_rule.to.as_ref().unwrap()[0];
    assert_eq!(
        peer.namespace_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap(),
        BTreeMap::from([(
            "kubernetes.io/metadata.name".to_owned(),
            "kube-system".to_owned()
        )])
    );
    assert_eq!(
        peer.pod_selector.clone().unwrap().match_labels.unwrap(),
        BTreeMap::from([("k8s-app".to_owned(), "kube-dns".to_owned())])
    );
    let ports: Vec<_> = dns_rule
        .ports
        .iter()
        .flatten()
        .map(|p| (p.protocol.clone().unwrap(), p.port.clone().unwrap()))
        .collect();
    assert_eq!(
        ports,
        [
            ("UDP".to_owned(), IntOrString::Int(53)),
            ("TCP".to_owned(), IntOrString::Int(53))
        ]
    );
}

#[test]
fn network_policy_can_be_turned_off() {
    let mut o = opts();
    o.network_policy = false;
    assert!(
        build_instance(&stdio(), &id(), &o)
            .unwrap()
            .network_policy
            .is_none()
    );
}

/// The checks of the `restricted` Pod Security Standard (as of Kubernetes 1.33) that our pods
/// could break, plus the hardening we promise on top.
fn assert_restricted(pod: &Pod) {
    let spec = pod.spec.as_ref().unwrap();
    let psc = spec.security_context.as_ref().unwrap();
    assert_eq!(psc.run_as_non_root, Some(true));
    assert_ne!(psc.run_as_user, Some(0));
    assert_eq!(
        psc.seccomp_profile.as_ref().unwrap().type_,
        "RuntimeDefault"
    );
    assert_eq!(spec.automount_service_account_token, Some(false));
    assert!(spec.host_network.is_none() && spec.host_pid.is_none() && spec.host_ipc.is_none());
    for c in &spec.containers {
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert!(sc.privileged.is_none());
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_owned()][..]));
        assert!(caps.add.is_none());
        assert!(c.ports.iter().flatten().all(|p| p.host_port.is_none()));
    }
    for v in spec.volumes.iter().flatten() {
        assert!(
            v.empty_dir.is_some() || v.persistent_volume_claim.is_some() || v.secret.is_some(),
            "volume type not allowed by the restricted profile: {v:?}"
        );
    }
}

#[test]
fn every_pod_is_restricted() {
    let specs = [
        stdio(),
        http(),
        McpServer {
            volumes: vec![volume("data", "/data")],
            gpu: Some(GpuSpec {
                product: None,
                count: 1,
            }),
            security_context: Some(K8sSecurityContext {
                run_as_user: Some(2000),
                read_only_root_filesystem: Some(false),
                ..K8sSecurityContext::default()
            }),
            ..stdio()
        },
        with_secret_files(),
    ];
    for spec in &specs {
        assert_restricted(&build(spec).pod);
    }
}

#[test]
fn default_security_context() {
    let r = build(&stdio());
    let psc = pod_spec(&r).security_context.clone().unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(1000), Some(1000), Some(1000))
    );
    let sc = container(&r).security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
}

#[test]
fn security_overrides() {
    let spec = McpServer {
        security_context: Some(K8sSecurityContext {
            run_as_user: Some(2000),
            run_as_group: Some(3000),
            fs_group: Some(4000),
            read_only_root_filesystem: Some(false),
        }),
        ..stdio()
    };
    let r = build(&spec);
    let psc = pod_spec(&r).security_context.clone().unwrap();
    assert_eq!(
        (psc.run_as_user, psc.run_as_group, psc.fs_group),
        (Some(2000), Some(3000), Some(4000))
    );
    let sc = container(&r).security_context.clone().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(false));
    // /tmp stays writable scratch space either way.
    assert!(
        container(&r)
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == "/tmp")
    );
}

#[test]
fn pod_defaults() {
    let spec = McpServer::command(
        "fs",
        "npx",
        ["-y", "@modelcontextprotocol/server-filesystem"],
    );
    let r = build(&spec);
    let c = container(&r);
    assert_eq!(c.name, "mcp-server");
    assert_eq!(c.image.as_deref(), Some("node:20-alpine"));
    assert_eq!(c.command.as_deref(), Some(&["npx".to_owned()][..]));
    assert_eq!(c.args.as_ref().unwrap().len(), 2);
    let ps = pod_spec(&r);
    assert_eq!(ps.restart_policy.as_deref(), Some("Always"));
    assert_eq!(ps.service_account_name.as_deref(), Some("default"));
    assert_eq!(r.pod.metadata.name.as_deref(), Some(INSTANCE));
    assert_eq!(r.pod.metadata.namespace.as_deref(), Some("mcpctl"));
}

#[test]
fn restart_policy_and_service_account_from_inputs() {
    let spec = McpServer {
        restart_policy: mcp_types::RestartPolicy::OnFailure,
        ..stdio()
    };
    let mut o = opts();
    o.service_account = Some("mcp-runner".into());
    let pod = build_pod(&spec, &id(), &o).unwrap();
    let ps = pod.spec.unwrap();
    assert_eq!(ps.restart_policy.as_deref(), Some("OnFailure"));
    assert_eq!(ps.service_account_name.as_deref(), Some("mcp-runner"));
}

#[test]
fn labels_and_annotations() {
    let spec = McpServer {
        labels: BTreeMap::from([
            ("team".into(), "search".into()),
            ("tier".into(), "spec".into()),
        ]),
        annotations: BTreeMap::from([("example.com/a".into(), "1".into())]),
        ..http()
    };
    let mut o = opts();
    o.pod_metadata.labels = BTreeMap::from([
        ("tier".into(), "operator".into()),
        ("cost-center".into(), "42".into()),
        // Reserved keys cannot be overridden from the options either.
        (labels::MANAGED.into(), "false".into()),
    ]);
    o.pod_metadata.annotations = BTreeMap::from([("example.com/b".into(), "2".into())]);
    let r = build_instance(&spec, &id(), &o).unwrap();
    let pod_labels = r.pod.metadata.labels.clone().unwrap();
    let expected = [
        ("mcpctl.io/server", "time"),
        ("mcpctl.io/managed", "true"),
        ("mcpctl.io/instance", INSTANCE),
        ("mcpctl.io/transport", "streamable-http"),
        ("app.kubernetes.io/name", "time"),
        ("app.kubernetes.io/instance", INSTANCE),
        ("app.kubernetes.io/component", "mcp-server"),
        ("app.kubernetes.io/managed-by", "mcpctl"),
        ("team", "search"),
        ("tier", "spec"),
        ("cost-center", "42"),
    ];
    for (k, v) in expected {
        assert_eq!(pod_labels.get(k).map(String::as_str), Some(v), "{k}");
    }
    assert_eq!(pod_labels.len(), expected.len());
    let ann = r.pod.metadata.annotations.clone().unwrap();
    assert_eq!(ann["mcpctl.io/created-at"], "2025-01-02T03:04:05Z");
    assert_eq!(ann["example.com/a"], "1");
    assert_eq!(ann["example.com/b"], "2");

    // Companions carry the instance labels (for deletion by selector) but not pod-only metadata.
    let np = r.network_policy.unwrap().metadata;
    let svc = r.service.unwrap().metadata;
    for meta in [np, svc] {
        let l = meta.labels.unwrap();
        assert_eq!(l[labels::INSTANCE], INSTANCE);
        assert_eq!(l[labels::MANAGED], "true");
        assert!(!l.contains_key("cost-center"));
        assert_eq!(
            meta.annotations.unwrap()["mcpctl.io/created-at"],
            "2025-01-02T03:04:05Z"
        );
    }
}

#[test]
fn invalid_spec_is_rejected_with_its_errors() {
    let spec = McpServer {
        transport: Transport::Sse,
        ..McpServer::new("Bad_Name", "img")
    };
    let err = build_instance(&spec, &id(), &opts()).unwrap_err();
    assert_eq!(err, spec.validate_spec().unwrap_err());
    assert!(err.has_path("name") && err.has_path("port"));
    for e in [
        build_pod(&spec, &id(), &opts()).unwrap_err(),
        build_network_policy(&spec, &id(), &opts()).unwrap_err(),
        build_pvcs(&spec, &id(), &opts()).unwrap_err(),
        build_service(&spec, &id(), &opts()).unwrap_err(),
    ] {
        assert_eq!(e, err);
    }
}

#[test]
fn invalid_instance_id_and_options_are_rejected() {
    let mut o = opts();
    o.namespace = "Not A Namespace".into();
    let err = build_instance(&stdio(), &InstanceId::from("Mcp_Bad"), &o).unwrap_err();
    assert!(
        err.has_path("instanceId") && err.has_path("options.namespace"),
        "{err}"
    );
    assert!(build_namespace("UPPER").unwrap_err().has_path("name"));
    let err = build_rbac("a b", "x/y").unwrap_err();
    assert!(err.has_path("namespace") && err.has_path("name"));
}

#[test]
fn two_hundred_character_server_names() {
    let long = "a".repeat(200);
    // The spec's name is a DNS-1123 label, so a 200-character name is refused, not mangled.
    let err = build_instance(&McpServer::new(long.clone(), "img"), &id(), &opts()).unwrap_err();
    assert!(err.has_path("name"), "{err}");

    // The instance id made from it, with the longest valid server name and volume names,
    // still yields valid names everywhere.
    let instance = InstanceId::from(new_instance_name(&long));
    let spec = McpServer {
        volumes: vec![
            volume(&"v".repeat(63), "/data"),
            volume(&format!("{}w", "v".repeat(62)), "/more"),
        ],
        ..McpServer {
            transport: Transport::Sse,
            port: Some(9000),
            ..McpServer::new("s".repeat(63), "img")
        }
    };
    let r = build_instance(&spec, &instance, &opts()).unwrap();
    let mut object_names = vec![r.pod.metadata.name.clone().unwrap()];
    object_names.push(r.network_policy.clone().unwrap().metadata.name.unwrap());
    object_names.push(r.service.clone().unwrap().metadata.name.unwrap());
    object_names.extend(r.pvcs.iter().map(|p| p.metadata.name.clone().unwrap()));
    let ps = pod_spec(&r);
    object_names.extend(ps.volumes.iter().flatten().map(|v| v.name.clone()));
    object_names.extend(
        ps.volumes
            .iter()
            .flatten()
            .filter_map(|v| Some(v.persistent_volume_claim.clone()?.claim_name)),
    );
    for n in &object_names {
        assert!(check_dns1123_label(n).is_ok(), "{n}");
    }
    let unique: std::collections::BTreeSet<_> = object_names.iter().collect();
    // Claim names appear twice (object and reference); everything else is distinct.
    assert_eq!(unique.len(), object_names.len() - 2);
    let svc = r.service.unwrap().metadata.name.unwrap();
    assert!(svc.starts_with(|c: char| c.is_ascii_lowercase()));
    for v in r.pod.metadata.labels.unwrap().values() {
        assert!(mcp_types::names::check_label_value(v).is_ok(), "{v}");
    }
}

#[test]
fn companions_are_found_by_the_instance_selector() {
    let spec = McpServer {
        volumes: vec![volume("data", "/data")],
        ..http()
    };
    let r = build(&spec);
    let (key, value) = names::instance_selector(INSTANCE)
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .unwrap();
    let metas = [
        r.pod.metadata.clone(),
        r.network_policy.clone().unwrap().metadata,
        r.service.clone().unwrap().metadata,
        r.pvcs[0].metadata.clone(),
    ];
    for m in metas {
        assert_eq!(m.labels.unwrap().get(&key), Some(&value));
        assert_eq!(m.namespace.as_deref(), Some("mcpctl"));
    }
    // Claims and policy come before the pod that needs them.
    let kinds: Vec<_> = r.manifests().iter().map(std::mem::discriminant).collect();
    assert_eq!(
        kinds.last(),
        Some(&std::mem::discriminant(&Manifest::from(r.pod.clone())))
    );
    assert_eq!(kinds.len(), 4);
}

#[test]
fn rbac_grants_exactly_the_backend_verbs() {
    let rbac = build_rbac("mcpctl", "mcpctl").unwrap();
    let rules = rbac.role.rules.unwrap();
    let got: BTreeMap<_, _> = rules
        .iter()
        .map(|r| {
            (
                (
                    r.api_groups.clone().unwrap()[0].clone(),
                    r.resources.clone().unwrap()[0].clone(),
                    r.resource_names.clone().unwrap_or_default(),
                ),
                r.verbs.clone(),
            )
        })
        .collect();
    let proxy = || vec!["mcp-egress-proxy".to_owned()];
    let want: BTreeMap<_, _> = [
        (
            "",
            "pods",
            vec![],
            &["create", "get", "list", "watch", "delete"][..],
        ),
        ("", "pods/log", vec![], &["get"][..]),
        ("", "pods/attach", vec![], &["create", "get"][..]),
        (
            "networking.k8s.io",
            "networkpolicies",
            vec![],
            // `patch`: the pod becomes the owner of what was created before it.
            &["create", "get", "list", "patch", "delete"][..],
        ),
        (
            "",
            "persistentvolumeclaims",
            vec![],
            &["create", "get", "list", "patch", "delete"][..],
        ),
        (
            "",
            "services",
            vec![],
            &["create", "get", "list", "delete"][..],
        ),
        // The egress proxy: create anything (RBAC cannot restrict create by name), read and
        // delete only the proxy's objects.
        ("apps", "deployments", vec![], &["create"][..]),
        ("apps", "deployments", proxy(), &["get", "delete"][..]),
        ("", "serviceaccounts", vec![], &["create"][..]),
        ("", "serviceaccounts", proxy(), &["get", "delete"][..]),
        (
            "rbac.authorization.k8s.io",
            "roles",
            vec![],
            &["create"][..],
        ),
        (
            "rbac.authorization.k8s.io",
            "roles",
            proxy(),
            &["get", "delete"][..],
        ),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            vec![],
            &["create"][..],
        ),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            proxy(),
            &["get", "delete"][..],
        ),
    ]
    .into_iter()
    .map(|(g, r, names, v)| {
        (
            (g.to_owned(), r.to_owned(), names),
            v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
        )
    })
    .collect();
    assert_eq!(got, want);
    assert_eq!(backend_role_rules().len(), want.len());
    assert!(rules.iter().all(|r| r.non_resource_urls.is_none()));
    let rb = rbac.role_binding;
    assert_eq!(
        (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
        ("Role", "mcpctl")
    );
    let subject = &rb.subjects.unwrap()[0];
    assert_eq!(
        (
            subject.kind.as_str(),
            subject.name.as_str(),
            subject.namespace.as_deref()
        ),
        ("ServiceAccount", "mcpctl", Some("mcpctl"))
    );
}

#[test]
fn namespace_enforces_restricted() {
    let labels = build_namespace("mcpctl").unwrap().metadata.labels.unwrap();
    for mode in ["enforce", "audit", "warn"] {
        assert_eq!(
            labels[&format!("pod-security.kubernetes.io/{mode}")],
            "restricted"
        );
        assert_eq!(
            labels[&format!("pod-security.kubernetes.io/{mode}-version")],
            "latest"
        );
    }
}

#[test]
fn yaml_round_trips_through_typed_objects() {
    // Label values such as "true" and quantities such as "2" must stay strings in YAML.
    let spec = McpServer {
        gpu: Some(GpuSpec {
            product: None,
            count: 2,
        }),
        env: BTreeMap::from([
            ("DEBUG".into(), EnvValue::plain("true")),
            ("N".into(), EnvValue::plain("8080")),
        ]),
        ..http()
    };
    let r = build(&spec);
    let yaml = to_yaml(&r.manifests()).unwrap();
    let docs: Vec<&str> = yaml.split("\n---\n").collect();
    assert_eq!(docs.len(), 3, "{yaml}");
    let np: NetworkPolicy = serde_saphyr::from_str(docs[0]).unwrap();
    let svc: Service = serde_saphyr::from_str(docs[1]).unwrap();
    let pod: Pod = serde_saphyr::from_str(docs[2]).unwrap();
    assert_eq!(Some(np), r.network_policy);
    assert_eq!(Some(svc), r.service);
    assert_eq!(pod, r.pod);
    assert!(
        yaml.contains("apiVersion: v1\nkind: Pod\n") || yaml.contains("kind: Pod"),
        "{yaml}"
    );
}
