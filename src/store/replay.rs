//! What `frontdoor replay` reads: routing events as they were applied, and a window
//! of the whole recorded log (patient and routing events) in log order, each with
//! its place in the router's order (`replay::router_order` puts them in it).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use frontdoor_actors::command::Command;
use frontdoor_actors::event::{Envelope, EventKind};
use sqlx::Row;

use super::{millis, timed, Store, StoreError};

/// One recorded event of a window: the patient it was filed under (empty for a
/// routing event) and its stored body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// Patient id it was filed under (empty: agent.state, offer answers, wrap-up).
    pub patient_id: String,
    /// When it happened at the source (ms since the epoch).
    pub occurred_at_ms: i64,
    /// When the runtime stored it (ms since the epoch).
    pub received_at_ms: i64,
    /// The event as stored (JSON).
    pub body: String,
    /// Where the router applied it among all routing inputs (agent events, answers,
    /// wrap-ups, patient events' route requests); None when routing never saw it or
    /// its record was purged (docs/whatif.md, "Fidelity").
    pub applied_seq: Option<i64>,
    /// When the router applied it, on the router's clock (ms since the epoch).
    pub applied_at_ms: Option<i64>,
    /// The same, in microseconds (None on rows from before it was kept).
    pub applied_at_us: Option<i64>,
    /// Not an event: a run of the router's timers that decided something (no body).
    pub tick: bool,
}

impl RecordedEvent {
    /// A run of the router's timers at `at_ms` (`at_us`), `seq`-th in the router's
    /// order.
    pub fn tick(seq: i64, at_ms: i64, at_us: Option<i64>) -> RecordedEvent {
        RecordedEvent {
            patient_id: String::new(),
            occurred_at_ms: at_ms,
            received_at_ms: at_ms,
            body: String::new(),
            applied_seq: Some(seq),
            applied_at_ms: Some(at_ms),
            applied_at_us: at_us,
            tick: true,
        }
    }
}

impl Store {
    /// Records a routing event routing applied (a redelivery is kept once).
    #[tracing::instrument(name = "store.record_routing_event", skip_all)]
    pub async fn record_routing_event(&self, event: &Envelope) -> Result<(), StoreError> {
        let agent = match &event.kind {
            EventKind::AgentState { agent_id, .. }
            | EventKind::OfferAccepted { agent_id }
            | EventKind::OfferDeclined { agent_id }
            | EventKind::ContactWrapped { agent_id } => agent_id.clone(),
            _ => return Ok(()),
        };
        timed("record_routing_event", async {
            sqlx::query(
                "INSERT INTO routing_events (id, type, site, agent_id, contact_id, occurred_at_ms, received_at_ms, after_seq, body) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, (SELECT COALESCE(MAX(seq), 0) FROM events), $8) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(event.id.to_string())
            .bind(event.event_type.clone())
            .bind(event.site.to_string())
            .bind(agent)
            .bind(event.contact_id.as_ref().map(|c| c.to_string()))
            .bind(millis(event.occurred_at))
            .bind(Utc::now().timestamp_millis())
            .bind(event.to_json())
            .execute(self.pool())
            .await?;
            Ok(())
        })
        .await
    }

    /// Every recorded event that occurred in `[since, until)`, patient and routing
    /// events together, in the order the runtime received them: patient events in
    /// log order, each routing event after the patient events stored before it. Each
    /// carries its place in the router's order when the router recorded one, under
    /// the event's id (a single node, routing events) or under the id of the routing
    /// request the event wrote (a cluster's route requests go through the outbox).
    #[tracing::instrument(name = "store.recorded_window", skip_all)]
    pub async fn recorded_window(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        timed("recorded_window", async {
            let rows = sqlx::query(
                "SELECT patient_id, occurred_at_ms, received_at_ms, body, seq AS pos, 0 AS src, seq, id FROM events \
                 WHERE occurred_at_ms >= $1 AND occurred_at_ms < $2 \
                 UNION ALL \
                 SELECT '' AS patient_id, occurred_at_ms, received_at_ms, body, after_seq AS pos, 1 AS src, seq, id \
                 FROM routing_events WHERE occurred_at_ms >= $1 AND occurred_at_ms < $2 \
                 ORDER BY pos, src, seq",
            )
            .bind(millis(since))
            .bind(millis(until))
            .fetch_all(self.pool())
            .await?;
            // The router applies an input after it occurred; an hour either side of
            // the window covers any queueing before it was applied.
            let slack = 3_600_000;
            let mut applied: HashMap<String, (i64, i64, Option<i64>)> = HashMap::new();
            let mut ticks = Vec::new();
            for r in sqlx::query(
                "SELECT id, applied_seq, applied_at_ms, kind, applied_at_us FROM routing_inputs \
                 WHERE applied_at_ms >= $1 AND applied_at_ms < $2 AND applied_seq IS NOT NULL",
            )
            .bind(millis(since) - slack)
            .bind(millis(until) + slack)
            .fetch_all(self.pool())
            .await?
            {
                let (id, seq, at, kind, us): (String, i64, i64, Option<String>, Option<i64>) = (
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                );
                if kind.as_deref() == Some("tick") {
                    // The router's timer runs inside the window, after its events.
                    if at >= millis(since) && at < millis(until) {
                        ticks.push(RecordedEvent::tick(seq, at, us));
                    }
                } else {
                    applied.insert(id, (seq, at, us));
                }
            }
            let mut events = rows
                .into_iter()
                .map(|r| {
                    let id: String = r.try_get(7)?;
                    let patient_id: String = r.try_get(0)?;
                    let place = applied.get(&id).copied().or_else(|| {
                        // A cluster records a patient event's route request under
                        // the routing request's command id.
                        let cause = uuid::Uuid::parse_str(&id).ok()?;
                        (!patient_id.is_empty())
                            .then(|| Command::routing_request_id(cause).to_string())
                            .and_then(|c| applied.get(&c).copied())
                    });
                    Ok(RecordedEvent {
                        patient_id,
                        occurred_at_ms: r.try_get(1)?,
                        received_at_ms: r.try_get(2)?,
                        body: r.try_get(3)?,
                        applied_seq: place.map(|p| p.0),
                        applied_at_ms: place.map(|p| p.1),
                        applied_at_us: place.and_then(|p| p.2),
                        tick: false,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()?;
            ticks.sort_by_key(|t| t.applied_seq);
            events.extend(ticks);
            Ok(events)
        })
        .await
    }
}
