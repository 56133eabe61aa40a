//! Several nodes as one runtime.
//!
//! # Who owns what
//! - **Patient partitions.** A patient belongs to partition
//!   `PatientId::partition(P)` (P = `broker.partitions`). Partition `p` is a lease
//!   (`partition:<p>`) in PostgreSQL: its holder consumes broker queue `p` and is the
//!   only node that applies events of the patients in `p` (their actors live there).
//!   Every append is fenced: it checks, in its own transaction, that this node still
//!   holds the lease with the token it was given, and keeps the lease row locked
//!   until it commits, so a new holder starts only after the last old write.
//! - **The router.** The holder of the `router` lease (the leader) routes. Every node
//!   feeds it through the broker's routing queue; its writes are fenced the same way.
//!
//! # How ownership moves
//! Each node, every `renew_interval_ms`: heartbeats its membership, renews its
//! leases, reads the members and leases, and runs [`plan::plan`]: give back what is
//! over its quota (stop consuming, drop the actors, then release), take free
//! partitions up to its quota, take the router lease if it is free. A node that
//! dies stops renewing; its leases expire after `lease_ttl_ms` and the others take
//! them. A node that cannot renew stops applying on its own before its leases can
//! expire (a local deadline shorter than the TTL), and a node that loses its broker
//! connection gives its partitions back.
//!
//! # How the next owner rebuilds
//! Patient actors load from the event log when first needed; the router rebuilds
//! from the routing tables (open contacts with their place, agents with their load,
//! outstanding offers) and reconciles contacts the journey log shows open that
//! routing never heard of. Nothing is copied from the old owner's memory.
//!
//! # Layout
//! - [`plan`]: quotas and the per-round plan (pure, unit-tested).
//! - [`coordinator`]: the loop that applies the plan and tells the runtime.
//! - [`wire`]: what nodes say to each other (calls, routing inputs).

pub mod coordinator;
pub mod plan;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;

use crate::store::cluster::Fence;

/// The router's lease name.
pub const ROUTER_LEASE: &str = "router";

/// The lease name of partition `p`.
pub fn partition_lease(p: u32) -> String {
    format!("partition:{p}")
}

/// The partition a lease name stands for.
pub fn lease_partition(name: &str) -> Option<u32> {
    name.strip_prefix("partition:")?.parse().ok()
}

/// Where this node stands in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "reason")]
pub enum Membership {
    /// Not a cluster: this node does everything.
    Standalone,
    /// Joining (settings not compared yet).
    Joining,
    /// A member.
    Member,
    /// Refused to join: its settings differ from the cluster's.
    Refused(String),
}

/// A live member as this node last read it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Member {
    /// Node id.
    pub node_id: String,
    /// Whether it takes work.
    pub eligible: bool,
    /// Partitions it holds.
    pub partitions: Vec<u32>,
    /// Whether it leads routing.
    pub leader: bool,
    /// What it says about itself.
    pub info: serde_json::Value,
}

/// Who owns what, as this node knows it now. Cheap to clone behind an `Arc`.
#[derive(Debug, Clone, Serialize)]
pub struct Ownership {
    /// This node.
    pub node_id: String,
    /// Partition count.
    pub partitions: u32,
    /// Where this node stands.
    pub membership: Membership,
    /// Partitions this node applies now, with the token of its lease (0: standalone).
    pub mine: BTreeMap<u32, i64>,
    /// The live holder of every held partition (this node's included).
    pub owners: BTreeMap<u32, String>,
    /// The node that leads routing, if any.
    pub leader: Option<String>,
    /// This node's router token while it leads.
    pub router_token: Option<i64>,
    /// Live members.
    pub members: Vec<Member>,
    /// Bumped at every change.
    pub version: u64,
}

