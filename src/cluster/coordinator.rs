//! The coordinator: one loop per node that keeps its leases, applies the plan
//! (see [`super::plan`]) and tells the runtime what it owns now.
//!
//! Order matters, and it is always the same:
//! - giving back: publish the new ownership (new events for those patients go
//!   elsewhere, their writes are refused here), wait until the runtime stopped
//!   consuming them and dropped their actors, then release the leases;
//! - losing without a word (renewal failed, or the local deadline passed): publish
//!   at once; the fence refuses any write still in flight;
//! - taking: acquire the lease (new token), publish, let the runtime start.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use frontdoor_actors::ports::BoxFuture;
use tokio::sync::watch;

use super::plan::plan;
use super::{lease_partition, partition_lease, Member, Membership, Ownership, ROUTER_LEASE};
use crate::broker::shutdown::Shutdown;
use crate::configuration::ClusterSettings;
use crate::metrics as m;
use crate::store::Store;

/// What the coordinator needs from the rest of the runtime.
pub trait Hooks: Send + Sync + 'static {
    /// Whether this node can take work now (its broker links are up).
    fn eligible(&self) -> bool;

    /// Make the node match `ownership`: consume exactly its partitions, and drop
    /// the resident actors of `changed` (given away or newly taken). Answers when
    /// done.
    fn apply(&self, ownership: Arc<Ownership>, changed: Vec<u32>) -> BoxFuture<'static, ()>;

    /// Make routing match `ownership`: rebuild and consume the routing queue while
    /// this node leads, drop routing state otherwise. Answers when done.
    fn lead(&self, ownership: Arc<Ownership>) -> BoxFuture<'static, ()>;
}

/// The settings every member must share, as a fingerprint and in words.
#[derive(Debug, Clone)]
pub struct SharedSettings {
    /// A digest of the description.
    pub fingerprint: String,
    /// What must match, readable (logged when a node is refused).
    pub description: String,
}

impl SharedSettings {
    /// From the values that must agree across nodes.
    pub fn new(values: &[(&str, String)]) -> SharedSettings {
        use sha2::{Digest, Sha256};
        let description = values
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ");
        let fingerprint = hex::encode(Sha256::digest(description.as_bytes()));
        SharedSettings {
            fingerprint,
            description,
        }
    }
}

/// The coordinator of one node.
pub struct Coordinator {
    /// Leases, members and shared settings live here.
    store: Store,
    /// Timing.
    settings: ClusterSettings,
    /// This node.
    node_id: String,
    /// Partition count.
    partitions: u32,
    /// What must match across nodes.
    shared: SharedSettings,
    /// What this node says about itself (version, port).
    info: serde_json::Value,
    /// Where ownership is published.
    tx: watch::Sender<Arc<Ownership>>,
    /// The runtime.
    hooks: Arc<dyn Hooks>,
    /// Leases this node holds, with their tokens.
    held: BTreeMap<String, i64>,
    /// Until when the held leases are certainly still ours (local clock).
    valid_until: Option<Instant>,
    /// Where this node stands.
    membership: Membership,
    /// Live holders of every lease, as last read.
    holders: BTreeMap<String, String>,
    /// Live members, as last read.
    members: Vec<crate::store::cluster::MemberRow>,
    /// Version of the last published ownership.
    version: u64,
}

impl Coordinator {
    /// A coordinator for this node.
    #[allow(clippy::too_many_arguments)] // each is a distinct dependency, given once at start
    pub fn new(
        store: Store,
        settings: ClusterSettings,
        node_id: String,
        partitions: u32,
        shared: SharedSettings,
        info: serde_json::Value,
        tx: watch::Sender<Arc<Ownership>>,
        hooks: Arc<dyn Hooks>,
    ) -> Coordinator {
        Coordinator {
            store,
            settings,
            node_id,
            partitions: partitions.max(1),
            shared,
            info,
            tx,
            hooks,
            held: BTreeMap::new(),
            valid_until: None,
            membership: Membership::Joining,
            holders: BTreeMap::new(),
            members: Vec::new(),
            version: 1,
        }
    }

