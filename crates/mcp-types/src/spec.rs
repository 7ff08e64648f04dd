//! The server spec (`McpServer`) and per-instance start options.

// garde hands custom rules their context by reference, even when it is `()`.
#![allow(clippy::trivially_copy_pass_by_ref)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::egress::Egress;
use crate::k8s::K8sSecurityContext;
use crate::labels::RESERVED_LABEL_PREFIXES;
use crate::names::{check_dns1123_label, check_dns1123_subdomain, check_label_key, check_labels};
use crate::quantity::Quantity;
use crate::secret::{EnvValue, SecretFile};
use crate::validation::{FieldError, ValidationErrors, garde_check};

/// How a client speaks MCP to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// JSON-RPC over the process's stdin/stdout.
    #[default]
    Stdio,
    /// MCP streamable HTTP on `port`.
    StreamableHttp,
    /// The older HTTP + server-sent-events transport on `port`.
    Sse,
}

impl Transport {
    /// Whether the transport listens on a TCP port.
    pub fn is_http(self) -> bool {
        matches!(self, Self::StreamableHttp | Self::Sse)
    }

    /// Reads the wire spelling back ([`Transport::as_str`]); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Stdio, Self::StreamableHttp, Self::Sse]
            .into_iter()
            .find(|t| t.as_str() == s)
    }

    /// The wire spelling (`stdio`, `streamable-http`, `sse`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdio => "stdio",
            Self::StreamableHttp => "streamable-http",
            Self::Sse => "sse",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens when the server's process exits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart whatever the exit code (the Kubernetes pod default).
    #[default]
    Always,
    /// Restart only after a non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::OnFailure => "OnFailure",
            Self::Never => "Never",
        }
    }
}

/// CPU and memory amounts as Kubernetes quantities.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceList {
    /// CPU in cores ("500m", "0.5", "2").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub cpu: Option<Quantity>,
    /// Memory in bytes ("128Mi", "1Gi").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub memory: Option<Quantity>,
}

impl ResourceList {
    /// A list with both amounts set.
    ///
    /// # Panics
    /// Never for the literals used by presets; callers with user input should parse themselves.
    fn of(cpu: &str, memory: &str) -> Self {
        Self {
            cpu: Quantity::parse(cpu).ok(),
            memory: Quantity::parse(memory).ok(),
        }
    }

    /// Fills unset amounts from `other`.
    pub fn or(&self, other: &Self) -> Self {
        Self {
            cpu: self.cpu.clone().or_else(|| other.cpu.clone()),
            memory: self.memory.clone().or_else(|| other.memory.clone()),
        }
    }
}

/// The smallest memory limit accepted, as written in messages: Docker refuses less, and a limit
/// an engine refuses would leave the server restarting forever, so every backend applies it.
pub const MIN_MEMORY_LIMIT: &str = "6Mi";
/// [`MIN_MEMORY_LIMIT`] in bytes.
pub const MIN_MEMORY_LIMIT_BYTES: u64 = 6 * 1024 * 1024;

/// The largest total size (keys and values, in bytes) of a spec's annotations, and separately of
/// its labels: Kubernetes' bound for annotations (`TotalAnnotationSizeLimitB`, 256 KiB), applied
/// on every backend because the others store them too (Docker labels, the process state file).
pub const MAX_METADATA_TOTAL_BYTES: usize = 256 * 1024;

/// Named sizes (the deployment guide's sizing table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SizePreset {
    /// 128Mi / 100m.
    Small,
    /// 512Mi / 500m.
    Medium,
    /// 2Gi / 1000m.
    Large,
}

impl SizePreset {
    /// Requests = limits for the preset.
    pub fn resources(self) -> ResourceList {
        match self {
            Self::Small => ResourceList::of("100m", "128Mi"),
            Self::Medium => ResourceList::of("500m", "512Mi"),
            Self::Large => ResourceList::of("1000m", "2Gi"),
        }
    }
}

/// Resource requests and limits (the seed's `K8sResourceRequirements`), optionally from a preset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceRequirements {
    /// A named size; explicit `requests`/`limits` entries override it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub preset: Option<SizePreset>,
    /// What the scheduler reserves.
    #[serde(default, skip_serializing_if = "is_default")]
    #[garde(dive)]
    pub requests: ResourceList,
    /// The hard ceiling.
    #[serde(default, skip_serializing_if = "is_default")]
    #[garde(dive)]
    pub limits: ResourceList,
}

/// The seed's name for [`ResourceRequirements`].
pub type K8sResourceRequirements = ResourceRequirements;

impl ResourceRequirements {
    /// Default requests when nothing is given: 128Mi memory, 100m CPU.
    pub fn default_requests() -> ResourceList {
        ResourceList::of("100m", "128Mi")
    }

