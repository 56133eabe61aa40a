//! Supervision of the runtime's actors and long-running tasks.
//!
//! [`ActorStats`] receives what the actors report (restarts, escalations, poison
//! messages, shed messages), records it as metrics and keeps counts for
//! `GET /v1/runtime`. [`supervise`] runs a long-running task (router timers, the
//! store probe, the broker consumer...) under a [`SupervisionPolicy`]: a task that
//! fails or panics is restarted after backoff; more than `max_restarts` within
//! `within_secs` escalates: the component is marked down (readiness, metric) and
//! retried at the longest backoff until it recovers (runs a whole period without
//! failing), instead of looping hot.

use std::collections::BTreeMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use frontdoor_actors::patient::panic_reason;
use frontdoor_actors::ports::ActorObserver;
use frontdoor_actors::supervision::{Decision, Restart, RestartTracker, SupervisionPolicy};
use futures_util::FutureExt;
use serde::Serialize;

use crate::metrics as m;

/// Counts per actor or component kind.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KindStats {
    /// Restarts.
    pub restarts: u64,
    /// Escalations to the parent.
    pub escalations: u64,
    /// Messages sent to the dead-letter path.
    pub poisoned: u64,
    /// Messages shed because mailboxes were full.
    pub shed: u64,
    /// False after an escalation, until the component runs again.
    pub up: bool,
}

/// What supervision has seen, by kind.
#[derive(Default)]
pub struct ActorStats {
    /// Counts by kind.
    kinds: Mutex<BTreeMap<&'static str, KindStats>>,
}

impl ActorStats {
    fn with(&self, kind: &'static str, f: impl FnOnce(&mut KindStats)) {
        if let Ok(mut k) = self.kinds.lock() {
            let e = k.entry(kind).or_insert_with(|| {
                // A kind's counters start at 0, so dashboards show 0, not "no data".
                m::zero_actor_series(kind);
                KindStats {
                    up: true,
                    ..KindStats::default()
                }
            });
            f(e);
        }
    }

    /// Marks a component up or down.
    pub fn set_up(&self, kind: &'static str, up: bool) {
        self.with(kind, |k| k.up = up);
        metrics::gauge!(m::COMPONENT_UP, "kind" => kind).set(if up { 1.0 } else { 0.0 });
    }

    /// A snapshot of every kind.
    pub fn snapshot(&self) -> BTreeMap<&'static str, KindStats> {
        self.kinds.lock().map(|k| k.clone()).unwrap_or_default()
    }

    /// Components that escalated and are not running normally.
    pub fn down(&self) -> Vec<&'static str> {
        self.snapshot()
            .into_iter()
            .filter(|(_, s)| !s.up)
            .map(|(k, _)| k)
            .collect()
    }
}

impl ActorObserver for ActorStats {
    fn restarted(&self, kind: &'static str, reason: &str) {
        self.with(kind, |k| k.restarts += 1);
        metrics::counter!(m::ACTOR_RESTARTS_TOTAL, "kind" => kind).increment(1);
        tracing::warn!(actor.kind = kind, reason, "restarted");
    }

    fn escalated(&self, kind: &'static str, reason: &str) {
        self.with(kind, |k| k.escalations += 1);
        metrics::counter!(m::ACTOR_ESCALATIONS_TOTAL, "kind" => kind).increment(1);
        tracing::error!(
            actor.kind = kind,
            reason,
            "restart intensity exceeded; escalated"
        );
    }

    fn poisoned(&self, kind: &'static str) {
        self.with(kind, |k| k.poisoned += 1);
        metrics::counter!(m::POISON_MESSAGES_TOTAL, "kind" => kind).increment(1);
    }

    fn shed(&self, kind: &'static str) {
        self.with(kind, |k| k.shed += 1);
        metrics::counter!(m::MESSAGES_SHED_TOTAL, "kind" => kind).increment(1);
    }
}

/// A restart policy shared with the reload path.
pub type SharedPolicy = Arc<RwLock<SupervisionPolicy>>;

