//! The validated inputs shared by the instance builders, and the metadata they stamp on objects.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use mcp_types::labels::{CREATED_AT, instance_labels};
use mcp_types::names::check_dns1123_label;
use mcp_types::{FieldError, InstanceId, McpServer, ValidationErrors};

use crate::BuildOptions;

/// A spec, instance id and options that passed validation; builders only accept this.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checked<'a> {
    pub(crate) spec: &'a McpServer,
    pub(crate) instance: &'a str,
    pub(crate) opts: &'a BuildOptions,
}

impl<'a> Checked<'a> {
    /// Validates the spec (`McpServer::validate_spec`), the instance id and the options,
    /// reporting every problem at once.
    pub(crate) fn new(
        spec: &'a McpServer,
        instance: &'a InstanceId,
        opts: &'a BuildOptions,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = match spec.validate_spec() {
            Ok(()) => Vec::new(),
            Err(e) => e.errors().to_vec(),
        };
        if let Err(message) = check_dns1123_label(instance.as_str()) {
            // The id becomes the pod name and a label value: both need a DNS-1123 label.
            errors.push(FieldError {
                path: "instanceId".into(),
                message,
            });
        }
        opts.check(&mut errors);
        for (i, rule) in spec
            .egress
            .iter()
            .flat_map(mcp_types::Egress::rules)
            .enumerate()
        {
            if rule.host.is_some() {
                errors.push(FieldError {
                    path: format!("egress.allow[{i}].host"),
                    message: "host-name rules need the egress proxy, which this backend does not \
                              deploy yet: use cidr rules"
                        .into(),
                });
            }
        }
        match ValidationErrors::from_vec(errors) {
            Some(e) => Err(e),
            None => Ok(Self {
                spec,
                instance: instance.as_str(),
                opts,
            }),
        }
    }

    /// The labels of every object the instance owns: the `mcpctl.io/*` and
    /// `app.kubernetes.io/*` set over the spec's own labels.
    pub(crate) fn labels(&self) -> BTreeMap<String, String> {
        instance_labels(&self.spec.name, self.instance, &self.spec.labels)
    }

    /// The spec's annotations plus the creation time.
    pub(crate) fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = self.spec.annotations.clone();
        annotations.insert(CREATED_AT.to_owned(), self.opts.created_at.to_string());
        annotations
    }

    /// Metadata for an object the instance owns, named `name`.
    pub(crate) fn object_meta(&self, name: String) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.opts.namespace.clone()),
            labels: Some(self.labels()),
            annotations: Some(self.annotations()),
            ..ObjectMeta::default()
        }
    }

    /// `{ mcpctl.io/instance: <id> }`: how companion objects select the instance's pod.
    pub(crate) fn selector(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(
            mcp_types::labels::INSTANCE.to_owned(),
            self.instance.to_owned(),
        )])
    }
}
