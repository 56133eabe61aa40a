//! Group commit: one task writes journey appends for every patient actor, taking
//! all the appends that arrived while the previous batch was committing and
//! committing them together (one transaction, one WAL flush, one multi-row
//! statement per table: `Store::append_batch`). Callers wait until their batch is
//! durable, exactly as before; only the number of commits changes.

use std::sync::Arc;

use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::ports::AppendOutcome;
use frontdoor_actors::ports::Effects;

use super::group::Group;
use super::{Store, StoreError};

/// The handle patient actors' appends go through.
#[derive(Clone)]
pub struct Writer {
    group: Group<(PatientId, Arc<Envelope>, Effects), AppendOutcome>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer task; batches hold at most `max_batch` appends.
    pub fn start(store: Store, max_batch: usize) -> Writer {
        let group = Group::start(max_batch, "store writer", move |batch| {
            let store = store.clone();
            async move { store.append_batch(&batch).await }
        });
        Writer { group }
    }

    /// Appends one event through the next batch; answers once it is durable.
    pub async fn append(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        effects: Effects,
    ) -> Result<AppendOutcome, StoreError> {
        self.group.call((patient, event, effects)).await
    }
}
