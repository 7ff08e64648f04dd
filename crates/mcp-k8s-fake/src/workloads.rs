//! Deployments (`apps/v1`), as the apiserver creates them: `SetDefaults_Deployment` and the pod
//! template's defaults, then `ValidateDeployment` (the selector, non-empty, matching the
//! template's labels; replicas and history limits non-negative; the strategy; the template's pod
//! spec with `restartPolicy: Always` and no `activeDeadlineSeconds`).
//!
//! No controller runs here: a Deployment is stored with an empty status and makes no
//! ReplicaSet or pod.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentStatus, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use crate::kind::ResourceKind;
use crate::object::{parse_typed, to_value, validate_label_selector, validate_meta};
use crate::pod_spec::{default_pod, validate_pod};
use crate::status::{ApiError, FieldError};

const STRATEGIES: &[&str] = &["Recreate", "RollingUpdate"];

/// Defaults and validates a Deployment create body.
pub(crate) fn prepare_deployment(
    body: &Value,
    errors: &mut Vec<FieldError>,
) -> Result<Value, ApiError> {
    let mut deployment: Deployment = parse_typed(ResourceKind::Deployment, body)?;
    validate_meta(&deployment.metadata, errors);
    default_deployment(&mut deployment);
    validate_deployment(&deployment, errors);
    deployment.status = Some(DeploymentStatus::default());
    to_value(&deployment)
}

fn default_deployment(deployment: &mut Deployment) {
    let spec = deployment.spec.get_or_insert_with(Default::default);
    spec.replicas.get_or_insert(1);
    spec.revision_history_limit.get_or_insert(10);
    spec.progress_deadline_seconds.get_or_insert(600);
    let strategy = spec
        .strategy
        .get_or_insert_with(DeploymentStrategy::default);
    let kind = strategy
        .type_
        .get_or_insert_with(|| "RollingUpdate".to_owned());
    if kind == "RollingUpdate" {
        let rolling = strategy
            .rolling_update
            .get_or_insert_with(RollingUpdateDeployment::default);
        rolling
            .max_unavailable
            .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
        rolling
            .max_surge
            .get_or_insert_with(|| IntOrString::String("25%".to_owned()));
    }
    // The template's pod spec gets a pod's defaults.
    let template = &mut spec.template;
    let mut pod = Pod {
        spec: template.spec.take(),
        ..Pod::default()
    };
    default_pod(&mut pod);
    template.spec = pod.spec;
}

