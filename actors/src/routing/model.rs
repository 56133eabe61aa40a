//! What routing knows about a contact, the views it serves, and the record the
//! router persists so the next leader can rebuild it.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Channel;
use crate::ids::{ContactId, PatientId, SiteId};
use crate::journey::BotTurnView;
use crate::rules::frustration::{FiredSignal, Level};
use crate::rules::matching::{ContactNeeds, SiteScope};
use crate::rules::priority::{priority_key, score_at, PriorityKey};

/// Where a contact is in routing (the journey has its own `ContactState`: open,
/// ended, abandoned).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteState {
    /// A virtual agent is handling it.
    SelfService,
    /// Waiting in a queue for a human.
    Queued,
    /// Offered to one agent, awaiting accept/decline/timeout.
    Offered,
    /// An agent is handling it.
    Assigned,
    /// Finished (including abandoned).
    Ended,
}

/// One rule that fired for a contact and what it did (explainable routing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    /// The rule, a bounded name (e.g. `repeat_contacts`, `preferred_agent`, `overflow`).
    pub rule: Cow<'static, str>,
    /// What the rule saw, in words (no patient data).
    pub detail: String,
    /// What it did.
    pub effect: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// A contact as routing holds it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutedContact {
    /// The channel's contact id.
    pub contact_id: ContactId,
    /// The patient.
    pub patient_id: PatientId,
    /// Site the contact came in at.
    pub origin_site: SiteId,
    /// Site of the queue it is in now.
    pub site: SiteId,
    /// Skill it needs.
    pub skill: String,
    /// Channel whose capacity it takes (a bot session handed off takes chat).
    pub channel: Channel,
    /// Intent, when known.
    pub intent: Option<String>,
    /// Routing state.
    pub state: RouteState,
    /// Ordering key: the same scale in every queue (persisted in [`RoutingRecord`]).
    #[serde(skip)]
    pub key: PriorityKey,
    /// Base priority from the intent.
    pub base_priority: i64,
    /// Escalation boosts.
    pub boosts: i64,
    /// Frustration level.
    pub level: Level,
    /// Lowest proficiency it may go to before relaxation.
    pub min_proficiency: u8,
    /// Whether its skill may be served at other sites.
    pub cross_site: bool,
    /// Agent offered first (who last owned the issue).
    pub preferred_agent: Option<String>,
    /// Until when the preferred agent is waited for.
    pub preferred_until: Option<DateTime<Utc>>,
    /// Agents who declined or let an offer time out.
    pub excluded_agents: Vec<String>,
    /// Agent it is offered to.
    pub offered_to: Option<String>,
    /// When the current offer times out.
    pub offer_deadline: Option<DateTime<Utc>>,
    /// Agent handling it.
    pub assigned_agent: Option<String>,
    /// When it first entered a queue (waiting time counts from here, across moves).
    pub queued_at: Option<DateTime<Utc>>,
    /// When an agent accepted it.
    pub answered_at: Option<DateTime<Utc>>,
    /// When it last moved between sites.
    pub moved_at: Option<DateTime<Utc>>,
    /// Relaxation step in force (index into the configured steps).
    pub relaxation_step: Option<usize>,
    /// The bot transcript handed to the human.
    pub transcript: Vec<BotTurnView>,
    /// Frustration signals of the assessment.
    pub signals: Vec<FiredSignal>,
    /// Every rule that fired, oldest first.
    pub reasons: Vec<Reason>,
    /// Offers made so far (each offer command gets its own deterministic id).
    pub offers_made: u32,
    /// The event that put the contact into routing (command ids derive from it;
    /// persisted in [`RoutingRecord`]).
    #[serde(skip)]
    pub cause: uuid::Uuid,
    /// The channel the patient is on (a bot session: `iva`): where bot releases
    /// and wait announcements go (None: `channel`).
    #[serde(default)]
    pub contact_channel: Option<Channel>,
    /// Why a virtual agent handed the contact over, if it did.
    #[serde(default)]
    pub handoff: Option<crate::rules::handoff::HandoffReason>,
    /// Wait announcements made.
    #[serde(default)]
    pub announced: u32,
    /// When the next wait announcement is due (while queued).
    #[serde(default)]
    pub next_announce_at: Option<DateTime<Utc>>,
    /// A queued callback: the patient hung up and is called back, keeping their place.
    #[serde(default)]
    pub callback: Option<crate::rules::waiting::Callback>,
}

