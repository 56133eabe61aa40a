//! Routing: queue actors per (site, skill), agent actors, and the router that
//! coordinates them.
//!
//! The patient actor decides (frustration assessment, preferred agent, bot
//! hand-off: [`request`]); the queue obeys (ordering by one priority key, timed
//! relaxation, matching: [`queue`]); the agent owns its capacity ([`agent`]); the
//! [`router`] ties them together, runs the timers (offer timeouts, wrap-up,
//! relaxation) on a clock that tests inject, rebalances across sites, and records
//! the reasons every decision was made.
//!
//! # Layout
//! - [`model`]: the routed contact, its state and reasons.
//! - [`request`]: from a journey event to a routing request (pure).
//! - [`queue`]: queue state (pure) and the queue actor.
//! - [`agent`]: agent state (pure) and the agent actor.
//! - [`router`]: the router task (coordination, timers, persistence through the
//!   `RoutingStore` port) and the [`router::Routing`] handle.

pub mod agent;
pub mod model;
pub mod queue;
pub mod request;
pub mod router;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::rules::after_hours::AfterHoursConfig;
use crate::rules::frustration::FrustrationConfig;
use crate::rules::handoff::HandoffConfig;
use crate::rules::matching::RelaxationConfig;
use crate::rules::overflow::OverflowConfig;
use crate::rules::priority::PriorityConfig;
use crate::rules::red_flags::RedFlagConfig;
use crate::rules::waiting::{AnnounceConfig, CallbackPolicy};

/// The time source of routing timers (a manual one in tests).
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests drive timers with it; `frontdoor
/// replay` runs routing on it).
pub struct ManualClock {
    /// Microseconds since the epoch.
    micros: AtomicI64,
}

impl ManualClock {
    /// A clock reading `start` (to the millisecond).
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            micros: AtomicI64::new(start.timestamp_millis() * 1000),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: std::time::Duration) {
        let us = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
        self.micros.fetch_add(us, Ordering::SeqCst);
    }

    /// Moves the clock to `t` if that is later (never back).
    pub fn advance_to(&self, t: DateTime<Utc>) {
        self.micros
            .fetch_max(t.timestamp_micros(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.micros.load(Ordering::SeqCst)).unwrap_or_else(Utc::now)
    }
}

/// Every routing threshold; validated before it takes effect (reloadable).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Frustration signals.
    pub frustration: FrustrationConfig,
    /// Priority scores.
    pub priority: PriorityConfig,
    /// Timed relaxation steps.
    pub relaxation: RelaxationConfig,
    /// Cross-site overflow.
    pub overflow: OverflowConfig,
    /// Urgent phrases and intents (a safety net, not triage).
    pub red_flags: RedFlagConfig,
    /// When a virtual agent hands over besides failing (asking for a person).
    pub handoff: HandoffConfig,
    /// Wait and position announcements.
    pub announce: AnnounceConfig,
    /// Queued callbacks: retries.
    pub callback: CallbackPolicy,
    /// Queue hours and who answers when a queue is closed.
    pub after_hours: AfterHoursConfig,
    /// Seconds an agent has to accept an offer.
    pub offer_timeout_secs: u32,
    /// Seconds of wrap-up after a contact ends, unless `contact.wrapped` comes first.
    pub wrap_up_secs: u32,
    /// Seconds a returning patient waits for the agent who last owned the issue.
    pub preferred_agent_secs: u32,
    /// How far back a previous same-skill contact makes the patient "returning".
    pub returning_window_secs: u32,
    /// Milliseconds between timer ticks (offer timeouts, relaxation, overflow, gauges).
    pub tick_interval_ms: u64,
    /// Waiting contacts examined per matching decision.
    pub dispatch_scan_limit: usize,
    /// Sliding window of queue statistics, seconds.
    pub stats_window_secs: u32,
    /// Handle time assumed before any is observed, seconds.
    pub default_aht_secs: f64,
    /// Service-level threshold T, seconds (e.g. 20 in "80/20").
    pub service_level_target_secs: u32,
    /// Service-level target share (e.g. 0.8 in "80/20").
    pub service_level_target: f64,
    /// Skill for an intent when the contact names none.
    pub skill_by_intent: BTreeMap<String, String>,
    /// Skill when neither skill nor a mapped intent is known.
    pub default_skill: String,
    /// Lowest proficiency before relaxation (relaxation steps may require more).
    pub min_proficiency: u8,
    /// At start, open contacts that began within this many seconds are routed again.
    pub recovery_window_secs: u32,
    /// Ended contacts' routing records (and applied-input ids) are kept this long
    /// for `GET /v1/contacts/{id}`, then purged, seconds.
    pub record_retention_secs: u32,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            frustration: FrustrationConfig::default(),
            priority: PriorityConfig::default(),
            relaxation: RelaxationConfig::default(),
            overflow: OverflowConfig::default(),
            red_flags: RedFlagConfig::default(),
            handoff: HandoffConfig::default(),
            announce: AnnounceConfig::default(),
            callback: CallbackPolicy::default(),
            after_hours: AfterHoursConfig::default(),
            offer_timeout_secs: 30,
            wrap_up_secs: 120,
            preferred_agent_secs: 120,
            returning_window_secs: 7 * 24 * 3600,
            tick_interval_ms: 500,
            dispatch_scan_limit: 64,
            stats_window_secs: 1800,
            default_aht_secs: 300.0,
            service_level_target_secs: 20,
            service_level_target: 0.8,
            skill_by_intent: BTreeMap::from([
                ("medication_question".into(), "nurse_advice".into()),
                ("clinical".into(), "nurse_advice".into()),
                ("nurse_advice".into(), "nurse_advice".into()),
                ("prescription".into(), "pharmacy".into()),
                ("refill".into(), "pharmacy".into()),
                ("scheduling".into(), "scheduling".into()),
                ("reschedule".into(), "scheduling".into()),
                ("billing".into(), "billing".into()),
            ]),
            default_skill: "general".into(),
            min_proficiency: 1,
            recovery_window_secs: 24 * 3600,
            record_retention_secs: 7 * 24 * 3600,
        }
    }
}

