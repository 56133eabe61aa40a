//! `spawn_app()`: a running Front Door on port 0 with a fresh database.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Duration, Utc};
use frontdoor::auth::{token_digest, Role};
use frontdoor::broker::shutdown::ShutdownTrigger;
use frontdoor::configuration::{base_configuration, PrincipalEntry, Settings};
use frontdoor::startup::Application;
use frontdoor::store::Store;
use frontdoor_actors::routing::router::Routing;
use frontdoor_actors::routing::{Clock, ManualClock, SystemClock};
use secrecy::SecretString;
use serde_json::{json, Value};
use sqlx::Connection;
use uuid::Uuid;

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running application and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    /// The store, for assertions about what was (not) stored.
    pub store: Store,
    /// HTTP client.
    pub client: reqwest::Client,
    /// The settings it runs with (broker names, store URL).
    pub settings: Settings,
    /// The broker side's state (deliveries in flight).
    pub broker: frontdoor::broker::BrokerHealth,
    /// Starts the drain, as SIGTERM would.
    pub shutdown: ShutdownTrigger,
    /// Resolves when the application has stopped.
    pub stopped: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The token sent by default (admin).
    pub token: String,
    /// The clock routing timers run on (moves only when a test advances it).
    pub clock: Arc<ManualClock>,
    /// Routing, whose timers tests tick after advancing the clock.
    pub routing: Routing,
    /// The live runtime (statistics, reload).
    #[allow(dead_code)] // read by some test modules only
    pub runtime: Arc<frontdoor::runtime::Runtime>,
    /// Temp dir holding the SQLite file (kept alive for the test).
    _dir: Option<TempDir>,
}

/// A directory removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The PostgreSQL server tests use (override with FRONTDOOR_TEST_POSTGRES_URL).
pub fn postgres_server_url() -> String {
    std::env::var("FRONTDOOR_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_string())
}

/// Every log line (and closed span with its fields) any test's app wrote, at debug
/// level for the frontdoor crates: the PHI canary test searches it.
pub fn captured_logs() -> String {
    init_logs();
    // unwrap: the buffer's lock is only held to append or copy.
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Appends formatted log output to [`LOGS`].
struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // unwrap: see `captured_logs`.
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn init_logs() {
    use tracing_subscriber::fmt::format::FmtSpan;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{fmt, EnvFilter, Layer};
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let capture = fmt::layer()
            .with_ansi(false)
            .with_span_events(FmtSpan::CLOSE)
            .with_writer(|| Capture)
            .with_filter(EnvFilter::new(
                "info,frontdoor=debug,frontdoor_actors=debug,sqlx=debug,actix_web=debug",
            ));
        let print = std::env::var("TEST_LOG")
            .is_ok()
            .then(|| fmt::layer().with_filter(EnvFilter::new("debug")));
        let _ = tracing_subscriber::registry()
            .with(capture)
            .with(print)
            .try_init();
    });
}

/// The test principals: (id, role, sites). Each one's token is [`token_for`] its id.
pub const PRINCIPALS: &[(&str, Role, &[&str])] = &[
    ("test-admin", Role::Admin, &["*"]),
    ("ehr-adapter", Role::Adapter, &["*"]),
    ("north-adapter", Role::Adapter, &["north"]),
    ("agent-7", Role::Agent, &["north"]),
    ("agent-8", Role::Agent, &["north"]),
    ("sup-north", Role::Supervisor, &["north"]),
    ("sup-south", Role::Supervisor, &["south"]),
    ("prometheus", Role::Monitor, &["*"]),
    ("dr-derm", Role::Clinician, &["north"]),
    ("dr-cardio", Role::Clinician, &["north"]),
    ("iva-north", Role::Bot, &["north"]),
];

/// The departments of the test clinicians (every clinician needs at least one).
pub const CLINICIAN_DEPARTMENTS: &[(&str, &[&str])] = &[
    ("dr-derm", &["dermatology"]),
    ("dr-cardio", &["cardiology"]),
];