    /// Default limits when nothing is given: 512Mi memory, 500m CPU.
    pub fn default_limits() -> ResourceList {
        ResourceList::of("500m", "512Mi")
    }

    /// Requirements from a preset.
    pub fn preset(p: SizePreset) -> Self {
        Self {
            preset: Some(p),
            ..Self::default()
        }
    }

    /// Explicit values, then the preset, then the defaults: what a backend should apply.
    pub fn effective(&self) -> (ResourceList, ResourceList) {
        let preset = self.preset.map(SizePreset::resources).unwrap_or_default();
        let requests = self.requests.or(&preset).or(&Self::default_requests());
        let limits = self.limits.or(&preset).or(&Self::default_limits());
        // A request above the default limit (and no explicit limit) raises the limit with it.
        let limits = ResourceList {
            cpu: max_q(limits.cpu, requests.cpu.as_ref(), self.limits.cpu.is_none()),
            memory: max_q(
                limits.memory,
                requests.memory.as_ref(),
                self.limits.memory.is_none(),
            ),
        };
        (requests, limits)
    }

    /// Overlays `other`'s explicit values on top of these.
    pub fn merged_with(&self, other: &Self) -> Self {
        Self {
            preset: other.preset.or(self.preset),
            requests: other.requests.or(&self.requests),
            limits: other.limits.or(&self.limits),
        }
    }

    /// The effective requests (explicit, preset or default) must not exceed the effective
    /// limits: the Kubernetes API server refuses such a pod (422 "must be less than or equal to
    /// the limit"), and it applies to every backend. The error is on the field the user wrote.
    fn check(&self, prefix: &str, errors: &mut Vec<FieldError>) {
        if let Some(l) = &self.limits.memory
            && l.to_bytes() < MIN_MEMORY_LIMIT_BYTES
        {
            errors.push(FieldError {
                path: format!("{prefix}limits.memory"),
                message: format!(
                    "{l} is below the smallest memory limit a server can start with \
                     ({MIN_MEMORY_LIMIT}, Docker's minimum, applied on every backend)"
                ),
            });
        }
        let (requests, limits) = self.effective();
        let pairs = [
            (
                "cpu",
                &requests.cpu,
                &limits.cpu,
                self.requests.cpu.is_some(),
            ),
            (
                "memory",
                &requests.memory,
                &limits.memory,
                self.requests.memory.is_some(),
            ),
        ];
        for (what, req, lim, explicit_request) in pairs {
            let (Some(r), Some(l)) = (req, lim) else {
                continue;
            };
            let (rv, lv) = if what == "cpu" {
                (r.to_nanos(), l.to_nanos())
            } else {
                (r.to_bytes(), l.to_bytes())
            };
            // A memory limit below the minimum is already refused above: one error for it.
            if rv <= lv || (what == "memory" && lv < MIN_MEMORY_LIMIT_BYTES) {
                continue;
            }
            if explicit_request {
                errors.push(FieldError {
                    path: format!("{prefix}requests.{what}"),
                    message: format!("request {r} is greater than limit {l}"),
                });
            } else {
                let source = match self.preset {
                    Some(p) => format!("the {} preset's request", preset_name(p)),
                    None => "the default request".to_owned(),
                };
                errors.push(FieldError {
                    path: format!("{prefix}limits.{what}"),
                    message: format!(
                        "limit {l} is less than {source} {r}: set requests.{what} to at most {l}, or raise the limit"
                    ),
                });
            }
        }
    }
}

fn preset_name(p: SizePreset) -> &'static str {
    match p {
        SizePreset::Small => "small",
        SizePreset::Medium => "medium",
        SizePreset::Large => "large",
    }
}

