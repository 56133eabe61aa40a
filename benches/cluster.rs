//! Cluster benchmark (`cargo bench --bench cluster`): real runtime processes (the
//! release `frontdoor` binary) on one PostgreSQL database and one RabbitMQ topology.
//!
//! Prints, from one run:
//! 1. end-to-end throughput with 1, 2 and 3 nodes: once the nodes have settled (each
//!    holds its share of the partitions), N events for M patients are published to the
//!    broker with pipelined confirms, timed from the first publish to the last event
//!    stored (each node consumes the partitions it owns and forwards events to their
//!    patients' owners), with each node's share of the applied events;
//! 2. takeover: K times, the leader is killed with SIGKILL while contacts keep coming
//!    in (one every 200 ms through a surviving node, an agent with room available);
//!    the time from the kill to the first contact posted after the kill being offered
//!    (p50, p99, max), next to the lease TTL it includes. The killed node is started
//!    again before the next round.
//!
//! Environment: BENCH_EVENTS (N, 20000), BENCH_PATIENTS (M, 2000), BENCH_KILLS (K, 20),
//! BENCH_AMQP_URL, BENCH_POSTGRES_URL. The nodes run with the production defaults of
//! `[cluster]` (5 s lease renewed every second) and 16 partitions.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use serde_json::{json, Value};
use sqlx::Connection as _;
use uuid::Uuid;

const TOKEN: &str = "dev-admin-local-token";
const PARTITIONS: u16 = 16;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

/// One run's database and topology names.
struct Env {
    pg: String,
    amqp: String,
    db: String,
    tag: String,
    dir: std::path::PathBuf,
}

impl Env {
    async fn new() -> Env {
        let pg = env_str("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432");
        let amqp = env_str("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
        let db = format!("frontdoor_bench_cluster_{tag}");
        let mut admin = sqlx::PgConnection::connect(&format!("{pg}/postgres"))
            .await
            .expect("PostgreSQL");
        sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{db}""#)))
            .execute(&mut admin)
            .await
            .expect("create the bench database");
        let dir = std::env::temp_dir().join(format!("frontdoor-bench-{tag}"));
        std::fs::create_dir_all(&dir).expect("a log dir");
        Env {
            pg,
            amqp,
            db,
            tag,
            dir,
        }
    }

    fn name(&self, what: &str) -> String {
        format!("bench.{}.{what}", self.tag)
    }

    fn db_url(&self) -> String {
        format!("{}/{}", self.pg, self.db)
    }

    fn spawn(&self, node: usize, port: u16) -> Child {
        let log = std::fs::File::create(self.dir.join(format!("node-{node}.log"))).expect("log");
        let err = log.try_clone().expect("log");
        Command::new(env!("CARGO_BIN_EXE_frontdoor"))
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("FRONTDOOR_ENVIRONMENT", "local")
            .env("RUST_LOG", "warn,frontdoor=info")
            .env("FRONTDOOR__TELEMETRY__FORMAT", "json")
            .env("FRONTDOOR__APPLICATION__PORT", port.to_string())
            .env("FRONTDOOR__STORE__URL", self.db_url())
            .env("FRONTDOOR__STORE__MAX_CONNECTIONS", "8")
            .env("FRONTDOOR__BROKER__ENABLED", "true")
            .env("FRONTDOOR__BROKER__URL", &self.amqp)
            .env(
                "FRONTDOOR__BROKER__CONNECTION_NAME",
                self.name(&format!("n{node}")),
            )
            .env("FRONTDOOR__BROKER__EVENTS_EXCHANGE", self.name("events"))
            .env(
                "FRONTDOOR__BROKER__PARTITION_EXCHANGE",
                self.name("partitions"),
            )
            .env("FRONTDOOR__BROKER__QUEUE_PREFIX", self.name("ingest"))
            .env(
                "FRONTDOOR__BROKER__COMMANDS_EXCHANGE",
                self.name("commands"),
            )
            .env("FRONTDOOR__BROKER__DEAD_LETTER_EXCHANGE", self.name("dead"))
            .env("FRONTDOOR__BROKER__DEAD_LETTER_QUEUE", self.name("dead"))
            .env("FRONTDOOR__BROKER__ROUTING_QUEUE", self.name("routing"))
            .env("FRONTDOOR__BROKER__CLUSTER_EXCHANGE", self.name("cluster"))
            .env("FRONTDOOR__BROKER__PARTITIONS", PARTITIONS.to_string())
            .env("FRONTDOOR__CLUSTER__ENABLED", "true")
            .env("FRONTDOOR__CLUSTER__NODE_ID", format!("node-{node}"))
            .env("FRONTDOOR__SECURITY__EVENTS_RATE_PER_SEC", "100000")
            .env("FRONTDOOR__SECURITY__EVENTS_BURST", "100000")
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(err))
            .spawn()
            .expect("the release frontdoor binary")
    }

