//! Kit checks of secrets reaching the server: `secretRef` environment values next to plain ones
//! and start options' env overriding the spec's ([`secret_env_propagation`]), and secret files
//! read through their `_FILE` variable, at their `path`, read-only, with the declared mode
//! ([`secret_files`]).
//!
//! The kit makes its own secrets, with names and values unique to the run, through the
//! [`SecretStore`] the harness declares ([`Harness::with_secrets`]): a secrets directory for the
//! local backends ([`DirSecretStore`]), Secret objects for Kubernetes. It removes them after the
//! instances that use them are stopped.

use std::collections::BTreeMap;
use std::path::PathBuf;

use async_trait::async_trait;
use mcp_types::{EnvValue, InstanceId, LogOptions, McpServer, SecretFile, StartOptions};

use super::{Capability, CheckResult, Failure, Harness, Run, Support, op, texts, with_run};
use crate::fixture::{FixtureScript, env_line, mode_line, write_line};

fn fail(check: &'static str, message: String) -> Failure {
    Failure { check, message }
}

/// Where the kit puts the secrets its specs reference, so the backend under test can resolve
/// them: in the backend's secrets directory ([`DirSecretStore`]), as Secret objects in its
/// namespace, or in whatever store the backend reads.
#[async_trait]
pub trait SecretStore: Send + Sync {
    /// Creates (or replaces) secret `name` holding `data` (key -> value).
    ///
    /// # Errors
    /// Why the secret could not be stored (never containing a value).
    async fn put(&self, name: &str, data: &BTreeMap<String, String>) -> Result<(), String>;

    /// Removes secret `name`; removing one that does not exist is not an error.
    ///
    /// # Errors
    /// Why the secret could not be removed.
    async fn remove(&self, name: &str) -> Result<(), String>;
}

/// A secrets directory laid out as the local backends read it (`<dir>/<name>/<key>`, see
/// [`DirSecretResolver`](crate::secrets::DirSecretResolver)): directories 0700, files 0600.
#[derive(Debug, Clone)]
pub struct DirSecretStore {
    dir: PathBuf,
}

impl DirSecretStore {
    /// A store writing into `dir` (created when missing), which must be the backend's
    /// configured secrets directory.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
}

#[async_trait]
impl SecretStore for DirSecretStore {
    async fn put(&self, name: &str, data: &BTreeMap<String, String>) -> Result<(), String> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let dir = self.dir.join(name);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
        for (key, value) in data {
            let path = dir.join(key);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("creating {}: {e}", path.display()))?;
            std::io::Write::write_all(&mut file, value.as_bytes())
                .map_err(|e| format!("writing {}: {e}", path.display()))?;
        }
        Ok(())
    }

    async fn remove(&self, name: &str) -> Result<(), String> {
        let dir = self.dir.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", dir.display())),
        }
    }
}

/// Where a backend puts a secret file, which decides what [`secret_files`] demands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SecretFilePath {
    /// At the spec's `path`, read-only, and the `env` variable names that path (Docker,
    /// Kubernetes, the in-memory backend). The kit reads the file at the path, checks the
    /// variable's value and that writing to the file fails.
    #[default]
    Honoured,
    /// Somewhere the backend chooses, named only by the `env` variable (the process backend,
    /// which has no mount namespace). The kit reads the file through the variable only.
    EnvOnly,
}

/// A secret with a name and values unique to the run, removed by [`KitSecret::remove`].
struct KitSecret {
    name: String,
    data: BTreeMap<String, String>,
}

impl KitSecret {
    /// Stores a secret named after the run with one value per key in `keys`.
    async fn put(
        h: &Harness<'_>,
        run: &Run<'_, '_>,
        check: &'static str,
        keys: &[&str],
    ) -> Result<Self, Failure> {
        let Some(store) = h.secrets else {
            return Err(fail(
                check,
                "secrets are declared honoured but the harness has no secret store: give the \
                 kit one with Harness::with_secrets"
                    .into(),
            ));
        };
        let name = run.name("secret");
        let data: BTreeMap<String, String> = keys
            .iter()
            .map(|k| ((*k).to_owned(), format!("kit {k}={}", run.tag)))
            .collect();
        store
            .put(&name, &data)
            .await
            .map_err(|e| fail(check, format!("storing secret {name}: {e}")))?;
        Ok(Self { name, data })
    }

