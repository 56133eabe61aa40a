//! The live runtime: what `GET /v1/runtime` shows and how thresholds change
//! without a restart.
//!
//! The values in force are the reloadable sections of the files (`config/`, the
//! environment) with the stored changes merged over them. A change through the API
//! (`PUT /v1/runtime/config`, a JSON merge patch; or a revert to an earlier version)
//! is merged over the changes in force, parsed strictly (unknown keys are errors),
//! validated, stored with who, when and why as the next configuration version, and
//! only then applied; an invalid change is rejected with its reason and nothing
//! changes. Every node polls the latest stored version ([`Runtime::sync`], every
//! second) and applies it, so a cluster runs one set of rules and shows one
//! `config_version`. A node that cannot apply a stored version (it fails validation
//! against that node's files) keeps its old values and reports not ready until it can.
//! SIGHUP re-reads the files, then re-applies the stored changes over them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use frontdoor_actors::routing::router::Routing;
use frontdoor_actors::routing::RoutingConfig;
use frontdoor_actors::shard::PatientRegistry;
use frontdoor_actors::supervision::SupervisionPolicy;
use serde_json::{json, Value};

use crate::cluster::Cluster;
use crate::configuration::{get_configuration, Settings};
use crate::metrics as m;
use crate::store::runtime_config::{Appended, ConfigChange};
use crate::store::{Store, StoreError};
use crate::supervisor::{ActorStats, SharedPolicy};

/// How often every node polls the stored configuration.
pub const SYNC_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest stated reason kept with a change.
pub const MAX_REASON_CHARS: usize = 500;

/// Why a change was not made.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The change is malformed or its result fails validation (names the field).
    #[error("{0}")]
    Invalid(String),
    /// No such version to revert to.
    #[error("no configuration version {0}")]
    NoSuchVersion(u64),
    /// The store could not keep the change; nothing changed.
    #[error("the change could not be stored: {0}")]
    Store(#[from] StoreError),
    /// Other changes kept taking the next version first.
    #[error("concurrent configuration changes; retry")]
    Busy,
}

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
    /// Where changes are kept (shared by every node).
    store: Store,
    /// The reloadable sections of the files, as last read.
    files: RwLock<Value>,
    /// The stored changes in force (merged), as last applied.
    overlay: RwLock<Value>,
    /// A stored version this node could not apply, and why.
    failed: RwLock<Option<(u64, String)>>,
    /// One change at a time from this node.
    changing: tokio::sync::Mutex<()>,
}

