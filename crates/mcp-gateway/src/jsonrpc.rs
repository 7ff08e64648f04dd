//! JSON-RPC 2.0 message classification and the error objects the gateway writes itself.

use serde_json::{Map, Value, json};

/// JSON-RPC: the body is not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON is not a valid request object.
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: internal error (the gateway's own fault class for upstream failures).
pub const INTERNAL_ERROR: i64 = -32603;
/// Implementation-defined: the upstream server went away before answering.
pub const UPSTREAM_GONE: i64 = -32000;
/// Implementation-defined: no such instance behind this gateway.
pub const UNKNOWN_INSTANCE: i64 = -32001;
/// Implementation-defined: the message is larger than the configured limit.
pub const MESSAGE_TOO_LARGE: i64 = -32002;
/// MCP 2026-07-28: unsupported protocol version.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

/// One JSON-RPC message, classified by its members.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// Has `method` and `id`.
    Request {
        /// The request id (string or number).
        id: Value,
        /// The method name.
        method: String,
        /// The whole message.
        body: Map<String, Value>,
    },
    /// Has `method` and no `id`.
    Notification {
        /// The method name.
        method: String,
        /// The whole message.
        body: Map<String, Value>,
    },
    /// Has `result` or `error` and an `id`.
    Response {
        /// The id of the request answered.
        id: Value,
        /// The whole message.
        body: Map<String, Value>,
    },
}

/// Why a body is not one acceptable JSON-RPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// [`PARSE_ERROR`] or [`INVALID_REQUEST`].
    pub code: i64,
    /// What is wrong, for the client.
    pub message: String,
}

/// Parses one JSON-RPC message (batches are refused: MCP 2025-06-18 removed batching).
///
/// # Errors
/// [`Invalid`] with [`PARSE_ERROR`] for text that is not JSON and [`INVALID_REQUEST`] for JSON
/// that is not a JSON-RPC 2.0 message.
pub fn parse(bytes: &[u8]) -> Result<Message, Invalid> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| Invalid {
        code: PARSE_ERROR,
        message: format!("the body is not JSON: {e}"),
    })?;
    classify(value)
}

/// Classifies an already parsed JSON value.
///
/// # Errors
/// [`Invalid`] with [`INVALID_REQUEST`] when it is not a JSON-RPC 2.0 message.
pub fn classify(value: Value) -> Result<Message, Invalid> {
    let invalid = |message: &str| Invalid {
        code: INVALID_REQUEST,
        message: message.to_owned(),
    };
    let body = match value {
        Value::Object(body) => body,
        Value::Array(_) => {
            return Err(invalid(
                "JSON-RPC batches are not supported (removed in MCP 2025-06-18); send one message per request",
            ));
        }
        _ => return Err(invalid("a JSON-RPC message must be a JSON object")),
    };
    if body.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(invalid("a JSON-RPC message must have \"jsonrpc\": \"2.0\""));
    }
    let id = match body.get("id") {
        None => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id.clone()),
        Some(_) => return Err(invalid("a JSON-RPC id must be a string or a number")),
    };
    match (body.get("method"), id) {
        (Some(Value::String(method)), Some(id)) => Ok(Message::Request {
            id,
            method: method.clone(),
            body,
        }),
        (Some(Value::String(method)), None) => Ok(Message::Notification {
            method: method.clone(),
            body,
        }),
        (Some(_), _) => Err(invalid("a JSON-RPC method must be a string")),
        (None, Some(id)) if body.contains_key("result") || body.contains_key("error") => {
            Ok(Message::Response { id, body })
        }
        (None, _) => Err(invalid(
            "a JSON-RPC message needs a method (request, notification) or a result or error with an id (response)",
        )),
    }
}

/// An error response with `id` (null when the request's id is unknown).
pub fn error_response(id: Option<&Value>, code: i64, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "id": id.cloned().unwrap_or(Value::Null),
        "error": { "code": code, "message": message },
    })
}

/// A success response with `id`.
pub fn result_response(id: &Value, result: &Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// The `params._meta` object of a message, if any.
pub fn meta_mut(body: &mut Map<String, Value>) -> Option<&mut Map<String, Value>> {
    body.get_mut("params")?
        .as_object_mut()?
        .get_mut("_meta")?
        .as_object_mut()
}

/// The `params._meta` object of a message, if any.
pub fn meta(body: &Map<String, Value>) -> Option<&Map<String, Value>> {
    body.get("params")?.get("_meta")?.as_object()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_the_three_kinds() {
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Ok(Message::Request { method, .. }) if method == "ping"
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#),
            Ok(Message::Notification { .. })
        ));
        assert!(matches!(
            parse(br#"{"jsonrpc":"2.0","id":"a","result":{}}"#),
            Ok(Message::Response { id, .. }) if id == "a"
        ));
    }

    #[test]
    fn refuses_malformed_messages_with_the_right_code() {
        assert_eq!(parse(b"{not json").unwrap_err().code, PARSE_ERROR);
        for bad in [
            &br#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#[..],
            br#"{"id":1,"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":{},"method":"ping"}"#,
            br#"{"jsonrpc":"2.0","id":1,"method":3}"#,
            br#"{"jsonrpc":"2.0","id":1}"#,
            b"42",
        ] {
            assert_eq!(
                parse(bad).unwrap_err().code,
                INVALID_REQUEST,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
