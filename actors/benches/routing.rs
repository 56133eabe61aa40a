//! Routing decisions with 10,000 waiting contacts and 500 agents.
//!
//! Run: `cargo bench -p frontdoor-actors --bench routing`
//!
//! Prints two measurements from one run:
//! 1. the pure decision (`QueueState::propose` + taking the contact) on one queue;
//! 2. the same through the actors (router task -> queue actor -> agent actor), with
//!    routing state and offers written to an in-memory routing store (the database
//!    write is measured in the broker benchmark, not here).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{Duration, Utc};
use frontdoor_actors::event::Channel;
use frontdoor_actors::ids::{ContactId, PatientId, SiteId};
use frontdoor_actors::ports::RoutingObserver;
use frontdoor_actors::routing::agent::Presence;
use frontdoor_actors::routing::model::RoutedContact;
use frontdoor_actors::routing::queue::{QueueSnapshot, QueueState};
use frontdoor_actors::routing::request::{NeedsHuman, RouteRequest};
use frontdoor_actors::routing::router::{AgentUpdate, MemoryRoutingStore, Routing, RoutingDeps};
use frontdoor_actors::routing::{ManualClock, RoutingConfig};
use frontdoor_actors::rules::matching::AgentView;
use frontdoor_actors::rules::priority::priority_key;

const CONTACTS: usize = 10_000;
const AGENTS: usize = 500;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn report(name: &str, mut lat: Vec<f64>, wall: f64) {
    lat.sort_by(|a, b| a.total_cmp(b));
    println!(
        "{name}: {} decisions in {:.3} s = {:.0} decisions/s; latency p50 {:.1} us, p99 {:.1} us, max {:.1} us",
        lat.len(),
        wall,
        lat.len() as f64 / wall,
        percentile(&lat, 0.50) * 1e6,
        percentile(&lat, 0.99) * 1e6,
        lat.last().copied().unwrap_or(0.0) * 1e6
    );
}

fn contact(i: usize, cfg: &RoutingConfig, now: chrono::DateTime<Utc>) -> RoutedContact {
    let id = format!("c{i}");
    let base = [50, 100, 200, 300][i % 4];
    let boosts = if i.is_multiple_of(97) { 500 } else { 0 };
    let at = now - Duration::milliseconds((CONTACTS - i) as i64);
    let mut c = RoutedContact::new(
        ContactId::parse(&id).unwrap(),
        PatientId::new(),
        SiteId::parse("north").unwrap(),
        if i.is_multiple_of(3) {
            Channel::Voice
        } else {
            Channel::Chat
        },
        cfg,
        now,
    );
    c.skill = "scheduling".into();
    c.key = priority_key(base, boosts, at, &id, &cfg.priority);
    c.base_priority = base;
    c.boosts = boosts;
    c.min_proficiency = 1 + (i % 3) as u8;
    c.queued_at = Some(at);
    c
}

fn pure_queue() {
    let cfg = RoutingConfig::default();
    let now = Utc::now();
    let mut q = QueueState::new(SiteId::parse("north").unwrap(), "scheduling".into());
    for i in 0..CONTACTS {
        q.insert(contact(i, &cfg, now));
    }
    let mut agents: Vec<AgentView> = (0..AGENTS)
        .map(|i| AgentView {
            id: format!("a{i}"),
            site: "north".into(),
            available: true,
            skills: BTreeMap::from([("scheduling".to_string(), 1 + (i % 5) as u8)]),
            capacity: BTreeMap::from([("chat".to_string(), 3), ("voice".to_string(), 1)]),
            load: BTreeMap::new(),
            idle_since: now - Duration::seconds(i as i64),
            pending_offers: 0,
        })
        .collect();
    let skip = BTreeSet::new();
    let mut lat = Vec::new();
    let wall = Instant::now();
    let mut freed = 0usize;
    while lat.len() < 5_000 {
        let t = Instant::now();
        let p = q.propose(&agents, now, &cfg, &skip);
        match p {
            Some(p) => {
                let c = q.remove(&p.contact_id).unwrap();
                lat.push(t.elapsed().as_secs_f64());
                let a = agents.iter_mut().find(|a| a.id == p.agent_id).unwrap();
                *a.load.entry(c.channel.as_str().to_string()).or_default() += 1;
                // Keep the queue at 10,000 waiting.
                q.insert(contact(CONTACTS + lat.len(), &cfg, now));
            }
            None => {
                // Everyone is full: free one slot on the next agent (not timed).
                let a = &mut agents[freed % AGENTS];
                a.load.clear();
                freed += 1;
            }
        }
    }
    report(
        "pure QueueState, 10,000 waiting, 500 agents",
        lat,
        wall.elapsed().as_secs_f64(),
    );
}

