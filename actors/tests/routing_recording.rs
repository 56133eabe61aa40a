//! What the router records for `frontdoor replay`: each run of its timers that
//! decided something takes its place among the applied inputs, also when it only
//! changed an agent or a contact the same step had already changed, or only
//! started a site overflowing (which decides later moves, and so is written for
//! the next leader too).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use frontdoor_actors::event::Channel;
use frontdoor_actors::ids::{ContactId, PatientId, SiteId};
use frontdoor_actors::routing::agent::Presence;
use frontdoor_actors::routing::request::{NeedsHuman, RouteRequest};
use frontdoor_actors::routing::router::{AgentUpdate, MemoryRoutingStore, Routing, RoutingDeps};
use frontdoor_actors::routing::{ManualClock, RoutingConfig};

fn nurse(capacity: u32) -> AgentUpdate {
    AgentUpdate {
        agent_id: "a0".to_string(),
        site: SiteId::parse("north").unwrap(),
        presence: Presence::Available,
        skills: BTreeMap::from([("nurse_advice".to_string(), 5)]),
        capacity: BTreeMap::from([("chat".to_string(), capacity)]),
    }
}

fn chat(id: &str) -> RouteRequest {
    chat_for(id, "nurse_advice")
}

fn chat_for(id: &str, skill: &str) -> RouteRequest {
    RouteRequest::Queue(Box::new(NeedsHuman::routine(
        ContactId::parse(id).unwrap(),
        PatientId::new(),
        SiteId::parse("north").unwrap(),
        Channel::Chat,
        skill,
    )))
}

fn ticks(store: &MemoryRoutingStore) -> usize {
    store
        .inputs
        .lock()
        .unwrap()
        .iter()
        .filter(|i| i.tick)
        .count()
}

async fn started() -> (Arc<ManualClock>, Arc<MemoryRoutingStore>, Routing) {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let (routing, store) = Routing::in_memory(clock.clone());
    routing.activate().await.unwrap();
    (clock, store, routing)
}

async fn wrap_up_ending_in_a_step_that_already_changed_the_agent() -> usize {
    let (clock, store, routing) = started().await;
    routing.agent_state(nurse(1)).await.unwrap();
    routing.route(chat("c0"), None).await.unwrap();
    routing.offer_accepted("a0", "c0").await.unwrap();
    let ended = RouteRequest::Ended {
        contact_id: ContactId::parse("c0").unwrap(),
        intent: None,
    };
    routing.route(ended, None).await.unwrap();
    // A timer run with nothing due is not recorded.
    clock.advance(Duration::from_secs(1));
    routing.tick().await;
    assert_eq!(ticks(&store), 0, "a timer run that decided nothing");
    // The wrap-up is over: the agent's new capacity and the timer run that ends
    // its wrap-up reach the router together and are written as one step.
    clock.advance(Duration::from_secs(
        u64::from(RoutingConfig::default().wrap_up_secs) + 1,
    ));
    let (changed, ()) = tokio::join!(routing.agent_state(nurse(2)), routing.tick());
    changed.unwrap();
    let agents = routing.agents().await;
    assert!(
        agents[0].assignments.is_empty(),
        "the wrap-up ended: {agents:?}"
    );
    ticks(&store)
}

#[test]
fn a_timer_run_that_ends_a_wrap_up_is_recorded_even_when_the_step_already_changed_the_agent() {
    let recorded =
        actix::System::new().block_on(wrap_up_ending_in_a_step_that_already_changed_the_agent());
    assert_eq!(
        recorded, 1,
        "the timer run that ended the wrap-up is recorded"
    );
}

/// Ticks recorded by a timer run that only started a site overflowing, and by
/// the run after it (which changes nothing), with the commands each wrote.
async fn a_site_starting_to_overflow_with_nowhere_to_send() -> Vec<(usize, usize)> {
    let (clock, store, routing) = started().await;
    // A scheduling chat waits at north and no site has an agent: north is
    // saturated, and there is no target to move it to.
    routing
        .route(chat_for("c0", "scheduling"), None)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..2 {
        clock.advance(Duration::from_secs(1));
        routing.tick().await;
        let commands = store.commands.lock().unwrap().len();
        seen.push((ticks(&store), commands));
    }
    let queues = routing.queues().await;
    assert!(
        queues.iter().any(|q| q.overflowing),
        "north is overflowing: {queues:?}"
    );
    seen
}

#[test]
fn a_timer_run_that_only_starts_a_site_overflowing_is_recorded_once() {
    let seen = actix::System::new().block_on(a_site_starting_to_overflow_with_nowhere_to_send());
    assert_eq!(seen[0].0, 1, "the run that flipped the flag is recorded");
    assert_eq!(
        seen[0].1, seen[1].1,
        "neither run wrote a command: {seen:?}"
    );
    assert_eq!(seen[1].0, 1, "the next run, which changed nothing, is not");
}

/// Whether a router built afresh on `store` (the next leader) sees a site
/// overflowing, after the last one started north overflowing.
async fn a_new_leader_after_a_site_started_overflowing() -> bool {
    let (clock, store, routing) = started().await;
    routing
        .route(chat_for("c0", "scheduling"), None)
        .await
        .unwrap();
    clock.advance(Duration::from_secs(1));
    routing.tick().await;
    assert!(routing.queues().await.iter().any(|q| q.overflowing));
    drop(routing);
    let next = Routing::new(RoutingDeps {
        config: RoutingConfig::default(),
        clock: clock.clone(),
        store,
        observer: Arc::new(frontdoor_actors::ports::NoObserver),
        sites: Arc::default(),
    });
    next.activate().await.unwrap();
    next.queues().await.iter().any(|q| q.overflowing)
}

#[test]
fn a_new_leader_keeps_shedding_where_the_last_one_did() {
    assert!(
        actix::System::new().block_on(a_new_leader_after_a_site_started_overflowing()),
        "north is still overflowing under the next leader"
    );
}
