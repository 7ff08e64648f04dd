//! Egress on Kubernetes, as built: the pod's annotation, label and proxy variables, the
//! instance's NetworkPolicy for each policy shape, the configured default, and the namespace's
//! egress proxy (snapshots through one helper, focused checks beside them).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{EnvVar, Pod};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyEgressRule};
use mcp_k8s_resources::{
    BuildOptions, InstanceResources, Manifest, build_egress_proxy, build_instance, to_yaml,
};
use mcp_types::{Egress, EgressRule, EnvValue, InstanceId, McpServer, Timestamp, labels};
use rstest::rstest;

const INSTANCE: &str = "mcp-fetch-0123456789";

fn opts() -> BuildOptions {
    BuildOptions::new(
        "mcpctl",
        "2025-01-02T03:04:05Z".parse::<Timestamp>().unwrap(),
    )
}

fn spec(egress: Option<Egress>) -> McpServer {
    McpServer {
        egress,
        ..McpServer::new("fetch", "mcp/fetch:1.0")
    }
}

fn hosts() -> Egress {
    Egress::Allow(vec![
        EgressRule::host("api.github.com", [443]),
        EgressRule::host("*.pypi.org", []),
        EgressRule::cidr("10.20.0.0/16", [5432]),
    ])
}

fn build_with(spec: &McpServer, o: &BuildOptions) -> InstanceResources {
    build_instance(spec, &InstanceId::from(INSTANCE), o).unwrap()
}

fn build(spec: &McpServer) -> InstanceResources {
    build_with(spec, &opts())
}

/// The one snapshot helper: renders objects exactly as `to_yaml` ships them.
fn assert_manifests(name: &str, manifests: impl Into<Vec<Manifest>>) {
    let yaml = to_yaml(&manifests.into()).unwrap();
    insta::assert_snapshot!(name, yaml);
}

fn env(pod: &Pod) -> BTreeMap<String, String> {
    pod.spec.as_ref().unwrap().containers[0]
        .env
        .iter()
        .flatten()
        .map(|EnvVar { name, value, .. }| (name.clone(), value.clone().unwrap_or_default()))
        .collect()
}

fn egress_rules(np: &NetworkPolicy) -> &[NetworkPolicyEgressRule] {
    np.spec.as_ref().unwrap().egress.as_deref().unwrap()
}

/// Each rule as a short line: its peers (`ip:<cidr>`, `pods:<k=v>`, `ns:<k=v>/pods:<k=v>`)
/// and ports.
fn shape(np: &NetworkPolicy) -> Vec<String> {
    let selector = |s: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector| {
        let labels: Vec<String> = s
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        labels.join(",")
    };
    egress_rules(np)
        .iter()
        .map(|rule| {
            let peers: Vec<String> = rule
                .to
                .iter()
                .flatten()
                .map(
                    |p| match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
                        (Some(b), _, _) => format!(
                            "ip:{}{}",
                            b.cidr,
                            b.except
                                .as_ref()
                                .map(|e| format!(" except {}", e.join(" ")))
                                .unwrap_or_default()
                        ),
                        (None, Some(ns), Some(pods)) => {
                            format!("ns:{}/pods:{}", selector(ns), selector(pods))
                        }
                        (None, None, Some(pods)) => format!("pods:{}", selector(pods)),
                        other => format!("{other:?}"),
                    },
                )
                .collect();
            let ports: Vec<String> = rule
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    format!(
                        "{}/{:?}",
                        p.protocol.as_deref().unwrap_or("TCP"),
                        p.port.clone().unwrap()
                    )
                })
                .collect();
            format!("{} ports[{}]", peers.join(" "), ports.join(" "))
        })
        .collect()
}

const DNS: &str = "ns:kubernetes.io/metadata.name=kube-system/pods:k8s-app=kube-dns ports[UDP/Int(53) TCP/Int(53)]";
const PROXY: &str = "pods:app.kubernetes.io/name=mcp-egress-proxy,mcpctl.io/component=egress-proxy ports[TCP/Int(3128)]";
const OPEN: &str =
    "ip:0.0.0.0/0 except 169.254.0.0/16 ip:::/0 except fe80::/10 fd00:ec2::254/128 ports[]";

