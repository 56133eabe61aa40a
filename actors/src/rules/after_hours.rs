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

use chrono::{DateTime, NaiveDate, Utc, Weekday};
use serde::{Deserialize, Serialize};

use crate::ids::SiteId;
use crate::sites::{OpeningHours, Site, SiteDirectory};

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
    /// Off: every queue takes contacts at any hour (the hours are still shown).
    pub enabled: bool,
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
            enabled: true,
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

    /// Refuses impossible or overlapping queue hours and bad holiday dates (naming
    /// the key: `queues.north.billing.hours.mon: ...`), an empty on-call skill, and a
    /// skill in both lists.
    pub fn validate(&self) -> Result<(), String> {
        for (key, q) in &self.queues {
            OpeningHours::parse(&q.hours, &format!("queues.{key}.hours"))?;
            holidays(&q.holidays, &format!("queues.{key}.holidays"))?;
        }
        self.validate_names()
    }

    fn validate_names(&self) -> Result<(), String> {
        if self.on_call_skill.trim().is_empty() {
            return Err("on_call_skill must not be empty".into());
        }
        if let Some(s) = self
            .clinical_skills
            .intersection(&self.self_service_skills)
            .next()
        {
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

fn holidays(dates: &[String], key: &str) -> Result<Vec<NaiveDate>, String> {
    dates
        .iter()
        .map(|d| {
            NaiveDate::parse_from_str(d.trim(), "%Y-%m-%d")
                .map_err(|_| format!("{key}: {d:?} is not a date (YYYY-MM-DD)"))
        })
        .collect()
}

/// Whether a queue is open now, and when it next opens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOpen {
    /// Open now.
    pub open: bool,
    /// The next opening (now when open; None: no opening within a year).
    pub next_opening: Option<DateTime<Utc>>,
    /// Where the hours come from: `queue` (its own), `site`, or `always` (none configured).
    pub hours_from: &'static str,
}

fn has_hours(h: &OpeningHours) -> bool {
    [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ]
    .iter()
    .any(|d| !h.on(*d).is_empty())
}

/// The hours of queue (site, skill) at `at`: its own hours (in its site's time zone,
/// closed on its own and its site's holidays), else its site's, else always open.
pub fn queue_open(
    sites: &SiteDirectory,
    site: &SiteId,
    skill: &str,
    cfg: &AfterHoursConfig,
    at: DateTime<Utc>,
) -> QueueOpen {
    let base = sites.get(site);
    if let Some((key, q)) = cfg.queue_hours(site.as_str(), skill) {
        // Validated when the configuration was loaded: a failure here cannot happen,
        // and would leave the queue open rather than closed.
        if let (Ok(hours), Ok(extra)) = (
            OpeningHours::parse(&q.hours, &key),
            holidays(&q.holidays, &key),
        ) {
            let mut s = base.cloned().unwrap_or_else(Site::utc);
            s.hours = hours;
            s.holidays.extend(extra);
            s.holidays.sort();
            s.holidays.dedup();
            return QueueOpen {
                open: s.is_open(at),
                next_opening: s.next_opening(at),
                hours_from: "queue",
            };
        }
    }
    match base {
        Some(s) if has_hours(&s.hours) => QueueOpen {
            open: s.is_open(at),
            next_opening: s.next_opening(at),
            hours_from: "site",
        },
        _ => QueueOpen {
            open: true,
            next_opening: Some(at),
            hours_from: "always",
        },
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
        assert_eq!(
            policy("scheduling", &cfg),
            AfterHours::SelfServiceOrCallback
        );
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
        assert_eq!(
            cfg.queue_hours("north", "billing").unwrap().0,
            "north.billing"
        );
        assert_eq!(cfg.queue_hours("south", "billing").unwrap().0, "billing");
        assert!(cfg.queue_hours("south", "scheduling").is_none());
    }

    fn north_dir(hours: &str, holidays: &str) -> SiteDirectory {
        SiteDirectory::from_config(&toml_like(hours, holidays)).unwrap()
    }

    fn toml_like(hours: &str, holidays: &str) -> BTreeMap<String, crate::sites::SiteConfig> {
        let mut c = crate::sites::SiteConfig {
            time_zone: "America/Chicago".into(),
            ..Default::default()
        };
        if !hours.is_empty() {
            for d in ["mon", "tue", "wed", "thu", "fri"] {
                c.hours.insert(d.into(), vec![hours.into()]);
            }
        }
        if !holidays.is_empty() {
            c.holidays.push(holidays.into());
        }
        BTreeMap::from([("north".to_string(), c)])
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_queue_follows_its_site_s_hours_in_local_time_and_a_holiday_closes_it() {
        let cfg = AfterHoursConfig::default();
        let north = SiteId::parse("north").unwrap();
        let sites = north_dir("08:00-17:00", "2026-12-24");
        // Tue 1 Dec 2026 14:30 UTC = 08:30 CST: open.
        let q = queue_open(&sites, &north, "billing", &cfg, at("2026-12-01T14:30:00Z"));
        assert!(q.open && q.hours_from == "site");
        // 13:30 UTC = 07:30 CST: closed, opens at 08:00 CST = 14:00 UTC.
        let q = queue_open(&sites, &north, "billing", &cfg, at("2026-12-01T13:30:00Z"));
        assert!(!q.open);
        assert_eq!(q.next_opening, Some(at("2026-12-01T14:00:00Z")));
        // Thu 24 Dec, a holiday: closed all day; opens Fri 25 Dec 08:00 CST.
        let q = queue_open(&sites, &north, "billing", &cfg, at("2026-12-24T16:00:00Z"));
        assert!(!q.open);
        assert_eq!(q.next_opening, Some(at("2026-12-25T14:00:00Z")));
    }

    #[test]
    fn a_queue_s_own_hours_and_holidays_win_and_a_site_without_hours_is_always_open() {
        let mut cfg = AfterHoursConfig::default();
        cfg.queues.insert(
            "north.billing".into(),
            QueueHours {
                hours: BTreeMap::from([("tue".into(), vec!["10:00-12:00".into()])]),
                holidays: vec!["2026-12-08".into()],
            },
        );
        let north = SiteId::parse("north").unwrap();
        let sites = north_dir("08:00-17:00", "");
        // 08:30 CST: the site is open, billing not yet.
        let q = queue_open(&sites, &north, "billing", &cfg, at("2026-12-01T14:30:00Z"));
        assert!(!q.open && q.hours_from == "queue");
        assert_eq!(q.next_opening, Some(at("2026-12-01T16:00:00Z")));
        // The queue's own holiday (Tue 8 Dec) skips to Tue 15 Dec.
        let q = queue_open(&sites, &north, "billing", &cfg, at("2026-12-07T18:00:00Z"));
        assert_eq!(q.next_opening, Some(at("2026-12-15T16:00:00Z")));
        // Scheduling follows the site.
        assert!(
            queue_open(
                &sites,
                &north,
                "scheduling",
                &cfg,
                at("2026-12-01T14:30:00Z")
            )
            .open
        );
        // A site the directory does not know: always open.
        let south = SiteId::parse("south").unwrap();
        let q = queue_open(
            &sites,
            &south,
            "scheduling",
            &cfg,
            at("2026-12-01T03:00:00Z"),
        );
        assert!(q.open && q.hours_from == "always");
    }

    #[test]
    fn overlapping_or_impossible_queue_hours_are_refused_with_the_key() {
        let mut cfg = AfterHoursConfig::default();
        cfg.queues.insert(
            "north.billing".into(),
            QueueHours {
                hours: BTreeMap::from([(
                    "mon".into(),
                    vec!["08:00-12:00".into(), "11:00-15:00".into()],
                )]),
                holidays: vec![],
            },
        );
        let e = cfg.validate().unwrap_err();
        assert!(e.starts_with("queues.north.billing.hours.mon"), "{e}");
        cfg.queues.get_mut("north.billing").unwrap().hours =
            BTreeMap::from([("mon".into(), vec!["17:00-08:00".into()])]);
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("closes before it opens"));
        cfg.queues.get_mut("north.billing").unwrap().hours = BTreeMap::new();
        cfg.queues.get_mut("north.billing").unwrap().holidays = vec!["2026-13-01".into()];
        assert!(cfg
            .validate()
            .unwrap_err()
            .starts_with("queues.north.billing.holidays"));
    }

    #[test]
    fn contradictory_lists_are_refused() {
        let mut cfg = AfterHoursConfig::default();
        cfg.self_service_skills.insert("nurse_advice".into());
        assert!(cfg.validate_names().unwrap_err().contains("nurse_advice"));
    }
}