/// The MRN identifier system of the test sites' EHR.
pub const TEST_MRN_SYSTEM: &str = "urn:oid:2.16.840.1.113883.3.4711.1";

/// The identifier system `carebundle` (the FHIR test data generator) gives its
/// patients' MRNs; `tests/api/fhir.rs` checks it is still the one it uses.
pub const CAREBUNDLE_MRN_SYSTEM: &str = "urn:uuid:6f2a1d3e-9c47-5b8a-a1f0-2d4e6c8b0a17";

/// The bearer token of a test principal.
pub fn token_for(id: &str) -> String {
    format!("{id}-token-7c1d9f0e5b2a4c8d")
}

/// The test principal of a role (the first listed).
pub fn principal_of(role: Role) -> &'static str {
    PRINCIPALS
        .iter()
        .find(|p| p.1 == role)
        .map(|p| p.0)
        .unwrap()
}

/// Settings for a test: port 0, a fresh database of the given backend.
pub async fn test_settings(backend: Backend) -> (Settings, Option<TempDir>) {
    let mut settings = base_configuration().expect("Failed to read config/base.toml");
    settings.application.port = 0;
    settings.security.principals = PRINCIPALS
        .iter()
        .map(|(id, role, sites)| PrincipalEntry {
            id: id.to_string(),
            role: *role,
            sites: sites.iter().map(|s| s.to_string()).collect(),
            departments: CLINICIAN_DEPARTMENTS
                .iter()
                .find(|(c, _)| c == id)
                .map(|(_, d)| d.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default(),
            token_sha256: token_digest(&token_for(id)),
        })
        .collect();
    // Every site's EHR: the generator's system (also what is filed outbound) and a test one.
    settings.fhir.sites.insert(
        "*".into(),
        frontdoor_actors::ehr::EhrSite {
            mrn_systems: vec![CAREBUNDLE_MRN_SYSTEM.into(), TEST_MRN_SYSTEM.into()],
        },
    );
    // Routing timers run only when a test ticks them.
    settings.routing.tick_interval_ms = 3_600_000;
    // Routing takes contacts at any hour, whatever the clock says when the tests run
    // (tests/api/virtual_agent.rs turns after-hours routing on with hours of its own).
    settings.routing.after_hours.enabled = false;
    // Wait announcements off: many tests count the commands a scenario causes
    // (tests/api/virtual_agent.rs turns them on where it tests them).
    settings.routing.announce.channels.clear();
    // Tests start their clock at the real now: quiet hours would make what leaves
    // depend on the hour CI runs at. The outreach tests turn them on where they test them.
    for site in settings.sites.values_mut() {
        site.quiet_hours = "off".into();
    }
    let dir = match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("frontdoor-test-{}", Uuid::new_v4()));
            std::fs::create_dir_all(&dir).expect("Failed to create a temp dir");
            settings.store.url =
                SecretString::from(format!("sqlite://{}", dir.join("test.db").display()));
            Some(TempDir(dir))
        }
        Backend::Postgres => {
            let server = postgres_server_url();
            let name = format!("frontdoor_test_{}", Uuid::new_v4().simple());
            let mut conn = sqlx::PgConnection::connect(&format!("{server}/postgres"))
                .await
                .expect("PostgreSQL must be running for the tests (see .ci/run)");
            sqlx::query(sqlx::AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
                .execute(&mut conn)
                .await
                .expect("Failed to create the test database");
            settings.store.url = SecretString::from(format!("{server}/{name}"));
            None
        }
    };
    (settings, dir)
}

/// Starts the application on a fresh database.
pub async fn spawn_app(backend: Backend) -> TestApp {
    let (settings, dir) = test_settings(backend).await;
    spawn_app_with(settings, dir).await
}

/// Starts the application with the given settings.
pub async fn spawn_app_with(settings: Settings, dir: Option<TempDir>) -> TestApp {
    let clock = Arc::new(ManualClock::new(Utc::now()));
    spawn_app_on(settings, dir, clock.clone(), clock).await
}