/// Collects decision latencies reported by the router.
#[derive(Default)]
struct Collect(Mutex<Vec<f64>>);

impl RoutingObserver for Collect {
    fn queued(&self, _: &str, _: &str, _: &str) {}
    fn offer(&self, _: &str, _: &str, _: &'static str) {}
    fn answered(&self, _: &str, _: &str, _: bool) {}
    fn abandoned(&self, _: &str, _: &str) {}
    fn escalation(&self, _: &'static str) {}
    fn overflow(&self, _: &str, _: &str, _: &str, _: u64) {}
    fn bot_contact(&self, _: &'static str) {}
    fn decision(&self, secs: f64) {
        self.0.lock().unwrap().push(secs);
    }
    fn queue(&self, _: &QueueSnapshot) {}
    fn agents(&self, _: &str, _: &'static str, _: u64) {}
    fn containment(&self, _: f64) {}
}

fn through_actors() {
    let sys = actix::System::new();
    sys.block_on(async {
        let observer = Arc::new(Collect::default());
        let routing = Routing::new(RoutingDeps {
            config: RoutingConfig::default(),
            clock: Arc::new(ManualClock::new(Utc::now())),
            store: Arc::new(MemoryRoutingStore::default()),
            observer: observer.clone(),
            sites: Arc::default(),
        });
        routing.activate().await.unwrap();
        let site = SiteId::parse("north").unwrap();
        // 500 agents signed in but away, so the contacts wait.
        for i in 0..AGENTS {
            routing
                .agent_state(AgentUpdate {
                    agent_id: format!("a{i}"),
                    site: site.clone(),
                    presence: Presence::Away,
                    skills: BTreeMap::from([("scheduling".to_string(), 1 + (i % 5) as u8)]),
                    capacity: BTreeMap::from([("chat".to_string(), 3), ("voice".to_string(), 1)]),
                })
                .await
                .unwrap();
        }
        let fill = Instant::now();
        for i in 0..CONTACTS {
            let mut n = NeedsHuman::routine(
                ContactId::parse(&format!("c{i}")).unwrap(),
                PatientId::new(),
                site.clone(),
                if i.is_multiple_of(3) {
                    Channel::Voice
                } else {
                    Channel::Chat
                },
                "scheduling",
            );
            n.intent = Some(["billing", "scheduling", "prescription", "clinical"][i % 4].into());
            n.base_priority = [50, 100, 200, 300][i % 4];
            routing
                .route(RouteRequest::Queue(Box::new(n)), None)
                .await
                .unwrap();
        }
        println!(
            "queued {CONTACTS} contacts through the router in {:.3} s (no agent available)",
            fill.elapsed().as_secs_f64()
        );
        // Agents become available one by one: each sign-in triggers decisions.
        let wall = Instant::now();
        for i in 0..AGENTS {
            routing
                .agent_state(AgentUpdate {
                    agent_id: format!("a{i}"),
                    site: site.clone(),
                    presence: Presence::Available,
                    skills: BTreeMap::from([("scheduling".to_string(), 1 + (i % 5) as u8)]),
                    capacity: BTreeMap::from([("chat".to_string(), 3), ("voice".to_string(), 1)]),
                })
                .await
                .unwrap();
        }
        let lat = observer.0.lock().unwrap().clone();
        report(
            "router task + queue and agent actors, 10,000 waiting, 500 agents",
            lat,
            wall.elapsed().as_secs_f64(),
        );
    });
}

fn main() {
    pure_queue();
    through_actors();
}
