//! The resource kinds the fake serves and their API coordinates: plural and kind names, group,
//! version, the `details` of their `Status` errors, their selectable fields and name rules.

use serde_json::{Value, json};

use crate::names;

/// A resource type served by the fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceKind {
    /// Core v1 `pods`.
    Pod,
    /// Core v1 `services`.
    Service,
    /// Core v1 `persistentvolumeclaims`.
    PersistentVolumeClaim,
    /// `networking.k8s.io/v1` `networkpolicies`.
    NetworkPolicy,
    /// Core v1 `secrets` (what the kubelet resolves `secretKeyRef`s against).
    Secret,
    /// Core v1 `serviceaccounts` (what `ServiceAccount` admission looks pods' accounts up in).
    ServiceAccount,
    /// Core v1 `resourcequotas` (enforced on pod creation).
    ResourceQuota,
    /// Core v1 `limitranges` (container defaults and bounds applied on pod creation).
    LimitRange,
    /// `apps/v1` `deployments` (stored, defaulted and validated; no controller runs them).
    Deployment,
    /// `rbac.authorization.k8s.io/v1` `roles` (stored and validated; nothing is authorized).
    Role,
    /// `rbac.authorization.k8s.io/v1` `rolebindings`.
    RoleBinding,
}

impl ResourceKind {
    /// Every served kind.
    pub const ALL: [Self; 11] = [
        Self::Pod,
        Self::Service,
        Self::PersistentVolumeClaim,
        Self::NetworkPolicy,
        Self::Secret,
        Self::ServiceAccount,
        Self::ResourceQuota,
        Self::LimitRange,
        Self::Deployment,
        Self::Role,
        Self::RoleBinding,
    ];

    /// The plural resource name used in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Pod => "pods",
            Self::Service => "services",
            Self::PersistentVolumeClaim => "persistentvolumeclaims",
            Self::NetworkPolicy => "networkpolicies",
            Self::Secret => "secrets",
            Self::ServiceAccount => "serviceaccounts",
            Self::ResourceQuota => "resourcequotas",
            Self::LimitRange => "limitranges",
            Self::Deployment => "deployments",
            Self::Role => "roles",
            Self::RoleBinding => "rolebindings",
        }
    }

    /// The object kind (`Pod`, ...).
    pub fn kind(self) -> &'static str {
        match self {
            Self::Pod => "Pod",
            Self::Service => "Service",
            Self::PersistentVolumeClaim => "PersistentVolumeClaim",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::Secret => "Secret",
            Self::ServiceAccount => "ServiceAccount",
            Self::ResourceQuota => "ResourceQuota",
            Self::LimitRange => "LimitRange",
            Self::Deployment => "Deployment",
            Self::Role => "Role",
            Self::RoleBinding => "RoleBinding",
        }
    }

    /// The API group ("" for core).
    pub fn group(self) -> &'static str {
        match self {
            Self::NetworkPolicy => "networking.k8s.io",
            Self::Deployment => "apps",
            Self::Role | Self::RoleBinding => "rbac.authorization.k8s.io",
            _ => "",
        }
    }

    /// The `apiVersion` of objects of this kind.
    pub fn api_version(self) -> &'static str {
        match self.group() {
            "" => "v1",
            "networking.k8s.io" => "networking.k8s.io/v1",
            "apps" => "apps/v1",
            _ => "rbac.authorization.k8s.io/v1",
        }
    }

    /// The kind of list objects (`PodList`, ...).
    pub(crate) fn list_kind(self) -> String {
        format!("{}List", self.kind())
    }

    /// Looks a kind up by API group and plural name.
    pub(crate) fn from_plural(group: &str, plural: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.group() == group && kind.plural() == plural)
    }

    /// Looks a kind up by API group and kind name (for typed handle accessors).
    pub(crate) fn from_kind(group: &str, kind: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.group() == group && k.kind() == kind)
    }

    /// `pods` or `networkpolicies.networking.k8s.io`, as in NotFound messages.
    pub(crate) fn qualified_resource(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// `Pod` or `NetworkPolicy.networking.k8s.io`, as in Invalid messages.
    pub(crate) fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_owned(),
            group => format!("{}.{group}", self.kind()),
        }
    }

    /// `details` of NotFound / AlreadyExists statuses.
    pub(crate) fn status_details(self, name: &str) -> Value {
        let mut details = json!({ "name": name, "kind": self.plural() });
        if !self.group().is_empty() {
            details["group"] = json!(self.group());
        }
        details
    }

    /// `details` of Invalid statuses (carry the kind, not the resource).
    pub(crate) fn invalid_details(self, name: &str) -> Value {
        let mut details = json!({ "name": name, "kind": self.kind() });
        if !self.group().is_empty() {
            details["group"] = json!(self.group());
        }
        details
    }

    /// Field selectors the apiserver supports for this kind.
    pub(crate) fn selectable_fields(self) -> &'static [&'static str] {
        match self {
            Self::Pod => &[
                "metadata.name",
                "metadata.namespace",
                "spec.nodeName",
                "spec.restartPolicy",
                "spec.schedulerName",
                "spec.serviceAccountName",
                "spec.hostNetwork",
                "status.phase",
                "status.podIP",
                "status.nominatedNodeName",
            ],
            Self::Service => &[
                "metadata.name",
                "metadata.namespace",
                "spec.clusterIP",
                "spec.type",
            ],
            Self::Secret => &["metadata.name", "metadata.namespace", "type"],
            Self::PersistentVolumeClaim
            | Self::NetworkPolicy
            | Self::ServiceAccount
            | Self::ResourceQuota
            | Self::LimitRange
            | Self::Deployment
            | Self::Role
            | Self::RoleBinding => &["metadata.name", "metadata.namespace"],
        }
    }

    /// Whether DELETE answers with the deleted object rather than a `Status`: the registries
    /// built with `ReturnDeletedObject: true` (pods, persistentvolumeclaims, serviceaccounts;
    /// services' REST returns the object too).
    pub(crate) fn returns_deleted_object(self) -> bool {
        matches!(
            self,
            Self::Pod | Self::Service | Self::PersistentVolumeClaim | Self::ServiceAccount
        )
    }

    /// Validates the name of an object of this kind.
    pub(crate) fn validate_name(self, name: &str) -> Result<(), String> {
        match self {
            Self::Service => names::dns1035_label(name),
            // RBAC objects only need to be one URL path segment (`minimalNameRequirements`).
            Self::Role | Self::RoleBinding => names::path_segment_name(name),
            _ => names::dns1123_subdomain(name),
        }
    }
}
