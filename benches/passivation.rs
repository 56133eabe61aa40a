//! Passivation at a million patients.
//!
//! Loads 1,000,000 patients with journeys into a fresh store (SQLite file in a temp
//! dir; PostgreSQL when `FRONTDOOR_BENCH_POSTGRES_URL` names a server), then in one
//! process measures:
//! - memory per active patient actor: RSS (`/proc/self/status` VmRSS) and live Rust
//!   heap (a counting global allocator) before and after activating K patients by a
//!   context read, divided by K; beside it the bare actix floor (an actor with tiny
//!   state, and the same with the idle timer a patient actor runs) measured the same
//!   way in a child process, and a folded journey on its own;
//! - memory after `passivate_all()` once no patient is resident, before and after
//!   `malloc_trim(0)`;
//! - p50/p99 time to serve the first event (and the first context read) of a cold,
//!   passivated patient vs a warm, resident one, one request at a time.
//!
//! Run: `cargo bench --bench passivation`. Environment:
//! `FRONTDOOR_BENCH_PATIENTS` (default 1,000,000), `FRONTDOOR_BENCH_ACTIVE` (K,
//! default 100,000), `FRONTDOOR_BENCH_SAMPLES` (latency samples, default 2,000),
//! `FRONTDOOR_BENCH_SQLITE` (a database file to reuse: seeded when empty, kept),
//! `FRONTDOOR_BENCH_POSTGRES_URL` (e.g. `postgres://postgres@127.0.0.1:5432`: a fresh
//! database is created on that server), `FRONTDOOR_BENCH_POSTGRES_DB` (with it: a
//! database of that name to reuse: created and seeded when missing or empty, kept).

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use anyhow::Context as _;
use chrono::Utc;
use frontdoor::configuration::{base_configuration, StoreSettings};
use frontdoor::store::seed::SeedPatient;
use frontdoor::store::Store;
use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::{Identifier, IdentifierKind, PatientId};
use frontdoor_actors::journey::Journey;
use frontdoor_actors::patient::{Applied, PatientActor, PatientDeps};
use frontdoor_actors::shard::PatientRegistry;
use futures_util::StreamExt;
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

/// Counts live heap bytes requested through Rust's allocator (SQLite's own C
/// allocations are not included: they are bounded by its page cache).
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);
static LIVE_ALLOCATIONS: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call forwards to the system allocator unchanged; the counters only
// observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
            LIVE_ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        LIVE_ALLOCATIONS.fetch_sub(1, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE_BYTES.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Set in the child process that measures the bare actor floor.
const FLOOR_CHILD: &str = "FRONTDOOR_BENCH_FLOOR_CHILD";
/// Patient shards (threads), as in `config/base.toml`.
const SHARDS: usize = 2;
/// Patients per seeding transaction (6 events each: 3,000 event rows).
const SEED_BATCH: usize = 500;
/// Context reads in flight while activating.
const ACTIVATION_CONCURRENCY: usize = 64;
/// Journeys folded to measure a journey without its actor.
const JOURNEYS_ALONE: usize = 10_000;

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .replace(['_', ','], "")
            .parse()
            .with_context(|| format!("{name} must be a whole number")),
        Err(_) => Ok(default),
    }
}

/// A memory reading: resident set and live Rust heap.
#[derive(Debug, Clone, Copy)]
struct Mem {
    rss: i64,
    heap: i64,
    allocations: i64,
}

fn rss_bytes() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<i64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(-1)
}

fn mem() -> Mem {
    Mem {
        rss: rss_bytes(),
        heap: LIVE_BYTES.load(Ordering::Relaxed) as i64,
        allocations: LIVE_ALLOCATIONS.load(Ordering::Relaxed) as i64,
    }
}

