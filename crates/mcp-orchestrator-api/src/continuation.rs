//! Keyset pagination over instances ordered by id: the continue token names the last id
//! returned, so instances that come and go between pages neither repeat nor vanish from the
//! rest of the listing. Backends that list everything from their engine and page on the client
//! side (in-memory, Docker, process) share this.

use mcp_types::{Instance, Page};

use crate::error::{OrchestratorError, Result};

const PREFIX: &str = "after:";

/// The token that resumes after `id`.
pub fn after_token(id: &str) -> String {
    format!("{PREFIX}{id}")
}

/// The id a token resumes after.
///
/// # Errors
/// [`InvalidArgument`](OrchestratorError::InvalidArgument) for a token this module did not make.
pub fn parse_after_token(token: &str) -> Result<String> {
    token
        .strip_prefix(PREFIX)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| OrchestratorError::InvalidArgument {
            what: "continue token",
            message: format!("{token:?} was not returned by a previous list call"),
        })
}

/// Sorts `items` by id and returns the page after `after` (exclusive) of at most `limit` items,
/// with a continue token when more remain.
pub fn page_after(
    mut items: Vec<Instance>,
    after: Option<&str>,
    limit: Option<u32>,
) -> Page<Instance> {
    items.sort_by(|a, b| a.id.cmp(&b.id));
    if let Some(after) = after {
        items.retain(|i| i.id.as_str() > after);
    }
    let limit = limit
        .map_or(usize::MAX, |l| usize::try_from(l).unwrap_or(usize::MAX))
        .max(1);
    if items.len() > limit {
        items.truncate(limit);
        let token = items.last().map(|i| after_token(i.id.as_str()));
        Page {
            items,
            continue_token: token,
        }
    } else {
        Page::last(items)
    }
}
