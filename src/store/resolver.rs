//! Group resolution: one task resolves the identifiers of every event that arrived
//! while the previous group was resolving, together (one lookup statement for the
//! whole group, one transaction for its claims: `Store::resolve_batch`), as the
//! writer does for appends. Callers wait for their own answer, exactly as before.

use frontdoor_actors::ids::Identifier;

use super::group::Group;
use super::journey::Resolved;
use super::{Store, StoreError};

/// The handle identity resolutions go through.
#[derive(Clone)]
pub struct Resolver {
    group: Group<(Vec<Identifier>, uuid::Uuid), Resolved>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// Starts the resolver task; groups hold at most `max_batch` events.
    pub fn start(store: Store, max_batch: usize) -> Resolver {
        let group = Group::start(max_batch, "identity resolver", move |requests| {
            let store = store.clone();
            async move { store.resolve_batch(&requests).await }
        });
        Resolver { group }
    }

    /// Resolves one event's identifiers through the next group.
    pub async fn resolve(
        &self,
        ids: Vec<Identifier>,
        event_id: uuid::Uuid,
    ) -> Result<Resolved, StoreError> {
        self.group.call((ids, event_id)).await
    }
}
