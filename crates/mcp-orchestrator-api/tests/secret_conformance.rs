//! The secret checks (`secret_env_propagation`, `secret_files`) pass on the in-memory backend
//! with a secrets directory, and deliberately broken backends make each of them fail.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use mcp_orchestrator_api::conformance::{
    self, Capability, CommandServers, DirSecretStore, Harness, HttpConnect, SecretFilePath, Support,
};
use mcp_orchestrator_api::secrets::{DirSecretResolver, SecretResolver};
use mcp_orchestrator_api::{
    InMemoryOrchestrator, LogLines, McpChannel, McpOrchestrator, OrchestratorError, Result,
};
use mcp_types::{
    EnvValue, Instance, InstanceFilters, InstanceId, InstanceStatus, LogOptions, McpServer, Page,
    StartOptions,
};

/// A private secrets directory, removed when dropped.
struct SecretsDir {
    dir: PathBuf,
    store: DirSecretStore,
}

impl SecretsDir {
    fn new() -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mcp-kit-secrets-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self {
            store: DirSecretStore::new(&dir),
            dir,
        }
    }

    fn resolver(&self) -> Arc<DirSecretResolver> {
        Arc::new(DirSecretResolver::new(&self.dir))
    }

    /// The secrets the kit left behind (it removes every one it made).
    fn left(&self) -> Vec<String> {
        std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for SecretsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn servers() -> CommandServers {
    CommandServers {
        program: "mcp-test-server".into(),
    }
}

fn harness<'a>(
    o: &'a dyn McpOrchestrator,
    s: &'a CommandServers,
    secrets: &'a SecretsDir,
) -> Harness<'a> {
    Harness::new(o, s)
        .with_timeout(Duration::from_secs(5))
        .with_http_connect(HttpConnect::Unsupported)
        .with_secrets(&secrets.store)
        .with_secret_file_mode(0o400)
}

async fn check(h: &Harness<'_>, name: &str) -> std::result::Result<(), String> {
    conformance::run_check(h, name).await.map_err(|f| {
        assert_eq!(f.check, name);
        f.message
    })
}

#[tokio::test]
async fn in_memory_passes_the_secret_checks_and_leaves_no_secret() {
    let secrets = SecretsDir::new();
    let o = InMemoryOrchestrator::new().with_secrets(secrets.resolver());
    let s = servers();
    let h = harness(&o, &s, &secrets);
    for name in [
        "secret_env_propagation",
        "secret_files",
        "spec_capabilities",
    ] {
        check(&h, name).await.unwrap();
    }
    assert!(secrets.left().is_empty(), "{:?}", secrets.left());
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
}

#[tokio::test]
async fn without_secrets_the_env_check_still_holds_plain_values_and_overrides() {
    let o = InMemoryOrchestrator::new();
    let s = servers();
    let h = Harness::new(&o, &s).with_timeout(Duration::from_secs(5));
    check(&h, "secret_env_propagation").await.unwrap();
    // Not declared: not checked (a backend without secret files is not held to them).
    check(&h, "secret_files").await.unwrap();
}

#[tokio::test]
async fn honoured_secrets_without_a_store_fail() {
    let o = InMemoryOrchestrator::new();
    let s = servers();
    let h = Harness::new(&o, &s)
        .with_timeout(Duration::from_secs(5))
        .with_capability(Capability::SecretFiles, Support::Honoured)
        .with_capability(Capability::SecretEnv, Support::Honoured);
    for name in ["secret_env_propagation", "secret_files"] {
        let msg = check(&h, name).await.unwrap_err();
        assert!(msg.contains("no secret store"), "{msg}");
    }
}

#[tokio::test]
async fn kit_holds_the_declared_mode() {
    let secrets = SecretsDir::new();
    let o = InMemoryOrchestrator::new().with_secrets(secrets.resolver());
    let s = servers();
    let h = harness(&o, &s, &secrets).with_secret_file_mode(0o440);
    let msg = check(&h, "secret_files").await.unwrap_err();
    assert!(msg.contains("MCP_KIT_TOKEN_FILE mode 0400"), "{msg}");
}

