//! # Frustration signals — the patient actor decides, the queue obeys
//!
//! A single contact says little about how a patient is doing; their *journey*
//! says a lot. A patient who has called, chatted and called again within two
//! days is not a routine caller, whatever channel they use this time. A
//! patient bounced between three teams should go back to whoever last owned
//! the problem, not to a fourth stranger. A virtual agent that has failed to
//! help twice should stop trying. Someone with an appointment tomorrow, or an
//! unanswered prescription question, cannot wait as long as someone asking
//! for a copy of an invoice.
//!
//! This module turns those observations into a deterministic [`Assessment`]:
//! a numeric score (added to the contact's priority as a boost, see
//! `super::priority`), a [`Level`], and the list of [`FiredSignal`]s with the
//! [`Action`] each one asks for. It is a pure function of [`JourneyFacts`],
//! which the patient actor builds from the journey it owns. The patient actor
//! is the single place where frustration is judged; queues never re-derive
//! it, they only apply the score and obey the actions. That keeps the
//! decision explainable (every boost has a signal and a human-readable
//! detail) and consistent across channels and sites.
//!
//! | signal | fires when (defaults) | action | boost |
//! | --- | --- | --- | --- |
//! | [`Signal::RepeatContacts`] | ≥ 3 contacts (incl. this one) within 48 h, any channel | [`Action::MarkUrgent`] | 500 |
//! | [`Signal::BotNotResolving`] | ≥ 2 unresolved virtual-agent exchanges | [`Action::HandToHuman`] | 100 |
//! | [`Signal::RepeatedTransfers`] | ≥ 2 transfers on this issue within 7 days | [`Action::RouteToLastOwner`] | 200 |
//! | [`Signal::AbandonedThenReturned`] | a contact abandoned in queue within 24 h | [`Action::Boost`] | 150 |
//! | [`Signal::AppointmentSoon`] | an appointment starts within 24 h | [`Action::Boost`] | 100 |
//! | [`Signal::OpenPrescriptionQuestion`] | a prescription question is open | [`Action::Boost`] | 100 |
//!
//! The level is `urgent` if any fired signal marks the contact urgent or the
//! score reaches `urgent_score`, `elevated` if it reaches `elevated_score`,
//! `normal` otherwise.
//!
//! Privacy: [`FiredSignal::detail`] only ever contains counts and time
//! windows ("3 contacts within 48h"), never identifiers or patient data, so
//! it is safe to log, emit as an event and show on supervisor dashboards.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// Largest boost a configuration may assign to one signal. Keeps priority
/// arithmetic far away from integer overflow and catches typos (an extra
/// zero or three) on live reload.
pub const MAX_BOOST: i64 = 1_000_000;

/// Longest look-back or look-ahead window a configuration may use (30 days).
pub const MAX_WINDOW_SECS: u32 = 30 * 24 * 3600;

/// Thresholds and boosts for the frustration signals. Reloaded live by the
/// runtime; call [`FrustrationConfig::validate`] before swapping it in.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct FrustrationConfig {
    /// Number of contacts, counting the current one, that makes the patient
    /// a repeat contact (default 3). Must be at least 2.
    pub repeat_contacts_threshold: u32,
    /// Look-back window for repeat contacts, in seconds (default 48 h).
    pub repeat_contacts_window_secs: u32,
    /// Boost for [`Signal::RepeatContacts`] (default 500).
    pub repeat_contacts_boost: i64,
    /// Unresolved virtual-agent exchanges after which the bot must hand the
    /// patient to a human (default 2). Must be at least 1.
    pub bot_handoff_after_exchanges: u32,
    /// Boost for [`Signal::BotNotResolving`] (default 100).
    pub bot_not_resolving_boost: i64,
    /// Transfers on the same issue that trigger routing back to the last
    /// owner (default 2). Must be at least 1.
    pub transfers_threshold: u32,
    /// Look-back window for summing transfers across earlier contacts on
    /// the same issue, in seconds (default 7 days).
    pub transfers_window_secs: u32,
    /// Boost for [`Signal::RepeatedTransfers`] (default 200).
    pub repeated_transfers_boost: i64,
    /// Look-back window for an abandoned earlier contact, in seconds
    /// (default 24 h).
    pub abandoned_window_secs: u32,
    /// Boost for [`Signal::AbandonedThenReturned`] (default 150).
    pub abandoned_boost: i64,
    /// Look-ahead window for an upcoming appointment, in seconds
    /// (default 24 h).
    pub appointment_window_secs: u32,
    /// Boost for [`Signal::AppointmentSoon`] (default 100).
    pub appointment_boost: i64,
    /// Boost for [`Signal::OpenPrescriptionQuestion`] (default 100).
    pub prescription_boost: i64,
    /// Score from which the level is [`Level::Elevated`] (default 100).
    pub elevated_score: i64,
    /// Score from which the level is [`Level::Urgent`] (default 500). Must
    /// be greater than `elevated_score`.
    pub urgent_score: i64,
}

