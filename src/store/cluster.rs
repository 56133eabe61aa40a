//! Cluster coordination in PostgreSQL: the shared settings, members and leases
//! with fencing tokens (see `crate::cluster`). Times come from the database's
//! clock, so nodes whose clocks disagree still agree on who holds a lease.

use sqlx::{AnyConnection, Row};

use super::{timed, Store, StoreError};

/// The database's clock in epoch milliseconds (one clock for every node).
const NOW_MS: &str = "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// A lease a write depends on: its name, this node and the token it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    /// The lease (`router`, `partition:3`).
    pub lease: String,
    /// This node.
    pub holder: String,
    /// The token this node was given when it took the lease.
    pub token: i64,
}

/// A live member as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    /// Node id.
    pub node_id: String,
    /// When it joined (database clock, epoch ms).
    pub started_at_ms: i64,
    /// Whether it takes work (store and broker reachable, settings agree).
    pub eligible: bool,
    /// What it reports about itself (version, address), JSON.
    pub info: serde_json::Value,
}

/// A lease as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRow {
    /// `router` or `partition:<n>`.
    pub name: String,
    /// Who holds it, if anyone (even if it has expired).
    pub holder: Option<String>,
    /// The fencing token of the current (or last) holder.
    pub token: i64,
    /// True while it has not expired.
    pub live: bool,
}

/// A lease this node just took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// The new fencing token.
    pub token: i64,
    /// Who held it before, if anyone.
    pub previous_holder: Option<String>,
    /// How long ago the previous holder's lease expired, when it had one that
    /// expired (rather than being released): the takeover's wait.
    pub expired_ms_ago: Option<i64>,
}

/// Checks inside an open transaction that `fence` still holds its lease, and keeps
/// the lease row locked (shared) until the transaction ends: a takeover waits for
/// this write, and every write after the takeover is refused.
pub(crate) async fn check_fence(conn: &mut AnyConnection, fence: &Fence) -> Result<(), StoreError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT token FROM cluster_leases WHERE name = $1 AND holder = $2 AND token = $3 \
         AND expires_at_ms > {NOW_MS} FOR SHARE"
    )))
    .bind(fence.lease.clone())
    .bind(fence.holder.clone())
    .bind(fence.token)
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(_) => Ok(()),
        None => Err(StoreError::Fenced(fence.lease.clone())),
    }
}

