//! Filters and pagination for listing instances.

use garde::Validate;
use serde::{Deserialize, Serialize};

use crate::instance::{Instance, Phase};
use crate::selector::LabelSelector;

/// Which instances to list. Every backend adds `mcpctl.io/managed=true` itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Validate)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InstanceFilters {
    /// Only instances of this server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub server: Option<String>,
    /// Only instances in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub phase: Option<Phase>,
    /// Only instances whose labels match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub label_selector: Option<LabelSelector>,
    /// Page size; everything when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(inner(range(min = 1, max = 10_000)))]
    pub limit: Option<u32>,
    /// Token from the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[garde(skip)]
    pub continue_token: Option<String>,
}

impl InstanceFilters {
    /// Filters for one server.
    pub fn server(name: impl Into<String>) -> Self {
        Self {
            server: Some(name.into()),
            ..Self::default()
        }
    }

    /// Whether an instance passes the server, phase and selector filters (not pagination).
    pub fn matches(&self, instance: &Instance) -> bool {
        self.server.as_ref().is_none_or(|s| *s == instance.server)
            && self.phase.is_none_or(|p| p == instance.status.phase)
            && self
                .label_selector
                .as_ref()
                .is_none_or(|sel| sel.matches(&instance.labels))
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass back in [`InstanceFilters::continue_token`] for the next page; `None` on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

impl<T> Page<T> {
    /// A last page.
    pub fn last(items: Vec<T>) -> Self {
        Self {
            items,
            continue_token: None,
        }
    }
}
