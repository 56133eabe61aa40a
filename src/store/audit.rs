//! The append-only audit log: insert, search, and the retention purge.
//!
//! Nothing here updates a record; the database refuses UPDATE and DELETE by trigger
//! (see `migrations/*/0010_audit.sql`). The purge deletes only rows older than the
//! retention period, by raising the purge gate inside its own transaction.

use chrono::{DateTime, Utc};
use frontdoor_actors::ids::PatientId;
use sqlx::{AnyConnection, Row};

use super::journey::Link;
use super::{millis, timed, Store, StoreError};
use crate::audit::{Action, AuditEntry, AuditRecord, Outcome, Purpose};
use crate::metrics as m;

/// A search of the audit log (all filters optional; keyset pagination by `seq`).
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Records about this patient.
    pub patient_id: Option<PatientId>,
    /// Records of this principal.
    pub principal_id: Option<String>,
    /// Recorded at or after.
    pub from: Option<DateTime<Utc>>,
    /// Recorded before.
    pub to: Option<DateTime<Utc>>,
    /// Records after this position.
    pub after_seq: Option<i64>,
    /// At most this many.
    pub limit: i64,
}

pub(crate) async fn insert(conn: &mut AnyConnection, e: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_log (id, recorded_at_ms, principal_id, principal_role, action, resource, \
         patient_id, purpose, reason, outcome, detail, event_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(millis(Utc::now()))
    .bind(e.principal_id.clone())
    .bind(e.principal_role.clone())
    .bind(e.action.as_str())
    .bind(e.resource.clone())
    .bind(e.patient_id.map(|p| p.to_string()))
    .bind(e.purpose.as_str())
    .bind(e.reason.clone())
    .bind(e.outcome.as_str())
    .bind(e.detail.clone())
    .bind(e.event_id.clone())
    .execute(&mut *conn)
    .await?;
    metrics::counter!(m::AUDIT_RECORDS_TOTAL, "resource" => resource_label(&e.resource), "outcome" => e.outcome.as_str())
        .increment(1);
    Ok(())
}

/// Bounded metric label for a resource name.
fn resource_label(resource: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "patient.context",
        "patient.lookup",
        "contact.detail",
        "identity.claim",
        "identity.merge",
        "identity.move",
        "identity.link",
        "audit.search",
        "runtime.config",
    ];
    KNOWN
        .iter()
        .find(|k| **k == resource)
        .copied()
        .unwrap_or("other")
}

/// Records an identity link (claim, merge, move) inside the transaction that makes it.
pub(crate) async fn record_identity_link(
    tx: &mut AnyConnection,
    event_id: Option<String>,
    link: Link<'_>,
    to: PatientId,
) -> Result<(), StoreError> {
    // The identifier's kind only, never its value.
    let (action, detail) = match link {
        Link::Claim { identifier } => (
            Action::Create,
            format!("identifier kind {} linked", identifier.kind().as_str()),
        ),
        Link::Merge { from } => (Action::Update, format!("Patient/{from} merged in")),
        Link::Move { identifier, from } => (
            Action::Update,
            format!(
                "identifier kind {} moved from Patient/{from}",
                identifier.kind().as_str()
            ),
        ),
    };
    let entry = AuditEntry {
        principal_id: Some("frontdoor.identity".into()),
        principal_role: Some("system".into()),
        action,
        resource: format!("identity.{}", link.action()),
        patient_id: Some(to),
        purpose: Purpose::Operations,
        reason: None,
        outcome: Outcome::Success,
        detail: Some(detail),
        event_id,
    };
    insert(&mut *tx, &entry).await
}

