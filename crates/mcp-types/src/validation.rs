//! Validation errors with field paths as they are spelled on the wire (camelCase).

use std::fmt;

/// One invalid field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the spec as written in YAML/JSON, e.g. `resources.limits.memory`.
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one value; never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors {
    errors: Vec<FieldError>,
}

impl ValidationErrors {
    /// Errors from a list; `None` when the list is empty.
    pub fn from_vec(errors: Vec<FieldError>) -> Option<Self> {
        (!errors.is_empty()).then_some(Self { errors })
    }

    /// A single error.
    pub fn single(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            errors: vec![FieldError {
                path: path.into(),
                message: message.into(),
            }],
        }
    }

    /// The field errors.
    pub fn errors(&self) -> &[FieldError] {
        &self.errors
    }

    /// Prefixes every path, for errors found in a nested value (`spec.` + `name`).
    pub fn prefixed(mut self, prefix: &str) -> Self {
        for e in &mut self.errors {
            e.path = if e.path.is_empty() {
                prefix.to_owned()
            } else if e.path.starts_with('[') {
                format!("{prefix}{}", e.path)
            } else {
                format!("{prefix}.{}", e.path)
            };
        }
        self
    }

    /// Whether any error is about `path` (exactly).
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.errors.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<garde::Report> for ValidationErrors {
    fn from(report: garde::Report) -> Self {
        let errors = report
            .iter()
            .map(|(path, err)| FieldError {
                path: camel_path(&path.to_string()),
                message: err.message().to_owned(),
            })
            .collect();
        Self { errors }
    }
}

/// garde reports Rust field names; serde renames them to camelCase on the wire. Map keys never
/// appear as path components in this crate (maps are validated whole, naming the key in the
/// message), so converting every component is exact.
fn camel_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    let mut upper = false;
    for c in path.chars() {
        match c {
            '_' => upper = true,
            c if upper => {
                out.push(c.to_ascii_uppercase());
                upper = false;
            }
            c => out.push(c),
        }
    }
    out
}

/// Adapts a `Result<(), String>` check to garde's custom-rule signature.
pub(crate) fn garde_check(r: Result<(), String>) -> garde::Result {
    r.map_err(garde::Error::new)
}

#[cfg(test)]
mod tests {
    use super::camel_path;

    #[test]
    fn camel() {
        assert_eq!(camel_path("restart_policy"), "restartPolicy");
        assert_eq!(camel_path("volumes[0].mount_path"), "volumes[0].mountPath");
        assert_eq!(camel_path("name"), "name");
    }
}
