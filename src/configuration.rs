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
    /// Authentication, authorization, audit and limits.
    pub security: SecuritySettings,
    /// TLS for the HTTP API.
    pub tls: TlsSettings,
    /// Routing thresholds (frustration, priority, relaxation, overflow, timers).
    #[serde(default)]
    pub routing: frontdoor_actors::routing::RoutingConfig,
    /// Restart policies and drills.
    #[serde(default)]
    pub supervision: SupervisionSettings,
    /// Several nodes as one runtime (off: this node does everything).
    #[serde(default)]
    pub cluster: ClusterSettings,
    /// The FHIR R4 edge (`/fhir/r4`) and what is filed in the EHR.
    #[serde(default)]
    pub fhir: FhirSettings,
    /// The site directory: `[sites.<site_id>]` with time zone, name, address, phone,
    /// directions, opening hours, holidays and quiet hours (docs/contract.md, "Sites").
    #[serde(default)]
    pub sites: std::collections::BTreeMap<String, frontdoor_actors::sites::SiteConfig>,
    /// Patient outreach: reminder offsets, the reminder tick, telehealth e-mail,
    /// the answers to STOP/START/HELP.
    #[serde(default)]
    pub outreach: frontdoor_actors::outreach::OutreachSettings,
    /// Where these settings were read from (SIGHUP re-reads it); not a setting.
    #[serde(skip)]
    pub config_dir: Option<std::path::PathBuf>,
}

/// Several nodes sharing the work through PostgreSQL (leases) and RabbitMQ
/// (partition queues, forwarding, the router's inputs). See docs/operations.md,
/// "Cluster".
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterSettings {
    /// Run as a member of a cluster (needs a PostgreSQL store and the broker).
    pub enabled: bool,
    /// This node's name, unique in the cluster (empty: `<hostname>-<port>-<random>`).
    pub node_id: String,
    /// How long a lease lasts without renewal, milliseconds: after a node dies
    /// without a word, its partitions and the router move this much later.
    pub lease_ttl_ms: u64,
    /// How often a node renews its leases and re-plans ownership, milliseconds.
    pub renew_interval_ms: u64,
    /// How long an event waits for its partition to have an owner (a handover
    /// in progress) before the caller hears "unavailable", milliseconds.
    pub handover_wait_ms: u64,
    /// How long a call forwarded to another node waits for its answer, milliseconds.
    pub rpc_timeout_ms: u64,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            enabled: false,
            node_id: String::new(),
            lease_ttl_ms: 5_000,
            renew_interval_ms: 1_000,
            handover_wait_ms: 15_000,
            rpc_timeout_ms: 5_000,
        }
    }
}

/// The FHIR R4 edge and the per-site MRN systems (docs/fhir.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FhirSettings {
    /// Largest accepted body on `POST /fhir/r4`, in bytes.
    pub max_bundle_bytes: usize,
    /// Country calling code (digits) for telecom numbers written without `+`
    /// (`(555) 010-0001` becomes `+15550100001` with `1`); empty: such numbers are skipped.
    pub default_country_code: String,
    /// Keep vital-sign Observations (category `vital-signs`) as device readings too;
    /// glucose is always kept.
    pub vital_signs_as_readings: bool,
    /// Per site (`*`: every site not listed): the MRN identifier systems.
    pub sites: std::collections::BTreeMap<String, frontdoor_actors::ehr::EhrSite>,
}

impl Default for FhirSettings {
    fn default() -> Self {
        FhirSettings {
            max_bundle_bytes: 1024 * 1024,
            default_country_code: "1".into(),
            vital_signs_as_readings: false,
            sites: Default::default(),
        }
    }
}

impl ClusterSettings {
    /// Rejects settings that cannot work, naming the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.renew_interval_ms == 0 {
            return Err("cluster.renew_interval_ms must be > 0".into());
        }
        if self.lease_ttl_ms < 2 * self.renew_interval_ms {
            return Err(
                "cluster.lease_ttl_ms must be at least twice cluster.renew_interval_ms".into(),
            );
        }
        if self.rpc_timeout_ms == 0 {
            return Err("cluster.rpc_timeout_ms must be > 0".into());
        }
        if self.node_id.len() > 100
            || !self
                .node_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(
                "cluster.node_id must be at most 100 letters, digits, '-', '_' or '.'".into(),
            );
        }
        Ok(())
    }
}

impl FhirSettings {
    /// The per-site MRN systems, as the actors need them.
    pub fn ehr(&self) -> frontdoor_actors::ehr::EhrSettings {
        frontdoor_actors::ehr::EhrSettings {
            sites: self.sites.clone(),
        }
    }

