//! Roles and RoleBindings (`rbac.authorization.k8s.io/v1`), as `ValidateRole` and
//! `ValidateRoleBinding` check them (names only need to be one URL path segment), with the v1
//! defaulting of a User or Group subject's `apiGroup`.
//!
//! Not modelled: authorization itself (every request is allowed), so neither the escalation
//! check on creating a Role (the creator must hold every permission it grants) nor the `bind`
//! check on creating a RoleBinding.

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, Subject};
use serde_json::Value;

use crate::kind::ResourceKind;
use crate::names;
use crate::object::{parse_typed, to_value, validate_meta};
use crate::status::{ApiError, FieldError};

/// The RBAC API group, the only `roleRef.apiGroup`.
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// Validates a Role create body.
pub(crate) fn prepare_role(body: &Value, errors: &mut Vec<FieldError>) -> Result<Value, ApiError> {
    let role: Role = parse_typed(ResourceKind::Role, body)?;
    validate_meta(&role.metadata, errors);
    for (i, rule) in role.rules.iter().flatten().enumerate() {
        validate_rule(&format!("rules[{i}]"), rule, errors);
    }
    to_value(&role)
}

fn validate_rule(path: &str, rule: &PolicyRule, errors: &mut Vec<FieldError>) {
    if rule.verbs.is_empty() {
        errors.push(FieldError::required(
            format!("{path}.verbs"),
            "verbs must contain at least one value",
        ));
    }
    let urls = rule.non_resource_urls.clone().unwrap_or_default();
    let groups = rule.api_groups.clone().unwrap_or_default();
    let resources = rule.resources.clone().unwrap_or_default();
    let names = rule.resource_names.clone().unwrap_or_default();
    if !urls.is_empty() {
        let shown = format!("{urls:?}");
        errors.push(FieldError::invalid(
            format!("{path}.nonResourceURLs"),
            &shown,
            "namespaced rules cannot apply to non-resource URLs",
        ));
        if !groups.is_empty() || !resources.is_empty() || !names.is_empty() {
            errors.push(FieldError::invalid(
                format!("{path}.nonResourceURLs"),
                &shown,
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        return;
    }
    if groups.is_empty() {
        errors.push(FieldError::required(
            format!("{path}.apiGroups"),
            "resource rules must supply at least one api group",
        ));
    }
    if resources.is_empty() {
        errors.push(FieldError::required(
            format!("{path}.resources"),
            "resource rules must supply at least one resource",
        ));
    }
    if !names.is_empty() && resources.len() > 1 {
        errors.push(FieldError::required(
            format!("{path}.resourceNames"),
            "resource names cannot apply to multiple resources",
        ));
    }
}

/// Defaults and validates a RoleBinding create body.
pub(crate) fn prepare_role_binding(
    body: &Value,
    errors: &mut Vec<FieldError>,
) -> Result<Value, ApiError> {
    let mut binding: RoleBinding = parse_typed(ResourceKind::RoleBinding, body)?;
    validate_meta(&binding.metadata, errors);
    for subject in binding.subjects.iter_mut().flatten() {
        if matches!(subject.kind.as_str(), "User" | "Group") && subject.api_group.is_none() {
            subject.api_group = Some(RBAC_GROUP.to_owned());
        }
    }
    let role_ref = &binding.role_ref;
    if role_ref.api_group != RBAC_GROUP {
        errors.push(FieldError::not_supported(
            "roleRef.apiGroup",
            &role_ref.api_group,
            &[RBAC_GROUP],
        ));
    }
    if !matches!(role_ref.kind.as_str(), "Role" | "ClusterRole") {
        errors.push(FieldError::not_supported(
            "roleRef.kind",
            &role_ref.kind,
            &["Role", "ClusterRole"],
        ));
    }
    if role_ref.name.is_empty() {
        errors.push(FieldError::required("roleRef.name", ""));
    } else if let Err(message) = names::path_segment_name(&role_ref.name) {
        errors.push(FieldError::invalid("roleRef.name", &role_ref.name, message));
    }
    for (i, subject) in binding.subjects.iter().flatten().enumerate() {
        validate_subject(&format!("subjects[{i}]"), subject, errors);
    }
    to_value(&binding)
}

fn validate_subject(path: &str, subject: &Subject, errors: &mut Vec<FieldError>) {
    if subject.name.is_empty() {
        errors.push(FieldError::required(format!("{path}.name"), ""));
    }
    let group = subject.api_group.as_deref().unwrap_or_default();
    match subject.kind.as_str() {
        "ServiceAccount" => {
            if !subject.name.is_empty()
                && let Err(message) = names::dns1123_subdomain(&subject.name)
            {
                errors.push(FieldError::invalid(
                    format!("{path}.name"),
                    &subject.name,
                    message,
                ));
            }
            if !group.is_empty() {
                errors.push(FieldError::not_supported(
                    format!("{path}.apiGroup"),
                    group,
                    &[""],
                ));
            }
        }
        "User" | "Group" => {
            if group != RBAC_GROUP {
                errors.push(FieldError::not_supported(
                    format!("{path}.apiGroup"),
                    group,
                    &[RBAC_GROUP],
                ));
            }
        }
        other => errors.push(FieldError::not_supported(
            format!("{path}.kind"),
            other,
            &["ServiceAccount", "User", "Group"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(errors: &[FieldError]) -> Vec<&str> {
        errors.iter().map(|e| e.field.as_str()).collect()
    }

    #[test]
    fn role_rules_need_verbs_groups_and_resources() {
        let role = json!({"metadata": {"name": "r"}, "rules": [
            {"apiGroups": [""], "resources": ["pods"], "verbs": ["get"], "resourceNames": ["a"]},
            {"resources": ["pods", "services"], "verbs": [], "resourceNames": ["a"]},
            {"nonResourceURLs": ["/healthz"], "verbs": ["get"]}
        ]});
        let mut errors = Vec::new();
        prepare_role(&role, &mut errors).unwrap();
        assert_eq!(
            fields(&errors),
            [
                "rules[1].verbs",
                "rules[1].apiGroups",
                "rules[1].resourceNames",
                "rules[2].nonResourceURLs"
            ]
        );
    }

    #[test]
    fn bindings_check_the_role_ref_and_subjects_and_default_user_groups() {
        let binding = json!({
            "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "sa", "namespace": "ns"},
                {"kind": "User", "name": "alice"}
            ]
        });
        let mut errors = Vec::new();
        let out = prepare_role_binding(&binding, &mut errors).unwrap();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(out["subjects"][1]["apiGroup"], RBAC_GROUP);
        let bad = json!({
            "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "", "kind": "Secret", "name": "a/b"},
            "subjects": [
                {"kind": "ServiceAccount", "name": "Bad_Name", "apiGroup": "x"},
                {"kind": "Robot", "name": ""}
            ]
        });
        let mut errors = Vec::new();
        prepare_role_binding(&bad, &mut errors).unwrap();
        assert_eq!(
            fields(&errors),
            [
                "roleRef.apiGroup",
                "roleRef.kind",
                "roleRef.name",
                "subjects[0].name",
                "subjects[0].apiGroup",
                "subjects[1].name",
                "subjects[1].kind"
            ]
        );
    }
}
