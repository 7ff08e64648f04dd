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
            message: e.to_string(),
        })?,
    };
    let value = if value.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        value
    };
    from_value(&value, source)
}

/// Reads and parses a file (YAML, or JSON for `.json`).
///
/// # Errors
/// [`ConfigError::Read`] when the file cannot be read, else as [`parse_document`].
pub fn load_document<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
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
    let spec: mcp_types::McpServer = load_document(path)?;
    if let Err(errors) = spec.validate_spec() {
        let first = &errors.errors()[0];
        let message = if errors.errors().len() > 1 {
            format!("{} (all: {errors})", first.message)
        } else {
            first.message.clone()
        };
        return Err(ConfigError::Field {
            origin: Source::File(path.to_owned()),
            path: first.path.clone(),
            message,
        });
    }
    Ok(spec)
}
