//! # Priority — one score comparable across all queues
//!
//! Every waiting contact, whatever its queue, site or channel, gets a
//! priority score
//!
//! ```text
//! score(t) = base + boosts + wait_weight_per_sec × (t − enqueued_at)
//! ```
//!
//! * `base` comes from the intent ([`base_priority`]): a clinical or
//!   nurse-advice question outranks a scheduling request, which outranks a
//!   billing question.
//! * `boosts` is the frustration score from `super::frustration` (repeat
//!   contacts, appointment soon, ...). A contact the patient actor marked
//!   urgent is lifted to at least `urgent_floor` ([`effective_boosts`]).
//! * the waiting term ages every contact so that nobody starves: a routine
//!   contact eventually overtakes a newer, more important one.
//!
//! ## Key insight: a static sort key
//!
//! The waiting term grows at the same rate for every contact
//! (`wait_weight_per_sec × t` is common to all), so it never changes the
//! *order* between two waiting contacts. Subtracting it out gives a key that
//! is fixed at enqueue time:
//!
//! ```text
//! rank_key = base + boosts − wait_weight_per_sec × enqueued_at_secs
//! score(t) = rank_key + wait_weight_per_sec × t_secs
//! ```
//!
//! Higher `rank_key` is served first; ties go to the earlier enqueued
//! contact, then to the smaller contact id. Because the key does not depend
//! on "now", queues can keep contacts in a `BTreeSet`/`BinaryHeap` without
//! ever re-sorting, and keys from different queues and sites (all in UTC
//! epoch seconds) compare directly: picking the next contact for an agent
//! who serves several queues is just taking the greatest head key. This only
//! holds if every queue uses the same `wait_weight_per_sec` — it is one
//! global [`PriorityConfig`]. A config reload that changes the weight must
//! re-key waiting contacts (recompute [`priority_key`]).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Largest base priority or urgent floor a configuration may use.
pub const MAX_BASE: i64 = 1_000_000;

/// Largest waiting weight per second a configuration may use.
pub const MAX_WAIT_WEIGHT_PER_SEC: i64 = 1_000;

/// Priority configuration, one for the whole deployment. Reloaded live;
/// call [`PriorityConfig::validate`] before swapping it in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PriorityConfig {
    /// Base priority per intent (lowercase keys). Defaults: `clinical` 300,
    /// `nurse_advice` 300, `prescription` 200, `scheduling` 100, `billing` 50.
    pub base_by_intent: BTreeMap<String, i64>,
    /// Base priority for an unknown or missing intent (default 100).
    pub default_base: i64,
    /// Priority points gained per second of waiting (default 1). Must be
    /// positive, otherwise low-priority contacts could starve.
    pub wait_weight_per_sec: i64,
    /// Minimum `base + boosts` of a contact marked urgent (default 1000).
    /// Must exceed every base priority.
    pub urgent_floor: i64,
}

impl Default for PriorityConfig {
    fn default() -> Self {
        let base_by_intent = [
            ("clinical", 300),
            ("nurse_advice", 300),
            ("prescription", 200),
            ("scheduling", 100),
            ("billing", 50),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            base_by_intent,
            default_base: 100,
            wait_weight_per_sec: 1,
            urgent_floor: 1000,
        }
    }
}

impl PriorityConfig {
    /// Rejects nonsense: negative or huge bases, empty or non-lowercase
    /// intent keys, a non-positive waiting weight, and an urgent floor that
    /// does not exceed every base. The error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        for (intent, base) in &self.base_by_intent {
            if intent.trim().is_empty() {
                return Err("base_by_intent contains an empty intent name".to_string());
            }
            if *intent != intent.trim().to_ascii_lowercase() {
                return Err(format!(
                    "base_by_intent key {intent:?} must be lowercase without surrounding spaces"
                ));
            }
            if !(0..=MAX_BASE).contains(base) {
                return Err(format!(
                    "base_by_intent[{intent:?}] must be within 0..={MAX_BASE} (got {base})"
                ));
            }
        }
        if !(0..=MAX_BASE).contains(&self.default_base) {
            return Err(format!(
                "default_base must be within 0..={MAX_BASE} (got {})",
                self.default_base
            ));
        }
        if !(1..=MAX_WAIT_WEIGHT_PER_SEC).contains(&self.wait_weight_per_sec) {
            return Err(format!(
                "wait_weight_per_sec must be within 1..={MAX_WAIT_WEIGHT_PER_SEC} (got {}); 0 lets low-priority contacts starve",
                self.wait_weight_per_sec
            ));
        }
        let max_base = self
            .base_by_intent
            .values()
            .copied()
            .fold(self.default_base, i64::max);
        if self.urgent_floor <= max_base || self.urgent_floor > MAX_BASE {
            return Err(format!(
                "urgent_floor ({}) must be greater than every base priority (max {max_base}) and at most {MAX_BASE}",
                self.urgent_floor
            ));
        }
        Ok(())
    }
}