    /// Checks the settings before the runtime starts.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_bundle_bytes < 1024 {
            return Err("fhir.max_bundle_bytes must be at least 1024".into());
        }
        if !self
            .default_country_code
            .chars()
            .all(|c| c.is_ascii_digit())
            || self.default_country_code.len() > 3
        {
            return Err("fhir.default_country_code must be 0 to 3 digits".into());
        }
        self.ehr().validate()
    }
}

/// Restart policies per actor kind (reloadable) and the store probe.
#[derive(Debug, Clone, PartialEq, serde::Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionSettings {
    /// Patient actors: a failing event restarts the actor from the store; the same
    /// event failing `max_restarts` times is dead-lettered.
    pub patient: frontdoor_actors::supervision::SupervisionPolicy,
    /// Long-running components (router timers, store probe, broker consumer, outbox relay).
    pub tasks: frontdoor_actors::supervision::SupervisionPolicy,
    /// How often the store probe pings the store, milliseconds.
    pub store_probe_interval_ms: u64,
    /// Drills only: events carrying `"fault_injection": "panic"` make patient actors fail
    /// before storing them; `"panic_after_store"`, after.
    pub fault_injection: bool,
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        SupervisionSettings {
            patient: frontdoor_actors::supervision::SupervisionPolicy::default(),
            tasks: frontdoor_actors::supervision::SupervisionPolicy {
                restart: frontdoor_actors::supervision::Restart::Permanent,
                max_restarts: 5,
                within_secs: 30,
                backoff_ms: 200,
                max_backoff_ms: 10_000,
            },
            store_probe_interval_ms: 2_000,
            fault_injection: false,
        }
    }
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
    /// Cluster: the queue every node feeds the router's inputs into (quorum, single
    /// active consumer: the leader).
    #[serde(default = "default_routing_queue")]
    pub routing_queue: String,
    /// Cluster: the direct exchange each node's private queue is bound to (calls
    /// forwarded to the node that owns a patient, by node id).
    #[serde(default = "default_cluster_exchange")]
    pub cluster_exchange: String,
}

fn default_routing_queue() -> String {
    "frontdoor.routing".into()
}

fn default_cluster_exchange() -> String {
    "frontdoor.cluster".into()
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
    /// Largest accepted JSON body on every other endpoint, in bytes.
    #[serde(default = "default_max_json_bytes")]
    pub max_json_bytes: usize,
    /// Which configuration set this process runs with: `FRONTDOOR_ENVIRONMENT`
    /// (set by [`get_configuration`]); production refuses development tokens.
    #[serde(default)]
    pub environment: Environment,
    /// Serve plain HTTP on an address other than loopback. Off: the runtime refuses
    /// to start that way (PHI and bearer tokens would cross the network in clear).
    /// Only for a private network that carries no one else's traffic (the compose
    /// stack).
    #[serde(default)]
    pub allow_plain_http: bool,
}

/// The environment a process runs in (`FRONTDOOR_ENVIRONMENT`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    /// A developer machine or a local stack: development principals allowed.
    #[default]
    Local,
    /// Production: refuses the published development tokens.
    Production,
}

impl Environment {
    /// The name `FRONTDOOR_ENVIRONMENT` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Local => "local",
            Environment::Production => "production",
        }
    }

    /// Parses `FRONTDOOR_ENVIRONMENT`.
    pub fn parse(s: &str) -> Option<Environment> {
        [Environment::Local, Environment::Production]
            .into_iter()
            .find(|e| e.as_str() == s)
    }
}

