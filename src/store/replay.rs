//! What `frontdoor replay` reads: routing events as they were applied, and a window
//! of the whole recorded log (patient and routing events) in log order, each with
//! its place in the router's order (`replay::router_order` puts them in it).

use chrono::{DateTime, Utc};
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
    /// log order, each routing event after the patient events stored before it.
    #[tracing::instrument(name = "store.recorded_window", skip_all)]
    pub async fn recorded_window(
        &self,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        timed("recorded_window", async {
            let rows = sqlx::query(
                "SELECT e.patient_id, e.occurred_at_ms, e.received_at_ms, e.body, e.seq AS pos, 0 AS src, e.seq, ri.applied_seq, ri.applied_at_ms \
                 FROM events e LEFT JOIN routing_inputs ri ON ri.id = e.id \
                 WHERE e.occurred_at_ms >= $1 AND e.occurred_at_ms < $2 \
                 UNION ALL \
                 SELECT '' AS patient_id, r.occurred_at_ms, r.received_at_ms, r.body, r.after_seq AS pos, 1 AS src, r.seq, ri.applied_seq, ri.applied_at_ms \
                 FROM routing_events r LEFT JOIN routing_inputs ri ON ri.id = r.id \
                 WHERE r.occurred_at_ms >= $1 AND r.occurred_at_ms < $2 \
                 ORDER BY pos, src, seq",
            )
            .bind(millis(since))
            .bind(millis(until))
            .fetch_all(self.pool())
            .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(RecordedEvent {
                        patient_id: r.try_get(0)?,
                        occurred_at_ms: r.try_get(1)?,
                        received_at_ms: r.try_get(2)?,
                        body: r.try_get(3)?,
                        applied_seq: r.try_get(7)?,
                        applied_at_ms: r.try_get(8)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
        .await
    }
}
