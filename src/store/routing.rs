//! Routing state: contact records, agents, who holds which patient, and the
//! routing inputs already applied. The router writes each step here with the
//! commands it decided, in one transaction, fenced by the router's lease when the
//! runtime runs as a cluster; any node reads contacts, agents and holds from here.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use frontdoor_actors::ids::{PatientId, SiteId};
use frontdoor_actors::ports::{
    BoxFuture, PortError, RoutingChanges, RoutingSnapshot, RoutingStore,
};
use frontdoor_actors::routing::agent::AgentState;
use frontdoor_actors::routing::model::{ContactRoutingView, RouteState, RoutingRecord};
use sqlx::Row;

use super::batch::{multi_row_sql, pow2_chunks, MAX_ROWS_PER_STATEMENT};
use super::cluster::{check_fence, Fence};
use super::journey::port_error;
use super::{millis, timed, Store, StoreError};
use crate::auth::AssignmentCheck;

fn state_label(s: RouteState) -> &'static str {
    match s {
        RouteState::SelfService => "self_service",
        RouteState::Queued => "queued",
        RouteState::Offered => "offered",
        RouteState::Assigned => "assigned",
        RouteState::Ended => "ended",
    }
}

fn corrupt(what: &str) -> impl Fn(serde_json::Error) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

impl Store {
    /// The persisted routing state: contacts not ended, and every agent.
    #[tracing::instrument(name = "store.load_routing", skip_all)]
    pub async fn load_routing(&self) -> Result<RoutingSnapshot, StoreError> {
        timed("load_routing", async {
            let rows = sqlx::query("SELECT body FROM routing_contacts WHERE state <> 'ended'")
                .fetch_all(self.pool())
                .await?;
            let mut contacts = Vec::with_capacity(rows.len());
            for r in rows {
                let body: String = r.try_get(0)?;
                let rec: RoutingRecord =
                    serde_json::from_str(&body).map_err(corrupt("routing contact"))?;
                contacts.push(rec.into_contact());
            }
            let rows = sqlx::query("SELECT body FROM routing_agents")
                .fetch_all(self.pool())
                .await?;
            let mut agents = Vec::with_capacity(rows.len());
            for r in rows {
                let body: String = r.try_get(0)?;
                agents.push(serde_json::from_str(&body).map_err(corrupt("routing agent"))?);
            }
            let overflow = match sqlx::query("SELECT body FROM routing_overflow WHERE id = 1")
                .fetch_optional(self.pool())
                .await?
            {
                Some(r) => {
                    let body: String = r.try_get(0)?;
                    serde_json::from_str(&body).map_err(corrupt("routing overflow flags"))?
                }
                None => Default::default(),
            };
            Ok(RoutingSnapshot {
                contacts,
                agents,
                overflow,
            })
        })
        .await
    }