/// Base priority of an intent: the configured value (lookup is
/// case-insensitive and trims spaces), else `default_base`.
pub fn base_priority(intent: Option<&str>, cfg: &PriorityConfig) -> i64 {
    intent
        .map(|i| i.trim().to_ascii_lowercase())
        .and_then(|k| cfg.base_by_intent.get(&k).copied())
        .unwrap_or(cfg.default_base)
}

/// Boosts to use for the key: the frustration score as is, or — for a
/// contact marked urgent — raised so that `base + boosts >= urgent_floor`.
/// Never lowers the boosts.
pub fn effective_boosts(base: i64, boosts: i64, urgent: bool, cfg: &PriorityConfig) -> i64 {
    if urgent {
        boosts.max(cfg.urgent_floor.saturating_sub(base))
    } else {
        boosts
    }
}

/// Static ordering key of a waiting contact (see the module docs). `Ord`:
/// the greatest key is served first, so it works directly in a
/// `BinaryHeap` (pop = next) or a `BTreeSet` (`last()` = next).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PriorityKey {
    /// `base + boosts − wait_weight_per_sec × enqueued_at_secs`; higher first.
    pub rank: i64,
    /// When the contact was enqueued; earlier first on equal rank.
    pub enqueued_at: DateTime<Utc>,
    /// Final tie-break: smaller contact id first.
    pub contact_id: String,
    /// The waiting weight the rank was computed with (for [`score_at`]).
    pub wait_weight_per_sec: i64,
}

impl Ord for PriorityKey {
    fn cmp(&self, other: &Self) -> Ordering {
        self.rank
            .cmp(&other.rank)
            // Earlier enqueued = greater (served first).
            .then_with(|| other.enqueued_at.cmp(&self.enqueued_at))
            // Smaller id = greater.
            .then_with(|| other.contact_id.cmp(&self.contact_id))
            // Only to keep Ord consistent with Eq; equal in practice.
            .then_with(|| self.wait_weight_per_sec.cmp(&other.wait_weight_per_sec))
    }
}