impl Store {
    /// Appends one audit record. A failure must stop the access it records.
    #[tracing::instrument(name = "store.audit", skip_all, fields(audit.resource = %entry.resource, audit.outcome = entry.outcome.as_str()))]
    pub async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        timed("audit", async {
            let mut conn = self.pool().acquire().await?;
            insert(&mut conn, entry).await
        })
        .await
    }

    /// Searches the audit log, oldest first.
    #[tracing::instrument(name = "store.audit_search", skip_all)]
    pub async fn audit_search(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        timed("audit_search", async {
            let mut sql = String::from(
                "SELECT seq, id, recorded_at_ms, principal_id, principal_role, action, resource, \
                 patient_id, purpose, reason, outcome, detail, event_id FROM audit_log WHERE 1 = 1",
            );
            let mut n = 0;
            let mut next = |sql: &mut String, clause: &str| {
                n += 1;
                sql.push_str(&clause.replace('?', &format!("${n}")));
            };
            if f.patient_id.is_some() {
                next(&mut sql, " AND patient_id = ?");
            }
            if f.principal_id.is_some() {
                next(&mut sql, " AND principal_id = ?");
            }
            if f.from.is_some() {
                next(&mut sql, " AND recorded_at_ms >= ?");
            }
            if f.to.is_some() {
                next(&mut sql, " AND recorded_at_ms < ?");
            }
            if f.after_seq.is_some() {
                next(&mut sql, " AND seq > ?");
            }
            next(&mut sql, " ORDER BY seq LIMIT ?");
            // The SQL is built from the constant clauses above; values are bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            if let Some(p) = f.patient_id {
                q = q.bind(p.to_string());
            }
            if let Some(p) = &f.principal_id {
                q = q.bind(p.clone());
            }
            if let Some(t) = f.from {
                q = q.bind(millis(t));
            }
            if let Some(t) = f.to {
                q = q.bind(millis(t));
            }
            if let Some(s) = f.after_seq {
                q = q.bind(s);
            }
            q = q.bind(f.limit);
            let rows = q.fetch_all(self.pool()).await?;
            rows.iter()
                .map(|r| -> Result<AuditRecord, StoreError> {
                    let action: String = r.try_get(5)?;
                    let purpose: String = r.try_get(8)?;
                    let outcome: String = r.try_get(10)?;
                    Ok(AuditRecord::from_row(
                        r.try_get(0)?,
                        r.try_get(1)?,
                        r.try_get(2)?,
                        r.try_get(3)?,
                        r.try_get(4)?,
                        &action,
                        r.try_get(6)?,
                        r.try_get(7)?,
                        &purpose,
                        r.try_get(9)?,
                        &outcome,
                        r.try_get(11)?,
                        r.try_get(12)?,
                    ))
                })
                .collect()
        })
        .await
    }

    /// Deletes audit records recorded before `cutoff` (the retention purge); returns
    /// how many. Raises the purge gate for this transaction only.
    #[tracing::instrument(name = "store.audit_purge", skip_all)]
    pub async fn audit_purge(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        timed("audit_purge", async {
            let cutoff_ms = millis(cutoff);
            let mut tx = self.begin_write().await?;
            sqlx::query("UPDATE audit_purge_gate SET cutoff_ms = $1 WHERE id = 1")
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
            let done = sqlx::query("DELETE FROM audit_log WHERE recorded_at_ms < $1")
                .bind(cutoff_ms)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE audit_purge_gate SET cutoff_ms = 0 WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            metrics::counter!(m::AUDIT_PURGED_TOTAL).increment(done.rows_affected());
            Ok(done.rows_affected())
        })
        .await
    }

    /// Tries to change or delete audit records directly, as a bug or a manual edit
    /// would (tests use it to show the database refuses). Returns the errors.
    #[cfg(any(test, feature = "test-util"))]
    pub async fn audit_tamper_attempts(&self) -> (Option<StoreError>, Option<StoreError>) {
        let update = sqlx::query("UPDATE audit_log SET outcome = 'success'")
            .execute(self.pool())
            .await
            .err()
            .map(StoreError::from);
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(self.pool())
            .await
            .err()
            .map(StoreError::from);
        (update, delete)
    }
}
