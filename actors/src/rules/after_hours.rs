//! # After hours — who answers when a queue is closed
//!
//! A queue is open when its hours say so: its own hours (`after_hours.queues`, keyed
//! `<site>.<skill>` or `<skill>`, in the site's local time) or else its site's
//! opening hours from the site directory, never on a holiday (the site's or the
//! queue's). A queue with no hours anywhere is always open. A contact that reaches a
//! closed queue is handled by the after-hours policy of its skill:
//!
//! | skill | after hours |
//! | --- | --- |
//! | clinical (`clinical_skills`, default `nurse_advice`) | the on-call nurse queue (`on_call_skill`): any site with that skill, but only across sites when the licensure rule allows it (`overflow.cross_site_skills`) |
//! | scheduling and billing (`self_service_skills`) | the channel offers the virtual agent or a callback (`after_hours.offer`); the contact keeps its place until opening |
//! | anything else | waits for opening, with the reason and the opening time recorded on the contact |
//!
//! A red flag is never held for opening: an emergency goes to its skill's queue
//! (and the on-call queue when that is closed) whatever the hours.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// One queue's own hours, in its site's local time (`{ mon = ["08:00-17:00"] }`
/// and holiday dates `YYYY-MM-DD`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueHours {
    /// Per weekday local `HH:MM-HH:MM` intervals; a day not listed is closed.
    pub hours: BTreeMap<String, Vec<String>>,
    /// Local dates the queue is closed, besides its site's holidays.
    pub holidays: Vec<String>,
}

/// After-hours routing (reloadable with the routing rules).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AfterHoursConfig {
    /// Skills whose contacts go to the on-call nurse after hours.
    pub clinical_skills: BTreeSet<String>,
    /// The on-call nurse queue's skill.
    pub on_call_skill: String,
    /// Skills whose contacts are offered the virtual agent or a callback after hours.
    pub self_service_skills: BTreeSet<String>,
    /// Queue hours by `<site>.<skill>` or `<skill>` (the first found wins); queues
    /// not listed follow their site's hours.
    pub queues: BTreeMap<String, QueueHours>,
}

impl Default for AfterHoursConfig {
    fn default() -> Self {
        AfterHoursConfig {
            clinical_skills: BTreeSet::from(["nurse_advice".to_string()]),
            on_call_skill: "nurse_on_call".into(),
            self_service_skills: BTreeSet::from(["scheduling".to_string(), "billing".to_string()]),
            queues: BTreeMap::new(),
        }
    }
}

impl AfterHoursConfig {
    /// The hours of the queue (site, skill), if it has its own.
    pub fn queue_hours(&self, site: &str, skill: &str) -> Option<(String, &QueueHours)> {
        let exact = format!("{site}.{skill}");
        if let Some(h) = self.queues.get(&exact) {
            return Some((exact, h));
        }
        self.queues.get(skill).map(|h| (skill.to_string(), h))
    }

    /// Refuses an empty on-call skill and a skill in both lists.
    pub fn validate_names(&self) -> Result<(), String> {
        if self.on_call_skill.trim().is_empty() {
            return Err("on_call_skill must not be empty".into());
        }
        if let Some(s) = self.clinical_skills.intersection(&self.self_service_skills).next() {
            return Err(format!(
                "clinical_skills and self_service_skills both list {s:?}"
            ));
        }
        if self.clinical_skills.contains(&self.on_call_skill) {
            return Err(format!(
                "on_call_skill {:?} must not itself be a clinical skill that goes on call",
                self.on_call_skill
            ));
        }
        Ok(())
    }
}

/// What happens to a contact that reaches a closed queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case")]
pub enum AfterHours {
    /// Queue it for the on-call nurse instead.
    OnCall {
        /// The on-call skill.
        skill: String,
    },
    /// Offer the virtual agent or a callback; it keeps its place until opening.
    SelfServiceOrCallback,
    /// Wait for opening.
    WaitForOpening,
}

impl AfterHours {
    /// Stable label (reasons, metrics).
    pub fn as_str(&self) -> &'static str {
        match self {
            AfterHours::OnCall { .. } => "on_call",
            AfterHours::SelfServiceOrCallback => "self_service_or_callback",
            AfterHours::WaitForOpening => "wait_for_opening",
        }
    }
}

/// The after-hours policy of `skill`.
pub fn policy(skill: &str, cfg: &AfterHoursConfig) -> AfterHours {
    if cfg.clinical_skills.contains(skill) {
        AfterHours::OnCall {
            skill: cfg.on_call_skill.clone(),
        }
    } else if cfg.self_service_skills.contains(skill) {
        AfterHours::SelfServiceOrCallback
    } else {
        AfterHours::WaitForOpening
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clinical_goes_on_call_scheduling_and_billing_self_serve_the_rest_waits() {
        let cfg = AfterHoursConfig::default();
        assert_eq!(
            policy("nurse_advice", &cfg),
            AfterHours::OnCall {
                skill: "nurse_on_call".into()
            }
        );
        assert_eq!(policy("scheduling", &cfg), AfterHours::SelfServiceOrCallback);
        assert_eq!(policy("billing", &cfg), AfterHours::SelfServiceOrCallback);
        assert_eq!(policy("general", &cfg), AfterHours::WaitForOpening);
    }

    #[test]
    fn a_site_queue_s_own_hours_win_over_the_skill_s() {
        let mut cfg = AfterHoursConfig::default();
        cfg.queues.insert("billing".into(), QueueHours::default());
        cfg.queues.insert(
            "north.billing".into(),
            QueueHours {
                holidays: vec!["2026-12-24".into()],
                ..QueueHours::default()
            },
        );
        assert_eq!(cfg.queue_hours("north", "billing").unwrap().0, "north.billing");
        assert_eq!(cfg.queue_hours("south", "billing").unwrap().0, "billing");
        assert!(cfg.queue_hours("south", "scheduling").is_none());
    }

    #[test]
    fn contradictory_lists_are_refused() {
        let mut cfg = AfterHoursConfig::default();
        cfg.self_service_skills.insert("nurse_advice".into());
        assert!(cfg.validate_names().unwrap_err().contains("nurse_advice"));
    }
}