    fn value(&self, key: &str) -> &str {
        self.data.get(key).map_or("", String::as_str)
    }

    /// Stops the run's instances (they use the secret), then removes the secret.
    async fn remove(self, h: &Harness<'_>, run: &Run<'_, '_>, check: &'static str) -> CheckResult {
        run.cleanup_now().await;
        if let Some(store) = h.secrets {
            store
                .remove(&self.name)
                .await
                .map_err(|e| fail(check, format!("removing secret {}: {e}", self.name)))?;
        }
        Ok(())
    }
}

/// Starts `spec` with this run's labels and `env` in the start options.
async fn start_with_env(
    run: &Run<'_, '_>,
    spec: &McpServer,
    env: BTreeMap<String, EnvValue>,
) -> Result<InstanceId, Failure> {
    let options = StartOptions {
        env,
        ..run.options(&[])
    };
    let id = op(
        run.check,
        &format!("start {}", spec.name),
        run.h.orchestrator.start_server(spec, &options).await,
    )?;
    run.adopt(id.clone());
    Ok(id)
}

/// The lines a server printed once it printed `n` of them.
async fn printed(run: &Run<'_, '_>, id: &InstanceId, n: usize) -> Result<Vec<String>, Failure> {
    let lines = run.wait_lines(id, n, &LogOptions::default()).await?;
    Ok(texts(&lines).into_iter().map(str::to_owned).collect())
}

/// A plain and a `secretRef` environment value reach the server with their values, and the
/// start options' env adds variables and overrides the spec's. The `secretRef` part runs when
/// [`Capability::SecretEnv`] is declared [`Support::Honoured`] (it needs the harness's
/// [`SecretStore`]); a refusal is checked by [`super::spec_capabilities`].
pub async fn secret_env_propagation(h: &Harness<'_>) -> CheckResult {
    const C: &str = "secret_env_propagation";
    let with_secret = h.support(Capability::SecretEnv) == Some(Support::Honoured);
    with_run(h, C, |h, run| async move {
        let secret = if with_secret {
            Some(KitSecret::put(h, &run, C, &["token"]).await?)
        } else {
            None
        };
        let result = async {
            let mut script = FixtureScript::new()
                .print_env("MCP_KIT_PLAIN")
                .print_env("MCP_KIT_OVERRIDDEN")
                .print_env("MCP_KIT_ADDED");
            if secret.is_some() {
                script = script.print_env("MCP_KIT_SECRET");
            }
            let mut spec = h.servers.server(&run.name("secret-env"), &script);
            spec.env.insert(
                "MCP_KIT_PLAIN".into(),
                EnvValue::plain("plain value=with spaces"),
            );
            spec.env.insert(
                "MCP_KIT_OVERRIDDEN".into(),
                EnvValue::plain("from the spec"),
            );
            if let Some(secret) = &secret {
                spec.env.insert(
                    "MCP_KIT_SECRET".into(),
                    EnvValue::secret(&secret.name, "token"),
                );
            }
            let options = BTreeMap::from([
                (
                    "MCP_KIT_OVERRIDDEN".to_owned(),
                    EnvValue::plain("from the start options"),
                ),
                (
                    "MCP_KIT_ADDED".to_owned(),
                    EnvValue::plain("added at start"),
                ),
            ]);
            let id = start_with_env(&run, &spec, options).await?;
            let mut want = vec![
                env_line("MCP_KIT_PLAIN", Some("plain value=with spaces")),
                env_line("MCP_KIT_OVERRIDDEN", Some("from the start options")),
                env_line("MCP_KIT_ADDED", Some("added at start")),
            ];
            if let Some(secret) = &secret {
                want.push(env_line("MCP_KIT_SECRET", Some(secret.value("token"))));
            }
            let got = printed(&run, &id, want.len()).await?;
            ensure!(
                C,
                got == want,
                "env with a secretRef and start options: expected {want:?}, got {got:?}"
            );
            Ok(())
        }
        .await;
        if let Some(secret) = secret {
            secret.remove(h, &run, C).await?;
        }
        result
    })
    .await
}

