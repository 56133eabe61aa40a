//! Cluster drills: three runtime processes (the real binary) on one PostgreSQL
//! database and one broker topology, killed with SIGKILL as an operator's worst day
//! would. Each drill asserts nothing lost and nothing doubled.
//!
//! The nodes run with a short lease (3 s, renewed every 500 ms) so a takeover fits
//! in a test; docs/operations.md gives the production defaults.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use frontdoor::configuration::{BrokerSettings, StoreSettings};
use frontdoor::store::Store;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{json, Value};
use sqlx::{Connection, Row};
use uuid::Uuid;

use crate::amqp::{amqp_url, enable_broker, eventually, Adapter};
use crate::chaos::ChaosProxy;
use crate::child::{command, free_port};
use crate::drills::{assert_exactly_once, assert_in_order, publish_all, workload};
use crate::helpers::{days_ago, event, test_settings, Backend, FencedPair};

const WITHIN: Duration = Duration::from_secs(60);
/// The development admin token the nodes' local configuration accepts.
const TOKEN: &str = "dev-admin-local-token";
/// Lease timing of the drills' nodes.
const LEASE_TTL_MS: u64 = 3_000;
const RENEW_MS: u64 = 500;

/// One runtime process.
struct Node {
    /// Its cluster id.
    id: String,
    /// Its API port.
    port: u16,
    /// The process (None once killed or stopped).
    child: Option<Child>,
    /// Its log file.
    log: PathBuf,
    /// Extra environment (faults put a proxy in front of a dependency).
    env: Vec<(String, String)>,
}

/// Several nodes on one database and one broker topology.
struct TestCluster {
    /// The database URL every node uses.
    db_url: String,
    /// Broker names (the adapter and cleanup use them).
    broker: BrokerSettings,
    /// The nodes, by index.
    nodes: Vec<Node>,
    /// HTTP client.
    client: reqwest::Client,
    /// Where logs go.
    dir: PathBuf,
    /// A store connection for assertions.
    store: Store,
    /// Partition count.
    partitions: u16,
}