    /// Writes one router step (records, agents, holds, applied inputs and the
    /// commands it decided) in one transaction; with a fence, only while this node
    /// holds the router's lease.
    #[tracing::instrument(name = "store.save_routing", skip_all, fields(contacts = changes.contacts.len(), agents = changes.agents.len(), commands = changes.commands.len()))]
    pub async fn save_routing(
        &self,
        changes: &RoutingChanges,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        timed("save_routing", async {
            let now = Utc::now().timestamp_millis();
            let mut tx = self.begin_write().await?;
            if let Some(f) = fence {
                check_fence(&mut tx, f).await?;
            }
            // One statement per table per step (contacts and agents are unique per
            // step: the router keys them by id).
            let contacts = changes
                .contacts
                .iter()
                .map(|c| {
                    serde_json::to_string(&RoutingRecord::of(c))
                        .map(|body| (c, body))
                        .map_err(corrupt("routing contact"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for range in pow2_chunks(contacts.len(), MAX_ROWS_PER_STATEMENT) {
                let chunk = &contacts[range];
                let sql = multi_row_sql(
                    "INSERT INTO routing_contacts (contact_id, patient_id, state, site, updated_at_ms, body)",
                    6,
                    chunk.len(),
                    "ON CONFLICT (contact_id) DO UPDATE SET \
                     patient_id = excluded.patient_id, state = excluded.state, site = excluded.site, \
                     updated_at_ms = excluded.updated_at_ms, body = excluded.body",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (c, body) in chunk {
                    q = q
                        .bind(c.contact_id.to_string())
                        .bind(c.patient_id.to_string())
                        .bind(state_label(c.state))
                        .bind(c.site.to_string())
                        .bind(now)
                        .bind(body.clone());
                }
                q.execute(&mut *tx).await?;
            }
            let agents = changes
                .agents
                .iter()
                .map(|a| {
                    serde_json::to_string(a)
                        .map(|body| (a, body))
                        .map_err(corrupt("routing agent"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            for range in pow2_chunks(agents.len(), MAX_ROWS_PER_STATEMENT) {
                let chunk = &agents[range];
                let sql = multi_row_sql(
                    "INSERT INTO routing_agents (agent_id, site, updated_at_ms, body)",
                    4,
                    chunk.len(),
                    "ON CONFLICT (agent_id) DO UPDATE SET site = excluded.site, \
                     updated_at_ms = excluded.updated_at_ms, body = excluded.body",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (a, body) in chunk {
                    q = q
                        .bind(a.id.clone())
                        .bind(a.site.to_string())
                        .bind(now)
                        .bind(body.clone());
                }
                q.execute(&mut *tx).await?;
                let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
                // Built from placeholders only; the ids are bound.
                let sql = format!(
                    "DELETE FROM routing_holds WHERE agent_id IN ({})",
                    placeholders.join(", ")
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (a, _) in chunk {
                    q = q.bind(a.id.clone());
                }
                q.execute(&mut *tx).await?;
            }
            let holds: Vec<(&str, String, String)> = changes
                .agents
                .iter()
                .flat_map(|a| {
                    a.offers
                        .values()
                        .chain(a.assignments.values())
                        .map(move |h| (a.id.as_str(), h.contact_id.to_string(), h.patient_id.to_string()))
                })
                .collect();
            for range in pow2_chunks(holds.len(), MAX_ROWS_PER_STATEMENT) {
                let chunk = &holds[range];
                let sql = multi_row_sql(
                    "INSERT INTO routing_holds (agent_id, contact_id, patient_id)",
                    3,
                    chunk.len(),
                    "ON CONFLICT (agent_id, contact_id) DO NOTHING",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (agent, contact, patient) in chunk {
                    q = q.bind(agent.to_string()).bind(contact.clone()).bind(patient.clone());
                }
                q.execute(&mut *tx).await?;
            }
            // The inputs in the order the router applied them, numbered after the
            // last step's (the router is the only writer: one leader, fenced).
            let mut applied_seq: i64 = if changes.inputs.is_empty() {
                0
            } else {
                sqlx::query_scalar("SELECT COALESCE(MAX(applied_seq), 0) FROM routing_inputs")
                    .fetch_one(&mut *tx)
                    .await?
            };
            for range in pow2_chunks(changes.inputs.len(), MAX_ROWS_PER_STATEMENT) {
                let chunk = &changes.inputs[range];
                let sql = multi_row_sql(
                    "INSERT INTO routing_inputs (id, applied_at_ms, applied_seq, kind, applied_at_us)",
                    5,
                    chunk.len(),
                    "ON CONFLICT (id) DO NOTHING",
                );
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for input in chunk {
                    applied_seq += 1;
                    q = q
                        .bind(input.id.to_string())
                        .bind(millis(input.at))
                        .bind(applied_seq)
                        .bind(input.tick.then_some("tick"))
                        .bind(input.at.timestamp_micros());
                }
                q.execute(&mut *tx).await?;
            }
            if let Some(flags) = &changes.overflow {
                let body = serde_json::to_string(flags).map_err(corrupt("routing overflow flags"))?;
                sqlx::query(
                    "INSERT INTO routing_overflow (id, updated_at_ms, body) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET updated_at_ms = excluded.updated_at_ms, body = excluded.body",
                )
                .bind(now)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            }
            super::outbox::insert_commands(&mut tx, &changes.commands, None).await?;
            tx.commit().await?;
            if !changes.commands.is_empty() {
                self.outbox_written().notify_one();
            }
            Ok(())
        })
        .await
    }

    /// Of these routing input ids, the ones already applied.
    #[tracing::instrument(name = "store.routing_inputs_applied", skip_all)]
    pub async fn routing_inputs_applied(
        &self,
        ids: &[uuid::Uuid],
    ) -> Result<HashSet<uuid::Uuid>, StoreError> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        timed("routing_inputs_applied", async {
            let placeholders: Vec<String> = (1..=ids.len()).map(|i| format!("${i}")).collect();
            // Built from placeholders only; the ids are bound.
            let sql = format!(
                "SELECT id FROM routing_inputs WHERE id IN ({})",
                placeholders.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for id in ids {
                q = q.bind(id.to_string());
            }
            let rows = q.fetch_all(self.pool()).await?;
            let mut out = HashSet::with_capacity(rows.len());
            for r in rows {
                let id: String = r.try_get(0)?;
                if let Ok(u) = uuid::Uuid::parse_str(&id) {
                    out.insert(u);
                }
            }
            Ok(out)
        })
        .await
    }

    /// A contact's routing record (ended ones too, until purged), as of `now`.
    #[tracing::instrument(name = "store.routing_contact", skip_all)]
    pub async fn routing_contact(
        &self,
        contact_id: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<ContactRoutingView>, StoreError> {
        timed("routing_contact", async {
            let row = sqlx::query("SELECT body FROM routing_contacts WHERE contact_id = $1")
                .bind(contact_id.to_string())
                .fetch_optional(self.pool())
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let body: String = row.try_get(0)?;
            let rec: RoutingRecord =
                serde_json::from_str(&body).map_err(corrupt("routing contact"))?;
            Ok(Some(rec.into_contact().view(now)))
        })
        .await
    }

    /// Every agent routing knows, by id.
    #[tracing::instrument(name = "store.routing_agents", skip_all)]
    pub async fn routing_agents(&self) -> Result<Vec<AgentState>, StoreError> {
        timed("routing_agents", async {
            let rows = sqlx::query("SELECT body FROM routing_agents ORDER BY agent_id")
                .fetch_all(self.pool())
                .await?;
            let mut out = Vec::with_capacity(rows.len());
            for r in rows {
                let body: String = r.try_get(0)?;
                out.push(serde_json::from_str(&body).map_err(corrupt("routing agent"))?);
            }
            Ok(out)
        })
        .await
    }

    /// The site routing has an agent at now (None: never announced).
    #[tracing::instrument(name = "store.routing_agent_site", skip_all)]
    pub async fn routing_agent_site(&self, agent_id: &str) -> Result<Option<SiteId>, StoreError> {
        timed("routing_agent_site", async {
            let row = sqlx::query("SELECT site FROM routing_agents WHERE agent_id = $1")
                .bind(agent_id.to_string())
                .fetch_optional(self.pool())
                .await?;
            let Some(row) = row else {
                return Ok(None);
            };
            let site: String = row.try_get(0)?;
            Ok(SiteId::parse(&site).ok())
        })
        .await
    }

    /// True while a contact of `patient` is offered to, assigned to or wrapping up
    /// with `agent_id`.
    #[tracing::instrument(name = "store.agent_holds_patient", skip_all)]
    pub async fn agent_holds_patient(
        &self,
        agent_id: &str,
        patient: PatientId,
    ) -> Result<bool, StoreError> {
        timed("agent_holds_patient", async {
            let row = sqlx::query(
                "SELECT 1 FROM routing_holds WHERE patient_id = $1 AND agent_id = $2 LIMIT 1",
            )
            .bind(patient.to_string())
            .bind(agent_id.to_string())
            .fetch_optional(self.pool())
            .await?;
            Ok(row.is_some())
        })
        .await
    }

    /// Deletes ended contact records and applied-input ids older than `before`;
    /// answers how many rows went.
    #[tracing::instrument(name = "store.purge_routing", skip_all)]
    pub async fn purge_routing(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        timed("purge_routing", async {
            let cut = before.timestamp_millis();
            let a = sqlx::query(
                "DELETE FROM routing_contacts WHERE state = 'ended' AND updated_at_ms < $1",
            )
            .bind(cut)
            .execute(self.pool())
            .await?;
            let b = sqlx::query("DELETE FROM routing_inputs WHERE applied_at_ms < $1")
                .bind(cut)
                .execute(self.pool())
                .await?;
            Ok(a.rows_affected() + b.rows_affected())
        })
        .await
    }
}

/// The router's store: routing state in the database, fenced by the router's
/// lease when the runtime runs as a cluster.
#[derive(Clone)]
pub struct RoutingTables {
    /// The store.
    store: Store,
    /// The router's fence now (None: a single node, no lease).
    fence: std::sync::Arc<dyn Fn() -> Option<Fence> + Send + Sync>,
}

impl RoutingTables {
    /// Routing tables written without a fence (a single node).
    pub fn unfenced(store: Store) -> RoutingTables {
        RoutingTables {
            store,
            fence: std::sync::Arc::new(|| None),
        }
    }

    /// Routing tables written under the fence `fence` answers at each write (the
    /// router's lease as this node holds it; None refuses the write).
    pub fn fenced(
        store: Store,
        fence: impl Fn() -> Option<Fence> + Send + Sync + 'static,
    ) -> RoutingTables {
        let fence = std::sync::Arc::new(fence);
        RoutingTables {
            store,
            fence: std::sync::Arc::new(move || {
                Some(fence().unwrap_or(Fence {
                    lease: "router".into(),
                    holder: String::new(),
                    token: -1,
                }))
            }),
        }
    }
}

impl RoutingStore for RoutingTables {
    fn load_routing(&self) -> BoxFuture<'static, Result<RoutingSnapshot, PortError>> {
        let store = self.store.clone();
        Box::pin(async move { store.load_routing().await.map_err(port_error) })
    }

    fn save_routing(&self, changes: RoutingChanges) -> BoxFuture<'static, Result<(), PortError>> {
        let store = self.store.clone();
        let fence = (self.fence)();
        Box::pin(async move {
            store
                .save_routing(&changes, fence.as_ref())
                .await
                .map_err(port_error)
        })
    }
}

/// Any node answers the minimum-necessary question from the stored holds.
impl AssignmentCheck for Store {
    fn agent_holds_patient(&self, agent_id: &str, patient: PatientId) -> BoxFuture<'static, bool> {
        let store = self.clone();
        let agent = agent_id.to_string();
        Box::pin(async move {
            store
                .agent_holds_patient(&agent, patient)
                .await
                .unwrap_or(false)
        })
    }

    fn agent_site(&self, agent_id: &str) -> BoxFuture<'static, Option<SiteId>> {
        let store = self.clone();
        let agent = agent_id.to_string();
        Box::pin(async move { store.routing_agent_site(&agent).await.ok().flatten() })
    }
}
