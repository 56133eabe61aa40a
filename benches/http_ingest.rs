//! HTTP ingest benchmark (`cargo bench --bench http_ingest`), issue 11 goal 2.
//!
//! For each backend (PostgreSQL, then the embedded SQLite), in one run:
//! 1. starts the release `frontdoor` binary as a child process on a fresh database
//!    (PostgreSQL: a new database; SQLite: a new file), broker off, with one principal
//!    of role `adapter` (a fresh random token, its hash from `frontdoor hash-token`)
//!    and a per-token event rate limit far above what it can take (no 429);
//! 2. drives `POST /v1/events` with wrk (Debian package `wrk`): C keep-alive
//!    connections on loopback for D seconds, `--latency`, the Lua script
//!    benches/wrk/events.lua (unique UUIDs; bookings, routed contacts, surveys);
//! 3. stops the runtime (SIGTERM: it drains), then checks in its database that the
//!    events stored match the 2xx answers (a request cut off by wrk's end may have
//!    been stored without its answer being read: at most sent - answered of those);
//! 4. measures the raw baseline of the same backend (benches/common/baseline.rs): the
//!    rows just stored, re-inserted into a fresh table with the same columns and
//!    indexes, in batches of `store.group_commit_max_batch`, one transaction each
//!    (PostgreSQL UNNEST, SQLite multi-row VALUES);
//! 5. prints end-to-end events/s (2xx answers / wrk's duration), wrk's requests/s and
//!    latency p50/p99, the status codes, the baseline rows/s and the ratio.
//!
//! Environment: BENCH_HTTP_SECS (D, 20), BENCH_HTTP_CONNECTIONS (C, 64),
//! BENCH_HTTP_THREADS (wrk threads, 2), BENCH_PATIENTS (2000), BENCH_HTTP_BACKENDS
//! (`postgres,sqlite`), BENCH_BASELINE_MAX_ROWS (200000: the baseline re-inserts at
//! most this many of the stored rows), BENCH_BASELINE_ROUNDS (5: the median round is the
//! figure), BENCH_WRK (the wrk binary, `wrk`),
//! BENCH_POSTGRES_URL.

#[path = "common/baseline.rs"]
mod baseline;

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::Connection as _;
use uuid::Uuid;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_str(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Postgres => "PostgreSQL",
            Backend::Sqlite => "SQLite",
        }
    }
}

/// The knobs of one run.
struct Knobs {
    secs: usize,
    connections: usize,
    threads: usize,
    patients: usize,
    baseline_max_rows: usize,
    baseline_rounds: usize,
    wrk: String,
    pg: String,
    batch: usize,
}

/// What wrk reported.
#[derive(Debug, Default)]
struct WrkReport {
    /// wrk's `Requests/sec` (every answer, whatever its status).
    requests_per_sec: f64,
    /// `Latency Distribution` 50 % and 99 %, in milliseconds.
    p50_ms: f64,
    p99_ms: f64,
    /// Answers by HTTP status (the script's `response()` hook).
    statuses: Vec<(u16, u64)>,
    /// Requests the script made (`request()` calls).
    sent: u64,
    /// wrk's measured duration, in seconds.
    secs: f64,
    /// wrk's `Socket errors:` line, if any.
    socket_errors: Option<String>,
}

impl WrkReport {
    fn count(&self, pred: impl Fn(u16) -> bool) -> u64 {
        self.statuses
            .iter()
            .filter(|(s, _)| pred(*s))
            .map(|(_, n)| n)
            .sum()
    }
}

/// Parses a wrk duration (`812.00us`, `9.43ms`, `1.02s`, `2.00m`) into milliseconds.
fn wrk_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        "h" => v * 3_600_000.0,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> WrkReport {
    let mut r = WrkReport::default();
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => r.requests_per_sec = v.parse().unwrap_or(0.0),
            ["50%", v] => r.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => r.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["frontdoor-status", code, n] => {
                if let (Ok(c), Ok(n)) = (code.parse(), n.parse()) {
                    r.statuses.push((c, n));
                }
            }
            ["frontdoor-sent", n] => r.sent = n.parse().unwrap_or(0),
            ["frontdoor-duration-us", n] => r.secs = n.parse::<f64>().unwrap_or(0.0) / 1_000_000.0,
            ["Socket", "errors:", ..] => r.socket_errors = Some(t.to_string()),
            _ => {}
        }
    }
    r.statuses.sort_unstable();
    r
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The hex SHA-256 of `token`, as `frontdoor hash-token` prints it.
fn hash_token(token: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .arg("hash-token")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("frontdoor hash-token");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(token.as_bytes())
        .expect("write the token");
    let out = child.wait_with_output().expect("frontdoor hash-token");
    assert!(out.status.success(), "frontdoor hash-token failed");
    String::from_utf8(out.stdout)
        .expect("hex")
        .trim()
        .to_string()
}

