//! Routing invariants under random load (proptest), through the public [`Routing`]
//! handle only (route, agent_state, offer answers, wrap-up, tick, and the views),
//! on a manual clock. After every step:
//!
//! 1. no agent holds more than its capacity on a channel (offers and contacts,
//!    wrap-up included);
//! 2. no contact is offered to, or held by, two agents, and routing's record of a
//!    contact agrees with the agent holding it;
//! 3. no contact waits while an eligible agent has room: available, at the
//!    contact's site, skilled, with a free slot on its channel, and not one who
//!    declined it or let its offer lapse.
//!
//! A failure shrinks to a minimal sequence of operations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use frontdoor_actors::event::Channel;
use frontdoor_actors::ids::{ContactId, PatientId, SiteId};
use frontdoor_actors::routing::agent::Presence;
use frontdoor_actors::routing::model::{RouteState as ContactState, RoutedContact};
use frontdoor_actors::routing::request::{NeedsHuman, RouteRequest};
use frontdoor_actors::routing::router::{AgentUpdate, MemoryRoutingStore, Routing};
use frontdoor_actors::routing::ManualClock;
use proptest::prelude::*;

const SITES: [&str; 2] = ["north", "south"];
const SKILLS: [&str; 3] = ["scheduling", "billing", "nurse_advice"];
const AGENTS: u8 = 5;

/// One operation on routing.
#[derive(Debug, Clone)]
enum Op {
    /// Agent `a` announces a presence (0 available, 1 away, 2 offline).
    Presence(u8, u8),
    /// A new contact: site, skill, voice (else chat).
    Start(u8, u8, bool),
    /// The agent a contact is offered to accepts it.
    Accept(u8),
    /// Agent `a` accepts contact `c`, whoever it is offered to.
    AcceptBy(u8, u8),
    /// The agent a contact is offered to declines it.
    Decline(u8),
    /// A contact ends (or is abandoned).
    End(u8, bool),
    /// The agent holding a contact finishes its wrap-up.
    Wrap(u8),
    /// Time passes, then the timers run.
    Tick(u16),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..AGENTS, prop_oneof![6 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)])
            .prop_map(|(a, p)| Op::Presence(a, p)),
        4 => (0u8..2, 0u8..3, any::<bool>()).prop_map(|(s, k, v)| Op::Start(s, k, v)),
        3 => any::<u8>().prop_map(Op::Accept),
        1 => (0..AGENTS, any::<u8>()).prop_map(|(a, c)| Op::AcceptBy(a, c)),
        1 => any::<u8>().prop_map(Op::Decline),
        2 => (any::<u8>(), any::<bool>()).prop_map(|(c, a)| Op::End(c, a)),
        1 => any::<u8>().prop_map(Op::Wrap),
        2 => prop_oneof![Just(1u16), Just(31), Just(95), Just(130)].prop_map(Op::Tick),
    ]
}

/// Agent `a`'s fixed site, skills and capacity (presence is what changes).
fn agent_update(a: u8, presence: Presence) -> AgentUpdate {
    let skills: &[&str] = match a % 3 {
        0 => &["scheduling", "billing"],
        1 => &["scheduling"],
        _ => &["billing", "nurse_advice"],
    };
    AgentUpdate {
        agent_id: format!("a{a}"),
        site: SiteId::parse(SITES[usize::from(a) % 2]).unwrap(),
        presence,
        skills: skills.iter().map(|s| (s.to_string(), 5)).collect(),
        capacity: BTreeMap::from([
            ("chat".to_string(), 1 + u32::from(a % 3)),
            ("voice".to_string(), 1),
        ]),
    }
}

fn needs_human(n: usize, site: u8, skill: u8, voice: bool) -> RouteRequest {
    RouteRequest::Queue(Box::new(NeedsHuman::routine(
        ContactId::parse(&format!("c{n}")).unwrap(),
        PatientId::new(),
        SiteId::parse(SITES[usize::from(site)]).unwrap(),
        if voice { Channel::Voice } else { Channel::Chat },
        SKILLS[usize::from(skill)],
    )))
}

/// The three invariants; Err says which broke and how.
/// A contact's record: the router's while it is open, the stored one once ended.
async fn record(routing: &Routing, store: &MemoryRoutingStore, id: &str) -> Option<RoutedContact> {
    match routing.contact(id).await {
        Some(v) => Some(v.contact),
        None => store.contacts.lock().ok()?.get(id).cloned(),
    }
}

