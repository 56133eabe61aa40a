//! What `frontdoor replay` reads: routing events as they were applied, and a window
//! of the whole recorded log (patient and routing events) in replay order.

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
                "SELECT patient_id, occurred_at_ms, received_at_ms, body, seq AS pos, 0 AS src, seq FROM events \
                 WHERE occurred_at_ms >= $1 AND occurred_at_ms < $2 \
                 UNION ALL \
                 SELECT '' AS patient_id, occurred_at_ms, received_at_ms, body, after_seq AS pos, 1 AS src, seq \
                 FROM routing_events WHERE occurred_at_ms >= $1 AND occurred_at_ms < $2 \
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
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
        .await
    }
}
