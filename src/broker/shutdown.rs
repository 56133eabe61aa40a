//! The drain signal: SIGINT/SIGTERM (or a test) trigger it once; the HTTP server,
//! the consumer and the relay each watch it and stop in their own way.

use tokio::sync::watch;

/// Triggers the drain (cheap to clone).
#[derive(Debug, Clone)]
pub struct ShutdownTrigger(std::sync::Arc<watch::Sender<bool>>);

/// Watches for the drain (cheap to clone).
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A new trigger and its watcher.
pub fn channel() -> (ShutdownTrigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (ShutdownTrigger(std::sync::Arc::new(tx)), Shutdown(rx))
}

impl ShutdownTrigger {
    /// Starts the drain (idempotent).
    pub fn trigger(&self) {
        self.0.send_replace(true);
    }

    /// A watcher of this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// True once the drain has started.
    pub fn is_triggered(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves when the drain starts (at once if it has).
    pub async fn wait(&mut self) {
        // An error means every trigger is gone: nobody can start a drain any more,
        // which only happens when the application itself is being dropped.
        let _ = self.0.wait_for(|v| *v).await;
    }

    /// A drain of its own that also starts when this one does (stopping one part,
    /// such as one partition's consumer, without stopping the rest).
    pub fn child(&self) -> (ShutdownTrigger, Shutdown) {
        let (trigger, watcher) = channel();
        let mut parent = self.clone();
        let forward = trigger.clone();
        actix_rt::spawn(async move {
            tokio::select! {
                _ = parent.wait() => forward.trigger(),
                _ = forward.0.closed() => {}
            }
        });
        (trigger, watcher)
    }

    /// Sleeps for `d` unless the drain starts first; true if it did.
    pub async fn sleep_or_triggered(&mut self, d: std::time::Duration) -> bool {
        tokio::select! {
            _ = self.wait() => true,
            _ = tokio::time::sleep(d) => self.is_triggered(),
        }
    }
}