impl ApplicationSettings {
    /// True when `host` is a loopback address (`127.0.0.0/8`, `::1`, `localhost`).
    pub fn listens_on_loopback(&self) -> bool {
        let host = self.host.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

impl Settings {
    /// The site directory, checked: the first mistake as one line naming its key
    /// (`sites.main.time_zone: unknown time zone "America/Chikago" ...`).
    pub fn site_directory(&self) -> Result<frontdoor_actors::sites::SiteDirectory, String> {
        frontdoor_actors::sites::SiteDirectory::from_config(&self.sites)
    }

    /// Everything outreach needs (settings, site directory, links), checked: the
    /// first mistake as one line naming its key.
    pub fn outreach(&self) -> Result<frontdoor_actors::outreach::Outreach, String> {
        let sites = self
            .site_directory()
            .map_err(|e| format!("Invalid [sites] configuration: {e}"))?;
        frontdoor_actors::outreach::Outreach::new(self.outreach.clone(), sites, self.notify.clone())
            .map_err(|e| format!("Invalid [outreach] configuration: {e}"))
    }

    /// Sites the configuration names elsewhere (FHIR MRN systems, principals) that
    /// the directory lacks: their patients read UTC times.
    pub fn sites_missing_from_directory(
        &self,
        directory: &frontdoor_actors::sites::SiteDirectory,
    ) -> Vec<String> {
        let used = self.fhir.sites.keys().map(String::as_str).chain(
            self.security
                .principals
                .iter()
                .flat_map(|p| p.sites.iter().map(String::as_str)),
        );
        directory.missing(used)
    }

    /// Refuses plain HTTP on an address other than loopback unless
    /// `application.allow_plain_http` says so; logs one line saying why.
    pub fn check_transport(&self) -> Result<(), String> {
        let app = &self.application;
        if self.tls.enabled || app.listens_on_loopback() || app.allow_plain_http {
            return Ok(());
        }
        let reason = format!(
            "refusing to serve plain HTTP on {}: enable [tls], listen on loopback, or set application.allow_plain_http = true for a private network",
            app.host
        );
        tracing::error!(application.host = %app.host, "{reason}");
        Err(reason)
    }
}

fn default_max_json_bytes() -> usize {
    16 * 1024
}

/// One principal: who holds a token (only the token's SHA-256 is kept).
#[derive(Clone, Deserialize)]
pub struct PrincipalEntry {
    /// Stable id (the agent id for agents); recorded in the audit log.
    pub id: String,
    /// What the principal may do.
    pub role: crate::auth::Role,
    /// Sites it acts for; `*` for all.
    pub sites: Vec<String>,
    /// Clinicians only: the departments whose patients (an appointment there, at one
    /// of `sites`) the clinician treats.
    #[serde(default)]
    pub departments: Vec<String>,
    /// Hex SHA-256 of the bearer token (the token itself is never configured).
    pub token_sha256: String,
}

impl std::fmt::Debug for PrincipalEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrincipalEntry")
            .field("id", &self.id)
            .field("role", &self.role)
            .field("sites", &self.sites)
            .field("departments", &self.departments)
            .finish_non_exhaustive()
    }
}

/// Authentication, authorization, audit and request limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SecuritySettings {
    /// Principals configured inline (tests; small deployments).
    pub principals: Vec<PrincipalEntry>,
    /// A TOML file of `[[principal]]` entries, reloaded on SIGHUP and on change.
    pub principals_file: Option<std::path::PathBuf>,
    /// How often the principals file's modification time is checked.
    pub reload_interval_secs: u64,
    /// When true `/metrics` needs a token (admin or monitor); when false it is open.
    pub metrics_require_token: bool,
    /// Audit records are kept this many days (HIPAA: 6 years = 2192 days).
    pub audit_retention_days: u32,
    /// How often the audit purge runs, in seconds (0: never; purge by procedure).
    pub audit_purge_interval_secs: u64,
    /// Sustained events per second each token may post to `POST /v1/events`.
    pub events_rate_per_sec: f64,
    /// Burst above the sustained rate each token may post.
    pub events_burst: u32,
    /// Emergency access: agents and supervisors stating `X-Purpose-Of-Use: emergency`
    /// and a reason may read a patient they would otherwise be refused (audited).
    pub break_glass_enabled: bool,
}

impl Default for SecuritySettings {
    fn default() -> Self {
        SecuritySettings {
            principals: Vec::new(),
            principals_file: None,
            reload_interval_secs: 5,
            metrics_require_token: false,
            audit_retention_days: 2192,
            audit_purge_interval_secs: 86_400,
            events_rate_per_sec: 500.0,
            events_burst: 1000,
            break_glass_enabled: false,
        }
    }
}

/// TLS for the HTTP API (rustls).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TlsSettings {
    /// Serve HTTPS. Plain HTTP (false) is for local use only.
    pub enabled: bool,
    /// PEM certificate chain.
    pub cert_path: std::path::PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_path: std::path::PathBuf,
}

impl Default for TlsSettings {
    fn default() -> Self {
        TlsSettings {
            enabled: false,
            cert_path: "tls/cert.pem".into(),
            key_path: "tls/key.pem".into(),
        }
    }
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
    /// Group commit: journey appends that arrive together are committed in one
    /// transaction of at most this many (0: one transaction per append).
    #[serde(default = "default_group_commit")]
    pub group_commit_max_batch: usize,
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
    /// Messages queued or in progress across all patient actors at most.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// Milliseconds a producer waits for room before its message is shed (503).
    #[serde(default = "default_mailbox_wait_ms")]
    pub mailbox_wait_ms: u64,
    /// Capacity of each shard's mailbox.
    #[serde(default = "default_shard_mailbox")]
    pub shard_mailbox_capacity: usize,
}

