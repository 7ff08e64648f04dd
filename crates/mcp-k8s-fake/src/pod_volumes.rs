//! The apiserver's validation of a pod's volumes and of a container's volume mounts
//! (`validateVolumes`, `validateVolumeSource`, `validateSecretVolumeSource`,
//! `validateKeyToPath`, `ValidateVolumeMounts` in `pkg/apis/core/validation`), as far as the
//! sources a pod of this project can use go:
//!
//! | field | rule | error |
//! |---|---|---|
//! | `volumes[i].name` | DNS-1123 label, unique | Invalid / Duplicate |
//! | `volumes[i]` | exactly one volume source | Required "must specify a volume type"; Forbidden on the second source |
//! | `persistentVolumeClaim.claimName` | not empty | Required |
//! | `secret.secretName` | not empty | Required |
//! | `secret.defaultMode`, `items[j].mode` | 0..=0777 | Invalid "must be a number between 0 and 0777 (octal), both inclusive" |
//! | `secret.items[j].key`, `.path` | not empty | Required |
//! | `secret.items[j].path` | relative, no `..` element, not starting with `..` | Invalid |
//! | `volumeMounts[j].name` | names a pod volume | NotFound |
//! | `volumeMounts[j].mountPath` | not empty, unique in the container | Required / Invalid "must be unique" |
//! | `volumeMounts.subPath` (the apiserver names the list, not the entry) | relative, no `..` element | Invalid |
//! | `volumeMounts[j].subPathExpr` | not with `subPath` | Invalid "subPathExpr and subPath are mutually exclusive" |

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{KeyToPath, SecretVolumeSource, Volume, VolumeMount};

use crate::names;
use crate::status::FieldError;

const FILE_MODE_ERROR: &str = "must be a number between 0 and 0777 (octal), both inclusive";

/// Volume sources in the order the apiserver checks them (the second one present is the one
/// reported as forbidden).
const SOURCES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "gitRepo",
    "gcePersistentDisk",
    "awsElasticBlockStore",
    "secret",
    "nfs",
    "iscsi",
    "glusterfs",
    "flocker",
    "persistentVolumeClaim",
    "rbd",
    "cinder",
    "cephfs",
    "quobyte",
    "downwardAPI",
    "fc",
    "azureFile",
    "vsphereVolume",
    "photonPersistentDisk",
    "portworxVolume",
    "azureDisk",
    "csi",
    "configMap",
    "scaleIO",
    "projected",
    "storageos",
    "ephemeral",
    "image",
];

/// Validates `spec.volumes`; returns the names declared.
pub(crate) fn validate_volumes(
    volumes: &[Volume],
    errors: &mut Vec<FieldError>,
) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, volume) in volumes.iter().enumerate() {
        let at = format!("spec.volumes[{i}]");
        let field = format!("{at}.name");
        if let Err(message) = names::dns1123_label(&volume.name) {
            errors.push(FieldError::invalid(&field, &volume.name, message));
        }
        if !names.insert(volume.name.clone()) {
            errors.push(FieldError::duplicate(&field, &volume.name));
        }
        validate_source(volume, &at, errors);
    }
    names
}

