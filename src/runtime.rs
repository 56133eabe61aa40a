//! The live runtime: what `GET /v1/runtime` shows and how thresholds change
//! without a restart.
//!
//! A change (SIGHUP re-reading `config/`, or `PUT /v1/runtime/config` with a JSON
//! patch) is merged over the values in force, parsed strictly (unknown keys are
//! errors), validated, and only then applied; an invalid change is rejected with
//! its reason and the old values stay. Each accepted change bumps the config version.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use frontdoor_actors::routing::router::Routing;
use frontdoor_actors::routing::RoutingConfig;
use frontdoor_actors::shard::PatientRegistry;
use frontdoor_actors::supervision::SupervisionPolicy;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::configuration::get_configuration;
use crate::metrics as m;
use crate::supervisor::{ActorStats, SharedPolicy};

/// The live runtime's handles.
pub struct Runtime {
    /// Routing (thresholds reload here).
    pub routing: Routing,
    /// Patient actors.
    pub patients: PatientRegistry,
    /// Patient actors' restart policy.
    pub patient_policy: SharedPolicy,
    /// Long-running components' restart policy.
    pub task_policy: SharedPolicy,
    /// Restarts, escalations, poison and shed messages by kind.
    pub stats: Arc<ActorStats>,
    /// Who owns what in the cluster.
    pub cluster: Cluster,
    /// The configuration version in force.
    version: AtomicU64,
    /// Where SIGHUP re-reads configuration from.
    config_dir: Option<PathBuf>,
}

fn merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// A validated change of the reloadable values.
#[derive(Debug, Clone)]
pub struct Change {
    /// Routing thresholds after the change.
    pub routing: RoutingConfig,
    /// Patient actors' restart policy after the change.
    pub patient: SupervisionPolicy,
    /// Long-running components' restart policy after the change.
    pub tasks: SupervisionPolicy,
}

/// Merges `patch` (the `PUT /v1/runtime/config` shape) over `current` (the
/// [`Runtime::tunables`] shape), parses the result strictly and validates it: an
/// unknown key or a bad value is refused with its reason, naming the key. Live
/// reload and `frontdoor replay` share it.
pub fn validate_change(current: &Value, patch: &Value) -> Result<Change, String> {
    let Value::Object(p) = patch else {
        return Err("the change must be a JSON object".into());
    };
    if let Some(k) = p.keys().find(|k| *k != "routing" && *k != "supervision") {
        return Err(format!(
            "unknown section {k:?}: only routing and supervision are reloadable"
        ));
    }
    if let Some(Value::Object(s)) = p.get("supervision") {
        if let Some(k) = s.keys().find(|k| *k != "patient" && *k != "tasks") {
            return Err(format!(
                "supervision.{k} is not reloadable (only supervision.patient and supervision.tasks)"
            ));
        }
    }
    let mut merged = current.clone();
    merge(&mut merged, patch);
    let routing: RoutingConfig =
        serde_json::from_value(merged["routing"].clone()).map_err(|e| format!("routing: {e}"))?;
    routing.validate().map_err(|e| format!("routing: {e}"))?;
    let patient: SupervisionPolicy =
        serde_json::from_value(merged["supervision"]["patient"].clone())
            .map_err(|e| format!("supervision.patient: {e}"))?;
    patient
        .validate()
        .map_err(|e| format!("supervision.patient: {e}"))?;
    let tasks: SupervisionPolicy = serde_json::from_value(merged["supervision"]["tasks"].clone())
        .map_err(|e| format!("supervision.tasks: {e}"))?;
    tasks
        .validate()
        .map_err(|e| format!("supervision.tasks: {e}"))?;
    Ok(Change {
        routing,
        patient,
        tasks,
    })
}

impl Runtime {
    /// A runtime view over the started components.
    pub fn new(
        routing: Routing,
        patients: PatientRegistry,
        patient_policy: SharedPolicy,
        task_policy: SharedPolicy,
        stats: Arc<ActorStats>,
        cluster: Cluster,
        config_dir: Option<PathBuf>,
    ) -> Runtime {
        metrics::gauge!(m::CONFIG_VERSION).set(1.0);
        Runtime {
            routing,
            patients,
            patient_policy,
            task_policy,
            stats,
            cluster,
            version: AtomicU64::new(1),
            config_dir,
        }
    }

    /// The configuration version in force.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The tunable values in force.
    pub fn tunables(&self) -> Value {
        let policy = |p: &SharedPolicy| p.read().map(|p| p.clone()).unwrap_or_default();
        json!({
            "routing": *self.routing.config(),
            "supervision": {
                "patient": policy(&self.patient_policy),
                "tasks": policy(&self.task_policy),
            }
        })
    }

    /// Applies a JSON patch over the values in force; answers the new version.
    pub fn apply(&self, patch: &Value) -> Result<u64, String> {
        let Change {
            routing,
            patient,
            tasks,
        } = validate_change(&self.tunables(), patch)?;
        self.routing.reload(routing)?;
        if let Ok(mut g) = self.patient_policy.write() {
            *g = patient;
        }
        if let Ok(mut g) = self.task_policy.write() {
            *g = tasks;
        }
        let v = self.version.fetch_add(1, Ordering::SeqCst) + 1;
        metrics::gauge!(m::CONFIG_VERSION).set(v as f64);
        tracing::info!(config.version = v, "configuration reloaded");
        Ok(v)
    }

    /// Re-reads `config/` (SIGHUP) and applies its reloadable sections.
    pub fn reload_from_files(&self) -> Result<u64, String> {
        let dir = self
            .config_dir
            .as_ref()
            .ok_or_else(|| "no configuration directory to reload from".to_string())?;
        let settings = get_configuration(dir).map_err(|e| format!("configuration: {e}"))?;
        self.apply(&json!({
            "routing": settings.routing,
            "supervision": {"patient": settings.supervision.patient, "tasks": settings.supervision.tasks},
        }))
    }

    /// What `GET /v1/runtime` shows.
    pub async fn snapshot(&self) -> Value {
        let queues = self.routing.queues().await.len();
        let agents = self.routing.agents().await.len();
        let resident = self.patients.resident().await;
        let own = self.cluster.now();
        json!({
            "config_version": self.version(),
            "node_id": own.node_id,
            "cluster": {
                "membership": own.membership,
                "partitions": own.partitions,
                "owned": own.mine.keys().collect::<Vec<_>>(),
                "leader": own.leader,
                "leading": own.is_leader(),
                "owners": own.owners,
                "members": own.members,
            },
            "actors": {"patient": resident, "queue": queues, "agent": agents},
            "resident_patients": resident,
            "mailbox_depth": {"patient": self.patients.in_flight()},
            "supervision": self.stats.snapshot(),
            "components_down": self.stats.down(),
        })
    }
}
