//! Patient outreach rules: which messages go out, when, and which are held or
//! suppressed. Plain functions; the patient actor and the runtime's reminder tick
//! call them.
//!
//! | template | when | quiet hours | opt-out |
//! |---|---|---|---|
//! | `appointment.confirmation` | a booking | sent (transactional) | honoured |
//! | `appointment.rescheduled` | a new time | sent (transactional) | honoured |
//! | `appointment.telehealth` | a telehealth booking, by e-mail: video link and login instructions | sent (transactional) | honoured |
//! | `appointment.reminder` | each configured offset before the start (72 h, 24 h; telehealth also 1 h with the join link) | held until they end, except reminders at most 1 h before the start | honoured |
//! | `prescription.ready` | the pharmacy says ready | held until they end | honoured |
//! | `consent.opted_out`, `consent.opted_in`, `consent.help` | the patient texted STOP, START or HELP | sent (the carrier-required answer) | not applied (the one answer to STOP is required) |
//!
//! A message whose template misses a required field never goes out: it is
//! recorded as failed with the missing field named. A reminder is planned only for
//! times still ahead, and its command id is derived from the appointment, the
//! offset and the start, so a re-sent booking, a restart or a second node never
//! sends it twice; a reschedule re-plans, a cancellation drops the plan.
//!
//! Replies (an inbound SMS or e-mail, one keyword, case and trailing punctuation
//! ignored), per the CTIA messaging principles and the carriers' defaults:
//!
//! | reply | meaning |
//! |---|---|
//! | STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT, OPTOUT, REVOKE | opt out of that channel |
//! | START, UNSTOP (and YES while opted out) | opt back in |
//! | HELP, INFO | the help answer |
//! | C, CONFIRM, CONFIRMED (and YES while opted in) | the next appointment is confirmed |
//! | R, RESCHEDULE | a contact for scheduling, with the next appointment in its context |
//! | anything else | a normal contact |

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::command::{Command, CommandType, NotifySettings};
use crate::event::Channel;
use crate::ids::{PatientId, SiteId};
use crate::journey::{AppointmentStatus, AppointmentView};
use crate::sites::{format_patient_time, Site, SiteDirectory};

/// Namespace of reminder command ids (UUIDv5 over appointment, offset and start).
const REMINDER_NAMESPACE: Uuid = Uuid::from_u128(0x3c0e_7d51_b2a4_4f19_9e6d_51a8_c7f2_0b93);

/// Reminders this close to the start are never held by quiet hours (the telehealth
/// join link would arrive after the visit began).
const URGENT_WITHIN_MINUTES: i64 = 60;

/// Default telehealth login instructions (a site may set its own).
const DEFAULT_TELEHEALTH_INSTRUCTIONS: &str = "Open the link on a phone or computer with a camera a few minutes early; allow camera and microphone access when your browser asks, and keep this message: the same link works until the visit ends.";

/// How a template treats quiet hours and opt-outs, and what it must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateSpec {
    /// The `template` field.
    pub name: &'static str,
    /// Payload fields that must be present and non-empty.
    pub required: &'static [&'static str],
    /// Quiet hours hold it (non-urgent); false: transactional, sent at once.
    pub held_by_quiet_hours: bool,
    /// Sent to a patient who opted out of the channel (the carrier-required answers).
    pub exempt_from_opt_out: bool,
}

/// Every template Front Door sends. docs/contract.md lists the same.
pub const TEMPLATES: &[TemplateSpec] = &[
    TemplateSpec {
        name: "appointment.confirmation",
        required: &[
            "to",
            "appointment_id",
            "starts_at",
            "local_time",
            "date",
            "time",
        ],
        held_by_quiet_hours: false,
        exempt_from_opt_out: false,
    },
    TemplateSpec {
        name: "appointment.rescheduled",
        required: &[
            "to",
            "appointment_id",
            "starts_at",
            "local_time",
            "date",
            "time",
        ],
        held_by_quiet_hours: false,
        exempt_from_opt_out: false,
    },
    TemplateSpec {
        name: "appointment.telehealth",
        required: &[
            "to",
            "appointment_id",
            "starts_at",
            "local_time",
            "telehealth_url",
            "instructions",
        ],
        held_by_quiet_hours: false,
        exempt_from_opt_out: false,
    },
    TemplateSpec {
        name: "appointment.reminder",
        required: &["to", "appointment_id", "starts_at", "local_time", "offset"],
        held_by_quiet_hours: true,
        exempt_from_opt_out: false,
    },
    TemplateSpec {
        name: "prescription.ready",
        required: &["to", "medication"],
        held_by_quiet_hours: true,
        exempt_from_opt_out: false,
    },
    TemplateSpec {
        name: "consent.opted_out",
        required: &["to", "text"],
        held_by_quiet_hours: false,
        exempt_from_opt_out: true,
    },
    TemplateSpec {
        name: "consent.opted_in",
        required: &["to", "text"],
        held_by_quiet_hours: false,
        exempt_from_opt_out: true,
    },
    TemplateSpec {
        name: "consent.help",
        required: &["to", "text"],
        held_by_quiet_hours: false,
        exempt_from_opt_out: true,
    },
];

/// The row of a template.
pub fn template(name: &str) -> Option<&'static TemplateSpec> {
    TEMPLATES.iter().find(|t| t.name == name)
}

/// Why a message did not go out (a bounded metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuppressReason {
    /// The patient opted out of the channel (STOP).
    OptedOut,
    /// Its moment passed (the appointment started, was cancelled or moved).
    TooLate,
}

impl SuppressReason {
    /// Every reason, for metric pre-registration.
    pub const ALL: [SuppressReason; 2] = [SuppressReason::OptedOut, SuppressReason::TooLate];

    /// Wire name and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SuppressReason::OptedOut => "opted_out",
            SuppressReason::TooLate => "too_late",
        }
    }
}

