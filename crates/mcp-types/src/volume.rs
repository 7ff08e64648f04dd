//! What the volume listing and the orphan collection report: [`PersistentVolume`] and
//! [`GcReport`].

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::instance::InstanceId;
use crate::quantity::Quantity;

/// A persistent volume of a server (see [`crate::VolumeSpec::persistent`]), as listed by a
/// backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PersistentVolume {
    /// The volume's name on the backend ([`crate::names::persistent_volume_name`]).
    pub name: String,
    /// The server it belongs to.
    pub server: String,
    /// The volume's name in the spec.
    pub volume: String,
    /// The size asked for when it was created, when the backend records it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<Quantity>,
    /// The instances that mount it now, ordered by id; a volume is removable only when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub in_use_by: Vec<InstanceId>,
    /// When it was created, when the backend knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<jiff::Timestamp>,
    /// Backend specifics (`mountpoint`, `driver`, `storageClass`, `phase`, `path`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, String>,
}

/// What kind of object an orphan is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum OrphanKind {
    /// A container, pod or process instance.
    Instance,
    /// A network (Docker).
    Network,
    /// A per-instance volume (Docker volume, Kubernetes PersistentVolumeClaim).
    Volume,
    /// A Kubernetes Service.
    Service,
    /// A Kubernetes NetworkPolicy.
    NetworkPolicy,
    /// A Kubernetes Secret.
    Secret,
    /// An egress proxy run for an instance (a Docker companion container).
    EgressProxy,
}

impl OrphanKind {
    /// Lowercase name for output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Instance => "instance",
            Self::Network => "network",
            Self::Volume => "volume",
            Self::Service => "service",
            Self::NetworkPolicy => "networkpolicy",
            Self::Secret => "secret",
            Self::EgressProxy => "egressproxy",
        }
    }
}

impl fmt::Display for OrphanKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One managed object without a live owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Orphan {
    /// What it is.
    pub kind: OrphanKind,
    /// Its name on the backend.
    pub name: String,
    /// Why it is an orphan (`its pod mcp-x-abc is gone`, `its network is missing`).
    pub reason: String,
    /// Whether this collection removed it (always `false` on a dry run).
    pub removed: bool,
}

/// What an orphan collection found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GcReport {
    /// Whether it only reported.
    pub dry_run: bool,
    /// Every orphan found, ordered by kind and name.
    pub orphans: Vec<Orphan>,
}

impl GcReport {
    /// An empty report.
    pub fn new(dry_run: bool) -> Self {
        Self {
            dry_run,
            orphans: Vec::new(),
        }
    }

    /// Records an orphan; `removed` is forced to `false` on a dry run.
    pub fn push(
        &mut self,
        kind: OrphanKind,
        name: impl Into<String>,
        reason: impl Into<String>,
        removed: bool,
    ) {
        self.orphans.push(Orphan {
            kind,
            name: name.into(),
            reason: reason.into(),
            removed: removed && !self.dry_run,
        });
    }

    /// Sorts the orphans by kind and name (backends call it before returning).
    pub fn sort(&mut self) {
        self.orphans
            .sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    }
}