/// Starts the application on a fresh database with routing on the wall clock, as
/// in production (its timers run every `tick_interval_ms` as configured by default,
/// waits grow); `TestApp::clock` then drives nothing.
pub async fn spawn_app_on_the_wall_clock(backend: Backend) -> TestApp {
    let (mut settings, dir) = test_settings(backend).await;
    settings.routing.tick_interval_ms =
        frontdoor_actors::routing::RoutingConfig::default().tick_interval_ms;
    let unused = Arc::new(ManualClock::new(Utc::now()));
    spawn_app_on(settings, dir, Arc::new(SystemClock), unused).await
}

async fn spawn_app_on(
    settings: Settings,
    dir: Option<TempDir>,
    runs_on: Arc<dyn Clock>,
    clock: Arc<ManualClock>,
) -> TestApp {
    init_logs();
    let app = Application::build_with_clock(settings.clone(), runs_on)
        .await
        .expect("Failed to build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let store = app.ingest().store().clone();
    let shutdown = app.shutdown_trigger();
    let broker = app.broker_health();
    let routing = app.routing().clone();
    let runtime = app.runtime().clone();
    let stopped = actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        store,
        // Idle connections are dropped before the server's 5 s keep-alive closes them:
        // a test that pauses (a Python generator on a busy machine) would otherwise
        // reuse a connection the server is closing (hyper's IncompleteMessage).
        client: reqwest::Client::builder()
            .pool_idle_timeout(std::time::Duration::from_secs(2))
            .build()
            .expect("an HTTP client"),
        settings,
        broker,
        shutdown,
        stopped: Some(stopped),
        token: token_for(principal_of(Role::Admin)),
        clock,
        routing,
        runtime,
        _dir: dir,
    }
}

impl TestApp {
    /// Drains the application as SIGTERM does and waits until it has stopped.
    pub async fn stop(&mut self) {
        self.shutdown.trigger();
        if let Some(h) = self.stopped.take() {
            h.await
                .expect("the application task panicked")
                .expect("the application stopped with an error");
        }
    }

    /// POSTs a JSON value to /v1/events.
    pub async fn post_event(&self, event: &Value) -> reqwest::Response {
        self.post_raw(event.to_string()).await
    }

    /// POSTs a raw body to /v1/events.
    pub async fn post_raw(&self, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/events", self.address))
            .bearer_auth(&self.token)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .expect("Failed to POST /v1/events")
    }

    /// POSTs an event and asserts it was stored (202).
    pub async fn store_event(&self, event: &Value) -> Value {
        let res = self.post_event(event).await;
        let status = res.status().as_u16();
        let body: Value = res.json().await.expect("event response is JSON");
        assert_eq!(status, 202, "event {} not stored: {body}", event["type"]);
        body
    }