/// What becomes of one message now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Send it (write it to the outbox).
    Send,
    /// Quiet hours: keep it planned until then.
    Hold { until: DateTime<Utc> },
    /// Do not send it, for this reason.
    Suppress(SuppressReason),
    /// It cannot be sent as it is (a missing field, an unknown template).
    Fail(String),
}

/// The facts about one message that decide its fate.
#[derive(Debug, Clone, Copy)]
pub struct MessageFacts<'a> {
    /// Its template name.
    pub template: &'a str,
    /// Its payload.
    pub payload: &'a Map<String, Value>,
    /// The patient opted out of its channel.
    pub opted_out: bool,
    /// Its site (for quiet hours).
    pub site: &'a Site,
    /// Never held (a reminder close to the start).
    pub urgent: bool,
    /// Pointless from then on (a reminder: the appointment's start).
    pub not_after: Option<DateTime<Utc>>,
}

/// Decides whether a message goes out now: complete, consented, in time, and not
/// in quiet hours (unless transactional or urgent).
pub fn disposition(m: &MessageFacts<'_>, now: DateTime<Utc>) -> Disposition {
    let Some(spec) = template(m.template) else {
        return Disposition::Fail(format!("unknown template {:?}", m.template));
    };
    if let Some(missing) = spec
        .required
        .iter()
        .find(|f| !matches!(m.payload.get(**f), Some(Value::String(s)) if !s.trim().is_empty()))
    {
        return Disposition::Fail(format!("missing field {missing}"));
    }
    if m.opted_out && !spec.exempt_from_opt_out {
        return Disposition::Suppress(SuppressReason::OptedOut);
    }
    if m.not_after.is_some_and(|t| now >= t) {
        return Disposition::Suppress(SuppressReason::TooLate);
    }
    if spec.held_by_quiet_hours && !m.urgent {
        if let Some(until) = m.site.quiet_until(now) {
            // Held past its point (the visit would have begun): better now than never.
            if m.not_after.is_none_or(|t| until < t) {
                return Disposition::Hold { until };
            }
        }
    }
    Disposition::Send
}

/// What an inbound text means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Opt out of the channel.
    OptOut,
    /// Opt back in.
    OptIn,
    /// The help answer.
    Help,
    /// Confirm the next appointment.
    Confirm,
    /// Reschedule the next appointment (a contact for scheduling).
    Reschedule,
    /// Anything else: a normal contact.
    Other,
}

impl Reply {
    /// The disposition a contact closed by this reply records.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::OptOut => "opted_out",
            Reply::OptIn => "opted_in",
            Reply::Help => "help",
            Reply::Confirm => "confirmed",
            Reply::Reschedule => "reschedule",
            Reply::Other => "other",
        }
    }
}

/// Classifies a patient's text: one keyword (case, surrounding space and trailing
/// punctuation ignored). `opted_out`: the patient is opted out of the channel the
/// text came on (YES then means opt in; otherwise, confirm).
pub fn classify_reply(text: &str, opted_out: bool) -> Reply {
    let word = text
        .trim()
        .trim_end_matches(['.', '!', '?'])
        .trim()
        .to_ascii_uppercase();
    match word.as_str() {
        "STOP" | "STOPALL" | "UNSUBSCRIBE" | "CANCEL" | "END" | "QUIT" | "OPTOUT" | "REVOKE" => {
            Reply::OptOut
        }
        "START" | "UNSTOP" => Reply::OptIn,
        "YES" if opted_out => Reply::OptIn,
        "HELP" | "INFO" => Reply::Help,
        "C" | "CONFIRM" | "CONFIRMED" | "YES" => Reply::Confirm,
        "R" | "RESCHEDULE" => Reply::Reschedule,
        _ => Reply::Other,
    }
}

/// An offset before an appointment's start, in whole minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offset(pub i64);

impl Offset {
    /// Parses `72h`, `90m` or `2d`.
    pub fn parse(s: &str) -> Option<Offset> {
        let s = s.trim();
        let (n, unit) = s.split_at(s.len().checked_sub(1)?);
        let n: i64 = n.parse().ok()?;
        let minutes = match unit {
            "m" => n,
            "h" => n.checked_mul(60)?,
            "d" => n.checked_mul(24 * 60)?,
            _ => return None,
        };
        (minutes > 0 && minutes <= 60 * 24 * 60).then_some(Offset(minutes))
    }

    /// As configured: `72h`, `90m`, `2d`.
    pub fn label(self) -> String {
        match self.0 {
            m if m % (24 * 60) == 0 && m >= 7 * 24 * 60 => format!("{}d", m / (24 * 60)),
            m if m % 60 == 0 => format!("{}h", m / 60),
            m => format!("{m}m"),
        }
    }

    /// As a duration.
    pub fn duration(self) -> Duration {
        Duration::minutes(self.0)
    }
}

/// Reminder offsets for one department (or the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReminderOffsets {
    /// In-person visits.
    pub in_person: Vec<String>,
    /// Telehealth visits (reminders carry the join link).
    pub telehealth: Vec<String>,
}

impl Default for ReminderOffsets {
    fn default() -> Self {
        ReminderOffsets {
            in_person: vec!["72h".into(), "24h".into()],
            telehealth: vec!["72h".into(), "24h".into(), "1h".into()],
        }
    }
}

/// `[outreach]`: reminders, the reminder tick and telehealth e-mail.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutreachSettings {
    /// How often due reminders and held messages are looked for, milliseconds
    /// (each fires within about this long of its time).
    pub tick_ms: u64,
    /// Due messages settled per tick at most.
    pub batch: u32,
    /// Default reminder offsets.
    pub reminders: ReminderOffsets,
    /// Per department (as in `appointment.*`'s `department`): its own offsets.
    pub departments: BTreeMap<String, ReminderOffsets>,
    /// Send the telehealth e-mail (`appointment.telehealth`) with each telehealth booking.
    pub telehealth_email: bool,
    /// Login instructions in the telehealth e-mail, unless the site has its own.
    pub telehealth_instructions: String,
    /// Text of the answer to STOP.
    pub opted_out_text: String,
    /// Text of the answer to START.
    pub opted_in_text: String,
    /// Text of the answer to HELP.
    pub help_text: String,
}