fn validate_deployment(deployment: &Deployment, errors: &mut Vec<FieldError>) {
    let Some(spec) = &deployment.spec else {
        return;
    };
    for (field, value) in [
        ("spec.replicas", spec.replicas),
        ("spec.revisionHistoryLimit", spec.revision_history_limit),
        ("spec.minReadySeconds", spec.min_ready_seconds),
    ] {
        if let Some(n) = value.filter(|n| *n < 0) {
            errors.push(FieldError::invalid(
                field,
                n.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    let selector = &spec.selector;
    validate_label_selector("spec.selector", selector, errors);
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    if empty {
        errors.push(FieldError::invalid(
            "spec.selector",
            "{}",
            "empty selector is invalid for deployment",
        ));
    }
    let template = &spec.template;
    let labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    if !empty && !selector_matches(selector, &labels) {
        errors.push(FieldError::invalid(
            "spec.template.metadata.labels",
            format!("{labels:?}"),
            "`selector` does not match template `labels`",
        ));
    }
    if let Some(meta) = &template.metadata {
        let mut meta_errors = Vec::new();
        validate_meta(meta, &mut meta_errors);
        errors.extend(prefixed(
            meta_errors,
            "metadata.",
            "spec.template.metadata.",
        ));
    }
    let pod = Pod {
        spec: template.spec.clone(),
        ..Pod::default()
    };
    let mut pod_errors = Vec::new();
    validate_pod(&pod, &mut pod_errors);
    errors.extend(prefixed(pod_errors, "spec.", "spec.template.spec."));
    if let Some(pod_spec) = &template.spec {
        let policy = pod_spec.restart_policy.as_deref().unwrap_or_default();
        if policy != "Always" {
            errors.push(FieldError::not_supported(
                "spec.template.spec.restartPolicy",
                policy,
                &["Always"],
            ));
        }
        if let Some(seconds) = pod_spec.active_deadline_seconds {
            errors.push(FieldError::invalid(
                "spec.template.spec.activeDeadlineSeconds",
                seconds.to_string(),
                "activeDeadlineSeconds in ReplicaSet is not Supported",
            ));
        }
    }
    if let Some(strategy) = &spec.strategy {
        validate_strategy(strategy, errors);
    }
    if let (Some(deadline), Some(ready)) = (spec.progress_deadline_seconds, spec.min_ready_seconds)
        && deadline <= ready
    {
        errors.push(FieldError::invalid(
            "spec.progressDeadlineSeconds",
            deadline.to_string(),
            "must be greater than minReadySeconds",
        ));
    }
}

fn validate_strategy(strategy: &DeploymentStrategy, errors: &mut Vec<FieldError>) {
    let kind = strategy.type_.as_deref().unwrap_or_default();
    match kind {
        "Recreate" => {
            if strategy.rolling_update.is_some() {
                errors.push(FieldError::forbidden(
                    "spec.strategy.rollingUpdate",
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => {
            let Some(rolling) = &strategy.rolling_update else {
                errors.push(FieldError::required(
                    "spec.strategy.rollingUpdate",
                    "this should be defaulted and never be nil",
                ));
                return;
            };
            let zero = |v: Option<&IntOrString>| match v {
                Some(IntOrString::Int(n)) => *n == 0,
                Some(IntOrString::String(s)) => s.trim_end_matches('%') == "0",
                None => true,
            };
            if zero(rolling.max_unavailable.as_ref()) && zero(rolling.max_surge.as_ref()) {
                errors.push(FieldError::invalid(
                    "spec.strategy.rollingUpdate.maxUnavailable",
                    "0",
                    "may not be 0 when `maxSurge` is 0",
                ));
            }
            for (field, value) in [
                ("maxUnavailable", &rolling.max_unavailable),
                ("maxSurge", &rolling.max_surge),
            ] {
                check_int_or_percent(
                    &format!("spec.strategy.rollingUpdate.{field}"),
                    value.as_ref(),
                    errors,
                );
            }
        }
        other => errors.push(FieldError::not_supported(
            "spec.strategy.type",
            other,
            STRATEGIES,
        )),
    }
}

/// A non-negative count, or a percentage of at most 100% for `maxUnavailable`.
fn check_int_or_percent(path: &str, value: Option<&IntOrString>, errors: &mut Vec<FieldError>) {
    match value {
        Some(IntOrString::Int(n)) if *n < 0 => errors.push(FieldError::invalid(
            path,
            n.to_string(),
            "must be greater than or equal to 0",
        )),
        Some(IntOrString::String(s)) => match s.strip_suffix('%').map(str::parse::<i64>) {
            Some(Ok(p)) if p < 0 => errors.push(FieldError::invalid(
                path,
                s,
                "must be greater than or equal to 0",
            )),
            Some(Ok(p)) if p > 100 && path.ends_with("maxUnavailable") => errors.push(
                FieldError::invalid(path, s, "must not be greater than 100%"),
            ),
            Some(Ok(_)) => {}
            _ => errors.push(FieldError::invalid(
                path,
                s,
                "a valid percent string must be a numeric string followed by an ending '%' (e.g. '1%',  or '93%', regex used for validation is '[0-9]+%')",
            )),
        },
        _ => {}
    }
}

/// Whether `labels` satisfy a label selector (matchLabels and every matchExpression).
pub(crate) fn selector_matches(
    selector: &LabelSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.clone().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

fn prefixed(errors: Vec<FieldError>, from: &str, to: &str) -> Vec<FieldError> {
    errors
        .into_iter()
        .map(|mut e| {
            if let Some(rest) = e.field.strip_prefix(from) {
                e.field = format!("{to}{rest}");
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn prepare(body: &Value) -> (Value, Vec<String>) {
        let mut errors = Vec::new();
        let out = prepare_deployment(body, &mut errors).unwrap();
        (out, errors.iter().map(|e| e.field.clone()).collect())
    }

    fn deployment(spec: &Value) -> Value {
        json!({"metadata": {"name": "web"}, "spec": spec})
    }

    fn good_spec() -> Value {
        json!({
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web", "tier": "x"}},
                "spec": {"containers": [{"name": "c", "image": "img:1"}]}
            }
        })
    }

    #[test]
    fn a_deployment_gets_the_apps_v1_defaults() {
        let (out, errors) = prepare(&deployment(&good_spec()));
        assert!(errors.is_empty(), "{errors:?}");
        let spec = &out["spec"];
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["revisionHistoryLimit"], 10);
        assert_eq!(spec["progressDeadlineSeconds"], 600);
        assert_eq!(
            spec["strategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
        );
        let pod = &spec["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Always");
        assert_eq!(pod["dnsPolicy"], "ClusterFirst");
        assert_eq!(pod["containers"][0]["imagePullPolicy"], "IfNotPresent");
        assert_eq!(out["status"], json!({}));
    }

    #[test]
    fn selector_template_and_pod_spec_are_checked() {
        let mut spec = good_spec();
        spec["replicas"] = json!(-1);
        spec["selector"] = json!({"matchLabels": {"app": "other"}});
        spec["template"]["spec"]["restartPolicy"] = json!("Never");
        spec["template"]["spec"]["containers"][0]["image"] = json!("");
        spec["strategy"] = json!({"type": "Recreate", "rollingUpdate": {}});
        let (_, errors) = prepare(&deployment(&spec));
        assert_eq!(
            errors,
            [
                "spec.replicas",
                "spec.template.metadata.labels",
                "spec.template.spec.containers[0].image",
                "spec.template.spec.restartPolicy",
                "spec.strategy.rollingUpdate",
            ]
        );
        let mut spec = good_spec();
        spec["selector"] = json!({});
        spec["strategy"] = json!({"rollingUpdate": {"maxUnavailable": 0, "maxSurge": "0%"}});
        let (_, errors) = prepare(&deployment(&spec));
        assert_eq!(
            errors,
            [
                "spec.selector",
                "spec.strategy.rollingUpdate.maxUnavailable"
            ]
        );
    }

    #[test]
    fn expressions_match_like_the_apiserver() {
        let selector: LabelSelector = serde_json::from_value(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["a", "b"]},
                {"key": "canary", "operator": "DoesNotExist"}
            ]
        }))
        .unwrap();
        let labels = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        assert!(selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "a")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "c")])
        ));
        assert!(!selector_matches(
            &selector,
            &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])
        ));
    }
}
