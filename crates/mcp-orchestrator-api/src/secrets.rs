//! Resolving `secretRef` environment values and `secretFiles` for backends without a secret
//! store of their own (Docker, local processes). Kubernetes passes references through as
//! `secretKeyRef`s and `secret` volumes instead.
//!
//! The rules every backend follows for secret files are written here once: a file holds the
//! resolved value and nothing else ([`resolve_secret_files`]), it is read-only with mode
//! [`SECRET_FILE_MODE`] for the server's user, and an unresolvable reference is an
//! [`InvalidSpec`](OrchestratorError::InvalidSpec) naming `secretFiles[i].secretRef` before
//! anything is created.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::PathBuf;

use mcp_types::{EnvValue, SecretFile, SecretKeyRef, SecretString, ValidationErrors};

use crate::error::{OrchestratorError, Result};

/// Looks up the value of a secret key.
pub trait SecretResolver: Debug + Send + Sync {
    /// The value of `r`.
    ///
    /// # Errors
    /// Why the secret cannot be read; never includes a secret value.
    fn resolve(&self, r: &SecretKeyRef) -> std::result::Result<SecretString, String>;
}

/// Reads `<dir>/<name>/<key>`, the layout of a Kubernetes secret mounted as a volume, with one
/// trailing newline removed.
#[derive(Debug, Clone)]
pub struct DirSecretResolver {
    dir: PathBuf,
}

impl DirSecretResolver {
    /// A resolver over `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

impl SecretResolver for DirSecretResolver {
    fn resolve(&self, r: &SecretKeyRef) -> std::result::Result<SecretString, String> {
        // Names are validated as DNS subdomains and keys as [-._a-zA-Z0-9]+, but refuse path
        // tricks here too: this is the boundary to the filesystem.
        if [&r.name, &r.key]
            .iter()
            .any(|p| p.is_empty() || p.contains('/') || p.as_str() == "." || p.as_str() == "..")
        {
            return Err(format!(
                "secret {}/{} is not a valid reference",
                r.name, r.key
            ));
        }
        let path = self.dir.join(&r.name).join(&r.key);
        match std::fs::read_to_string(&path) {
            Ok(mut v) => {
                if v.ends_with('\n') {
                    v.pop();
                }
                Ok(SecretString::new(v))
            }
            Err(e) => Err(format!(
                "secret {}/{}: cannot read {}: {e}",
                r.name,
                r.key,
                path.display()
            )),
        }
    }
}

/// Refuses every reference (the default when no secrets directory is configured).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSecrets;

impl SecretResolver for NoSecrets {
    fn resolve(&self, r: &SecretKeyRef) -> std::result::Result<SecretString, String> {
        Err(format!(
            "secret {}/{} cannot be resolved: no secrets directory is configured for this backend",
            r.name, r.key
        ))
    }
}

/// Resolves every entry to a value, in key order.
///
/// # Errors
/// [`InvalidSpec`](OrchestratorError::InvalidSpec) naming `env.<KEY>` for an unresolvable reference.
pub fn resolve_env(
    env: &BTreeMap<String, EnvValue>,
    resolver: &dyn SecretResolver,
) -> Result<Vec<(String, SecretString)>> {
    env.iter()
        .map(|(k, v)| match v {
            EnvValue::Plain(s) => Ok((k.clone(), s.clone())),
            EnvValue::Secret { secret_ref } => resolver
                .resolve(secret_ref)
                .map(|s| (k.clone(), s))
                .map_err(|msg| {
                    OrchestratorError::InvalidSpec(ValidationErrors::single(
                        format!("env.{k}"),
                        msg,
                    ))
                }),
        })
        .collect()
}

/// The permission bits of a secret file on backends that own the file (processes, Docker):
/// readable by the server's user only, writable by nobody. (On Kubernetes the kubelet adds
/// group read for the pod's `fsGroup`, so the server sees 0440 there.)
pub const SECRET_FILE_MODE: u32 = 0o400;

/// Resolves every secret file of a spec to the value it holds, in spec order.
///
/// # Errors
/// [`InvalidSpec`](OrchestratorError::InvalidSpec) naming `secretFiles[i].secretRef` for each
/// unresolvable reference (all of them, so one attempt shows every missing secret).
pub fn resolve_secret_files(
    files: &[SecretFile],
    resolver: &dyn SecretResolver,
) -> Result<Vec<SecretString>> {
    let mut values = Vec::with_capacity(files.len());
    let mut errors = Vec::new();
    for (i, f) in files.iter().enumerate() {
        match resolver.resolve(&f.secret_ref) {
            Ok(v) => values.push(v),
            Err(message) => errors.push(mcp_types::FieldError {
                path: format!("secretFiles[{i}].secretRef"),
                message,
            }),
        }
    }
    match ValidationErrors::from_vec(errors) {
        None => Ok(values),
        Some(errors) => Err(OrchestratorError::InvalidSpec(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_resolver_reads_mounted_layout() {
        let dir = std::env::temp_dir().join(format!("mcp-secrets-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("gh")).unwrap();
        std::fs::write(dir.join("gh/token"), "s3cr3t\n").unwrap();
        let env: BTreeMap<_, _> = [
            ("T".to_owned(), EnvValue::secret("gh", "token")),
            ("P".to_owned(), EnvValue::plain("x")),
        ]
        .into();
        let resolved = resolve_env(&env, &DirSecretResolver::new(&dir)).unwrap();
        assert_eq!(resolved[1].1.expose(), "s3cr3t");
        let missing: BTreeMap<_, _> = [("M".to_owned(), EnvValue::secret("gh", "nope"))].into();
        let err = resolve_env(&missing, &DirSecretResolver::new(&dir)).unwrap_err();
        assert!(err.to_string().contains("env.M"), "{err}");
        let err = resolve_env(&env, &NoSecrets).unwrap_err();
        assert!(
            !err.to_string().contains("s3cr3t") && err.to_string().contains("no secrets directory")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn secret_files_resolve_in_order_and_name_every_missing_one() {
        let dir = std::env::temp_dir().join(format!("mcp-secret-files-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("gh")).unwrap();
        std::fs::write(dir.join("gh/token"), "v-1\n").unwrap();
        std::fs::write(dir.join("gh/other"), "v-2").unwrap();
        let files = [
            SecretFile::new("/run/a", "gh", "token"),
            SecretFile::new("/run/b", "gh", "other"),
        ];
        let resolver = DirSecretResolver::new(&dir);
        let values = resolve_secret_files(&files, &resolver).unwrap();
        let got: Vec<&str> = values.iter().map(SecretString::expose).collect();
        assert_eq!(got, ["v-1", "v-2"]);
        let missing = [
            SecretFile::new("/run/a", "gh", "token"),
            SecretFile::new("/run/b", "gh", "nope"),
            SecretFile::new("/run/c", "absent", "k"),
        ];
        let Err(OrchestratorError::InvalidSpec(errors)) = resolve_secret_files(&missing, &resolver)
        else {
            panic!("missing secrets must be an invalid spec");
        };
        assert!(!errors.has_path("secretFiles[0].secretRef"), "{errors}");
        assert!(errors.has_path("secretFiles[1].secretRef"), "{errors}");
        assert!(errors.has_path("secretFiles[2].secretRef"), "{errors}");
        assert!(!errors.to_string().contains("v-1"), "{errors}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
