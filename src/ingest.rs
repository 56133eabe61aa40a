//! Ingest: the one path every event takes, whichever edge it arrived at (HTTP or
//! the broker), on whichever node.
//!
//! 1. The edge parses the body into an [`Envelope`] (malformed: rejected, nothing stored).
//! 2. Identity resolution names the patient (creating a provisional one for an
//!    unknown caller), in the store.
//! 3. The node that owns the patient's partition stores the event (idempotent by
//!    id) and applies it to the journey, in arrival order per patient: this node if
//!    it owns it, else the owner through the cluster link. While a partition
//!    changes hands the event waits for the new owner (bounded).
//! 4. Patients whose records an `identity.linked` changed are rebuilt where they live.
//!
//! Routing events (agent state, offer answers, wrap-up) go to the router: this
//! node's when it is the whole runtime, the leader's through the routing queue in
//! a cluster. Reads work on any node: the owner's actor answers, or, on another
//! node, the same fold of the stored log (which holds every acknowledged event).

use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdoor_actors::event::{is_routing_event, Envelope, EventKind};
use frontdoor_actors::identity::{MatchGrade, Target};
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::journey::{ContextView, IdentifierView, Limits};
use frontdoor_actors::patient::{context_of, fold_stored, Applied, PatientError};
use frontdoor_actors::ports::{BoxFuture, PortError};
use frontdoor_actors::routing::queue::QueueSnapshot;
use frontdoor_actors::routing::request::recovery_requests;
use frontdoor_actors::routing::router::{
    AgentUpdate, Routing, RoutingError, RoutingInput, RoutingOutput,
};
use frontdoor_actors::shard::PatientRegistry;

use crate::broker::cluster::{LinkError, NodeLink};
use crate::cluster::wire::{NodeHandler, NodeReply, NodeRequest};
use crate::cluster::Cluster;
use crate::metrics as m;
use crate::store::{Store, StoreError};