impl RoutingConfig {
    /// Rejects nonsense with a reason naming the field.
    pub fn validate(&self) -> Result<(), String> {
        self.frustration
            .validate()
            .map_err(|e| format!("frustration: {e}"))?;
        self.priority
            .validate()
            .map_err(|e| format!("priority: {e}"))?;
        self.relaxation
            .validate()
            .map_err(|e| format!("relaxation: {e}"))?;
        self.overflow
            .validate()
            .map_err(|e| format!("overflow: {e}"))?;
        self.red_flags
            .validate()
            .map_err(|e| format!("red_flags.{e}"))?;
        self.handoff
            .validate()
            .map_err(|e| format!("handoff.{e}"))?;
        self.announce
            .validate()
            .map_err(|e| format!("announce.{e}"))?;
        self.callback
            .validate()
            .map_err(|e| format!("callback.{e}"))?;
        self.after_hours
            .validate()
            .map_err(|e| format!("after_hours.{e}"))?;
        let checks: [(bool, &str); 9] = [
            (
                self.offer_timeout_secs == 0,
                "offer_timeout_secs must be > 0",
            ),
            (
                self.preferred_agent_secs == 0,
                "preferred_agent_secs must be > 0",
            ),
            (self.tick_interval_ms == 0, "tick_interval_ms must be > 0"),
            (
                self.dispatch_scan_limit == 0,
                "dispatch_scan_limit must be > 0",
            ),
            (
                self.stats_window_secs < 60,
                "stats_window_secs must be >= 60",
            ),
            (
                !(self.default_aht_secs.is_finite() && self.default_aht_secs > 0.0),
                "default_aht_secs must be > 0",
            ),
            (
                self.service_level_target_secs == 0,
                "service_level_target_secs must be > 0",
            ),
            (
                !(self.service_level_target > 0.0 && self.service_level_target < 1.0),
                "service_level_target must be between 0 and 1",
            ),
            (
                !(1..=5).contains(&self.min_proficiency),
                "min_proficiency must be 1-5",
            ),
        ];
        if let Some((_, reason)) = checks.iter().find(|(bad, _)| *bad) {
            return Err((*reason).to_string());
        }
        if self.default_skill.trim().is_empty() {
            return Err("default_skill must not be empty".into());
        }
        Ok(())
    }

    /// The skill a contact needs.
    pub fn skill_for(&self, skill: Option<&str>, intent: Option<&str>) -> String {
        skill
            .map(str::to_string)
            .or_else(|| intent.and_then(|i| self.skill_by_intent.get(i).cloned()))
            .unwrap_or_else(|| self.default_skill.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_routing_config_is_valid() {
        RoutingConfig::default().validate().unwrap();
    }

    #[test]
    fn an_invalid_threshold_is_rejected_with_its_field() {
        let cfg = RoutingConfig {
            offer_timeout_secs: 0,
            ..RoutingConfig::default()
        };
        assert!(cfg.validate().unwrap_err().contains("offer_timeout_secs"));
    }

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let t0 = Utc::now();
        let c = ManualClock::new(t0);
        assert_eq!(c.now().timestamp_millis(), t0.timestamp_millis());
        c.advance(std::time::Duration::from_secs(31));
        assert_eq!(c.now().timestamp_millis() - t0.timestamp_millis(), 31_000);
    }
}