impl Store {
    /// Records the cluster's shared settings, or compares with those recorded:
    /// answers the recorded description when this node's fingerprint differs.
    #[tracing::instrument(name = "store.cluster_register_config", skip_all)]
    pub async fn cluster_register_config(
        &self,
        fingerprint: &str,
        description: &str,
    ) -> Result<Option<String>, StoreError> {
        timed("cluster", async {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO cluster_config (id, fingerprint, description, created_at_ms) \
                 VALUES (1, $1, $2, {NOW_MS}) ON CONFLICT (id) DO NOTHING"
            )))
            .bind(fingerprint.to_string())
            .bind(description.to_string())
            .execute(self.pool())
            .await?;
            let row =
                sqlx::query("SELECT fingerprint, description FROM cluster_config WHERE id = 1")
                    .fetch_one(self.pool())
                    .await?;
            let recorded: String = row.try_get(0)?;
            let described: String = row.try_get(1)?;
            Ok((recorded != fingerprint).then_some(described))
        })
        .await
    }

    /// Creates the lease rows that do not exist yet.
    #[tracing::instrument(name = "store.cluster_prepare_leases", skip_all)]
    pub async fn cluster_prepare_leases(&self, names: &[String]) -> Result<(), StoreError> {
        timed("cluster", async {
            let mut tx = self.begin_write().await?;
            for n in names {
                sqlx::query(
                    "INSERT INTO cluster_leases (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
                )
                .bind(n.clone())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
        .await
    }

    /// This node is alive (and eligible for work or not) for `ttl_ms` more.
    #[tracing::instrument(name = "store.cluster_heartbeat", skip_all)]
    pub async fn cluster_heartbeat(
        &self,
        node: &str,
        eligible: bool,
        info: &serde_json::Value,
        ttl_ms: i64,
    ) -> Result<(), StoreError> {
        timed("cluster", async {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "INSERT INTO cluster_members (node_id, started_at_ms, heartbeat_at_ms, expires_at_ms, eligible, info) \
                 VALUES ($1, {NOW_MS}, {NOW_MS}, {NOW_MS} + $2, $3, $4) ON CONFLICT (node_id) DO UPDATE SET \
                 heartbeat_at_ms = {NOW_MS}, expires_at_ms = {NOW_MS} + $2, eligible = $3, info = $4"
            )))
            .bind(node.to_string())
            .bind(ttl_ms)
            .bind(eligible)
            .bind(info.to_string())
            .execute(self.pool())
            .await?;
            Ok(())
        })
        .await
    }

    /// The live members, by node id; members dead for an hour are forgotten.
    #[tracing::instrument(name = "store.cluster_members", skip_all)]
    pub async fn cluster_members(&self) -> Result<Vec<MemberRow>, StoreError> {
        timed("cluster", async {
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM cluster_members WHERE expires_at_ms < {NOW_MS} - 3600000"
            )))
            .execute(self.pool())
            .await?;
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT node_id, started_at_ms, eligible, info FROM cluster_members \
                 WHERE expires_at_ms > {NOW_MS} ORDER BY node_id"
            )))
            .fetch_all(self.pool())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let info: String = r.try_get(3)?;
                out.push(MemberRow {
                    node_id: r.try_get(0)?,
                    started_at_ms: r.try_get(1)?,
                    eligible: r.try_get(2)?,
                    info: serde_json::from_str(&info).unwrap_or(serde_json::Value::Null),
                });
            }
            Ok(out)
        })
        .await
    }

    /// Every lease.
    #[tracing::instrument(name = "store.cluster_leases", skip_all)]
    pub async fn cluster_leases(&self) -> Result<Vec<LeaseRow>, StoreError> {
        timed("cluster", async {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT name, holder, token, CAST(CASE WHEN expires_at_ms > {NOW_MS} THEN 1 ELSE 0 END AS BIGINT) \
                 FROM cluster_leases ORDER BY name"
            )))
            .fetch_all(self.pool())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let live: i64 = r.try_get(3)?;
                out.push(LeaseRow {
                    name: r.try_get(0)?,
                    holder: r.try_get(1)?,
                    token: r.try_get(2)?,
                    live: live != 0,
                });
            }
            Ok(out)
        })
        .await
    }

    /// Takes a lease that is free or expired, for `ttl_ms`, with a new token.
    #[tracing::instrument(name = "store.cluster_acquire", skip_all, fields(lease = name))]
    pub async fn cluster_acquire(
        &self,
        name: &str,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Option<Acquired>, StoreError> {
        timed("cluster", async {
            let row = sqlx::query(sqlx::AssertSqlSafe(format!(
                "WITH old AS (SELECT name, holder, expires_at_ms FROM cluster_leases \
                              WHERE name = $1 FOR UPDATE) \
                 UPDATE cluster_leases l SET holder = $2, token = l.token + 1, \
                        acquired_at_ms = {NOW_MS}, expires_at_ms = {NOW_MS} + $3 \
                 FROM old WHERE l.name = old.name AND (old.holder IS NULL OR old.expires_at_ms <= {NOW_MS}) \
                 RETURNING l.token, old.holder, \
                   CAST(CASE WHEN old.holder IS NOT NULL AND old.expires_at_ms > 0 \
                        THEN {NOW_MS} - old.expires_at_ms ELSE -1 END AS BIGINT)"
            )))
            .bind(name.to_string())
            .bind(node.to_string())
            .bind(ttl_ms)
            .fetch_optional(self.pool())
            .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let ago: i64 = row.try_get(2)?;
            Ok(Some(Acquired {
                token: row.try_get(0)?,
                previous_holder: row.try_get(1)?,
                expired_ms_ago: (ago >= 0).then_some(ago),
            }))
        })
        .await
    }

    /// Extends every unexpired lease this node holds by `ttl_ms`; answers them
    /// (name, token). A lease that expired meanwhile is not renewed: it is lost.
    #[tracing::instrument(name = "store.cluster_renew", skip_all)]
    pub async fn cluster_renew(
        &self,
        node: &str,
        ttl_ms: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        timed("cluster", async {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "UPDATE cluster_leases SET expires_at_ms = {NOW_MS} + $2 \
                 WHERE name IN (SELECT name FROM cluster_leases WHERE holder = $1 \
                                AND expires_at_ms > {NOW_MS} ORDER BY name FOR UPDATE) \
                 RETURNING name, token"
            )))
            .bind(node.to_string())
            .bind(ttl_ms)
            .fetch_all(self.pool())
            .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                out.push((r.try_get(0)?, r.try_get(1)?));
            }
            Ok(out)
        })
        .await
    }

    /// Gives a lease back (it is free at once); true if this node held it.
    #[tracing::instrument(name = "store.cluster_release", skip_all, fields(lease = name))]
    pub async fn cluster_release(
        &self,
        name: &str,
        node: &str,
        token: i64,
    ) -> Result<bool, StoreError> {
        timed("cluster", async {
            let r = sqlx::query(
                "UPDATE cluster_leases SET holder = NULL, expires_at_ms = 0 \
                 WHERE name = $1 AND holder = $2 AND token = $3",
            )
            .bind(name.to_string())
            .bind(node.to_string())
            .bind(token)
            .execute(self.pool())
            .await?;
            Ok(r.rows_affected() == 1)
        })
        .await
    }

    /// This node leaves: its member row goes (its leases are released one by one
    /// before, by the coordinator).
    #[tracing::instrument(name = "store.cluster_leave", skip_all)]
    pub async fn cluster_leave(&self, node: &str) -> Result<(), StoreError> {
        timed("cluster", async {
            sqlx::query("DELETE FROM cluster_members WHERE node_id = $1")
                .bind(node.to_string())
                .execute(self.pool())
                .await?;
            Ok(())
        })
        .await
    }
}
