//! What the apiserver checks on every object: the typed decode of a body, object metadata
//! (labels, annotations, names) and label selectors.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::Value;

use crate::kind::ResourceKind;
use crate::names;
use crate::status::{ApiError, FieldError};

pub(crate) fn parse_typed<T: serde::de::DeserializeOwned>(
    kind: ResourceKind,
    body: &Value,
) -> Result<T, ApiError> {
    serde_json::from_value(body.clone()).map_err(|e| {
        ApiError::bad_request(format!(
            "{} in version \"v1\" cannot be handled as a {}: {e}",
            kind.kind(),
            kind.kind()
        ))
    })
}

pub(crate) fn to_value<T: serde::Serialize>(object: &T) -> Result<Value, ApiError> {
    serde_json::to_value(object).map_err(|e| ApiError::internal(e.to_string()))
}

/// Validates labels and annotation keys.
pub(crate) fn validate_meta(meta: &ObjectMeta, errors: &mut Vec<FieldError>) {
    for (key, value) in meta.labels.iter().flatten() {
        if let Err(message) = names::qualified_name(key) {
            errors.push(FieldError::invalid("metadata.labels", key, message));
        }
        if let Err(message) = names::label_value(value) {
            errors.push(FieldError::invalid("metadata.labels", value, message));
        }
    }
    for key in meta.annotations.iter().flatten().map(|(k, _)| k) {
        if let Err(message) = names::qualified_name(&key.to_lowercase()) {
            errors.push(FieldError::invalid("metadata.annotations", key, message));
        }
    }
    let annotation_bytes: usize = meta
        .annotations
        .iter()
        .flatten()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if annotation_bytes > 256 * 1024 {
        errors.push(FieldError {
            field: "metadata.annotations".to_owned(),
            kind: crate::status::FieldErrorKind::Invalid(String::new()),
            detail: "Too long: must have at most 262144 bytes".to_owned(),
        });
    }
}

/// Validates the name (or generateName prefix) of a new object.
pub(crate) fn validate_new_name(
    kind: ResourceKind,
    name: Option<&str>,
    generate_name: Option<&str>,
) -> Result<(), ApiError> {
    match (
        name.filter(|n| !n.is_empty()),
        generate_name.filter(|n| !n.is_empty()),
    ) {
        (Some(name), _) => kind.validate_name(name).map_err(|message| {
            ApiError::invalid(
                kind,
                name,
                &[FieldError::invalid("metadata.name", name, message)],
            )
        }),
        (None, Some(prefix)) => {
            // A prefix may end with '-': check it as if a suffix followed.
            let masked = match prefix.strip_suffix('-') {
                Some(stem) => format!("{stem}a"),
                None => prefix.to_owned(),
            };
            let truncated: String = masked
                .chars()
                .take(names::DNS1123_LABEL_MAX - names::GENERATED_SUFFIX_LEN)
                .collect();
            kind.validate_name(&truncated).map_err(|message| {
                ApiError::invalid(
                    kind,
                    prefix,
                    &[FieldError::invalid(
                        "metadata.generateName",
                        prefix,
                        message,
                    )],
                )
            })
        }
        (None, None) => Err(ApiError::invalid(
            kind,
            "",
            &[FieldError::required(
                "metadata.name",
                "name or generateName is required",
            )],
        )),
    }
}

pub(crate) fn validate_label_selector(
    path: &str,
    selector: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    errors: &mut Vec<FieldError>,
) {
    for (key, value) in selector.match_labels.iter().flatten() {
        if let Err(message) = names::qualified_name(key) {
            errors.push(FieldError::invalid(
                format!("{path}.matchLabels"),
                key,
                message,
            ));
        }
        if let Err(message) = names::label_value(value) {
            errors.push(FieldError::invalid(
                format!("{path}.matchLabels"),
                value,
                message,
            ));
        }
    }
    for (i, expression) in selector.match_expressions.iter().flatten().enumerate() {
        let field = format!("{path}.matchExpressions[{i}]");
        let values = expression.values.clone().unwrap_or_default();
        match expression.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => errors.push(FieldError::required(
                format!("{field}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::forbidden(
                format!("{field}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::not_supported(
                format!("{field}.operator"),
                other,
                &["DoesNotExist", "Exists", "In", "NotIn"],
            )),
        }
        if let Err(message) = names::qualified_name(&expression.key) {
            errors.push(FieldError::invalid(
                format!("{field}.key"),
                &expression.key,
                message,
            ));
        }
    }
}
