//! A group task: one task takes every request that arrived while it was busy with the
//! previous group (up to a bound) and serves them together, on a thread of its own.
//! Callers wait for their own answer, exactly as if each were served alone. The
//! group writer ([`super::writer`]) and the group resolver ([`super::resolver`]) are
//! both this with a different store call.

use std::future::Future;

use tokio::sync::{mpsc, oneshot};

use super::StoreError;

struct Job<Req, Resp> {
    req: Req,
    reply: oneshot::Sender<Result<Resp, StoreError>>,
}

/// The handle requests go through (cheap to clone).
pub(crate) struct Group<Req, Resp> {
    /// Jobs for the task (bounded: callers wait when it is full).
    tx: mpsc::Sender<Job<Req, Resp>>,
    /// What it is, for the error when it stopped.
    what: &'static str,
}

impl<Req, Resp> Clone for Group<Req, Resp> {
    fn clone(&self) -> Self {
        Group {
            tx: self.tx.clone(),
            what: self.what,
        }
    }
}

impl<Req: Send + 'static, Resp: Send + 'static> Group<Req, Resp> {
    /// Starts the task: `serve` answers a whole group, one outcome per request in
    /// order, or fails the group as a whole (every caller gets `Batch`, retryable).
    pub(crate) fn start<F, Fut>(max_batch: usize, what: &'static str, serve: F) -> Self
    where
        F: Fn(Vec<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Vec<Result<Resp, StoreError>>, StoreError>> + Send,
    {
        let max_batch = max_batch.max(1);
        let (tx, mut rx) = mpsc::channel::<Job<Req, Resp>>(max_batch * 4);
        super::spawn_dedicated(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let (reqs, replies): (Vec<Req>, Vec<_>) =
                    jobs.into_iter().map(|j| (j.req, j.reply)).unzip();
                match serve(reqs).await {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(outcome);
                        }
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        for reply in replies {
                            let _ = reply.send(Err(StoreError::Batch(reason.clone())));
                        }
                    }
                }
            }
        });
        Group { tx, what }
    }

    /// Serves one request through the next group.
    pub(crate) async fn call(&self, req: Req) -> Result<Resp, StoreError> {
        let stopped = || StoreError::Batch(format!("the {} stopped", self.what));
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Job { req, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}