/// Where the kit's two secret files go, and the variables naming them.
const TOKEN_PATH: &str = "/run/mcp-kit/token";
const TOKEN_VAR: &str = "MCP_KIT_TOKEN_FILE";
const OTHER_PATH: &str = "/etc/mcp-kit/other.key";
const OTHER_VAR: &str = "MCP_KIT_OTHER_FILE";

/// With [`Capability::SecretFiles`] honoured, two secret files (in different directories) hold
/// their keys' values, read through their `_FILE` variables; where the backend honours `path`
/// ([`SecretFilePath::Honoured`]) the variable names the path, the file is there and a write to
/// it fails; where the harness declares a mode ([`Harness::with_secret_file_mode`]) the server
/// sees exactly that mode. The instance as listed and its status never show a value. A refusal
/// is checked by [`super::spec_capabilities`].
pub async fn secret_files(h: &Harness<'_>) -> CheckResult {
    const C: &str = "secret_files";
    if h.support(Capability::SecretFiles) != Some(Support::Honoured) {
        return Ok(());
    }
    with_run(h, C, |h, run| async move {
        let secret = KitSecret::put(h, &run, C, &["token", "other"]).await?;
        let result = read_secret_files(h, &run, &secret).await;
        secret.remove(h, &run, C).await?;
        result
    })
    .await
}

async fn read_secret_files(h: &Harness<'_>, run: &Run<'_, '_>, secret: &KitSecret) -> CheckResult {
    const C: &str = "secret_files";
    let at_path = h.secret_file_path == SecretFilePath::Honoured;
    let mut script = FixtureScript::new()
        .print_env_file(TOKEN_VAR)
        .print_env_file(OTHER_VAR);
    let (token, other) = (secret.value("token"), secret.value("other"));
    let mut want = vec![token.to_owned(), other.to_owned()];
    if let Some(mode) = h.secret_file_mode {
        script = script.print_env_file_mode(TOKEN_VAR);
        want.push(mode_line(TOKEN_VAR, mode));
    }
    if at_path {
        script = script
            .print_env(TOKEN_VAR)
            .print_file(OTHER_PATH)
            .write_file(TOKEN_PATH, "overwritten")
            .print_file(TOKEN_PATH);
        want.extend([
            env_line(TOKEN_VAR, Some(TOKEN_PATH)),
            other.to_owned(),
            write_line(TOKEN_PATH, Some("...")),
            token.to_owned(),
        ]);
    }
    let mut spec = h.servers.server(&run.name("secret-files"), &script);
    spec.secret_files = vec![
        SecretFile::new(TOKEN_PATH, &secret.name, "token").with_env(TOKEN_VAR),
        SecretFile::new(OTHER_PATH, &secret.name, "other").with_env(OTHER_VAR),
    ];
    let id = run.start_spec(&spec, &[]).await?;
    let got = printed(run, &id, want.len()).await?;
    // The write's error text is the runtime's (read-only file system, permission denied).
    let failed_write = write_line(TOKEN_PATH, Some(""));
    let matches = got.len() == want.len()
        && got.iter().zip(&want).all(|(g, w)| {
            if w.starts_with(&failed_write) {
                g.starts_with(&failed_write)
            } else {
                g == w
            }
        });
    ensure!(
        C,
        matches,
        "secret files: expected {want:?} (a failed write where \"...\" stands), got {got:?}"
    );
    let status = op(C, "status", h.orchestrator.get_status(&id).await)?;
    let listed = op(
        C,
        "list",
        h.orchestrator.list_instances(&run.run_filters()).await,
    )?;
    let shown = format!("{status:?} {:?}", listed.items);
    ensure!(
        C,
        !shown.contains(token) && !shown.contains(other),
        "a secret file's value appears in the status or listing of {id}: {shown}"
    );
    Ok(())
}
