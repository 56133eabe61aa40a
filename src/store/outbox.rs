//! The command outbox: commands are inserted inside the transaction of the state
//! change that causes them, and relayed to the broker afterwards.

use chrono::Utc;
use frontdoor_actors::command::Command;
use sqlx::{AnyConnection, Row};

use super::{batch, timed, Store, StoreError};

/// Which outbox rows a relay publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayScope {
    /// Every row (a single node).
    All,
    /// The rows of the partitions this node owns, and routing's own rows (no
    /// partition) when it leads.
    Owned {
        /// Partitions owned.
        partitions: Vec<u32>,
        /// True while this node leads routing.
        routing: bool,
    },
}

/// One command waiting in the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxRow {
    /// Store order.
    pub seq: i64,
    /// Command id (the broker `message_id`).
    pub id: String,
    /// Command type (`notify.send`...).
    pub command_type: String,
    /// Broker routing key.
    pub routing_key: String,
    /// JSON body.
    pub body: String,
    /// Relay attempts so far.
    pub attempts: i64,
}

/// Inserts commands in an open transaction (idempotent by command id), tagged
/// with the patient partition that caused them (None: routing's own).
pub(crate) async fn insert_commands(
    tx: &mut AnyConnection,
    commands: &[Command],
    partition: Option<u32>,
) -> Result<(), StoreError> {
    let rows: Vec<(&Command, Option<u32>)> = commands.iter().map(|c| (c, partition)).collect();
    insert_command_rows(tx, &rows).await
}

