//! Configuration: backend selection, defaults, validation with field paths, environment
//! precedence, YAML/JSON files, and the errors for backends that are not compiled in.

#![cfg(all(feature = "process", feature = "docker", feature = "kubernetes"))]

use std::collections::HashMap;
use std::path::Path;

use mcp_factory::mcp_orchestrator_api::OrchestratorError;
use mcp_factory::{
    BackendKind, ConfigError, FactoryError, Format, OrchestratorConfig, Source, create_orchestrator,
};
use rstest::rstest;

fn env(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    move |k: &str| map.get(k).cloned()
}

fn no_env(_: &str) -> Option<String> {
    None
}

fn parse(yaml: &str) -> Result<OrchestratorConfig, ConfigError> {
    OrchestratorConfig::from_text(yaml, Format::Yaml, &Source::Inline, &no_env)
}

#[rstest]
#[case("orchestrator: { type: docker }", BackendKind::Docker)]
#[case("orchestrator: { type: kubernetes }", BackendKind::Kubernetes)]
#[case("orchestrator: { type: k8s }", BackendKind::Kubernetes)]
#[case("orchestrator: { type: process }", BackendKind::Process)]
#[case("orchestrator: {}", BackendKind::Process)]
#[case("", BackendKind::Process)]
fn backend_is_chosen(#[case] yaml: &str, #[case] expected: BackendKind) {
    assert_eq!(parse(yaml).unwrap().orchestrator.backend, expected);
}

#[rstest]
#[case(
    "orchestrator: { type: podman }",
    "orchestrator.type",
    "unknown variant"
)]
#[case("orchestrator: { typo: docker }", "orchestrator.typo", "unknown field")]
#[case("orchestrators: {}", "orchestrators", "unknown field")]
#[case(
    "orchestrator: { kubernetes: { namespace: Bad_NS } }",
    "orchestrator.kubernetes.namespace",
    "DNS-1123"
)]
#[case(
    "orchestrator: { kubernetes: { namespace: ok, inCluster: maybe } }",
    "orchestrator.kubernetes.inCluster",
    "invalid type: string \"maybe\", expected a boolean"
)]
#[case(
    "orchestrator: { kubernetes: { contxt: x } }",
    "orchestrator.kubernetes.contxt",
    "unknown field"
)]
#[case(
    "orchestrator: { docker: { network: \"bad name!\" } }",
    "orchestrator.docker.network",
    "network name"
)]
#[case(
    "orchestrator: { docker: { socketPath: relative.sock } }",
    "orchestrator.docker.socketPath",
    "absolute"
)]
#[case(
    "orchestrator: { docker: { port: 0 } }",
    "orchestrator.docker.port",
    "lower than 1"
)]
#[case(
    "orchestrator: { docker: { defaultEgress: { allow: [] } } }",
    "orchestrator.docker.defaultEgress",
    "empty allow-list"
)]
#[case(
    "orchestrator: { docker: { defaultEgress: closed } }",
    "orchestrator.docker.defaultEgress",
    "expected `none`, `open`"
)]
#[case(
    "orchestrator: { process: { stateDirectory: /x } }",
    "orchestrator.process.stateDirectory",
    "unknown field"
)]
fn invalid_configs_name_the_field(#[case] yaml: &str, #[case] path: &str, #[case] message: &str) {
    match parse(yaml) {
        Err(ConfigError::Field {
            path: p,
            message: m,
            ..
        }) => {
            assert_eq!(p, path, "message: {m}");
            assert!(m.contains(message), "{m:?} should mention {message:?}");
        }
        other => panic!("{yaml}: expected a field error at {path}, got {other:?}"),
    }
}

#[test]
fn syntax_errors_name_the_source() {
    let err = OrchestratorConfig::from_text(
        "orchestrator: [",
        Format::Yaml,
        &Source::File("cfg.yaml".into()),
        &no_env,
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, ConfigError::Syntax { .. }) && msg.starts_with("cfg.yaml: not valid YAML"),
        "{msg}"
    );
    assert!(
        matches!(&err, ConfigError::Syntax { origin: Source::File(f), format: "YAML", .. }
            if f == Path::new("cfg.yaml")),
        "{err:?}"
    );
}

