//! Kubernetes `Status` error bodies (kind Status, apiVersion v1) and field validation errors,
//! worded like the apiserver's so that clients map them exactly as they would a real cluster's.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::kind::ResourceKind;

/// An error answered as a Kubernetes `Status` object.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    code: StatusCode,
    reason: &'static str,
    message: String,
    details: Option<Value>,
    metadata: Value,
}

impl ApiError {
    fn new(code: StatusCode, reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            reason,
            message: message.into(),
            details: None,
            metadata: json!({}),
        }
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 404 for an object of `kind` that does not exist.
    pub(crate) fn not_found(kind: ResourceKind, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("{} \"{name}\" not found", kind.qualified_resource()),
        )
        .with_details(kind.status_details(name))
    }

    /// 404 for a path the server does not serve.
    pub(crate) fn unknown_path() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource",
        )
        .with_details(json!({}))
    }

    /// 409 for a create whose name is taken.
    pub(crate) fn already_exists(kind: ResourceKind, name: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", kind.qualified_resource()),
        )
        .with_details(kind.status_details(name))
    }

    /// 415 for a PATCH body type the fake does not take.
    pub(crate) fn unsupported_media_type(content_type: &str) -> Self {
        Self::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({content_type:?}) - accepted media types include: application/merge-patch+json"
            ),
        )
    }

    /// 409 for a failed precondition or a concurrent modification.
    pub(crate) fn conflict(kind: ResourceKind, name: &str, detail: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": {detail}",
                kind.qualified_resource()
            ),
        )
        .with_details(kind.status_details(name))
    }

    /// 410 for an expired continue token or resource version.
    pub(crate) fn expired(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GONE, "Expired", message)
    }

    /// 410 for a continue token that is too old, with a token to continue inconsistently.
    pub(crate) fn expired_continue(inconsistent_continue: Option<String>) -> Self {
        let mut error = Self::expired(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
        );
        if let Some(token) = inconsistent_continue {
            error.metadata = json!({ "continue": token });
        }
        error
    }

    /// 400 with a free-form message.
    pub(crate) fn forbidden(kind: ResourceKind, name: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "Forbidden", message)
            .with_details(kind.status_details(name))
    }

    /// 400 with a message.
    pub(crate) fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadRequest", message)
    }

    /// 405 for a verb the resource does not support here.
    pub(crate) fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
        .with_details(json!({}))
    }

    /// 422 listing every field error, as the apiserver's `NewInvalid`.
    pub(crate) fn invalid(kind: ResourceKind, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_of(
            &kind.qualified_kind(),
            kind.invalid_details(name),
            name,
            errors,
        )
    }

    /// 422 for an object that is not a stored resource (e.g. `PodLogOptions`).
    pub(crate) fn invalid_options(kind: &str, name: &str, errors: &[FieldError]) -> Self {
        Self::invalid_of(kind, json!({ "name": name, "kind": kind }), name, errors)
    }

    fn invalid_of(
        qualified_kind: &str,
        mut details: Value,
        name: &str,
        errors: &[FieldError],
    ) -> Self {
        let joined = if let [single] = errors {
            single.to_string()
        } else {
            let parts: Vec<String> = errors.iter().map(ToString::to_string).collect();
            format!("[{}]", parts.join(", "))
        };
        details["causes"] = errors.iter().map(FieldError::cause).collect();
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            format!("{qualified_kind} \"{name}\" is invalid: {joined}"),
        )
        .with_details(details)
    }

    /// 500 for a failure of the fake itself.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message)
    }

    /// The HTTP status code.
    #[cfg(test)]
    pub(crate) fn code(&self) -> StatusCode {
        self.code
    }

    /// The `Status` object as JSON.
    pub(crate) fn to_status(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": self.metadata,
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code.as_u16(),
        });
        if let Some(details) = &self.details {
            status["details"] = details.clone();
        }
        status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response(self.code, &self.to_status())
    }
}