fn mib(b: i64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

fn trim_heap() -> bool {
    // SAFETY: malloc_trim only releases free memory at the top of glibc's arenas.
    unsafe { libc::malloc_trim(0) == 1 }
}

fn patient_id(i: usize) -> PatientId {
    // unwrap: a UUID's text form always parses back.
    PatientId::parse(
        &Uuid::from_u128(0xbe9c_0000_0000_0000_0000_0000_0000_0000 | i as u128).to_string(),
    )
    .unwrap()
}

fn envelope(v: Value) -> Envelope {
    match v {
        // unwrap: the bench builds only valid events; a failure is a bug in this file.
        Value::Object(o) => Envelope::from_object(o).unwrap(),
        _ => unreachable!("events are JSON objects"),
    }
}

const DEPARTMENTS: [&str; 6] = [
    "dermatology",
    "endocrinology",
    "cardiology",
    "orthopedics",
    "primary care",
    "oncology",
];

/// Patient `i`: an MRN and a phone, a booking, a medication list and a chat with
/// messages that ended.
fn seed_patient(i: usize) -> SeedPatient {
    let mrn = format!("BM{i:07}");
    let phone = format!("+1555{i:07}");
    let who = json!({"mrn": mrn});
    let day = Utc::now() - chrono::Duration::days(30 + (i % 300) as i64);
    let at = |h: i64| (day + chrono::Duration::hours(h)).to_rfc3339();
    let base = |ty: &str, ch: &str, h: i64, n: u128| {
        json!({
            "id": Uuid::from_u128(((i as u128) << 8) | n).to_string(),
            "type": ty, "occurred_at": at(h), "site": if i.is_multiple_of(2) { "north" } else { "south" },
            "channel": ch, "patient": who,
        })
    };
    let with = |mut v: Value, extra: Value| {
        if let (Value::Object(v), Value::Object(extra)) = (&mut v, extra) {
            v.extend(extra);
        }
        envelope(v)
    };
    let dept = DEPARTMENTS[i % DEPARTMENTS.len()];
    let chat = format!("chat-{i}");
    let events = vec![
        with(
            base("appointment.booked", "portal", 0, 1),
            json!({
            "appointment_id": format!("appt-{i}"), "starts_at": at(24 * 40),
            "department": dept, "reason": "follow-up on test results",
            "provider": "Dr. Osei", "location": "North Clinic, floor 2"}),
        ),
        with(
            base("medications.updated", "ehr", 1, 2),
            json!({
            "medications": [{"name": "metformin", "dose": "500 mg", "frequency": "twice daily"},
                            {"name": "lisinopril", "dose": "10 mg", "frequency": "daily"}]}),
        ),
        with(
            base("contact.started", "chat", 48, 3),
            json!({
            "contact_id": chat, "intent": "appointment_question"}),
        ),
        with(
            base("contact.message", "chat", 48, 4),
            json!({
            "contact_id": chat, "from": "patient",
            "text": "Do I need to fast before my appointment next month?"}),
        ),
        with(
            base("contact.message", "chat", 48, 5),
            json!({
            "contact_id": chat, "from": "staff",
            "text": "No fasting needed; bring your medication list."}),
        ),
        with(
            base("contact.ended", "chat", 49, 6),
            json!({
            "contact_id": chat, "disposition": "answered", "agent": "rn-jlee"}),
        ),
    ];
    SeedPatient {
        id: patient_id(i),
        identifiers: vec![
            // unwrap: both are built in their valid forms above.
            Identifier::parse(IdentifierKind::Mrn, &mrn).unwrap(),
            Identifier::parse(IdentifierKind::Phone, &phone).unwrap(),
        ],
        events,
    }
}

/// A new event for patient `i` (the timed "first event").
fn live_event(i: usize, n: usize) -> Arc<Envelope> {
    Arc::new(envelope(json!({
        "id": Uuid::new_v4().to_string(), "type": "contact.started",
        "occurred_at": Utc::now().to_rfc3339(), "site": "north", "channel": "voice",
        "patient": {"mrn": format!("BM{i:07}")}, "contact_id": format!("call-{i}-{n}"),
    })))
}

/// Seeds patients `0..n`, generating batches on another thread while the store writes.
async fn seed(store: &Store, n: usize) -> anyhow::Result<(Duration, u64)> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<SeedPatient>>(4);
    let generator = std::thread::spawn(move || {
        for start in (0..n).step_by(SEED_BATCH) {
            let batch = (start..(start + SEED_BATCH).min(n))
                .map(seed_patient)
                .collect();
            if tx.blocking_send(batch).is_err() {
                return;
            }
        }
    });
    let started = Instant::now();
    let mut events = 0;
    let mut done = 0;
    while let Some(batch) = rx.recv().await {
        events += store
            .bulk_seed_patients(&batch)
            .await
            .context("Failed to seed a batch")?;
        done += batch.len();
        if done.is_multiple_of(100_000) {
            eprintln!(
                "seeded {done} patients ({events} events) in {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    generator
        .join()
        .map_err(|_| anyhow::anyhow!("the generator thread panicked"))?;
    Ok((started.elapsed(), events))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn latency_row(name: &str, mut samples: Vec<Duration>) -> String {
    samples.sort();
    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    format!(
        "| {name} | {} | {} | {} | {} |",
        samples.len(),
        ms(percentile(&samples, 0.5)),
        ms(percentile(&samples, 0.99)),
        ms(percentile(&samples, 1.0)),
    )
}

/// Activates patients `0..k` by a context read, `ACTIVATION_CONCURRENCY` at a time.
async fn activate(patients: &PatientRegistry, k: usize) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let now = Utc::now();
    let failures = futures_util::stream::iter(0..k)
        .map(|i| {
            let patients = patients.clone();
            async move { patients.context(patient_id(i), now).await.is_err() }
        })
        .buffer_unordered(ACTIVATION_CONCURRENCY)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    anyhow::ensure!(failures == 0, "{failures} activations failed");
    let took = started.elapsed();
    let resident = patients.resident().await;
    anyhow::ensure!(resident == k, "{resident} resident, expected {k}");
    Ok(took)
}

async fn wait_until_resident(patients: &PatientRegistry, n: usize) -> anyhow::Result<Duration> {
    let start = Instant::now();
    while patients.resident().await != n {
        anyhow::ensure!(
            start.elapsed() < Duration::from_secs(300),
            "patients still resident after 300 s"
        );
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(start.elapsed())
}

async fn run() -> anyhow::Result<()> {
    let n = env_usize("FRONTDOOR_BENCH_PATIENTS", 1_000_000)?;
    let k = env_usize("FRONTDOOR_BENCH_ACTIVE", 100_000)?.min(n);
    let samples = env_usize("FRONTDOOR_BENCH_SAMPLES", 2_000)?.min(k / 2);
    let settings = base_configuration().context("Failed to read config/base.toml")?;

    // The bare actix floor, each in a fresh process so neither figure reuses the
    // other's freed memory.
    let mut floor = Vec::new();
    for kind in ["bare", "bare+timer"] {
        let out = std::process::Command::new(std::env::current_exe()?)
            .env(FLOOR_CHILD, kind)
            .env("FRONTDOOR_BENCH_ACTIVE", k.to_string())
            .output()
            .context("Failed to run the floor child process")?;
        anyhow::ensure!(
            out.status.success(),
            "floor child failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        floor.push(String::from_utf8_lossy(&out.stdout).trim().to_string());
    }

    let mut temp_dir = None;
    let mut postgres_url = None;
    let url = if let Ok(server) = std::env::var("FRONTDOOR_BENCH_POSTGRES_URL") {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres"))
            .await
            .context("Failed to connect to PostgreSQL")?;
        // A named database is reused (seeded when empty); otherwise a fresh one.
        let (name, reuse) = match std::env::var("FRONTDOOR_BENCH_POSTGRES_DB") {
            Ok(name) => (name, true),
            Err(_) => (
                format!("frontdoor_bench_{}", Uuid::new_v4().simple()),
                false,
            ),
        };
        anyhow::ensure!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "FRONTDOOR_BENCH_POSTGRES_DB must be letters, digits and underscores"
        );
        let exists = reuse
            && sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
                .bind(&name)
                .fetch_optional(&mut conn)
                .await
                .context("Failed to look for the bench database")?
                .is_some();
        if !exists {
            sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                .execute(&mut conn)
                .await
                .context("Failed to create the bench database")?;
        }
        postgres_url = Some(format!("{server}/{name}"));
        format!("{server}/{name}")
    } else if let Ok(path) = std::env::var("FRONTDOOR_BENCH_SQLITE") {
        format!("sqlite://{path}")
    } else {
        let dir = std::env::temp_dir().join(format!("frontdoor-bench-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        let url = format!("sqlite://{}", dir.join("bench.db").display());
        temp_dir = Some(dir);
        url
    };
    let store = Store::connect(&StoreSettings {
        url: SecretString::from(url),
        max_connections: settings.store.max_connections,
        acquire_timeout_secs: 30,
        // One transaction per append, as when the figures in docs/benchmarks.md were taken.
        group_commit_max_batch: 0,
    })
    .await
    .context("Failed to open the store")?;
    println!("backend: {:?}", store.backend());

    let existing = store.count_patients().await?;
    if existing == 0 {
        let (took, events) = seed(&store, n).await?;
        println!(
            "seeded {n} patients, {} identifiers, {events} events in {:.1} s ({:.0} patients/s, {:.0} rows/s)",
            2 * n,
            took.as_secs_f64(),
            n as f64 / took.as_secs_f64(),
            (n * 3 + events as usize) as f64 / took.as_secs_f64(),
        );
        // A freshly loaded PostgreSQL database has no statistics until autovacuum
        // analyzes it; without them the planner chose a parallel scan of the
        // events table for `load_journey` (seconds per load). A store that has
        // been running has them: measure that.
        if let Some(url) = &postgres_url {
            use sqlx::Connection;
            let started = Instant::now();
            let mut conn = sqlx::PgConnection::connect(url)
                .await
                .context("Failed to connect to PostgreSQL")?;
            sqlx::query("ANALYZE")
                .execute(&mut conn)
                .await
                .context("Failed to analyze the bench database")?;
            println!(
                "ANALYZE after seeding: {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    } else {
        anyhow::ensure!(
            existing as usize == n,
            "the reused database holds {existing} patients, not {n}"
        );
        println!("reusing a database with {existing} patients");
    }
    let stored_events = store.count_events(None).await?;
    println!("store holds {stored_events} events");

    // A folded journey on its own (no actor), measured on the live heap. Loading
    // concurrently once first opens every pooled connection, so the connections'
    // buffers are counted neither here nor against the actors.
    let alone = JOURNEYS_ALONE.min(n);
    let limits = settings.patients.limits();
    let load_all = || {
        futures_util::stream::iter(0..alone)
            .map(|i| {
                let store = store.clone();
                async move { store.load_journey(patient_id(i)).await }
            })
            .buffered(ACTIVATION_CONCURRENCY)
            .collect::<Vec<_>>()
    };
    drop(load_all().await);
    let before = mem();
    let loaded = load_all().await;
    let mut journeys = Vec::with_capacity(alone);
    for (i, stored) in loaded.into_iter().enumerate() {
        let stored = stored?;
        let mut j = Journey::fold(
            patient_id(i),
            limits,
            stored.events.iter().map(|(s, e)| (*s, e.as_ref())),
        );
        j.identifiers = stored.identifiers.into_iter().collect();
        j.merged_from = stored.merged_from;
        journeys.push(j);
    }
    let after = mem();
    let journey_heap = (after.heap - before.heap) as f64 / alone as f64;
    let journey_allocs = (after.allocations - before.allocations) as f64 / alone as f64;
    drop(journeys);

    let deps = PatientDeps {
        store: Arc::new(store.clone()),
        limits: settings.patients.limits(),
        idle_timeout: Duration::from_secs(settings.patients.idle_timeout_secs.max(1)),
        outreach: Arc::new(settings.outreach().expect("config/base.toml outreach")),
        clock: Arc::new(frontdoor_actors::routing::SystemClock),
        ehr: Arc::new(settings.fhir.ehr()),
        routing: None,
        supervision: Arc::new(std::sync::RwLock::new(settings.supervision.patient.clone())),
        observer: Arc::new(frontdoor_actors::ports::NoActorObserver),
        fault_injection: false,
        route_through_outbox: false,
    };
    let patients = PatientRegistry::start(deps, SHARDS, settings.patients.bounds());
    trim_heap();
    let base = mem();

    // (a) Activate K patients by a context read.
    let activation = activate(&patients, k).await?;
    let active = mem();

    // (b) Passivate them all; stopped actors drop their state just after the shard
    // forgets them, so settle a moment before reading.
    let started = Instant::now();
    patients.passivate_all();
    wait_until_resident(&patients, 0).await?;
    let passivation = started.elapsed();
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    let passivated = mem();
    let trimmed = trim_heap();
    let passivated_trimmed = mem();
    // The same round again: what stays after passivation must not grow with it.
    activate(&patients, k).await?;
    patients.passivate_all();
    wait_until_resident(&patients, 0).await?;
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    trim_heap();
    let second_round = mem();

    // (c) First event and first read, cold (passivated) vs warm (resident), one at a time.
    let mut cold_read = Vec::with_capacity(samples);
    let mut warm_read = Vec::with_capacity(samples);
    let mut cold_event = Vec::with_capacity(samples);
    let mut warm_event = Vec::with_capacity(samples);
    for i in 0..samples {
        let t = Instant::now();
        patients.context(patient_id(i), Utc::now()).await?;
        cold_read.push(t.elapsed());
        let t = Instant::now();
        patients.context(patient_id(i), Utc::now()).await?;
        warm_read.push(t.elapsed());
    }
    for i in samples..2 * samples {
        for (n, out) in [(0, &mut cold_event), (1, &mut warm_event)] {
            let e = live_event(i, n);
            let t = Instant::now();
            let res = patients.apply(patient_id(i), e, Vec::new()).await?;
            out.push(t.elapsed());
            anyhow::ensure!(matches!(res, Applied::Stored { .. }), "not stored: {res:?}");
        }
    }

    let per = |a: i64, b: i64| (b - a) as f64 / k as f64;
    println!();
    println!("patients in store: {n}; activated (K): {k}; shards: {SHARDS}");
    println!(
        "sizes: PatientActor {} B inline, Journey {} B inline",
        std::mem::size_of::<PatientActor>(),
        std::mem::size_of::<Journey>()
    );
    println!(
        "activation of K by a context read: {:.1} s ({:.0} patients/s, {ACTIVATION_CONCURRENCY} in flight)",
        activation.as_secs_f64(),
        k as f64 / activation.as_secs_f64()
    );
    println!();
    println!(
        "| per actor (K = {k}) | RSS delta / K | live heap delta / K | heap allocations / K |"
    );
    println!("|---|---|---|---|");
    for line in &floor {
        println!("{line}");
    }
    println!(
        "| patient actor with its folded journey | {:.0} B | {:.0} B | {:.1} |",
        per(base.rss, active.rss),
        per(base.heap, active.heap),
        per(base.allocations, active.allocations),
    );
    println!(
        "| folded journey alone ({alone} held in a Vec, no actor) | - | {journey_heap:.0} B | {journey_allocs:.1} |"
    );
    println!();
    println!("| memory | RSS | live heap |");
    println!("|---|---|---|");
    println!(
        "| before activation | {} | {} |",
        mib(base.rss),
        mib(base.heap)
    );
    println!(
        "| {k} patients resident | {} | {} |",
        mib(active.rss),
        mib(active.heap)
    );
    println!(
        "| all passivated ({:.1} s after passivate_all) | {} | {} |",
        passivation.as_secs_f64(),
        mib(passivated.rss),
        mib(passivated.heap)
    );
    println!(
        "| all passivated, after malloc_trim(0) (released: {trimmed}) | {} | {} |",
        mib(passivated_trimmed.rss),
        mib(passivated_trimmed.heap)
    );
    println!(
        "| all passivated again after a second activation of the same K, trimmed | {} | {} |",
        mib(second_round.rss),
        mib(second_round.heap)
    );
    println!();
    println!("| first request, one at a time | samples | p50 | p99 | max |");
    println!("|---|---|---|---|---|");
    println!(
        "{}",
        latency_row("event to a cold (passivated) patient", cold_event)
    );
    println!(
        "{}",
        latency_row("event to a warm (resident) patient", warm_event)
    );
    println!(
        "{}",
        latency_row("context read, cold (passivated)", cold_read)
    );
    println!(
        "{}",
        latency_row("context read, warm (resident)", warm_read)
    );

    store.close().await;
    if let Some(dir) = temp_dir {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}

/// An actor with tiny state, as a patient actor minus its journey and dependencies.
struct Bare {
    /// Whose it would be.
    _id: PatientId,
    /// Messages handled.
    processed: u64,
    /// Run the idle timer a patient actor runs.
    timer: bool,
    /// Last activity.
    last_active: Instant,
}

impl Actor for Bare {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        if self.timer {
            ctx.run_interval(Duration::from_secs(150), |act, _ctx| {
                if act.last_active.elapsed() > Duration::from_secs(300) {
                    act.processed += 1;
                }
            });
        }
    }
}

/// Start `n` bare actors in this shard.
#[derive(Message)]
#[rtype(result = "()")]
struct SpawnBare {
    /// How many.
    n: usize,
    /// Offset of their ids.
    from: usize,
    /// With the idle timer.
    timer: bool,
}

/// Holds bare actors' addresses as a patient shard holds its patients'.
#[derive(Default)]
struct BareShard {
    /// The residents.
    actors: HashMap<PatientId, (Addr<Bare>, u64, u64)>,
}

impl Actor for BareShard {
    type Context = Context<Self>;
}

impl Handler<SpawnBare> for BareShard {
    type Result = ();

    fn handle(&mut self, msg: SpawnBare, _ctx: &mut Self::Context) {
        for i in msg.from..msg.from + msg.n {
            let id = patient_id(i);
            let addr = Bare {
                _id: id,
                processed: 0,
                timer: msg.timer,
                last_active: Instant::now(),
            }
            .start();
            self.actors.insert(id, (addr, 0, 0));
        }
    }
}

/// The child process: K bare actors over [`SHARDS`] arbiters; prints one table row.
fn floor_child(kind: &str) -> anyhow::Result<()> {
    let k = env_usize("FRONTDOOR_BENCH_ACTIVE", 100_000)?;
    let timer = kind == "bare+timer";
    actix_rt::System::new().block_on(async move {
        let shards: Vec<Addr<BareShard>> = (0..SHARDS)
            .map(|_| BareShard::start_in_arbiter(&Arbiter::new().handle(), |_| BareShard::default()))
            .collect();
        actix_rt::time::sleep(Duration::from_millis(200)).await;
        trim_heap();
        let before = mem();
        let per_shard = k / SHARDS;
        for (s, shard) in shards.iter().enumerate() {
            // Chunks keep each shard's mailbox short.
            for c in (0..per_shard).step_by(1_000) {
                shard
                    .send(SpawnBare {
                        n: 1_000.min(per_shard - c),
                        from: s * per_shard + c,
                        timer,
                    })
                    .await?;
            }
        }
        // Let every started actor run its `started` and park.
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        let after = mem();
        let n = (per_shard * SHARDS) as f64;
        let size = std::mem::size_of::<Bare>();
        let label = if timer {
            format!("bare actix actor ({size} B of state) + the idle `run_interval` a patient actor runs")
        } else {
            format!("bare actix actor ({size} B of state), address kept in a shard map")
        };
        println!(
            "| {label} | {:.0} B | {:.0} B | {:.1} |",
            (after.rss - before.rss) as f64 / n,
            (after.heap - before.heap) as f64 / n,
            (after.allocations - before.allocations) as f64 / n,
        );
        Ok(())
    })
}

fn main() -> anyhow::Result<()> {
    if let Ok(kind) = std::env::var(FLOOR_CHILD) {
        return floor_child(&kind);
    }
    actix_rt::System::new().block_on(run())
}
