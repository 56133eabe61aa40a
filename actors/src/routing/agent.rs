//! An agent: presence, skills, per-channel capacity, and the offers and contacts
//! it holds.
//!
//! [`AgentState`] owns the capacity arithmetic: an agent never holds more than its
//! capacity on a channel, counting pending offers and contacts in wrap-up. Every
//! offer ends by accept, decline or timeout, and every assignment by end + wrap-up
//! (or its timeout): nothing is left "reserved" by hope. [`AgentActor`] owns one
//! agent's state; every answer it gives carries the agent's new view, which the
//! router keeps as the index queues are matched against.

use std::collections::BTreeMap;
use std::sync::Arc;

use actix::prelude::*;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::Clock;
use crate::event::Channel;
use crate::ids::{ContactId, PatientId, SiteId};
use crate::rules::matching::{has_room, AgentView};

/// Presence is part of the event contract (`agent.state`); re-exported here, where
/// the agent keeps it.
pub use crate::event::Presence;

/// A contact an agent holds (offered or assigned).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Held {
    /// The contact.
    pub contact_id: ContactId,
    /// Its patient.
    pub patient_id: PatientId,
    /// The channel slot it takes.
    pub channel: Channel,
    /// Offered or assigned since.
    pub since: DateTime<Utc>,
    /// Offer timeout (offers), or wrap-up end (assignments in wrap-up).
    pub deadline: Option<DateTime<Utc>>,
    /// True once the contact ended and the agent is wrapping up.
    pub wrapping_up: bool,
}

/// Why a reservation or transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("the agent is not available")]
    NotAvailable,
    #[error("the agent has no room on that channel")]
    NoRoom,
    #[error("no such offer")]
    NoSuchOffer,
}

/// One agent's state (persisted as it is by the router).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// Agent id.
    pub id: String,
    /// Site.
    pub site: SiteId,
    /// Presence.
    pub presence: Presence,
    /// Skills with proficiency 1–5.
    pub skills: BTreeMap<String, u8>,
    /// Capacity per channel.
    pub capacity: BTreeMap<String, u32>,
    /// Pending offers by contact id.
    pub offers: BTreeMap<String, Held>,
    /// Assigned contacts by contact id (including those in wrap-up).
    pub assignments: BTreeMap<String, Held>,
    /// Idle since (for longest-idle matching).
    pub idle_since: DateTime<Utc>,
}

impl AgentState {
    /// A new agent.
    pub fn new(id: String, site: SiteId, now: DateTime<Utc>) -> AgentState {
        AgentState {
            id,
            site,
            presence: Presence::Offline,
            skills: BTreeMap::new(),
            capacity: BTreeMap::new(),
            offers: BTreeMap::new(),
            assignments: BTreeMap::new(),
            idle_since: now,
        }
    }

    /// The view matching uses.
    pub fn view(&self) -> AgentView {
        let mut load: BTreeMap<String, u32> = BTreeMap::new();
        for h in self.assignments.values().chain(self.offers.values()) {
            *load.entry(h.channel.as_str().to_string()).or_default() += 1;
        }
        AgentView {
            id: self.id.clone(),
            site: self.site.to_string(),
            available: self.presence == Presence::Available,
            skills: self.skills.clone(),
            capacity: self.capacity.clone(),
            load,
            idle_since: self.idle_since,
            // Offers already count in `load` per channel.
            pending_offers: 0,
        }
    }

    /// Applies an `agent.state`; returns offers taken back (the agent left).
    pub fn set(
        &mut self,
        site: SiteId,
        presence: Presence,
        skills: BTreeMap<String, u8>,
        capacity: BTreeMap<String, u32>,
        now: DateTime<Utc>,
    ) -> Vec<Held> {
        if self.presence != Presence::Available && presence == Presence::Available {
            self.idle_since = now;
        }
        self.site = site;
        self.presence = presence;
        self.skills = skills;
        self.capacity = capacity;
        if presence == Presence::Available {
            Vec::new()
        } else {
            std::mem::take(&mut self.offers).into_values().collect()
        }
    }