fn default_group_commit() -> usize {
    256
}

fn default_max_in_flight() -> usize {
    10_000
}

fn default_mailbox_wait_ms() -> u64 {
    2_000
}

fn default_shard_mailbox() -> usize {
    1_024
}

impl PatientSettings {
    /// The mailbox bounds.
    pub fn bounds(&self) -> frontdoor_actors::shard::MailboxBounds {
        frontdoor_actors::shard::MailboxBounds {
            max_in_flight: self.max_in_flight.max(1),
            wait: Duration::from_millis(self.mailbox_wait_ms),
            shard_mailbox: self.shard_mailbox_capacity.max(1),
        }
    }

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

/// Settings whose value is a list of strings. From the environment they are
/// written comma-separated (`FRONTDOOR__ROUTING__OVERFLOW__CROSS_SITE_SKILLS=scheduling,billing`);
/// a test checks that every list among the settings is named here.
pub const LIST_KEYS: &[&str] = &[
    "routing.overflow.cross_site_skills",
    "outreach.reminders.in_person",
    "outreach.reminders.telehealth",
    "routing.after_hours.clinical_skills",
    "routing.after_hours.self_service_skills",
    "routing.announce.channels",
    "routing.handoff.bot_intents",
    "routing.handoff.person_intents",
    "routing.handoff.person_phrases",
    "routing.red_flags.categories.breathing.intents",
    "routing.red_flags.categories.breathing.phrases",
    "routing.red_flags.categories.chest_pain.intents",
    "routing.red_flags.categories.chest_pain.phrases",
    "routing.red_flags.categories.overdose.intents",
    "routing.red_flags.categories.overdose.phrases",
    "routing.red_flags.categories.stroke.intents",
    "routing.red_flags.categories.stroke.phrases",
    "routing.red_flags.categories.suicidal.intents",
    "routing.red_flags.categories.suicidal.phrases",
];

/// The separator of list values in `FRONTDOOR__*` variables.
pub const LIST_SEPARATOR: &str = ",";

/// Reads settings from `config_dir` for the environment named by
/// `FRONTDOOR_ENVIRONMENT` (default `local`), then `FRONTDOOR__*` variables.
pub fn get_configuration(config_dir: &Path) -> Result<Settings, config::ConfigError> {
    let vars: std::collections::HashMap<String, String> = std::env::vars().collect();
    get_configuration_with(config_dir, &vars)
}

/// As [`get_configuration`], with the environment given as a map (tests).
pub fn get_configuration_with(
    config_dir: &Path,
    vars: &std::collections::HashMap<String, String>,
) -> Result<Settings, config::ConfigError> {
    let name = vars
        .get("FRONTDOOR_ENVIRONMENT")
        .cloned()
        .unwrap_or_else(|| "local".to_string());
    let Some(environment) = Environment::parse(&name) else {
        return Err(config::ConfigError::Message(format!(
            "FRONTDOOR_ENVIRONMENT must be local or production, not {name:?}"
        )));
    };
    let overrides: config::Map<String, String> = vars
        .iter()
        .filter(|(k, _)| k.starts_with("FRONTDOOR__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut env = config::Environment::with_prefix("FRONTDOOR")
        .prefix_separator("__")
        .separator("__")
        .try_parsing(true)
        .list_separator(LIST_SEPARATOR)
        .source(Some(overrides));
    for key in LIST_KEYS {
        env = env.with_list_parse_key(key);
    }
    let mut settings: Settings = config::Config::builder()
        .add_source(config::File::from(config_dir.join("base.toml")))
        .add_source(
            config::File::from(config_dir.join(format!("{}.toml", environment.as_str())))
                .required(false),
        )
        .add_source(env)
        .set_override("application.environment", environment.as_str())?
        .build()?
        .try_deserialize()?;
    settings.config_dir = Some(config_dir.to_path_buf());
    Ok(settings)
}

/// The settings in `config/` with no environment overrides (tests start here).
pub fn base_configuration() -> Result<Settings, config::ConfigError> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    config::Config::builder()
        .add_source(config::File::from(dir.join("base.toml")))
        .build()?
        .try_deserialize()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_host(host: &str, tls: bool, allow: bool) -> Settings {
        let mut s = base_configuration().expect("config/base.toml");
        s.application.host = host.into();
        s.tls.enabled = tls;
        s.application.allow_plain_http = allow;
        s
    }

    #[test]
    fn plain_http_is_served_on_loopback_only_unless_allowed() {
        for host in ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"] {
            assert!(
                with_host(host, false, false).check_transport().is_ok(),
                "{host}"
            );
        }
        for host in ["0.0.0.0", "::", "10.1.2.3", "frontdoor.internal"] {
            assert!(
                with_host(host, false, false).check_transport().is_err(),
                "{host}"
            );
            assert!(
                with_host(host, true, false).check_transport().is_ok(),
                "{host} with TLS"
            );
            assert!(
                with_host(host, false, true).check_transport().is_ok(),
                "{host} allowed"
            );
        }
    }

    #[test]
    fn an_unknown_time_zone_is_refused_with_one_line_naming_the_key() {
        let mut s = base_configuration().expect("config/base.toml");
        assert!(
            s.site_directory().is_ok(),
            "config/base.toml's sites are valid"
        );
        s.sites.entry("main".into()).or_default().time_zone = "Mars/Olympus_Mons".into();
        let e = s.site_directory().unwrap_err();
        assert!(
            e.starts_with("sites.main.time_zone: unknown time zone \"Mars/Olympus_Mons\""),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1);
    }

    #[test]
    fn sites_named_elsewhere_but_missing_from_the_directory_are_listed() {
        let mut s = base_configuration().expect("config/base.toml");
        s.fhir.sites.insert("nowhere".into(), Default::default());
        let d = s.site_directory().unwrap();
        assert!(s
            .sites_missing_from_directory(&d)
            .contains(&"nowhere".to_string()));
        assert!(!s
            .sites_missing_from_directory(&d)
            .contains(&"main".to_string()));
    }

    #[test]
    fn the_environment_is_local_or_production() {
        assert_eq!(
            Environment::parse("production"),
            Some(Environment::Production)
        );
        assert_eq!(Environment::parse("local"), Some(Environment::Local));
        assert_eq!(Environment::parse("staging"), None);
        assert_eq!(
            base_configuration().unwrap().application.environment,
            Environment::Local
        );
    }

    fn env(pairs: &[(&str, &str)]) -> std::collections::HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn config_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
    }