#[rstest]
#[case::none(Egress::None, &[])]
#[case::open(Egress::Open, &[OPEN])]
#[case::cidrs(
    Egress::Allow(vec![EgressRule::cidr("10.0.0.0/8", [443]), EgressRule::cidr("192.0.2.0/24", [])]),
    &["ip:192.0.2.0/24 ports[]", "ip:10.0.0.0/8 ports[TCP/Int(443)]", DNS]
)]
#[case::hosts_only(Egress::Allow(vec![EgressRule::host("pypi.org", [443])]), &[PROXY, DNS])]
#[case::hosts_and_cidrs(hosts(), &["ip:10.20.0.0/16 ports[TCP/Int(5432)]", PROXY, DNS])]
fn each_policy_shape_makes_its_network_policy(#[case] egress: Egress, #[case] want: &[&str]) {
    let r = build(&spec(Some(egress.clone())));
    assert_eq!(shape(r.network_policy.as_ref().unwrap()), want);
    // Every pod states its effective policy; only host rules bring the proxy along.
    let annotation = &r.pod.metadata.annotations.as_ref().unwrap()[labels::EGRESS];
    assert_eq!(serde_json::from_str::<Egress>(annotation).unwrap(), egress);
    assert_eq!(r.egress_proxy.is_some(), egress.needs_proxy());
    let client = r
        .pod
        .metadata
        .labels
        .as_ref()
        .unwrap()
        .get("mcpctl.io/egress-proxy");
    assert_eq!(
        client.map(String::as_str),
        egress.needs_proxy().then_some("client")
    );
}

#[test]
fn host_rules_give_the_pod_the_proxy_in_both_cases() {
    let spec = McpServer {
        env: BTreeMap::from([("LOG_LEVEL".into(), EnvValue::plain("info"))]),
        ..spec(Some(hosts()))
    };
    let r = build(&spec);
    let env = env(&r.pod);
    let url = "http://mcp-fetch-0123456789@mcp-egress-proxy.mcpctl.svc:3128";
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env[name], url, "{name}");
    }
    for name in ["NO_PROXY", "no_proxy"] {
        assert_eq!(env[name], "localhost,127.0.0.1,::1,10.20.0.0/16", "{name}");
    }
    assert_eq!(env["LOG_LEVEL"], "info");
    // Without host rules, no proxy variable.
    let plain = build(&McpServer {
        egress: Some(Egress::Open),
        ..spec.clone()
    });
    assert_eq!(env_names(&plain.pod), ["LOG_LEVEL"]);
}

fn env_names(pod: &Pod) -> Vec<String> {
    env(pod).into_keys().collect()
}

#[test]
fn a_spec_setting_a_proxy_variable_itself_is_refused_when_the_proxy_is_needed() {
    let with_proxy_env = |egress| McpServer {
        env: BTreeMap::from([
            ("https_proxy".into(), EnvValue::plain("http://corp:8080")),
            ("NO_PROXY".into(), EnvValue::plain("internal")),
        ]),
        ..spec(Some(egress))
    };
    let err = build_instance(
        &with_proxy_env(hosts()),
        &InstanceId::from(INSTANCE),
        &opts(),
    )
    .unwrap_err();
    let paths: Vec<&str> = err.errors().iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["env.NO_PROXY", "env.https_proxy"]);
    assert!(err.to_string().contains("set by the backend"), "{err}");
    // A server that does not need the proxy may use its own.
    assert!(
        build_instance(
            &with_proxy_env(Egress::Open),
            &InstanceId::from(INSTANCE),
            &opts()
        )
        .is_ok()
    );
}

