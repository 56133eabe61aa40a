//! What nodes say to each other (JSON over the broker; see `crate::broker::cluster`).
//!
//! - A call to the node that owns a patient: apply an event there, rebuild a
//!   patient there after a merge, or (to the leader) read the live queues.
//! - A routing input for the leader, on the routing queue: the input and its id
//!   (the event or command it came from), so a redelivery is applied once.

use frontdoor_actors::ids::PatientId;
use frontdoor_actors::journey::IdentifierView;
use frontdoor_actors::ports::BoxFuture;
use frontdoor_actors::routing::queue::QueueSnapshot;
use frontdoor_actors::routing::router::RoutingInput;
use serde::{Deserialize, Serialize};

/// A call to another node.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum NodeRequest {
    /// Store and apply an event for a patient this node owns (identity already
    /// resolved by the caller; `claims` as resolution made them).
    Apply {
        /// The patient.
        patient: PatientId,
        /// The validated envelope, as JSON (parsed again at the owner).
        event: serde_json::Value,
        /// Identifiers resolution attached to the patient with this event.
        claims: Vec<IdentifierView>,
    },
    /// Rebuild these patients' actors from the store (their records changed).
    Evict {
        /// The patients.
        patients: Vec<PatientId>,
    },
    /// The live state of every queue (asked of the leader).
    Queues,
}

/// A node's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum NodeReply {
    /// Stored and applied with this sequence number.
    Stored {
        /// Store sequence number.
        seq: u64,
        /// Patients whose records the event changed.
        relinked: Vec<PatientId>,
    },
    /// Stored before under the same id.
    Duplicate,
    /// The patient was merged into another.
    Moved {
        /// The surviving patient.
        to: PatientId,
    },
    /// This node does not own that patient (ownership moved): ask again.
    NotOwner,
    /// It failed; `retry` says whether trying again may help.
    Failed {
        /// True when retrying may succeed.
        retry: bool,
        /// Why (no patient data).
        reason: String,
    },
    /// The live queues.
    Queues {
        /// Every queue.
        queues: Vec<QueueSnapshot>,
    },
    /// Done.
    Done,
}

/// A routing input on the routing queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingEnvelope {
    /// The event or command it came from (deduplication).
    pub id: uuid::Uuid,
    /// The input.
    pub input: RoutingInput,
}

/// Serves the calls other nodes make to this one (the ingest path implements it).
pub trait NodeHandler: Send + Sync + 'static {
    /// Handles one call.
    fn handle(&self, req: NodeRequest) -> BoxFuture<'static, NodeReply>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use frontdoor_actors::routing::router::{AgentUpdate, RoutingInput};

    #[test]
    fn a_routing_envelope_reads_back_from_a_relayed_command_body() {
        // The relay publishes the command's wire body: extra fields beside id/input.
        let input = RoutingInput::OfferAccepted {
            agent_id: "a-1".into(),
            contact_id: "c-1".into(),
        };
        let id = uuid::Uuid::new_v4();
        let body = serde_json::json!({
            "id": id, "type": "routing.request", "site": "north", "channel": "chat",
            "input": input,
        });
        let back: RoutingEnvelope = serde_json::from_value(body).unwrap();
        assert_eq!(back, RoutingEnvelope { id, input });
        let update = RoutingInput::AgentState(AgentUpdate {
            agent_id: "a-2".into(),
            site: frontdoor_actors::ids::SiteId::parse("north").unwrap(),
            presence: frontdoor_actors::routing::agent::Presence::Available,
            skills: [("billing".to_string(), 3)].into(),
            capacity: [("chat".to_string(), 2)].into(),
        });
        let text = serde_json::to_string(&update).unwrap();
        assert_eq!(serde_json::from_str::<RoutingInput>(&text).unwrap(), update);
    }
}