impl Default for FrustrationConfig {
    fn default() -> Self {
        Self {
            repeat_contacts_threshold: 3,
            repeat_contacts_window_secs: 48 * 3600,
            repeat_contacts_boost: 500,
            bot_handoff_after_exchanges: 2,
            bot_not_resolving_boost: 100,
            transfers_threshold: 2,
            transfers_window_secs: 7 * 24 * 3600,
            repeated_transfers_boost: 200,
            abandoned_window_secs: 24 * 3600,
            abandoned_boost: 150,
            appointment_window_secs: 24 * 3600,
            appointment_boost: 100,
            prescription_boost: 100,
            elevated_score: 100,
            urgent_score: 500,
        }
    }
}

impl FrustrationConfig {
    /// Rejects configurations that cannot be meant: zero or huge windows,
    /// thresholds that would fire on every contact, negative or absurd
    /// boosts, and `elevated_score >= urgent_score`. The error names the
    /// offending field.
    pub fn validate(&self) -> Result<(), String> {
        if self.repeat_contacts_threshold < 2 {
            return Err(format!(
                "repeat_contacts_threshold must be at least 2 (got {}); 1 would mark every contact urgent",
                self.repeat_contacts_threshold
            ));
        }
        if self.bot_handoff_after_exchanges == 0 {
            return Err(
                "bot_handoff_after_exchanges must be at least 1 (0 would never let the bot answer)"
                    .to_string(),
            );
        }
        if self.transfers_threshold == 0 {
            return Err("transfers_threshold must be at least 1".to_string());
        }
        check_window(
            "repeat_contacts_window_secs",
            self.repeat_contacts_window_secs,
        )?;
        check_window("transfers_window_secs", self.transfers_window_secs)?;
        check_window("abandoned_window_secs", self.abandoned_window_secs)?;
        check_window("appointment_window_secs", self.appointment_window_secs)?;
        check_boost("repeat_contacts_boost", self.repeat_contacts_boost)?;
        check_boost("bot_not_resolving_boost", self.bot_not_resolving_boost)?;
        check_boost("repeated_transfers_boost", self.repeated_transfers_boost)?;
        check_boost("abandoned_boost", self.abandoned_boost)?;
        check_boost("appointment_boost", self.appointment_boost)?;
        check_boost("prescription_boost", self.prescription_boost)?;
        if self.elevated_score <= 0 {
            return Err(format!(
                "elevated_score must be positive (got {})",
                self.elevated_score
            ));
        }
        if self.urgent_score <= self.elevated_score {
            return Err(format!(
                "urgent_score ({}) must be greater than elevated_score ({})",
                self.urgent_score, self.elevated_score
            ));
        }
        if self.urgent_score > MAX_BOOST.saturating_mul(10) {
            return Err(format!(
                "urgent_score ({}) is unreasonably large (max {})",
                self.urgent_score,
                MAX_BOOST.saturating_mul(10)
            ));
        }
        Ok(())
    }
}

fn check_window(field: &str, secs: u32) -> Result<(), String> {
    if secs == 0 {
        return Err(format!("{field} must be greater than 0"));
    }
    if secs > MAX_WINDOW_SECS {
        return Err(format!(
            "{field} ({secs}s) exceeds the maximum of {MAX_WINDOW_SECS}s (30 days)"
        ));
    }
    Ok(())
}

fn check_boost(field: &str, boost: i64) -> Result<(), String> {
    if boost < 0 {
        return Err(format!("{field} must not be negative (got {boost})"));
    }
    if boost > MAX_BOOST {
        return Err(format!(
            "{field} ({boost}) exceeds the maximum of {MAX_BOOST}"
        ));
    }
    Ok(())
}

