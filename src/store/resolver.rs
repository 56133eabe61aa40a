//! Group resolution: one task resolves the identifiers of every event that arrived
//! while the previous group was resolving, together (one lookup statement for the
//! whole group, one transaction for its claims), as the writer does for appends.
//! Callers wait for their own answer, exactly as before.

use frontdoor_actors::ids::Identifier;
use tokio::sync::{mpsc, oneshot};

use super::journey::Resolved;
use super::{Store, StoreError};

struct Job {
    ids: Vec<Identifier>,
    event_id: uuid::Uuid,
    reply: oneshot::Sender<Result<Resolved, StoreError>>,
}

/// The handle identity resolutions go through.
#[derive(Clone)]
pub struct Resolver {
    /// Jobs for the resolver task (bounded: callers wait when it is full).
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Resolver")
    }
}

impl Resolver {
    /// Starts the resolver task on the current runtime; groups hold at most
    /// `max_batch` events.
    pub fn start(store: Store, max_batch: usize) -> Resolver {
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
                let requests: Vec<(Vec<Identifier>, uuid::Uuid)> = jobs
                    .iter_mut()
                    .map(|j| (std::mem::take(&mut j.ids), j.event_id))
                    .collect();
                match store.resolve_batch(&requests).await {
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
        Resolver { tx }
    }

    /// Resolves one event's identifiers through the next group.
    pub async fn resolve(
        &self,
        ids: Vec<Identifier>,
        event_id: uuid::Uuid,
    ) -> Result<Resolved, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job {
                ids,
                event_id,
                reply,
            })
            .await
            .map_err(|_| StoreError::Batch("the identity resolver stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Batch("the identity resolver stopped".into()))?
    }
}