#[test]
fn defaults_are_applied() {
    let c = parse("orchestrator: { type: docker, docker: {}, kubernetes: {} }").unwrap();
    let d = c.orchestrator.docker.clone().unwrap();
    assert_eq!(d.socket_path, Path::new("/var/run/docker.sock"));
    assert_eq!(d.network, "mcpctl-network");
    let k = c.kubernetes();
    assert_eq!(
        (k.namespace.as_str(), k.in_cluster, k.kubeconfig.is_none()),
        ("mcpctl", false, true)
    );
    // An absent section means defaults too.
    assert_eq!(parse("").unwrap().kubernetes().namespace, "mcpctl");
}

#[rstest]
#[case(&[("MCPCTL_ORCHESTRATOR_TYPE", "kubernetes")], "orchestrator: { type: docker }", BackendKind::Kubernetes)]
#[case(&[("MCPCTL_ORCHESTRATOR_TYPE", "docker")], "", BackendKind::Docker)]
#[case(&[("MCPCTL_ORCHESTRATOR_TYPE", "")], "orchestrator: { type: docker }", BackendKind::Docker)]
#[case(&[], "orchestrator: { type: kubernetes }", BackendKind::Kubernetes)]
fn env_selects_the_type(
    #[case] vars: &[(&str, &str)],
    #[case] yaml: &str,
    #[case] expected: BackendKind,
) {
    let c = OrchestratorConfig::from_text(yaml, Format::Yaml, &Source::Inline, &env(vars)).unwrap();
    assert_eq!(c.orchestrator.backend, expected);
}

#[test]
fn precedence_is_defaults_then_file_then_env() {
    let yaml = "orchestrator:\n  kubernetes: { namespace: from-file, context: file-ctx }\n  docker: { network: file-net }\n";
    let vars = [
        ("MCPCTL_K8S_NAMESPACE", "from-env"),
        ("MCPCTL_K8S_IN_CLUSTER", "true"),
        ("MCPCTL_KUBECONFIG", "/etc/kube/config"),
        ("MCPCTL_DOCKER_SOCKET", "/run/docker.sock"),
        ("MCPCTL_DOCKER_PORT", "2376"),
        ("MCPCTL_PROCESS_STATE_DIR", "/var/lib/mcp"),
    ];
    let c =
        OrchestratorConfig::from_text(yaml, Format::Yaml, &Source::Inline, &env(&vars)).unwrap();
    let k = c.kubernetes();
    assert_eq!(k.namespace, "from-env"); // env beats file
    assert_eq!(k.context.as_deref(), Some("file-ctx")); // file beats default
    assert!(k.in_cluster);
    assert_eq!(k.kubeconfig.as_deref(), Some(Path::new("/etc/kube/config")));
    let d = c.orchestrator.docker.unwrap();
    assert_eq!(
        (d.network.as_str(), d.socket_path.as_path(), d.port),
        ("file-net", Path::new("/run/docker.sock"), Some(2376))
    );
    assert_eq!(
        c.orchestrator.process.unwrap().state_dir.as_deref(),
        Some(Path::new("/var/lib/mcp"))
    );
}

#[rstest]
#[case("MCPCTL_K8S_IN_CLUSTER", "perhaps", "not a boolean")]
#[case("MCPCTL_DOCKER_PORT", "70000", "not a port")]
fn malformed_env_is_named(#[case] var: &str, #[case] value: &str, #[case] why: &str) {
    let err =
        OrchestratorConfig::from_text("", Format::Yaml, &Source::Inline, &env(&[(var, value)]))
            .unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(var) && msg.contains(why), "{msg}");
    assert!(
        matches!(&err, ConfigError::Env { var: v, message } if *v == var && message.contains(why)),
        "{err:?}"
    );
}

#[test]
fn env_values_are_validated_like_file_values() {
    let err = OrchestratorConfig::from_text(
        "",
        Format::Yaml,
        &Source::Inline,
        &env(&[("MCPCTL_K8S_NAMESPACE", "NO")]),
    )
    .unwrap_err();
    assert!(
        matches!(&err, ConfigError::Field { path, .. } if path == "orchestrator.kubernetes.namespace"),
        "{err}"
    );
    let err = OrchestratorConfig::from_text(
        "",
        Format::Yaml,
        &Source::Inline,
        &env(&[("MCPCTL_ORCHESTRATOR_TYPE", "nomad")]),
    )
    .unwrap_err();
    assert!(err.to_string().contains("orchestrator.type"), "{err}");
    assert!(
        matches!(&err, ConfigError::Field { origin: Source::Inline, path, message }
            if path == "orchestrator.type" && message.contains("unknown variant `nomad`")),
        "{err:?}"
    );
}