/// What happened to an ingested event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestOutcome {
    /// Stored now.
    Accepted { patient_id: PatientId, seq: u64 },
    /// Stored before under the same id: nothing changed.
    Duplicate { patient_id: PatientId },
    /// A routing event (agent state, offer answer, wrap-up) was applied to routing
    /// (or, in a cluster, stored on the routing queue for the leader).
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
        if e.is_transient() || matches!(e, StoreError::Fenced(_)) {
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

/// How this node reaches the router and the other nodes.
#[derive(Clone)]
pub struct ClusterPaths {
    /// Who owns what.
    pub cluster: Cluster,
    /// The link to the other nodes and the routing queue (None: one node).
    pub link: Option<NodeLink>,
    /// How long an event waits for its partition to have an owner.
    pub handover_wait: Duration,
    /// How long a forwarded call waits for its answer.
    pub rpc_timeout: Duration,
}

/// The ingest service (cheap to clone).
#[derive(Clone)]
pub struct Ingest {
    /// The store (identity resolution, reads).
    store: Store,
    /// The patient actors of the partitions this node owns.
    patients: PatientRegistry,
    /// This node's router (active when it leads).
    routing: Routing,
    /// Ownership and the way to the other nodes.
    paths: ClusterPaths,
    /// Memory bounds of a journey (reads folded on a node that does not own it).
    limits: Limits,
    /// Largest accepted envelope (a forwarded event is parsed again at its owner).
    max_event_bytes: usize,
    /// Outreach settings (the site directory: local times in context views).
    outreach: Arc<frontdoor_actors::outreach::Outreach>,
}

/// Where a patient's event goes now.
enum Owner {
    /// This node applies it.
    Here,
    /// Another node does.
    There(String),
    /// Nobody holds the partition right now (handover in progress).
    Nobody,
}

impl Ingest {
    /// An ingest service over a store, this node's patient actors and router.
    pub fn new(
        store: Store,
        patients: PatientRegistry,
        routing: Routing,
        paths: ClusterPaths,
        limits: Limits,
        max_event_bytes: usize,
    ) -> Ingest {
        Ingest {
            store,
            patients,
            routing,
            paths,
            limits,
            max_event_bytes,
            outreach: Arc::new(frontdoor_actors::outreach::Outreach::default()),
        }
    }

    /// With the outreach settings (the site directory gives context views their
    /// local times).
    pub fn with_outreach(mut self, outreach: Arc<frontdoor_actors::outreach::Outreach>) -> Ingest {
        self.outreach = outreach;
        self
    }

    fn owner(&self, patient: PatientId) -> Owner {
        let own = self.paths.cluster.now();
        let p = patient.partition(own.partitions);
        if own.holds(p) {
            Owner::Here
        } else {
            match own.owner_of(p) {
                Some(n) if n != own.node_id => Owner::There(n.to_string()),
                _ => Owner::Nobody,
            }
        }
    }

    /// A routing input, to this node's router (one node) or the leader's (through
    /// the routing queue; answered when the leader answers within the call timeout,
    /// else accepted as queued).
    pub async fn route_input(
        &self,
        input: RoutingInput,
        id: uuid::Uuid,
    ) -> Result<RoutingOutput, RoutingError> {
        match &self.paths.link {
            None => self.routing.input(input, Some(id)).await,
            Some(link) => match link.route(id, input, Some(self.paths.rpc_timeout)).await {
                Ok(Some(answer)) => answer,
                Ok(None) => Ok(RoutingOutput::Done),
                Err(LinkError::Timeout) => {
                    tracing::info!("routing input queued; the leader has not answered yet");
                    Ok(RoutingOutput::Done)
                }
                Err(e) => Err(RoutingError::Unavailable(e.to_string())),
            },
        }
    }

    /// Applies a routing event (agent state, offer answers, wrap-up).
    async fn route_event(&self, event: &Envelope) -> Result<IngestOutcome, IngestError> {
        let contact = event
            .contact_id
            .as_ref()
            .map(|c| c.to_string())
            .unwrap_or_default();
        let input = match &event.kind {
            EventKind::AgentState {
                agent_id,
                presence,
                skills,
                capacity,
            } => RoutingInput::AgentState(AgentUpdate {
                agent_id: agent_id.clone(),
                site: event.site.clone(),
                presence: *presence,
                skills: skills.clone(),
                capacity: capacity.clone(),
            }),
            EventKind::OfferAccepted { agent_id } => RoutingInput::OfferAccepted {
                agent_id: agent_id.clone(),
                contact_id: contact,
            },
            EventKind::OfferDeclined { agent_id } => RoutingInput::OfferDeclined {
                agent_id: agent_id.clone(),
                contact_id: contact,
            },
            EventKind::ContactWrapped { agent_id } => RoutingInput::ContactWrapped {
                agent_id: agent_id.clone(),
                contact_id: contact,
            },
            EventKind::CallbackRequested => RoutingInput::Callback {
                contact_id: contact,
            },
            EventKind::CallbackResult { agent_id, answered } => RoutingInput::CallbackResult {
                agent_id: agent_id.clone(),
                contact_id: contact,
                answered: *answered,
            },
            _ => return Err(IngestError::Rejected("not a routing event".into())),
        };
        match self.route_input(input, event.id).await {
            Ok(_) => {
                // Kept for `frontdoor replay` (agent availability, answer and handle
                // times); routing already applied it, so a failure here only warns.
                if let Err(e) = self.store.record_routing_event(event).await {
                    tracing::warn!(error = %e, "routing event not recorded for replay");
                }
                Ok(IngestOutcome::Routed)
            }
            Err(e @ (RoutingError::Unavailable(_) | RoutingError::NotLeader)) => {
                Err(IngestError::Unavailable(Box::new(e)))
            }
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
                .apply_to_owner(patient, event.clone(), std::mem::take(&mut claims))
                .await?
            {
                Applied::Stored { relinked, seq } => {
                    self.evict(&relinked).await;
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

    /// Has the node that owns `patient` store and apply the event: this node, or
    /// the owner through the link; while nobody owns the partition (a handover),
    /// waits up to `handover_wait` for the new owner.
    async fn apply_to_owner(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        claims: Vec<IdentifierView>,
    ) -> Result<Applied, IngestError> {
        let deadline = Instant::now() + self.paths.handover_wait;
        let mut pause = Duration::from_millis(50);
        loop {
            let last_error = match self.owner(patient) {
                Owner::Here => match self
                    .apply_here(patient, event.clone(), claims.clone())
                    .await
                {
                    Err(PatientError::Store(PortError::Fenced(lease))) => {
                        format!("{lease} changed hands")
                    }
                    Err(PatientError::Unavailable)
                        if !matches!(self.owner(patient), Owner::Here) =>
                    {
                        "the partition changed hands".to_string()
                    }
                    other => return other.map_err(IngestError::from),
                },
                Owner::There(node) => {
                    let link = self.paths.link.as_ref().ok_or_else(|| {
                        IngestError::Unavailable("no link to the other nodes".into())
                    })?;
                    let req = NodeRequest::Apply {
                        patient,
                        event: serde_json::Value::Object((*event.raw).clone()),
                        claims: claims.clone(),
                    };
                    match link.call(&node, &req, self.paths.rpc_timeout).await {
                        Ok(NodeReply::Stored { seq, relinked }) => {
                            return Ok(Applied::Stored { seq, relinked })
                        }
                        Ok(NodeReply::Duplicate) => return Ok(Applied::Duplicate),
                        Ok(NodeReply::Moved { to }) => return Ok(Applied::Moved { to }),
                        Ok(NodeReply::Failed {
                            retry: false,
                            reason,
                        }) => return Err(IngestError::Rejected(reason.into())),
                        Ok(NodeReply::Failed {
                            retry: true,
                            reason,
                        }) => reason,
                        Ok(NodeReply::NotOwner) => format!("{node} no longer owns the patient"),
                        Ok(other) => format!("unexpected answer {other:?}"),
                        Err(e) => format!("forwarding to {node} failed: {e}"),
                    }
                }
                Owner::Nobody => "the patient's partition has no owner yet".to_string(),
            };
            if Instant::now() + pause > deadline {
                return Err(IngestError::Unavailable(
                    format!(
                        "{last_error}; retry (waited {} ms)",
                        self.paths.handover_wait.as_millis()
                    )
                    .into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Stores and applies an event of a patient this node owns (counted as applied
    /// here when stored).
    async fn apply_here(
        &self,
        patient: PatientId,
        event: Arc<Envelope>,
        claims: Vec<IdentifierView>,
    ) -> Result<Applied, PatientError> {
        let res = self.patients.apply(patient, event, claims).await;
        if matches!(res, Ok(Applied::Stored { .. })) {
            metrics::counter!(m::EVENTS_APPLIED_TOTAL).increment(1);
        }
        res
    }

    /// Rebuilds the actors of patients whose records changed, where they live.
    pub async fn evict(&self, patients: &[PatientId]) {
        let mut elsewhere: std::collections::BTreeMap<String, Vec<PatientId>> = Default::default();
        for p in patients {
            match self.owner(*p) {
                Owner::Here => self.patients.evict(std::slice::from_ref(p)),
                Owner::There(node) => elsewhere.entry(node).or_default().push(*p),
                Owner::Nobody => {} // the next owner loads it fresh
            }
        }
        let Some(link) = &self.paths.link else {
            return;
        };
        for (node, patients) in elsewhere {
            let req = NodeRequest::Evict { patients };
            if let Err(e) = link.call(&node, &req, self.paths.rpc_timeout).await {
                tracing::warn!(error.message = %e, "a merged patient's owner could not be told to rebuild; it rebuilds on its next activation");
            }
        }
    }

    /// A patient's context, on any node: the owner's actor here, or the same fold
    /// of the stored log (every acknowledged event is in it).
    pub async fn context(
        &self,
        patient: PatientId,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Result<ContextView, IngestError> {
        if matches!(self.owner(patient), Owner::Here) {
            match self.patients.context(patient, now).await {
                Ok(view) => return Ok(view),
                Err(PatientError::Unavailable) if !matches!(self.owner(patient), Owner::Here) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let stored = self.store.load_journey(patient).await?;
        let journey = fold_stored(patient, self.limits, stored);
        Ok(context_of(
            &journey,
            Some(&self.routing.config()),
            &self.outreach.sites,
            now,
        ))
    }

    /// Every queue's live state: this node's router when it leads, else the leader's.
    pub async fn queues(&self) -> Result<Vec<QueueSnapshot>, IngestError> {
        let own = self.paths.cluster.now();
        if own.is_leader() {
            return Ok(self.routing.queues().await);
        }
        let (Some(link), Some(leader)) = (&self.paths.link, own.leader.clone()) else {
            return Err(IngestError::Unavailable(
                "no node leads routing right now; retry".into(),
            ));
        };
        match link
            .call(&leader, &NodeRequest::Queues, self.paths.rpc_timeout)
            .await
        {
            Ok(NodeReply::Queues { queues }) => Ok(queues),
            Ok(_) | Err(_) => Err(IngestError::Unavailable(
                "the routing leader did not answer; retry".into(),
            )),
        }
    }

    /// Routes the open contacts the journey log shows but routing never heard of
    /// (their route request was lost with a node): folds each such patient's
    /// journey from the store and routes its open contacts, keeping their waiting
    /// time. Runs where the router is active; answers how many were routed.
    #[tracing::instrument(name = "ingest.reconcile_routing", skip_all)]
    pub async fn recover_routing(&self) -> Result<usize, IngestError> {
        let now = chrono::Utc::now();
        let cfg = self.routing.config();
        let window = chrono::Duration::seconds(i64::from(cfg.recovery_window_secs));
        let patients = self
            .store
            .patients_with_open_contacts((now - window).timestamp_millis())
            .await?;
        let mut routed = 0;
        for p in patients {
            let stored = self.store.load_journey(p).await?;
            let journey = fold_stored(p, self.limits, stored);
            let inputs: Vec<(RoutingInput, Option<uuid::Uuid>)> =
                recovery_requests(&journey, &cfg, now)
                    .into_iter()
                    .map(|r| (RoutingInput::Route(r), None))
                    .collect();
            routed += inputs.len();
            for r in self.routing.inputs(inputs).await {
                if let Err(e) = r {
                    tracing::error!(error.message = %e, "recovering a contact's routing failed");
                }
            }
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

    /// Who owns what.
    pub fn cluster(&self) -> &Cluster {
        &self.paths.cluster
    }
}

/// Calls from other nodes: apply an event of a patient this node owns, rebuild a
/// patient, read the live queues.
impl NodeHandler for Ingest {
    fn handle(&self, req: NodeRequest) -> BoxFuture<'static, NodeReply> {
        let me = self.clone();
        Box::pin(async move {
            match req {
                NodeRequest::Apply {
                    patient,
                    event,
                    claims,
                } => {
                    if !matches!(me.owner(patient), Owner::Here) {
                        return NodeReply::NotOwner;
                    }
                    let bytes = event.to_string();
                    let event = match Envelope::parse(bytes.as_bytes(), me.max_event_bytes) {
                        Ok(e) => Arc::new(e),
                        Err(e) => {
                            return NodeReply::Failed {
                                retry: false,
                                reason: format!("the forwarded event is invalid: {e}"),
                            }
                        }
                    };
                    match me.apply_here(patient, event, claims).await {
                        Ok(Applied::Stored { seq, relinked }) => {
                            NodeReply::Stored { seq, relinked }
                        }
                        Ok(Applied::Duplicate) => NodeReply::Duplicate,
                        Ok(Applied::Moved { to }) => NodeReply::Moved { to },
                        Err(PatientError::Store(PortError::Fenced(_))) => NodeReply::NotOwner,
                        Err(e) => match IngestError::from(e) {
                            IngestError::Rejected(reason) => NodeReply::Failed {
                                retry: false,
                                reason: reason.to_string(),
                            },
                            IngestError::Unavailable(reason) => NodeReply::Failed {
                                retry: true,
                                reason: reason.to_string(),
                            },
                        },
                    }
                }
                NodeRequest::Evict { patients } => {
                    me.patients.evict(&patients);
                    NodeReply::Done
                }
                NodeRequest::Queues => NodeReply::Queues {
                    queues: me.routing.queues().await,
                },
            }
        })
    }
}