    /// Reserves a slot for an offer.
    pub fn reserve(
        &mut self,
        contact_id: ContactId,
        patient_id: PatientId,
        channel: Channel,
        deadline: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), Refused> {
        if self.presence != Presence::Available {
            return Err(Refused::NotAvailable);
        }
        if !has_room(&self.view(), channel.as_str()) {
            return Err(Refused::NoRoom);
        }
        self.offers.insert(
            contact_id.to_string(),
            Held {
                contact_id,
                patient_id,
                channel,
                since: now,
                deadline: Some(deadline),
                wrapping_up: false,
            },
        );
        Ok(())
    }

    /// The agent accepted an offer: it becomes an assignment.
    pub fn accept(&mut self, contact_id: &str, now: DateTime<Utc>) -> Result<Held, Refused> {
        let mut h = self.offers.remove(contact_id).ok_or(Refused::NoSuchOffer)?;
        h.since = now;
        h.deadline = None;
        self.assignments.insert(contact_id.to_string(), h.clone());
        Ok(h)
    }

    /// The agent declined (or the offer was withdrawn).
    pub fn decline(&mut self, contact_id: &str) -> Option<Held> {
        self.offers.remove(contact_id)
    }

    /// The contact ended: the slot stays taken for wrap-up until `wrap_until`.
    pub fn end(&mut self, contact_id: &str, wrap_until: DateTime<Utc>) -> Option<Held> {
        if let Some(h) = self.offers.remove(contact_id) {
            return Some(h);
        }
        let h = self.assignments.get_mut(contact_id)?;
        if h.wrapping_up {
            return None;
        }
        h.wrapping_up = true;
        h.deadline = Some(wrap_until);
        Some(h.clone())
    }

    /// Wrap-up finished: the slot is free.
    pub fn wrapped(&mut self, contact_id: &str, now: DateTime<Utc>) -> Option<Held> {
        let h = self.assignments.remove(contact_id)?;
        if self.assignments.is_empty() {
            self.idle_since = now;
        }
        Some(h)
    }

    /// Offers past their deadline (removed), and wrap-ups past theirs (freed).
    pub fn expire(&mut self, now: DateTime<Utc>) -> (Vec<Held>, Vec<Held>) {
        let late: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, h)| h.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let offers = late.iter().filter_map(|k| self.offers.remove(k)).collect();
        let done: Vec<String> = self
            .assignments
            .iter()
            .filter(|(_, h)| h.wrapping_up && h.deadline.is_some_and(|d| d <= now))
            .map(|(k, _)| k.clone())
            .collect();
        let wraps = done.iter().filter_map(|k| self.wrapped(k, now)).collect();
        (offers, wraps)
    }

    /// Whether the agent holds (offered or assigned, wrap-up included) a contact of the patient.
    pub fn holds_patient(&self, patient: PatientId) -> bool {
        self.offers
            .values()
            .chain(self.assignments.values())
            .any(|h| h.patient_id == patient)
    }
}

/// Apply an `agent.state`; answers the offers taken back and the new view.
#[derive(Message)]
#[rtype(result = "(Vec<Held>, AgentView)")]
pub struct SetState {
    /// Site the agent works at now.
    pub site: SiteId,
    /// Presence.
    pub presence: Presence,
    /// Skills with proficiency 1–5.
    pub skills: BTreeMap<String, u8>,
    /// Capacity per channel.
    pub capacity: BTreeMap<String, u32>,
}

/// Reserve a slot for an offer; answers the new view, or why not.
#[derive(Message)]
#[rtype(result = "Result<AgentView, Refused>")]
pub struct Reserve {
    /// The contact offered.
    pub contact_id: ContactId,
    /// Its patient (minimum-necessary reads follow what the agent holds).
    pub patient_id: PatientId,
    /// The channel slot it takes.
    pub channel: Channel,
    /// When the offer times out.
    pub deadline: DateTime<Utc>,
}

/// The agent accepted; answers the assignment and the new view.
#[derive(Message)]
#[rtype(result = "Result<(Held, AgentView), Refused>")]
pub struct Accept(pub String);

/// The agent declined (or the offer was withdrawn).
#[derive(Message)]
#[rtype(result = "(Option<Held>, AgentView)")]
pub struct Decline(pub String);