async fn check(
    routing: &Routing,
    store: &MemoryRoutingStore,
    contacts: usize,
) -> Result<(), String> {
    let agents = routing.agents().await;
    let mut holder: HashMap<String, String> = HashMap::new();
    for a in &agents {
        let mut load: BTreeMap<&str, u32> = BTreeMap::new();
        for (id, h) in a.offers.iter().chain(a.assignments.iter()) {
            *load.entry(h.channel.as_str()).or_default() += 1;
            if let Some(other) = holder.insert(id.clone(), a.id.clone()) {
                return Err(format!("{id} held by {other} and {}", a.id));
            }
        }
        for (channel, n) in &load {
            let cap = a.capacity.get(*channel).copied().unwrap_or(0);
            if *n > cap {
                return Err(format!("{} holds {n} on {channel}, capacity {cap}", a.id));
            }
        }
    }
    let by_id: HashMap<&str, _> = agents.iter().map(|a| (a.id.as_str(), a)).collect();
    for n in 0..contacts {
        let id = format!("c{n}");
        let Some(c) = record(routing, store, &id).await else {
            continue;
        };
        let c = &c;
        match c.state {
            ContactState::Offered => {
                let to = c.offered_to.as_deref().unwrap_or_default();
                if !by_id.get(to).is_some_and(|a| a.offers.contains_key(&id)) {
                    return Err(format!("{id} offered to {to}, who does not hold the offer"));
                }
            }
            ContactState::Queued => {
                if let Some(a) = holder.get(&id) {
                    return Err(format!("{id} queued but held by {a}"));
                }
                let channel = c.channel.as_str();
                for a in &agents {
                    let load = a
                        .offers
                        .values()
                        .chain(a.assignments.values())
                        .filter(|h| h.channel.as_str() == channel)
                        .count() as u32;
                    let eligible = a.presence == Presence::Available
                        && a.site == c.site
                        && a.skills
                            .get(&c.skill)
                            .is_some_and(|p| *p >= c.min_proficiency)
                        && load < a.capacity.get(channel).copied().unwrap_or(0)
                        && !c.excluded_agents.contains(&a.id);
                    if eligible {
                        return Err(format!("{id} waits while {} has room", a.id));
                    }
                }
            }
            ContactState::Ended => {
                if let Some(a) = by_id.values().find(|a| a.offers.contains_key(&id)) {
                    return Err(format!("{id} ended but still offered to {}", a.id));
                }
            }
            ContactState::Assigned | ContactState::SelfService => {}
        }
    }
    Ok(())
}

async fn run(ops: Vec<Op>) -> Result<(), String> {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let (routing, store) = Routing::in_memory(clock.clone());
    routing.activate().await.map_err(|e| e.to_string())?;
    let mut started = 0usize;
    let pick =
        |c: u8, started: usize| (started > 0).then(|| format!("c{}", usize::from(c) % started));
    for (step, op) in ops.iter().enumerate() {
        match op {
            Op::Presence(a, p) => {
                let presence =
                    [Presence::Available, Presence::Away, Presence::Offline][usize::from(*p)];
                routing
                    .agent_state(agent_update(*a, presence))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Op::Start(site, skill, voice) => {
                routing
                    .route(needs_human(started, *site, *skill, *voice), None)
                    .await
                    .map_err(|e| e.to_string())?;
                started += 1;
            }
            Op::Accept(c) | Op::Decline(c) => {
                let Some(id) = pick(*c, started) else {
                    continue;
                };
                let Some(c) = record(&routing, &store, &id).await else {
                    continue;
                };
                let Some(agent) = c.offered_to.clone() else {
                    continue;
                };
                let answer = if matches!(op, Op::Accept(_)) {
                    routing.offer_accepted(&agent, &id).await.map(|_| ())
                } else {
                    routing.offer_declined(&agent, &id).await.map(|_| ())
                };
                answer.map_err(|e| {
                    format!("step {step}: {agent} answering the offer of {id}: {e}")
                })?;
            }
            Op::AcceptBy(a, c) => {
                let Some(id) = pick(*c, started) else {
                    continue;
                };
                // Refused unless the contact is offered to that agent; either way
                // the invariants must hold.
                let _ = routing.offer_accepted(&format!("a{a}"), &id).await;
            }
            Op::End(c, abandoned) => {
                let Some(id) = pick(*c, started) else {
                    continue;
                };
                let contact_id = ContactId::parse(&id).unwrap();
                let req = if *abandoned {
                    RouteRequest::Abandoned { contact_id }
                } else {
                    RouteRequest::Ended {
                        contact_id,
                        intent: None,
                    }
                };
                routing.route(req, None).await.map_err(|e| e.to_string())?;
            }
            Op::Wrap(c) => {
                let Some(id) = pick(*c, started) else {
                    continue;
                };
                let Some(c) = record(&routing, &store, &id).await else {
                    continue;
                };
                if let Some(agent) = c.assigned_agent.clone() {
                    routing
                        .contact_wrapped(&agent, &id)
                        .await
                        .map_err(|e| e.to_string())?;
                }
            }
            Op::Tick(secs) => {
                clock.advance(Duration::from_secs(u64::from(*secs)));
                routing.tick().await;
            }
        }
        check(&routing, &store, started)
            .await
            .map_err(|e| format!("after step {step} ({op:?}): {e}"))?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn routing_keeps_capacity_single_offers_and_serves_waiting_contacts_when_it_can(
        ops in proptest::collection::vec(op(), 1..60)
    ) {
        let result = actix::System::new().block_on(run(ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}
