//! Reading typed YAML/JSON documents (configs, server specs) with errors that name the file and
//! the field path.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{ConfigError, Format, Source};

/// Parses `text` as `T`, going through a generic tree so that shape errors carry the path.
///
/// # Errors
/// [`ConfigError::Syntax`] or [`ConfigError::Field`] naming `source` and the field.
pub fn parse_document<T: DeserializeOwned>(
    text: &str,
    format: Format,
    source: &Source,
) -> Result<T, ConfigError> {
    let value: Value = match format {
        Format::Json => serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: source.clone(),
            format: "JSON",
            message: e.to_string(),
        })?,
        Format::Yaml => serde_saphyr::from_str(text).map_err(|e| ConfigError::Syntax {
            origin: source.clone(),
            format: "YAML",
            message: yaml_syntax_message(&e),
        })?,
    };
    let value = if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    };
    from_value(&value, source)
}

/// A YAML syntax error as one line with its position and never the source text: the offending
/// line may hold an environment value (a token), so the parser's snippet is left out, and the
/// parser's library advice for duplicate keys is replaced by the document's own rule.
fn yaml_syntax_message(e: &serde_saphyr::Error) -> String {
    let plain = e.without_snippet();
    if let serde_saphyr::Error::DuplicateMappingKey { key, location } = plain {
        let key = key
            .as_deref()
            .map_or_else(|| "a key".to_owned(), |k| format!("key {k:?}"));
        return format!(
            "line {} column {}: {key} is given twice in the same mapping (each key may appear once)",
            location.line(),
            location.column()
        );
    }
    let options = serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    };
    let text = plain.render_with_options(options);
    // One line: the position and the parser's reason, nothing quoted from the document.
    text.lines().next().unwrap_or_default().trim().to_owned()
}

/// Reads and parses a file (YAML, or JSON for `.json`); `what` names the file's role in
/// messages ("spec file", "config file").
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, else as [`parse_document`].
pub fn load_document<T: DeserializeOwned>(
    path: &Path,
    what: &'static str,
) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        what,
        path: path.to_owned(),
        source,
    })?;
    parse_document(&text, Format::of_path(path), &Source::File(path.to_owned()))
}

pub(crate) fn from_value<T: DeserializeOwned>(
    value: &Value,
    source: &Source,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        ConfigError::Field {
            origin: source.clone(),
            path: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// Reads a server spec file and validates it.
///
/// # Errors
/// [`ConfigError`] naming the file and the first invalid field (all of them in the message).
pub fn load_server_spec(path: &Path) -> Result<mcp_types::McpServer, ConfigError> {
    let spec: mcp_types::McpServer = load_document(path, "spec file")?;
    match spec.validate_spec() {
        Ok(()) => Ok(spec),
        Err(errors) => Err(first_field_error(&errors, Source::File(path.to_owned()))),
    }
}

/// The first of `errors` as a [`ConfigError::Field`]; the others (never the first again) follow in
/// the message as `(and N more: path: reason; ...)`.
pub(crate) fn first_field_error(
    errors: &mcp_types::ValidationErrors,
    origin: Source,
) -> ConfigError {
    let (first, rest) = match errors.errors() {
        [first, rest @ ..] => (first.clone(), rest),
        [] => (
            mcp_types::FieldError {
                path: String::new(),
                message: "invalid".into(),
            },
            &[][..],
        ),
    };
    let message = if rest.is_empty() {
        first.message
    } else {
        let others: Vec<String> = rest.iter().map(ToString::to_string).collect();
        format!(
            "{} (and {} more: {})",
            first.message,
            rest.len(),
            others.join("; ")
        )
    };
    ConfigError::Field {
        origin,
        path: first.path,
        message,
    }
}
