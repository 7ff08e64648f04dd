//! Which instances a client is attached to through `attach_stdio`: one client at a time per
//! instance, shared by an orchestrator and its clones.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};

/// The instances a client of this orchestrator (or of its clones) is attached to.
#[derive(Debug, Clone, Default)]
pub(crate) struct AttachedSet(Arc<Mutex<HashSet<String>>>);

impl AttachedSet {
    /// Claims `id`; `None` while another client holds it.
    pub(crate) fn claim(&self, id: &str) -> Option<Claim> {
        let mut held = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        held.insert(id.to_owned()).then(|| Claim {
            set: self.clone(),
            id: id.to_owned(),
        })
    }
}

/// Held while a client is attached; released when its stream is dropped.
#[derive(Debug)]
pub(crate) struct Claim {
    set: AttachedSet,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_instance_released_on_drop() {
        let set = AttachedSet::default();
        let first = set.claim("a").expect("free");
        assert!(set.claim("a").is_none());
        let other = set.claim("b").expect("another instance");
        drop(first);
        assert!(set.clone().claim("a").is_some());
        drop(other);
    }
}
