//! The what-if patch: TOML in the shape of `PUT /v1/runtime/config` (`[routing]`,
//! `[supervision]`), plus staffing changes (`[[staffing.add]]`) and the replay
//! model's knobs (`[replay]`). Everything is validated before anything runs; an
//! unknown key or a bad value is refused naming the key.

use std::collections::BTreeMap;

use chrono::NaiveTime;
use frontdoor_actors::event::Presence;
use frontdoor_actors::ids::SiteId;
use frontdoor_actors::routing::router::AgentUpdate;
use frontdoor_actors::routing::RoutingConfig;
use serde::Deserialize;
use serde_json::Value;

use super::engine::ModelSettings;
use crate::runtime::validate_change;

/// Agents added for a skill at a site, every day of the window, from..to (UTC).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddAgents {
    /// Site they work at.
    pub site: String,
    /// Skill they take (proficiency `proficiency`).
    pub skill: String,
    /// How many.
    pub agents: u32,
    /// From, `HH:MM` UTC.
    pub from: String,
    /// Until, `HH:MM` UTC (exclusive).
    pub to: String,
    /// Proficiency 1–5 (default 3).
    #[serde(default = "default_proficiency")]
    pub proficiency: u8,
    /// Capacity per channel (default voice 1, chat 2, sms 2, email 2, video 1).
    #[serde(default = "default_capacity")]
    pub capacity: BTreeMap<String, u32>,
}

fn default_proficiency() -> u8 {
    3
}

fn default_capacity() -> BTreeMap<String, u32> {
    BTreeMap::from([
        ("voice".into(), 1),
        ("chat".into(), 2),
        ("sms".into(), 2),
        ("email".into(), 2),
        ("video".into(), 1),
    ])
}

/// Staffing changes of the what-if run.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Staffing {
    /// Agents added.
    #[serde(default)]
    pub add: Vec<AddAgents>,
}

impl Staffing {
    fn validate(&self) -> Result<(), String> {
        for (n, a) in self.add.iter().enumerate() {
            let key = |k: &str| format!("staffing.add[{n}].{k}");
            if SiteId::parse(&a.site).is_err() {
                return Err(format!("{}: not a site id: {:?}", key("site"), a.site));
            }
            if a.skill.trim().is_empty() {
                return Err(format!("{}: must not be empty", key("skill")));
            }
            if !(1..=1000).contains(&a.agents) {
                return Err(format!("{}: must be 1-1000", key("agents")));
            }
            if !(1..=5).contains(&a.proficiency) {
                return Err(format!("{}: must be 1-5", key("proficiency")));
            }
            let from = hhmm(&a.from).ok_or_else(|| format!("{}: not HH:MM", key("from")))?;
            let to = hhmm(&a.to).ok_or_else(|| format!("{}: not HH:MM", key("to")))?;
            if from >= to {
                return Err(format!("{}: must be after from", key("to")));
            }
            if a.capacity.values().all(|c| *c == 0) {
                return Err(format!("{}: no channel has room", key("capacity")));
            }
        }
        Ok(())
    }