#[test]
fn the_configured_default_applies_to_specs_without_egress() {
    let mut o = opts();
    o.default_egress = Egress::None;
    let r = build_with(&spec(None), &o);
    assert!(egress_rules(r.network_policy.as_ref().unwrap()).is_empty());
    assert_eq!(
        r.pod.metadata.annotations.as_ref().unwrap()[labels::EGRESS],
        "\"none\""
    );
    // The spec's own policy wins over the default.
    let r = build_with(&spec(Some(Egress::Open)), &o);
    assert_eq!(shape(r.network_policy.as_ref().unwrap()), [OPEN]);
    // A default naming hosts brings the proxy to every spec without a policy.
    o.default_egress = hosts();
    let r = build_with(&spec(None), &o);
    assert!(r.egress_proxy.is_some());
    assert!(env(&r.pod).contains_key("HTTPS_PROXY"));
    // An invalid default is refused naming the option.
    o.default_egress = Egress::Allow(vec![EgressRule::cidr("10.0.0.1/8", [])]);
    let err = build_instance(&spec(None), &InstanceId::from(INSTANCE), &o).unwrap_err();
    assert_eq!(err.errors()[0].path, "options.defaultEgress.allow[0].cidr");
}

#[test]
fn snapshot_host_rules_instance() {
    assert_manifests("host_rules_instance", build(&spec(Some(hosts()))));
}

#[test]
fn snapshot_egress_proxy() {
    let mut o = opts();
    o.egress_proxy_image = "registry.example/mcp-egress-proxy:1.2.3".into();
    assert_manifests("egress_proxy", build_egress_proxy(&o).unwrap().manifests());
}

#[test]
fn the_proxy_admits_only_its_clients_and_reaches_everything_but_metadata() {
    let proxy = build_egress_proxy(&opts()).unwrap();
    let np = proxy.network_policy.as_ref().unwrap();
    assert_eq!(shape(np), [OPEN, DNS]);
    let ingress = &np.spec.as_ref().unwrap().ingress.as_ref().unwrap()[0];
    let from = &ingress.from.as_ref().unwrap()[0];
    assert_eq!(
        from.pod_selector.as_ref().unwrap().match_labels,
        Some(BTreeMap::from([(
            "mcpctl.io/egress-proxy".to_owned(),
            "client".to_owned()
        )]))
    );
    assert!(from.namespace_selector.is_none() && from.ip_block.is_none());
    // The proxy's pods are not instances: no managed label, no instance label.
    let template = proxy.deployment.spec.as_ref().unwrap().template.clone();
    let pod_labels = template.metadata.unwrap().labels.unwrap();
    assert!(!pod_labels.contains_key(labels::MANAGED));
    assert!(!pod_labels.contains_key(labels::INSTANCE));
    // Its Role reads pods and nothing else.
    let rules = proxy.role.rules.as_ref().unwrap();
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].verbs, ["get"]);
    assert_eq!(
        rules[0].resources.as_deref(),
        Some(&["pods".to_owned()][..])
    );
    // Without network policies, none for the proxy either, and the pod names none.
    let mut o = opts();
    o.network_policy = false;
    assert!(build_egress_proxy(&o).unwrap().network_policy.is_none());
    let r = build_with(&spec(Some(hosts())), &o);
    let annotations = r.pod.metadata.annotations.unwrap();
    assert!(!annotations.contains_key("mcpctl.io/network-policy"));
    let r = build(&spec(Some(hosts())));
    assert_eq!(
        r.pod.metadata.annotations.unwrap()["mcpctl.io/network-policy"],
        "mcp-fetch-0123456789-np"
    );
    o.egress_proxy_image = " ".into();
    let err = build_egress_proxy(&o).unwrap_err();
    assert_eq!(err.errors()[0].path, "options.egressProxyImage");
}

#[test]
fn the_proxy_pod_is_restricted() {
    let proxy = build_egress_proxy(&opts()).unwrap();
    let spec = proxy.deployment.spec.unwrap().template.spec.unwrap();
    let pod_sc = spec.security_context.unwrap();
    assert_eq!(pod_sc.run_as_non_root, Some(true));
    assert_eq!(pod_sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let c = &spec.containers[0];
    let sc = c.security_context.clone().unwrap();
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
    assert_eq!(
        spec.service_account_name.as_deref(),
        Some("mcp-egress-proxy")
    );
    assert!(
        c.args
            .as_ref()
            .unwrap()
            .contains(&"--kubernetes".to_owned())
    );
}
