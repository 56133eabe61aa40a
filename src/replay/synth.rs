//! A synthetic recorded day of a three-site system (north, south, east), for the
//! replay benchmark and the worked example of docs/whatif.md: agents on shifts with
//! a break, voice, chat and bot arrivals with a morning peak, bot sessions that
//! resolve or hand over, answers, handle and wrap-up times, abandons. Deterministic
//! for a seed. It is a recording as the runtime would store it, not a run of the
//! router: its answers name an agent with the skill, which a replay follows where
//! its own decisions agree and models where they do not.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::Window;
use crate::store::replay::RecordedEvent;

const SITES: [&str; 3] = ["north", "south", "east"];
const SKILLS: [&str; 4] = ["scheduling", "billing", "nurse_advice", "pharmacy"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn exp(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

struct Day {
    events: Vec<(i64, u64, String, Value)>,
    n: u64,
}

impl Day {
    fn push(&mut self, at: i64, patient: String, body: Value) {
        self.n += 1;
        self.events.push((at, self.n, patient, body));
    }
}

fn iso(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn id(seed: u64, n: u64) -> String {
    Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("synth:{seed}:{n}").as_bytes()).to_string()
}

/// Arrivals per hour relative to the day's mean (07:00–19:00, Monday-like peak).
const PROFILE: [f64; 12] = [1.1, 1.7, 1.6, 1.3, 1.1, 0.9, 1.0, 0.9, 0.8, 0.7, 0.5, 0.4];

/// A day starting at midnight `day` (UTC) with about `contacts_per_site` contacts
/// at each of the three sites (4,500 a site make about 50,000 events).
pub fn day(seed: u64, day: DateTime<Utc>, contacts_per_site: u32) -> Window {
    let midnight = day.timestamp_millis() - day.timestamp_millis().rem_euclid(86_400_000);
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut d = Day {
        events: Vec::new(),
        n: 0,
    };
    let hour = 3_600_000i64;
    let ev = |d: &mut Day, at: i64, patient: &str, mut body: Value| {
        body["id"] = json!(id(seed, d.n + 1));
        body["occurred_at"] = json!(iso(at));
        d.push(at, patient.to_string(), body);
    };
    // Agents: 22 a site, two skills each, shifts from 07, 08, 09 or 11 for 8 hours
    // with a 30-minute break in the middle.
    let mut agents: Vec<(String, usize, Vec<&str>, i64, i64)> = Vec::new();
    for (s, site) in SITES.iter().enumerate() {
        for a in 0..22usize {
            let skills = vec![SKILLS[a % 4], SKILLS[(a / 4 + 1 + a) % 4]];
            let start = midnight + [7, 8, 9, 11][a % 4] * hour;
            let end = start + 8 * hour;
            let agent = format!("{site}-agent-{a:02}");
            let skill_map: serde_json::Map<String, Value> = skills
                .iter()
                .enumerate()
                .map(|(k, sk)| (sk.to_string(), json!(if k == 0 { 4 } else { 2 })))
                .collect();
            let state = |st: &str| {
                json!({"type": "agent.state", "site": site, "channel": "desktop", "agent_id": agent,
                       "state": st, "skills": skill_map, "capacity": {"voice": 1, "chat": 2}})
            };
            let brk = start + 4 * hour;
            ev(&mut d, start, "", state("available"));
            ev(&mut d, brk, "", state("away"));
            ev(&mut d, brk + hour / 2, "", state("available"));
            ev(&mut d, end, "", state("offline"));
            agents.push((agent, s, skills, start, end));
        }
    }
    let mean_per_hour = f64::from(contacts_per_site) / 12.0;
    let mut c = 0u64;
    for (s, site) in SITES.iter().enumerate() {
        for (h, f) in PROFILE.iter().enumerate() {
            let n = (mean_per_hour * f).round() as u64;
            for _ in 0..n {
                c += 1;
                let at = midnight + (7 + h as i64) * hour + rng.below(hour as u64) as i64;
                let contact = format!("syn-{c}");
                let patient = Uuid::new_v5(
                    &Uuid::NAMESPACE_OID,
                    format!("synth-patient:{seed}:{}", rng.below(20_000)).as_bytes(),
                )
                .to_string();
                let mrn = format!("MRN-{}", &patient[..8]);
                let skill = SKILLS[(rng.below(100) as usize * SKILLS.len()) / 100];
                let roll = rng.unit();
                let channel = if roll < 0.45 {
                    "voice"
                } else if roll < 0.7 {
                    "chat"
                } else {
                    "iva"
                };
                let base = |ty: &str, ch: &str| json!({"type": ty, "site": site, "channel": ch, "patient": {"mrn": mrn}, "contact_id": contact});
                let mut start = base("contact.started", channel);
                start["skill"] = json!(skill);
                ev(&mut d, at, &patient, start);
                let mut queued_at = at;
                let mut human_channel = channel;
                if channel == "iva" {
                    // Bot turns 20 s apart: each resolves with 45 %; two failures hand over.
                    let mut t = at;
                    let mut failed = 0;
                    let mut resolved = false;
                    while failed < 2 {
                        t += 15_000 + rng.below(10_000) as i64;
                        let ok = rng.unit() < 0.45;
                        let mut turn = base("bot.turn", "iva");
                        turn["resolved"] = json!(ok);
                        turn["patient_text"] = json!("question");
                        turn["bot_text"] = json!("answer");
                        ev(&mut d, t, &patient, turn);
                        if ok {
                            resolved = true;
                            break;
                        }
                        failed += 1;
                    }
                    if resolved {
                        let mut end = base("contact.ended", "iva");
                        end["disposition"] = json!("resolved_by_bot");
                        ev(&mut d, t + 5_000, &patient, end);
                        continue;
                    }
                    queued_at = t;
                    human_channel = "chat";
                }
                let wait = rng.exp(40.0);
                let patience = rng.exp(150.0);
                if patience < wait {
                    ev(
                        &mut d,
                        queued_at + (patience * 1000.0) as i64,
                        &patient,
                        base("contact.abandoned", channel),
                    );
                    continue;
                }
                let answered = queued_at + (wait * 1000.0) as i64;
                let on_shift: Vec<&(String, usize, Vec<&str>, i64, i64)> = agents
                    .iter()
                    .filter(|a| {
                        a.1 == s && a.2.contains(&skill) && a.3 <= answered && answered < a.4
                    })
                    .collect();
                let Some(agent) = on_shift
                    .get(rng.below(on_shift.len() as u64) as usize)
                    .map(|a| a.0.clone())
                else {
                    ev(
                        &mut d,
                        queued_at + (patience * 1000.0) as i64,
                        &patient,
                        base("contact.abandoned", channel),
                    );
                    continue;
                };
                let desk = |ty: &str| json!({"type": ty, "site": site, "channel": "desktop", "agent_id": agent, "contact_id": contact});
                ev(&mut d, answered, "", desk("offer.accepted"));
                let handle = if human_channel == "voice" {
                    120.0 + rng.exp(240.0)
                } else {
                    60.0 + rng.exp(300.0)
                };
                let ended = answered + (handle * 1000.0) as i64;
                let mut end = base("contact.ended", channel);
                end["agent"] = json!(agent);
                ev(&mut d, ended, &patient, end);
                ev(
                    &mut d,
                    ended + 20_000 + rng.below(40_000) as i64,
                    "",
                    desk("contact.wrapped"),
                );
            }
        }
    }
    d.events.sort_by_key(|(at, n, _, _)| (*at, *n));
    let events = d
        .events
        .into_iter()
        .map(|(at, _, patient, body)| RecordedEvent {
            patient_id: patient,
            occurred_at_ms: at,
            received_at_ms: at,
            body: body.to_string(),
            applied_seq: None,
            applied_at_ms: None,
            applied_at_us: None,
            tick: false,
        })
        .collect();
    Window {
        since: iso(midnight),
        until: iso(midnight + 86_400_000),
        events,
    }
}