/// One contact of the patient's journey, as the patient actor knows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContactFact {
    /// Contact id (opaque; never copied into signal details).
    pub id: String,
    /// When the contact started (first arrival, before any queueing).
    pub started_at: DateTime<Utc>,
    /// Channel name as used by the runtime, e.g. `"voice"`, `"chat"`, `"sms"`.
    pub channel: String,
    /// How many times this contact was transferred so far.
    pub transfers: u32,
    /// True if the patient hung up / left while waiting in a queue.
    pub abandoned: bool,
    /// True if the contact is over (handled, abandoned or closed). Carried
    /// for explainability; the current signals do not depend on it.
    pub ended: bool,
    /// Agent id of the agent who handled it last, if any.
    pub handled_by: Option<String>,
    /// Skill the contact was routed on (used as the "issue" key when summing
    /// transfers across contacts), if known.
    pub skill: Option<String>,
}

/// Who owned the patient's issue last: where a bounced patient goes back to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IssueOwner {
    /// The agent who last owned the issue, if known.
    pub agent_id: Option<String>,
    /// The skill/team queue that last owned the issue, if known.
    pub skill: Option<String>,
}

/// Everything [`assess`] needs to know, built by the patient actor from its
/// journey at the moment of the decision.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JourneyFacts {
    /// The decision time. All windows are measured from here.
    pub now: DateTime<Utc>,
    /// The contact being assessed. Always counted once as a contact.
    pub current: ContactFact,
    /// The patient's contacts, newest or oldest first (order does not
    /// matter). May include the current contact: entries whose id equals
    /// `current.id` are ignored, and duplicate ids are counted once.
    pub contacts: Vec<ContactFact>,
    /// Number of `bot.turn` exchanges in the current contact with
    /// `resolved = false` since the last resolved one.
    pub unresolved_bot_exchanges: u32,
    /// Start times of the patient's upcoming appointments. Past ones are
    /// ignored.
    pub upcoming_appointments: Vec<DateTime<Utc>>,
    /// True if the patient has an unanswered prescription question.
    pub prescription_question_open: bool,
    /// The last agent/team who owned the issue, for routing back after
    /// repeated transfers. If absent, the most recent earlier contact on the
    /// same skill that was handled by an agent is used.
    pub last_owner: Option<IssueOwner>,
}

/// The frustration signals. Serialised in `snake_case`; [`Signal::as_str`]
/// gives the same bounded label for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// Several contacts in a short window, on any channels.
    RepeatContacts,
    /// The virtual agent keeps failing to resolve.
    BotNotResolving,
    /// The patient has been transferred repeatedly on this issue.
    RepeatedTransfers,
    /// The patient gave up waiting recently and is back.
    AbandonedThenReturned,
    /// An appointment starts soon.
    AppointmentSoon,
    /// A prescription question is still open.
    OpenPrescriptionQuestion,
    /// An urgent phrase or intent (`super::red_flags`); never fired by [`assess`],
    /// added by the routing request that saw it.
    RedFlag,
}

impl Signal {
    /// Every signal, in evaluation order (handy for pre-registering metric
    /// label values).
    pub const ALL: [Signal; 7] = [
        Signal::RepeatContacts,
        Signal::BotNotResolving,
        Signal::RepeatedTransfers,
        Signal::AbandonedThenReturned,
        Signal::AppointmentSoon,
        Signal::OpenPrescriptionQuestion,
        Signal::RedFlag,
    ];

    /// Stable, bounded label value (same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::RepeatContacts => "repeat_contacts",
            Signal::BotNotResolving => "bot_not_resolving",
            Signal::RepeatedTransfers => "repeated_transfers",
            Signal::AbandonedThenReturned => "abandoned_then_returned",
            Signal::AppointmentSoon => "appointment_soon",
            Signal::OpenPrescriptionQuestion => "open_prescription_question",
            Signal::RedFlag => "red_flag",
        }
    }
}

/// How frustrated / at risk the patient is. Ordered: `Normal < Elevated <
/// Urgent`. Serialised in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// No special treatment.
    Normal,
    /// Boosted, worth watching.
    Elevated,
    /// Must be served ahead of routine work (see `urgent_floor` in
    /// `super::priority`).
    Urgent,
    /// A red flag (`super::red_flags`): served first, supervisors paged. Never
    /// reached by frustration signals alone.
    Emergency,
}

impl Level {
    /// Stable, bounded label value (same as the serde name).
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Normal => "normal",
            Level::Elevated => "elevated",
            Level::Urgent => "urgent",
            Level::Emergency => "emergency",
        }
    }
}