/// User + system clock ticks a process has used, from /proc/<pid>/stat.
fn process_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
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
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// SIGTERM, then wait for the drain (SIGKILL after 60 s).
fn stop(child: &mut Child) -> bool {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status.success();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

/// One backend: runtime + wrk + check + baseline. Answers false when a check failed.
async fn measure(backend: Backend, k: &Knobs, token: &str, digest: &str) -> bool {
    let tag = Uuid::new_v4().simple().to_string()[..10].to_string();
    let dir = std::env::temp_dir().join(format!("frontdoor-http-bench-{tag}"));
    std::fs::create_dir_all(&dir).expect("a bench dir");
    let principals = dir.join("principals.toml");
    std::fs::write(
        &principals,
        format!(
            "[[principal]]\nid = \"bench-adapter\"\nrole = \"adapter\"\nsites = [\"*\"]\ntoken_sha256 = \"{digest}\"\n"
        ),
    )
    .expect("the principals file");
    let (url, db) = match backend {
        Backend::Postgres => {
            let db = format!("frontdoor_bench_http_{tag}");
            let mut admin = sqlx::PgConnection::connect(&format!("{}/postgres", k.pg))
                .await
                .expect("PostgreSQL");
            sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{db}""#)))
                .execute(&mut admin)
                .await
                .expect("create the bench database");
            (format!("{}/{db}", k.pg), Some(db))
        }
        Backend::Sqlite => (
            format!("sqlite://{}", dir.join("frontdoor.db").display()),
            None,
        ),
    };
    let port = free_port();
    let log_path = dir.join("runtime.log");
    let log = std::fs::File::create(&log_path).expect("log");
    let err = log.try_clone().expect("log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_frontdoor"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("FRONTDOOR_ENVIRONMENT", "local")
        .env("RUST_LOG", "warn,frontdoor=info")
        .env("FRONTDOOR__TELEMETRY__FORMAT", "json")
        .env("FRONTDOOR__APPLICATION__PORT", port.to_string())
        .env("FRONTDOOR__STORE__URL", &url)
        .env("FRONTDOOR__BROKER__ENABLED", "false")
        .env("FRONTDOOR__SECURITY__PRINCIPALS_FILE", &principals)
        .env("FRONTDOOR__SECURITY__EVENTS_RATE_PER_SEC", "1000000")
        .env("FRONTDOOR__SECURITY__EVENTS_BURST", "1000000")
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("the release frontdoor binary");
    let ready = wait_ready(port, token, Duration::from_secs(120)).await;
    if !ready {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the runtime did not become ready; its log: {}",
            log_path.display()
        );
    }

    let machine_before = machine_ticks();
    let runtime_before = process_ticks(child.id());
    let wrk = Command::new(&k.wrk)
        .args([
            "-t",
            &k.threads.to_string(),
            "-c",
            &k.connections.to_string(),
            "-d",
            &format!("{}s", k.secs),
            "--timeout",
            "30s",
            "--latency",
            "-s",
            concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wrk/events.lua"),
            &format!("http://127.0.0.1:{port}/v1/events"),
        ])
        .env("FRONTDOOR_BENCH_TOKEN", token)
        .env("BENCH_PATIENTS", k.patients.to_string())
        .env("BENCH_TAG", &tag)
        .output()
        .expect("wrk (apt-get install wrk, or set BENCH_WRK)");
    let runtime_after = process_ticks(child.id());
    let machine_after = machine_ticks();
    let text = String::from_utf8_lossy(&wrk.stdout).to_string();
    assert!(
        wrk.status.success(),
        "wrk failed: {}\n{text}",
        String::from_utf8_lossy(&wrk.stderr)
    );
    let report = parse_wrk(&text);
    let drained = stop(&mut child);

    let ok = report.count(|s| (200..300).contains(&s));
    let accepted = report.count(|s| s == 202);
    let duplicates = report.count(|s| s == 200);
    let other = report.count(|s| !(200..300).contains(&s));
    let answered = report.count(|_| true);
    let cut_off = report.sent.saturating_sub(answered);
    let stored = count_events(&url).await;
    let events_per_sec = ok as f64 / report.secs.max(f64::EPSILON);
    let cpu_ms_per_event =
        runtime_after.saturating_sub(runtime_before) as f64 * 10.0 / ok.max(1) as f64;
    let busy = machine_after.0.saturating_sub(machine_before.0) as f64
        / machine_after.1.saturating_sub(machine_before.1).max(1) as f64;

    let mix = baseline::mix(&url).await;
    let rows = baseline::stored_rows(&url, k.baseline_max_rows).await;
    let (base, pragmas) = match backend {
        Backend::Postgres => (
            baseline::postgres(&k.pg, &rows, k.batch, k.baseline_rounds).await,
            String::new(),
        ),
        Backend::Sqlite => {
            let (b, p) = baseline::sqlite(&dir, &rows, k.batch, k.baseline_rounds).await;
            (b, format!(", {p}"))
        }
    };

    let name = backend.name();
    println!("--- {name} ---");
    println!(
        "wrk: {} threads, {} connections, {:.1} s: {:.0} requests/s, latency p50 {:.2} ms, p99 {:.2} ms",
        k.threads, k.connections, report.secs, report.requests_per_sec, report.p50_ms, report.p99_ms
    );
    let codes: Vec<String> = report
        .statuses
        .iter()
        .map(|(s, n)| format!("{s}: {n}"))
        .collect();
    println!(
        "answers by status: {} (non-2xx: {other}); sent {}, cut off at the end {cut_off}{}",
        codes.join(", "),
        report.sent,
        report
            .socket_errors
            .as_deref()
            .map(|e| format!("; {e}"))
            .unwrap_or_default()
    );
    // Every 202 is a stored event; a request cut off by wrk's end may be stored too.
    let consistent = stored >= accepted && stored <= accepted + cut_off && duplicates == 0;
    println!(
        "stored in {name}: {stored} events; 2xx answers {ok} (202 {accepted}, 200 duplicate {duplicates}): {}",
        if consistent {
            if stored == accepted {
                "match".to_string()
            } else {
                format!("match ({} cut off by wrk's end were stored too)", stored - accepted)
            }
        } else {
            "MISMATCH".to_string()
        }
    );
    println!("mix: {mix}");
    println!(
        "runtime CPU {cpu_ms_per_event:.2} ms per event, machine CPU busy {:.0} % during the run; drained on SIGTERM: {drained}",
        busy * 100.0
    );
    println!("end to end (POST /v1/events, 2xx): {events_per_sec:.0} events/s");
    let how = match backend {
        Backend::Postgres => "UNNEST",
        Backend::Sqlite => "multi-row VALUES",
    };
    println!(
        "raw {name} baseline: the rows stored above (~{} bytes of body each), {how} batches of {}, one transaction each{pragmas}: {}",
        baseline::mean_body_bytes(&rows),
        k.batch,
        base.describe()
    );
    println!(
        "ratio end to end / raw {name}: {:.3}",
        events_per_sec / base.rate()
    );

    if let Some(db) = db {
        if let Ok(mut admin) = sqlx::PgConnection::connect(&format!("{}/postgres", k.pg)).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#
            )))
            .execute(&mut admin)
            .await;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    consistent && other == 0
}