fn max_q(
    limit: Option<Quantity>,
    request: Option<&Quantity>,
    limit_defaulted: bool,
) -> Option<Quantity> {
    match (limit, request) {
        (Some(l), Some(r)) if limit_defaulted && r.to_nanos() > l.to_nanos() => Some(r.clone()),
        (l, _) => l,
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Persistent storage for the server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VolumeSpec {
    /// Volume name, unique within the spec (DNS-1123 label).
    #[garde(custom(|v: &str, (): &()| garde_check(check_dns1123_label(v))))]
    pub name: String,
    /// Requested size ("1Gi").
    #[garde(custom(non_zero_quantity))]
    pub size: Quantity,
    /// Storage class; the cluster default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(|v: &str, (): &()| garde_check(check_dns1123_subdomain(v)))))]
    pub storage_class: Option<String>,
    /// Absolute path inside the server's filesystem.
    #[garde(custom(absolute_path))]
    pub mount_path: String,
    /// Access modes; `ReadWriteOnce` when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[garde(skip)]
    pub access_modes: Vec<AccessMode>,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[garde(skip)]
    pub read_only: bool,
    /// Created once per server (named by [`crate::names::persistent_volume_name`]), mounted by
    /// every instance of the server and kept when they stop; removed only by an explicit
    /// volume removal. `false` (the default): created with the instance and removed with it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[garde(skip)]
    pub persistent: bool,
}

impl VolumeSpec {
    /// A read-write, per-instance volume of `size` mounted at `mount_path`.
    ///
    /// # Errors
    /// When `size` is not a quantity.
    pub fn new(
        name: impl Into<String>,
        size: &str,
        mount_path: impl Into<String>,
    ) -> Result<Self, crate::QuantityError> {
        Ok(Self {
            name: name.into(),
            size: Quantity::parse(size)?,
            storage_class: None,
            mount_path: mount_path.into(),
            access_modes: Vec::new(),
            read_only: false,
            persistent: false,
        })
    }

    /// The same volume, persistent per server.
    #[must_use]
    pub fn persistent(mut self) -> Self {
        self.persistent = true;
        self
    }
}

/// PersistentVolumeClaim access modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AccessMode {
    /// One node, read-write.
    ReadWriteOnce,
    /// Many nodes, read-only.
    ReadOnlyMany,
    /// Many nodes, read-write.
    ReadWriteMany,
    /// One pod, read-write.
    ReadWriteOncePod,
}

impl AccessMode {
    /// The Kubernetes spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ReadWriteOnce => "ReadWriteOnce",
            Self::ReadOnlyMany => "ReadOnlyMany",
            Self::ReadWriteMany => "ReadWriteMany",
            Self::ReadWriteOncePod => "ReadWriteOncePod",
        }
    }
}

/// A GPU request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GpuSpec {
    /// GPU product (`nvidia.com/gpu.product` node label value), e.g. `NVIDIA-A100-SXM4-40GB`.
    #[serde(default, alias = "type", skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(|v: &str, (): &()| garde_check(crate::names::check_label_value(v)))))]
    pub product: Option<String>,
    /// How many GPUs (at least 1).
    #[serde(default = "one")]
    #[garde(range(min = 1, max = 64))]
    pub count: u32,
}

fn one() -> u32 {
    1
}

/// The description of an MCP server to run (the seed's `MCPServer`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpServer {
    /// Server name: a DNS-1123 label, used in instance names and labels.
    #[garde(custom(|v: &str, (): &()| garde_check(check_dns1123_label(v))))]
    pub name: String,
    /// Container image (Docker, Kubernetes). Ignored by the process backend.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(non_blank)))]
    pub image: Option<String>,
    /// Entry point (container entrypoint, or the program for the process backend).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[garde(custom(no_nul_strings))]
    pub command: Vec<String>,
    /// Arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[garde(custom(no_nul_strings))]
    pub args: Vec<String>,
    /// Environment; values are hidden from `Debug`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(env_rule))]
    pub env: BTreeMap<String, EnvValue>,
    /// MCP transport.
    #[serde(default)]
    #[garde(skip)]
    pub transport: Transport,
    /// Listening port for HTTP transports (required with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(range(min = 1)))]
    pub port: Option<u16>,
    /// URL path of the MCP endpoint of an HTTP transport ([`DEFAULT_HTTP_PATH`] when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(http_path_rule)))]
    pub path: Option<String>,
    /// CPU and memory.
    #[serde(default, skip_serializing_if = "is_default")]
    #[garde(dive)]
    pub resources: ResourceRequirements,
    /// Persistent volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[garde(dive)]
    pub volumes: Vec<VolumeSpec>,
    /// Optional GPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(dive)]
    pub gpu: Option<GpuSpec>,
    /// Restart policy.
    #[serde(default)]
    #[garde(skip)]
    pub restart_policy: RestartPolicy,
    /// Extra labels for the instance (`mcpctl.io/` and `app.kubernetes.io/` are reserved).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(user_labels_rule))]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations (Kubernetes) or labels (Docker) that need not be selectable.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(annotations_rule))]
    pub annotations: BTreeMap<String, String>,
    /// User, group and hardening overrides; hardened defaults apply when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(dive)]
    pub security_context: Option<K8sSecurityContext>,
    /// Where the server may connect ([`Egress`]); `None` takes the backend's configured
    /// default ([`McpServer::effective_egress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub egress: Option<Egress>,
    /// Secrets mounted as read-only files ([`SecretFile`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[garde(skip)]
    pub secret_files: Vec<SecretFile>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(custom(absolute_path)))]
    pub working_dir: Option<String>,
}

/// The MCP endpoint's path when a spec names none (the streamable HTTP convention).
pub const DEFAULT_HTTP_PATH: &str = "/mcp";

/// The URL of an MCP endpoint: `http://HOST:PORT/PATH` (IPv6 hosts bracketed).
pub fn http_url(host: &str, port: u16, path: &str) -> String {
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    format!("http://{host}:{port}{path}")
}