/// Wraps the in-memory backend, changing the spec (or the options) before the start and
/// optionally what the status shows.
struct Broken {
    inner: InMemoryOrchestrator,
    change: fn(&mut McpServer, &mut StartOptions),
    /// Shows the values of the instance's secret files in its status message.
    leak: Option<DirSecretResolver>,
    leaked: Mutex<HashMap<InstanceId, String>>,
}

impl std::fmt::Debug for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Broken")
    }
}

impl Broken {
    fn new(secrets: &SecretsDir, change: fn(&mut McpServer, &mut StartOptions)) -> Self {
        Self {
            inner: InMemoryOrchestrator::new().with_secrets(secrets.resolver()),
            change,
            leak: None,
            leaked: Mutex::default(),
        }
    }
}

#[async_trait]
impl McpOrchestrator for Broken {
    fn backend_name(&self) -> &'static str {
        "broken"
    }
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let (mut spec, mut o) = (spec.clone(), o.clone());
        (self.change)(&mut spec, &mut o);
        let id = self.inner.start_server(&spec, &o).await?;
        if let Some(resolver) = &self.leak {
            let values: Vec<String> = spec
                .secret_files
                .iter()
                .filter_map(|f| resolver.resolve(&f.secret_ref).ok())
                .map(|v| v.expose().to_owned())
                .collect();
            self.leaked
                .lock()
                .unwrap()
                .insert(id.clone(), values.join(","));
        }
        Ok(id)
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        self.inner.stop_server(id, g).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        let mut status = self.inner.get_status(id).await?;
        if let Some(leaked) = self.leaked.lock().unwrap().get(id) {
            status.message = Some(format!("mounted {leaked}"));
        }
        Ok(status)
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.inner.get_logs(id, o).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.inner.list_instances(f).await
    }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        self.inner.connect(id).await
    }
}

async fn fails(secrets: &SecretsDir, o: &Broken, name: &str) -> String {
    let s = servers();
    let h = harness(o, &s, secrets);
    let msg = check(&h, name)
        .await
        .expect_err("the check passed against a broken backend");
    assert!(secrets.left().is_empty(), "{:?}", secrets.left());
    msg
}

#[tokio::test]
async fn kit_catches_dropped_secret_env() {
    let secrets = SecretsDir::new();
    let o = Broken::new(&secrets, |spec, _| {
        spec.env.retain(|_, v| matches!(v, EnvValue::Plain(_)));
    });
    let msg = fails(&secrets, &o, "secret_env_propagation").await;
    assert!(msg.contains("MCP_KIT_SECRET unset"), "{msg}");
}

#[tokio::test]
async fn kit_catches_start_options_that_do_not_override() {
    let secrets = SecretsDir::new();
    let o = Broken::new(&secrets, |spec, options| {
        // The spec's values win over the options' (the merge done the wrong way round).
        let spec_env = spec.env.clone();
        spec.env.extend(std::mem::take(&mut options.env));
        spec.env.extend(spec_env);
    });
    let msg = fails(&secrets, &o, "secret_env_propagation").await;
    assert!(msg.contains("MCP_KIT_OVERRIDDEN=from the spec"), "{msg}");
}

#[tokio::test]
async fn kit_catches_ignored_secret_files() {
    let secrets = SecretsDir::new();
    let o = Broken::new(&secrets, |spec, _| spec.secret_files.clear());
    let msg = fails(&secrets, &o, "secret_files").await;
    assert!(msg.contains("$MCP_KIT_TOKEN_FILE unreadable"), "{msg}");
}

#[tokio::test]
async fn kit_catches_secret_files_away_from_their_path() {
    let secrets = SecretsDir::new();
    let o = Broken::new(&secrets, |spec, _| {
        for (i, f) in spec.secret_files.iter_mut().enumerate() {
            f.path = format!("/var/lib/elsewhere/{i}");
        }
    });
    let msg = fails(&secrets, &o, "secret_files").await;
    assert!(
        msg.contains("MCP_KIT_TOKEN_FILE=/var/lib/elsewhere/0"),
        "{msg}"
    );
    // The same backend passes for a harness that says only the variable is honoured.
    let s = servers();
    let h = harness(&o, &s, &secrets).with_secret_file_path(SecretFilePath::EnvOnly);
    check(&h, "secret_files").await.unwrap();
}