impl TestCluster {
    /// A fresh database and topology, and `n` nodes started and settled.
    async fn start(n: usize, partitions: u16) -> TestCluster {
        let (mut settings, _) = test_settings(Backend::Postgres).await;
        enable_broker(&mut settings, &amqp_url());
        settings.broker.partitions = partitions;
        let db_url = settings.store.url.expose_secret().to_string();
        let store = Store::connect(&StoreSettings {
            url: SecretString::from(db_url.clone()),
            ..settings.store.clone()
        })
        .await
        .expect("a store connection for the drill");
        let dir = std::env::temp_dir().join(format!("frontdoor-cluster-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("a log dir");
        let mut c = TestCluster {
            db_url,
            broker: settings.broker.clone(),
            nodes: Vec::new(),
            client: reqwest::Client::new(),
            dir,
            store,
            partitions,
        };
        for _ in 0..n {
            c.add_node(Vec::new());
        }
        let all: Vec<usize> = (0..n).collect();
        c.wait_settled(&all).await;
        c
    }

    /// Starts one more node (`env` overrides its settings); answers its index.
    fn add_node(&mut self, env: Vec<(String, String)>) -> usize {
        let i = self.nodes.len();
        let id = format!("node-{}", i + 1);
        let port = free_port();
        let log = self.dir.join(format!("{id}.log"));
        let mut node = Node {
            id,
            port,
            child: None,
            log,
            env,
        };
        self.spawn(&mut node);
        self.nodes.push(node);
        i
    }

    fn spawn(&self, node: &mut Node) {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("a log file");
        let err = out.try_clone().expect("a log file");
        let mut settings = frontdoor::configuration::base_configuration().unwrap();
        settings.store.url = SecretString::from(self.db_url.clone());
        settings.broker = self.broker.clone();
        let mut cmd = command(&settings, node.port);
        cmd.env("RUST_LOG", "info,frontdoor=debug")
            .env("FRONTDOOR__TELEMETRY__FORMAT", "json")
            .env("FRONTDOOR__APPLICATION__SHUTDOWN_GRACE_SECS", "10")
            .env("FRONTDOOR__STORE__MAX_CONNECTIONS", "6")
            .env("FRONTDOOR__CLUSTER__ENABLED", "true")
            .env("FRONTDOOR__CLUSTER__NODE_ID", &node.id)
            .env("FRONTDOOR__CLUSTER__LEASE_TTL_MS", LEASE_TTL_MS.to_string())
            .env(
                "FRONTDOOR__CLUSTER__RENEW_INTERVAL_MS",
                RENEW_MS.to_string(),
            )
            .env("FRONTDOOR__CLUSTER__RPC_TIMEOUT_MS", "3000")
            .env("FRONTDOOR__SECURITY__EVENTS_RATE_PER_SEC", "100000")
            .env("FRONTDOOR__SECURITY__EVENTS_BURST", "100000");
        for (k, v) in &node.env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the frontdoor binary starts");
        node.child = Some(child);
    }

    fn url(&self, i: usize, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.nodes[i].port)
    }

    /// Sends a request as the admin: status (0 when it failed) and JSON body.
    async fn send(&self, req: reqwest::RequestBuilder, timeout: Duration) -> (u16, Value) {
        match req.bearer_auth(TOKEN).timeout(timeout).send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn get(&self, i: usize, path: &str) -> (u16, Value) {
        let req = self.client.get(self.url(i, path));
        self.send(req, Duration::from_secs(10)).await
    }

    async fn post(&self, i: usize, path: &str, body: &Value) -> (u16, Value) {
        let req = self.client.post(self.url(i, path)).json(body);
        self.send(req, Duration::from_secs(60)).await
    }

    /// Posts an event to node `i` and asserts it was stored (202).
    async fn store_event(&self, i: usize, e: &Value) -> Value {
        let (status, body) = self.post(i, "/v1/events", e).await;
        assert_eq!(status, 202, "node {i} did not store {}: {body}", e["type"]);
        body
    }

    /// `GET /v1/runtime` of node `i`.
    async fn runtime(&self, i: usize) -> Option<Value> {
        let (status, body) = self.get(i, "/v1/runtime").await;
        (status == 200).then_some(body)
    }

    /// Waits until the live nodes `live` hold every partition between them (each its
    /// floor or ceiling share), agree on it, and one of them leads; answers the
    /// leader's index.
    async fn wait_settled(&self, live: &[usize]) -> usize {
        let p = usize::from(self.partitions);
        let n = live.len();
        let logs = self.log_hint();
        eventually(
            WITHIN,
            &format!("{n} nodes settled; logs: {logs}"),
            || async {
                let mut leader = None;
                let mut total = 0;
                let mut views = Vec::new();
                for &i in live {
                    let rt = self.runtime(i).await?;
                    let c = &rt["cluster"];
                    let owned = c["owned"].as_array()?.len();
                    if owned != p / n && owned != p.div_ceil(n) {
                        return None;
                    }
                    total += owned;
                    if c["leading"] == true {
                        leader = Some(i);
                    }
                    views.push(c["leader"].clone());
                }
                let same = views.windows(2).all(|w| w[0] == w[1]);
                (total == p && same).then_some(())?;
                leader
            },
        )
        .await
    }

    fn log_hint(&self) -> String {
        self.dir.display().to_string()
    }

    /// SIGKILL: no drain, no lease released.
    fn kill(&mut self, i: usize) -> Instant {
        let at = Instant::now();
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        at
    }

    /// The index of the node that leads now (as the live nodes see it).
    async fn leader(&self, live: &[usize]) -> Option<usize> {
        for &i in live {
            if self.runtime(i).await?["cluster"]["leading"] == true {
                return Some(i);
            }
        }
        None
    }

    /// Which node owns the partition of `patient_id`.
    async fn owner_of(&self, any: usize, patient_id: &str) -> String {
        let rt = self.runtime(any).await.expect("runtime view");
        let id = Uuid::parse_str(patient_id).expect("a patient UUID");
        let p = (id.as_u128() % u128::from(self.partitions)) as u32;
        rt["cluster"]["owners"][p.to_string()]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The events each node stored and applied (its own counter).
    async fn applied(&self, i: usize) -> f64 {
        let Ok(r) = self.client.get(self.url(i, "/metrics")).send().await else {
            return 0.0;
        };
        let text = r.text().await.unwrap_or_default();
        text.lines()
            .find(|l| l.starts_with("frontdoor_events_applied_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// Offer commands per contact in the outbox.
    async fn offers_by_contact(&self) -> HashMap<String, Vec<String>> {
        let mut conn = sqlx::PgConnection::connect(&self.db_url)
            .await
            .expect("a connection");
        let rows = sqlx::query(
            "SELECT body FROM outbox WHERE command_type = 'contact.offer' ORDER BY seq",
        )
        .fetch_all(&mut conn)
        .await
        .expect("offers");
        let mut out: HashMap<String, Vec<String>> = HashMap::new();
        for r in rows {
            let body: String = r.get(0);
            let v: Value = serde_json::from_str(&body).expect("json");
            out.entry(v["contact_id"].as_str().unwrap_or_default().to_string())
                .or_default()
                .push(v["agent_id"].as_str().unwrap_or_default().to_string());
        }
        out
    }

    /// SIGTERM every live node and wait for it; removes the topology.
    async fn stop(mut self, adapter: Option<Adapter>) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                unsafe {
                    libc::kill(c.id() as i32, libc::SIGTERM);
                }
                let deadline = Instant::now() + Duration::from_secs(20);
                while Instant::now() < deadline {
                    if let Ok(Some(_)) = c.try_wait() {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let adapter = match adapter {
            Some(a) => a,
            None => {
                let mut s = frontdoor::configuration::base_configuration().unwrap();
                s.broker = self.broker.clone();
                Adapter::connect(&s).await
            }
        };
        adapter.cleanup().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

fn contact_started(mrn: &str, contact: &str, channel: &str, skill: &str) -> Value {
    event(
        "contact.started",
        channel,
        days_ago(0, 0),
        json!({"mrn": mrn}),
        json!({"contact_id": contact, "skill": skill}),
    )
}

fn agent_state(capacity_chat: u32) -> Value {
    json!({"site": "north", "state": "available", "skills": {"billing": 3},
           "capacity": {"chat": capacity_chat, "voice": 1}})
}

/// An adapter on the cluster's topology.
async fn adapter_for(c: &TestCluster) -> Adapter {
    let mut s = frontdoor::configuration::base_configuration().unwrap();
    s.broker = c.broker.clone();
    Adapter::connect(&s).await
}

#[actix_web::test]
async fn drill_a_an_agent_signed_in_on_one_node_is_offered_contacts_of_patients_owned_by_the_others(
) {
    let c = TestCluster::start(3, 8).await;
    let (status, _) = c.post(0, "/v1/agents/ag-a/state", &agent_state(20)).await;
    assert_eq!(status, 200);
    let tag = &Uuid::new_v4().simple().to_string()[..6];
    let mut contacts = Vec::new();
    let mut owners = HashSet::new();
    for i in 0..15 {
        let contact = format!("a-{tag}-{i}");
        let body = c
            .store_event(
                i % 3,
                &contact_started(&format!("MRN-A-{tag}-{i}"), &contact, "chat", "billing"),
            )
            .await;
        owners.insert(c.owner_of(0, body["patient_id"].as_str().unwrap()).await);
        contacts.push(contact);
    }
    assert!(
        owners.contains("node-2") && owners.contains("node-3"),
        "patients owned by the other nodes: {owners:?}"
    );
    for contact in &contacts {
        eventually(WITHIN, &format!("{contact} offered to ag-a"), || async {
            let (_, v) = c.get(1, &format!("/v1/contacts/{contact}")).await;
            (v["state"] == "offered" && v["offered_to"] == "ag-a").then_some(())
        })
        .await;
    }
    let offers = c.offers_by_contact().await;
    for contact in &contacts {
        assert_eq!(
            offers.get(contact).map(Vec::len),
            Some(1),
            "{contact} offered exactly once"
        );
    }
    assert_eq!(
        c.store.count_events(None).await.unwrap(),
        15,
        "every event stored once"
    );
    c.stop(None).await;
}

#[actix_web::test]
async fn drill_b_every_node_applies_events_published_through_the_broker() {
    let c = TestCluster::start(3, 8).await;
    let adapter = adapter_for(&c).await;
    let published = workload(300, 300);
    publish_all(&adapter, &published).await;
    eventually(WITHIN, "300 events stored", || async {
        (c.store.count_events(None).await.ok()? >= 300).then_some(())
    })
    .await;
    assert_exactly_once(&c.store, &published).await;
    let mut applied = Vec::new();
    for i in 0..3 {
        applied.push(c.applied(i).await);
    }
    assert_eq!(applied.iter().sum::<f64>(), 300.0, "{applied:?}");
    // 8 partitions over 3 nodes: 3/3/2, so each node applies about 3/8 or 2/8.
    assert!(
        applied.iter().all(|a| *a >= 40.0),
        "every node applies its share: {applied:?}"
    );
    c.stop(Some(adapter)).await;
}

#[actix_web::test]
async fn drill_c_a_read_on_one_node_right_after_a_write_accepted_by_another_sees_it() {
    let c = TestCluster::start(3, 8).await;
    let tag = &Uuid::new_v4().simple().to_string()[..6];
    for i in 0..30 {
        let mrn = format!("MRN-C-{tag}-{i}");
        let appt = format!("appt-{tag}-{i}");
        let (writer, reader) = (2 - (i % 3), i % 3);
        let body = c
            .store_event(
                writer,
                &event(
                    "appointment.booked",
                    "portal",
                    days_ago(0, 0),
                    json!({"mrn": mrn}),
                    json!({"appointment_id": appt, "starts_at": days_ago(-3, 0).to_rfc3339(),
                           "department": "dermatology", "reason": "rash"}),
                ),
            )
            .await;
        let pid = body["patient_id"].as_str().unwrap();
        let (status, ctx) = c.get(reader, &format!("/v1/patients/{pid}/context")).await;
        assert_eq!(status, 200, "{ctx}");
        assert!(
            ctx.to_string().contains(&appt),
            "node {reader} sees the booking node {writer} accepted: {ctx}"
        );
    }
    c.stop(None).await;
}

#[actix_web::test]
async fn drill_d_the_leader_killed_with_contacts_queued_and_offered_every_contact_is_offered_again_once(
) {
    let mut c = TestCluster::start(3, 8).await;
    let leader = c.wait_settled(&[0, 1, 2]).await;
    let other = (leader + 1) % 3;
    let (status, _) = c
        .post(other, "/v1/agents/ag-d1/state", &agent_state(2))
        .await;
    assert_eq!(status, 200);
    let tag = &Uuid::new_v4().simple().to_string()[..6];
    let contacts: Vec<String> = (0..8).map(|i| format!("d-{tag}-{i}")).collect();
    for (i, contact) in contacts.iter().enumerate() {
        c.store_event(
            i % 3,
            &contact_started(&format!("MRN-D-{tag}-{i}"), contact, "chat", "billing"),
        )
        .await;
    }
    async fn states(c: &TestCluster, node: usize, contacts: &[String]) -> BTreeMap<String, usize> {
        let mut by = BTreeMap::new();
        for contact in contacts {
            let (_, v) = c.get(node, &format!("/v1/contacts/{contact}")).await;
            *by.entry(v["state"].as_str().unwrap_or("none").to_string())
                .or_insert(0) += 1;
        }
        by
    }
    eventually(WITHIN, "2 offered and 6 queued", || async {
        let by = states(&c, other, &contacts).await;
        (by.get("offered") == Some(&2) && by.get("queued") == Some(&6)).then_some(())
    })
    .await;

    let killed_at = c.kill(leader);
    let live: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let new_leader = eventually(WITHIN, "a new leader", || async { c.leader(&live).await }).await;
    let took = killed_at.elapsed();
    assert!(
        took < Duration::from_millis(LEASE_TTL_MS) + Duration::from_secs(10),
        "new leader within the bound: {took:?}"
    );
    // Rebuilt from the store: the same offers and the same waiting contacts, and the
    // agent is known without announcing itself again.
    let by = states(&c, live[0], &contacts).await;
    assert_eq!(
        (by.get("offered"), by.get("queued")),
        (Some(&2), Some(&6)),
        "{by:?}"
    );
    let (_, agents) = c.get(new_leader, "/v1/agents").await;
    assert_eq!(agents["agents"][0]["agent_id"], "ag-d1", "{agents}");
    // A second agent signs in on a surviving node: every waiting contact is offered.
    let (status, _) = c
        .post(live[1], "/v1/agents/ag-d2/state", &agent_state(8))
        .await;
    assert_eq!(status, 200);
    eventually(WITHIN, "all 8 offered", || async {
        (states(&c, live[0], &contacts).await.get("offered") == Some(&8)).then_some(())
    })
    .await;
    let offers = c.offers_by_contact().await;
    let mut holders: HashMap<String, usize> = HashMap::new();
    let (_, agents) = c.get(live[0], "/v1/agents").await;
    for a in agents["agents"].as_array().unwrap() {
        let load = a["offers"].as_array().unwrap().len() + a["contacts"].as_array().unwrap().len();
        let cap = a["capacity"]["chat"].as_u64().unwrap() as usize;
        assert!(load <= cap, "{} over capacity: {a}", a["agent_id"]);
        for o in a["offers"].as_array().unwrap() {
            *holders.entry(o.as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    for contact in &contacts {
        assert_eq!(
            holders.get(contact),
            Some(&1),
            "{contact} held by exactly one agent"
        );
        assert_eq!(
            offers.get(contact).map(Vec::len),
            Some(1),
            "{contact}: one offer command, never re-offered to a second agent: {:?}",
            offers.get(contact)
        );
    }
    c.stop(None).await;
}

#[actix_web::test]
async fn drill_e_a_partition_owner_killed_amid_2000_events_for_50_patients_loses_nothing_and_keeps_order(
) {
    let mut c = TestCluster::start(3, 8).await;
    let adapter = adapter_for(&c).await;
    let published = workload(2_000, 50);
    let leader = c.leader(&[0, 1, 2]).await.expect("a leader");
    let victim = (leader + 1) % 3;
    publish_all(&adapter, &published).await;
    eventually(WITHIN, "a quarter stored", || async {
        (c.store.count_events(None).await.ok()? >= 500).then_some(())
    })
    .await;
    c.kill(victim);
    let live: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    c.wait_settled(&live).await;
    eventually(WITHIN * 3, "all 2000 stored", || async {
        (c.store.count_events(None).await.ok()? >= 2_000
            && adapter.ready_in_partitions().await == 0)
            .then_some(())
    })
    .await;
    assert_exactly_once(&c.store, &published).await;
    assert_in_order(&c.store, &published).await;
    c.stop(Some(adapter)).await;
}

#[actix_web::test]
async fn drill_f_a_node_joining_takes_its_share_with_nothing_reordered_or_lost() {
    let mut c = TestCluster::start(2, 8).await;
    let adapter = adapter_for(&c).await;
    let published = workload(2_000, 50);
    let (first, second) = published.split_at(1_000);
    publish_all(&adapter, first).await;
    let joined = c.add_node(Vec::new());
    publish_all(&adapter, second).await;
    c.wait_settled(&[0, 1, joined]).await;
    eventually(WITHIN * 3, "all 2000 stored", || async {
        (c.store.count_events(None).await.ok()? >= 2_000
            && adapter.ready_in_partitions().await == 0)
            .then_some(())
    })
    .await;
    assert_exactly_once(&c.store, &published).await;
    assert_in_order(&c.store, &published).await;
    // The new node serves its partitions: an event of a patient it owns lands there.
    let tag = &Uuid::new_v4().simple().to_string()[..6];
    let mut applied_there = false;
    for i in 0..30 {
        let body = c
            .store_event(
                0,
                &event(
                    "note.recorded",
                    "portal",
                    days_ago(0, 0),
                    json!({"mrn": format!("MRN-F-{tag}-{i}")}),
                    json!({"text": "joined", "author": "nurse-1"}),
                ),
            )
            .await;
        if c.owner_of(0, body["patient_id"].as_str().unwrap()).await == "node-3" {
            applied_there = true;
            break;
        }
    }
    assert!(applied_there, "the joined node owns patients");
    assert!(c.applied(joined).await >= 1.0);
    c.stop(Some(adapter)).await;
}

#[actix_web::test]
async fn a_node_whose_partition_count_differs_refuses_to_join_and_reports_not_ready() {
    let mut c = TestCluster::start(2, 8).await;
    let odd = c.add_node(vec![(
        "FRONTDOOR__BROKER__PARTITIONS".to_string(),
        "4".to_string(),
    )]);
    let (status, body) = eventually(WITHIN, "the odd node answering", || async {
        let (s, b) = c.get(odd, "/readyz").await;
        (s != 0 && b["detail"].as_str().unwrap_or("").contains("refused")).then_some((s, b))
    })
    .await;
    assert_eq!(status, 503, "{body}");
    let rt = c.runtime(odd).await.unwrap();
    assert_eq!(rt["cluster"]["owned"], json!([]), "it splits nothing: {rt}");
    let log = std::fs::read_to_string(&c.nodes[odd].log).unwrap_or_default();
    assert_eq!(
        log.matches("refusing to join the cluster").count(),
        1,
        "one clear line"
    );
    // The two members keep every partition between them.
    c.wait_settled(&[0, 1]).await;
    c.kill(odd);
    c.stop(None).await;
}

#[actix_web::test]
async fn a_node_that_loses_postgresql_gives_up_its_partitions_and_the_others_take_them() {
    let pg = ChaosProxy::start("127.0.0.1:5432").await;
    let mut c = TestCluster::start(2, 8).await;
    let proxied = c
        .db_url
        .replace("127.0.0.1:5432", &format!("127.0.0.1:{}", pg.port));
    let cut = c.add_node(vec![
        ("FRONTDOOR__STORE__URL".to_string(), proxied),
        (
            "FRONTDOOR__STORE__ACQUIRE_TIMEOUT_SECS".to_string(),
            "1".to_string(),
        ),
    ]);
    c.wait_settled(&[0, 1, cut]).await;
    pg.down();
    // It stops applying on its own (before its leases can expire), and the others
    // take its partitions.
    eventually(WITHIN, "the cut node owning nothing", || async {
        let rt = c.runtime(cut).await?;
        (rt["cluster"]["owned"] == json!([])).then_some(())
    })
    .await;
    c.wait_settled(&[0, 1]).await;
    // Events keep flowing through the others.
    let tag = &Uuid::new_v4().simple().to_string()[..6];
    for i in 0..10 {
        c.store_event(
            i % 2,
            &contact_started(
                &format!("MRN-G-{tag}-{i}"),
                &format!("g-{tag}-{i}"),
                "chat",
                "billing",
            ),
        )
        .await;
    }
    pg.up();
    c.wait_settled(&[0, 1, cut]).await;
    c.stop(None).await;
}

#[actix_web::test]
async fn a_node_that_loses_its_broker_connection_hands_its_partitions_to_the_others() {
    let amqp = ChaosProxy::start("127.0.0.1:5672").await;
    let mut c = TestCluster::start(2, 8).await;
    let cut = c.add_node(vec![(
        "FRONTDOOR__BROKER__URL".to_string(),
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", amqp.port),
    )]);
    c.wait_settled(&[0, 1, cut]).await;
    let adapter = adapter_for(&c).await;
    let published = workload(600, 60);
    amqp.down();
    publish_all(&adapter, &published).await;
    c.wait_settled(&[0, 1]).await;
    eventually(WITHIN * 2, "all 600 stored by the others", || async {
        (c.store.count_events(None).await.ok()? >= 600 && adapter.ready_in_partitions().await == 0)
            .then_some(())
    })
    .await;
    assert_exactly_once(&c.store, &published).await;
    amqp.up();
    c.wait_settled(&[0, 1, cut]).await;
    c.stop(Some(adapter)).await;
}

#[actix_web::test]
async fn a_node_that_lost_a_partition_lease_can_no_longer_write_for_that_partition() {
    use frontdoor::store::StoreError;
    use frontdoor_actors::event::Envelope;
    use frontdoor_actors::ids::PatientId;

    let pair = FencedPair::new().await;
    let (a, b) = (pair.a.clone(), pair.b.clone());
    a.cluster_prepare_leases(&["partition:1".to_string()])
        .await
        .unwrap();
    // A takes the lease for 300 ms and writes.
    let got = a
        .cluster_acquire("partition:1", "node-0", 300)
        .await
        .unwrap();
    pair.set_token(0, got.unwrap().token);
    let patient = loop {
        let p = PatientId::new();
        if p.partition(4) == 1 {
            break p;
        }
    };
    let ev = |n: u32| {
        Envelope::parse(
            event(
                "note.recorded",
                "portal",
                days_ago(0, 0),
                json!({"mrn": format!("MRN-FENCE-{n}")}),
                json!({"text": "fence", "author": "nurse-1"}),
            )
            .to_string()
            .as_bytes(),
            1 << 16,
        )
        .unwrap()
    };
    a.append_event(patient, &ev(1), &Default::default())
        .await
        .expect("A holds the lease");
    // A stalls past its lease; B takes the partition with a newer token.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let got = b
        .cluster_acquire("partition:1", "node-1", 60_000)
        .await
        .unwrap();
    let taken = got.expect("B takes the expired lease");
    assert!(taken.token > pair.token(0).unwrap());
    pair.set_token(1, taken.token);
    // A, not knowing, writes with its old token: refused, nothing stored.
    let stale = a.append_event(patient, &ev(2), &Default::default()).await;
    assert!(
        matches!(stale, Err(StoreError::Fenced(_))),
        "the old holder's write is refused: {stale:?}"
    );
    b.append_event(patient, &ev(3), &Default::default())
        .await
        .expect("B holds the lease");
    assert_eq!(a.count_events(Some(patient)).await.unwrap(), 2);
}

/// Live configuration in a cluster: a change taken by one node is in force on every
/// node within a few seconds, each shows the same `config_version`, and a node that
/// joins later starts with it.
#[actix_web::test]
async fn a_configuration_change_on_one_node_is_in_force_on_every_node_within_seconds() {
    let mut c = TestCluster::start(3, 4).await;
    let req = c
        .client
        .put(c.url(1, "/v1/runtime/config"))
        .json(&json!({"routing": {"offer_timeout_secs": 45}, "reason": "night shift"}));
    let changed = Instant::now();
    let (status, body) = c.send(req, Duration::from_secs(10)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config_version"], 2);
    for i in 0..3 {
        eventually(
            Duration::from_secs(5),
            &format!("node {i} on version 2"),
            || async {
                let rt = c.runtime(i).await?;
                let (_, cfg) = c.get(i, "/v1/runtime/config").await;
                (rt["config_version"] == 2 && cfg["config"]["routing"]["offer_timeout_secs"] == 45)
                    .then_some(())
            },
        )
        .await;
    }
    let all_in_force = changed.elapsed();
    assert!(all_in_force < Duration::from_secs(4), "{all_in_force:?}");
    let joined = c.add_node(Vec::new());
    eventually(WITHIN, "the joining node up", || async {
        let rt = c.runtime(joined).await?;
        (rt["config_version"] == 2).then_some(())
    })
    .await;
    c.stop(None).await;
}
