//! Environment values: plain text and references to secrets, never shown by `Debug`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A string that must not appear in logs: `Debug` prints `<redacted>` and there is no `Display`.
#[derive(Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for handing to an engine. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<&str> for SecretString {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

impl From<String> for SecretString {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// A reference to one key of a named secret (a Kubernetes Secret, or a file for other backends).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// Secret name (a DNS-1123 subdomain).
    pub name: String,
    /// Key inside the secret.
    pub key: String,
}

/// The value of one environment variable.
///
/// In YAML either a plain string (`LOG_LEVEL: debug`) or a reference
/// (`API_KEY: { secretRef: { name: github, key: token } }`).
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum EnvValue {
    /// A literal value. Hidden from `Debug` because people put tokens in plain env vars too.
    Plain(SecretString),
    /// A reference resolved by the backend (Kubernetes `secretKeyRef`, a secrets directory, ...).
    Secret {
        /// The referenced secret key.
        #[serde(rename = "secretRef")]
        secret_ref: SecretKeyRef,
    },
}

impl EnvValue {
    /// A plain value.
    pub fn plain(value: impl Into<String>) -> Self {
        Self::Plain(SecretString::new(value))
    }

    /// A reference to `key` of secret `name`.
    pub fn secret(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self::Secret {
            secret_ref: SecretKeyRef {
                name: name.into(),
                key: key.into(),
            },
        }
    }
}

impl<'de> Deserialize<'de> for EnvValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // YAML users write `DEBUG: true` and `PORT: 8080`; environment values are strings, so
        // scalars are taken as their text, the way docker-compose does.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Bool(bool),
            Int(i64),
            Float(f64),
            Secret {
                #[serde(rename = "secretRef")]
                secret_ref: SecretKeyRef,
            },
        }
        Ok(
            match Raw::deserialize(d).map_err(|_| {
                serde::de::Error::custom(
                    "expected a string, number, boolean, or { secretRef: { name, key } }",
                )
            })? {
                Raw::Text(s) => Self::plain(s),
                Raw::Bool(b) => Self::plain(b.to_string()),
                Raw::Int(i) => Self::plain(i.to_string()),
                Raw::Float(f) => Self::plain(f.to_string()),
                Raw::Secret { secret_ref } => Self::Secret { secret_ref },
            },
        )
    }
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Plain(v) => v.fmt(f),
            Self::Secret { secret_ref } => {
                write!(f, "secretRef({}/{})", secret_ref.name, secret_ref.key)
            }
        }
    }
}

/// A secret mounted as a read-only file (mode 0400, owned by the server's user) rather than
/// passed in the environment: its value appears in no container config, pod spec, state file or
/// log.
///
/// `path` is where the server finds it: the container path on Docker and Kubernetes; on the
/// process backend (no mount namespace) the file lives in the instance directory instead and
/// only `env` tells the server where, so portable servers read the path from `env`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretFile {
    /// Absolute path of the file inside the server (its directory need not exist).
    pub path: String,
    /// The secret key whose value the file holds.
    pub secret_ref: SecretKeyRef,
    /// An environment variable set to the file's path (the `_FILE` convention), if wanted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

impl SecretFile {
    /// A file at `path` holding key `key` of secret `name`.
    pub fn new(path: impl Into<String>, name: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            secret_ref: SecretKeyRef {
                name: name.into(),
                key: key.into(),
            },
            env: None,
        }
    }

    /// Also sets `var` to the file's path.
    pub fn with_env(mut self, var: impl Into<String>) -> Self {
        self.env = Some(var.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_values() {
        let v = EnvValue::plain("ghp_supersecret");
        assert_eq!(format!("{v:?}"), "<redacted>");
        let s = EnvValue::secret("github", "token");
        assert_eq!(format!("{s:?}"), "secretRef(github/token)");
    }

    #[test]
    fn yaml_shapes() {
        let v: std::collections::BTreeMap<String, EnvValue> = serde_saphyr::from_str(
            "A: x\nB: { secretRef: { name: s, key: k } }\nC: true\nD: 8080\n",
        )
        .unwrap();
        assert_eq!(v["A"], EnvValue::plain("x"));
        assert_eq!(v["B"], EnvValue::secret("s", "k"));
        assert_eq!(v["C"], EnvValue::plain("true"));
        assert_eq!(v["D"], EnvValue::plain("8080"));
    }
}
