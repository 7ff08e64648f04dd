//! Asking for a backend whose cargo feature is off gives an error naming the feature. CI runs
//! this file with single-backend feature sets (`cargo xtask ci`); with all features on there is
//! nothing to refuse, which the last test checks instead.

use mcp_factory::{
    BackendKind, ConfigError, FactoryError, Format, OrchestratorConfig, Source, create_orchestrator,
};

#[tokio::test]
async fn backends_not_compiled_in_are_refused_with_the_feature_name() {
    for kind in BackendKind::ALL.into_iter().filter(|k| !k.is_compiled_in()) {
        let yaml = format!("orchestrator: {{ type: {kind} }}");
        let config =
            OrchestratorConfig::from_text(&yaml, Format::Yaml, &Source::Inline, &|_| None).unwrap();
        match create_orchestrator(&config).await {
            Err(e @ FactoryError::NotCompiled { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains(&format!("cargo feature `{kind}`")), "{msg}");
            }
            Err(other) => panic!("{kind}: expected NotCompiled, got {other}"),
            Ok(o) => panic!(
                "{kind}: expected NotCompiled, got a {} orchestrator",
                o.backend_name()
            ),
        }
    }
}

#[test]
fn sections_of_backends_not_compiled_in_are_kept_as_written() {
    // Invalid for every backend's typed config: an unknown field and a bad namespace/network.
    let section =
        serde_json::json!({ "futureField": 1, "namespace": "Bad_NS", "network": "bad name!" });
    for kind in BackendKind::ALL.into_iter().filter(|k| !k.is_compiled_in()) {
        let yaml = format!("orchestrator: {{ {kind}: {section} }}");
        let config = OrchestratorConfig::from_text(&yaml, Format::Yaml, &Source::Inline, &|_| None)
            .unwrap_or_else(|e| panic!("{kind}: a section of a missing backend was checked: {e}"));
        let written = serde_json::to_value(&config).unwrap();
        assert_eq!(written["orchestrator"][kind.as_str()], section, "{kind}");
    }
    for kind in BackendKind::ALL.into_iter().filter(|k| k.is_compiled_in()) {
        let yaml = format!("orchestrator: {{ {kind}: {section} }}");
        let err = OrchestratorConfig::from_text(&yaml, Format::Yaml, &Source::Inline, &|_| None)
            .unwrap_err();
        assert!(
            matches!(&err, ConfigError::Field { path, .. } if path.starts_with(&format!("orchestrator.{kind}."))),
            "{kind}: {err}"
        );
    }
}

#[test]
fn compiled_in_matches_features() {
    assert_eq!(
        BackendKind::Process.is_compiled_in(),
        cfg!(feature = "process")
    );
    assert_eq!(
        BackendKind::Docker.is_compiled_in(),
        cfg!(feature = "docker")
    );
    assert_eq!(
        BackendKind::Kubernetes.is_compiled_in(),
        cfg!(feature = "kubernetes")
    );
}
