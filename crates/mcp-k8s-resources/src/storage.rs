//! One PersistentVolumeClaim per spec volume.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use mcp_types::{AccessMode, InstanceId, McpServer, ValidationErrors};

use crate::BuildOptions;
use crate::meta::Checked;
use crate::names::pvc_name;

/// Builds the claims for `spec.volumes`, in order, named `<instance>-<volume>` (see
/// [`crate::names::pvc_name`]); the Pod from [`crate::build_pod`] mounts them.
///
/// # Errors
/// As [`crate::build_pod`].
pub fn build_pvcs(
    spec: &McpServer,
    instance: &InstanceId,
    opts: &BuildOptions,
) -> Result<Vec<PersistentVolumeClaim>, ValidationErrors> {
    Checked::new(spec, instance, opts).map(pvcs)
}

pub(crate) fn pvcs(c: Checked<'_>) -> Vec<PersistentVolumeClaim> {
    c.spec
        .volumes
        .iter()
        .map(|v| {
            let modes = if v.access_modes.is_empty() {
                &[AccessMode::ReadWriteOnce][..]
            } else {
                &v.access_modes[..]
            };
            PersistentVolumeClaim {
                metadata: c.object_meta(pvc_name(c.instance, &v.name)),
                spec: Some(PersistentVolumeClaimSpec {
                    access_modes: Some(modes.iter().map(|m| m.as_str().to_owned()).collect()),
                    storage_class_name: v.storage_class.clone(),
                    resources: Some(VolumeResourceRequirements {
                        requests: Some(BTreeMap::from([(
                            "storage".to_owned(),
                            Quantity(v.size.as_str().to_owned()),
                        )])),
                        limits: None,
                    }),
                    ..PersistentVolumeClaimSpec::default()
                }),
                status: None,
            }
        })
        .collect()
}