/// What the queue/runtime must do because of a signal. Serialised
/// internally tagged: `{"kind": "route_to_last_owner", "agent_id": ..., "skill": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Action {
    /// Only raise the priority by the boost.
    Boost,
    /// Raise the priority and treat the contact as urgent.
    MarkUrgent,
    /// Stop the virtual agent and queue for a human.
    HandToHuman,
    /// Route to whoever last owned the issue (agent first, else their skill
    /// queue). Both `None` means the owner is unknown: just boost.
    RouteToLastOwner {
        /// Agent to prefer, if known.
        agent_id: Option<String>,
        /// Skill/team queue to route to, if known.
        skill: Option<String>,
    },
}

/// One signal that fired, with its boost, the action it asks for and a
/// human-readable explanation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiredSignal {
    /// Which signal fired.
    pub signal: Signal,
    /// Priority boost contributed by this signal.
    pub boost: i64,
    /// What the runtime must do.
    pub action: Action,
    /// Explanation without patient data, e.g. `"3 contacts within 48h"`.
    pub detail: String,
}

/// Result of [`assess`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assessment {
    /// Sum of the boosts of all fired signals (the priority boost).
    pub score: i64,
    /// Overall level.
    pub level: Level,
    /// Fired signals, in [`Signal::ALL`] order.
    pub signals: Vec<FiredSignal>,
}

impl Assessment {
    /// True if `signal` fired.
    pub fn has(&self, signal: Signal) -> bool {
        self.signals.iter().any(|s| s.signal == signal)
    }

    /// True if some signal asks to take the patient away from the bot.
    pub fn wants_human(&self) -> bool {
        self.signals.iter().any(|s| s.action == Action::HandToHuman)
    }

    /// The routing target of a [`Action::RouteToLastOwner`] signal, if one
    /// fired: `(agent_id, skill)`.
    pub fn route_to_last_owner(&self) -> Option<(Option<&str>, Option<&str>)> {
        self.signals.iter().find_map(|s| match &s.action {
            Action::RouteToLastOwner { agent_id, skill } => {
                Some((agent_id.as_deref(), skill.as_deref()))
            }
            _ => None,
        })
    }
}

/// True once the virtual agent has had `bot_handoff_after_exchanges`
/// exchanges without resolving: it should hand the patient to a human now
/// rather than keep them in a loop.
pub fn bot_should_hand_off(unresolved_exchanges: u32, cfg: &FrustrationConfig) -> bool {
    unresolved_exchanges >= cfg.bot_handoff_after_exchanges
}