    #[test]
    fn a_list_setting_is_read_from_the_environment_comma_separated() {
        let s = get_configuration_with(
            &config_dir(),
            &env(&[(
                "FRONTDOOR__ROUTING__OVERFLOW__CROSS_SITE_SKILLS",
                "scheduling,billing,pharmacy",
            )]),
        )
        .expect("a list from the environment");
        let skills: Vec<&str> = s
            .routing
            .overflow
            .cross_site_skills
            .iter()
            .map(String::as_str)
            .collect();
        assert_eq!(skills, ["billing", "pharmacy", "scheduling"]);
        let one = get_configuration_with(
            &config_dir(),
            &env(&[("FRONTDOOR__ROUTING__OVERFLOW__CROSS_SITE_SKILLS", "billing")]),
        )
        .expect("a list of one");
        assert_eq!(one.routing.overflow.cross_site_skills.len(), 1);
        // Scalars next to it still parse as scalars.
        let port = get_configuration_with(
            &config_dir(),
            &env(&[("FRONTDOOR__APPLICATION__PORT", "9091")]),
        )
        .expect("a scalar");
        assert_eq!(port.application.port, 9091);
        assert_eq!(port.config_dir.as_deref(), Some(config_dir().as_path()));
    }

    /// Every list of scalars among the settings is in [`LIST_KEYS`] (else it
    /// could not be set from the environment).
    #[test]
    fn every_list_setting_is_named_in_list_keys() {
        fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<String>) {
            match v {
                serde_json::Value::Object(m) => {
                    for (k, v) in m {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        walk(&key, v, out);
                    }
                }
                serde_json::Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
                    out.push(prefix.to_string())
                }
                _ => {}
            }
        }
        let s = base_configuration().unwrap();
        let sections = serde_json::json!({
            "routing": s.routing,
            "supervision": s.supervision,
            "cluster": s.cluster,
            "outreach": s.outreach,
        });
        let mut lists = Vec::new();
        walk("", &sections, &mut lists);
        assert!(!lists.is_empty());
        let missing: Vec<&String> = lists
            .iter()
            .filter(|k| !LIST_KEYS.contains(&k.as_str()))
            .collect();
        assert!(missing.is_empty(), "missing from LIST_KEYS: {missing:?}");
    }
}