#[rstest]
#[case("yaml")]
#[case("json")]
fn files_round_trip(#[case] ext: &str) {
    let dir = tempfile::tempdir().unwrap();
    let original = parse(
        "orchestrator:\n  type: kubernetes\n  kubernetes: { namespace: team-a, context: prod, inCluster: false }\n  docker: { network: n1 }\n",
    )
    .unwrap();
    let path = dir.path().join(format!("mcpctl.{ext}"));
    let text = if ext == "json" {
        serde_json::to_string_pretty(&original).unwrap()
    } else {
        serde_saphyr::to_string(&original).unwrap()
    };
    std::fs::write(&path, text).unwrap();
    let back = OrchestratorConfig::load(&path, &no_env).unwrap();
    assert_eq!(back, original);
}

#[test]
fn file_errors_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "orchestrator: { type: docker, docker: { network: \"!\" } }\n",
    )
    .unwrap();
    let err = OrchestratorConfig::load(&path, &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(&path.display().to_string()) && msg.contains("orchestrator.docker.network"),
        "{msg}"
    );
    assert!(
        matches!(&err, ConfigError::Field { origin: Source::File(f), path: p, .. }
            if *f == path && p == "orchestrator.docker.network"),
        "{err:?}"
    );
    let missing = dir.path().join("missing.yaml");
    let err = OrchestratorConfig::load(&missing, &no_env).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("cannot read config file") && msg.contains("missing.yaml"),
        "{msg}"
    );
    assert!(
        matches!(&err, ConfigError::Read { path, source, .. }
            if *path == missing && source.kind() == std::io::ErrorKind::NotFound),
        "{err:?}"
    );
}

#[tokio::test]
async fn docker_with_a_missing_socket_is_unavailable() {
    let c =
        parse("orchestrator: { type: docker, docker: { socketPath: /nonexistent/docker.sock } }")
            .unwrap();
    let err = create_orchestrator(&c).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/docker.sock"), "{msg}");
    assert!(
        matches!(&err, FactoryError::Backend(OrchestratorError::Unavailable { backend: "docker", message, .. })
            if message.contains("/nonexistent/docker.sock")),
        "{err:?}"
    );
}

#[tokio::test]
async fn kubernetes_with_a_missing_kubeconfig_names_the_path() {
    let c = parse(
        "orchestrator: { type: kubernetes, kubernetes: { kubeconfig: /nonexistent/kubeconfig } }",
    )
    .unwrap();
    let err = create_orchestrator(&c).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("/nonexistent/kubeconfig"), "{msg}");
    assert!(
        matches!(&err, FactoryError::Backend(OrchestratorError::InvalidArgument { what: "kubeconfig", message })
            if message.contains("/nonexistent/kubeconfig")),
        "{err:?}"
    );
}

#[tokio::test]
async fn process_backend_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "orchestrator: {{ process: {{ stateDir: {} }} }}",
        dir.path().display()
    );
    let o = create_orchestrator(&parse(&yaml).unwrap()).await.unwrap();
    assert_eq!(o.backend_name(), "process");
    let page = o
        .list_instances(&mcp_factory::mcp_types::InstanceFilters::default())
        .await
        .unwrap();
    assert!(page.items.is_empty());
}

#[test]
fn further_config_errors_are_listed_once_each() {
    let err = parse("orchestrator: { docker: { network: \"bad name!\", port: 0 } }").unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("orchestrator.docker."), "{msg}");
    assert!(msg.contains("(and 1 more: orchestrator.docker."), "{msg}");
    // Each error appears once: the first is not repeated in the list of the others.
    assert_eq!(msg.matches("network name").count(), 1, "{msg}");
    assert_eq!(msg.matches("lower than 1").count(), 1, "{msg}");
}