impl Ownership {
    /// A node that is the whole runtime: every partition, the router, no fencing.
    pub fn standalone(node_id: &str, partitions: u32) -> Ownership {
        let mine: BTreeMap<u32, i64> = (0..partitions.max(1)).map(|p| (p, 0)).collect();
        let owners = mine.keys().map(|p| (*p, node_id.to_string())).collect();
        Ownership {
            node_id: node_id.to_string(),
            partitions: partitions.max(1),
            membership: Membership::Standalone,
            mine,
            owners,
            leader: Some(node_id.to_string()),
            router_token: Some(0),
            members: Vec::new(),
            version: 1,
        }
    }

    /// A cluster member that holds nothing yet.
    pub fn joining(node_id: &str, partitions: u32) -> Ownership {
        Ownership {
            node_id: node_id.to_string(),
            partitions: partitions.max(1),
            membership: Membership::Joining,
            mine: BTreeMap::new(),
            owners: BTreeMap::new(),
            leader: None,
            router_token: None,
            members: Vec::new(),
            version: 1,
        }
    }

    /// True when this node applies partition `p` now.
    pub fn holds(&self, p: u32) -> bool {
        self.mine.contains_key(&p)
    }

    /// The node that applies partition `p`, if any.
    pub fn owner_of(&self, p: u32) -> Option<&str> {
        self.owners.get(&p).map(String::as_str)
    }

    /// True when this node leads routing.
    pub fn is_leader(&self) -> bool {
        self.router_token.is_some()
    }

    /// True when this node runs as a cluster member (fenced writes).
    pub fn fenced(&self) -> bool {
        self.membership != Membership::Standalone
    }

    /// The fence a write for partition `p` must pass (None: not ours). Standalone
    /// nodes write unfenced.
    pub fn partition_fence(&self, p: u32) -> Option<Fence> {
        self.mine.get(&p).map(|token| Fence {
            lease: partition_lease(p),
            holder: self.node_id.clone(),
            token: *token,
        })
    }

    /// The fence a routing write must pass (None: this node does not lead).
    pub fn router_fence(&self) -> Option<Fence> {
        self.router_token.map(|token| Fence {
            lease: ROUTER_LEASE.to_string(),
            holder: self.node_id.clone(),
            token,
        })
    }
}

/// The cluster as the runtime sees it: ownership now, and changes as they come.
#[derive(Clone)]
pub struct Cluster {
    /// Ownership now.
    rx: watch::Receiver<Arc<Ownership>>,
}

impl Cluster {
    /// A cluster handle and the sender the coordinator publishes through.
    pub fn new(initial: Ownership) -> (Cluster, watch::Sender<Arc<Ownership>>) {
        let (tx, rx) = watch::channel(Arc::new(initial));
        (Cluster { rx }, tx)
    }

    /// A standalone node's (never changes).
    pub fn standalone(node_id: &str, partitions: u32) -> Cluster {
        let (c, tx) = Cluster::new(Ownership::standalone(node_id, partitions));
        // The sender lives as long as the process: the receiver keeps the last value
        // either way, and nobody publishes again.
        std::mem::forget(tx);
        c
    }

    /// Ownership now.
    pub fn now(&self) -> Arc<Ownership> {
        self.rx.borrow().clone()
    }

    /// A receiver of changes.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Ownership>> {
        self.rx.clone()
    }

    /// This node's id.
    pub fn node_id(&self) -> String {
        self.rx.borrow().node_id.clone()
    }
}

/// A node id for this process when none is configured: host, port and a random
/// suffix (so a restarted node is a new member and its old leases simply expire).
pub fn default_node_id(port: u16) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "node".into());
    let host: String = host
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "-_.".contains(*c))
        .take(60)
        .collect();
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    format!("{host}-{port}-{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standalone_node_holds_every_partition_and_leads_without_fences() {
        let o = Ownership::standalone("n1", 4);
        assert!((0..4).all(|p| o.holds(p)));
        assert!(o.is_leader());
        assert!(!o.fenced());
        assert_eq!(o.owner_of(3), Some("n1"));
    }

    #[test]
    fn lease_names_round_trip() {
        assert_eq!(lease_partition(&partition_lease(7)), Some(7));
        assert_eq!(lease_partition(ROUTER_LEASE), None);
    }
}