    /// The agent.state changes the added agents make in `start..=end` (ms), in time
    /// order: available at `from`, offline at `to`, every day.
    pub fn updates(&self, start: i64, end: i64) -> Vec<(i64, AgentUpdate)> {
        let mut out = Vec::new();
        let day_ms = 86_400_000;
        let first_day = start.div_euclid(day_ms);
        let last_day = end.div_euclid(day_ms);
        for (n, a) in self.add.iter().enumerate() {
            let (Some(from), Some(to), Some(site)) =
                (hhmm(&a.from), hhmm(&a.to), SiteId::parse(&a.site).ok())
            else {
                continue;
            };
            for day in first_day..=last_day {
                for k in 1..=a.agents {
                    let update = |presence| AgentUpdate {
                        agent_id: format!("whatif-{n}-{}-{}-{k}", a.site, a.skill),
                        site: site.clone(),
                        presence,
                        skills: BTreeMap::from([(a.skill.clone(), a.proficiency)]),
                        capacity: a.capacity.clone(),
                    };
                    let on = day * day_ms + from;
                    let off = day * day_ms + to;
                    if off > start && on <= end {
                        out.push((on.max(start), update(Presence::Available)));
                        out.push((off, update(Presence::Offline)));
                    }
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.agent_id.cmp(&b.1.agent_id)));
        out
    }
}

fn hhmm(s: &str) -> Option<i64> {
    let t = NaiveTime::parse_from_str(s, "%H:%M").ok()?;
    Some(i64::from(chrono::Timelike::num_seconds_from_midnight(&t)) * 1000)
}

/// A validated what-if.
#[derive(Debug, Clone)]
pub struct WhatIf {
    /// Routing thresholds of the what-if run.
    pub routing: RoutingConfig,
    /// Staffing added.
    pub staffing: Staffing,
    /// Model knobs (both runs).
    pub model: ModelSettings,
}

/// Parses and validates a TOML patch over the values in force (`current`, the
/// `GET /v1/runtime` tunables shape).
pub fn parse(toml_text: &str, current: &Value) -> Result<WhatIf, String> {
    let doc: toml::Table = toml::from_str(toml_text).map_err(|e| format!("patch: {e}"))?;
    let mut json = serde_json::to_value(&doc).map_err(|e| format!("patch: {e}"))?;
    let obj = json
        .as_object_mut()
        .ok_or_else(|| "patch: must be a table".to_string())?;
    let staffing: Staffing = match obj.remove("staffing") {
        Some(v) => serde_json::from_value(v).map_err(|e| format!("staffing: {e}"))?,
        None => Staffing::default(),
    };
    staffing.validate()?;
    let model: ModelSettings = match obj.remove("replay") {
        Some(v) => serde_json::from_value(v).map_err(|e| format!("replay: {e}"))?,
        None => ModelSettings::default(),
    };
    if !(model.answer_secs.is_finite() && (0.0..=3600.0).contains(&model.answer_secs)) {
        return Err("replay.answer_secs: must be 0-3600".into());
    }
    if !(model.bot_turn_secs.is_finite() && (1.0..=3600.0).contains(&model.bot_turn_secs)) {
        return Err("replay.bot_turn_secs: must be 1-3600".into());
    }
    if !(model.tick_secs.is_finite() && (0.1..=60.0).contains(&model.tick_secs)) {
        return Err("replay.tick_secs: must be 0.1-60".into());
    }
    let change = validate_change(current, &json)?;
    Ok(WhatIf {
        routing: change.routing,
        staffing,
        model,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn current() -> Value {
        json!({
            "routing": RoutingConfig::default(),
            "supervision": {
                "patient": frontdoor_actors::supervision::SupervisionPolicy::default(),
                "tasks": frontdoor_actors::supervision::SupervisionPolicy::default(),
            }
        })
    }

    #[test]
    fn a_patch_changes_the_bot_hand_off_and_adds_agents() {
        let w = parse(
            "[routing.frustration]\nbot_handoff_after_exchanges = 3\n\n\
             [[staffing.add]]\nsite = \"north\"\nskill = \"nurse_advice\"\nagents = 2\nfrom = \"08:00\"\nto = \"11:00\"\n",
            &current(),
        )
        .unwrap();
        assert_eq!(w.routing.frustration.bot_handoff_after_exchanges, 3);
        let ups = w.staffing.updates(0, 86_400_000 - 1);
        assert_eq!(ups.len(), 4);
        assert_eq!(ups[0].0, 8 * 3_600_000);
        assert_eq!(ups[3].0, 11 * 3_600_000);
        assert_eq!(ups[3].1.presence, Presence::Offline);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_naming_the_key() {
        let e = parse("[routing]\nofer_timeout_secs = 3\n", &current()).unwrap_err();
        assert!(e.contains("ofer_timeout_secs"), "{e}");
        let e = parse("[routing]\noffer_timeout_secs = 0\n", &current()).unwrap_err();
        assert!(e.contains("offer_timeout_secs"), "{e}");
        let e = parse("[routng]\nx = 1\n", &current()).unwrap_err();
        assert!(e.contains("routng"), "{e}");
        let e = parse(
            "[[staffing.add]]\nsite = \"north\"\nskill = \"x\"\nagents = 2\nfrom = \"11:00\"\nto = \"08:00\"\n",
            &current(),
        )
        .unwrap_err();
        assert!(e.contains("staffing.add[0].to"), "{e}");
        let e = parse(
            "[[staffing.add]]\nsite = \"north\"\nskil = \"x\"\n",
            &current(),
        )
        .unwrap_err();
        assert!(e.contains("skil"), "{e}");
        let e = parse("[replay]\nanswer_secs = -1\n", &current()).unwrap_err();
        assert!(e.contains("replay.answer_secs"), "{e}");
    }
}
