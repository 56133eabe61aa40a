//! Typed settings: `config/base.toml`, then `config/<environment>.toml`, then
//! `FRONTDOOR__SECTION__KEY` environment variables. Tests build [`Settings`]
//! and override fields; they never touch the process environment.

use std::path::Path;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// All settings.
#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    /// HTTP API.
    pub application: ApplicationSettings,
    /// Journey store.
    pub store: StoreSettings,
    /// Patient actors.
    pub patients: PatientSettings,
    /// Logs.
    pub telemetry: TelemetrySettings,
    /// Patient notifications (links they carry).
    pub notify: frontdoor_actors::command::NotifySettings,
    /// RabbitMQ: events in, commands out (off by default: the embedded runtime
    /// needs no broker).
    pub broker: BrokerSettings,
    /// Routing thresholds (frustration, priority, relaxation, overflow, timers).
    #[serde(default)]
    pub routing: frontdoor_actors::routing::RoutingConfig,
}

/// RabbitMQ settings. Every name is configurable so tests (and several
/// environments sharing one broker) never share topology.
#[derive(Debug, Clone, Deserialize)]
pub struct BrokerSettings {
    /// Consume events and relay commands through RabbitMQ at all.
    pub enabled: bool,
    /// `amqp://user:password@host:port/vhost`; a secret because it holds a password.
    pub url: SecretString,
    /// Name shown in the broker's connection list (`rabbitmqctl list_connections`).
    pub connection_name: String,
    /// Topic exchange adapters publish envelopes to (`<site>.<channel>.<type>`).
    pub events_exchange: String,
    /// Consistent-hash exchange that spreads events over the partition queues by
    /// the `x-patient-key` header.
    pub partition_exchange: String,
    /// Prefix of the partition queues (`<prefix>.0` .. `<prefix>.<partitions-1>`).
    pub queue_prefix: String,
    /// Number of partition queues (and consumers on each node); per-patient order
    /// holds within one partition.
    pub partitions: u16,
    /// Topic exchange commands are published to (`<site>.<channel>.<command>`).
    pub commands_exchange: String,
    /// Dead-letter exchange: rejected envelopes and deliveries past the limit.
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange, kept for operators.
    pub dead_letter_queue: String,
    /// Unacknowledged deliveries per consumer (bounds memory and in-flight work).
    pub prefetch: u16,
    /// Heartbeat interval in seconds (a dead peer is noticed after about two).
    pub heartbeat_secs: u16,
    /// First reconnect delay in milliseconds (doubles per failure).
    pub reconnect_min_ms: u64,
    /// Longest reconnect delay in milliseconds.
    pub reconnect_max_ms: u64,
    /// Deliveries of one message before the broker dead-letters it (`x-delivery-limit`).
    pub delivery_limit: u32,
    /// Commands the relay publishes per round.
    pub relay_batch: u32,
    /// Milliseconds between relay rounds when the outbox is empty.
    pub relay_interval_ms: u64,
    /// Milliseconds to wait for the broker to confirm a relay round.
    pub confirm_timeout_ms: u64,
    /// Seconds after which an unroutable (parked) command is tried again.
    pub park_retry_secs: u64,
}

impl BrokerSettings {
    /// The backoff bounds for reconnects and store-recovery checks.
    pub fn backoff(&self) -> (Duration, Duration) {
        let min = Duration::from_millis(self.reconnect_min_ms.max(1));
        let max = Duration::from_millis(self.reconnect_max_ms.max(self.reconnect_min_ms.max(1)));
        (min, max)
    }

    /// The name of partition queue `i`.
    pub fn partition_queue(&self, i: u16) -> String {
        format!("{}.{i}", self.queue_prefix)
    }
}

/// HTTP API settings.
#[derive(Debug, Clone, Deserialize)]
pub struct ApplicationSettings {
    /// Listen address.
    pub host: String,
    /// Listen port (0 picks a free one: tests).
    pub port: u16,
    /// Largest accepted event body in bytes.
    pub max_event_bytes: usize,
    /// Grace period for in-flight work at shutdown.
    pub shutdown_grace_secs: u64,
}

/// Store settings.
#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    /// `sqlite://path` or `postgres://...`; a secret because it may hold a password.
    pub url: SecretString,
    /// Pool size.
    pub max_connections: u32,
    /// How long to wait for a connection before answering "unavailable".
    pub acquire_timeout_secs: u64,
}

impl StoreSettings {
    /// True when the URL names PostgreSQL.
    pub fn is_postgres(&self) -> bool {
        let u = self.url.expose_secret();
        u.starts_with("postgres://") || u.starts_with("postgresql://")
    }

    /// The acquire timeout as a duration.
    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_secs(self.acquire_timeout_secs.max(1))
    }
}

/// Patient actor settings.
#[derive(Debug, Clone, Deserialize)]
pub struct PatientSettings {
    /// Number of shards (threads).
    pub shards: usize,
    /// Idle seconds before passivation.
    pub idle_timeout_secs: u64,
    /// Timeline entries kept in memory.
    pub timeline_limit: usize,
    /// Notes kept in memory.
    pub notes_limit: usize,
    /// Closed contacts kept in memory.
    pub closed_contacts_limit: usize,
    /// Messages kept per contact.
    pub messages_per_contact_limit: usize,
    /// Device summaries kept.
    pub device_readings_limit: usize,
}

impl PatientSettings {
    /// The journey memory bounds.
    pub fn limits(&self) -> frontdoor_actors::journey::Limits {
        frontdoor_actors::journey::Limits {
            timeline: self.timeline_limit.max(1),
            notes: self.notes_limit,
            closed_contacts: self.closed_contacts_limit,
            messages_per_contact: self.messages_per_contact_limit.max(1),
            device_readings: self.device_readings_limit,
        }
    }
}

/// Log settings.
#[derive(Debug, Clone, Deserialize)]
pub struct TelemetrySettings {
    /// `pretty` or `json`.
    pub format: String,
    /// Default filter directive.
    pub level: String,
}

/// Reads settings from `config_dir` for the environment named by
/// `FRONTDOOR_ENVIRONMENT` (default `local`), then `FRONTDOOR__*` variables.
pub fn get_configuration(config_dir: &Path) -> Result<Settings, config::ConfigError> {
    let environment =
        std::env::var("FRONTDOOR_ENVIRONMENT").unwrap_or_else(|_| "local".to_string());
    if !matches!(environment.as_str(), "local" | "production") {
        return Err(config::ConfigError::Message(format!(
            "FRONTDOOR_ENVIRONMENT must be local or production, not {environment:?}"
        )));
    }
    config::Config::builder()
        .add_source(config::File::from(config_dir.join("base.toml")))
        .add_source(
            config::File::from(config_dir.join(format!("{environment}.toml"))).required(false),
        )
        .add_source(
            config::Environment::with_prefix("FRONTDOOR")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        )
        .build()?
        .try_deserialize()
}

/// The settings in `config/` with no environment overrides (tests start here).
pub fn base_configuration() -> Result<Settings, config::ConfigError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    config::Config::builder()
        .add_source(config::File::from(dir.join("base.toml")))
        .build()?
        .try_deserialize()
}
