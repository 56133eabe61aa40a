//! Bulk loading of patients with their journeys, for benchmarks and drills.
//!
//! The live path stores one event per transaction with its identity effects; a
//! benchmark needs a million patients in minutes, so this writes many rows per
//! statement (multi-row `INSERT ... VALUES`, bound parameters only) and one
//! transaction per call. It bypasses identity resolution: the caller guarantees the
//! identifiers are unique and the events belong to the patient they are listed under.

use chrono::Utc;
use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::{Identifier, PatientId};
use sqlx::AssertSqlSafe;

use super::batch::multi_row_sql;
use super::{timed, Store, StoreError};

/// Rows per `INSERT` statement: 1,000 events bind 9,000 parameters, under SQLite's
/// 32,766 and PostgreSQL's 65,535.
const ROWS_PER_STATEMENT: usize = 1_000;

/// One patient to load: the record, its identifiers and its event log (in order).
#[derive(Debug, Clone)]
pub struct SeedPatient {
    /// The patient id.
    pub id: PatientId,
    /// Identifiers linked to it (unique across the whole seed).
    pub identifiers: Vec<Identifier>,
    /// Its events, oldest first; stored in this order, so their `seq` follows it.
    pub events: Vec<Envelope>,
}

impl Store {
    /// Loads patients, their identifiers and their events in one transaction,
    /// returning the number of events written. Not idempotent: loading the same
    /// patient twice fails on the primary keys and writes nothing.
    #[tracing::instrument(name = "store.bulk_seed_patients", skip_all, fields(patients = patients.len()))]
    pub async fn bulk_seed_patients(&self, patients: &[SeedPatient]) -> Result<u64, StoreError> {
        timed("bulk_seed_patients", async {
            let now_ms = Utc::now().timestamp_millis();
            let mut tx = self.begin_write().await?;
            for chunk in patients.chunks(ROWS_PER_STATEMENT) {
                let sql = multi_row_sql("INSERT INTO patients (id, created_at_ms)", 2, chunk.len(), "");
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for p in chunk {
                    q = q.bind(p.id.to_string()).bind(now_ms);
                }
                q.execute(&mut *tx).await?;
            }
            let identities: Vec<(&Identifier, PatientId)> = patients
                .iter()
                .flat_map(|p| p.identifiers.iter().map(move |i| (i, p.id)))
                .collect();
            for chunk in identities.chunks(ROWS_PER_STATEMENT) {
                let sql = multi_row_sql("INSERT INTO identities (kind, value, patient_id, linked_at_ms)", 4, chunk.len(), "");
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (id, patient) in chunk {
                    q = q
                        .bind(id.kind().as_str())
                        .bind(id.value().to_string())
                        .bind(patient.to_string())
                        .bind(now_ms);
                }
                q.execute(&mut *tx).await?;
            }
            let events: Vec<(&Envelope, PatientId)> = patients
                .iter()
                .flat_map(|p| p.events.iter().map(move |e| (e, p.id)))
                .collect();
            for chunk in events.chunks(ROWS_PER_STATEMENT) {
                let sql = multi_row_sql("INSERT INTO events (id, patient_id, type, channel, site, contact_id, occurred_at_ms, received_at_ms, body)", 9, chunk.len(), "");
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for (e, patient) in chunk {
                    q = super::journey::bind_event(q, *patient, e, now_ms);
                }
                q.execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(events.len() as u64)
        })
        .await
    }

    /// Patients stored (benchmarks check a reused database is complete).
    pub async fn count_patients(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT CAST(COUNT(*) AS BIGINT) FROM patients")
            .fetch_one(self.pool())
            .await?;
        Ok(sqlx::Row::try_get(&row, 0)?)
    }
}