/// A JSON response with the apiserver's content type.
pub(crate) fn json_response(code: StatusCode, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut response = (code, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// What is wrong with one field (apimachinery's `field.ErrorType`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FieldErrorKind {
    Required,
    Invalid(String),
    Duplicate(String),
    NotFound(String),
    NotSupported {
        value: String,
        supported: Vec<&'static str>,
    },
    Forbidden,
}

/// One field validation error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FieldError {
    pub(crate) field: String,
    pub(crate) kind: FieldErrorKind,
    pub(crate) detail: String,
}

impl FieldError {
    pub(crate) fn required(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Required,
            detail: detail.into(),
        }
    }

    pub(crate) fn invalid(
        field: impl Into<String>,
        value: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Invalid(value.into()),
            detail: detail.into(),
        }
    }

    pub(crate) fn duplicate(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Duplicate(value.into()),
            detail: String::new(),
        }
    }

    pub(crate) fn not_found(field: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotFound(value.into()),
            detail: String::new(),
        }
    }

    pub(crate) fn not_supported(
        field: impl Into<String>,
        value: impl Into<String>,
        supported: &[&'static str],
    ) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::NotSupported {
                value: value.into(),
                supported: supported.to_vec(),
            },
            detail: String::new(),
        }
    }

    pub(crate) fn forbidden(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            kind: FieldErrorKind::Forbidden,
            detail: detail.into(),
        }
    }

    fn reason(&self) -> &'static str {
        match self.kind {
            FieldErrorKind::Required => "FieldValueRequired",
            FieldErrorKind::Invalid(_) => "FieldValueInvalid",
            FieldErrorKind::Duplicate(_) => "FieldValueDuplicate",
            FieldErrorKind::NotFound(_) => "FieldValueNotFound",
            FieldErrorKind::NotSupported { .. } => "FieldValueNotSupported",
            FieldErrorKind::Forbidden => "FieldValueForbidden",
        }
    }

    /// The message without the field path (`Invalid value: "x": detail`).
    pub(crate) fn body(&self) -> String {
        let mut body = match &self.kind {
            FieldErrorKind::Required => "Required value".to_owned(),
            FieldErrorKind::Invalid(value) => format!("Invalid value: \"{value}\""),
            FieldErrorKind::Duplicate(value) => format!("Duplicate value: \"{value}\""),
            FieldErrorKind::NotFound(value) => format!("Not found: \"{value}\""),
            FieldErrorKind::NotSupported { value, supported } => {
                let quoted: Vec<String> = supported.iter().map(|s| format!("\"{s}\"")).collect();
                format!(
                    "Unsupported value: \"{value}\": supported values: {}",
                    quoted.join(", ")
                )
            }
            FieldErrorKind::Forbidden => "Forbidden".to_owned(),
        };
        if !self.detail.is_empty() {
            body.push_str(": ");
            body.push_str(&self.detail);
        }
        body
    }

    fn cause(&self) -> Value {
        json!({ "reason": self.reason(), "message": self.body(), "field": self.field })
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.field, self.body())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_status_lists_causes_like_the_apiserver() {
        let errors = [
            FieldError::required("spec.containers", ""),
            FieldError::not_supported("spec.restartPolicy", "Sometimes", &["Always", "Never"]),
        ];
        let status = ApiError::invalid(ResourceKind::Pod, "web", &errors).to_status();
        assert_eq!(status["code"], 422);
        assert_eq!(status["reason"], "Invalid");
        assert_eq!(
            status["message"],
            "Pod \"web\" is invalid: [spec.containers: Required value, spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"Never\"]"
        );
        assert_eq!(status["details"]["kind"], "Pod");
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "FieldValueRequired"
        );
        assert_eq!(
            status["details"]["causes"][1]["field"],
            "spec.restartPolicy"
        );
    }

    #[test]
    fn group_resources_are_qualified() {
        let status = ApiError::not_found(ResourceKind::NetworkPolicy, "np").to_status();
        assert_eq!(
            status["message"],
            "networkpolicies.networking.k8s.io \"np\" not found"
        );
        assert_eq!(status["details"]["group"], "networking.k8s.io");
        assert_eq!(status["details"]["kind"], "networkpolicies");
    }
}