fn validate_source(volume: &Volume, at: &str, errors: &mut Vec<FieldError>) {
    let json = serde_json::to_value(volume).unwrap_or_default();
    let present: Vec<&str> = SOURCES
        .iter()
        .copied()
        .filter(|s| json.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    match present.as_slice() {
        [] => errors.push(FieldError::required(at, "must specify a volume type")),
        [_, more @ ..] => {
            for source in more {
                errors.push(FieldError::forbidden(
                    format!("{at}.{source}"),
                    "may not specify more than 1 volume type",
                ));
            }
        }
    }
    if let Some(claim) = &volume.persistent_volume_claim
        && claim.claim_name.is_empty()
    {
        errors.push(FieldError::required(
            format!("{at}.persistentVolumeClaim.claimName"),
            "",
        ));
    }
    if let Some(secret) = &volume.secret {
        validate_secret_source(secret, &format!("{at}.secret"), errors);
    }
}

fn validate_secret_source(source: &SecretVolumeSource, at: &str, errors: &mut Vec<FieldError>) {
    if source.secret_name.as_deref().is_none_or(str::is_empty) {
        errors.push(FieldError::required(format!("{at}.secretName"), ""));
    }
    if let Some(mode) = source.default_mode
        && !(0..=0o777).contains(&mode)
    {
        errors.push(FieldError::invalid(
            format!("{at}.defaultMode"),
            mode.to_string(),
            FILE_MODE_ERROR,
        ));
    }
    for (j, item) in source.items.iter().flatten().enumerate() {
        validate_key_to_path(item, &format!("{at}.items[{j}]"), errors);
    }
}

fn validate_key_to_path(item: &KeyToPath, at: &str, errors: &mut Vec<FieldError>) {
    if item.key.is_empty() {
        errors.push(FieldError::required(format!("{at}.key"), ""));
    }
    let path = format!("{at}.path");
    if item.path.is_empty() {
        errors.push(FieldError::required(&path, ""));
    }
    local_descending_path(&item.path, &path, errors);
    // `../x` was reported by the element check already.
    if item.path.starts_with("..") && !item.path.starts_with("../") {
        errors.push(FieldError::invalid(
            &path,
            &item.path,
            "must not start with '..'",
        ));
    }
    if let Some(mode) = item.mode
        && !(0..=0o777).contains(&mode)
    {
        errors.push(FieldError::invalid(
            format!("{at}.mode"),
            mode.to_string(),
            FILE_MODE_ERROR,
        ));
    }
}

/// `validateLocalDescendingPath`: relative, and no `..` element.
fn local_descending_path(value: &str, field: &str, errors: &mut Vec<FieldError>) {
    if value.starts_with('/') {
        errors.push(FieldError::invalid(field, value, "must be a relative path"));
    }
    if value.split('/').any(|part| part == "..") {
        errors.push(FieldError::invalid(field, value, "must not contain '..'"));
    }
}

/// Validates a container's `volumeMounts` (`path` is the container's field path).
pub(crate) fn validate_mounts(
    path: &str,
    mounts: &[VolumeMount],
    volumes: &BTreeSet<String>,
    errors: &mut Vec<FieldError>,
) {
    let list = format!("{path}.volumeMounts");
    let mut mount_points = BTreeSet::new();
    for (j, mount) in mounts.iter().enumerate() {
        let at = format!("{list}[{j}]");
        if mount.name.is_empty() {
            errors.push(FieldError::required(format!("{at}.name"), ""));
        }
        if !volumes.contains(&mount.name) {
            errors.push(FieldError::not_found(format!("{at}.name"), &mount.name));
        }
        if mount.mount_path.is_empty() {
            errors.push(FieldError::required(format!("{at}.mountPath"), ""));
        }
        if !mount_points.insert(mount.mount_path.as_str()) {
            errors.push(FieldError::invalid(
                format!("{at}.mountPath"),
                &mount.mount_path,
                "must be unique",
            ));
        }
        let sub_path = mount.sub_path.as_deref().unwrap_or_default();
        if !sub_path.is_empty() {
            local_descending_path(sub_path, &format!("{list}.subPath"), errors);
        }
        let expr = mount.sub_path_expr.as_deref().unwrap_or_default();
        if !expr.is_empty() {
            if !sub_path.is_empty() {
                errors.push(FieldError::invalid(
                    format!("{at}.subPathExpr"),
                    expr,
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            local_descending_path(expr, &format!("{list}.subPathExpr"), errors);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volumes(json: serde_json::Value) -> Vec<String> {
        let volumes: Vec<Volume> = serde_json::from_value(json).unwrap();
        let mut errors = Vec::new();
        validate_volumes(&volumes, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    fn mounts(json: serde_json::Value) -> Vec<String> {
        let mounts: Vec<VolumeMount> = serde_json::from_value(json).unwrap();
        let declared = BTreeSet::from(["s".to_owned()]);
        let mut errors = Vec::new();
        validate_mounts("spec.containers[0]", &mounts, &declared, &mut errors);
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_valid_secret_volume_passes() {
        let errors = volumes(serde_json::json!([
            {"name": "s", "secret": {"secretName": "gh", "defaultMode": 256,
             "items": [{"key": "token", "path": "value", "mode": 0o400}]}},
            {"name": "tmp", "emptyDir": {}}
        ]));
        assert!(errors.is_empty(), "{errors:?}");
        let errors = mounts(serde_json::json!([
            {"name": "s", "mountPath": "/run/secrets/token", "subPath": "value", "readOnly": true}
        ]));
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn secret_sources_are_checked_like_the_apiserver() {
        let errors = volumes(serde_json::json!([
            {"name": "a", "secret": {"defaultMode": 512,
             "items": [{"key": "", "path": "/abs", "mode": -1}, {"key": "k", "path": "a/../b"},
                       {"key": "k", "path": "..hidden"}, {"key": "k", "path": ""}]}},
            {"name": "b"},
            {"name": "c", "emptyDir": {}, "secret": {"secretName": "x"}},
            {"name": "d", "persistentVolumeClaim": {"claimName": ""}}
        ]));
        assert_eq!(
            errors,
            [
                "spec.volumes[0].secret.secretName: Required value",
                "spec.volumes[0].secret.defaultMode: Invalid value: \"512\": must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[0].secret.items[0].key: Required value",
                "spec.volumes[0].secret.items[0].path: Invalid value: \"/abs\": must be a relative path",
                "spec.volumes[0].secret.items[0].mode: Invalid value: \"-1\": must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[0].secret.items[1].path: Invalid value: \"a/../b\": must not contain '..'",
                "spec.volumes[0].secret.items[2].path: Invalid value: \"..hidden\": must not start with '..'",
                "spec.volumes[0].secret.items[3].path: Required value",
                "spec.volumes[1]: Required value: must specify a volume type",
                "spec.volumes[2].secret: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[3].persistentVolumeClaim.claimName: Required value",
            ]
        );
    }

    #[test]
    fn mounts_need_a_volume_a_unique_path_and_a_descending_sub_path() {
        let errors = mounts(serde_json::json!([
            {"name": "s", "mountPath": "/a", "subPath": "/abs"},
            {"name": "s", "mountPath": "/a", "subPath": "x/../../y"},
            {"name": "nope", "mountPath": "", "subPath": "v", "subPathExpr": "$(X)"}
        ]));
        assert_eq!(
            errors,
            [
                "spec.containers[0].volumeMounts.subPath: Invalid value: \"/abs\": must be a relative path",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
                "spec.containers[0].volumeMounts.subPath: Invalid value: \"x/../../y\": must not contain '..'",
                "spec.containers[0].volumeMounts[2].name: Not found: \"nope\"",
                "spec.containers[0].volumeMounts[2].mountPath: Required value",
                "spec.containers[0].volumeMounts[2].subPathExpr: Invalid value: \"$(X)\": subPathExpr and subPath are mutually exclusive",
            ]
        );
    }
}
