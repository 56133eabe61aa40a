//! The reminder tick: the node that owns a patient's partition sends that
//! patient's due reminders and held messages through the outbox, and counts what
//! outreach decided.
//!
//! Each tick reads the planned records due by the clock's now (of the partitions
//! this node holds), asks [`frontdoor_actors::outreach::disposition`] about each
//! (consent from the store, quiet hours from the site directory, too late once
//! the appointment started), and settles it in one transaction with its outbox
//! row. A record is settled only while still planned for the same time, so a
//! restart, a reschedule racing the tick or a second node never sends it twice;
//! one that was due while the node was down is sent at the first tick after.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use frontdoor_actors::event::{Envelope, EventKind};
use frontdoor_actors::outreach::{
    disposition, Disposition, MessageFacts, Outreach, OutreachChanges, OutreachState,
};
use frontdoor_actors::routing::Clock;

use crate::cluster::Cluster;
use crate::metrics as m;
use crate::store::outreach::Settle;
use crate::store::{Store, StoreError};

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Written to the outbox.
    pub sent: u32,
    /// Held again by quiet hours.
    pub held: u32,
    /// Not sent (opted out, too late).
    pub suppressed: u32,
    /// Could not be sent (missing fields).
    pub failed: u32,
}

/// Settles every planned message due at `now` of the partitions this node holds.
pub async fn fire_due(
    store: &Store,
    outreach: &Outreach,
    cluster: &Cluster,
    now: DateTime<Utc>,
) -> Result<TickReport, StoreError> {
    let own = cluster.now();
    let held: Vec<u32> = (0..own.partitions).filter(|p| own.holds(*p)).collect();
    let scope = (held.len() as u32 != own.partitions).then_some(held.as_slice());
    let now_ms = now.timestamp_millis();
    let due = store
        .due_outreach(now_ms, outreach.settings.batch, scope)
        .await?;
    let mut report = TickReport::default();
    for d in due {
        let opted_out = store
            .opted_out(d.patient_id, d.command.channel.as_str())
            .await?;
        let site = outreach.sites.site_or_utc(&d.command.site);
        let decision = disposition(
            &MessageFacts {
                template: &d.template,
                payload: &d.command.payload,
                opted_out,
                site: &site,
                urgent: d.urgent,
                not_after: d
                    .not_after_ms
                    .and_then(|t| Utc.timestamp_millis_opt(t).single()),
            },
            now,
        );
        let settle = match &decision {
            Disposition::Send => Settle::Send,
            Disposition::Hold { until } => Settle::Hold {
                until_ms: until.timestamp_millis(),
            },
            Disposition::Suppress(r) => Settle::Suppress(r.as_str().to_string()),
            Disposition::Fail(r) => Settle::Fail(r.clone()),
        };
        if !store.settle_outreach(&d, &settle, now_ms).await? {
            continue;
        }
        let outcome = match &decision {
            Disposition::Send => {
                report.sent += 1;
                let late = (now_ms - d.due_at_ms).max(0) as f64 / 1000.0;
                metrics::histogram!(m::REMINDER_LATENESS_SECONDS).record(late);
                "sent"
            }
            Disposition::Hold { .. } => {
                report.held += 1;
                "held"
            }
            Disposition::Suppress(r) => {
                report.suppressed += 1;
                metrics::counter!(m::OUTREACH_SUPPRESSED_TOTAL, "template" => template_label(&d.template), "reason" => r.as_str())
                    .increment(1);
                "suppressed"
            }
            Disposition::Fail(reason) => {
                report.failed += 1;
                tracing::warn!(command.id = %d.command.id, template = %d.template, error.message = %reason, "a planned message cannot be sent; recorded as failed");
                "failed"
            }
        };
        metrics::counter!(m::OUTREACH_MESSAGES_TOTAL, "template" => template_label(&d.template), "outcome" => outcome)
            .increment(1);
    }
    Ok(report)
}