impl Default for OutreachSettings {
    fn default() -> Self {
        OutreachSettings {
            tick_ms: 1_000,
            batch: 200,
            reminders: ReminderOffsets::default(),
            departments: BTreeMap::new(),
            telehealth_email: true,
            telehealth_instructions: DEFAULT_TELEHEALTH_INSTRUCTIONS.into(),
            opted_out_text: "You are unsubscribed from appointment texts and will receive no more. Reply START to resubscribe.".into(),
            opted_in_text: "You are subscribed to appointment texts again. Reply STOP to unsubscribe, HELP for help.".into(),
            help_text: "Appointment messages from your care team. Reply C to confirm, R to reschedule, STOP to unsubscribe. Msg & data rates may apply.".into(),
        }
    }
}

/// Parsed offsets: in person, telehealth (each sorted, longest first).
type OffsetPair = (Vec<Offset>, Vec<Offset>);

fn parse_offsets(o: &ReminderOffsets, key: &str) -> Result<OffsetPair, String> {
    let one = |list: &[String], which: &str| -> Result<Vec<Offset>, String> {
        let mut v = Vec::with_capacity(list.len());
        for s in list {
            v.push(Offset::parse(s).ok_or_else(|| {
                format!("{key}.{which}: {s:?} is not an offset such as \"72h\", \"90m\" or \"2d\" (at most 60 days)")
            })?);
        }
        v.sort_by(|a, b| b.cmp(a));
        v.dedup();
        Ok(v)
    };
    Ok((
        one(&o.in_person, "in_person")?,
        one(&o.telehealth, "telehealth")?,
    ))
}

/// Everything the outreach rules need, checked once: settings, the site directory,
/// the links notifications carry.
#[derive(Debug, Clone, PartialEq)]
pub struct Outreach {
    /// The settings as configured.
    pub settings: OutreachSettings,
    /// The site directory (local time, quiet hours, addresses).
    pub sites: SiteDirectory,
    /// Links notifications carry.
    pub notify: NotifySettings,
    /// The default offsets.
    defaults: OffsetPair,
    /// Per department.
    departments: BTreeMap<String, OffsetPair>,
}

impl Default for Outreach {
    fn default() -> Self {
        // unwrap: the defaults are valid offsets (tested)
        Outreach::new(
            OutreachSettings::default(),
            SiteDirectory::default(),
            NotifySettings::default(),
        )
        .unwrap()
    }
}

impl Outreach {
    /// Checks the settings; the first mistake as one line naming its key.
    pub fn new(
        settings: OutreachSettings,
        sites: SiteDirectory,
        notify: NotifySettings,
    ) -> Result<Outreach, String> {
        if settings.tick_ms == 0 || settings.tick_ms > 5_000 {
            return Err(
                "outreach.tick_ms must be 1..=5000 (reminders fire within one tick of their time)"
                    .into(),
            );
        }
        if settings.batch == 0 {
            return Err("outreach.batch must be > 0".into());
        }
        let defaults = parse_offsets(&settings.reminders, "outreach.reminders")?;
        let mut departments = BTreeMap::new();
        for (d, o) in &settings.departments {
            departments.insert(
                d.to_ascii_lowercase(),
                parse_offsets(o, &format!("outreach.departments.{d}"))?,
            );
        }
        Ok(Outreach {
            settings,
            sites,
            notify,
            defaults,
            departments,
        })
    }

    /// The reminder offsets for an appointment, longest first.
    pub fn offsets(&self, department: Option<&str>, telehealth: bool) -> &[Offset] {
        let pair = department
            .and_then(|d| self.departments.get(&d.to_ascii_lowercase()))
            .unwrap_or(&self.defaults);
        if telehealth {
            &pair.1
        } else {
            &pair.0
        }
    }

    /// The telehealth login instructions of a site.
    pub fn telehealth_instructions(&self, site: &SiteId) -> String {
        match self.sites.get(site) {
            Some(s) if !s.telehealth_instructions.trim().is_empty() => {
                s.telehealth_instructions.clone()
            }
            _ => self.settings.telehealth_instructions.clone(),
        }
    }

    /// The appointment's time and place fields, in the site's local time: `date`,
    /// `time` ("09:30 CST"), `local_time` ("Tue 3 Mar 2026, 09:30 CST"), `time_zone`,
    /// `starts_at` (UTC), and the site's name, address, phone and directions.
    pub fn appointment_fields(&self, site: &SiteId, a: &AppointmentView) -> Map<String, Value> {
        let mut p = Map::new();
        p.insert("appointment_id".into(), a.id.clone().into());
        if let Some(t) = a.starts_at {
            let local = self.sites.local_time(site, t);
            p.insert("starts_at".into(), t.to_rfc3339().into());
            p.insert("date".into(), local.format("%Y-%m-%d").to_string().into());
            p.insert("time".into(), local.format("%H:%M %Z").to_string().into());
            p.insert("local_time".into(), format_patient_time(&local).into());
            p.insert("time_zone".into(), local.timezone().name().into());
        }
        for (k, v) in [
            ("department", &a.department),
            ("location", &a.location),
            ("telehealth_url", &a.telehealth_url),
            ("provider", &a.provider),
        ] {
            if let Some(v) = v {
                p.insert(k.into(), v.clone().into());
            }
        }
        if let Some(s) = self.sites.get(site) {
            for (k, v) in [
                ("site_name", &s.name),
                ("site_address", &s.address),
                ("site_phone", &s.phone),
                ("directions", &s.directions),
            ] {
                let in_person_only = k == "directions" && a.telehealth_url.is_some();
                if !v.is_empty() && !in_person_only {
                    p.insert(k.into(), v.clone().into());
                }
            }
        }
        p
    }
}

