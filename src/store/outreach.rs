//! Outreach records (reminders, held, suppressed, failed and sent messages) and
//! consent per patient and channel. Written with the event that decides them;
//! planned ones are settled by the reminder tick of the partition's owner.

use chrono::Utc;
use frontdoor_actors::command::Command;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::outreach::{OutreachChanges, OutreachState};
use sqlx::{AnyConnection, Row};

use super::{batch, millis, timed, Store, StoreError};

/// Writes one event's outreach changes inside its transaction: drops the planned
/// reminders of re-planned appointments, records every message (a record whose id
/// exists is kept: a reminder already sent is never planned again), updates consent.
pub(crate) async fn write_changes(
    conn: &mut AnyConnection,
    patient: PatientId,
    partition: u32,
    changes: &OutreachChanges,
) -> Result<(), StoreError> {
    write_changes_of_batch(conn, &[(patient, partition, changes)]).await
}

/// Writes the outreach changes of a whole batch of events (at most one event per
/// patient, as the writer's batches hold: a patient's events are appended one after
/// another), in multi-row statements: every re-planned appointment's planned
/// reminders dropped first, then every record inserted, then consent.
pub(crate) async fn write_changes_of_batch(
    conn: &mut AnyConnection,
    batch: &[(PatientId, u32, &OutreachChanges)],
) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::new();
    if batch
        .iter()
        .any(|(p, _, c)| !c.is_empty() && !seen.insert(*p))
    {
        // Two events of one patient: their drops and records must interleave in order.
        for one in batch {
            write_patients_changes(conn, std::slice::from_ref(one)).await?;
        }
        return Ok(());
    }
    write_patients_changes(conn, batch).await
}

