//! # Overflow — cross-site rebalancing with hysteresis
//!
//! A health system runs the same non-clinical work (scheduling, billing) at
//! several sites. When one site is swamped and another has people waiting
//! for work, waiting contacts should move — but carefully:
//!
//! * **Only cross-site skills move.** Clinical and nurse-advice work is tied
//!   to a site's licences, protocols and local knowledge; it never overflows
//!   (`cross_site_skills`).
//! * **Hysteresis, not flapping.** A site *starts* overflowing when its
//!   [`saturation`] exceeds `saturated_above` and *stops* only once it drops
//!   below the lower `recover_below`; in between it keeps its previous
//!   state. Without the gap a site hovering around the threshold would switch
//!   every tick.
//! * **Don't flood the helper.** A target must be below `headroom_below`,
//!   and it receives at most enough contacts to bring it up to that level,
//!   never more than it has free slots for, so moved contacts are answered
//!   promptly instead of waiting in a new queue — and a target can never be
//!   pushed into overflowing itself (`headroom_below <= recover_below <
//!   saturated_above`).
//! * **A contact moves at most once per `min_move_interval_secs`**
//!   ([`may_move`]): patients are not ping-ponged between sites.
//! * At most `max_moves_per_tick` contacts move per planning call.
//!
//! [`plan_overflow`] is pure apart from the hysteresis flags it updates in
//! the [`OverflowStates`] passed in; the runtime owns that state and applies
//! the returned [`Move`]s (choosing which contacts, honouring [`may_move`]).
//!
//! ## Saturation
//!
//! ```text
//! offered  = λ · AHT + depth           (Erlangs + one server per waiting contact)
//! saturation = offered / agents_available
//! ```
//!
//! `λ · AHT` is the offered traffic in Erlangs: how many agents are busy on
//! average just to keep up with arrivals. Each contact already waiting needs
//! one more agent to be answered now, so the backlog adds `depth`. Dividing
//! by the agents available for the skill gives a load factor: below 1 the
//! site keeps up with room to spare, above 1 it is falling behind. With no
//! load the saturation is 0; with load but no agents it is
//! [`SATURATION_CAP`] (a large finite number, so comparisons, sorting and
//! JSON stay well-defined). Negative or NaN inputs count as 0.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Saturation reported for a queue with load but no available agents.
pub const SATURATION_CAP: f64 = 1e6;

/// Largest threshold the configuration may use for `saturated_above`.
pub const MAX_SATURATION_THRESHOLD: f64 = 100.0;

/// Longest hysteresis window the configuration may use (1 day).
pub const MAX_MOVE_INTERVAL_SECS: u32 = 86_400;

/// Largest `max_moves_per_tick` the configuration may use.
pub const MAX_MOVES_PER_TICK: u32 = 10_000;

/// Load of one queue (one skill at one site) at planning time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueLoad {
    /// Site name.
    pub site: String,
    /// Skill of the queue.
    pub skill: String,
    /// Contacts waiting in the queue.
    pub depth: u32,
    /// Wait of the oldest waiting contact, in seconds (tie-break: the site
    /// whose oldest contact waited longest is relieved first).
    pub oldest_wait_secs: u64,
    /// Agents signed in and available for the skill at the site.
    pub agents_available: u32,
    /// Contacts those agents could take right now (free slots).
    pub free_capacity: u32,
    /// Arrival rate λ, contacts per second (recent average).
    pub arrival_rate_per_sec: f64,
    /// Average handle time, seconds.
    pub aht_secs: f64,
}

/// Offered load in agent-equivalents: `λ · AHT + depth` (see module docs).
/// Never negative or NaN.
pub fn offered_load(q: &QueueLoad) -> f64 {
    let erlangs = non_negative(q.arrival_rate_per_sec) * non_negative(q.aht_secs);
    let erlangs = if erlangs.is_nan() { 0.0 } else { erlangs };
    erlangs + f64::from(q.depth)
}

