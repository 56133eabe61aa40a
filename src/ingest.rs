//! Ingest: the one path every event takes, whichever edge it arrived at (HTTP or
//! the broker).
//!
//! 1. The edge parses the body into an [`Envelope`] (malformed: rejected, nothing stored).
//! 2. Identity resolution names the patient (creating a provisional one for an
//!    unknown caller), in the store.
//! 3. The patient's actor stores the event (idempotent by id) and applies it to the
//!    journey, in arrival order per patient.
//! 4. Patients whose records an `identity.linked` changed are rebuilt.

use std::sync::Arc;
use std::time::Instant;

use frontdoor_actors::event::{is_routing_event, Envelope, EventKind};
use frontdoor_actors::identity::{MatchGrade, Target};
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::patient::{Applied, PatientError};
use frontdoor_actors::ports::PortError;
use frontdoor_actors::routing::router::{AgentUpdate, Routing, RoutingError};
use frontdoor_actors::shard::PatientRegistry;

use crate::metrics as m;
use crate::store::{Store, StoreError};

/// What happened to an ingested event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now.
    Accepted { patient_id: PatientId, seq: u64 },
    /// Stored before under the same id: nothing changed.
    Duplicate { patient_id: PatientId },
    /// A routing event (agent state, offer answer, wrap-up) was applied to routing.
    Routed,
}

/// What made ingest fail: the store's, a patient actor's or routing's error, kept
/// as the source.
pub type IngestCause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an event could not be ingested.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The store or a patient actor is unavailable: retry later (nothing half-stored).
    #[error("temporarily unavailable: {0}")]
    Unavailable(#[source] IngestCause),
    /// The event is valid JSON but cannot be processed (retrying will not help).
    #[error("cannot process the event: {0}")]
    Rejected(#[source] IngestCause),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        if e.is_transient() {
            IngestError::Unavailable(Box::new(e))
        } else {
            IngestError::Rejected(Box::new(e))
        }
    }
}

impl From<PatientError> for IngestError {
    fn from(e: PatientError) -> Self {
        match e {
            PatientError::Store(PortError::Rejected(_)) | PatientError::Poison(_) => {
                IngestError::Rejected(Box::new(e))
            }
            other => IngestError::Unavailable(Box::new(other)),
        }
    }
}

/// The ingest service (cheap to clone).
#[derive(Clone)]
pub struct Ingest {
    /// The store (identity resolution).
    store: Store,
    /// The patient actors.
    patients: PatientRegistry,
    /// Routing (agents, queues, offers).
    routing: Routing,
}

impl Ingest {
    /// An ingest service over a store and the patient actors.
    pub fn new(store: Store, patients: PatientRegistry, routing: Routing) -> Ingest {
        Ingest {
            store,
            patients,
            routing,
        }
    }

    /// Applies a routing event (agent state, offer answers, wrap-up).
    async fn route_event(&self, event: &Envelope) -> Result<IngestOutcome, IngestError> {
        let contact = event
            .contact_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let res = match &event.kind {
            EventKind::AgentState {
                agent_id,
                presence,
                skills,
                capacity,
            } => self
                .routing
                .agent_state(AgentUpdate {
                    agent_id: agent_id.clone(),
                    site: event.site.clone(),
                    presence: *presence,
                    skills: skills.clone(),
                    capacity: capacity.clone(),
                })
                .await
                .map(|_| ()),
            EventKind::OfferAccepted { agent_id } => self
                .routing
                .offer_accepted(agent_id, &contact)
                .await
                .map(|_| ()),
            EventKind::OfferDeclined { agent_id } => self
                .routing
                .offer_declined(agent_id, &contact)
                .await
                .map(|_| ()),
            EventKind::ContactWrapped { agent_id } => {
                self.routing.contact_wrapped(agent_id, &contact).await
            }
            _ => return Err(IngestError::Rejected("not a routing event".into())),
        };
        match res {
            Ok(()) => Ok(IngestOutcome::Routed),
            Err(e @ RoutingError::Unavailable(_)) => Err(IngestError::Unavailable(Box::new(e))),
            Err(e) => Err(IngestError::Rejected(Box::new(e))),
        }
    }