/// Inserts the commands of a whole batch, each with its partition, in multi-row
/// statements (idempotent by command id).
pub(crate) async fn insert_command_rows(
    tx: &mut AnyConnection,
    rows: &[(&Command, Option<u32>)],
) -> Result<(), StoreError> {
    let now = Utc::now().timestamp_millis();
    for range in batch::pow2_chunks(rows.len(), batch::MAX_ROWS_PER_STATEMENT) {
        let chunk = &rows[range];
        let sql = batch::multi_row_sql(
            "INSERT INTO outbox (id, command_type, routing_key, body, created_at_ms, partition_no)",
            6,
            chunk.len(),
            "ON CONFLICT (id) DO NOTHING",
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (c, partition) in chunk {
            q = q
                .bind(c.id.to_string())
                .bind(c.command_type.as_str())
                .bind(c.routing_key())
                .bind(c.to_wire().to_string())
                .bind(now)
                .bind(partition.map(i64::from));
        }
        q.execute(&mut *tx).await?;
    }
    Ok(())
}

impl Store {
    /// The oldest unpublished, unparked commands.
    pub async fn pending_commands(&self, limit: i64) -> Result<Vec<OutboxRow>, StoreError> {
        // No park is older than i64::MIN: only commands never parked.
        self.relay_batch(limit, i64::MIN, &RelayScope::All).await
    }

    /// What the relay should publish now, oldest first: pending commands, and parked
    /// ones whose park is older than `parked_before_ms` (tried again after a delay),
    /// of the rows `scope` puts in this node's hands.
    #[tracing::instrument(name = "store.relay_batch", skip_all)]
    pub async fn relay_batch(
        &self,
        limit: i64,
        parked_before_ms: i64,
        scope: &RelayScope,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        timed("relay_batch", async {
            let filter = match scope {
                RelayScope::All => String::new(),
                RelayScope::Owned {
                    partitions,
                    routing,
                } => {
                    let mut parts: Vec<String> = Vec::new();
                    if !partitions.is_empty() {
                        // Numbers this node owns, not input: safe to inline.
                        let list: Vec<String> = partitions.iter().map(|p| p.to_string()).collect();
                        parts.push(format!("partition_no IN ({})", list.join(", ")));
                    }
                    if *routing {
                        parts.push("partition_no IS NULL".into());
                    }
                    if parts.is_empty() {
                        return Ok(Vec::new());
                    }
                    format!(" AND ({})", parts.join(" OR "))
                }
            };
            let sql = format!(
                "SELECT seq, id, command_type, routing_key, body, attempts FROM outbox \
                 WHERE published_at_ms IS NULL AND (parked_at_ms IS NULL OR parked_at_ms < $1){filter} \
                 ORDER BY seq LIMIT $2"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(parked_before_ms)
                .bind(limit)
                .fetch_all(self.pool())
                .await?;
            rows.into_iter()
                .map(|r| {
                    Ok(OutboxRow {
                        seq: r.try_get(0)?,
                        id: r.try_get(1)?,
                        command_type: r.try_get(2)?,
                        routing_key: r.try_get(3)?,
                        body: r.try_get(4)?,
                        attempts: r.try_get(5)?,
                    })
                })
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
        .await
    }

    /// Marks commands as published (confirmed by the broker); a parked command that
    /// went out on a retry is unparked.
    #[tracing::instrument(name = "store.mark_published", skip_all, fields(commands = seqs.len()))]
    pub async fn mark_published(&self, seqs: &[i64]) -> Result<(), StoreError> {
        timed("mark_published", async {
            let now = Utc::now().timestamp_millis();
            let mut tx = self.begin_write().await?;
            for s in seqs {
                sqlx::query(
                    "UPDATE outbox SET published_at_ms = $1, attempts = attempts + 1, \
                     parked_at_ms = NULL WHERE seq = $2",
                )
                .bind(now)
                .bind(*s)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Parks commands the broker could not route: kept, visible, retried after the
    /// configured delay or when an operator unparks them. `reason` names the broker
    /// reply, never command contents.
    #[tracing::instrument(name = "store.park_commands", skip_all, fields(commands = seqs.len()))]
    pub async fn park_commands(&self, seqs: &[i64], reason: &str) -> Result<(), StoreError> {
        timed("park_commands", async {
            let now = Utc::now().timestamp_millis();
            let mut tx = self.begin_write().await?;
            for s in seqs {
                sqlx::query(
                    "UPDATE outbox SET parked_at_ms = $1, attempts = attempts + 1, last_error = $2 \
                     WHERE seq = $3",
                )
                .bind(now)
                .bind(reason.to_string())
                .bind(*s)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Records a failed relay attempt (broker nack or no confirm); the command stays
    /// pending.
    #[tracing::instrument(name = "store.record_relay_failure", skip_all, fields(commands = seqs.len()))]
    pub async fn record_relay_failure(&self, seqs: &[i64], reason: &str) -> Result<(), StoreError> {
        timed("record_relay_failure", async {
            let mut tx = self.begin_write().await?;
            for s in seqs {
                sqlx::query(
                    "UPDATE outbox SET attempts = attempts + 1, last_error = $1 WHERE seq = $2",
                )
                .bind(reason.to_string())
                .bind(*s)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// Unparks every parked command now (an operator fixed the binding); returns how
    /// many.
    #[tracing::instrument(name = "store.unpark_commands", skip_all)]
    pub async fn unpark_commands(&self) -> Result<u64, StoreError> {
        timed("unpark_commands", async {
            let r = sqlx::query(
                "UPDATE outbox SET parked_at_ms = NULL WHERE parked_at_ms IS NOT NULL \
                 AND published_at_ms IS NULL",
            )
            .execute(self.pool())
            .await?;
            Ok(r.rows_affected())
        })
        .await
    }

    /// The parked commands with their last error: (id, command type, last error).
    #[tracing::instrument(name = "store.parked_commands", skip_all)]
    pub async fn parked_commands(&self) -> Result<Vec<(String, String, String)>, StoreError> {
        timed("parked_commands", async {
            let rows = sqlx::query(
                "SELECT id, command_type, COALESCE(last_error, '') FROM outbox \
                 WHERE parked_at_ms IS NOT NULL AND published_at_ms IS NULL ORDER BY seq",
            )
            .fetch_all(self.pool())
            .await?;
            rows.into_iter()
                .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
                .collect::<Result<Vec<_>, sqlx::Error>>()
                .map_err(StoreError::from)
        })
        .await
    }

    /// Commands in the outbox by state: (pending, published, parked).
    #[tracing::instrument(name = "store.outbox_counts", skip_all)]
    pub async fn outbox_counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let r = sqlx::query(
            "SELECT CAST(COALESCE(SUM(CASE WHEN published_at_ms IS NULL AND parked_at_ms IS NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN published_at_ms IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT), \
                    CAST(COALESCE(SUM(CASE WHEN parked_at_ms IS NOT NULL THEN 1 ELSE 0 END), 0) AS BIGINT) FROM outbox",
        )
        .fetch_one(self.pool())
        .await?;
        Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?))
    }
}
