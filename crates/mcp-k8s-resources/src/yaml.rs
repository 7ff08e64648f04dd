//! Rendering objects as a multi-document YAML stream (what `kubectl apply -f` reads).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, PersistentVolumeClaim, Pod, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use serde::Serialize;

use crate::{InstanceResources, RbacResources};

/// Any object this crate builds. Serializes as the object itself (with `apiVersion` and `kind`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)] // Pods dominate; boxing would only add noise for callers.
pub enum Manifest {
    /// A Namespace.
    Namespace(Namespace),
    /// A ServiceAccount.
    ServiceAccount(ServiceAccount),
    /// A Role.
    Role(Role),
    /// A RoleBinding.
    RoleBinding(RoleBinding),
    /// A PersistentVolumeClaim.
    PersistentVolumeClaim(PersistentVolumeClaim),
    /// A NetworkPolicy.
    NetworkPolicy(NetworkPolicy),
    /// A Service.
    Service(Service),
    /// A Pod.
    Pod(Pod),
    /// A Deployment (the egress proxy).
    Deployment(Deployment),
}

macro_rules! manifest_from {
    ($($t:ident),*) => {$(
        impl From<$t> for Manifest {
            fn from(v: $t) -> Self {
                Self::$t(v)
            }
        }
    )*};
}

manifest_from!(
    Namespace,
    ServiceAccount,
    Role,
    RoleBinding,
    PersistentVolumeClaim,
    NetworkPolicy,
    Service,
    Pod,
    Deployment
);

impl From<InstanceResources> for Vec<Manifest> {
    fn from(r: InstanceResources) -> Self {
        r.manifests()
    }
}

impl From<RbacResources> for Vec<Manifest> {
    fn from(r: RbacResources) -> Self {
        vec![
            r.service_account.into(),
            r.role.into(),
            r.role_binding.into(),
        ]
    }
}

/// Why objects could not be rendered.
#[derive(Debug, thiserror::Error)]
#[error("cannot render manifests as YAML: {0}")]
pub struct RenderError(#[from] serde_saphyr::SerializeError);

/// Renders `manifests` as one YAML stream, documents separated by `---`.
///
/// # Errors
/// When the serializer fails (not expected for the objects of this crate).
pub fn to_yaml(manifests: &[Manifest]) -> Result<String, RenderError> {
    Ok(serde_saphyr::to_string_multiple(manifests)?)
}