impl RoutedContact {
    /// A contact entering routing now, before any rule has looked at it.
    pub fn new(
        contact_id: ContactId,
        patient_id: PatientId,
        site: SiteId,
        channel: Channel,
        cfg: &super::RoutingConfig,
        now: DateTime<Utc>,
    ) -> RoutedContact {
        let id = contact_id.to_string();
        RoutedContact {
            contact_id,
            patient_id,
            origin_site: site.clone(),
            site,
            skill: cfg.default_skill.clone(),
            channel,
            intent: None,
            state: RouteState::Queued,
            key: priority_key(0, 0, now, &id, &cfg.priority),
            base_priority: 0,
            boosts: 0,
            level: Level::Normal,
            min_proficiency: cfg.min_proficiency,
            cross_site: false,
            preferred_agent: None,
            preferred_until: None,
            excluded_agents: Vec::new(),
            offered_to: None,
            offer_deadline: None,
            assigned_agent: None,
            queued_at: None,
            answered_at: None,
            moved_at: None,
            relaxation_step: None,
            transcript: Vec::new(),
            signals: Vec::new(),
            reasons: Vec::new(),
            offers_made: 0,
            cause: uuid::Uuid::nil(),
            contact_channel: None,
            handoff: None,
            announced: 0,
            next_announce_at: None,
            callback: None,
        }
    }

    /// Records a rule that fired.
    pub fn reason(
        &mut self,
        rule: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
        effect: impl Into<String>,
        at: DateTime<Utc>,
    ) {
        self.reasons.push(Reason {
            rule: rule.into(),
            detail: detail.into(),
            effect: effect.into(),
            at,
        });
    }

    /// Seconds waited in queue at `now`.
    pub fn waited_secs(&self, now: DateTime<Utc>) -> u64 {
        self.queued_at
            .map(|t| u64::try_from((now - t).num_seconds()).unwrap_or(0))
            .unwrap_or(0)
    }

    /// The channel the patient is on (where announcements go).
    pub fn patient_channel(&self) -> Channel {
        self.contact_channel.unwrap_or(self.channel)
    }

    /// The matching needs before relaxation.
    pub fn base_needs(&self) -> ContactNeeds {
        ContactNeeds {
            skill: self.skill.clone(),
            channel: self.channel.as_str().to_string(),
            min_proficiency: self.min_proficiency,
            site: self.site.to_string(),
            allowed_sites: if self.cross_site {
                SiteScope::Any
            } else {
                SiteScope::Home
            },
            preferred_agent: self.preferred_agent.clone(),
            preferred_until: self.preferred_until,
            excluded_agents: self.excluded_agents.clone(),
        }
    }

    /// The view `GET /v1/contacts/{id}` serves.
    pub fn view(&self, now: DateTime<Utc>) -> ContactRoutingView {
        ContactRoutingView {
            contact: self.clone(),
            priority_score: score_at(&self.key, now),
            waited_secs: self.waited_secs(now),
        }
    }
}

/// A contact with its live score.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContactRoutingView {
    /// The contact.
    #[serde(flatten)]
    pub contact: RoutedContact,
    /// Priority score now (comparable across queues).
    pub priority_score: i64,
    /// Seconds waited in queue so far.
    pub waited_secs: u64,
}

/// A contact as the router persists it: the served fields plus its place in the
/// queue (`key`) and its cause, which the API view leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoutingRecord {
    /// The contact.
    #[serde(flatten)]
    pub contact: RoutedContact,
    /// Its ordering key (its place: kept across a takeover).
    pub key: PriorityKey,
    /// The event that put it into routing.
    pub cause: uuid::Uuid,
}

impl RoutingRecord {
    /// The record of a contact.
    pub fn of(c: &RoutedContact) -> RoutingRecord {
        RoutingRecord {
            contact: c.clone(),
            key: c.key.clone(),
            cause: c.cause,
        }
    }

    /// The contact, with its key and cause restored.
    pub fn into_contact(self) -> RoutedContact {
        let mut c = self.contact;
        c.key = self.key;
        c.cause = self.cause;
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Channel;
    use crate::ids::{ContactId, PatientId, SiteId};

    #[test]
    fn a_persisted_record_restores_the_contact_with_its_place_and_cause() {
        let cfg = super::super::RoutingConfig::default();
        let now = Utc::now();
        let mut c = RoutedContact::new(
            ContactId::parse("c-1").unwrap(),
            PatientId::new(),
            SiteId::parse("north").unwrap(),
            Channel::Chat,
            &cfg,
            now,
        );
        c.key = priority_key(300, 50, now, "c-1", &cfg.priority);
        c.cause = uuid::Uuid::new_v4();
        c.reason("priority", "base 300", "score 350", now);
        let json = serde_json::to_string(&RoutingRecord::of(&c)).unwrap();
        let back: RoutingRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.into_contact(), c);
    }
}