/// Where a patient can be reached: SMS first, e-mail when there is no phone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    /// E.164 phone number.
    pub phone: Option<String>,
    /// E-mail address.
    pub email: Option<String>,
}

impl Reach {
    /// SMS when there is a phone, else e-mail; None: unreachable.
    pub fn preferred(&self) -> Option<(Channel, String)> {
        match (&self.phone, &self.email) {
            (Some(p), _) => Some((Channel::Sms, p.clone())),
            (None, Some(e)) => Some((Channel::Email, e.clone())),
            (None, None) => None,
        }
    }
}

/// A message decided now but sent later, or recorded as not sent.
#[derive(Debug, Clone, PartialEq)]
pub struct OutreachRecord {
    /// The `notify.send` command (its id is the record's id).
    pub command: Command,
    /// Its template.
    pub template: String,
    /// The appointment it is about (a reschedule or cancellation drops its plan).
    pub appointment_id: Option<String>,
    /// When it is due.
    pub due_at: DateTime<Utc>,
    /// Pointless from then on.
    pub not_after: Option<DateTime<Utc>>,
    /// Never held by quiet hours.
    pub urgent: bool,
    /// Planned, sent, suppressed or failed.
    pub state: OutreachState,
    /// Why suppressed or failed.
    pub reason: Option<String>,
}

/// The life of an outreach record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OutreachState {
    /// Waiting for its time (a reminder, or a message held by quiet hours).
    Planned,
    /// Written to the outbox.
    Sent,
    /// Not sent (opted out, too late).
    Suppressed,
    /// Could not be sent (a missing field).
    Failed,
}

impl OutreachState {
    /// Stored name and metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            OutreachState::Planned => "planned",
            OutreachState::Sent => "sent",
            OutreachState::Suppressed => "suppressed",
            OutreachState::Failed => "failed",
        }
    }

    /// Parses the stored name.
    pub fn parse(s: &str) -> Option<OutreachState> {
        [
            OutreachState::Planned,
            OutreachState::Sent,
            OutreachState::Suppressed,
            OutreachState::Failed,
        ]
        .into_iter()
        .find(|x| x.as_str() == s)
    }
}

/// The id of the reminder of `appointment` at `offset` before `starts_at`: the same
/// inputs always give the same id (never sent twice); a new start gives new ids.
pub fn reminder_id(
    site: &SiteId,
    appointment_id: &str,
    offset: Offset,
    starts_at: DateTime<Utc>,
) -> Uuid {
    let name = format!(
        "reminder:{site}:{appointment_id}:{}:{}",
        offset.0,
        starts_at.timestamp()
    );
    Uuid::new_v5(&REMINDER_NAMESPACE, name.as_bytes())
}

/// Plans an appointment's reminders: one per configured offset whose time is still
/// ahead of `now`, for a booked or rescheduled appointment with a start. Telehealth
/// reminders carry the join link; those at most an hour before the start are
/// urgent (never held by quiet hours).
pub fn plan_reminders(
    outreach: &Outreach,
    patient: PatientId,
    site: &SiteId,
    a: &AppointmentView,
    reach: &Reach,
    caused_by: Uuid,
    now: DateTime<Utc>,
) -> Vec<OutreachRecord> {
    if !matches!(
        a.status,
        AppointmentStatus::Booked | AppointmentStatus::Rescheduled
    ) {
        return Vec::new();
    }
    let (Some(starts_at), Some((channel, to))) = (a.starts_at, reach.preferred()) else {
        return Vec::new();
    };
    let telehealth = a.telehealth_url.is_some();
    let base = outreach.appointment_fields(site, a);
    outreach
        .offsets(a.department.as_deref(), telehealth)
        .iter()
        .filter_map(|&offset| {
            let due_at = starts_at - offset.duration();
            if due_at <= now {
                return None;
            }
            let mut payload = base.clone();
            payload.insert("to".into(), to.clone().into());
            payload.insert("template".into(), "appointment.reminder".into());
            payload.insert("offset".into(), offset.label().into());
            if let Some(url) = &a.telehealth_url {
                payload.insert("join_url".into(), url.clone().into());
            }
            let mut command = Command::new(
                CommandType::NotifySend,
                caused_by,
                "reminder",
                site.clone(),
                channel,
                due_at,
                Some(patient),
                payload,
            );
            command.id = reminder_id(site, &a.id, offset, starts_at);
            Some(OutreachRecord {
                command,
                template: "appointment.reminder".into(),
                appointment_id: Some(a.id.clone()),
                due_at,
                not_after: Some(starts_at),
                urgent: offset.0 <= URGENT_WITHIN_MINUTES,
                state: OutreachState::Planned,
                reason: None,
            })
        })
        .collect()
}

/// A patient's consent for one channel changed (STOP, START).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// The channel.
    pub channel: Channel,
    /// True: opted out; false: opted back in.
    pub opted_out: bool,
    /// When.
    pub at: DateTime<Utc>,
}

/// What one event changes in outreach, written with the event (one transaction).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OutreachChanges {
    /// Appointments whose planned (not yet sent) reminders are dropped first: a
    /// reschedule re-plans, a cancellation, check-in or no-show leaves none.
    pub replan: Vec<String>,
    /// Messages planned, held, suppressed, failed or sent (the record of each).
    pub records: Vec<OutreachRecord>,
    /// Consent changes.
    pub consent: Vec<ConsentChange>,
    /// Appointments the patient confirmed with this event.
    pub confirmed: Vec<String>,
}

impl OutreachChanges {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.replan.is_empty()
            && self.records.is_empty()
            && self.consent.is_empty()
            && self.confirmed.is_empty()
    }
}

