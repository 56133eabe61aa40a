//! `spawn_app()`: a running Front Door on port 0 with a fresh database.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Duration, Utc};
use frontdoor::broker::shutdown::ShutdownTrigger;
use frontdoor::configuration::{base_configuration, Settings};
use frontdoor::startup::Application;
use frontdoor::store::Store;
use frontdoor_actors::routing::router::Routing;
use frontdoor_actors::routing::ManualClock;
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
    /// The clock routing timers run on (moves only when a test advances it).
    pub clock: Arc<ManualClock>,
    /// Routing, whose timers tests tick after advancing the clock.
    pub routing: Routing,
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

fn init_logs() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if std::env::var("TEST_LOG").is_ok() {
            frontdoor::telemetry::init(&frontdoor::configuration::TelemetrySettings {
                format: "pretty".into(),
                level: "debug".into(),
            });
        }
    });
}

/// Settings for a test: port 0, a fresh database of the given backend.
pub async fn test_settings(backend: Backend) -> (Settings, Option<TempDir>) {
    let mut settings = base_configuration().expect("Failed to read config/base.toml");
    settings.application.port = 0;
    // Routing timers run only when a test ticks them.
    settings.routing.tick_interval_ms = 3_600_000;
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
    init_logs();
    let clock = Arc::new(ManualClock::new(Utc::now()));
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("Failed to build the application");
    let address = format!("http://127.0.0.1:{}", app.port());
    let store = app.ingest().store().clone();
    let shutdown = app.shutdown_trigger();
    let broker = app.broker_health();
    let routing = app.routing().clone();
    let stopped = actix_rt::spawn(app.run_until_stopped());
    TestApp {
        address,
        store,
        client: reqwest::Client::new(),
        settings,
        broker,
        shutdown,
        stopped: Some(stopped),
        clock,
        routing,
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

    /// GET a path, returning status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let res = self
            .client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .expect("Failed to GET");
        let status = res.status().as_u16();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Resolves an identifier to a patient id via the API.
    pub async fn patient_id(&self, kind: &str, value: &str) -> String {
        let (status, body) = self
            .get(&format!("/v1/patients?{kind}={}", urlencode(value)))
            .await;
        assert_eq!(status, 200, "lookup {kind}: {body}");
        body["patient_id"].as_str().expect("patient_id").to_string()
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
