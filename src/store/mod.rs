//! The store: all SQL lives under this module.
//!
//! One code path serves both backends through sqlx's `Any` driver: SQLite (the
//! embedded default, a file under the data directory) and PostgreSQL (when the URL
//! says so). The SQL is the portable subset both understand (`$n` placeholders,
//! `ON CONFLICT`, `RETURNING`); the schemas differ only in their identity columns
//! and live in `migrations/sqlite` and `migrations/postgres`, run at start.
//!
//! Every write transaction begins with [`Store::begin_write`]: on SQLite (WAL) that is
//! `BEGIN IMMEDIATE`, which takes the write lock at once and waits on `busy_timeout`.
//! A deferred transaction that read before it wrote would take a read snapshot first
//! and fail its upgrade with `SQLITE_BUSY_SNAPSHOT` (517, "database is locked") when
//! another connection had written meanwhile, without waiting.
//!
//! # Layout
//! - [`journey`]: patients, identifiers and links, and the append-only event log.
//! - [`outbox`]: commands written with the state change that causes them, for the relay.
//! - [`writer`]: group commit of journey appends.
//! - [`resolver`]: group identity resolution (one lookup, one claim transaction per group).
//! - [`batch`]: multi-row statements cut into a few prepared shapes.
//! - [`routing`]: routing state (contacts, agents, holds, applied inputs), written
//!   by the router with its commands, fenced by its lease in a cluster.
//! - [`cluster`]: the cluster's shared settings, members and leases (PostgreSQL).
//! - [`audit`]: the append-only audit log (reads, denials, identity links) and its purge.
//! - [`runtime_config`]: live configuration changes (who, when, why), shared by every node.
//! - [`seed`]: bulk loading of patients with journeys (benchmarks and drills).

pub mod audit;
pub(crate) mod batch;
pub mod cluster;
mod group;
pub mod journey;
pub mod nodelay;
pub mod outbox;
pub mod outreach;
pub mod replay;
pub mod resolver;
pub mod routing;
pub mod runtime_config;
pub mod seed;
pub mod writer;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use secrecy::ExposeSecret;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::configuration::StoreSettings;
use crate::metrics as m;