    /// Stores and applies one validated event.
    #[tracing::instrument(name = "ingest", skip_all, fields(event.id = %event.id, event.type = event.type_label(), channel = event.channel.as_str(), patient_id))]
    pub async fn ingest(&self, event: Envelope) -> Result<IngestOutcome, IngestError> {
        let start = Instant::now();
        let channel = event.channel.as_str();
        let type_label = event.type_label();
        let res = self.ingest_inner(event).await;
        let outcome = match &res {
            Ok(IngestOutcome::Accepted { .. }) => "accepted",
            Ok(IngestOutcome::Duplicate { .. }) => "duplicate",
            Ok(IngestOutcome::Routed) => "accepted",
            Err(IngestError::Rejected(_)) => "rejected",
            Err(IngestError::Unavailable(_)) => "failed",
        };
        metrics::counter!(m::EVENTS_TOTAL, "channel" => channel, "type" => type_label, "outcome" => outcome)
            .increment(1);
        metrics::histogram!(m::EVENT_INGEST_SECONDS, "outcome" => outcome)
            .record(start.elapsed().as_secs_f64());
        res
    }

    async fn ingest_inner(&self, event: Envelope) -> Result<IngestOutcome, IngestError> {
        if is_routing_event(&event.event_type) {
            return self.route_event(&event).await;
        }
        let ids = event
            .patient
            .as_ref()
            .map(|p| p.to_list())
            .unwrap_or_default();
        if ids.is_empty() {
            return Err(IngestError::Rejected(
                format!(
                    "{} events are not patient events and are not handled by this runtime",
                    event.type_label()
                )
                .into(),
            ));
        }
        let resolved = self.store.resolve_patient(&ids, event.id).await?;
        let r = &resolved.resolution;
        let grade = match r.grade {
            MatchGrade::Certain => "certain",
            MatchGrade::Probable => "probable",
            MatchGrade::Possible => "possible",
        };
        let outcome = match (r.target, r.conflicts.is_empty()) {
            (_, false) => "conflict",
            (Target::New, true) => "new",
            (Target::Existing(_), true) => "existing",
        };
        metrics::counter!(m::IDENTITY_RESOLUTIONS_TOTAL, "grade" => grade, "outcome" => outcome)
            .increment(1);
        if !r.conflicts.is_empty() {
            let kinds: Vec<&str> = r.conflicts.iter().map(|k| k.as_str()).collect();
            tracing::info!(patient_id = %resolved.patient, identity.conflicts = ?kinds, "identifiers point at another patient; not merged automatically");
        }
        let mut patient = resolved.patient;
        tracing::Span::current().record("patient_id", tracing::field::display(patient));
        let event = Arc::new(event);
        let mut claims = resolved.claims;
        // A merge can move the patient while the event is on its way: follow it (bounded).
        for _ in 0..4 {
            match self
                .patients
                .apply(patient, event.clone(), std::mem::take(&mut claims))
                .await?
            {
                Applied::Stored { seq, relinked } => {
                    self.patients.evict(&relinked);
                    return Ok(IngestOutcome::Accepted {
                        patient_id: patient,
                        seq,
                    });
                }
                Applied::Duplicate => {
                    return Ok(IngestOutcome::Duplicate {
                        patient_id: patient,
                    })
                }
                Applied::Moved { to } => patient = to,
            }
        }
        Err(IngestError::Unavailable(
            "patient record kept moving while storing the event".into(),
        ))
    }

    /// Routes again every contact that was open when the runtime stopped (routing
    /// state lives in memory; the journey log knows what is still open). Answers
    /// how many contacts were routed.
    #[tracing::instrument(name = "ingest.recover_routing", skip_all)]
    pub async fn recover_routing(&self) -> Result<usize, IngestError> {
        let now = chrono::Utc::now();
        let window =
            chrono::Duration::seconds(i64::from(self.routing.config().recovery_window_secs));
        let patients = self
            .store
            .patients_with_open_contacts((now - window).timestamp_millis())
            .await?;
        let mut routed = 0;
        for p in patients {
            routed += self.patients.recover_routing(p, now).await?;
        }
        Ok(routed)
    }

    /// The patient actors (context reads go through them).
    pub fn patients(&self) -> &PatientRegistry {
        &self.patients
    }

    /// Routing.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }
}