/// Saturation `offered_load / agents_available` (see module docs): 0 with
/// no load, [`SATURATION_CAP`] with load but no agents, never above the cap.
pub fn saturation(q: &QueueLoad) -> f64 {
    let load = offered_load(q);
    if load <= 0.0 {
        return 0.0;
    }
    if q.agents_available == 0 {
        return SATURATION_CAP;
    }
    (load / f64::from(q.agents_available)).min(SATURATION_CAP)
}

fn non_negative(x: f64) -> f64 {
    if x.is_nan() || x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Overflow thresholds. Reloaded live; call [`OverflowConfig::validate`]
/// before swapping it in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OverflowConfig {
    /// Skills that may be served at another site (default `scheduling`,
    /// `billing`). Everything else never moves.
    pub cross_site_skills: BTreeSet<String>,
    /// A site starts overflowing above this saturation (default 1.0).
    pub saturated_above: f64,
    /// A target must be below this saturation, and is filled at most up to
    /// it (default 0.7).
    pub headroom_below: f64,
    /// An overflowing site stops overflowing below this saturation
    /// (default 0.85).
    pub recover_below: f64,
    /// A contact moved within this many seconds never moves again
    /// (default 120).
    pub min_move_interval_secs: u32,
    /// Most contacts moved by one planning call (default 20).
    pub max_moves_per_tick: u32,
}

impl Default for OverflowConfig {
    fn default() -> Self {
        Self {
            cross_site_skills: ["scheduling", "billing"]
                .into_iter()
                .map(str::to_string)
                .collect(),
            saturated_above: 1.0,
            headroom_below: 0.7,
            recover_below: 0.85,
            min_move_interval_secs: 120,
            max_moves_per_tick: 20,
        }
    }
}

impl OverflowConfig {
    /// Rejects nonsense: empty skill names, non-finite or non-positive
    /// thresholds, thresholds out of order (`headroom_below <= recover_below
    /// < saturated_above` is required, otherwise a site could flap or a
    /// target be filled into overflow), a zero hysteresis window and a zero
    /// move budget. The error names the offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.cross_site_skills.iter().any(|s| s.trim().is_empty()) {
            return Err("cross_site_skills contains an empty skill name".to_string());
        }
        check_threshold("saturated_above", self.saturated_above)?;
        check_threshold("recover_below", self.recover_below)?;
        check_threshold("headroom_below", self.headroom_below)?;
        if self.recover_below >= self.saturated_above {
            return Err(format!(
                "recover_below ({}) must be lower than saturated_above ({})",
                self.recover_below, self.saturated_above
            ));
        }
        if self.headroom_below > self.recover_below {
            return Err(format!(
                "headroom_below ({}) must not exceed recover_below ({})",
                self.headroom_below, self.recover_below
            ));
        }
        if self.min_move_interval_secs == 0 || self.min_move_interval_secs > MAX_MOVE_INTERVAL_SECS
        {
            return Err(format!(
                "min_move_interval_secs must be within 1..={MAX_MOVE_INTERVAL_SECS} (got {})",
                self.min_move_interval_secs
            ));
        }
        if self.max_moves_per_tick == 0 || self.max_moves_per_tick > MAX_MOVES_PER_TICK {
            return Err(format!(
                "max_moves_per_tick must be within 1..={MAX_MOVES_PER_TICK} (got {})",
                self.max_moves_per_tick
            ));
        }
        Ok(())
    }
}

fn check_threshold(field: &str, v: f64) -> Result<(), String> {
    if !v.is_finite() || v <= 0.0 || v > MAX_SATURATION_THRESHOLD {
        return Err(format!(
            "{field} must be a finite number in (0, {MAX_SATURATION_THRESHOLD}] (got {v})"
        ));
    }
    Ok(())
}

/// Hysteresis flag of one site for one skill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowState {
    /// True while the site is overflowing (shedding contacts).
    pub overflowing: bool,
    /// When `overflowing` last changed (or was first observed).
    pub since: DateTime<Utc>,
}

/// Hysteresis flags of all sites and skills, owned by the runtime and
/// updated by [`plan_overflow`]. Nested skill → site → state so it
/// serialises to plain JSON objects.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverflowStates {
    /// skill → site → state.
    pub by_skill: BTreeMap<String, BTreeMap<String, OverflowState>>,
}

