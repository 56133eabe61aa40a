//! Raw database baselines for the ingest benches (issue 11): what the database itself
//! does with the runtime's event rows, measured in the same run as the runtime.
//!
//! The rows are the ones the runtime stored in that run (read back from its `events`
//! table, so columns, sizes and bodies are the runtime's own), inserted into a fresh
//! table with the same columns and indexes as `events` (migrations/*/0001_journey.sql,
//! 0020_contact_index.sql, 0050_routing_events.sql), in batches of the runtime's group
//! commit size (`store.group_commit_max_batch`), one transaction per batch, over one
//! connection. A few thousand rows take a fraction of a second, so the insert runs
//! `rounds` times (the table dropped and created again before each) and the median
//! round is the figure:
//! - PostgreSQL: one `INSERT … SELECT FROM UNNEST($1::text[], …)` per batch, in a fresh
//!   database of its own (dropped afterwards);
//! - SQLite: one multi-row `INSERT … VALUES (…), (…), …` per batch, in a fresh file
//!   opened the way the runtime opens its own (sqlx, `mode=rwc`, WAL, sqlx's other
//!   defaults: `synchronous` FULL, `foreign_keys` ON, 5 s busy timeout).
//!
//! [`mix`] reports what the runtime wrote in the run (events, outbox commands, routed
//! contacts), so each figure comes with the work it stands for.
//!
//! Included by `#[path]` from benches/broker_ingest.rs and benches/http_ingest.rs.

use std::path::Path;
use std::time::Instant;

use sqlx::{AssertSqlSafe, Connection as _, Row as _};

/// One stored event, as the runtime wrote it (the columns `append_in` binds).
#[derive(Debug, Clone)]
pub struct EventRow {
    /// The envelope id (unique).
    pub id: String,
    /// The resolved patient.
    pub patient_id: String,
    /// The event type.
    pub event_type: String,
    /// The channel.
    pub channel: String,
    /// The site.
    pub site: String,
    /// The contact, for contact events.
    pub contact_id: Option<String>,
    /// When it happened at the source.
    pub occurred_at_ms: i64,
    /// The envelope as stored.
    pub body: String,
}

/// A baseline's result.
#[derive(Debug, Clone)]
pub struct Baseline {
    /// Rows inserted per round.
    pub rows: usize,
    /// Batches (transactions) per round.
    pub batches: usize,
    /// Wall time of each round's inserts, first BEGIN to last COMMIT, sorted.
    pub secs: Vec<f64>,
}

impl Baseline {
    /// Rows per second of the median round.
    pub fn rate(&self) -> f64 {
        let mid = self
            .secs
            .get(self.secs.len() / 2)
            .copied()
            .unwrap_or(f64::NAN);
        self.rows as f64 / mid.max(f64::EPSILON)
    }

    /// Rows per second of the slowest and the fastest round.
    pub fn range(&self) -> (f64, f64) {
        let r =
            |s: Option<&f64>| self.rows as f64 / s.copied().unwrap_or(f64::NAN).max(f64::EPSILON);
        (r(self.secs.last()), r(self.secs.first()))
    }

    /// One line: median rate, range, rounds and batches.
    pub fn describe(&self) -> String {
        let (lo, hi) = self.range();
        format!(
            "{:.0} rows/s (median of {} rounds of {} rows in {} batches; {lo:.0}-{hi:.0})",
            self.rate(),
            self.secs.len(),
            self.rows,
            self.batches
        )
    }
}

/// The first `limit` events the runtime stored (by `seq`), from its database at `url`
/// (`postgres://…/db` or `sqlite://path`).
pub async fn stored_rows(url: &str, limit: usize) -> Vec<EventRow> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("the runtime's database");
    let rows = sqlx::query(
        "SELECT id, patient_id, type, channel, site, contact_id, occurred_at_ms, body \
         FROM events ORDER BY seq LIMIT $1",
    )
    .bind(i64::try_from(limit).unwrap_or(i64::MAX))
    .fetch_all(&mut conn)
    .await
    .expect("read the stored events");
    rows.into_iter()
        .map(|r| EventRow {
            id: r.get(0),
            patient_id: r.get(1),
            event_type: r.get(2),
            channel: r.get(3),
            site: r.get(4),
            contact_id: r.get(5),
            occurred_at_ms: r.get(6),
            body: r.get(7),
        })
        .collect()
}