    async fn count_events(&self) -> i64 {
        let Ok(mut c) = sqlx::PgConnection::connect(&self.db_url()).await else {
            return 0;
        };
        sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM events")
            .fetch_one(&mut c)
            .await
            .unwrap_or(0)
    }

    async fn drop_all(&self, conn: &Connection) {
        let mut queues: Vec<String> = (0..PARTITIONS)
            .map(|i| format!("{}.{i}", self.name("ingest")))
            .collect();
        queues.extend([self.name("dead"), self.name("routing")]);
        for q in queues {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                    .await;
            }
        }
        for ex in [
            "events",
            "partitions",
            "partitions.unkeyed",
            "commands",
            "dead",
            "cluster",
        ] {
            if let Ok(ch) = conn.create_channel().await {
                let _ = ch
                    .exchange_delete(
                        self.name(ex).as_str().into(),
                        ExchangeDeleteOptions::default(),
                    )
                    .await;
            }
        }
        if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{}/postgres", self.pg)).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{}" WITH (FORCE)"#,
                self.db
            )))
            .execute(&mut admin)
            .await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

async fn get(client: &reqwest::Client, port: u16, path: &str) -> Option<Value> {
    let r = client
        .get(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    r.status().is_success().then_some(())?;
    r.json().await.ok()
}

async fn post(client: &reqwest::Client, port: u16, path: &str, body: &Value) -> u16 {
    client
        .post(format!("http://127.0.0.1:{port}{path}"))
        .bearer_auth(TOKEN)
        .json(body)
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Waits until the nodes on `ports` hold every partition between them and agree on a
/// leader; answers the leader's index.
async fn settled(client: &reqwest::Client, ports: &[u16], within: Duration) -> usize {
    let deadline = Instant::now() + within;
    loop {
        let mut total = 0;
        let mut leader = None;
        let mut ok = true;
        let fair = |owned: usize| {
            let (p, n) = (usize::from(PARTITIONS), ports.len());
            owned == p / n || owned == p.div_ceil(n)
        };
        for (i, p) in ports.iter().enumerate() {
            let ready = get(client, *p, "/readyz").await.is_some();
            match get(client, *p, "/v1/runtime").await {
                Some(rt) if ready => {
                    let owned = rt["cluster"]["owned"].as_array().map_or(0, Vec::len);
                    ok &= fair(owned);
                    total += owned;
                    if rt["cluster"]["leading"] == true {
                        leader = Some(i);
                    }
                }
                _ => ok = false,
            }
        }
        if ok && total == usize::from(PARTITIONS) {
            if let Some(l) = leader {
                return l;
            }
        }
        assert!(Instant::now() < deadline, "the cluster did not settle");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn applied(client: &reqwest::Client, port: u16) -> f64 {
    let Ok(r) = client
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
    else {
        return 0.0;
    };
    r.text()
        .await
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("frontdoor_events_applied_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn stop(child: &mut Child) {
    // SIGTERM: the node drains and releases its leases.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    kill(child);
}

/// Publishes `n` surveys for `patients` patients (x-patient-key = MRN) with
/// pipelined confirms; declares the events exchange the runtime binds to.
async fn publish(conn: &Connection, env: &Env, n: usize, patients: usize) {
    let ch = conn.create_channel().await.expect("channel");
    ch.confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("confirms");
    ch.exchange_declare(
        env.name("events").as_str().into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .expect("events exchange");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1_000) {
        for &i in chunk {
            let p = i % patients;
            let mrn = format!("MRN-{}-{p}", env.tag);
            let id = Uuid::new_v4().to_string();
            let body = json!({
                "id": id, "type": "survey.completed", "occurred_at": chrono::Utc::now().to_rfc3339(),
                "site": "north", "channel": "sms", "patient": {"mrn": mrn}, "score": i % 10,
            })
            .to_string();
            let mut headers = FieldTable::default();
            headers.insert(
                "x-patient-key".into(),
                AMQPValue::LongString(LongString::from(mrn)),
            );
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_message_id(ShortString::from(id.as_str()))
                .with_headers(headers);
            drop(
                ch.basic_publish(
                    env.name("events").as_str().into(),
                    "north.sms.survey.completed".into(),
                    BasicPublishOptions::default(),
                    body.as_bytes(),
                    props,
                )
                .await
                .expect("publish"),
            );
        }
        ch.wait_for_confirms().await.expect("confirms");
    }
}

/// Throughput with `nodes` nodes: answers events/s and each node's share.
async fn throughput(
    conn: &Connection,
    client: &reqwest::Client,
    nodes: usize,
    n: usize,
    patients: usize,
) -> Phase {
    let env = Env::new().await;
    // The nodes start and settle first (each holds its share of the partitions), so
    // the run measures the steady state, not a rebalance.
    let ports: Vec<u16> = (0..nodes).map(|_| free_port()).collect();
    let mut children: Vec<Child> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| env.spawn(i + 1, *p))
        .collect();
    settled(client, &ports, Duration::from_secs(120)).await;
    let machine_before = machine_ticks();
    let nodes_before: u64 = children.iter().map(process_ticks).sum();
    let started = Instant::now();
    publish(conn, &env, n, patients).await;
    loop {
        if env.count_events().await >= n as i64 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(900), "stalled");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = started.elapsed().as_secs_f64();
    let nodes_after: u64 = children.iter().map(process_ticks).sum();
    let machine_after = machine_ticks();
    let mut shares = Vec::new();
    for p in &ports {
        shares.push(applied(client, *p).await);
    }
    for c in &mut children {
        stop(c);
    }
    env.drop_all(conn).await;
    let busy = machine_after.0.saturating_sub(machine_before.0) as f64;
    let total = machine_after.1.saturating_sub(machine_before.1).max(1) as f64;
    Phase {
        rate: n as f64 / secs,
        shares,
        machine_busy: busy / total,
        // Clock ticks are 1/100 s on Linux (USER_HZ).
        node_cpu_ms_per_event: nodes_after.saturating_sub(nodes_before) as f64 * 10.0 / n as f64,
    }
}

/// One throughput phase's figures.
struct Phase {
    /// Events stored per second, first publish to last stored.
    rate: f64,
    /// Events each node applied.
    shares: Vec<f64>,
    /// Share of the machine's CPU time that was busy (every process) during the phase.
    machine_busy: f64,
    /// CPU time (user + system) the runtime processes spent per event.
    node_cpu_ms_per_event: f64,
}

/// (busy, total) clock ticks of the whole machine, from /proc/stat.
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle and iowait are the 4th and 5th fields.
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// User + system clock ticks a child process has used, from /proc/<pid>/stat.
fn process_ticks(child: &Child) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", child.id())).unwrap_or_default();
    // The command name (field 2) is in parentheses; utime and stime are fields 14 and 15.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    tick(11) + tick(12)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// K leader kills; answers kill → first post-kill contact offered, in seconds.
async fn takeovers(conn: &Connection, client: &reqwest::Client, kills: usize) -> Vec<f64> {
    let env = Env::new().await;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut children: Vec<Child> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| env.spawn(i, *p))
        .collect();
    let mut leader = settled(client, &ports, Duration::from_secs(60)).await;
    let mut out = Vec::new();
    for round in 0..kills {
        // A skill and an agent of the round's own: earlier rounds' contacts never
        // compete for its room (50 chats, the most an agent may take).
        let skill = format!("bench-{round}");
        let agent = json!({"site": "north", "state": "available", "skills": {skill.clone(): 3},
                           "capacity": {"chat": 50, "voice": 1}});
        let other = (leader + 1) % 3;
        let path = format!("/v1/agents/bench-agent-{round}/state");
        assert_eq!(post(client, ports[other], &path, &agent).await, 200);
        kill(&mut children[leader]);
        let killed_at = Instant::now();
        // Contacts keep coming in through a survivor; the first one posted after the
        // kill that gets offered marks routing being served again.
        let mut i = 0;
        let mut posted: Vec<(String, Instant)> = Vec::new();
        let took = 'wait: loop {
            let contact = format!("k{round}-{i}");
            i += 1;
            let body = json!({
                "id": Uuid::new_v4(), "type": "contact.started", "occurred_at": chrono::Utc::now().to_rfc3339(),
                "site": "north", "channel": "chat", "patient": {"mrn": format!("MRN-K-{}-{round}-{i}", env.tag)},
                "contact_id": contact, "skill": skill,
            });
            if post(client, ports[other], "/v1/events", &body).await == 202 {
                posted.push((contact, Instant::now()));
            }
            for (c, _) in &posted {
                if let Some(v) = get(client, ports[other], &format!("/v1/contacts/{c}")).await {
                    if v["state"] == "offered" {
                        break 'wait killed_at.elapsed().as_secs_f64();
                    }
                }
            }
            assert!(killed_at.elapsed() < Duration::from_secs(60), "no takeover");
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        out.push(took);
        eprintln!("kill {}: routing served again after {took:.2} s", round + 1);
        children[leader] = env.spawn(leader, ports[leader]);
        leader = settled(client, &ports, Duration::from_secs(60)).await;
    }
    for c in &mut children {
        stop(c);
    }
    env.drop_all(conn).await;
    out
}

async fn run() {
    let n = env_usize("BENCH_EVENTS", 20_000);
    let patients = env_usize("BENCH_PATIENTS", 2_000);
    let kills = env_usize("BENCH_KILLS", 20);
    let amqp = env_str("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
    let conn = Connection::connect(&amqp, ConnectionProperties::default())
        .await
        .expect("RabbitMQ");
    let client = reqwest::Client::new();
    println!("cluster benchmark: {n} events for {patients} patients, {PARTITIONS} partitions, release build, {} cores", std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1));
    let mut base = None;
    for nodes in 1..=3 {
        let phase = throughput(&conn, &client, nodes, n, patients).await;
        let b = *base.get_or_insert(phase.rate);
        println!(
            "{nodes} node(s): {:.0} events/s end to end ({:.2}x one node); applied per node: {:?}; machine CPU busy {:.0} %; runtime CPU {:.2} ms per event",
            phase.rate,
            phase.rate / b,
            phase.shares,
            phase.machine_busy * 100.0,
            phase.node_cpu_ms_per_event
        );
    }
    if kills == 0 {
        return;
    }
    let mut t = takeovers(&conn, &client, kills).await;
    t.sort_by(f64::total_cmp);
    println!(
        "takeover over {} leader kills (SIGKILL; lease TTL 5 s, renewed every 1 s): kill -> routing served again p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        t.len(),
        percentile(&t, 0.5),
        percentile(&t, 0.99),
        t.last().copied().unwrap_or(0.0)
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run());
}