impl OverflowStates {
    /// Empty state: no site is overflowing.
    pub fn new() -> Self {
        Self::default()
    }

    /// The state of `site` for `skill`, if observed.
    pub fn get(&self, site: &str, skill: &str) -> Option<&OverflowState> {
        self.by_skill.get(skill).and_then(|m| m.get(site))
    }

    /// True if `site` is currently overflowing for `skill`.
    pub fn is_overflowing(&self, site: &str, skill: &str) -> bool {
        self.get(site, skill).is_some_and(|s| s.overflowing)
    }

    /// The (skill, site) pairs overflowing now: what later plans depend on (a
    /// site first observed as not overflowing changes nothing).
    pub fn overflowing(&self) -> Vec<(String, String)> {
        self.by_skill
            .iter()
            .flat_map(|(skill, sites)| {
                sites
                    .iter()
                    .filter(|(_, s)| s.overflowing)
                    .map(move |(site, _)| (skill.clone(), site.clone()))
            })
            .collect()
    }
}

/// Move `count` waiting contacts of `skill` from one site's queue to
/// another's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    /// Overflowing site giving up contacts.
    pub from_site: String,
    /// Site with headroom receiving them.
    pub to_site: String,
    /// Skill of the contacts.
    pub skill: String,
    /// How many contacts (≥ 1).
    pub count: u32,
    /// Why, with the saturations involved (no patient data).
    pub reason: String,
}

/// Plans the cross-site moves for one tick and updates the hysteresis flags.
///
/// `loads` normally holds the queues of one skill at every site; mixed
/// skills are planned per skill. One entry per site and skill: later
/// duplicates are ignored. For a skill not in `cross_site_skills` nothing
/// moves and its flags are dropped (so removing a skill from the list
/// stops overflow at once).
///
/// For each site: if not overflowing and saturation > `saturated_above` it
/// starts; if overflowing and saturation < `recover_below` it stops. Each
/// overflowing site with waiting contacts sheds its excess — enough to bring
/// it below `recover_below`, at most its depth — to non-overflowing sites
/// below `headroom_below`, least saturated first, each filled at most up to
/// `headroom_below` and at most its `free_capacity`. The most saturated
/// source is served first. At most `max_moves_per_tick` contacts in total.
pub fn plan_overflow(
    loads: &[QueueLoad],
    states: &mut OverflowStates,
    cfg: &OverflowConfig,
    now: DateTime<Utc>,
) -> Vec<Move> {
    let mut skills: Vec<&str> = loads.iter().map(|q| q.skill.as_str()).collect();
    skills.sort_unstable();
    skills.dedup();
    let mut budget = cfg.max_moves_per_tick;
    let mut moves = Vec::new();
    for skill in skills {
        if !cfg.cross_site_skills.contains(skill) {
            states.by_skill.remove(skill);
            continue;
        }
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        let queues: Vec<&QueueLoad> = loads
            .iter()
            .filter(|q| q.skill == skill && seen.insert(q.site.as_str()))
            .collect();
        plan_skill(skill, &queues, states, cfg, now, &mut budget, &mut moves);
    }
    moves
}

struct Site<'a> {
    q: &'a QueueLoad,
    saturation: f64,
}