/// What the runtime at `url` wrote: events by type, outbox commands by type, routing
/// contacts by state, each as `name count` pairs.
pub async fn mix(url: &str) -> String {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url)
        .await
        .expect("the runtime's database");
    let mut parts = Vec::new();
    for (what, sql) in [
        (
            "events",
            "SELECT type, CAST(COUNT(*) AS BIGINT) FROM events GROUP BY type ORDER BY type",
        ),
        (
            "outbox commands",
            "SELECT command_type, CAST(COUNT(*) AS BIGINT) FROM outbox \
             GROUP BY command_type ORDER BY command_type",
        ),
        (
            "routing contacts",
            "SELECT state, CAST(COUNT(*) AS BIGINT) FROM routing_contacts \
             GROUP BY state ORDER BY state",
        ),
    ] {
        let rows = sqlx::query(sql)
            .fetch_all(&mut conn)
            .await
            .expect("read the mix");
        let counts: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}", r.get::<String, _>(0), r.get::<i64, _>(1)))
            .collect();
        parts.push(format!("{what}: {}", counts.join(", ")));
    }
    parts.join("; ")
}

/// Mean body size of `rows`, in bytes.
pub fn mean_body_bytes(rows: &[EventRow]) -> usize {
    rows.iter().map(|r| r.body.len()).sum::<usize>() / rows.len().max(1)
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// PostgreSQL: `rows` in UNNEST batches of `batch`, one transaction each, into a fresh
/// table in a fresh database on the server at `server` (`postgres://user@host:port`).
pub async fn postgres(server: &str, rows: &[EventRow], batch: usize, rounds: usize) -> Baseline {
    let db = format!(
        "frontdoor_bench_baseline_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    );
    let mut admin = sqlx::PgConnection::connect(&format!("{server}/postgres"))
        .await
        .expect("PostgreSQL");
    sqlx::query(AssertSqlSafe(format!(r#"CREATE DATABASE "{db}""#)))
        .execute(&mut admin)
        .await
        .expect("create the baseline database");
    let url = format!("{server}/{db}");
    let mut conn = sqlx::PgConnection::connect(&url)
        .await
        .expect("the baseline database");
    // TCP_NODELAY, as the runtime's own pool sets it (src/store/nodelay.rs), so the
    // baseline is not held back by Nagle's algorithm either.
    let port = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url)
        .map(|o| o.get_port())
        .unwrap_or(5432);
    frontdoor::store::nodelay::disable_nagle_to_port(port);
    let batch = batch.max(1);
    let mut secs = Vec::new();
    let mut batches = 0;
    for _ in 0..rounds.max(1) {
        sqlx::query("DROP TABLE IF EXISTS events")
            .execute(&mut conn)
            .await
            .expect("drop the baseline table");
        for ddl in frontdoor::store::Backend::Postgres.events_schema() {
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut conn)
                .await
                .expect("the baseline table");
        }
        let start = Instant::now();
        batches = 0;
        for chunk in rows.chunks(batch) {
            let received = now_ms();
            let mut tx = conn.begin().await.expect("BEGIN");
            sqlx::query(
                "INSERT INTO events (id, patient_id, type, channel, site, contact_id, \
             occurred_at_ms, received_at_ms, body) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
             $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[])",
            )
            .bind(chunk.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| r.patient_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                chunk
                    .iter()
                    .map(|r| r.event_type.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.channel.as_str()).collect::<Vec<_>>())
            .bind(chunk.iter().map(|r| r.site.as_str()).collect::<Vec<_>>())
            .bind(
                chunk
                    .iter()
                    .map(|r| r.contact_id.as_deref())
                    .collect::<Vec<_>>(),
            )
            .bind(chunk.iter().map(|r| r.occurred_at_ms).collect::<Vec<_>>())
            .bind(vec![received; chunk.len()])
            .bind(chunk.iter().map(|r| r.body.as_str()).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await
            .expect("UNNEST insert");
            tx.commit().await.expect("COMMIT");
            batches += 1;
        }
        secs.push(start.elapsed().as_secs_f64());
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&mut conn)
            .await
            .expect("count the baseline rows");
        assert_eq!(stored as usize, rows.len(), "the baseline stored every row");
    }
    secs.sort_by(f64::total_cmp);
    drop(conn.close().await);
    let _ = sqlx::query(AssertSqlSafe(format!(
        r#"DROP DATABASE IF EXISTS "{db}" WITH (FORCE)"#
    )))
    .execute(&mut admin)
    .await;
    Baseline {
        rows: rows.len(),
        batches,
        secs,
    }
}

/// SQLite: `rows` in multi-row VALUES batches of `batch`, one transaction each, into a
/// fresh file under `dir` (removed afterwards). Answers the result and the file's
/// `journal_mode` and `synchronous` pragmas, as measured.
pub async fn sqlite(
    dir: &Path,
    rows: &[EventRow],
    batch: usize,
    rounds: usize,
) -> (Baseline, String) {
    let path = dir.join(format!(
        "baseline-{}.db",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    ));
    // The runtime's URL shape (src/store/mod.rs `sqlite_url`) and its WAL pragma.
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let mut conn = sqlx::SqliteConnection::connect(&url)
        .await
        .expect("the baseline SQLite file");
    sqlx::query("PRAGMA journal_mode = WAL")
        .execute(&mut conn)
        .await
        .expect("WAL");
    let journal: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .expect("journal_mode");
    let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut conn)
        .await
        .expect("synchronous");
    let batch = batch.max(1);
    let mut secs = Vec::new();
    let mut batches = 0;
    for _ in 0..rounds.max(1) {
        sqlx::query("DROP TABLE IF EXISTS events")
            .execute(&mut conn)
            .await
            .expect("drop the baseline table");
        for ddl in frontdoor::store::Backend::Sqlite.events_schema() {
            sqlx::query(AssertSqlSafe(ddl))
                .execute(&mut conn)
                .await
                .expect("the baseline table");
        }
        let statement = |n: usize| {
            let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; n].join(", ");
            format!(
                "INSERT INTO events (id, patient_id, type, channel, site, contact_id, \
             occurred_at_ms, received_at_ms, body) VALUES {values}"
            )
        };
        let full = statement(batch);
        let start = Instant::now();
        batches = 0;
        for chunk in rows.chunks(batch) {
            let received = now_ms();
            let sql = if chunk.len() == batch {
                full.clone()
            } else {
                statement(chunk.len())
            };
            let mut tx = conn.begin().await.expect("BEGIN");
            let mut q = sqlx::query(AssertSqlSafe(sql));
            for r in chunk {
                q = q
                    .bind(r.id.as_str())
                    .bind(r.patient_id.as_str())
                    .bind(r.event_type.as_str())
                    .bind(r.channel.as_str())
                    .bind(r.site.as_str())
                    .bind(r.contact_id.as_deref())
                    .bind(r.occurred_at_ms)
                    .bind(received)
                    .bind(r.body.as_str());
            }
            q.execute(&mut *tx).await.expect("multi-row insert");
            tx.commit().await.expect("COMMIT");
            batches += 1;
        }
        secs.push(start.elapsed().as_secs_f64());
        let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
            .fetch_one(&mut conn)
            .await
            .expect("count the baseline rows");
        assert_eq!(stored as usize, rows.len(), "the baseline stored every row");
    }
    secs.sort_by(f64::total_cmp);
    drop(conn.close().await);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    (
        Baseline {
            rows: rows.len(),
            batches,
            secs,
        },
        format!("journal_mode={journal}, synchronous={synchronous}"),
    )
}