impl PartialOrd for PriorityKey {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Builds the static key of a contact enqueued at `enqueued_at` with the
/// given `base` and `boosts` (pass [`effective_boosts`] for urgent
/// contacts). `contact_id` is the last tie-break. Arithmetic saturates.
pub fn priority_key(
    base: i64,
    boosts: i64,
    enqueued_at: DateTime<Utc>,
    contact_id: &str,
    cfg: &PriorityConfig,
) -> PriorityKey {
    let weight = cfg.wait_weight_per_sec;
    let rank = base
        .saturating_add(boosts)
        .saturating_sub(weight.saturating_mul(enqueued_at.timestamp()));
    PriorityKey {
        rank,
        enqueued_at,
        contact_id: contact_id.to_string(),
        wait_weight_per_sec: weight,
    }
}

/// The displayable score at `now`: `base + boosts + weight × seconds
/// waited` (whole seconds, as the key). Grows by the weight every second.
pub fn score_at(key: &PriorityKey, now: DateTime<Utc>) -> i64 {
    key.rank
        .saturating_add(key.wait_weight_per_sec.saturating_mul(now.timestamp()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use std::collections::{BTreeSet, BinaryHeap};

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_736_150_400, 0).unwrap()
    }

    #[test]
    fn intents_map_to_their_configured_base_and_unknown_ones_to_the_default() {
        let cfg = PriorityConfig::default();
        assert_eq!(base_priority(Some("clinical"), &cfg), 300);
        assert_eq!(base_priority(Some("nurse_advice"), &cfg), 300);
        assert_eq!(base_priority(Some("prescription"), &cfg), 200);
        assert_eq!(base_priority(Some(" Scheduling "), &cfg), 100);
        assert_eq!(base_priority(Some("billing"), &cfg), 50);
        assert_eq!(base_priority(Some("parking"), &cfg), 100);
        assert_eq!(base_priority(None, &cfg), 100);
    }

    #[test]
    fn score_is_base_plus_boosts_plus_seconds_waited() {
        let cfg = PriorityConfig::default();
        let key = priority_key(100, 150, t0(), "c1", &cfg);
        assert_eq!(score_at(&key, t0()), 250);
        assert_eq!(score_at(&key, t0() + Duration::seconds(90)), 340);
    }

    #[test]
    fn urgent_newer_contact_outranks_older_routine_one() {
        let cfg = PriorityConfig::default();
        let billing = base_priority(Some("billing"), &cfg);
        let old_routine = priority_key(billing, 0, t0(), "old", &cfg);
        let base = base_priority(Some("scheduling"), &cfg);
        let boosts = effective_boosts(base, 500, true, &cfg);
        assert_eq!(base + boosts, 1000);
        let new_urgent = priority_key(base, boosts, t0() + Duration::minutes(5), "new", &cfg);
        assert!(new_urgent > old_routine);
        let now = t0() + Duration::minutes(6);
        assert!(score_at(&new_urgent, now) > score_at(&old_routine, now));
    }

    #[test]
    fn routine_contact_eventually_overtakes_by_waiting() {
        let cfg = PriorityConfig::default();
        let waited_long = priority_key(50, 0, t0(), "a", &cfg);
        let clinical_now = priority_key(300, 0, t0() + Duration::seconds(251), "b", &cfg);
        assert!(waited_long > clinical_now);
        let clinical_sooner = priority_key(300, 0, t0() + Duration::seconds(249), "b", &cfg);
        assert!(clinical_sooner > waited_long);
    }

    #[test]
    fn equal_priority_serves_the_oldest_first() {
        let cfg = PriorityConfig::default();
        let older = priority_key(100, 0, t0(), "z", &cfg);
        let newer = priority_key(100, 0, t0() + Duration::milliseconds(400), "a", &cfg);
        assert!(older > newer);
        let mut heap = BinaryHeap::from(vec![newer.clone(), older.clone()]);
        assert_eq!(heap.pop(), Some(older));
        assert_eq!(heap.pop(), Some(newer));
    }

    #[test]
    fn same_priority_and_same_instant_falls_back_to_contact_id() {
        let cfg = PriorityConfig::default();
        let a = priority_key(100, 0, t0(), "contact-a", &cfg);
        let b = priority_key(100, 0, t0(), "contact-b", &cfg);
        assert!(a > b);
    }

    #[test]
    fn keys_from_two_queues_compare_directly() {
        let cfg = PriorityConfig::default();
        // Queue at site A (scheduling) and queue at site B (billing).
        let mut site_a: BTreeSet<PriorityKey> = BTreeSet::new();
        site_a.insert(priority_key(
            100,
            0,
            t0() + Duration::seconds(30),
            "a1",
            &cfg,
        ));
        site_a.insert(priority_key(
            100,
            0,
            t0() + Duration::seconds(60),
            "a2",
            &cfg,
        ));
        let mut site_b: BTreeSet<PriorityKey> = BTreeSet::new();
        site_b.insert(priority_key(50, 0, t0(), "b1", &cfg)); // rank: 50 - t0
        site_b.insert(priority_key(
            50,
            150,
            t0() + Duration::seconds(90),
            "b2",
            &cfg,
        ));

        // Heads of each queue, then the global winner is just max().
        let head_a = site_a.last().unwrap();
        let head_b = site_b.last().unwrap();
        assert_eq!(head_a.contact_id, "a1"); // 100 - (t0 + 30) = 70 - t0
        assert_eq!(head_b.contact_id, "b2"); // 200 - (t0 + 90) = 110 - t0
        let next = head_a.max(head_b);
        assert_eq!(next.contact_id, "b2");

        // Same answer as comparing live scores at any instant.
        let now = t0() + Duration::seconds(120);
        let mut all: Vec<&PriorityKey> = site_a.iter().chain(site_b.iter()).collect();
        all.sort_by_key(|k| std::cmp::Reverse(score_at(k, now)));
        assert_eq!(all[0].contact_id, "b2");
    }

    #[test]
    fn urgent_floor_never_lowers_existing_boosts() {
        let cfg = PriorityConfig::default();
        assert_eq!(effective_boosts(300, 2000, true, &cfg), 2000);
        assert_eq!(effective_boosts(300, 100, true, &cfg), 700);
        assert_eq!(effective_boosts(300, 100, false, &cfg), 100);
    }

    #[test]
    fn key_serialises_and_round_trips() {
        let cfg = PriorityConfig::default();
        let key = priority_key(300, 100, t0(), "c9", &cfg);
        let json = serde_json::to_string(&key).unwrap();
        let back: PriorityKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, key);
    }

    #[test]
    fn default_config_is_valid_and_partial_config_fills_in_defaults() {
        assert_eq!(PriorityConfig::default().validate(), Ok(()));
        let cfg: PriorityConfig = serde_json::from_str(r#"{"wait_weight_per_sec": 2}"#).unwrap();
        assert_eq!(cfg.wait_weight_per_sec, 2);
        assert_eq!(cfg.base_by_intent.get("clinical"), Some(&300));
        assert!(serde_json::from_str::<PriorityConfig>(r#"{"wait_weight": 2}"#).is_err());
    }

    #[test]
    fn nonsense_configs_are_rejected_naming_the_field() {
        let d = PriorityConfig::default;
        let mut negative_base = d();
        negative_base
            .base_by_intent
            .insert("billing".to_string(), -1);
        let mut upper_key = d();
        upper_key.base_by_intent.insert("Billing".to_string(), 10);
        let mut empty_key = d();
        empty_key.base_by_intent.insert(" ".to_string(), 10);
        let cases: Vec<(PriorityConfig, &str)> = vec![
            (negative_base, "base_by_intent"),
            (upper_key, "base_by_intent"),
            (empty_key, "base_by_intent"),
            (
                PriorityConfig {
                    default_base: -3,
                    ..d()
                },
                "default_base",
            ),
            (
                PriorityConfig {
                    wait_weight_per_sec: 0,
                    ..d()
                },
                "wait_weight_per_sec",
            ),
            (
                PriorityConfig {
                    wait_weight_per_sec: -1,
                    ..d()
                },
                "wait_weight_per_sec",
            ),
            (
                PriorityConfig {
                    urgent_floor: 300,
                    ..d()
                },
                "urgent_floor",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }
}
