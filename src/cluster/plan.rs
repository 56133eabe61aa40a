//! Ownership planning as plain functions: how many partitions each live node
//! should hold, and what this node should give back or take next.
//!
//! Every node runs the same rule on what it reads from the lease table, so they
//! converge without talking to each other:
//! - the eligible members, sorted by id, share `P` partitions: the first `P mod N`
//!   hold `⌈P/N⌉`, the others `⌊P/N⌋` (the quota);
//! - a node over its quota gives back its highest-numbered partitions;
//! - a node under its quota takes free (unheld or expired) partitions, starting at
//!   an offset of its own so nodes rarely race for the same one;
//! - nothing moves that does not have to (a node at its quota keeps what it has).

use std::collections::{BTreeMap, BTreeSet};

/// What one node should do this round.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Partitions to give back (stop, then release), highest first.
    pub release: Vec<u32>,
    /// Free partitions to try to take, in the order to try them.
    pub acquire: Vec<u32>,
    /// How many this node should hold.
    pub quota: usize,
}

/// This node's quota among `eligible` (sorted or not; ids are unique), or 0 when
/// it is not eligible.
pub fn quota(partitions: u32, eligible: &[String], me: &str) -> usize {
    let mut sorted: Vec<&String> = eligible.iter().collect();
    sorted.sort();
    sorted.dedup();
    let Some(rank) = sorted.iter().position(|n| n.as_str() == me) else {
        return 0;
    };
    let n = sorted.len();
    let p = partitions as usize;
    p / n + usize::from(rank < p % n)
}

/// The plan for `me`, given the eligible members and who holds each partition now
/// (`holders`: partition → live holder; a partition missing is free).
pub fn plan(
    partitions: u32,
    eligible: &[String],
    me: &str,
    holders: &BTreeMap<u32, String>,
) -> Plan {
    let quota = quota(partitions, eligible, me);
    let mine: BTreeSet<u32> = holders
        .iter()
        .filter(|(_, h)| h.as_str() == me)
        .map(|(p, _)| *p)
        .collect();
    let mut out = Plan {
        quota,
        ..Plan::default()
    };
    if mine.len() > quota {
        out.release = mine
            .iter()
            .rev()
            .take(mine.len() - quota)
            .copied()
            .collect();
        return out;
    }
    let want = quota - mine.len();
    if want == 0 || partitions == 0 {
        return out;
    }
    let mut sorted: Vec<&String> = eligible.iter().collect();
    sorted.sort();
    let rank = sorted.iter().position(|n| n.as_str() == me).unwrap_or(0) as u32;
    let start = (rank * partitions / sorted.len().max(1) as u32) % partitions;
    let free: Vec<u32> = (0..partitions)
        .map(|i| (start + i) % partitions)
        .filter(|p| !holders.contains_key(p))
        .collect();
    // Try every free one (others may win some races), but never hold more than the quota.
    out.acquire = free;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("node-{i}")).collect()
    }

    /// Runs every node's plan in turn (releases, then takes up to the quota)
    /// until nothing changes; answers each node's partitions.
    fn converge(
        partitions: u32,
        eligible: &[String],
        mut holders: BTreeMap<u32, String>,
    ) -> BTreeMap<String, Vec<u32>> {
        for _round in 0..10 {
            let before = holders.clone();
            for me in eligible {
                let p = plan(partitions, eligible, me, &holders);
                for r in &p.release {
                    holders.remove(r);
                }
                let mut held = holders.values().filter(|h| *h == me).count();
                for a in p.acquire {
                    if held >= p.quota {
                        break;
                    }
                    if let std::collections::btree_map::Entry::Vacant(e) = holders.entry(a) {
                        e.insert(me.clone());
                        held += 1;
                    }
                }
            }
            if holders == before {
                break;
            }
        }
        let mut by: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        for (p, h) in holders {
            by.entry(h).or_default().push(p);
        }
        by
    }

    #[test]
    fn quotas_give_each_node_the_floor_or_the_ceiling_and_add_up_to_all_partitions() {
        for n in 1..=7 {
            let e = nodes(n);
            let q: Vec<usize> = e.iter().map(|m| quota(16, &e, m)).collect();
            assert_eq!(q.iter().sum::<usize>(), 16, "{n} nodes");
            assert!(q.iter().all(|x| *x == 16 / n || *x == 16 / n + 1), "{q:?}");
        }
        assert_eq!(quota(16, &nodes(3), "stranger"), 0);
    }

    #[test]
    fn three_nodes_starting_together_end_with_six_five_five() {
        let by = converge(16, &nodes(3), BTreeMap::new());
        let sizes: Vec<usize> = by.values().map(Vec::len).collect();
        assert_eq!(sizes, vec![6, 5, 5]);
    }

    #[test]
    fn a_node_joining_takes_its_share_and_moves_nothing_else() {
        let two = converge(16, &nodes(2), BTreeMap::new());
        let holders: BTreeMap<u32, String> = two
            .iter()
            .flat_map(|(n, ps)| ps.iter().map(move |p| (*p, n.clone())))
            .collect();
        let three = converge(16, &nodes(3), holders.clone());
        assert_eq!(three["node-2"].len(), 5);
        // Partitions that stayed with node-0 or node-1 were never moved between them.
        for (n, ps) in &three {
            if n != "node-2" {
                for p in ps {
                    assert_eq!(&holders[p], n, "partition {p} moved between old nodes");
                }
            }
        }
    }

    #[test]
    fn when_a_node_dies_the_survivors_take_its_partitions() {
        let three = converge(16, &nodes(3), BTreeMap::new());
        let mut holders: BTreeMap<u32, String> = three
            .iter()
            .flat_map(|(n, ps)| ps.iter().map(move |p| (*p, n.clone())))
            .collect();
        holders.retain(|_, h| h != "node-1"); // its leases expired
        let survivors = vec!["node-0".to_string(), "node-2".to_string()];
        let two = converge(16, &survivors, holders);
        assert_eq!(two.values().map(Vec::len).collect::<Vec<_>>(), vec![8, 8]);
    }

    #[test]
    fn a_node_over_its_quota_gives_back_its_highest_partitions() {
        let holders: BTreeMap<u32, String> = (0..16).map(|p| (p, "node-0".to_string())).collect();
        let p = plan(16, &nodes(2), "node-0", &holders);
        assert_eq!(p.quota, 8);
        assert_eq!(p.release, vec![15, 14, 13, 12, 11, 10, 9, 8]);
        assert!(p.acquire.is_empty());
    }

    #[test]
    fn an_ineligible_node_gives_back_everything() {
        let holders: BTreeMap<u32, String> = (0..4).map(|p| (p, "node-0".to_string())).collect();
        let p = plan(4, &["node-1".to_string()], "node-0", &holders);
        assert_eq!(p.quota, 0);
        assert_eq!(p.release.len(), 4);
    }
}
