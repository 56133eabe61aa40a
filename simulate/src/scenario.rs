//! The simulated health system: sites, skills, agent rosters, the channel and
//! intent mix, and builders for the events the runtime's contract defines.

use chrono::Utc;
use serde_json::{json, Map, Value};

use super::rng::Rng;

/// One site of the health system.
#[derive(Debug, Clone)]
pub struct Site {
    /// Site id (a bounded label on the runtime's metrics).
    pub id: &'static str,
    /// Contacts on a midweek day.
    pub daily_volume: f64,
    /// Agents on the floor.
    pub agents: usize,
    /// Simulated minutes after the start before its agents sign in (a team
    /// huddle before opening; the other sites cover its queues meanwhile).
    pub signs_in_after_mins: f64,
}

/// The sites: a large hospital, a mid-size one and a small clinic that
/// leans on the others when it is busy, and while its team is in the morning
/// huddle (overflow of scheduling and billing).
pub const SITES: [Site; 3] = [
    Site {
        id: "north",
        daily_volume: 900.0,
        agents: 12,
        signs_in_after_mins: 0.0,
    },
    Site {
        id: "south",
        daily_volume: 600.0,
        agents: 8,
        signs_in_after_mins: 0.0,
    },
    Site {
        id: "east",
        daily_volume: 350.0,
        agents: 4,
        signs_in_after_mins: 30.0,
    },
];

/// One skill (department) patients ask for.
#[derive(Debug, Clone, Copy)]
pub struct SkillSpec {
    /// Skill name as the runtime knows it.
    pub skill: &'static str,
    /// The intent a virtual agent or IVR detects for it.
    pub intent: &'static str,
    /// Share of contacts on a normal day.
    pub share: f64,
    /// Share of contacts during a flu-season surge.
    pub surge_share: f64,
    /// Mean handle time in simulated seconds (voice; chat takes longer).
    pub aht_secs: f64,
    /// Chance the virtual agent resolves it on the first turn.
    pub bot_first_turn: f64,
    /// The self-service intent a virtual agent answers it with
    /// (`docs/contract.md`, "Virtual agents"); `None`: the bot has no answer for
    /// it and hands over after failing.
    pub bot_intent: Option<&'static str>,
    /// True when the bot hands it over at once by design (billing goes to people).
    pub bot_hands_over: bool,
}

/// Share of virtual-agent turns in which the patient asks for a person.
pub const ASKS_FOR_PERSON: f64 = 0.04;
/// Share of symptom contacts whose first words carry a red flag (a safety net the
/// runtime raises to emergency).
pub const RED_FLAG_SHARE: f64 = 0.01;

/// The skills.
pub const SKILLS: [SkillSpec; 4] = [
    SkillSpec {
        skill: "scheduling",
        intent: "appointment",
        share: 0.42,
        surge_share: 0.25,
        aht_secs: 240.0,
        bot_first_turn: 0.8,
        bot_intent: Some("appointment.next"),
        bot_hands_over: false,
    },
    SkillSpec {
        skill: "nurse_advice",
        intent: "symptoms",
        share: 0.22,
        surge_share: 0.55,
        aht_secs: 420.0,
        bot_first_turn: 0.15,
        bot_intent: None,
        bot_hands_over: false,
    },
    SkillSpec {
        skill: "pharmacy",
        intent: "prescription",
        share: 0.2,
        surge_share: 0.12,
        aht_secs: 300.0,
        bot_first_turn: 0.7,
        bot_intent: Some("refill.status"),
        bot_hands_over: false,
    },
    SkillSpec {
        skill: "billing",
        intent: "billing",
        share: 0.16,
        surge_share: 0.08,
        aht_secs: 360.0,
        bot_first_turn: 0.0,
        bot_intent: Some("billing"),
        bot_hands_over: true,
    },
];

/// Channels patients start contacts on, with their share and mean patience in
/// simulated seconds (how long they wait for a human before giving up).
pub const CHANNELS: [(&str, f64, f64); 6] = [
    ("voice", 0.44, 100.0),
    ("chat", 0.2, 240.0),
    ("sms", 0.12, 1800.0),
    ("email", 0.05, 7200.0),
    ("iva", 0.14, 120.0),
    ("video", 0.05, 180.0),
];

/// Per-channel capacity of every agent (concurrent contacts).
pub fn capacity() -> Value {
    json!({"voice": 1, "video": 1, "chat": 3, "sms": 3, "email": 5})
}

/// One agent on the roster.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// Agent id (never a metric label; the runtime keys agents by it).
    pub id: String,
    /// Home site.
    pub site: &'static str,
    /// Skill → proficiency 1–5.
    pub skills: Map<String, Value>,
}