/// Assesses the patient's frustration from their journey. Pure and
/// deterministic: the same facts and config always give the same result.
pub fn assess(facts: &JourneyFacts, cfg: &FrustrationConfig) -> Assessment {
    let now = facts.now;
    let current = &facts.current;
    let earlier = earlier_contacts(facts);
    let mut signals = Vec::new();

    // Repeat contacts: current one + earlier ones within the window, any channel.
    let repeat_window = window(cfg.repeat_contacts_window_secs);
    let recent = 1 + earlier
        .iter()
        .filter(|c| looked_back_within(c.started_at, now, repeat_window))
        .count();
    if recent >= usize_from(cfg.repeat_contacts_threshold) {
        signals.push(FiredSignal {
            signal: Signal::RepeatContacts,
            boost: cfg.repeat_contacts_boost,
            action: Action::MarkUrgent,
            detail: format!(
                "{recent} contacts within {}",
                human_window(cfg.repeat_contacts_window_secs)
            ),
        });
    }

    // Virtual agent not resolving.
    if bot_should_hand_off(facts.unresolved_bot_exchanges, cfg) {
        signals.push(FiredSignal {
            signal: Signal::BotNotResolving,
            boost: cfg.bot_not_resolving_boost,
            action: Action::HandToHuman,
            detail: format!(
                "virtual agent unresolved after {} exchanges",
                facts.unresolved_bot_exchanges
            ),
        });
    }

    // Repeated transfers on the same issue (same skill) within the window.
    let transfer_window = window(cfg.transfers_window_secs);
    let same_issue: Vec<&ContactFact> = earlier
        .iter()
        .copied()
        .filter(|c| same_issue(c, current))
        .filter(|c| looked_back_within(c.started_at, now, transfer_window))
        .collect();
    let transfers = same_issue
        .iter()
        .fold(u64::from(current.transfers), |acc, c| {
            acc.saturating_add(u64::from(c.transfers))
        });
    if transfers >= u64::from(cfg.transfers_threshold) {
        let owner = facts
            .last_owner
            .clone()
            .or_else(|| last_owner_from_history(&same_issue));
        let (agent_id, skill) = match owner {
            Some(o) => (o.agent_id, o.skill),
            None => (None, None),
        };
        signals.push(FiredSignal {
            signal: Signal::RepeatedTransfers,
            boost: cfg.repeated_transfers_boost,
            action: Action::RouteToLastOwner { agent_id, skill },
            detail: format!(
                "{transfers} transfers on this issue within {}",
                human_window(cfg.transfers_window_secs)
            ),
        });
    }

    // Abandoned while waiting, and now back.
    let abandoned_window = window(cfg.abandoned_window_secs);
    let abandoned = earlier
        .iter()
        .filter(|c| c.abandoned && looked_back_within(c.started_at, now, abandoned_window))
        .count();
    if abandoned > 0 {
        signals.push(FiredSignal {
            signal: Signal::AbandonedThenReturned,
            boost: cfg.abandoned_boost,
            action: Action::Boost,
            detail: format!(
                "returned after {abandoned} abandoned contact{} within {}",
                if abandoned == 1 { "" } else { "s" },
                human_window(cfg.abandoned_window_secs)
            ),
        });
    }

    // Appointment soon.
    let appointment_window = window(cfg.appointment_window_secs);
    let soonest = facts
        .upcoming_appointments
        .iter()
        .filter(|&&start| start >= now && start.signed_duration_since(now) <= appointment_window)
        .min();
    if let Some(start) = soonest {
        let in_secs = start.signed_duration_since(now).num_seconds();
        signals.push(FiredSignal {
            signal: Signal::AppointmentSoon,
            boost: cfg.appointment_boost,
            action: Action::Boost,
            detail: format!(
                "appointment within {} (starts in {})",
                human_window(cfg.appointment_window_secs),
                human_eta(in_secs)
            ),
        });
    }

    // Open prescription question.
    if facts.prescription_question_open {
        signals.push(FiredSignal {
            signal: Signal::OpenPrescriptionQuestion,
            boost: cfg.prescription_boost,
            action: Action::Boost,
            detail: "open prescription question".to_string(),
        });
    }

    let score = signals
        .iter()
        .fold(0_i64, |acc, s| acc.saturating_add(s.boost));
    let marked_urgent = signals.iter().any(|s| s.action == Action::MarkUrgent);
    let level = if marked_urgent || score >= cfg.urgent_score {
        Level::Urgent
    } else if score >= cfg.elevated_score {
        Level::Elevated
    } else {
        Level::Normal
    };
    Assessment {
        score,
        level,
        signals,
    }
}

/// Earlier contacts: everything except the current one, each id once.
fn earlier_contacts(facts: &JourneyFacts) -> Vec<&ContactFact> {
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    facts
        .contacts
        .iter()
        .filter(|c| c.id != facts.current.id)
        .filter(|c| seen.insert(c.id.as_str()))
        .collect()
}