impl McpServer {
    /// The MCP endpoint's path for an HTTP transport: [`McpServer::path`] or
    /// [`DEFAULT_HTTP_PATH`].
    pub fn http_path(&self) -> &str {
        self.path.as_deref().unwrap_or(DEFAULT_HTTP_PATH)
    }

    /// A spec with a name and an image, everything else defaulted.
    pub fn new(name: impl Into<String>, image: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: Some(image.into()),
            ..Self::default()
        }
    }

    /// A spec with a name and a command line (for the process backend).
    pub fn command(
        name: impl Into<String>,
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            name: name.into(),
            command: vec![program.into()],
            args: args.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Validates every field and the rules that span fields.
    ///
    /// # Errors
    /// Every problem, each with its field path (`resources.limits.memory`, `volumes[1].mountPath`).
    pub fn validate_spec(&self) -> Result<(), ValidationErrors> {
        let mut errors = match self.validate() {
            Ok(()) => Vec::new(),
            Err(report) => ValidationErrors::from(report).errors().to_vec(),
        };
        if self.transport.is_http() && self.port.is_none() {
            errors.push(FieldError {
                path: "port".into(),
                message: format!("required with transport {}", self.transport),
            });
        }
        if !self.transport.is_http() && self.path.is_some() {
            errors.push(FieldError {
                path: "path".into(),
                message: format!(
                    "only HTTP transports have a path (transport is {})",
                    self.transport
                ),
            });
        }
        if self.command.is_empty() && self.image.is_none() {
            errors.push(FieldError {
                path: "image".into(),
                message: "either image or command must be given".into(),
            });
        }
        self.resources.check("resources.", &mut errors);
        let mut names = BTreeSet::new();
        let mut paths = BTreeSet::new();
        for (i, v) in self.volumes.iter().enumerate() {
            if !names.insert(&v.name) {
                errors.push(FieldError {
                    path: format!("volumes[{i}].name"),
                    message: format!("duplicate volume name {:?}", v.name),
                });
            }
            if !paths.insert(v.mount_path.trim_end_matches('/')) {
                errors.push(FieldError {
                    path: format!("volumes[{i}].mountPath"),
                    message: format!("{:?} is mounted twice", v.mount_path),
                });
            }
            if v.mount_path.trim_end_matches('/') == "/tmp" {
                errors.push(FieldError {
                    path: format!("volumes[{i}].mountPath"),
                    message: "/tmp is reserved for the scratch tmpfs".into(),
                });
            }
        }
        if let Some(sc) = &self.security_context {
            sc.check("securityContext.", &mut errors);
        }
        if let Some(egress) = &self.egress {
            egress.check("egress", &mut errors);
        }
        self.check_secret_files(&mut errors);
        ValidationErrors::from_vec(errors).map_or(Ok(()), Err)
    }

    /// The egress policy this server runs with: its own, or `default` (the backend's configured
    /// default) when it sets none.
    pub fn effective_egress(&self, default: &Egress) -> Egress {
        self.egress.clone().unwrap_or_else(|| default.clone())
    }

    fn check_secret_files(&self, errors: &mut Vec<FieldError>) {
        let mut push = |path: String, message: String| errors.push(FieldError { path, message });
        for (i, f) in self.secret_files.iter().enumerate() {
            let at = format!("secretFiles[{i}]");
            if let Err(e) = absolute_path(&f.path, &()) {
                push(format!("{at}.path"), e.to_string());
            } else if f.path.ends_with('/') {
                push(
                    format!("{at}.path"),
                    format!("{:?} names a directory, not a file", f.path),
                );
            } else if self.secret_files[..i].iter().any(|o| o.path == f.path) {
                push(format!("{at}.path"), format!("{:?} is used twice", f.path));
            } else if f.path == "/tmp" {
                push(
                    format!("{at}.path"),
                    "/tmp is reserved for the scratch tmpfs".into(),
                );
            } else if let Some(v) = self.volumes.iter().find(|v| {
                let m = v.mount_path.trim_end_matches('/');
                f.path == m || f.path.starts_with(&format!("{m}/"))
            }) {
                push(
                    format!("{at}.path"),
                    format!(
                        "{:?} lies in volume {:?} (mounted at {})",
                        f.path, v.name, v.mount_path
                    ),
                );
            }
            if let Err(e) = crate::names::check_dns1123_subdomain(&f.secret_ref.name) {
                push(format!("{at}.secretRef.name"), e);
            }
            if f.secret_ref.key.is_empty() {
                push(format!("{at}.secretRef.key"), "must not be empty".into());
            } else if !is_secret_key(&f.secret_ref.key) {
                push(
                    format!("{at}.secretRef.key"),
                    format!(
                        "{:?} is not a valid key (letters, digits, '-', '_' and '.')",
                        f.secret_ref.key
                    ),
                );
            }
            if let Some(var) = &f.env {
                if let Err(e) = env_rule(&BTreeMap::from([(var.clone(), EnvValue::plain(""))]), &())
                {
                    push(format!("{at}.env"), e.to_string());
                } else if self.env.contains_key(var) {
                    push(format!("{at}.env"), format!("{var} is also set in env"));
                } else if self.secret_files[..i]
                    .iter()
                    .any(|o| o.env.as_ref() == Some(var))
                {
                    push(
                        format!("{at}.env"),
                        format!("{var} is set by two secret files"),
                    );
                }
            }
        }
    }

    /// Whether the spec asks for storage (per-instance or persistent).
    pub fn has_volumes(&self) -> bool {
        !self.volumes.is_empty()
    }

    /// The spec's persistent volumes, each with the name it has on every backend
    /// ([`crate::names::persistent_volume_name`]).
    pub fn persistent_volumes(&self) -> impl Iterator<Item = (String, &VolumeSpec)> {
        self.volumes
            .iter()
            .filter(|v| v.persistent)
            .map(|v| (crate::names::persistent_volume_name(&self.name, &v.name), v))
    }
}