    fn ttl_ms(&self) -> i64 {
        i64::try_from(self.settings.lease_ttl_ms).unwrap_or(i64::MAX)
    }

    fn interval(&self) -> Duration {
        Duration::from_millis(self.settings.renew_interval_ms.max(1))
    }

    /// How long a store call may take before the round moves on.
    fn call_timeout(&self) -> Duration {
        self.interval().max(Duration::from_millis(500))
    }

    /// How long before its expiry this node stops trusting a lease it could not
    /// renew (the database sets expiry after receiving the renewal, so this local
    /// deadline always falls before the real one).
    fn safety(&self) -> Duration {
        Duration::from_millis(
            self.settings
                .renew_interval_ms
                .max(self.settings.lease_ttl_ms / 5),
        )
    }

    /// Runs rounds until the drain, then leaves the cluster (stops consuming, drops
    /// actors and routing, releases every lease). Answers why it stopped.
    pub async fn run(mut self, mut shutdown: Shutdown) -> String {
        loop {
            self.round().await;
            if let Membership::Refused(reason) = &self.membership {
                let reason = reason.clone();
                shutdown.wait().await;
                return format!("refused to join: {reason}");
            }
            if shutdown.sleep_or_triggered(self.interval()).await {
                self.leave().await;
                return "left the cluster".into();
            }
        }
    }