/// The contact ended; wrap-up until the given time.
#[derive(Message)]
#[rtype(result = "(Option<Held>, AgentView)")]
pub struct End {
    /// The contact.
    pub contact_id: String,
    /// When wrap-up ends unless `contact.wrapped` comes first.
    pub wrap_until: DateTime<Utc>,
}

/// Wrap-up done.
#[derive(Message)]
#[rtype(result = "(Option<Held>, AgentView)")]
pub struct Wrapped(pub String);

/// Expire offers and wrap-ups past their deadlines.
#[derive(Message)]
#[rtype(result = "Expired")]
pub struct Expire;

/// What [`Expire`] found.
#[derive(Debug, Clone)]
pub struct Expired {
    /// Offers that timed out (removed).
    pub offers: Vec<Held>,
    /// Wrap-ups that ended (slots freed).
    pub wraps: Vec<Held>,
    /// The view after, when anything expired (None: the view the router holds
    /// is still the agent's; building one per agent on every tick was 8 % of a
    /// replay, docs/benchmarks.md).
    pub view: Option<AgentView>,
}

/// The agent's full state (persisted by the router).
#[derive(Message)]
#[rtype(result = "AgentState")]
pub struct GetAgent;

/// The actor that owns one [`AgentState`]: the only place its capacity is
/// decided. Every answer carries the agent's new view, which the router keeps as
/// its matching index (it never changes a view itself).
pub struct AgentActor {
    /// The agent.
    state: AgentState,
    /// The clock.
    clock: Arc<dyn Clock>,
}

impl AgentActor {
    /// An agent actor over a new or restored state.
    pub fn new(state: AgentState, clock: Arc<dyn Clock>) -> AgentActor {
        AgentActor { state, clock }
    }
}

impl Actor for AgentActor {
    type Context = Context<Self>;
}

impl Handler<SetState> for AgentActor {
    type Result = MessageResult<SetState>;

    fn handle(&mut self, m: SetState, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        let back = self
            .state
            .set(m.site, m.presence, m.skills, m.capacity, now);
        MessageResult((back, self.state.view()))
    }
}

impl Handler<Reserve> for AgentActor {
    type Result = Result<AgentView, Refused>;

    fn handle(&mut self, m: Reserve, _ctx: &mut Self::Context) -> Self::Result {
        let now = self.clock.now();
        self.state
            .reserve(m.contact_id, m.patient_id, m.channel, m.deadline, now)?;
        Ok(self.state.view())
    }
}

impl Handler<Accept> for AgentActor {
    type Result = Result<(Held, AgentView), Refused>;

    fn handle(&mut self, m: Accept, _ctx: &mut Self::Context) -> Self::Result {
        let held = self.state.accept(&m.0, self.clock.now())?;
        Ok((held, self.state.view()))
    }
}

impl Handler<Decline> for AgentActor {
    type Result = MessageResult<Decline>;

    fn handle(&mut self, m: Decline, _ctx: &mut Self::Context) -> Self::Result {
        let r = self.state.decline(&m.0);
        MessageResult((r, self.state.view()))
    }
}

impl Handler<End> for AgentActor {
    type Result = MessageResult<End>;

    fn handle(&mut self, m: End, _ctx: &mut Self::Context) -> Self::Result {
        let r = self.state.end(&m.contact_id, m.wrap_until);
        MessageResult((r, self.state.view()))
    }
}

impl Handler<Wrapped> for AgentActor {
    type Result = MessageResult<Wrapped>;

    fn handle(&mut self, m: Wrapped, _ctx: &mut Self::Context) -> Self::Result {
        let r = self.state.wrapped(&m.0, self.clock.now());
        MessageResult((r, self.state.view()))
    }
}

impl Handler<Expire> for AgentActor {
    type Result = MessageResult<Expire>;

    fn handle(&mut self, _m: Expire, _ctx: &mut Self::Context) -> Self::Result {
        let (offers, wraps) = self.state.expire(self.clock.now());
        let changed = !offers.is_empty() || !wraps.is_empty();
        MessageResult(Expired {
            offers,
            wraps,
            view: changed.then(|| self.state.view()),
        })
    }
}

