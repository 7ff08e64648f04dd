//! One PersistentVolumeClaim per spec volume: per-instance claims named after the instance,
//! persistent ones named after the server ([`mcp_types::persistent_volume_name`]).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mcp_types::labels::{CREATED_AT, persistent_volume_labels};
use mcp_types::{AccessMode, InstanceId, McpServer, ValidationErrors, VolumeSpec};

use crate::BuildOptions;
use crate::meta::Checked;
use crate::names::pvc_name;

/// Builds the claims for `spec.volumes`: the persistent ones (named
/// [`mcp_types::persistent_volume_name`], shared by the server's instances) then the
/// per-instance ones in spec order, named `<instance>-<volume>` (see
/// [`crate::names::pvc_name`]); the Pod from [`crate::build_pod`] mounts them.
///
/// # Errors
/// As [`crate::build_pod`].
pub fn build_pvcs(
    spec: &McpServer,
    instance: &InstanceId,
    opts: &BuildOptions,
) -> Result<Vec<PersistentVolumeClaim>, ValidationErrors> {
    Checked::new(spec, instance, opts).map(|c| {
        let mut all = persistent_pvcs(c);
        all.extend(pvcs(c));
        all
    })
}

pub(crate) fn pvcs(c: Checked<'_>) -> Vec<PersistentVolumeClaim> {
    c.spec
        .volumes
        .iter()
        .filter(|v| !v.persistent)
        .map(|v| claim(v, c.object_meta(pvc_name(c.instance, &v.name))))
        .collect()
}

/// The claims of the spec's persistent volumes: labelled with the server and the volume
/// ([`mcp_types::labels::persistent_volume_labels`]) and no instance, so no instance's clean-up
/// selects them.
pub(crate) fn persistent_pvcs(c: Checked<'_>) -> Vec<PersistentVolumeClaim> {
    c.spec
        .persistent_volumes()
        .map(|(name, v)| {
            let meta = ObjectMeta {
                name: Some(name),
                namespace: Some(c.opts.namespace.clone()),
                labels: Some(persistent_volume_labels(&c.spec.name, &v.name)),
                annotations: Some(BTreeMap::from([(
                    CREATED_AT.to_owned(),
                    c.opts.created_at.to_string(),
                )])),
                ..ObjectMeta::default()
            };
            claim(v, meta)
        })
        .collect()
}

fn claim(v: &VolumeSpec, metadata: ObjectMeta) -> PersistentVolumeClaim {
    {
        {
            let modes = if v.access_modes.is_empty() {
                &[AccessMode::ReadWriteOnce][..]
            } else {
                &v.access_modes[..]
            };
            PersistentVolumeClaim {
                metadata,
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
        }
    }
}