/// "Same issue" is approximated by the routing skill: the journey has no
/// issue id, and a transfer chain keeps the patient on one problem. Without a
/// skill on the current contact only its own transfers count.
fn same_issue(c: &ContactFact, current: &ContactFact) -> bool {
    match (&c.skill, &current.skill) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

fn last_owner_from_history(same_issue: &[&ContactFact]) -> Option<IssueOwner> {
    same_issue
        .iter()
        .filter(|c| c.handled_by.is_some())
        .max_by_key(|c| c.started_at)
        .map(|c| IssueOwner {
            agent_id: c.handled_by.clone(),
            skill: c.skill.clone(),
        })
}

/// True if `t` is no older than `window` before `now`. Slightly-future
/// timestamps (clock skew between services) count as within the window.
fn looked_back_within(t: DateTime<Utc>, now: DateTime<Utc>, window: Duration) -> bool {
    now.signed_duration_since(t) <= window
}

fn window(secs: u32) -> Duration {
    // Cannot panic: any u32 number of seconds is far inside TimeDelta's range.
    Duration::seconds(i64::from(secs))
}

fn usize_from(n: u32) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// "48h", "7d", "90m", "45s" — compact, for details.
fn human_window(secs: u32) -> String {
    const DAY: u32 = 86_400;
    if secs.is_multiple_of(DAY) && secs / DAY >= 3 {
        format!("{}d", secs / DAY)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

/// Rounded time until an event: "<1h" below an hour, else whole hours.
fn human_eta(secs: i64) -> String {
    if secs < 3600 {
        "<1h".to_string()
    } else {
        format!("{}h", secs / 3600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t0() -> DateTime<Utc> {
        DateTime::from_timestamp(1_736_150_400, 0).unwrap()
    }

    fn hours(h: i64) -> Duration {
        Duration::hours(h)
    }

    fn contact(id: &str, started_at: DateTime<Utc>, channel: &str) -> ContactFact {
        ContactFact {
            id: id.to_string(),
            started_at,
            channel: channel.to_string(),
            transfers: 0,
            abandoned: false,
            ended: true,
            handled_by: None,
            skill: Some("scheduling".to_string()),
        }
    }

    fn facts(current: ContactFact, contacts: Vec<ContactFact>) -> JourneyFacts {
        JourneyFacts {
            now: t0(),
            current,
            contacts,
            unresolved_bot_exchanges: 0,
            upcoming_appointments: vec![],
            prescription_question_open: false,
            last_owner: None,
        }
    }

    fn current() -> ContactFact {
        let mut c = contact("c-now", t0(), "voice");
        c.ended = false;
        c
    }

    #[test]
    fn first_contact_with_nothing_special_is_normal() {
        let a = assess(&facts(current(), vec![]), &FrustrationConfig::default());
        assert_eq!(a.score, 0);
        assert_eq!(a.level, Level::Normal);
        assert!(a.signals.is_empty());
    }

    #[test]
    fn third_contact_within_two_days_is_urgent() {
        let history = vec![
            contact("c1", t0() - hours(40), "chat"),
            contact("c2", t0() - hours(3), "sms"),
        ];
        let a = assess(&facts(current(), history), &FrustrationConfig::default());
        assert!(a.has(Signal::RepeatContacts));
        assert_eq!(a.level, Level::Urgent);
        assert_eq!(a.score, 500);
        let s = &a.signals[0];
        assert_eq!(s.action, Action::MarkUrgent);
        assert_eq!(s.detail, "3 contacts within 48h");
    }

    #[test]
    fn third_contact_is_urgent_even_when_its_boost_is_configured_to_zero() {
        let cfg = FrustrationConfig {
            repeat_contacts_boost: 0,
            ..FrustrationConfig::default()
        };
        let history = vec![
            contact("c1", t0() - hours(1), "chat"),
            contact("c2", t0() - hours(2), "voice"),
        ];
        let a = assess(&facts(current(), history), &cfg);
        assert_eq!(a.score, 0);
        assert_eq!(a.level, Level::Urgent);
    }

    #[test]
    fn contacts_older_than_two_days_do_not_count_as_repeats() {
        let history = vec![
            contact("c1", t0() - hours(49), "chat"),
            contact("c2", t0() - hours(3), "sms"),
        ];
        let a = assess(&facts(current(), history), &FrustrationConfig::default());
        assert!(!a.has(Signal::RepeatContacts));
    }

    #[test]
    fn current_contact_listed_in_history_is_counted_once() {
        let history = vec![current(), contact("c1", t0() - hours(1), "chat")];
        let a = assess(&facts(current(), history), &FrustrationConfig::default());
        assert!(!a.has(Signal::RepeatContacts));
    }

    #[test]
    fn duplicate_history_entries_are_counted_once() {
        let c1 = contact("c1", t0() - hours(1), "chat");
        let a = assess(
            &facts(current(), vec![c1.clone(), c1]),
            &FrustrationConfig::default(),
        );
        assert!(!a.has(Signal::RepeatContacts));
    }

    #[test]
    fn bot_hands_off_after_two_unresolved_exchanges() {
        let cfg = FrustrationConfig::default();
        assert!(!bot_should_hand_off(0, &cfg));
        assert!(!bot_should_hand_off(1, &cfg));
        assert!(bot_should_hand_off(2, &cfg));
        let mut f = facts(current(), vec![]);
        f.unresolved_bot_exchanges = 2;
        let a = assess(&f, &cfg);
        assert!(a.wants_human());
        assert_eq!(a.score, 100);
        assert_eq!(a.level, Level::Elevated);
        assert_eq!(a.signals[0].signal, Signal::BotNotResolving);
    }

    #[test]
    fn one_unresolved_bot_exchange_keeps_the_bot() {
        let mut f = facts(current(), vec![]);
        f.unresolved_bot_exchanges = 1;
        let a = assess(&f, &FrustrationConfig::default());
        assert!(!a.wants_human());
    }

    #[test]
    fn two_transfers_in_this_contact_route_to_the_last_owner() {
        let mut cur = current();
        cur.transfers = 2;
        let mut f = facts(cur, vec![]);
        f.last_owner = Some(IssueOwner {
            agent_id: Some("agent-7".to_string()),
            skill: Some("billing".to_string()),
        });
        let a = assess(&f, &FrustrationConfig::default());
        assert!(a.has(Signal::RepeatedTransfers));
        assert_eq!(
            a.route_to_last_owner(),
            Some((Some("agent-7"), Some("billing")))
        );
        assert_eq!(a.score, 200);
    }

    #[test]
    fn transfers_on_the_same_issue_are_summed_across_the_week() {
        let mut cur = current();
        cur.transfers = 1;
        let mut earlier = contact("c1", t0() - Duration::days(3), "chat");
        earlier.transfers = 1;
        earlier.handled_by = Some("agent-3".to_string());
        let a = assess(&facts(cur, vec![earlier]), &FrustrationConfig::default());
        assert!(a.has(Signal::RepeatedTransfers));
        assert_eq!(
            a.route_to_last_owner(),
            Some((Some("agent-3"), Some("scheduling")))
        );
        let s = a
            .signals
            .iter()
            .find(|s| s.signal == Signal::RepeatedTransfers)
            .unwrap();
        assert_eq!(s.detail, "2 transfers on this issue within 7d");
    }

    #[test]
    fn transfers_on_another_issue_or_older_than_a_week_are_not_summed() {
        let mut cur = current();
        cur.transfers = 1;
        let mut other_issue = contact("c1", t0() - Duration::days(1), "chat");
        other_issue.transfers = 3;
        other_issue.skill = Some("billing".to_string());
        let mut too_old = contact("c2", t0() - Duration::days(8), "voice");
        too_old.transfers = 3;
        let a = assess(
            &facts(cur, vec![other_issue, too_old]),
            &FrustrationConfig::default(),
        );
        assert!(!a.has(Signal::RepeatedTransfers));
    }

    #[test]
    fn repeated_transfers_with_unknown_owner_still_boosts() {
        let mut cur = current();
        cur.transfers = 3;
        let a = assess(&facts(cur, vec![]), &FrustrationConfig::default());
        assert_eq!(a.route_to_last_owner(), Some((None, None)));
        assert_eq!(a.score, 200);
    }

    #[test]
    fn patient_who_abandoned_today_and_returns_is_boosted() {
        let mut gave_up = contact("c1", t0() - hours(5), "voice");
        gave_up.abandoned = true;
        let a = assess(
            &facts(current(), vec![gave_up]),
            &FrustrationConfig::default(),
        );
        assert!(a.has(Signal::AbandonedThenReturned));
        assert_eq!(a.score, 150);
        assert_eq!(a.level, Level::Elevated);
        assert_eq!(
            a.signals[0].detail,
            "returned after 1 abandoned contact within 24h"
        );
    }

    #[test]
    fn abandonment_older_than_a_day_is_forgotten() {
        let mut gave_up = contact("c1", t0() - hours(25), "voice");
        gave_up.abandoned = true;
        let a = assess(
            &facts(current(), vec![gave_up]),
            &FrustrationConfig::default(),
        );
        assert!(!a.has(Signal::AbandonedThenReturned));
    }

    #[test]
    fn appointment_tomorrow_morning_boosts_but_past_or_distant_ones_do_not() {
        let mut f = facts(current(), vec![]);
        f.upcoming_appointments = vec![t0() - hours(2), t0() + hours(30), t0() + hours(20)];
        let a = assess(&f, &FrustrationConfig::default());
        assert!(a.has(Signal::AppointmentSoon));
        assert_eq!(a.score, 100);
        assert_eq!(
            a.signals[0].detail,
            "appointment within 24h (starts in 20h)"
        );

        f.upcoming_appointments = vec![t0() - hours(2), t0() + hours(30)];
        assert!(!assess(&f, &FrustrationConfig::default()).has(Signal::AppointmentSoon));
    }

    #[test]
    fn open_prescription_question_boosts() {
        let mut f = facts(current(), vec![]);
        f.prescription_question_open = true;
        let a = assess(&f, &FrustrationConfig::default());
        assert!(a.has(Signal::OpenPrescriptionQuestion));
        assert_eq!(a.score, 100);
        assert_eq!(a.level, Level::Elevated);
    }

    #[test]
    fn boosts_add_up_and_a_high_score_alone_makes_the_contact_urgent() {
        let mut gave_up = contact("c1", t0() - hours(5), "voice");
        gave_up.abandoned = true;
        let mut f = facts(current(), vec![gave_up]);
        f.prescription_question_open = true;
        f.upcoming_appointments = vec![t0() + hours(2)];
        f.unresolved_bot_exchanges = 3;
        f.current.transfers = 2;
        let a = assess(&f, &FrustrationConfig::default());
        assert_eq!(a.score, 150 + 100 + 100 + 100 + 200);
        assert!(!a.has(Signal::RepeatContacts));
        assert_eq!(a.level, Level::Urgent);
        let order: Vec<Signal> = a.signals.iter().map(|s| s.signal).collect();
        assert_eq!(
            order,
            vec![
                Signal::BotNotResolving,
                Signal::RepeatedTransfers,
                Signal::AbandonedThenReturned,
                Signal::AppointmentSoon,
                Signal::OpenPrescriptionQuestion,
            ]
        );
    }

    #[test]
    fn details_never_contain_contact_or_agent_ids() {
        let mut c1 = contact("contact-secret-1", t0() - hours(1), "chat");
        c1.abandoned = true;
        c1.transfers = 2;
        c1.handled_by = Some("agent-secret".to_string());
        let c2 = contact("contact-secret-2", t0() - hours(2), "voice");
        let mut f = facts(current(), vec![c1, c2]);
        f.prescription_question_open = true;
        f.upcoming_appointments = vec![t0() + hours(1)];
        f.unresolved_bot_exchanges = 2;
        let a = assess(&f, &FrustrationConfig::default());
        assert_eq!(a.signals.len(), 6);
        for s in &a.signals {
            assert!(!s.detail.contains("secret"), "{}", s.detail);
            assert!(!s.detail.contains("c-now"), "{}", s.detail);
        }
    }

    #[test]
    fn signal_labels_match_their_serde_names() {
        for s in Signal::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
        assert_eq!(serde_json::to_string(&Level::Urgent).unwrap(), "\"urgent\"");
        assert_eq!(Level::Elevated.as_str(), "elevated");
        assert!(Level::Normal < Level::Elevated && Level::Elevated < Level::Urgent);
    }

    #[test]
    fn route_to_last_owner_action_serialises_with_a_kind_tag() {
        let a = Action::RouteToLastOwner {
            agent_id: Some("a1".to_string()),
            skill: None,
        };
        let v = serde_json::to_value(&a).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"kind": "route_to_last_owner", "agent_id": "a1", "skill": null})
        );
        let back: Action = serde_json::from_value(v).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn default_config_is_valid_and_partial_config_fills_in_defaults() {
        assert_eq!(FrustrationConfig::default().validate(), Ok(()));
        let cfg: FrustrationConfig =
            serde_json::from_str(r#"{"repeat_contacts_threshold": 4}"#).unwrap();
        assert_eq!(cfg.repeat_contacts_threshold, 4);
        assert_eq!(cfg.urgent_score, 500);
    }

    #[test]
    fn unknown_config_fields_are_rejected() {
        let r: Result<FrustrationConfig, _> = serde_json::from_str(r#"{"repeat_treshold": 4}"#);
        assert!(r.is_err());
    }

    #[test]
    fn nonsense_configs_are_rejected_naming_the_field() {
        let d = FrustrationConfig::default;
        let cases: Vec<(FrustrationConfig, &str)> = vec![
            (
                FrustrationConfig {
                    repeat_contacts_window_secs: 0,
                    ..d()
                },
                "repeat_contacts_window_secs",
            ),
            (
                FrustrationConfig {
                    appointment_window_secs: MAX_WINDOW_SECS + 1,
                    ..d()
                },
                "appointment_window_secs",
            ),
            (
                FrustrationConfig {
                    repeat_contacts_threshold: 1,
                    ..d()
                },
                "repeat_contacts_threshold",
            ),
            (
                FrustrationConfig {
                    bot_handoff_after_exchanges: 0,
                    ..d()
                },
                "bot_handoff_after_exchanges",
            ),
            (
                FrustrationConfig {
                    transfers_threshold: 0,
                    ..d()
                },
                "transfers_threshold",
            ),
            (
                FrustrationConfig {
                    abandoned_boost: -5,
                    ..d()
                },
                "abandoned_boost",
            ),
            (
                FrustrationConfig {
                    prescription_boost: MAX_BOOST + 1,
                    ..d()
                },
                "prescription_boost",
            ),
            (
                FrustrationConfig {
                    elevated_score: 0,
                    ..d()
                },
                "elevated_score",
            ),
            (
                FrustrationConfig {
                    elevated_score: 500,
                    urgent_score: 500,
                    ..d()
                },
                "urgent_score",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().unwrap_err();
            assert!(err.contains(field), "expected {field} in {err}");
        }
    }
}
