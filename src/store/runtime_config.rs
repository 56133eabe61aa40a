//! Live configuration changes (`runtime_config_changes`): appended by the node that
//! takes a change, read by every node's poll, listed for admins.
//!
//! Versions are dense: a change is inserted as the latest version + 1 and the
//! primary key refuses a second row of that version, so two nodes taking a change
//! at once cannot both win; the loser reads the new latest and tries again.

use chrono::{DateTime, TimeZone, Utc};
use serde_json::Value;
use sqlx::Row;

use super::{millis, timed, Store, StoreError};

/// One stored change.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ConfigChange {
    /// The configuration version this change made (2, 3, ...; 1 is the files alone).
    pub version: u64,
    /// When.
    pub changed_at: DateTime<Utc>,
    /// Who (the principal id).
    pub changed_by: String,
    /// `change` or `revert`.
    pub kind: String,
    /// Why, as stated.
    pub reason: Option<String>,
    /// What the caller sent (a revert: `{"revert_to": n}`).
    pub patch: Value,
    /// Every change in force at this version, merged: what a node merges over its files.
    pub overlay: Value,
}

/// The outcome of an append.
#[derive(Debug, PartialEq, Eq)]
pub enum Appended {
    /// Stored as this version.
    Stored(u64),
    /// Another change took that version first.
    Conflict,
}

const COLUMNS: &str = "version, changed_at_ms, changed_by, kind, reason, patch, overlay";

fn row_to_change(row: &sqlx::any::AnyRow) -> Result<ConfigChange, StoreError> {
    let version: i64 = row.try_get("version")?;
    let at: i64 = row.try_get("changed_at_ms")?;
    let parse = |col: &str| -> Result<Value, StoreError> {
        let text: String = row.try_get(col)?;
        serde_json::from_str(&text)
            .map_err(|e| StoreError::Corrupt(format!("runtime_config_changes.{col}: {e}")))
    };
    Ok(ConfigChange {
        version: u64::try_from(version)
            .map_err(|_| StoreError::Corrupt("negative configuration version".into()))?,
        changed_at: Utc
            .timestamp_millis_opt(at)
            .single()
            .ok_or_else(|| StoreError::Corrupt("runtime_config_changes.changed_at_ms".into()))?,
        changed_by: row.try_get("changed_by")?,
        kind: row.try_get("kind")?,
        reason: row.try_get("reason")?,
        patch: parse("patch")?,
        overlay: parse("overlay")?,
    })
}

impl Store {
    /// The latest stored change (None: no change was ever made, version 1).
    pub async fn config_latest(&self) -> Result<Option<ConfigChange>, StoreError> {
        timed("runtime_config", async {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM runtime_config_changes ORDER BY version DESC LIMIT 1"
            )))
            .fetch_optional(self.pool())
            .await?;
            row.as_ref().map(row_to_change).transpose()
        })
        .await
    }

    /// The change that made `version`.
    pub async fn config_version(&self, version: u64) -> Result<Option<ConfigChange>, StoreError> {
        timed("runtime_config", async {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM runtime_config_changes WHERE version = $1"
            )))
            .bind(i64::try_from(version).unwrap_or(i64::MAX))
            .fetch_optional(self.pool())
            .await?;
            row.as_ref().map(row_to_change).transpose()
        })
        .await
    }

    /// The stored changes, newest first, at most `limit`.
    pub async fn config_history(&self, limit: u32) -> Result<Vec<ConfigChange>, StoreError> {
        timed("runtime_config", async {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {COLUMNS} FROM runtime_config_changes ORDER BY version DESC LIMIT $1"
            )))
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
            rows.iter().map(row_to_change).collect()
        })
        .await
    }

    /// Appends `change` as version `change.version`, unless that version exists.
    pub async fn config_append(&self, change: &ConfigChange) -> Result<Appended, StoreError> {
        timed("runtime_config", async {
            let done = sqlx::query(
                "INSERT INTO runtime_config_changes \
                 (version, changed_at_ms, changed_by, kind, reason, patch, overlay) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (version) DO NOTHING",
            )
            .bind(i64::try_from(change.version).unwrap_or(i64::MAX))
            .bind(millis(change.changed_at))
            .bind(change.changed_by.clone())
            .bind(change.kind.clone())
            .bind(change.reason.clone())
            .bind(change.patch.to_string())
            .bind(change.overlay.to_string())
            .execute(self.pool())
            .await?;
            Ok(match done.rows_affected() {
                0 => Appended::Conflict,
                _ => Appended::Stored(change.version),
            })
        })
        .await
    }
}