/// Per-instance options given at start on top of the spec.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartOptions {
    /// Environment entries added to or replacing the spec's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(env_rule))]
    pub env: BTreeMap<String, EnvValue>,
    /// Resource overrides (explicit entries win over the spec's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(dive)]
    pub resources: Option<ResourceRequirements>,
    /// Extra labels for this instance only.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[garde(custom(user_labels_rule))]
    pub labels: BTreeMap<String, String>,
}

impl StartOptions {
    /// The spec with these options applied, validated as a whole.
    ///
    /// # Errors
    /// The spec's or the options' validation errors (option errors are prefixed `options.`).
    pub fn apply(&self, spec: &McpServer) -> Result<McpServer, ValidationErrors> {
        if let Err(report) = self.validate() {
            return Err(ValidationErrors::from(report).prefixed("options"));
        }
        let mut merged = spec.clone();
        merged.env.extend(self.env.clone());
        if let Some(r) = &self.resources {
            merged.resources = merged.resources.merged_with(r);
        }
        merged.labels.extend(self.labels.clone());
        merged.validate_spec()?;
        Ok(merged)
    }
}

fn non_blank(v: &str, (): &()) -> garde::Result {
    if v.trim().is_empty() {
        Err(garde::Error::new("must not be blank"))
    } else {
        Ok(())
    }
}

fn no_nul_strings(v: &[String], (): &()) -> garde::Result {
    match v.iter().position(|s| s.contains('\0')) {
        Some(i) => Err(garde::Error::new(format!("entry {i} contains a NUL byte"))),
        None => Ok(()),
    }
}

fn non_zero_quantity(q: &Quantity, (): &()) -> garde::Result {
    if q.to_bytes() == 0 {
        Err(garde::Error::new("must be greater than zero"))
    } else {
        Ok(())
    }
}

fn http_path_rule(p: &str, (): &()) -> garde::Result {
    if !p.starts_with('/') {
        return Err(garde::Error::new(format!("{p:?} must start with /")));
    }
    if p.len() > 256 {
        return Err(garde::Error::new("must be at most 256 characters"));
    }
    // RFC 3986 path characters (pchar and '/'), with percent-escapes; no query or fragment.
    let allowed = |c: char| c.is_ascii_alphanumeric() || "/-._~!$&'()*+,;=:@%".contains(c);
    if let Some(bad) = p.chars().find(|c| !allowed(*c)) {
        return Err(garde::Error::new(format!(
            "{p:?}: {bad:?} is not allowed in a URL path (no spaces, query or fragment)"
        )));
    }
    Ok(())
}

fn absolute_path(p: &str, (): &()) -> garde::Result {
    if !p.starts_with('/') {
        return Err(garde::Error::new(format!("{p:?} must be an absolute path")));
    }
    if p.split('/').any(|seg| seg == "..") {
        return Err(garde::Error::new(format!("{p:?} must not contain '..'")));
    }
    Ok(())
}

fn env_rule(env: &BTreeMap<String, EnvValue>, (): &()) -> garde::Result {
    for (k, v) in env {
        let valid = k
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(garde::Error::new(format!(
                "{k:?} is not a valid variable name (letters, digits and '_', not starting with a digit)"
            )));
        }
        if let EnvValue::Secret { secret_ref } = v {
            check_dns1123_subdomain(&secret_ref.name)
                .map_err(|e| garde::Error::new(format!("{k}: secret name {e}")))?;
            if !is_secret_key(&secret_ref.key) {
                return Err(garde::Error::new(format!(
                    "{k}: secret key {:?} is not a valid key",
                    secret_ref.key
                )));
            }
        }
    }
    Ok(())
}