/// Which database the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// This backend's migrations (embedded at build time).
    fn migrator(self) -> sqlx::migrate::Migrator {
        match self {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        }
    }

    /// The statements of this backend's migrations that create the journey log's
    /// `events` table and its indexes, in migration order: what a benchmark's raw
    /// baseline builds, so it inserts into the very table the runtime does.
    pub fn events_schema(self) -> Vec<String> {
        self.migrator()
            .iter()
            .flat_map(|m| {
                m.sql
                    .as_str()
                    .lines()
                    .filter(|l| !l.trim_start().starts_with("--"))
                    .collect::<Vec<_>>()
                    .join("\n")
                    .split(';')
                    .map(|st| st.trim().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|st| st.starts_with("CREATE TABLE events (") || st.contains(" ON events ("))
            .collect()
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached or did not answer in time.
    #[error("store unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),
    /// A statement failed.
    #[error("store query failed: {0}")]
    Query(#[source] sqlx::Error),
    /// Migrations failed at start.
    #[error("store migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Stored data could not be read back (a bug or a manual edit).
    #[error("stored data is unreadable: {0}")]
    Corrupt(String),
    /// A group commit failed as a whole (the store answered nothing durable); retry.
    #[error("store batch failed: {0}")]
    Batch(String),
    /// The data directory could not be created.
    #[error("cannot prepare the data directory: {0}")]
    DataDir(#[from] std::io::Error),
    /// The write depended on a lease this node no longer holds (another node owns
    /// that work now); nothing was written.
    #[error("fenced: this node no longer holds the lease {0}")]
    Fenced(String),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::Protocol(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            sqlx::Error::Database(ref db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57") || c.starts_with("08")) =>
            {
                // PostgreSQL: operator intervention (shutdown) or connection exception.
                StoreError::Unavailable(e)
            }
            other => StoreError::Query(other),
        }
    }
}

impl StoreError {
    /// True when retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Batch(_))
    }
}

/// The fence a journey write for a partition must pass, as this node holds it now
/// (None: not ours, the write is refused). Set only when running as a cluster.
pub type PartitionFences = Arc<dyn Fn(u32) -> Option<cluster::Fence> + Send + Sync>;

/// The store handle (cheap to clone).
#[derive(Clone)]
pub struct Store {
    /// The connection pool.
    pool: AnyPool,
    /// Which backend the pool talks to.
    backend: Backend,
    /// Group commit of journey appends, when started.
    writer: Option<writer::Writer>,
    /// Group identity resolution, started with group commit.
    resolver: Option<resolver::Resolver>,
    /// Patient partitions (outbox rows carry their patient's partition).
    partitions: u32,
    /// Cluster: the fence of each partition's journey writes (None: one node, unfenced).
    fences: Option<PartitionFences>,
    /// Woken when commands were written to the outbox (the relay goes at once).
    outbox_written: Arc<tokio::sync::Notify>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .field("partitions", &self.partitions)
            .field("fenced", &self.fences.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Connects and runs the migrations.
    #[tracing::instrument(name = "store.connect", skip_all)]
    pub async fn connect(settings: &StoreSettings) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let (url, backend) = if settings.is_postgres() {
            (settings.url.expose_secret().to_string(), Backend::Postgres)
        } else {
            (sqlite_url(settings.url.expose_secret())?, Backend::Sqlite)
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(settings.max_connections.max(1))
            .acquire_timeout(settings.acquire_timeout());
        if backend == Backend::Postgres {
            // TCP_NODELAY, as libpq sets it (see `nodelay`): a Unix-socket URL has no port
            // to match and nothing to set.
            let port = <sqlx::postgres::PgConnectOptions as std::str::FromStr>::from_str(&url)
                .map(|o| o.get_port())
                .unwrap_or(5432);
            options = options.after_connect(move |_conn, _meta| {
                Box::pin(async move {
                    nodelay::disable_nagle_to_port(port);
                    Ok(())
                })
            });
        }
        let pool = options.connect(&url).await?;
        let store = Store {
            pool,
            backend,
            writer: None,
            resolver: None,
            partitions: 1,
            fences: None,
            outbox_written: Arc::new(tokio::sync::Notify::new()),
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            // WAL is persistent on the file: readers never block the writer.
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&self.pool)
                .await?;
        }
        self.backend.migrator().run(&self.pool).await?;
        Ok(())
    }

    /// This store with journey appends group-committed by a writer task
    /// (`max_batch` 0 keeps one transaction per append).
    pub fn with_group_commit(self, max_batch: usize) -> Store {
        if max_batch == 0 {
            return self;
        }
        let writer = writer::Writer::start(self.clone(), max_batch);
        let resolver = resolver::Resolver::start(self.clone(), max_batch);
        Store {
            writer: Some(writer),
            resolver: Some(resolver),
            ..self
        }
    }

    /// This store with `partitions` patient partitions (see `PatientId::partition`).
    pub fn with_partitions(self, partitions: u32) -> Store {
        Store {
            partitions: partitions.max(1),
            ..self
        }
    }

    /// Patient partitions.
    pub fn partitions(&self) -> u32 {
        self.partitions
    }

    /// This store with journey writes fenced per partition (a cluster member).
    pub fn with_fences(self, fences: PartitionFences) -> Store {
        Store {
            fences: Some(fences),
            ..self
        }
    }

    /// The fence journey writes of partition `p` must pass: `Ok(None)` unfenced
    /// (one node), `Err` when this node does not own `p`.
    pub(crate) fn partition_fence(&self, p: u32) -> Result<Option<cluster::Fence>, StoreError> {
        match &self.fences {
            None => Ok(None),
            Some(f) => f(p)
                .map(Some)
                .ok_or_else(|| StoreError::Fenced(crate::cluster::partition_lease(p))),
        }
    }

    /// Woken whenever commands were committed to the outbox.
    pub fn outbox_written(&self) -> Arc<tokio::sync::Notify> {
        self.outbox_written.clone()
    }

    /// The group-commit writer, when started.
    pub(crate) fn writer(&self) -> Option<&writer::Writer> {
        self.writer.as_ref()
    }

    /// The group identity resolver, when started.
    pub(crate) fn resolver(&self) -> Option<&resolver::Resolver> {
        self.resolver.as_ref()
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The pool (for this module's submodules).
    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Begins a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so statements that read before they write cannot fail
    /// an upgrade with `SQLITE_BUSY_SNAPSHOT`; PostgreSQL begins as usual.
    pub(crate) async fn begin_write(
        &self,
    ) -> Result<sqlx::Transaction<'static, sqlx::Any>, sqlx::Error> {
        match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Checks the database answers (readiness).
    #[tracing::instrument(name = "store.ping", skip_all)]
    pub async fn ping(&self) -> Result<(), StoreError> {
        timed("ping", async {
            sqlx::query("SELECT 1").execute(&self.pool).await?;
            Ok(())
        })
        .await
    }

    /// Closes the pool (shutdown).
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Turns `sqlite://path` into a URL that creates the file, creating its directory.
fn sqlite_url(url: &str) -> Result<String, StoreError> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path != ":memory:" {
        if let Some(dir) = Path::new(path).parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir)?;
            }
        }
    }
    let query = if query.is_empty() {
        "mode=rwc".to_string()
    } else {
        query.to_string()
    };
    Ok(format!("sqlite://{path}?{query}"))
}

/// Runs a store task (the group writer, the group resolver) on a thread of its own
/// (an actix arbiter), stopped when the task ends. On the thread that runs the
/// broker consumers and thousands of ingest tasks, every statement of a batch
/// waited for its turn behind them between round trips: the batch's connection
/// is driven only when its task is polled.
pub(crate) fn spawn_dedicated(task: impl Future<Output = ()> + Send + 'static) {
    let arbiter = actix_rt::Arbiter::new();
    arbiter.spawn(async move {
        task.await;
        actix_rt::Arbiter::current().stop();
    });
}

/// Runs a store operation, recording its latency and outcome.
pub(crate) async fn timed<T>(
    operation: &'static str,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let start = Instant::now();
    let res = fut.await;
    let outcome = match &res {
        Ok(_) => "ok",
        Err(e) if e.is_transient() => "unavailable",
        Err(_) => "error",
    };
    metrics::histogram!(m::STORE_SECONDS, "operation" => operation, "outcome" => outcome)
        .record(start.elapsed().as_secs_f64());
    if let Err(e) = &res {
        tracing::warn!(store.operation = operation, error.message = %e, "store operation failed");
    }
    res
}

/// Milliseconds since the Unix epoch for a timestamp.
pub(crate) fn millis(t: chrono::DateTime<chrono::Utc>) -> i64 {
    t.timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::{Backend, Store};

    /// Each migration of both backends as `backend version sha384` (sqlx's checksum).
    fn migration_checksums() -> Vec<String> {
        [("sqlite", Backend::Sqlite), ("postgres", Backend::Postgres)]
            .into_iter()
            .flat_map(|(name, backend)| {
                backend
                    .migrator()
                    .iter()
                    .map(|m| format!("{name} {:04} {}", m.version, hex::encode(&*m.checksum)))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// sqlx refuses to start on a database whose applied migration has changed
    /// since ("migration N was previously applied but has been modified"), so a
    /// migration that has shipped is never edited: a change goes in a new one.
    #[test]
    fn shipped_migrations_are_never_edited_and_every_migration_is_listed() {
        let listed: Vec<&str> = include_str!("../../migrations/checksums.txt")
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let now = migration_checksums();
        for line in &listed {
            let key = line.rsplit_once(' ').map(|(k, _)| k).unwrap_or(line);
            assert!(
                now.iter().any(|l| l == line),
                "migration {key} differs from its listed checksum: it has shipped, so put the change in a new migration (now: {:?})",
                now.iter().find(|l| l.starts_with(key))
            );
        }
        for line in &now {
            assert!(
                listed.contains(&line.as_str()),
                "migration not listed in migrations/checksums.txt; add: {line}"
            );
        }
    }

    #[tokio::test]
    async fn a_write_transaction_that_reads_first_waits_for_another_writer_instead_of_failing() {
        let path =
            std::env::temp_dir().join(format!("frontdoor-begin-write-{}.db", uuid::Uuid::new_v4()));
        let settings = crate::configuration::StoreSettings {
            url: secrecy::SecretString::from(format!("sqlite://{}", path.display())),
            max_connections: 4,
            acquire_timeout_secs: 10,
            group_commit_max_batch: 0,
        };
        let store = Store::connect(&settings).await.unwrap();
        sqlx::query("CREATE TABLE probe (x INTEGER)")
            .execute(store.pool())
            .await
            .unwrap();
        // Read first, as the router's step does for its input numbers...
        let mut tx = store.begin_write().await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM probe")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        // ...while another connection writes.
        let other = {
            let s = store.clone();
            tokio::spawn(async move {
                sqlx::query("INSERT INTO probe (x) VALUES (100)")
                    .execute(s.pool())
                    .await
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sqlx::query("INSERT INTO probe (x) VALUES ($1)")
            .bind(n + 1)
            .execute(&mut *tx)
            .await
            .expect("the transaction that read first still writes");
        tx.commit().await.unwrap();
        other
            .await
            .unwrap()
            .expect("the other writer waited for the lock and wrote");
        let rows: Vec<i64> = sqlx::query_scalar("SELECT x FROM probe ORDER BY x")
            .fetch_all(store.pool())
            .await
            .unwrap();
        assert_eq!(rows, [1, 100]);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }

    #[test]
    fn the_events_schema_is_read_from_each_backends_migrations() {
        for backend in [Backend::Sqlite, Backend::Postgres] {
            let ddl = backend.events_schema();
            assert!(
                ddl[0].starts_with("CREATE TABLE events (") && ddl[0].contains("body"),
                "{backend:?}: {ddl:?}"
            );
            let indexes: Vec<&str> = ddl[1..]
                .iter()
                .filter_map(|st| st.split_whitespace().nth(2))
                .collect();
            assert_eq!(
                indexes,
                [
                    "events_patient_seq",
                    "events_type_time",
                    "events_contact",
                    "events_occurred"
                ],
                "{backend:?}"
            );
        }
    }
}