    /// GET a path as the admin, returning status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_with(path, Some(&self.token), &[]).await
    }

    /// GET a path as the test principal `id` (None: no token), with extra headers.
    pub async fn get_as(
        &self,
        id: Option<&str>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let token = id.map(token_for);
        self.get_with(path, token.as_deref(), headers).await
    }

    /// GET with an explicit token.
    pub async fn get_with(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
    ) -> (u16, Value) {
        let res = self
            .request(reqwest::Method::GET, path, token, headers, None)
            .await;
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Any request, with an explicit token, headers and body.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Option<String>,
    ) -> reqwest::Response {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.address, path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("Content-Type", "application/json").body(b);
        }
        req.send().await.expect("Failed to send a request")
    }

    /// POSTs an event as the test principal `id`.
    pub async fn post_event_as(&self, id: &str, event: &Value) -> reqwest::Response {
        self.request(
            reqwest::Method::POST,
            "/v1/events",
            Some(&token_for(id)),
            &[],
            Some(event.to_string()),
        )
        .await
    }

    /// Resolves an identifier to a patient id via the API.
    pub async fn patient_id(&self, kind: &str, value: &str) -> String {
        let (status, body) = self
            .get(&format!("/v1/patients?{kind}={}", urlencode(value)))
            .await;
        assert_eq!(status, 200, "lookup {kind}: {body}");
        body["patient_id"].as_str().expect("patient_id").to_string()
    }

    /// The Prometheus text.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .expect("Failed to GET /metrics")
            .text()
            .await
            .unwrap_or_default()
    }

    /// PUTs a JSON body to a path, returning status and JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .put(format!("{}{}", self.address, path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("Failed to PUT");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Moves routing's clock forward and runs its timers once.
    pub async fn advance(&self, secs: u64) {
        self.clock.advance(std::time::Duration::from_secs(secs));
        self.routing.tick().await;
    }

    /// POSTs a JSON body to a path, returning status and JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let res = self
            .client
            .post(format!("{}{}", self.address, path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("Failed to POST");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Reads a patient's context.
    pub async fn context(&self, patient_id: &str) -> Value {
        let (status, body) = self
            .get(&format!("/v1/patients/{patient_id}/context"))
            .await;
        assert_eq!(status, 200, "context: {body}");
        body
    }
}

/// Percent-encodes a query value (`+` in phone numbers, `@` in emails).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An event envelope with a fresh id; `extra` fields sit beside the envelope's.
pub fn event(
    event_type: &str,
    channel: &str,
    at: DateTime<Utc>,
    patient: Value,
    extra: Value,
) -> Value {
    let mut v = json!({
        "id": Uuid::new_v4().to_string(),
        "type": event_type,
        "occurred_at": at.to_rfc3339(),
        "site": "north",
        "channel": channel,
        "patient": patient,
    });
    if let Value::Object(extra) = extra {
        for (k, val) in extra {
            v[k] = val;
        }
    }
    v
}

/// Now minus `days` days plus `hours` hours (scenario clocks relative to today).
pub fn days_ago(days: i64, hours: i64) -> DateTime<Utc> {
    Utc::now() - Duration::days(days) + Duration::hours(hours)
}

/// Generates each test once per backend, in modules `sqlite` and `postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($(async fn $name:ident($app:ident: TestApp) $body:block)*) => {
        mod sqlite {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $name() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await;
                    $body
                }
            )*
        }
        mod postgres {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[actix_web::test]
                async fn $name() {
                    let $app = $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await;
                    $body
                }
            )*
        }
    };
}

/// Two nodes' stores on one fresh PostgreSQL database (4 partitions), each fenced for
/// partition 1 by the lease token it believes it holds (none until [`set_token`]):
/// what two cluster members see while the lease of partition 1 moves between them.
///
/// [`set_token`]: FencedPair::set_token
pub struct FencedPair {
    /// Node 0's store (`holder` "node-0").
    pub a: Store,
    /// Node 1's store (`holder` "node-1").
    pub b: Store,
    tokens: Arc<Mutex<[Option<i64>; 2]>>,
}

impl FencedPair {
    pub async fn new() -> FencedPair {
        use frontdoor::store::cluster::Fence;
        let (settings, _) = test_settings(Backend::Postgres).await;
        let tokens: Arc<Mutex<[Option<i64>; 2]>> = Arc::new(Mutex::new([None, None]));
        let mut stores = Vec::new();
        for node in 0..2 {
            let tokens = tokens.clone();
            let store = Store::connect(&settings.store)
                .await
                .expect("a store")
                .with_partitions(4)
                .with_fences(Arc::new(move |p| {
                    let t = tokens.lock().unwrap()[node]?;
                    (p == 1).then(|| Fence {
                        lease: "partition:1".into(),
                        holder: format!("node-{node}"),
                        token: t,
                    })
                }));
            stores.push(store);
        }
        let b = stores.pop().unwrap();
        let a = stores.pop().unwrap();
        FencedPair { a, b, tokens }
    }

    /// The token node `node` writes partition 1 with from now on.
    pub fn set_token(&self, node: usize, token: i64) {
        self.tokens.lock().unwrap()[node] = Some(token);
    }

    /// The token node `node` holds, if any.
    pub fn token(&self, node: usize) -> Option<i64> {
        self.tokens.lock().unwrap()[node]
    }
}
