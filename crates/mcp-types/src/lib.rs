//! Plain data types and validation for orchestrating MCP servers: server specs, instances,
//! statuses, logs, filters, pages and Kubernetes-facing configuration. No IO, no runtime.

pub mod egress;
pub mod events;
pub mod exit;
pub mod instance;
pub mod k8s;
pub mod labels;
pub mod list;
pub mod logs;
pub mod names;
pub mod net;
pub mod quantity;
pub mod secret;
pub mod selector;
pub mod spec;
pub mod validation;
pub mod volume;

pub use egress::{Egress, EgressPosture, EgressRule, METADATA_CIDRS};
pub use events::{EventKind, InstanceEvent};
pub use exit::{AfterExit, RunExit, exit_message, exit_reason};
pub use instance::{Instance, InstanceId, InstanceStatus, Phase, reasons};
pub use k8s::{K8sConfig, K8sPodMetadata, K8sSecurityContext};
pub use list::{InstanceFilters, Page};
pub use logs::{LogFilter, LogLine, LogOptions, LogStream, StreamSelector, TailBuffer};
pub use names::{new_instance_name, persistent_volume_name};
pub use quantity::{Quantity, QuantityError};
pub use secret::{EnvValue, SecretFile, SecretKeyRef, SecretString};
pub use selector::{LabelSelector, Requirement};
pub use spec::{
    AccessMode, DEFAULT_HTTP_PATH, GpuSpec, K8sResourceRequirements, MAX_METADATA_TOTAL_BYTES,
    MIN_MEMORY_LIMIT, MIN_MEMORY_LIMIT_BYTES, McpServer, ResourceList, ResourceRequirements,
    RestartPolicy, SizePreset, StartOptions, Transport, VolumeSpec, http_url,
};
pub use validation::{FieldError, ValidationErrors};
pub use volume::{GcReport, Orphan, OrphanKind, PersistentVolume};

/// Re-exported so callers can name timestamps without depending on `jiff` themselves.
pub use jiff::Timestamp;