/// Decides one message now: sent ones are returned for the outbox, every one is
/// recorded (held ones as planned until the quiet hours end).
pub fn settle_now(
    outreach: &Outreach,
    command: Command,
    opted_out: bool,
    appointment_id: Option<String>,
    now: DateTime<Utc>,
    changes: &mut OutreachChanges,
) -> Option<Command> {
    let template = command
        .payload
        .get("template")
        .and_then(|v| v.as_str())
        .unwrap_or_default()
        .to_string();
    let site = outreach.sites.site_or_utc(&command.site);
    let facts = MessageFacts {
        template: &template,
        payload: &command.payload,
        opted_out,
        site: &site,
        urgent: false,
        not_after: None,
    };
    let decision = disposition(&facts, now);
    let (state, reason, due_at) = match &decision {
        Disposition::Send => (OutreachState::Sent, None, now),
        Disposition::Hold { until } => (OutreachState::Planned, None, *until),
        Disposition::Suppress(r) => (OutreachState::Suppressed, Some(r.as_str().to_string()), now),
        Disposition::Fail(r) => (OutreachState::Failed, Some(r.clone()), now),
    };
    changes.records.push(OutreachRecord {
        command: command.clone(),
        template,
        appointment_id,
        due_at,
        not_after: None,
        urgent: false,
        state,
        reason,
    });
    (decision == Disposition::Send).then_some(command)
}

