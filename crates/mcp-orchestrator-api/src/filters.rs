//! Validation of `list_instances` filters, written once so that every backend refuses the same
//! filters with the same error (and needs no `garde` dependency of its own).

use garde::Validate;
use mcp_types::{InstanceFilters, ValidationErrors};

use crate::error::{OrchestratorError, Result};

/// Checks `filters` (a `limit` within 1..=10000) and refuses bad ones with
/// [`InvalidArgument`](OrchestratorError::InvalidArgument) naming `filters` and each field.
/// Continue tokens are checked by whoever issued them (see [`crate::continuation`]).
///
/// # Errors
/// [`OrchestratorError::InvalidArgument`] for filters that fail validation.
pub fn validate_filters(filters: &InstanceFilters) -> Result<()> {
    filters
        .validate()
        .map_err(|report| OrchestratorError::InvalidArgument {
            what: "filters",
            message: ValidationErrors::from(report).to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_zero_is_refused_and_names_the_field() {
        assert!(validate_filters(&InstanceFilters::default()).is_ok());
        let err = validate_filters(&InstanceFilters {
            limit: Some(0),
            ..InstanceFilters::default()
        })
        .unwrap_err();
        assert!(
            matches!(&err, OrchestratorError::InvalidArgument { what: "filters", message } if message.contains("limit")),
            "{err:?}"
        );
    }
}
