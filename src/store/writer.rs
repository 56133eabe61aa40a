//! Group commit: one task writes journey appends for every patient actor, taking
//! all the appends that arrived while the previous batch was committing and
//! committing them together (one transaction, one WAL flush), each in its own
//! savepoint. Callers wait until their batch is durable, exactly as before; only
//! the number of commits changes.

use std::sync::Arc;

use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::ports::AppendOutcome;
use frontdoor_actors::ports::Effects;
use tokio::sync::{mpsc, oneshot};

use super::{Store, StoreError};

struct Job {
    patient: PatientId,
    event: Arc<Envelope>,
    effects: Effects,
    reply: oneshot::Sender<Result<AppendOutcome, StoreError>>,
}

/// The handle patient actors' appends go through.
#[derive(Clone)]
pub struct Writer {
    /// Jobs for the writer task (bounded: appenders wait when it is full).
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Writer")
    }
}

impl Writer {
    /// Starts the writer task on the current runtime; batches hold at most `max_batch` appends.
    pub fn start(store: Store, max_batch: usize) -> Writer {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Job>(max_batch * 4);
        super::spawn_dedicated(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let batch: Vec<(PatientId, Arc<Envelope>, Effects)> = jobs
                    .iter_mut()
                    .map(|j| (j.patient, j.event.clone(), std::mem::take(&mut j.effects)))
                    .collect();
                match store.append_batch(&batch).await {
                    Ok(outcomes) => {
                        for (job, outcome) in jobs.into_iter().zip(outcomes) {
                            let _ = job.reply.send(outcome);
                        }
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        for job in jobs {
                            let _ = job.reply.send(Err(StoreError::Batch(reason.clone())));
                        }
                    }
                }
            }
        });
        Writer { tx }
    }

    /// Appends one event through the next batch; answers once it is durable.
    pub async fn append(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        effects: Effects,
    ) -> Result<AppendOutcome, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                patient,
                event,
                effects,
                reply,
            })
            .await
            .map_err(|_| StoreError::Batch("the store writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Batch("the store writer stopped".into()))?
    }
}