    async fn call<T>(
        &self,
        fut: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
    ) -> Option<T> {
        match tokio::time::timeout(self.call_timeout(), fut).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error.message = %e, "cluster coordination: store call failed");
                None
            }
            Err(_) => {
                tracing::warn!("cluster coordination: store call timed out");
                None
            }
        }
    }

    async fn join(&mut self) -> bool {
        let Some(mismatch) = self
            .call(
                self.store
                    .cluster_register_config(&self.shared.fingerprint, &self.shared.description),
            )
            .await
        else {
            return false;
        };
        if let Some(theirs) = mismatch {
            let reason = format!(
                "this node's settings ({}) differ from the cluster's ({theirs})",
                self.shared.description
            );
            tracing::error!(node_id = %self.node_id, reason = %reason, "refusing to join the cluster: settings differ; not ready");
            self.membership = Membership::Refused(reason);
            metrics::gauge!(m::CLUSTER_MEMBER).set(0.0);
            self.publish(Vec::new()).await;
            return false;
        }
        let mut names: Vec<String> = (0..self.partitions).map(partition_lease).collect();
        names.push(ROUTER_LEASE.to_string());
        if self
            .call(self.store.cluster_prepare_leases(&names))
            .await
            .is_none()
        {
            return false;
        }
        self.membership = Membership::Member;
        metrics::gauge!(m::CLUSTER_MEMBER).set(1.0);
        tracing::info!(node_id = %self.node_id, partitions = self.partitions, "joined the cluster");
        true
    }

    /// One round: heartbeat, renew, read, plan, give back, take, publish.
    async fn round(&mut self) {
        if matches!(self.membership, Membership::Refused(_)) {
            return;
        }
        if self.membership == Membership::Joining && !self.join().await {
            return;
        }
        let eligible = self.hooks.eligible();
        let ttl = self.ttl_ms();
        let _ = self
            .call(
                self.store
                    .cluster_heartbeat(&self.node_id, eligible, &self.info, ttl),
            )
            .await;

        // Renew what we hold; whatever did not come back is lost.
        let sent = Instant::now();
        let mut lost: Vec<String> = Vec::new();
        match self
            .call(self.store.cluster_renew(&self.node_id, ttl))
            .await
        {
            Some(rows) => {
                let renewed: BTreeMap<String, i64> = rows.into_iter().collect();
                for (name, token) in &self.held {
                    if renewed.get(name) != Some(token) {
                        lost.push(name.clone());
                    }
                }
                self.held = renewed;
                self.valid_until =
                    Some(sent + Duration::from_millis(self.settings.lease_ttl_ms) - self.safety());
            }
            None => {
                if self.valid_until.is_some_and(|t| Instant::now() >= t) && !self.held.is_empty() {
                    tracing::error!(node_id = %self.node_id, "leases could not be renewed in time: giving up every partition and the router before they can expire");
                    lost.extend(self.held.keys().cloned());
                    self.held.clear();
                }
            }
        }
        if !lost.is_empty() {
            tracing::warn!(node_id = %self.node_id, leases = ?lost, "leases lost");
            metrics::counter!(m::CLUSTER_REBALANCES_TOTAL, "reason" => "lost").increment(1);
        }
        let mut changed: BTreeSet<u32> = lost.iter().filter_map(|l| lease_partition(l)).collect();

        // Read the cluster.
        let members = self.call(self.store.cluster_members()).await;
        let leases = self.call(self.store.cluster_leases()).await;
        let (Some(members), Some(leases)) = (members, leases) else {
            self.publish(changed.into_iter().collect()).await;
            return;
        };
        self.members = members;
        self.holders = leases
            .iter()
            .filter(|l| l.live)
            .filter_map(|l| l.holder.clone().map(|h| (l.name.clone(), h)))
            .collect();
        // Our own view of our leases wins over a read that raced a renewal.
        self.holders.retain(|_, h| *h != self.node_id);
        for name in self.held.keys() {
            self.holders.insert(name.clone(), self.node_id.clone());
        }
        let eligible_ids: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.eligible && (m.node_id != self.node_id || eligible))
            .map(|m| m.node_id.clone())
            .collect();
        let by_partition: BTreeMap<u32, String> = self
            .holders
            .iter()
            .filter_map(|(n, h)| lease_partition(n).map(|p| (p, h.clone())))
            .collect();
        let plan = plan(self.partitions, &eligible_ids, &self.node_id, &by_partition);

        // Give back what is over the quota: stop first, then release.
        if !plan.release.is_empty() {
            let released: Vec<(String, i64)> = plan
                .release
                .iter()
                .filter_map(|p| {
                    let name = partition_lease(*p);
                    self.held.remove(&name).map(|t| (name, t))
                })
                .collect();
            for (name, _) in &released {
                self.holders.remove(name);
            }
            self.publish(plan.release.clone()).await;
            for (name, token) in &released {
                let _ = self
                    .call(self.store.cluster_release(name, &self.node_id, *token))
                    .await;
            }
            tracing::info!(node_id = %self.node_id, partitions = ?plan.release, quota = plan.quota, "partitions given back");
            metrics::counter!(m::CLUSTER_REBALANCES_TOTAL, "reason" => "released").increment(1);
        }

        // Take free partitions up to the quota.
        let mut mine = self
            .held
            .keys()
            .filter(|n| lease_partition(n).is_some())
            .count();
        let mut gained = Vec::new();
        for p in plan.acquire {
            if mine >= plan.quota {
                break;
            }
            let name = partition_lease(p);
            if let Some(Some(a)) = self
                .call(self.store.cluster_acquire(&name, &self.node_id, ttl))
                .await
            {
                if let Some(ago) = a.expired_ms_ago {
                    metrics::histogram!(m::CLUSTER_TAKEOVER_SECONDS, "lease" => "partition")
                        .record(ago as f64 / 1000.0);
                }
                self.held.insert(name.clone(), a.token);
                self.holders.insert(name, self.node_id.clone());
                gained.push(p);
                mine += 1;
            }
        }
        if !gained.is_empty() {
            tracing::info!(node_id = %self.node_id, partitions = ?gained, quota = plan.quota, "partitions taken");
            metrics::counter!(m::CLUSTER_REBALANCES_TOTAL, "reason" => "taken").increment(1);
        }
        changed.extend(gained);

        // The router: take it when free, give it back when this node cannot serve.
        let mut took_router: Option<(Instant, Option<i64>)> = None;
        let leading = self.held.contains_key(ROUTER_LEASE);
        if eligible && !leading && !self.holders.contains_key(ROUTER_LEASE) {
            if let Some(Some(a)) = self
                .call(self.store.cluster_acquire(ROUTER_LEASE, &self.node_id, ttl))
                .await
            {
                tracing::info!(node_id = %self.node_id, previous = ?a.previous_holder, "took the router lease: leading routing");
                self.held.insert(ROUTER_LEASE.to_string(), a.token);
                self.holders
                    .insert(ROUTER_LEASE.to_string(), self.node_id.clone());
                took_router = Some((Instant::now(), a.expired_ms_ago));
            }
        } else if !eligible && leading {
            if let Some(token) = self.held.remove(ROUTER_LEASE) {
                self.holders.remove(ROUTER_LEASE);
                self.publish(Vec::new()).await;
                let _ = self
                    .call(
                        self.store
                            .cluster_release(ROUTER_LEASE, &self.node_id, token),
                    )
                    .await;
                tracing::warn!(node_id = %self.node_id, "gave the router lease back: this node's broker links are down");
            }
        }

        self.publish(changed.into_iter().collect()).await;
        if let Some((at, expired_ago)) = took_router {
            // The wait since the old holder's lease expired (none when it was free),
            // plus rebuilding routing from the store (publish waits for it).
            let waited = expired_ago.unwrap_or(0) as f64 / 1000.0;
            metrics::histogram!(m::CLUSTER_TAKEOVER_SECONDS, "lease" => "router")
                .record(waited + at.elapsed().as_secs_f64());
        }
    }

    /// Publishes ownership as held now and makes the runtime match it.
    async fn publish(&mut self, changed: Vec<u32>) {
        self.version += 1;
        let mine: BTreeMap<u32, i64> = self
            .held
            .iter()
            .filter_map(|(n, t)| lease_partition(n).map(|p| (p, *t)))
            .collect();
        let owners: BTreeMap<u32, String> = self
            .holders
            .iter()
            .filter_map(|(n, h)| lease_partition(n).map(|p| (p, h.clone())))
            .collect();
        let leader = self.holders.get(ROUTER_LEASE).cloned();
        let members = self
            .members
            .iter()
            .map(|m| Member {
                node_id: m.node_id.clone(),
                eligible: m.eligible,
                partitions: owners
                    .iter()
                    .filter(|(_, h)| **h == m.node_id)
                    .map(|(p, _)| *p)
                    .collect(),
                leader: leader.as_deref() == Some(m.node_id.as_str()),
                info: m.info.clone(),
            })
            .collect();
        let own = Arc::new(Ownership {
            node_id: self.node_id.clone(),
            partitions: self.partitions,
            membership: self.membership.clone(),
            router_token: self.held.get(ROUTER_LEASE).copied(),
            mine,
            owners,
            leader,
            members,
            version: self.version,
        });
        metrics::gauge!(m::CLUSTER_NODES).set(self.members.len() as f64);
        metrics::gauge!(m::CLUSTER_PARTITIONS_OWNED).set(own.mine.len() as f64);
        metrics::gauge!(m::ROUTER_LEADER).set(if own.is_leader() { 1.0 } else { 0.0 });
        let _ = self.tx.send(own.clone());
        self.hooks.apply(own.clone(), changed).await;
        self.hooks.lead(own).await;
    }

    /// Leaves: stop everything, release every lease, forget the membership.
    async fn leave(&mut self) {
        if self.membership != Membership::Member {
            return;
        }
        let held = std::mem::take(&mut self.held);
        self.holders.retain(|_, h| *h != self.node_id);
        self.publish((0..self.partitions).collect()).await;
        for (name, token) in &held {
            let _ = self
                .call(self.store.cluster_release(name, &self.node_id, *token))
                .await;
        }
        let _ = self.call(self.store.cluster_leave(&self.node_id)).await;
        metrics::gauge!(m::CLUSTER_MEMBER).set(0.0);
        tracing::info!(node_id = %self.node_id, released = held.len(), "left the cluster");
    }
}