/// Runs [`fire_due`] every `outreach.tick_ms` on `clock`'s time (under `supervise`).
/// A store that fails is the store probe's business (readiness): the tick logs
/// once when it starts failing and once when it recovers, and tries again next
/// tick; what was due meanwhile leaves at the first tick that succeeds.
pub async fn reminder_loop(
    store: Store,
    outreach: Arc<Outreach>,
    cluster: Cluster,
    clock: Arc<dyn Clock>,
) -> anyhow::Result<()> {
    let mut every = tokio::time::interval(Duration::from_millis(outreach.settings.tick_ms.max(1)));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    loop {
        every.tick().await;
        match fire_due(&store, &outreach, &cluster, clock.now()).await {
            Ok(r) => {
                if failing {
                    tracing::info!("reminder tick recovered");
                    failing = false;
                }
                if r != TickReport::default() {
                    tracing::debug!(
                        sent = r.sent,
                        held = r.held,
                        suppressed = r.suppressed,
                        failed = r.failed,
                        "reminder tick"
                    );
                }
            }
            Err(StoreError::Fenced(_)) => {} // a partition moved: its new owner fires
            Err(e) => {
                if !failing {
                    tracing::warn!(error.message = %e, "reminder tick failed; trying again every tick");
                    failing = true;
                }
            }
        }
    }
}

/// A template as a metric label (a bounded set: the known templates, else `other`).
fn template_label(t: &str) -> &'static str {
    frontdoor_actors::outreach::template(t).map_or("other", |s| s.name)
}

/// Counts what a stored event decided in outreach (after its commit).
pub fn observe_stored(event: &Envelope, changes: &OutreachChanges) {
    let outcome = match &event.kind {
        EventKind::AppointmentBooked(_) => Some("booked"),
        EventKind::AppointmentRescheduled(_) => Some("rescheduled"),
        EventKind::AppointmentCheckedIn(_) => Some("kept"),
        EventKind::AppointmentCancelled(_) => Some("cancelled"),
        EventKind::AppointmentNoShow(_) => Some("no_show"),
        _ => None,
    };
    if let Some(o) = outcome {
        metrics::counter!(m::APPOINTMENTS_TOTAL, "outcome" => o).increment(1);
    }
    if !changes.confirmed.is_empty() {
        metrics::counter!(m::APPOINTMENTS_TOTAL, "outcome" => "confirmed")
            .increment(changes.confirmed.len() as u64);
    }
    for c in &changes.consent {
        let change = if c.opted_out { "opted_out" } else { "opted_in" };
        metrics::counter!(m::CONSENT_CHANGES_TOTAL, "channel" => c.channel.as_str(), "change" => change)
            .increment(1);
    }
    for r in &changes.records {
        let template = template_label(&r.template);
        match (r.state, r.template.as_str()) {
            (OutreachState::Planned, "appointment.reminder") => {
                metrics::counter!(m::REMINDERS_PLANNED_TOTAL).increment(1);
            }
            (OutreachState::Planned, _) => {
                metrics::counter!(m::OUTREACH_MESSAGES_TOTAL, "template" => template, "outcome" => "held")
                    .increment(1);
            }
            (state, _) => {
                metrics::counter!(m::OUTREACH_MESSAGES_TOTAL, "template" => template, "outcome" => state.as_str())
                    .increment(1);
                if state == OutreachState::Suppressed {
                    let reason = match r.reason.as_deref() {
                        Some("opted_out") => "opted_out",
                        _ => "too_late",
                    };
                    metrics::counter!(m::OUTREACH_SUPPRESSED_TOTAL, "template" => template, "reason" => reason)
                        .increment(1);
                }
                if state == OutreachState::Failed {
                    tracing::warn!(event.id = %event.id, template = %r.template, error.message = r.reason.as_deref().unwrap_or_default(), "a patient message cannot be sent; recorded as failed");
                }
            }
        }
    }
}