/// A key of a secret as Kubernetes accepts it in a Secret's `data`: letters, digits, `-`, `_`
/// and `.`, not empty (the secrets directory of the local backends uses it as a file name too).
fn is_secret_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Refuses a map whose keys and values together exceed [`MAX_METADATA_TOTAL_BYTES`].
fn total_size_rule(map: &BTreeMap<String, String>, what: &str) -> garde::Result {
    let total: usize = map.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_METADATA_TOTAL_BYTES {
        return Err(garde::Error::new(format!(
            "{what} total {total} bytes (keys and values); at most {MAX_METADATA_TOTAL_BYTES} \
             (256 KiB, the Kubernetes limit) are allowed"
        )));
    }
    Ok(())
}

fn user_labels_rule(labels: &BTreeMap<String, String>, (): &()) -> garde::Result {
    total_size_rule(labels, "labels")?;
    check_labels(labels).map_err(garde::Error::new)?;
    if let Some(k) = labels
        .keys()
        .find(|k| RESERVED_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
    {
        return Err(garde::Error::new(format!(
            "{k:?} uses a reserved prefix ({})",
            RESERVED_LABEL_PREFIXES.join(", ")
        )));
    }
    Ok(())
}

fn annotations_rule(annotations: &BTreeMap<String, String>, (): &()) -> garde::Result {
    total_size_rule(annotations, "annotations")?;
    annotations
        .keys()
        .try_for_each(|k| check_label_key(k))
        .map_err(garde::Error::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn spec_yaml(extra: &str) -> String {
        format!("name: time\nimage: mcp/time:1\n{extra}")
    }

    fn errors(yaml: &str) -> ValidationErrors {
        let spec: McpServer = serde_saphyr::from_str(yaml).unwrap();
        spec.validate_spec().unwrap_err()
    }

    #[test]
    fn minimal_spec_is_valid() {
        let spec: McpServer = serde_saphyr::from_str(&spec_yaml("")).unwrap();
        spec.validate_spec().unwrap();
        assert_eq!(spec.transport, Transport::Stdio);
        assert_eq!(spec.restart_policy, RestartPolicy::Always);
    }

    #[test]
    fn full_spec_round_trips() {
        let yaml = spec_yaml(
            "command: [node]\nargs: [server.js]\nenv:\n  LOG: debug\n  TOKEN: { secretRef: { name: gh, key: token } }\n\
             transport: streamable-http\nport: 8080\nresources:\n  requests: { cpu: 250m, memory: 256Mi }\n  limits: { cpu: 1, memory: 1Gi }\n\
             volumes:\n  - { name: data, size: 1Gi, storageClass: fast, mountPath: /data }\ngpu: { type: NVIDIA-A100, count: 2 }\n\
             restartPolicy: OnFailure\nlabels: { team: search }\nsecurityContext: { runAsUser: 2000 }\negress: [10.0.0.0/8]\n",
        );
        let spec: McpServer = serde_saphyr::from_str(&yaml).unwrap();
        spec.validate_spec().unwrap();
        assert_eq!(
            spec.gpu.as_ref().unwrap().product.as_deref(),
            Some("NVIDIA-A100")
        );
        let json = serde_json::to_string(&spec).unwrap();
        assert!(
            json.contains("\"restartPolicy\":\"OnFailure\"") && json.contains("\"mountPath\""),
            "{json}"
        );
        let back: McpServer = serde_json::from_str(&json).unwrap();
        assert_eq!(back, spec);
    }

    #[rstest]
    #[case("name: Bad_Name\nimage: x\n", "name", "DNS-1123 label")]
    #[case(&spec_yaml("transport: sse\n"), "port", "required with transport sse")]
    #[case(&spec_yaml("port: 0\n"), "port", "lower than 1")]
    #[case(&spec_yaml("path: /mcp\n"), "path", "only HTTP transports have a path")]
    #[case(&spec_yaml("transport: streamable-http\nport: 80\npath: mcp\n"), "path", "must start with /")]
    #[case(&spec_yaml("transport: streamable-http\nport: 80\npath: \"/a b\"\n"), "path", "is not allowed in a URL path")]
    #[case(&spec_yaml("transport: streamable-http\nport: 80\npath: /mcp?x=1\n"), "path", "is not allowed in a URL path")]
    #[case(&spec_yaml("resources: { limits: { memory: 1Gi }, requests: { memory: 2Gi } }\n"), "resources.requests.memory", "request 2Gi is greater than limit 1Gi")]
    #[case(&spec_yaml("resources: { limits: { memory: 64Mi } }\n"), "resources.limits.memory", "limit 64Mi is less than the default request 128Mi: set requests.memory")]
    #[case(&spec_yaml("resources: { limits: { cpu: 50m } }\n"), "resources.limits.cpu", "limit 50m is less than the default request 100m")]
    #[case(&spec_yaml("resources: { preset: large, limits: { memory: 512Mi } }\n"), "resources.limits.memory", "limit 512Mi is less than the large preset's request 2Gi")]
    #[case(&spec_yaml("volumes: [{ name: d, size: 1Gi, mountPath: data }]\n"), "volumes[0].mountPath", "\"data\" must be an absolute path")]
    #[case(&spec_yaml("volumes: [{ name: d, size: 0, mountPath: /d }]\n"), "volumes[0].size", "must be greater than zero")]
    #[case(&spec_yaml("volumes: [{ name: d, size: 1Gi, mountPath: /d }, { name: d, size: 1Gi, mountPath: /e }]\n"), "volumes[1].name", "duplicate volume name \"d\"")]
    #[case(&spec_yaml("labels: { \"mcpctl.io/server\": x }\n"), "labels", "\"mcpctl.io/server\" uses a reserved prefix")]
    #[case(&spec_yaml("labels: { team: \"-x\" }\n"), "labels", "label value \"-x\": must start and end with a letter or digit")]
    #[case(&spec_yaml("env: { \"1X\": v }\n"), "env", "\"1X\" is not a valid variable name")]
    #[case(&spec_yaml("gpu: { count: 0 }\n"), "gpu.count", "lower than 1")]
    #[case(&spec_yaml("egress: [10.0.0.0/33]\n"), "egress.allow[0].cidr", "prefix length 33 is above 32")]
    #[case(&spec_yaml("securityContext: { runAsUser: 0 }\n"), "securityContext.runAsUser", "0 (root) is not allowed")]
    #[case(&spec_yaml("egress: { allow: [ { host: 10.0.0.1 } ] }\n"), "egress.allow[0].host", "is an IP address")]
    #[case(&spec_yaml("secretFiles: [{ path: token, secretRef: { name: gh, key: t } }]\n"), "secretFiles[0].path", "must be an absolute path")]
    #[case(&spec_yaml("secretFiles: [{ path: /run/s/, secretRef: { name: gh, key: t } }]\n"), "secretFiles[0].path", "names a directory")]
    #[case(&spec_yaml("secretFiles: [{ path: /a, secretRef: { name: gh, key: t } }, { path: /a, secretRef: { name: gh, key: u } }]\n"), "secretFiles[1].path", "is used twice")]
    #[case(&spec_yaml("volumes: [{ name: d, size: 1Gi, mountPath: /data }]\nsecretFiles: [{ path: /data/t, secretRef: { name: gh, key: t } }]\n"), "secretFiles[0].path", "lies in volume \"d\"")]
    #[case(&spec_yaml("secretFiles: [{ path: /a, secretRef: { name: Bad_Name, key: t } }]\n"), "secretFiles[0].secretRef.name", "")]
    #[case(&spec_yaml("secretFiles: [{ path: /a, secretRef: { name: gh, key: \"\" } }]\n"), "secretFiles[0].secretRef.key", "must not be empty")]
    #[case(&spec_yaml("secretFiles: [{ path: /a, secretRef: { name: gh, key: a/b } }]\n"), "secretFiles[0].secretRef.key", "\"a/b\" is not a valid key")]
    #[case(&spec_yaml("secretFiles: [{ path: /tmp, secretRef: { name: gh, key: t } }]\n"), "secretFiles[0].path", "/tmp is reserved")]
    #[case(&spec_yaml("secretFiles: [{ path: /a, secretRef: { name: gh, key: t }, env: 1X }]\n"), "secretFiles[0].env", "not a valid variable name")]
    #[case(&spec_yaml("env: { T_FILE: x }\nsecretFiles: [{ path: /a, secretRef: { name: gh, key: t }, env: T_FILE }]\n"), "secretFiles[0].env", "T_FILE is also set in env")]
    #[case("name: x\n", "image", "either image or command must be given")]
    #[case(&spec_yaml("resources: { limits: { memory: 1Ki } }\n"), "resources.limits.memory", "1Ki is below the smallest memory limit a server can start with (6Mi")]
    #[case(&spec_yaml("resources: { limits: { memory: 6291455 } }\n"), "resources.limits.memory", "(6Mi, Docker's minimum")]
    #[case(&spec_yaml(&format!("annotations: {{ a: {} }}\n", "x".repeat(256 * 1024))), "annotations", "annotations total 262145 bytes (keys and values); at most 262144")]
    #[case(&spec_yaml(&format!("annotations: {{ {} }}\n", (0..5000).map(|i| format!("k{i}: {}", "v".repeat(60))).collect::<Vec<_>>().join(", "))), "annotations", "at most 262144")]
    fn invalid_specs_name_the_field(#[case] yaml: &str, #[case] path: &str, #[case] message: &str) {
        let errs = errors(yaml);
        assert!(
            errs.has_path(path),
            "expected an error at {path}, got: {errs}"
        );
        // Exactly one error: this field, for this reason.
        match errs.errors() {
            [only] => {
                assert_eq!(only.path, path);
                assert!(
                    only.message.contains(message),
                    "{:?} should say {message:?}",
                    only.message
                );
            }
            all => panic!("expected only the error at {path}, got: {all:?}"),
        }
    }

    #[test]
    fn limits_at_the_bounds_are_accepted() {
        let at_min =
            spec_yaml("resources: { limits: { memory: 6Mi }, requests: { memory: 1Mi } }\n");
        serde_saphyr::from_str::<McpServer>(&at_min)
            .unwrap()
            .validate_spec()
            .unwrap();
        let at_max = spec_yaml(&format!(
            "annotations: {{ a: {} }}\n",
            "x".repeat(256 * 1024 - 1)
        ));
        serde_saphyr::from_str::<McpServer>(&at_max)
            .unwrap()
            .validate_spec()
            .unwrap();
        // Labels: many valid entries, together over the bound, refused as a whole; the same
        // bound applies to labels given at start, checked on the merged spec.
        let labels: BTreeMap<String, String> = (0..4000)
            .map(|i| (format!("key-{i:05}"), "v".repeat(63)))
            .collect();
        let spec = McpServer {
            labels: labels.clone(),
            ..McpServer::new("time", "img")
        };
        let errs = spec.validate_spec().unwrap_err();
        assert!(
            errs.has_path("labels") && errs.to_string().contains("at most 262144"),
            "{errs}"
        );
        let half: BTreeMap<String, String> = labels.clone().into_iter().take(2000).collect();
        let rest: BTreeMap<String, String> = labels.into_iter().skip(2000).collect();
        let spec = McpServer {
            labels: half,
            ..McpServer::new("time", "img")
        };
        spec.validate_spec().unwrap();
        let err = StartOptions {
            labels: rest,
            ..StartOptions::default()
        }
        .apply(&spec)
        .unwrap_err();
        assert!(err.has_path("labels"), "{err}");
    }

    #[test]
    fn bad_quantity_fails_at_parse_with_reason() {
        let err = serde_saphyr::from_str::<McpServer>(&spec_yaml(
            "resources: { limits: { memory: 512MB } }\n",
        ))
        .unwrap_err();
        assert!(err.to_string().contains("not a Kubernetes unit"), "{err}");
    }

    #[test]
    fn unknown_fields_rejected() {
        let err = serde_saphyr::from_str::<McpServer>(&spec_yaml("imagePullPolicy: Always\n"))
            .unwrap_err()
            .to_string();
        // The field by name, and where it is (line 3 of the document).
        assert!(
            err.contains("unknown field `imagePullPolicy`") && err.contains("line 3 column 1"),
            "{err}"
        );
    }

    #[test]
    fn effective_resources() {
        let r = ResourceRequirements::default();
        let (req, lim) = r.effective();
        assert_eq!(req.memory.unwrap().to_bytes(), 128 << 20);
        assert_eq!(lim.cpu.unwrap().to_millis(), 500);
        let r = ResourceRequirements::preset(SizePreset::Large);
        let (req, lim) = r.effective();
        assert_eq!(
            (req.memory.unwrap().to_bytes(), lim.cpu.unwrap().to_millis()),
            (2 << 30, 1000)
        );
        // A large request with no explicit limit lifts the default limit.
        let r: ResourceRequirements =
            serde_json::from_str(r#"{"requests":{"memory":"1Gi"}}"#).unwrap();
        assert_eq!(r.effective().1.memory.unwrap().to_bytes(), 1 << 30);
    }

    #[test]
    fn start_options_apply() {
        let spec = McpServer::new("time", "img");
        let opts = StartOptions {
            env: [("A".to_owned(), EnvValue::plain("1"))].into(),
            labels: [("team".to_owned(), "x".to_owned())].into(),
            ..StartOptions::default()
        };
        let merged = opts.apply(&spec).unwrap();
        assert_eq!(merged.env.len(), 1);
        let bad = StartOptions {
            labels: [("mcpctl.io/x".to_owned(), "y".to_owned())].into(),
            ..StartOptions::default()
        };
        let err = bad.apply(&spec).unwrap_err();
        assert!(err.has_path("options.labels"));
        match err.errors() {
            [only] => assert!(
                only.path == "options.labels"
                    && only
                        .message
                        .contains("\"mcpctl.io/x\" uses a reserved prefix"),
                "{only:?}"
            ),
            all => panic!("expected only the error at options.labels, got: {all:?}"),
        }
    }
}