/// Runs `task` forever under `policy`: restarted after an error, a panic or (for
/// a permanent task) a normal return; escalated when it fails too often.
pub fn supervise<F, Fut>(
    kind: &'static str,
    policy: SharedPolicy,
    stats: Arc<ActorStats>,
    mut task: F,
) where
    F: FnMut() -> Fut + 'static,
    Fut: Future<Output = anyhow::Result<()>> + 'static,
{
    stats.set_up(kind, true);
    actix_rt::spawn(async move {
        let mut tracker = RestartTracker::default();
        loop {
            // A task that keeps running for a whole supervision period has recovered.
            let period = {
                let p = policy.read().map(|p| p.clone()).unwrap_or_default();
                Duration::from_secs(u64::from(p.within_secs.max(1)))
            };
            let run = AssertUnwindSafe(task()).catch_unwind();
            tokio::pin!(run);
            let outcome = tokio::select! {
                o = &mut run => o,
                _ = tokio::time::sleep(period) => {
                    stats.set_up(kind, true);
                    run.await
                }
            };
            let p = policy.read().map(|p| p.clone()).unwrap_or_default();
            let reason = match outcome {
                Ok(Ok(())) if p.restart != Restart::Permanent => {
                    tracing::info!(component = kind, "finished");
                    return;
                }
                Ok(Ok(())) => "stopped".to_string(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(panic) => panic_reason(&panic),
            };
            match tracker.record(Instant::now(), &p) {
                Decision::Restart { after } => {
                    stats.restarted(kind, &reason);
                    tokio::time::sleep(after).await;
                }
                Decision::Escalate => {
                    stats.escalated(kind, &reason);
                    stats.set_up(kind, false);
                    tracker.reset();
                    tokio::time::sleep(Duration::from_millis(p.max_backoff_ms)).await;
                }
                Decision::Stop => {
                    tracing::warn!(
                        component = kind,
                        reason,
                        "stopped; temporary components are not restarted"
                    );
                    stats.set_up(kind, false);
                    return;
                }
            }
        }
    });
}

/// The store probe: pings the store every `interval`; fails (for the supervisor to
/// count and escalate) while the store does not answer; marks itself up again
/// once it does.
pub async fn store_probe(
    store: crate::store::Store,
    interval: Duration,
    stats: Arc<ActorStats>,
) -> anyhow::Result<()> {
    loop {
        match store.ping().await {
            Ok(()) => {
                metrics::gauge!(m::STORE_UP).set(1.0);
                stats.set_up("store_probe", true);
            }
            Err(e) => {
                metrics::gauge!(m::STORE_UP).set(0.0);
                return Err(anyhow::anyhow!("store unavailable: {e}"));
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// Supervision for a component that restarts itself (a reconnect loop, such as the
/// broker consumer and the outbox relay): each failure is a counted restart, and
/// more than the policy allows within its period escalates (component marked down
/// until it runs again), exactly as for [`supervise`]d tasks.
pub struct RestartBook {
    /// The component kind (metric label).
    kind: &'static str,
    /// Where restarts and escalations are recorded.
    stats: Arc<ActorStats>,
    /// The policy in force (reloadable).
    policy: SharedPolicy,
    /// Restarts within the period.
    tracker: Mutex<RestartTracker>,
}

impl RestartBook {
    /// A book for `kind` under `policy`.
    pub fn new(
        kind: &'static str,
        stats: Arc<ActorStats>,
        policy: SharedPolicy,
    ) -> Arc<RestartBook> {
        stats.set_up(kind, true);
        Arc::new(RestartBook {
            kind,
            stats,
            policy,
            tracker: Mutex::new(RestartTracker::default()),
        })
    }

    /// The component failed and is about to restart itself.
    pub fn failed(&self, reason: &str) {
        let p = self.policy.read().map(|p| p.clone()).unwrap_or_default();
        let decision = self
            .tracker
            .lock()
            .map(|mut t| {
                let d = t.record(Instant::now(), &p);
                if d == Decision::Escalate {
                    t.reset();
                }
                d
            })
            .unwrap_or(Decision::Escalate);
        self.stats.restarted(self.kind, reason);
        if decision == Decision::Escalate {
            self.stats.escalated(self.kind, reason);
            self.stats.set_up(self.kind, false);
        }
    }

    /// The component is running normally again.
    pub fn running(&self) {
        self.stats.set_up(self.kind, true);
    }
}