/// Everything outreach does about one event, given the journey before and after
/// it: the notifications it causes (decided now: sent, held, suppressed or
/// failed), the answer to a carrier keyword, consent changes, the appointment's
/// reminder plan, and confirmations. Returns the commands to send now.
pub fn on_event(
    outreach: &Outreach,
    event: &crate::event::Envelope,
    before: &crate::journey::Journey,
    after: &crate::journey::Journey,
    now: DateTime<Utc>,
    changes: &mut OutreachChanges,
) -> Vec<Command> {
    use crate::event::EventKind;
    let mut out = Vec::new();
    for c in crate::command::notifications(event, before, outreach) {
        let opted_out = after.is_opted_out(c.channel);
        let appointment = c
            .payload
            .get("appointment_id")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        out.extend(settle_now(
            outreach,
            c,
            opted_out,
            appointment,
            now,
            changes,
        ));
    }
    // Consent: STOP / START on this channel.
    for ch in [Channel::Sms, Channel::Email] {
        let (was, is) = (before.is_opted_out(ch), after.is_opted_out(ch));
        if was != is {
            changes.consent.push(ConsentChange {
                channel: ch,
                opted_out: is,
                at: event.occurred_at,
            });
        }
    }
    // The carrier-required answer to STOP, START and HELP, on the channel asked.
    let text = match &event.kind {
        EventKind::ContactStarted { text: Some(t), .. } => Some(t.as_str()),
        EventKind::ContactMessage {
            from: crate::event::Author::Patient,
            text,
        } => Some(text.as_str()),
        _ => None,
    };
    if let (Some(text), Channel::Sms | Channel::Email) = (text, event.channel) {
        let reply = classify_reply(text, before.is_opted_out(event.channel));
        let answer = match reply {
            Reply::OptOut => Some(("consent.opted_out", &outreach.settings.opted_out_text)),
            Reply::OptIn => Some(("consent.opted_in", &outreach.settings.opted_in_text)),
            Reply::Help => Some(("consent.help", &outreach.settings.help_text)),
            _ => None,
        };
        let reach = crate::command::reach_of(event, after);
        let to = match event.channel {
            Channel::Sms => reach.phone,
            _ => reach.email,
        };
        if let (Some((template, text)), Some(to)) = (answer, to) {
            let mut p = Map::new();
            p.insert("to".into(), to.into());
            p.insert("template".into(), template.into());
            p.insert("text".into(), text.clone().into());
            let c = Command::new(
                CommandType::NotifySend,
                event.id,
                template,
                event.site.clone(),
                event.channel,
                event.occurred_at,
                Some(after.patient_id),
                p,
            );
            out.extend(settle_now(
                outreach,
                c,
                after.is_opted_out(event.channel),
                None,
                now,
                changes,
            ));
        }
    }
    // Reminders: every appointment event re-plans that appointment.
    if let EventKind::AppointmentBooked(a)
    | EventKind::AppointmentRescheduled(a)
    | EventKind::AppointmentCancelled(a)
    | EventKind::AppointmentNoShow(a)
    | EventKind::AppointmentCheckedIn(a) = &event.kind
    {
        changes.replan.push(a.appointment_id.clone());
        if let Some(view) = after.appointments.get(&a.appointment_id) {
            let reach = crate::command::reach_of(event, after);
            changes.records.extend(plan_reminders(
                outreach,
                after.patient_id,
                &view.site,
                view,
                &reach,
                event.id,
                now,
            ));
        }
    }
    // Confirmations (a reply "C", `appointment.confirmed`).
    for a in after.appointments.values() {
        let was = before.appointments.get(&a.id).and_then(|b| b.confirmed_at);
        if a.confirmed_at.is_some() && was != a.confirmed_at {
            changes.confirmed.push(a.id.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sites::SiteConfig;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn north() -> SiteId {
        SiteId::parse("north").unwrap()
    }

    fn outreach() -> Outreach {
        let sites = SiteDirectory::from_config(&BTreeMap::from([(
            "north".to_string(),
            SiteConfig {
                time_zone: "America/Chicago".into(),
                name: "North Clinic".into(),
                address: "100 Lakeshore Dr".into(),
                directions: "Garage B".into(),
                ..SiteConfig::default()
            },
        )]))
        .unwrap();
        let mut s = OutreachSettings::default();
        s.departments.insert(
            "Cardiology".into(),
            ReminderOffsets {
                in_person: vec!["48h".into(), "2h".into()],
                telehealth: vec!["30m".into()],
            },
        );
        Outreach::new(s, sites, NotifySettings::default()).unwrap()
    }

    fn appt(starts: &str, telehealth: bool) -> AppointmentView {
        AppointmentView {
            id: "A1".into(),
            site: north(),
            starts_at: Some(utc(starts)),
            ends_at: None,
            department: Some("dermatology".into()),
            reason: None,
            provider: None,
            location: Some("North Clinic".into()),
            telehealth_url: telehealth.then(|| "https://video.example.org/j/A1".into()),
            status: AppointmentStatus::Booked,
            channel: Channel::Portal,
            confirmed_at: None,
            starts_at_local: None,
            time_zone: None,
        }
    }

    fn phone() -> Reach {
        Reach {
            phone: Some("+15550100001".into()),
            email: Some("p@example.org".into()),
        }
    }

    fn plan(a: &AppointmentView, reach: &Reach, now: &str) -> Vec<OutreachRecord> {
        plan_reminders(
            &outreach(),
            PatientId(Uuid::from_u128(7)),
            &north(),
            a,
            reach,
            Uuid::from_u128(1),
            utc(now),
        )
    }

    #[test]
    fn a_booking_days_ahead_gets_72h_and_24h_sms_reminders_in_local_time() {
        let r = plan(
            &appt("2026-03-10T15:30:00Z", false),
            &phone(),
            "2026-03-01T12:00:00Z",
        );
        let due: Vec<_> = r.iter().map(|x| x.due_at).collect();
        assert_eq!(
            due,
            vec![utc("2026-03-07T15:30:00Z"), utc("2026-03-09T15:30:00Z")]
        );
        let p = &r[1].command.payload;
        assert_eq!(r[1].command.channel, Channel::Sms);
        assert_eq!(p["template"], "appointment.reminder");
        assert_eq!(p["offset"], "24h");
        // 10 Mar is after the 8 Mar change: CDT.
        assert_eq!(p["local_time"], "Tue 10 Mar 2026, 10:30 CDT");
        assert_eq!(p["time"], "10:30 CDT");
        assert_eq!(p["site_address"], "100 Lakeshore Dr");
        assert!(!r.iter().any(|x| x.urgent));
        assert!(r
            .iter()
            .all(|x| x.not_after == Some(utc("2026-03-10T15:30:00Z"))));
    }

    #[test]
    fn telehealth_adds_an_urgent_one_hour_reminder_with_the_join_link() {
        let r = plan(
            &appt("2026-03-10T15:30:00Z", true),
            &phone(),
            "2026-03-01T12:00:00Z",
        );
        assert_eq!(r.len(), 3);
        let last = &r[2];
        assert_eq!(last.due_at, utc("2026-03-10T14:30:00Z"));
        assert!(last.urgent);
        assert_eq!(
            last.command.payload["join_url"],
            "https://video.example.org/j/A1"
        );
        assert!(!last.command.payload.contains_key("directions"));
    }

    #[test]
    fn only_reminders_still_ahead_are_planned_and_none_for_a_past_booking() {
        // 30 hours ahead: the 72 h one is past.
        let r = plan(
            &appt("2026-03-10T15:30:00Z", false),
            &phone(),
            "2026-03-09T09:30:00Z",
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].command.payload["offset"], "24h");
        // Less than an hour ahead: none, even for telehealth.
        assert!(plan(
            &appt("2026-03-10T15:30:00Z", true),
            &phone(),
            "2026-03-10T14:45:00Z"
        )
        .is_empty());
        // In the past: none.
        assert!(plan(
            &appt("2026-03-10T15:30:00Z", true),
            &phone(),
            "2026-03-11T00:00:00Z"
        )
        .is_empty());
        // Cancelled: none.
        let mut a = appt("2026-03-10T15:30:00Z", false);
        a.status = AppointmentStatus::Cancelled;
        assert!(plan(&a, &phone(), "2026-03-01T00:00:00Z").is_empty());
    }

    #[test]
    fn reminder_ids_depend_on_appointment_offset_and_start_only() {
        let a = appt("2026-03-10T15:30:00Z", false);
        let first = plan(&a, &phone(), "2026-03-01T12:00:00Z");
        let again = plan(&a, &phone(), "2026-03-02T12:00:00Z");
        assert_eq!(first[0].command.id, again[0].command.id);
        assert_ne!(first[0].command.id, first[1].command.id);
        let moved = plan(
            &appt("2026-03-10T16:00:00Z", false),
            &phone(),
            "2026-03-01T12:00:00Z",
        );
        assert_ne!(first[0].command.id, moved[0].command.id);
    }

    #[test]
    fn departments_have_their_own_offsets_and_email_is_the_fallback() {
        let mut a = appt("2026-03-10T15:30:00Z", false);
        a.department = Some("cardiology".into());
        let reach = Reach {
            phone: None,
            email: Some("p@example.org".into()),
        };
        let r = plan(&a, &reach, "2026-03-01T12:00:00Z");
        assert_eq!(
            r.iter()
                .map(|x| x.command.payload["offset"].clone())
                .collect::<Vec<_>>(),
            vec!["48h", "2h"]
        );
        assert_eq!(r[0].command.channel, Channel::Email);
        assert!(plan(&a, &Reach::default(), "2026-03-01T12:00:00Z").is_empty());
    }

    #[test]
    fn carrier_keywords_and_replies_are_classified() {
        for w in [
            "STOP",
            "stop",
            " Stop. ",
            "STOPALL",
            "UNSUBSCRIBE",
            "CANCEL",
            "END",
            "QUIT",
            "OPTOUT",
            "REVOKE",
        ] {
            assert_eq!(classify_reply(w, false), Reply::OptOut, "{w}");
        }
        for w in ["START", "unstop"] {
            assert_eq!(classify_reply(w, true), Reply::OptIn, "{w}");
        }
        assert_eq!(classify_reply("yes", true), Reply::OptIn);
        assert_eq!(classify_reply("yes", false), Reply::Confirm);
        for w in ["HELP", "info"] {
            assert_eq!(classify_reply(w, false), Reply::Help, "{w}");
        }
        for w in ["C", "c", "Confirm", "confirmed!"] {
            assert_eq!(classify_reply(w, false), Reply::Confirm, "{w}");
        }
        for w in ["R", "reschedule"] {
            assert_eq!(classify_reply(w, false), Reply::Reschedule, "{w}");
        }
        for w in [
            "please stop texting me at night",
            "can I come earlier?",
            "CC",
            "",
        ] {
            assert_eq!(classify_reply(w, false), Reply::Other, "{w}");
        }
    }

    fn facts<'a>(
        template: &'a str,
        payload: &'a Map<String, Value>,
        site: &'a Site,
    ) -> MessageFacts<'a> {
        MessageFacts {
            template,
            payload,
            opted_out: false,
            site,
            urgent: false,
            not_after: None,
        }
    }

    #[test]
    fn quiet_hours_hold_non_urgent_templates_only() {
        let o = outreach();
        let site = o.sites.site_or_utc(&north()).into_owned();
        let mut reminder = plan(
            &appt("2026-03-10T15:30:00Z", true),
            &phone(),
            "2026-03-01T12:00:00Z",
        );
        let late = utc("2026-03-09T04:00:00Z"); // 23:00 CDT on Sun 8 Mar
        let r24 = reminder.remove(1);
        let mut f = facts("appointment.reminder", &r24.command.payload, &site);
        f.not_after = r24.not_after;
        assert_eq!(
            disposition(&f, late),
            Disposition::Hold {
                until: utc("2026-03-09T13:00:00Z")
            }
        );
        // Urgent (the 1 h join link): sent.
        f.urgent = true;
        assert_eq!(disposition(&f, late), Disposition::Send);
        // A confirmation is transactional.
        let confirmation: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "to": "+15550100001", "appointment_id": "A1", "starts_at": "x",
            "local_time": "x", "date": "x", "time": "x"
        }))
        .unwrap();
        let f = facts("appointment.confirmation", &confirmation, &site);
        assert_eq!(disposition(&f, late), Disposition::Send);
        // prescription.ready is held.
        let rx: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"to": "+1", "medication": "m"})).unwrap();
        let f = facts("prescription.ready", &rx, &site);
        assert!(matches!(disposition(&f, late), Disposition::Hold { .. }));
        assert_eq!(
            disposition(&f, utc("2026-03-09T18:00:00Z")),
            Disposition::Send
        );
    }

    #[test]
    fn opt_outs_suppress_everything_but_the_carrier_answers_and_missing_fields_fail() {
        let site = Site::utc();
        let rx: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"to": "+1", "medication": "m"})).unwrap();
        let noon = utc("2026-03-09T18:00:00Z");
        let mut f = facts("prescription.ready", &rx, &site);
        f.opted_out = true;
        assert_eq!(
            disposition(&f, noon),
            Disposition::Suppress(SuppressReason::OptedOut)
        );
        let answer: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"to": "+1", "text": "bye"})).unwrap();
        let mut f = facts("consent.opted_out", &answer, &site);
        f.opted_out = true;
        assert_eq!(disposition(&f, noon), Disposition::Send);
        let half: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"to": "+1", "medication": " "})).unwrap();
        let f = facts("prescription.ready", &half, &site);
        assert_eq!(
            disposition(&f, noon),
            Disposition::Fail("missing field medication".into())
        );
        let f = facts("appointment.unknown", &rx, &site);
        assert!(matches!(disposition(&f, noon), Disposition::Fail(_)));
        // Past its point: too late.
        let mut f = facts("prescription.ready", &rx, &site);
        f.not_after = Some(noon);
        assert_eq!(
            disposition(&f, noon),
            Disposition::Suppress(SuppressReason::TooLate)
        );
    }

    #[test]
    fn offsets_parse_and_bad_ones_name_the_key() {
        assert_eq!(Offset::parse("72h"), Some(Offset(72 * 60)));
        assert_eq!(Offset::parse("90m"), Some(Offset(90)));
        assert_eq!(Offset::parse("2d"), Some(Offset(2 * 24 * 60)));
        assert_eq!(Offset::parse("0h"), None);
        assert_eq!(Offset::parse("h"), None);
        assert_eq!(Offset(72 * 60).label(), "72h");
        let mut s = OutreachSettings::default();
        s.departments.insert(
            "oncology".into(),
            ReminderOffsets {
                in_person: vec!["tomorrow".into()],
                telehealth: vec![],
            },
        );
        let e = Outreach::new(s, SiteDirectory::default(), NotifySettings::default()).unwrap_err();
        assert!(
            e.starts_with("outreach.departments.oncology.in_person: \"tomorrow\""),
            "{e}"
        );
        let s = OutreachSettings {
            tick_ms: 10_000,
            ..OutreachSettings::default()
        };
        assert!(
            Outreach::new(s, SiteDirectory::default(), NotifySettings::default())
                .unwrap_err()
                .starts_with("outreach.tick_ms")
        );
        assert!(Outreach::default().offsets(None, true).len() == 3);
    }
    fn envelope(v: serde_json::Value) -> crate::event::Envelope {
        crate::event::Envelope::parse(v.to_string().as_bytes(), 1 << 20).unwrap()
    }

    #[test]
    fn a_telehealth_booking_also_sends_the_video_link_and_instructions_by_email() {
        let o = outreach();
        let j = crate::journey::Journey::new(PatientId(Uuid::from_u128(7)), Default::default());
        let booked = envelope(serde_json::json!({
            "id": Uuid::from_u128(11).to_string(), "type": "appointment.booked",
            "occurred_at": "2026-03-01T12:00:00Z", "site": "north", "channel": "ehr",
            "patient": {"mrn": "M1", "phone": "+15550100001", "email": "p@example.org"},
            "appointment_id": "T1", "starts_at": "2026-03-10T15:30:00Z",
            "telehealth_url": "https://video.example.org/j/T1"
        }));
        let mut after = j.clone();
        after.apply(1, &booked);
        let mut changes = OutreachChanges::default();
        let out = on_event(
            &o,
            &booked,
            &j,
            &after,
            utc("2026-03-01T12:00:00Z"),
            &mut changes,
        );
        let templates: Vec<_> = out
            .iter()
            .map(|c| (c.payload["template"].clone(), c.channel))
            .collect();
        assert_eq!(
            templates,
            vec![
                ("appointment.confirmation".into(), Channel::Sms),
                ("appointment.telehealth".into(), Channel::Email)
            ]
        );
        let mail = &out[1].payload;
        assert_eq!(mail["to"], "p@example.org");
        assert_eq!(mail["telehealth_url"], "https://video.example.org/j/T1");
        assert_eq!(mail["local_time"], "Tue 10 Mar 2026, 10:30 CDT");
        assert!(mail["instructions"].as_str().unwrap().contains("camera"));
        // 72 h, 24 h and 1 h reminders planned, the plan replacing any earlier one.
        assert_eq!(changes.replan, vec!["T1".to_string()]);
        assert_eq!(
            changes
                .records
                .iter()
                .filter(|r| r.state == OutreachState::Planned)
                .count(),
            3
        );
        // The two sent ones are recorded too.
        assert_eq!(
            changes
                .records
                .iter()
                .filter(|r| r.state == OutreachState::Sent)
                .count(),
            2
        );
    }

    #[test]
    fn prescription_ready_carries_the_visit_summary_and_education_link() {
        let o = outreach();
        let mut j = crate::journey::Journey::new(PatientId(Uuid::from_u128(7)), Default::default());
        let visit = envelope(serde_json::json!({
            "id": Uuid::from_u128(12).to_string(), "type": "encounter.finished",
            "occurred_at": "2026-03-02T16:00:00Z", "site": "north", "channel": "ehr",
            "patient": {"mrn": "M1", "phone": "+15550100001"},
            "summary": "Contact dermatitis; hydrocortisone 1% twice daily for 7 days.",
            "education_url": "https://learn.example.org/dermatitis"
        }));
        j.apply(1, &visit);
        let ready = envelope(serde_json::json!({
            "id": Uuid::from_u128(13).to_string(), "type": "prescription.ready",
            "occurred_at": "2026-03-02T18:00:00Z", "site": "north", "channel": "pharmacy",
            "patient": {"mrn": "M1", "phone": "+15550100001"},
            "medication": "hydrocortisone 1% cream", "pharmacy": "Main St Pharmacy"
        }));
        let mut after = j.clone();
        after.apply(2, &ready);
        let mut changes = OutreachChanges::default();
        // Noon in Chicago: not quiet.
        let out = on_event(
            &o,
            &ready,
            &j,
            &after,
            utc("2026-03-02T18:00:00Z"),
            &mut changes,
        );
        assert_eq!(out.len(), 1);
        let p = &out[0].payload;
        assert_eq!(p["template"], "prescription.ready");
        assert_eq!(
            p["visit_summary"],
            "Contact dermatitis; hydrocortisone 1% twice daily for 7 days."
        );
        assert_eq!(p["education_url"], "https://learn.example.org/dermatitis");
        // At 23:00 Chicago it waits for 08:00.
        let mut changes = OutreachChanges::default();
        let out = on_event(
            &o,
            &ready,
            &j,
            &after,
            utc("2026-03-03T05:00:00Z"),
            &mut changes,
        );
        assert!(out.is_empty());
        assert_eq!(changes.records[0].state, OutreachState::Planned);
        assert_eq!(changes.records[0].due_at, utc("2026-03-03T14:00:00Z"));
    }

    #[test]
    fn stop_changes_consent_answers_once_and_suppresses_the_next_confirmation() {
        let o = outreach();
        let j = crate::journey::Journey::new(PatientId(Uuid::from_u128(7)), Default::default());
        let stop = envelope(serde_json::json!({
            "id": Uuid::from_u128(14).to_string(), "type": "contact.started",
            "occurred_at": "2026-03-02T18:00:00Z", "site": "north", "channel": "sms",
            "patient": {"phone": "+15550100001"}, "contact_id": "sms-1", "text": "stop"
        }));
        let mut after = j.clone();
        after.apply(1, &stop);
        assert!(after.is_opted_out(Channel::Sms));
        let mut changes = OutreachChanges::default();
        let out = on_event(
            &o,
            &stop,
            &j,
            &after,
            utc("2026-03-02T18:00:00Z"),
            &mut changes,
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].payload["template"], "consent.opted_out");
        assert_eq!(changes.consent.len(), 1);
        assert!(changes.consent[0].opted_out);
        let booked = envelope(serde_json::json!({
            "id": Uuid::from_u128(15).to_string(), "type": "appointment.booked",
            "occurred_at": "2026-03-02T18:01:00Z", "site": "north", "channel": "ehr",
            "patient": {"phone": "+15550100001"},
            "appointment_id": "B1", "starts_at": "2026-03-10T15:30:00Z"
        }));
        let mut later = after.clone();
        later.apply(2, &booked);
        let mut changes = OutreachChanges::default();
        let out = on_event(
            &o,
            &booked,
            &after,
            &later,
            utc("2026-03-02T18:01:00Z"),
            &mut changes,
        );
        assert!(out.is_empty());
        assert_eq!(changes.records[0].state, OutreachState::Suppressed);
        assert_eq!(changes.records[0].reason.as_deref(), Some("opted_out"));
    }
}