#[tokio::test]
async fn kit_catches_a_secret_value_in_the_status() {
    let secrets = SecretsDir::new();
    let mut o = Broken::new(&secrets, |_, _| {});
    o.leak = Some(DirSecretResolver::new(&secrets.dir));
    let msg = fails(&secrets, &o, "secret_files").await;
    assert!(msg.contains("appears in the status"), "{msg}");
}

#[tokio::test]
async fn kit_holds_refused_secrets_to_not_supported() {
    let secrets = SecretsDir::new();
    let refuses = Broken::new(&secrets, |_, _| {});
    let s = servers();
    // Declared refused, but the backend starts it (or answers another error): caught.
    let h = harness(&refuses, &s, &secrets)
        .with_capability(Capability::SecretFiles, Support::Refused)
        .with_capability(Capability::SecretEnv, Support::Refused);
    let msg = check(&h, "spec_capabilities").await.unwrap_err();
    assert!(msg.contains("expected NotSupported"), "{msg}");
    let o = Refuses(InMemoryOrchestrator::new());
    let h = Harness::new(&o, &s)
        .with_timeout(Duration::from_secs(5))
        .with_capability(Capability::SecretFiles, Support::Refused)
        .with_capability(Capability::SecretEnv, Support::Refused);
    check(&h, "spec_capabilities").await.unwrap();
    check(&h, "secret_env_propagation").await.unwrap();
}

/// Refuses secret references and secret files with `NotSupported`, as it may declare.
#[derive(Debug)]
struct Refuses(InMemoryOrchestrator);

#[async_trait]
impl McpOrchestrator for Refuses {
    fn backend_name(&self) -> &'static str {
        "refuses-secrets"
    }
    async fn start_server(&self, spec: &McpServer, o: &StartOptions) -> Result<InstanceId> {
        let secret_env = spec
            .env
            .values()
            .any(|v| matches!(v, EnvValue::Secret { .. }));
        if secret_env || !spec.secret_files.is_empty() {
            return Err(OrchestratorError::NotSupported {
                backend: "refuses-secrets",
                what: "secrets".into(),
            });
        }
        self.0.start_server(spec, o).await
    }
    async fn stop_server(&self, id: &InstanceId, g: Duration) -> Result<()> {
        self.0.stop_server(id, g).await
    }
    async fn get_status(&self, id: &InstanceId) -> Result<InstanceStatus> {
        self.0.get_status(id).await
    }
    async fn get_logs(&self, id: &InstanceId, o: &LogOptions) -> Result<LogLines> {
        self.0.get_logs(id, o).await
    }
    async fn list_instances(&self, f: &InstanceFilters) -> Result<Page<Instance>> {
        self.0.list_instances(f).await
    }
    async fn connect(&self, id: &InstanceId) -> Result<McpChannel> {
        self.0.connect(id).await
    }
}

#[tokio::test]
async fn in_memory_refuses_unresolvable_secrets_naming_the_field() {
    let secrets = SecretsDir::new();
    let o = InMemoryOrchestrator::new().with_secrets(secrets.resolver());
    let mut spec = McpServer::command("missing", "mcp-test-server", ["fixture"]);
    spec.secret_files = vec![mcp_types::SecretFile::new("/run/t", "absent", "token")];
    match o.start_server(&spec, &StartOptions::default()).await {
        Err(OrchestratorError::InvalidSpec(errors)) => {
            assert!(errors.has_path("secretFiles[0].secretRef"), "{errors}");
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    let mut spec = McpServer::command("missing", "mcp-test-server", ["fixture"]);
    spec.env = BTreeMap::from([("T".to_owned(), EnvValue::secret("absent", "token"))]);
    match o.start_server(&spec, &StartOptions::default()).await {
        Err(OrchestratorError::InvalidSpec(errors)) => {
            assert!(errors.has_path("env.T"), "{errors}");
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    let left = o.list_instances(&InstanceFilters::default()).await.unwrap();
    assert!(left.items.is_empty(), "{:?}", left.items);
}