/// Merges `patch` over `base` (RFC 7396: `null` removes a key; an object patched
/// over a non-object starts from an empty object, so no `null` is ever kept).
fn merge(base: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *base = patch.clone();
        return;
    };
    if !base.is_object() {
        *base = Value::Object(Default::default());
    }
    if let Value::Object(b) = base {
        for (k, v) in p {
            if v.is_null() {
                b.remove(k);
            } else {
                merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The reloadable sections of `settings`.
fn reloadable(settings: &Settings) -> Value {
    json!({
        "routing": settings.routing,
        "supervision": {
            "patient": settings.supervision.patient,
            "tasks": settings.supervision.tasks,
        },
    })
}

/// Checks that a patch touches only reloadable sections.
fn check_patch(patch: &Value) -> Result<(), String> {
    let Value::Object(p) = patch else {
        return Err("the change must be a JSON object".into());
    };
    if p.is_empty() {
        return Err("the change is empty".into());
    }
    if let Some(k) = p.keys().find(|k| *k != "routing" && *k != "supervision") {
        return Err(format!(
            "unknown section {k:?}: only routing and supervision are reloadable"
        ));
    }
    match p.get("supervision") {
        None => {}
        Some(Value::Object(s)) => {
            if let Some(k) = s.keys().find(|k| *k != "patient" && *k != "tasks") {
                return Err(format!(
                    "supervision.{k} is not reloadable (only supervision.patient and supervision.tasks)"
                ));
            }
        }
        // null: undo every earlier change of the section (RFC 7396).
        Some(Value::Null) => {}
        Some(_) => return Err("supervision must be an object or null".into()),
    }
    if p.get("routing")
        .is_some_and(|r| !r.is_object() && !r.is_null())
    {
        return Err("routing must be an object or null".into());
    }
    Ok(())
}

/// A validated change of the reloadable values (what `frontdoor replay` runs under).
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
/// [`Runtime::tunables`] shape) and checks it by the same rules as a live change: an
/// unknown key or a bad value is refused with its reason, naming the key. Live
/// reload and `frontdoor replay` share it.
pub fn validate_change(current: &Value, patch: &Value) -> Result<Change, String> {
    // An empty patch is no change (a replay under the configuration in force); a live
    // change must change something, which `Runtime::apply` checks itself.
    if !patch.as_object().is_some_and(|p| p.is_empty()) {
        check_patch(patch)?;
    }
    let mut merged = current.clone();
    merge(&mut merged, patch);
    let (routing, patient, tasks) = validate(&merged)?;
    Ok(Change {
        routing,
        patient,
        tasks,
    })
}

/// Parses and validates a full set of reloadable values.
fn validate(
    values: &Value,
) -> Result<(RoutingConfig, SupervisionPolicy, SupervisionPolicy), String> {
    let routing: RoutingConfig =
        serde_json::from_value(values["routing"].clone()).map_err(|e| format!("routing: {e}"))?;
    routing.validate().map_err(|e| format!("routing: {e}"))?;
    let patient: SupervisionPolicy =
        serde_json::from_value(values["supervision"]["patient"].clone())
            .map_err(|e| format!("supervision.patient: {e}"))?;
    patient
        .validate()
        .map_err(|e| format!("supervision.patient: {e}"))?;
    let tasks: SupervisionPolicy = serde_json::from_value(values["supervision"]["tasks"].clone())
        .map_err(|e| format!("supervision.tasks: {e}"))?;
    tasks
        .validate()
        .map_err(|e| format!("supervision.tasks: {e}"))?;
    Ok((routing, patient, tasks))
}

impl Runtime {
    /// A runtime view over the started components; `settings` gives the files'
    /// values (already in force), `store` keeps the changes.
    #[allow(clippy::too_many_arguments)] // the wiring of one step: each is used once
    pub fn new(
        settings: &Settings,
        store: Store,
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
            store,
            files: RwLock::new(reloadable(settings)),
            overlay: RwLock::new(json!({})),
            failed: RwLock::new(None),
            changing: tokio::sync::Mutex::new(()),
        }
    }

    /// The configuration version in force.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::SeqCst)
    }

    /// The stored version this node could not apply, and why (the node is not ready).
    pub fn config_failure(&self) -> Option<(u64, String)> {
        self.failed.read().ok().and_then(|f| f.clone())
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

    /// The files' values with `overlay` merged over them, validated.
    fn values_with(
        &self,
        overlay: &Value,
    ) -> Result<(Value, (RoutingConfig, SupervisionPolicy, SupervisionPolicy)), String> {
        let mut values = self.files.read().map(|f| f.clone()).unwrap_or_default();
        merge(&mut values, overlay);
        let parsed = validate(&values)?;
        Ok((values, parsed))
    }

    /// Puts validated values in force as `version`.
    fn install(
        &self,
        parsed: (RoutingConfig, SupervisionPolicy, SupervisionPolicy),
        overlay: Value,
        version: u64,
    ) -> Result<(), String> {
        let (routing, patient, tasks) = parsed;
        self.routing.reload(routing)?;
        if let Ok(mut g) = self.patient_policy.write() {
            *g = patient;
        }
        if let Ok(mut g) = self.task_policy.write() {
            *g = tasks;
        }
        if let Ok(mut o) = self.overlay.write() {
            *o = overlay;
        }
        if let Ok(mut f) = self.failed.write() {
            *f = None;
        }
        self.version.store(version, Ordering::SeqCst);
        metrics::gauge!(m::CONFIG_VERSION).set(version as f64);
        Ok(())
    }

    /// Stores and applies a change (a JSON merge patch over the changes in force) made
    /// by `who` for `reason`; answers the new version.
    pub async fn change(
        &self,
        patch: &Value,
        who: &str,
        reason: Option<String>,
    ) -> Result<u64, ChangeError> {
        check_patch(patch).map_err(ChangeError::Invalid)?;
        self.record(who, reason, "change", patch.clone(), |latest| {
            let mut overlay = latest
                .map(|c| c.overlay.clone())
                .unwrap_or_else(|| json!({}));
            merge(&mut overlay, patch);
            Ok(overlay)
        })
        .await
    }

    /// Makes the changes in force at `to` the ones in force again, as a new version
    /// (version 1: the files alone).
    pub async fn revert(
        &self,
        to: u64,
        who: &str,
        reason: Option<String>,
    ) -> Result<u64, ChangeError> {
        let overlay = match to {
            0 => return Err(ChangeError::NoSuchVersion(0)),
            1 => json!({}),
            v => {
                self.store
                    .config_version(v)
                    .await?
                    .ok_or(ChangeError::NoSuchVersion(v))?
                    .overlay
            }
        };
        self.record(who, reason, "revert", json!({"revert_to": to}), |_| {
            Ok(overlay.clone())
        })
        .await
    }

    /// Computes the next overlay from the latest stored change, validates it against
    /// this node's files, stores it as the next version (again on a conflict) and
    /// applies it.
    async fn record(
        &self,
        who: &str,
        reason: Option<String>,
        kind: &str,
        patch: Value,
        next: impl Fn(Option<&ConfigChange>) -> Result<Value, ChangeError>,
    ) -> Result<u64, ChangeError> {
        if let Some(r) = &reason {
            if r.chars().count() > MAX_REASON_CHARS {
                return Err(ChangeError::Invalid(format!(
                    "reason must be at most {MAX_REASON_CHARS} characters"
                )));
            }
        }
        let _one = self.changing.lock().await;
        for _ in 0..5 {
            let latest = self.store.config_latest().await?;
            let overlay = next(latest.as_ref())?;
            let (_, parsed) = self.values_with(&overlay).map_err(ChangeError::Invalid)?;
            let version = latest.as_ref().map_or(1, |c| c.version) + 1;
            let change = ConfigChange {
                version,
                changed_at: chrono::Utc::now(),
                changed_by: who.to_string(),
                kind: kind.to_string(),
                reason: reason.clone(),
                patch: patch.clone(),
                overlay: overlay.clone(),
            };
            match self.store.config_append(&change).await? {
                Appended::Stored(v) => {
                    self.install(parsed, overlay, v)
                        .map_err(ChangeError::Invalid)?;
                    tracing::info!(
                        config.version = v,
                        changed_by = who,
                        kind,
                        reason = reason.as_deref().unwrap_or(""),
                        "configuration changed"
                    );
                    return Ok(v);
                }
                Appended::Conflict => continue,
            }
        }
        Err(ChangeError::Busy)
    }

    /// Applies the latest stored version if it is not the one in force (every node,
    /// every [`SYNC_INTERVAL`]; at start before the API listens). A version that does
    /// not validate here is not applied: the old values stay and the node reports
    /// not ready (see [`Runtime::config_failure`]).
    pub async fn sync(&self) -> Result<u64, StoreError> {
        let latest = self.store.config_latest().await?;
        let (version, overlay) = match &latest {
            Some(c) => (c.version, c.overlay.clone()),
            None => (1, json!({})),
        };
        if version == self.version() && self.config_failure().is_none() {
            return Ok(version);
        }
        let _one = self.changing.lock().await;
        if version == self.version() && self.config_failure().is_none() {
            return Ok(version);
        }
        match self
            .values_with(&overlay)
            .and_then(|(_, parsed)| self.install(parsed, overlay, version))
        {
            Ok(()) => {
                tracing::info!(config.version = version, "stored configuration applied");
            }
            Err(reason) => {
                let already = self.config_failure().is_some_and(|(v, _)| v == version);
                if !already {
                    tracing::error!(config.version = version, reason, "stored configuration cannot be applied on this node; the old values stay and the node reports not ready");
                }
                if let Ok(mut f) = self.failed.write() {
                    *f = Some((version, reason));
                }
            }
        }
        Ok(self.version())
    }

    /// Re-reads `config/` (SIGHUP) and re-applies the stored changes over it; the
    /// version stays (the same stored changes are in force).
    pub fn reload_from_files(&self) -> Result<u64, String> {
        let dir = self
            .config_dir
            .as_ref()
            .ok_or_else(|| "no configuration directory to reload from".to_string())?;
        let settings = get_configuration(dir).map_err(|e| format!("configuration: {e}"))?;
        let files = reloadable(&settings);
        let overlay = self.overlay.read().map(|o| o.clone()).unwrap_or_default();
        let mut values = files.clone();
        merge(&mut values, &overlay);
        let parsed = validate(&values)?;
        if let Ok(mut f) = self.files.write() {
            *f = files;
        }
        let version = self.version();
        self.install(parsed, overlay, version)?;
        tracing::info!(
            config.version = version,
            "configuration files re-read; stored changes re-applied"
        );
        Ok(version)
    }

    /// What `GET /v1/runtime` shows.
    pub async fn snapshot(&self) -> Value {
        let queues = self.routing.queues().await.len();
        let agents = self.routing.agents().await.len();
        let resident = self.patients.resident().await;
        let own = self.cluster.now();
        json!({
            "config_version": self.version(),
            "config_failure": self.config_failure().map(|(v, reason)| json!({"version": v, "reason": reason})),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_merge_patch_removes_nulls_and_keeps_none() {
        let mut overlay = json!({});
        merge(
            &mut overlay,
            &json!({"supervision": {"tasks": null}, "routing": {"a": 1}}),
        );
        assert_eq!(overlay, json!({"supervision": {}, "routing": {"a": 1}}));
        merge(&mut overlay, &json!({"routing": null}));
        assert_eq!(overlay, json!({"supervision": {}}));
        merge(&mut overlay, &json!({"routing": {"x": {"y": 2}}}));
        merge(
            &mut overlay,
            &json!({"routing": {"x": {"y": null, "z": 3}}}),
        );
        assert_eq!(
            overlay,
            json!({"supervision": {}, "routing": {"x": {"z": 3}}})
        );
    }
}