/// Waits for `GET /readyz` to answer 200 with the bench's token.
async fn wait_ready(port: u16, token: &str, within: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        let r = client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .bearer_auth(token)
            .timeout(Duration::from_secs(2))
            .send()
            .await;
        if r.is_ok_and(|r| r.status().is_success()) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn count_events(url: &str) -> u64 {
    sqlx::any::install_default_drivers();
    let mut c = sqlx::AnyConnection::connect(url)
        .await
        .expect("the runtime's database");
    let n: i64 = sqlx::query_scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM events")
        .fetch_one(&mut c)
        .await
        .expect("count the stored events");
    u64::try_from(n).unwrap_or(0)
}

fn wrk_version(wrk: &str) -> Option<String> {
    let out = Command::new(wrk).arg("--version").output().ok()?;
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    text.lines().next().map(str::to_string)
}

async fn run() {
    let base = frontdoor::configuration::base_configuration().expect("config/base.toml");
    let k = Knobs {
        secs: env_usize("BENCH_HTTP_SECS", 20),
        connections: env_usize("BENCH_HTTP_CONNECTIONS", 64),
        threads: env_usize("BENCH_HTTP_THREADS", 2),
        patients: env_usize("BENCH_PATIENTS", 2_000),
        baseline_max_rows: env_usize("BENCH_BASELINE_MAX_ROWS", 200_000),
        baseline_rounds: env_usize("BENCH_BASELINE_ROUNDS", 5),
        wrk: env_str("BENCH_WRK", "wrk"),
        pg: env_str("BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432"),
        batch: base.store.group_commit_max_batch,
    };
    let backends: Vec<Backend> = env_str("BENCH_HTTP_BACKENDS", "postgres,sqlite")
        .split(',')
        .filter_map(|b| match b.trim() {
            "postgres" => Some(Backend::Postgres),
            "sqlite" => Some(Backend::Sqlite),
            "" => None,
            other => panic!("BENCH_HTTP_BACKENDS: unknown backend {other:?}"),
        })
        .collect();
    let Some(version) = wrk_version(&k.wrk) else {
        panic!(
            "{} not found: apt-get install -y wrk (or set BENCH_WRK)",
            k.wrk
        );
    };
    println!(
        "http_ingest: {version}; {} patients, group commit batch {}, store pool {} connections, {} cores",
        k.patients,
        k.batch,
        base.store.max_connections,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    // Two v4 UUIDs: 244 random bits (docs/security.md asks for at least 128).
    let token = format!("{}{}", Uuid::new_v4().simple(), Uuid::new_v4().simple());
    let digest = hash_token(&token);
    let mut all_ok = true;
    for b in backends {
        all_ok &= measure(b, &k, &token, &digest).await;
    }
    assert!(
        all_ok,
        "a check failed (non-2xx answers or stored events that do not match): see above"
    );
}

fn main() {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(run());
}