fn plan_skill(
    skill: &str,
    queues: &[&QueueLoad],
    states: &mut OverflowStates,
    cfg: &OverflowConfig,
    now: DateTime<Utc>,
    budget: &mut u32,
    moves: &mut Vec<Move>,
) {
    let flags = states.by_skill.entry(skill.to_string()).or_default();
    let mut sources: Vec<(Site<'_>, u32)> = Vec::new();
    let mut targets: Vec<(Site<'_>, u32)> = Vec::new();
    for q in queues {
        let sat = saturation(q);
        let prev = flags.get(&q.site).map(|s| s.overflowing);
        let overflowing = match prev {
            Some(true) => sat >= cfg.recover_below,
            Some(false) | None => sat > cfg.saturated_above,
        };
        if prev != Some(overflowing) {
            flags.insert(
                q.site.clone(),
                OverflowState {
                    overflowing,
                    since: now,
                },
            );
        }
        let site = Site { q, saturation: sat };
        if overflowing {
            let excess = excess(q, cfg);
            if excess > 0 {
                sources.push((site, excess));
            }
        } else if sat < cfg.headroom_below {
            let room = room(q, cfg);
            if room > 0 {
                targets.push((site, room));
            }
        }
    }
    sources.sort_by(|(a, _), (b, _)| {
        b.saturation
            .total_cmp(&a.saturation)
            .then_with(|| b.q.oldest_wait_secs.cmp(&a.q.oldest_wait_secs))
            .then_with(|| a.q.site.cmp(&b.q.site))
    });
    targets.sort_by(|(a, _), (b, _)| {
        a.saturation
            .total_cmp(&b.saturation)
            .then_with(|| a.q.site.cmp(&b.q.site))
    });
    for (source, excess) in &mut sources {
        for (target, room) in &mut targets {
            let count = (*excess).min(*room).min(*budget);
            if count == 0 {
                continue;
            }
            *excess -= count;
            *room -= count;
            *budget -= count;
            moves.push(Move {
                from_site: source.q.site.clone(),
                to_site: target.q.site.clone(),
                skill: skill.to_string(),
                count,
                reason: format!(
                    "source saturation {:.2} overflowing (starts above {:.2}, stops below {:.2}); target saturation {:.2} below headroom {:.2}",
                    source.saturation,
                    cfg.saturated_above,
                    cfg.recover_below,
                    target.saturation,
                    cfg.headroom_below
                ),
            });
        }
    }
}

/// Contacts an overflowing site should shed: enough to bring its offered
/// load below `recover_below × agents` (all of them with no agents), at most
/// its depth.
fn excess(q: &QueueLoad, cfg: &OverflowConfig) -> u32 {
    let over = offered_load(q) - cfg.recover_below * f64::from(q.agents_available);
    if over.is_nan() || over <= 0.0 {
        return 0;
    }
    let depth = f64::from(q.depth);
    // In 0..=depth, so the cast is exact.
    over.ceil().min(depth) as u32
}

/// Contacts a target can take: up to `headroom_below × agents` of offered
/// load, at most its free slots.
fn room(q: &QueueLoad, cfg: &OverflowConfig) -> u32 {
    let room = cfg.headroom_below * f64::from(q.agents_available) - offered_load(q);
    if room.is_nan() || room < 1.0 {
        return 0;
    }
    let free = f64::from(q.free_capacity);
    // In 1..=free_capacity, so the cast is exact.
    room.floor().min(free) as u32
}

/// True if a contact last moved at `last_moved_at` may be moved again at
/// `now`: never moved, or moved at least `min_move_interval_secs` ago. A
/// move timestamp in the future (clock skew) counts as just moved.
pub fn may_move(
    last_moved_at: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    cfg: &OverflowConfig,
) -> bool {
    match last_moved_at {
        None => true,
        Some(at) => {
            // Cannot panic: any u32 number of seconds is inside TimeDelta's range.
            let interval = Duration::seconds(i64::from(cfg.min_move_interval_secs));
            now.signed_duration_since(at) >= interval
        }
    }
}

/// Rough wait estimate for a contact joining a queue behind `depth` others
/// when `agents` agents each clear one contact per `aht_secs`:
/// `depth × aht_secs / agents`. Position-based: it ignores how far agents are
/// into their current contacts and future arrivals of higher priority, so
/// it is a figure for comparing sites and for "about N minutes" messages,
/// not a promise. `None` with no agents (the wait is unbounded) or a
/// negative/non-finite AHT.
pub fn estimated_wait_secs(depth: u32, agents: u32, aht_secs: f64) -> Option<f64> {
    if agents == 0 || !aht_secs.is_finite() || aht_secs < 0.0 {
        return None;
    }
    Some(f64::from(depth) * aht_secs / f64::from(agents))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_736_150_400, 0).unwrap()
    }

    /// Queue whose offered traffic λ·AHT is exactly `erlangs` (AHT 16 s).
    fn q(site: &str, skill: &str, erlangs: f64, depth: u32, agents: u32) -> QueueLoad {
        QueueLoad {
            site: site.to_string(),
            skill: skill.to_string(),
            depth,
            oldest_wait_secs: u64::from(depth) * 10,
            agents_available: agents,
            free_capacity: agents,
            arrival_rate_per_sec: erlangs / 16.0,
            aht_secs: 16.0,
        }
    }

    fn overflowing(states: &mut OverflowStates, site: &str, skill: &str) {
        states
            .by_skill
            .entry(skill.to_string())
            .or_default()
            .insert(
                site.to_string(),
                OverflowState {
                    overflowing: true,
                    since: t0() - Duration::minutes(5),
                },
            );
    }

    #[test]
    fn saturation_is_offered_traffic_plus_backlog_over_available_agents() {
        // λ = 0.25/s, AHT 16 s → 4 Erlangs; + 6 waiting = 10; / 4 agents.
        assert_eq!(saturation(&q("a", "billing", 4.0, 6, 4)), 2.5);
        assert_eq!(saturation(&q("a", "billing", 0.0, 0, 4)), 0.0);
        assert_eq!(saturation(&q("a", "billing", 0.0, 0, 0)), 0.0);
        assert_eq!(saturation(&q("a", "billing", 0.0, 1, 0)), SATURATION_CAP);
        let mut bad = q("a", "billing", 0.0, 2, 4);
        bad.arrival_rate_per_sec = f64::NAN;
        bad.aht_secs = f64::INFINITY;
        assert_eq!(saturation(&bad), 0.5);
        bad.arrival_rate_per_sec = f64::INFINITY;
        assert_eq!(saturation(&bad), SATURATION_CAP);
    }

    #[test]
    fn saturated_site_a_moves_contacts_to_idle_site_b() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let a = q("a", "scheduling", 4.0, 6, 4); // saturation 2.5
        let b = q("b", "scheduling", 0.0, 0, 12); // idle, room floor(8.4) = 8
        let moves = plan_overflow(&[a, b], &mut states, &cfg, t0());
        assert_eq!(moves.len(), 1);
        let m = &moves[0];
        assert_eq!((m.from_site.as_str(), m.to_site.as_str()), ("a", "b"));
        assert_eq!(m.skill, "scheduling");
        assert_eq!(m.count, 6); // the whole backlog: λ·AHT alone is 4 > 0.85 × 4
        assert!(m.reason.contains("2.50"), "{}", m.reason);
        assert!(states.is_overflowing("a", "scheduling"));
        assert!(!states.is_overflowing("b", "scheduling"));
        assert_eq!(states.get("a", "scheduling").map(|s| s.since), Some(t0()));
    }

    #[test]
    fn moves_fill_a_target_only_up_to_its_headroom() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let a = q("a", "billing", 4.0, 30, 4);
        let b = q("b", "billing", 2.0, 0, 8); // 0.25; room floor(5.6 - 2) = 3
        let moves = plan_overflow(&[a, b.clone()], &mut states, &cfg, t0());
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].count, 3);
        let mut after = b;
        after.depth += moves[0].count;
        assert!(saturation(&after) <= cfg.headroom_below);
    }

    #[test]
    fn target_free_slots_cap_the_move() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let mut b = q("b", "billing", 0.0, 0, 12);
        b.free_capacity = 2;
        let moves = plan_overflow(&[q("a", "billing", 4.0, 6, 4), b], &mut states, &cfg, t0());
        assert_eq!(moves[0].count, 2);
    }

    #[test]
    fn target_without_headroom_receives_nothing() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let b = q("b", "billing", 6.0, 0, 8); // 0.75 >= 0.7
        let moves = plan_overflow(&[q("a", "billing", 4.0, 6, 4), b], &mut states, &cfg, t0());
        assert!(moves.is_empty());
        assert!(states.is_overflowing("a", "billing"));
    }

    #[test]
    fn recovered_site_below_recover_threshold_moves_nothing_and_stops_overflowing() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        overflowing(&mut states, "a", "billing");
        let a = q("a", "billing", 6.0, 2, 10); // 0.8 < 0.85
        let b = q("b", "billing", 0.0, 0, 12);
        let moves = plan_overflow(&[a, b], &mut states, &cfg, t0());
        assert!(moves.is_empty());
        assert!(!states.is_overflowing("a", "billing"));
        assert_eq!(states.get("a", "billing").map(|s| s.since), Some(t0()));
    }

    #[test]
    fn overflowing_site_between_thresholds_keeps_overflowing() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        overflowing(&mut states, "a", "billing");
        let a = q("a", "billing", 8.0, 1, 10); // 0.9: between 0.85 and 1.0
        let b = q("b", "billing", 0.0, 0, 12);
        let moves = plan_overflow(&[a, b], &mut states, &cfg, t0());
        assert!(states.is_overflowing("a", "billing"));
        // Unchanged flag keeps its original `since`.
        assert_eq!(
            states.get("a", "billing").map(|s| s.since),
            Some(t0() - Duration::minutes(5))
        );
        // Sheds just enough to get below recover_below: ceil(9 - 8.5) = 1.
        assert_eq!(moves.len(), 1);
        assert_eq!(moves[0].count, 1);
    }

    #[test]
    fn site_between_thresholds_that_is_not_overflowing_does_not_start() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let a = q("a", "billing", 8.0, 1, 10); // 0.9
        let b = q("b", "billing", 0.0, 0, 12);
        let moves = plan_overflow(&[a, b], &mut states, &cfg, t0());
        assert!(moves.is_empty());
        assert!(!states.is_overflowing("a", "billing"));
    }

    #[test]
    fn site_exactly_at_saturated_above_does_not_start() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let a = q("a", "billing", 8.0, 2, 10); // exactly 1.0
        let moves = plan_overflow(&[a, q("b", "billing", 0.0, 0, 12)], &mut states, &cfg, t0());
        assert!(moves.is_empty());
    }

    #[test]
    fn clinical_skill_never_moves() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        overflowing(&mut states, "a", "clinical");
        let a = q("a", "clinical", 4.0, 20, 1);
        let b = q("b", "clinical", 0.0, 0, 12);
        let moves = plan_overflow(&[a, b], &mut states, &cfg, t0());
        assert!(moves.is_empty());
        assert!(!states.by_skill.contains_key("clinical"));
    }

    #[test]
    fn site_with_no_agents_sheds_its_whole_backlog() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let a = q("a", "scheduling", 0.0, 5, 0);
        let moves = plan_overflow(
            &[a, q("b", "scheduling", 0.0, 0, 12)],
            &mut states,
            &cfg,
            t0(),
        );
        assert_eq!(moves.iter().map(|m| m.count).sum::<u32>(), 5);
    }

    #[test]
    fn least_saturated_target_is_filled_first_then_the_next() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let a = q("a", "billing", 4.0, 10, 4);
        let b = q("b", "billing", 2.0, 0, 8); // 0.25, room 3
        let c = q("c", "billing", 0.0, 0, 8); // 0.0, room floor(5.6) = 5
        let moves = plan_overflow(&[a, b, c], &mut states, &cfg, t0());
        let summary: Vec<(&str, u32)> = moves
            .iter()
            .map(|m| (m.to_site.as_str(), m.count))
            .collect();
        assert_eq!(summary, vec![("c", 5), ("b", 3)]);
    }

    #[test]
    fn moves_per_tick_are_capped() {
        let cfg = OverflowConfig {
            max_moves_per_tick: 4,
            ..OverflowConfig::default()
        };
        let mut states = OverflowStates::new();
        let a = q("a", "billing", 4.0, 10, 4);
        let moves = plan_overflow(&[a, q("c", "billing", 0.0, 0, 8)], &mut states, &cfg, t0());
        assert_eq!(moves.iter().map(|m| m.count).sum::<u32>(), 4);
    }

    #[test]
    fn mixed_skills_are_planned_separately() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let loads = [
            q("a", "billing", 4.0, 6, 4),
            q("b", "scheduling", 0.0, 0, 12),
            q("a", "clinical", 4.0, 6, 4),
            q("b", "clinical", 0.0, 0, 12),
        ];
        let moves = plan_overflow(&loads, &mut states, &cfg, t0());
        assert!(moves.is_empty());
        assert!(states.is_overflowing("a", "billing"));
    }

    #[test]
    fn contact_moved_ten_seconds_ago_may_not_move_again() {
        let cfg = OverflowConfig::default();
        assert!(!may_move(Some(t0() - Duration::seconds(10)), t0(), &cfg));
        assert!(may_move(Some(t0() - Duration::seconds(120)), t0(), &cfg));
        assert!(may_move(None, t0(), &cfg));
        assert!(!may_move(Some(t0() + Duration::seconds(5)), t0(), &cfg));
    }

    #[test]
    fn estimated_wait_is_position_times_handle_time_over_agents() {
        assert_eq!(estimated_wait_secs(6, 3, 300.0), Some(600.0));
        assert_eq!(estimated_wait_secs(0, 3, 300.0), Some(0.0));
        assert_eq!(estimated_wait_secs(6, 0, 300.0), None);
        assert_eq!(estimated_wait_secs(6, 3, f64::NAN), None);
        assert_eq!(estimated_wait_secs(6, 3, -1.0), None);
    }

    #[test]
    fn default_config_is_valid_and_partial_config_fills_in_defaults() {
        assert_eq!(OverflowConfig::default().validate(), Ok(()));
        let cfg: OverflowConfig =
            serde_json::from_str(r#"{"cross_site_skills": ["billing"], "headroom_below": 0.6}"#)
                .unwrap();
        assert_eq!(cfg.headroom_below, 0.6);
        assert_eq!(cfg.recover_below, 0.85);
        assert!(!cfg.cross_site_skills.contains("scheduling"));
        assert!(serde_json::from_str::<OverflowConfig>(r#"{"saturated": 2.0}"#).is_err());
    }

    #[test]
    fn states_and_moves_serialise_to_json() {
        let cfg = OverflowConfig::default();
        let mut states = OverflowStates::new();
        let moves = plan_overflow(
            &[q("a", "billing", 4.0, 6, 4), q("b", "billing", 0.0, 0, 12)],
            &mut states,
            &cfg,
            t0(),
        );
        let json = serde_json::to_string(&states).unwrap();
        let back: OverflowStates = serde_json::from_str(&json).unwrap();
        assert_eq!(back, states);
        let m = serde_json::to_value(&moves[0]).unwrap();
        assert_eq!(m["count"], 6);
    }

    #[test]
    fn nonsense_configs_are_rejected_naming_the_field() {
        let d = OverflowConfig::default;
        let mut empty_skill = d();
        empty_skill.cross_site_skills.insert(" ".to_string());
        let cases: Vec<(OverflowConfig, &str)> = vec![
            (empty_skill, "cross_site_skills"),
            (
                OverflowConfig {
                    saturated_above: 0.0,
                    ..d()
                },
                "saturated_above",
            ),
            (
                OverflowConfig {
                    saturated_above: f64::NAN,
                    ..d()
                },
                "saturated_above",
            ),
            (
                OverflowConfig {
                    recover_below: -0.5,
                    ..d()
                },
                "recover_below",
            ),
            (
                OverflowConfig {
                    recover_below: 1.0,
                    ..d()
                },
                "recover_below",
            ),
            (
                OverflowConfig {
                    headroom_below: 0.9,
                    ..d()
                },
                "headroom_below",
            ),
            (
                OverflowConfig {
                    headroom_below: f64::INFINITY,
                    ..d()
                },
                "headroom_below",
            ),
            (
                OverflowConfig {
                    min_move_interval_secs: 0,
                    ..d()
                },
                "min_move_interval_secs",
            ),
            (
                OverflowConfig {
                    max_moves_per_tick: 0,
                    ..d()
                },
                "max_moves_per_tick",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }
}