/// The roster of a site: everyone schedules and most handle pharmacy and
/// billing; a third are nurses (nurse advice, proficiency 3–5).
pub fn roster(site: &Site, rng: &mut Rng) -> Vec<AgentSpec> {
    (0..site.agents)
        .map(|i| {
            let mut skills = Map::new();
            let prof = |rng: &mut Rng, lo: u64| lo + rng.below((6 - lo) as usize) as u64;
            skills.insert("scheduling".into(), json!(prof(rng, 2)));
            if i % 3 == 0 {
                skills.insert("nurse_advice".into(), json!(prof(rng, 3)));
            }
            if i % 3 != 0 || i % 2 == 0 {
                skills.insert("pharmacy".into(), json!(prof(rng, 1)));
            }
            if i % 2 == 1 || i % 4 == 0 {
                skills.insert("billing".into(), json!(prof(rng, 1)));
            }
            AgentSpec {
                id: format!("{}-agent-{:02}", site.id, i + 1),
                site: site.id,
                skills,
            }
        })
        .collect()
}

/// A synthetic patient (identifiers only; no real data).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Patient {
    /// Medical record number.
    pub mrn: String,
    /// E.164 phone.
    pub phone: String,
}

impl Patient {
    /// The `n`th synthetic patient of site number `site_no`.
    pub fn new(site_no: usize, n: u64) -> Patient {
        Patient {
            mrn: format!("SIM-{}{:07}", site_no + 1, n),
            phone: format!("+1555{}{:06}", site_no + 1, n % 1_000_000),
        }
    }

    /// The `patient` object of an envelope (a voice/SMS contact knows the phone,
    /// the others the MRN; both link them).
    pub fn identifiers(&self, channel: &str) -> Value {
        match channel {
            "voice" | "sms" => json!({"phone": self.phone, "mrn": self.mrn}),
            _ => json!({"mrn": self.mrn}),
        }
    }
}

/// Builds event envelopes with reproducible ids.
pub struct Events<'a> {
    /// The id source.
    pub rng: &'a mut Rng,
}

impl Events<'_> {
    /// An envelope of `event_type` with `extra` fields beside the envelope's.
    pub fn envelope(&mut self, event_type: &str, site: &str, channel: &str, extra: Value) -> Value {
        let mut v = json!({
            "id": self.rng.uuid().to_string(),
            "type": event_type,
            "occurred_at": Utc::now().to_rfc3339(),
            "site": site,
            "channel": channel,
        });
        if let (Value::Object(obj), Value::Object(extra)) = (&mut v, extra) {
            obj.extend(extra);
        }
        v
    }

    /// A patient contact event.
    pub fn contact(
        &mut self,
        event_type: &str,
        site: &str,
        channel: &str,
        patient: &Patient,
        contact_id: &str,
        extra: Value,
    ) -> Value {
        let mut v = self.envelope(event_type, site, channel, extra);
        v["patient"] = patient.identifiers(channel);
        v["contact_id"] = json!(contact_id);
        v
    }

    /// An `agent.state` event from a desktop.
    pub fn agent_state(&mut self, agent: &AgentSpec, state: &str) -> Value {
        self.envelope(
            "agent.state",
            agent.site,
            "desktop",
            json!({
                "agent_id": agent.id,
                "state": state,
                "skills": agent.skills,
                "capacity": capacity(),
            }),
        )
    }

    /// `offer.accepted`, `offer.declined` or `contact.wrapped` from a desktop.
    pub fn desktop(
        &mut self,
        event_type: &str,
        site: &str,
        agent_id: &str,
        contact_id: &str,
    ) -> Value {
        self.envelope(
            event_type,
            site,
            "desktop",
            json!({"agent_id": agent_id, "contact_id": contact_id}),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skill_and_channel_shares_sum_to_one() {
        let s: f64 = SKILLS.iter().map(|s| s.share).sum();
        let surge: f64 = SKILLS.iter().map(|s| s.surge_share).sum();
        let c: f64 = CHANNELS.iter().map(|c| c.1).sum();
        assert!((s - 1.0).abs() < 1e-9 && (surge - 1.0).abs() < 1e-9 && (c - 1.0).abs() < 1e-9);
    }

    #[test]
    fn every_skill_is_staffed_at_every_site() {
        let mut rng = Rng::new(1);
        for site in &SITES {
            let r = roster(site, &mut rng);
            for s in &SKILLS {
                assert!(
                    r.iter().any(|a| a.skills.contains_key(s.skill)),
                    "{} lacks {}",
                    site.id,
                    s.skill
                );
            }
        }
    }

    #[test]
    fn synthetic_patients_have_valid_looking_identifiers() {
        let p = Patient::new(2, 42);
        assert_eq!(p.mrn, "SIM-30000042");
        assert!(p.phone.starts_with("+1555") && p.phone.len() == 12);
    }
}