/// [`write_changes_of_batch`] for a batch with at most one event per patient.
async fn write_patients_changes(
    conn: &mut AnyConnection,
    batch: &[(PatientId, u32, &OutreachChanges)],
) -> Result<(), StoreError> {
    let now = Utc::now().timestamp_millis();
    let replans: Vec<(String, &String)> = batch
        .iter()
        .flat_map(|(p, _, c)| c.replan.iter().map(move |a| (p.to_string(), a)))
        .collect();
    for range in batch::pow2_chunks(replans.len(), batch::MAX_ROWS_PER_STATEMENT) {
        let chunk = &replans[range];
        let terms: Vec<String> = (0..chunk.len())
            .map(|i| {
                format!(
                    "(patient_id = ${} AND appointment_id = ${})",
                    2 * i + 1,
                    2 * i + 2
                )
            })
            .collect();
        // Built from placeholders only; the ids are bound.
        let sql = format!(
            "DELETE FROM outreach WHERE state = 'planned' AND ({})",
            terms.join(" OR ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (patient, appointment) in chunk {
            q = q.bind(patient.clone()).bind((*appointment).clone());
        }
        q.execute(&mut *conn).await?;
    }
    let mut records = Vec::new();
    for (patient, partition, changes) in batch {
        for r in &changes.records {
            let command = serde_json::to_string(&r.command)
                .map_err(|e| StoreError::Corrupt(format!("a command does not serialize: {e}")))?;
            records.push((patient.to_string(), *partition, r, command));
        }
    }
    for range in batch::pow2_chunks(records.len(), batch::MAX_ROWS_PER_STATEMENT) {
        let chunk = &records[range];
        let sql = batch::multi_row_sql(
            "INSERT INTO outreach (id, patient_id, partition_no, appointment_id, template, channel, site, state, reason, \
             due_at_ms, not_after_ms, urgent, command, created_at_ms, updated_at_ms)",
            15,
            chunk.len(),
            "ON CONFLICT (id) DO NOTHING",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (pid, partition, r, command) in chunk {
            q = q
                .bind(r.command.id.to_string())
                .bind(pid.clone())
                .bind(i64::from(*partition))
                .bind(r.appointment_id.clone())
                .bind(r.template.clone())
                .bind(r.command.channel.as_str())
                .bind(r.command.site.to_string())
                .bind(r.state.as_str())
                .bind(r.reason.clone())
                .bind(millis(r.due_at))
                .bind(r.not_after.map(millis))
                .bind(i64::from(r.urgent))
                .bind(command.clone())
                .bind(now)
                .bind(now);
        }
        q.execute(&mut *conn).await?;
    }
    for (patient, _, changes) in batch {
        for c in &changes.consent {
            sqlx::query(
                "INSERT INTO consent (patient_id, channel, opted_out, changed_at_ms) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (patient_id, channel) DO UPDATE SET opted_out = excluded.opted_out, changed_at_ms = excluded.changed_at_ms",
            )
            .bind(patient.to_string())
            .bind(c.channel.as_str())
            .bind(i64::from(c.opted_out))
            .bind(millis(c.at))
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// A planned message whose time has come.
#[derive(Debug, Clone)]
pub struct DueOutreach {
    /// The command (its id is the record's id).
    pub command: Command,
    /// Its patient.
    pub patient_id: PatientId,
    /// The patient's partition (whose owner settles it).
    pub partition: u32,
    /// Its template.
    pub template: String,
    /// When it was due.
    pub due_at_ms: i64,
    /// Pointless from then on.
    pub not_after_ms: Option<i64>,
    /// Never held by quiet hours.
    pub urgent: bool,
}

/// What the tick decided for a due message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settle {
    /// Write it to the outbox.
    Send,
    /// Keep it planned until then (quiet hours).
    Hold { until_ms: i64 },
    /// Do not send it (the reason is recorded).
    Suppress(String),
    /// It cannot be sent (the reason is recorded).
    Fail(String),
}

/// One stored outreach record, as tests and operators read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutreachRow {
    /// Command id.
    pub id: String,
    /// Template.
    pub template: String,
    /// Appointment, if any.
    pub appointment_id: Option<String>,
    /// Channel.
    pub channel: String,
    /// planned, sent, suppressed or failed.
    pub state: String,
    /// Why suppressed or failed.
    pub reason: Option<String>,
    /// When due (epoch ms).
    pub due_at_ms: i64,
    /// The command JSON.
    pub command: String,
}

impl Store {
    /// Planned messages due at `now_ms`, oldest first, of the given partitions
    /// (None: all).
    #[tracing::instrument(name = "store.due_outreach", skip_all)]
    pub async fn due_outreach(
        &self,
        now_ms: i64,
        limit: u32,
        partitions: Option<&[u32]>,
    ) -> Result<Vec<DueOutreach>, StoreError> {
        timed("due_outreach", async {
            // Partition numbers are integers we own: safe to inline.
            let filter = match partitions {
                None => String::new(),
                Some([]) => return Ok(Vec::new()),
                Some(ps) => format!(
                    " AND partition_no IN ({})",
                    ps.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
                ),
            };
            // Safe: `filter` holds only integers formatted here.
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT command, patient_id, partition_no, template, due_at_ms, not_after_ms, urgent FROM outreach \
                 WHERE state = 'planned' AND due_at_ms <= $1{filter} ORDER BY due_at_ms LIMIT $2"
            )))
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(self.pool())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let command: String = r.try_get(0)?;
                let pid: String = r.try_get(1)?;
                let partition: i64 = r.try_get(2)?;
                let urgent: i64 = r.try_get(6)?;
                out.push(DueOutreach {
                    command: serde_json::from_str(&command).map_err(|e| {
                        StoreError::Corrupt(format!("a stored outreach command does not parse: {e}"))
                    })?,
                    patient_id: PatientId::parse(&pid)
                        .ok_or_else(|| StoreError::Corrupt("outreach patient id".into()))?,
                    partition: u32::try_from(partition).unwrap_or_default(),
                    template: r.try_get(3)?,
                    due_at_ms: r.try_get(4)?,
                    not_after_ms: r.try_get(5)?,
                    urgent: urgent != 0,
                });
            }
            Ok(out)
        })
        .await
    }

    /// True when the patient opted out of `channel` (STOP).
    pub async fn opted_out(&self, patient: PatientId, channel: &str) -> Result<bool, StoreError> {
        let row =
            sqlx::query("SELECT opted_out FROM consent WHERE patient_id = $1 AND channel = $2")
                .bind(patient.to_string())
                .bind(channel.to_string())
                .fetch_optional(self.pool())
                .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? != 0,
            None => false,
        })
    }

    /// Settles one due message: only if it is still planned for the same time (a
    /// reschedule or another node may have changed it), and in a cluster only
    /// while this node holds the partition. A sent one goes to the outbox in the
    /// same transaction. Answers whether this call settled it.
    #[tracing::instrument(name = "store.settle_outreach", skip_all, fields(command.id = %due.command.id))]
    pub async fn settle_outreach(
        &self,
        due: &DueOutreach,
        settle: &Settle,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        timed("settle_outreach", async {
            let fence = self.partition_fence(due.partition)?;
            let mut tx = self.begin_write().await?;
            if let Some(f) = &fence {
                super::cluster::check_fence(&mut tx, f).await?;
            }
            let (state, reason, due_at) = match settle {
                Settle::Send => (OutreachState::Sent, None, due.due_at_ms),
                Settle::Hold { until_ms } => (OutreachState::Planned, None, *until_ms),
                Settle::Suppress(r) => (OutreachState::Suppressed, Some(r.clone()), due.due_at_ms),
                Settle::Fail(r) => (OutreachState::Failed, Some(r.clone()), due.due_at_ms),
            };
            let done = sqlx::query(
                "UPDATE outreach SET state = $1, reason = $2, due_at_ms = $3, updated_at_ms = $4 \
                 WHERE id = $5 AND state = 'planned' AND due_at_ms = $6",
            )
            .bind(state.as_str())
            .bind(reason)
            .bind(due_at)
            .bind(now_ms)
            .bind(due.command.id.to_string())
            .bind(due.due_at_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if done && *settle == Settle::Send {
                super::outbox::insert_commands(
                    &mut tx,
                    std::slice::from_ref(&due.command),
                    Some(due.partition),
                )
                .await?;
            }
            tx.commit().await?;
            if done && *settle == Settle::Send {
                self.outbox_written().notify_one();
            }
            Ok(done)
        })
        .await
    }

    /// A patient's outreach records, by due time (tests, operators).
    pub async fn outreach_of(&self, patient: PatientId) -> Result<Vec<OutreachRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, template, appointment_id, channel, state, reason, due_at_ms, command FROM outreach \
             WHERE patient_id = $1 ORDER BY due_at_ms, id",
        )
        .bind(patient.to_string())
        .fetch_all(self.pool())
        .await?;
        rows.into_iter()
            .map(|r| {
                Ok(OutreachRow {
                    id: r.try_get(0)?,
                    template: r.try_get(1)?,
                    appointment_id: r.try_get(2)?,
                    channel: r.try_get(3)?,
                    state: r.try_get(4)?,
                    reason: r.try_get(5)?,
                    due_at_ms: r.try_get(6)?,
                    command: r.try_get(7)?,
                })
            })
            .collect()
    }
}