impl Handler<GetAgent> for AgentActor {
    type Result = MessageResult<GetAgent>;

    fn handle(&mut self, _m: GetAgent, _ctx: &mut Self::Context) -> Self::Result {
        MessageResult(self.state.clone())
    }
}

/// Wrap-up end for a contact ending now.
pub fn wrap_until(now: DateTime<Utc>, wrap_up_secs: u32) -> DateTime<Utc> {
    now + Duration::seconds(i64::from(wrap_up_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(capacity: &[(&str, u32)]) -> AgentState {
        let now = Utc::now();
        let mut a = AgentState::new("a1".into(), SiteId::parse("north").unwrap(), now);
        a.set(
            SiteId::parse("north").unwrap(),
            Presence::Available,
            BTreeMap::from([("nurse_advice".to_string(), 4)]),
            capacity.iter().map(|(c, n)| (c.to_string(), *n)).collect(),
            now,
        );
        a
    }

    fn cid(s: &str) -> ContactId {
        ContactId::parse(s).unwrap()
    }

    #[test]
    fn an_agent_with_chat_capacity_three_holds_three_chats_and_no_fourth() {
        let mut a = agent(&[("chat", 3), ("voice", 1)]);
        let now = Utc::now();
        let p = PatientId::new();
        for i in 0..3 {
            a.reserve(cid(&format!("c{i}")), p, Channel::Chat, now, now)
                .unwrap();
            a.accept(&format!("c{i}"), now).unwrap();
        }
        assert_eq!(
            a.reserve(cid("c4"), p, Channel::Chat, now, now),
            Err(Refused::NoRoom)
        );
        a.reserve(cid("v1"), p, Channel::Voice, now, now).unwrap();
        assert_eq!(
            a.reserve(cid("v2"), p, Channel::Voice, now, now),
            Err(Refused::NoRoom)
        );
    }

    #[test]
    fn wrap_up_keeps_the_slot_until_it_ends() {
        let mut a = agent(&[("voice", 1)]);
        let now = Utc::now();
        let p = PatientId::new();
        a.reserve(cid("v1"), p, Channel::Voice, now, now).unwrap();
        a.accept("v1", now).unwrap();
        a.end("v1", now + Duration::seconds(60)).unwrap();
        assert!(a.holds_patient(p));
        assert_eq!(
            a.reserve(cid("v2"), p, Channel::Voice, now, now),
            Err(Refused::NoRoom)
        );
        let (_, wraps) = a.expire(now + Duration::seconds(61));
        assert_eq!(wraps.len(), 1);
        assert!(!a.holds_patient(p));
        a.reserve(cid("v2"), p, Channel::Voice, now, now).unwrap();
    }

    #[test]
    fn an_offer_past_its_deadline_expires_and_frees_the_slot() {
        let mut a = agent(&[("voice", 1)]);
        let now = Utc::now();
        a.reserve(
            cid("v1"),
            PatientId::new(),
            Channel::Voice,
            now + Duration::seconds(30),
            now,
        )
        .unwrap();
        assert!(a.expire(now + Duration::seconds(29)).0.is_empty());
        assert_eq!(a.expire(now + Duration::seconds(30)).0.len(), 1);
        assert!(a.offers.is_empty());
    }

    #[test]
    fn going_away_takes_back_pending_offers_but_not_assignments() {
        let mut a = agent(&[("chat", 2)]);
        let now = Utc::now();
        let p = PatientId::new();
        a.reserve(cid("c1"), p, Channel::Chat, now, now).unwrap();
        a.accept("c1", now).unwrap();
        a.reserve(cid("c2"), p, Channel::Chat, now, now).unwrap();
        let back = a.set(
            a.site.clone(),
            Presence::Away,
            a.skills.clone(),
            a.capacity.clone(),
            now,
        );
        assert_eq!(back.len(), 1);
        assert_eq!(a.assignments.len(), 1);
        assert_eq!(
            a.reserve(cid("c3"), p, Channel::Chat, now, now),
            Err(Refused::NotAvailable)
        );
    }
}
