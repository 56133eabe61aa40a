//! The patient journey: everything a staff member needs to see, folded from the
//! append-only event log.
//!
//! [`Journey::apply`] is the only way state changes, both live (a patient actor
//! applying the event it just stored) and on activation (folding the stored log in
//! store order). The two therefore agree exactly: a passivated and revived patient
//! has the same context. Collections are bounded (see [`Limits`]) so a patient with
//! years of history costs a bounded amount of memory; the full log stays in the store.

use std::collections::VecDeque;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::compact::{reserve_one, reserve_one_deque, Keyed, KeyedVec, SortedVecSet};
use crate::event::{AppointmentFields, Author, Channel, Envelope, EventKind, Medication};
use crate::ids::{ContactId, IdentifierKind, PatientId, SiteId};
use crate::intern::intern;

/// Bounds on what a journey keeps in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Timeline entries kept (newest by occurrence).
    pub timeline: usize,
    /// Notes kept.
    pub notes: usize,
    /// Closed contacts kept (open contacts are always kept).
    pub closed_contacts: usize,
    /// Messages and bot turns kept per contact.
    pub messages_per_contact: usize,
    /// Device summaries kept.
    pub device_readings: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeline: 200,
            notes: 50,
            closed_contacts: 50,
            messages_per_contact: 200,
            device_readings: 10,
        }
    }
}

/// One identifier of the patient, as shown to staff.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct IdentifierView {
    /// mrn, portal_id, email or phone.
    pub kind: IdentifierKind,
    /// The value.
    pub value: String,
}

/// Appointment status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AppointmentStatus {
    Booked,
    Rescheduled,
    Cancelled,
    /// The patient did not come.
    #[serde(rename = "no_show")]
    NoShow,
    /// The patient arrived (or the visit took place).
    #[serde(rename = "checked_in")]
    CheckedIn,
}

/// An appointment as the journey knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AppointmentView {
    /// Scheduling system id.
    pub id: String,
    /// Start time.
    pub starts_at: Option<DateTime<Utc>>,
    /// End time, when the scheduling system gave one.
    pub ends_at: Option<DateTime<Utc>>,
    /// Department.
    pub department: Option<String>,
    /// Reason for visit.
    pub reason: Option<String>,
    /// Provider.
    pub provider: Option<String>,
    /// Location.
    pub location: Option<String>,
    /// Telehealth link.
    pub telehealth_url: Option<String>,
    /// Booked, rescheduled, cancelled, no-show or checked in.
    pub status: AppointmentStatus,
    /// Channel it was booked or last changed through.
    pub channel: Channel,
    /// The site it is at (its clock is the one the patient reads).
    pub site: SiteId,
    /// When the patient confirmed it (a reply "C", `appointment.confirmed`); a new
    /// time clears it.
    pub confirmed_at: Option<DateTime<Utc>>,
    /// The start in the site's local time (RFC 3339 with the local offset), filled
    /// for the context view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starts_at_local: Option<String>,
    /// The site's IANA time zone, filled for the context view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
}

impl Keyed for AppointmentView {
    type Key = String;
    fn key(&self) -> &String {
        &self.id
    }
}

/// The current medication list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MedicationList {
    /// The medications.
    pub items: Vec<Medication>,
    /// When the EHR sent this list.
    pub updated_at: DateTime<Utc>,
}

/// Prescription status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PrescriptionStatus {
    Routed,
    Ready,
}

/// A prescription in flight.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrescriptionView {
    /// Pharmacy system id (or the medication when none was sent).
    pub id: String,
    /// Medication.
    pub medication: String,
    /// Pharmacy.
    pub pharmacy: Option<String>,
    /// Routed or ready.
    pub status: PrescriptionStatus,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Keyed for PrescriptionView {
    type Key = String;
    fn key(&self) -> &String {
        &self.id
    }
}

/// A device summary (e.g. a CGM's).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceReadingView {
    /// Device kind.
    pub device: String,
    /// Summary as the device platform sent it.
    pub summary: Value,
    /// When.
    pub occurred_at: DateTime<Utc>,
}

/// A staff note.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NoteView {
    /// Event id of the note.
    pub id: Uuid,
    /// Author.
    pub author: String,
    /// Author's role (nurse, physician...).
    pub role: Option<String>,
    /// Note text.
    pub text: String,
    /// Contact it answers, if any.
    pub contact_id: Option<ContactId>,
    /// When.
    pub occurred_at: DateTime<Utc>,
}

/// Contact state as the journey sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactState {
    Open,
    Abandoned,
    Ended,
}

/// A message inside a contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageView {
    /// patient, staff or bot.
    pub from: Author,
    /// Text.
    pub text: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// One exchange with a virtual agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BotTurnView {
    /// Whether the bot resolved the request in this exchange.
    pub resolved: bool,
    /// Intent the bot detected.
    pub intent: Option<String>,
    /// What the patient said.
    pub patient_text: Option<String>,
    /// What the bot answered.
    pub bot_text: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A transfer between departments.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TransferView {
    /// Department or skill it went to.
    pub to: String,
    /// Agent it came from.
    pub from_agent: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A contact (call, chat, thread, visit, bot session) within the journey.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactView {
    /// Channel's contact id.
    pub id: ContactId,
    /// Channel.
    pub channel: Channel,
    /// Site.
    pub site: SiteId,
    /// First event of the contact.
    pub started_at: DateTime<Utc>,
    /// Intent, from the start or the bot.
    pub intent: Option<String>,
    /// Department or skill asked for.
    pub skill: Option<String>,
    /// Open, abandoned or ended.
    pub state: ContactState,
    /// Messages, oldest first.
    pub messages: Vec<MessageView>,
    /// Bot exchanges, oldest first (the transcript a human receives).
    pub bot_turns: Vec<BotTurnView>,
    /// Transfers, oldest first.
    pub transfers: Vec<TransferView>,
    /// Agent who last handled it.
    pub last_agent: Option<String>,
    /// Disposition at the end.
    pub disposition: Option<String>,
    /// Summary at the end.
    pub summary: Option<String>,
    /// When it ended or was abandoned.
    pub closed_at: Option<DateTime<Utc>>,
    /// The appointment it is about (a reply "R": reschedule this one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub appointment_id: Option<String>,
    /// What the patient's keyword reply meant (`opted_out`, `confirmed`, `reschedule`...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reply: Option<crate::outreach::Reply>,
}

impl Keyed for ContactView {
    type Key = ContactId;
    fn key(&self) -> &ContactId {
        &self.id
    }
}

impl ContactView {
    /// Bot exchanges since the last one that resolved the request.
    pub fn unresolved_bot_exchanges(&self) -> u32 {
        let n = self
            .bot_turns
            .iter()
            .rev()
            .take_while(|t| !t.resolved)
            .count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }
}

/// One line of the cross-channel timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimelineEntry {
    /// Event id.
    pub id: Uuid,
    /// Event type as sent.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Channel.
    pub channel: Channel,
    /// Site.
    pub site: SiteId,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Contact it belongs to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<ContactId>,
    /// A short human summary.
    pub summary: String,
    /// Store order, to break ties between equal timestamps.
    #[serde(skip)]
    pub seq: u64,
}

/// One line of the timeline as a resident journey keeps it: the served
/// [`TimelineEntry`] packed for a million resident patients (88 bytes inline
/// against 136, and one allocation against up to four). The event type and site
/// are interned (one shared copy each); the contact id and the summary share one
/// boxed text. [`TimelineItem::entry`] unpacks it at read time.
#[derive(Debug, Clone, PartialEq)]
pub struct TimelineItem {
    /// Event id.
    pub id: Uuid,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// Store order, to break ties between equal timestamps.
    pub seq: u64,
    /// Event type as sent (interned).
    event_type: Arc<str>,
    /// Site (interned).
    site: Arc<str>,
    /// The contact id (its first `contact_len` bytes; none when 0), then the summary.
    text: Box<str>,
    /// Length of the contact id in `text` (contact ids are at most 128 bytes).
    contact_len: u16,
    /// Channel.
    pub channel: Channel,
}

impl TimelineItem {
    /// The timeline line of a stored event (`seq` is its store sequence number).
    pub fn from_event(seq: u64, e: &Envelope) -> TimelineItem {
        let mut contact = e.contact_id.as_ref().map(|c| c.as_str()).unwrap_or("");
        // `ContactId::parse` bounds contact ids to 128 bytes, so this never clips a
        // parsed event's id; it only keeps `contact_len` honest.
        while contact.len() > usize::from(u16::MAX) {
            let mut end = usize::from(u16::MAX);
            while !contact.is_char_boundary(end) {
                end -= 1;
            }
            contact = &contact[..end];
        }
        let summary = summarize(e);
        let mut text = String::with_capacity(contact.len() + summary.len());
        text.push_str(contact);
        text.push_str(&summary);
        TimelineItem {
            id: e.id,
            occurred_at: e.occurred_at,
            seq,
            event_type: intern(&e.event_type),
            site: intern(e.site.as_str()),
            text: text.into_boxed_str(),
            // unwrap_or: clipped to u16::MAX above.
            contact_len: u16::try_from(contact.len()).unwrap_or(u16::MAX),
            channel: e.channel,
        }
    }

    /// Event type as sent.
    pub fn event_type(&self) -> &str {
        &self.event_type
    }

    /// The one-line summary.
    pub fn summary(&self) -> &str {
        &self.text[usize::from(self.contact_len)..]
    }

    /// The contact it belongs to.
    pub fn contact_id(&self) -> Option<&str> {
        (self.contact_len > 0).then(|| &self.text[..usize::from(self.contact_len)])
    }

    /// The served form.
    pub fn entry(&self) -> TimelineEntry {
        TimelineEntry {
            id: self.id,
            event_type: self.event_type.to_string(),
            channel: self.channel,
            // The site and contact id were parsed when the event was; the packed
            // copies are the same text.
            site: SiteId::from_trusted(&self.site),
            occurred_at: self.occurred_at,
            contact_id: self.contact_id().map(ContactId::from_trusted),
            summary: self.summary().to_string(),
            seq: self.seq,
        }
    }
}

/// The latest visit summary and education link.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VisitSummary {
    /// What the patient may read about the visit.
    pub summary: String,
    /// Patient education material, when an event supplied one.
    pub education_url: Option<String>,
    /// When the visit (or contact) ended.
    pub at: DateTime<Utc>,
}

/// The journey of one patient (and of every provisional record merged into it).
#[derive(Debug, Clone, PartialEq)]
pub struct Journey {
    /// The surviving patient id.
    pub patient_id: PatientId,
    /// Identifiers linked to the patient.
    pub identifiers: SortedVecSet<IdentifierView>,
    /// Provisional records merged into this one.
    pub merged_from: Vec<PatientId>,
    /// Appointments by id.
    pub appointments: KeyedVec<AppointmentView>,
    /// The latest medication list.
    pub medications: Option<MedicationList>,
    /// Prescriptions by id.
    pub prescriptions: KeyedVec<PrescriptionView>,
    /// Recent device summaries, newest last.
    pub device_readings: VecDeque<DeviceReadingView>,
    /// Recent notes, newest last.
    pub notes: VecDeque<NoteView>,
    /// Contacts by id (all open ones, recent closed ones).
    pub contacts: KeyedVec<ContactView>,
    /// Timeline, newest first (packed; [`TimelineItem::entry`] serves it).
    pub timeline: VecDeque<TimelineItem>,
    /// Channels the patient opted out of (STOP), per CTIA keywords.
    pub opted_out: Vec<Channel>,
    /// The latest visit summary and education link (`encounter.finished`, or a
    /// `contact.ended` summary), for the `prescription.ready` message.
    pub visit_summary: Option<VisitSummary>,
    /// Events applied (the whole log, not just what is kept).
    pub events_applied: u64,
    /// Memory bounds.
    pub limits: Limits,
}

impl Journey {
    /// An empty journey.
    pub fn new(patient_id: PatientId, limits: Limits) -> Journey {
        Journey {
            patient_id,
            identifiers: SortedVecSet::new(),
            merged_from: Vec::new(),
            appointments: KeyedVec::new(),
            medications: None,
            prescriptions: KeyedVec::new(),
            device_readings: VecDeque::new(),
            notes: VecDeque::new(),
            contacts: KeyedVec::new(),
            timeline: VecDeque::new(),
            opted_out: Vec::new(),
            visit_summary: None,
            events_applied: 0,
            limits,
        }
    }

    /// Folds a stored log (in store order) into a journey.
    pub fn fold<'a>(
        patient_id: PatientId,
        limits: Limits,
        events: impl IntoIterator<Item = (u64, &'a Envelope)>,
    ) -> Journey {
        let mut j = Journey::new(patient_id, limits);
        for (seq, e) in events {
            j.apply(seq, e);
        }
        j
    }

    /// Applies one stored event (`seq` is its store sequence number).
    pub fn apply(&mut self, seq: u64, e: &Envelope) {
        self.events_applied += 1;
        let at = e.occurred_at;
        match &e.kind {
            EventKind::ContactStarted {
                intent,
                skill,
                text,
            } => {
                let max = self.limits.messages_per_contact;
                let c = self.contact_mut(e);
                c.started_at = c.started_at.min(at);
                if intent.is_some() {
                    c.intent.clone_from(intent);
                }
                if skill.is_some() {
                    c.skill.clone_from(skill);
                }
                if let Some(text) = text {
                    push_bounded_vec(
                        &mut c.messages,
                        MessageView {
                            from: Author::Patient,
                            text: text.clone(),
                            at,
                        },
                        max,
                    );
                    self.read_reply(e, text, true);
                }
            }
            EventKind::ContactMessage { from, text } => {
                let max = self.limits.messages_per_contact;
                let c = self.contact_mut(e);
                push_bounded_vec(
                    &mut c.messages,
                    MessageView {
                        from: *from,
                        text: text.clone(),
                        at,
                    },
                    max,
                );
                if *from == Author::Patient {
                    self.read_reply(e, text, false);
                }
            }
            EventKind::BotTurn {
                resolved,
                intent,
                patient_text,
                bot_text,
                ..
            } => {
                let max = self.limits.messages_per_contact;
                let c = self.contact_mut(e);
                if intent.is_some() {
                    c.intent.clone_from(intent);
                }
                push_bounded_vec(
                    &mut c.bot_turns,
                    BotTurnView {
                        resolved: *resolved,
                        intent: intent.clone(),
                        patient_text: patient_text.clone(),
                        bot_text: bot_text.clone(),
                        at,
                    },
                    max,
                );
            }
            EventKind::ContactTransferred { to, from_agent } => {
                let c = self.contact_mut(e);
                reserve_one(&mut c.transfers);
                c.transfers.push(TransferView {
                    to: to.clone(),
                    from_agent: from_agent.clone(),
                    at,
                });
                c.skill = Some(to.clone());
                if from_agent.is_some() {
                    c.last_agent.clone_from(from_agent);
                }
            }
            EventKind::ContactAbandoned => {
                let c = self.contact_mut(e);
                c.state = ContactState::Abandoned;
                c.closed_at = Some(at);
                self.prune_closed_contacts();
            }
            EventKind::ContactEnded {
                disposition,
                summary,
                agent,
            } => {
                let c = self.contact_mut(e);
                c.state = ContactState::Ended;
                c.closed_at = Some(at);
                c.disposition.clone_from(disposition);
                c.summary.clone_from(summary);
                if agent.is_some() {
                    c.last_agent.clone_from(agent);
                }
                if let Some(summary) = summary {
                    self.visit_summary = Some(VisitSummary {
                        summary: summary.clone(),
                        education_url: None,
                        at,
                    });
                }
                self.prune_closed_contacts();
            }
            EventKind::AppointmentBooked(a) => {
                self.upsert_appointment(a, AppointmentStatus::Booked, e.channel, &e.site)
            }
            EventKind::AppointmentRescheduled(a) => {
                self.upsert_appointment(a, AppointmentStatus::Rescheduled, e.channel, &e.site)
            }
            EventKind::AppointmentCancelled(a) => {
                self.upsert_appointment(a, AppointmentStatus::Cancelled, e.channel, &e.site)
            }
            EventKind::AppointmentNoShow(a) => {
                self.upsert_appointment(a, AppointmentStatus::NoShow, e.channel, &e.site)
            }
            EventKind::AppointmentCheckedIn(a) => {
                self.upsert_appointment(a, AppointmentStatus::CheckedIn, e.channel, &e.site)
            }
            EventKind::AppointmentConfirmed(a) => {
                if let Some(known) = self.appointments.get_mut(&a.appointment_id) {
                    known.confirmed_at = Some(at);
                }
            }
            EventKind::EncounterFinished {
                summary,
                education_url,
            } => {
                if summary.is_some() || education_url.is_some() {
                    self.visit_summary = Some(VisitSummary {
                        summary: summary.clone().unwrap_or_default(),
                        education_url: education_url.clone(),
                        at,
                    });
                }
            }
            EventKind::MedicationsUpdated { medications } => {
                // The newest list by occurrence wins, whatever order they arrive in.
                if self.medications.as_ref().is_none_or(|m| m.updated_at <= at) {
                    self.medications = Some(MedicationList {
                        items: medications.clone(),
                        updated_at: at,
                    });
                }
            }
            EventKind::PrescriptionRouted {
                prescription_id,
                medication,
                pharmacy,
            } => self.upsert_prescription(
                prescription_id,
                medication,
                pharmacy,
                PrescriptionStatus::Routed,
                at,
            ),
            EventKind::PrescriptionReady {
                prescription_id,
                medication,
                pharmacy,
            } => self.upsert_prescription(
                prescription_id,
                medication,
                pharmacy,
                PrescriptionStatus::Ready,
                at,
            ),
            EventKind::DeviceReadings { device, summary } => {
                reserve_one_deque(&mut self.device_readings);
                self.device_readings.push_back(DeviceReadingView {
                    device: device.clone(),
                    summary: summary.clone(),
                    occurred_at: at,
                });
                while self.device_readings.len() > self.limits.device_readings {
                    self.device_readings.pop_front();
                }
            }
            EventKind::AppointmentRequested { .. } => {
                // The request is in the timeline; the scheduling system's answer
                // (appointment.cancelled, .rescheduled) changes the appointment.
            }
            EventKind::NoteRecorded { author, role, text } => {
                reserve_one_deque(&mut self.notes);
                self.notes.push_back(NoteView {
                    id: e.id,
                    author: author.clone(),
                    role: role.clone(),
                    text: text.clone(),
                    contact_id: e.contact_id.clone(),
                    occurred_at: at,
                });
                while self.notes.len() > self.limits.notes {
                    self.notes.pop_front();
                }
            }
            EventKind::IdentityLinked
            | EventKind::Unknown
            | EventKind::AgentState { .. }
            | EventKind::OfferAccepted { .. }
            | EventKind::OfferDeclined { .. }
            | EventKind::ContactWrapped { .. }
            | EventKind::CallbackRequested
            | EventKind::CallbackResult { .. } => {
                if let Some(cid) = &e.contact_id {
                    if self.contacts.contains_key(cid) {
                        // Unknown events inside a known contact keep it current.
                        self.contact_mut(e);
                    }
                }
            }
        }
        self.push_timeline(seq, e);
    }

    fn contact_mut(&mut self, e: &Envelope) -> &mut ContactView {
        // Contact events always carry a contact id (the contract requires it); an
        // event without one is attached to a synthetic per-event contact.
        let id = e
            .contact_id
            .clone()
            .unwrap_or_else(|| ContactId::from_event_id(e.id));
        self.contacts.get_or_insert_with(&id, || ContactView {
            id: id.clone(),
            channel: e.channel,
            site: e.site.clone(),
            started_at: e.occurred_at,
            intent: None,
            skill: None,
            state: ContactState::Open,
            messages: Vec::new(),
            bot_turns: Vec::new(),
            transfers: Vec::new(),
            last_agent: None,
            disposition: None,
            summary: None,
            closed_at: None,
            appointment_id: None,
            reply: None,
        })
    }

    /// True when the patient opted out of `channel`.
    pub fn is_opted_out(&self, channel: Channel) -> bool {
        self.opted_out.contains(&channel)
    }

    /// The appointment a reply is about: the soonest booked or rescheduled one still
    /// ahead at `at`.
    pub fn next_appointment(&self, at: DateTime<Utc>) -> Option<&AppointmentView> {
        self.upcoming_appointments(at).into_iter().next()
    }

    /// Reads a patient's SMS or e-mail text for keywords (`outreach::classify_reply`):
    /// STOP/START change consent for the channel; on a new inbound contact
    /// (`opens`), a keyword or a confirmation closes it (nobody needs to answer), a
    /// "R" makes it a scheduling contact about the next appointment.
    fn read_reply(&mut self, e: &Envelope, text: &str, opens: bool) {
        use crate::outreach::{classify_reply, Reply};
        if !matches!(e.channel, Channel::Sms | Channel::Email) {
            return;
        }
        let at = e.occurred_at;
        let mut reply = classify_reply(text, self.is_opted_out(e.channel));
        match reply {
            Reply::OptOut => {
                if !self.opted_out.contains(&e.channel) {
                    reserve_one(&mut self.opted_out);
                    self.opted_out.push(e.channel);
                }
            }
            Reply::OptIn => self.opted_out.retain(|c| *c != e.channel),
            Reply::Help | Reply::Other => {}
            Reply::Confirm => {
                let next = self.next_appointment(at).map(|a| a.id.clone());
                match next.and_then(|id| self.appointments.get_mut(&id)) {
                    Some(a) => a.confirmed_at = Some(at),
                    None => reply = Reply::Other,
                }
            }
            Reply::Reschedule => {
                let next = self.next_appointment(at).map(|a| a.id.clone());
                if next.is_none() {
                    reply = Reply::Other;
                }
                if opens {
                    let c = self.contact_mut(e);
                    c.intent = Some("reschedule".into());
                    c.skill = Some("scheduling".into());
                    c.appointment_id = next;
                }
            }
        }
        if !opens || reply == Reply::Other {
            return;
        }
        let c = self.contact_mut(e);
        c.reply = Some(reply);
        if reply != Reply::Reschedule {
            c.state = ContactState::Ended;
            c.closed_at = Some(at);
            c.disposition = Some(format!("reply.{}", reply.as_str()));
            self.prune_closed_contacts();
        }
    }

    fn prune_closed_contacts(&mut self) {
        let closed: Vec<(DateTime<Utc>, ContactId)> = self
            .contacts
            .values()
            .filter(|c| c.state != ContactState::Open)
            .map(|c| (c.closed_at.unwrap_or(c.started_at), c.id.clone()))
            .collect();
        if closed.len() <= self.limits.closed_contacts {
            return;
        }
        let mut closed = closed;
        closed.sort();
        let excess = closed.len() - self.limits.closed_contacts;
        for (_, id) in closed.into_iter().take(excess) {
            self.contacts.remove(&id);
        }
    }

    fn upsert_appointment(
        &mut self,
        a: &AppointmentFields,
        status: AppointmentStatus,
        ch: Channel,
        site: &SiteId,
    ) {
        let entry = self
            .appointments
            .get_or_insert_with(&a.appointment_id, || AppointmentView {
                id: a.appointment_id.clone(),
                starts_at: None,
                ends_at: None,
                department: None,
                reason: None,
                provider: None,
                location: None,
                telehealth_url: None,
                status,
                channel: ch,
                site: site.clone(),
                confirmed_at: None,
                starts_at_local: None,
                time_zone: None,
            });
        entry.status = status;
        entry.channel = ch;
        entry.site = site.clone();
        // A confirmation holds for the time confirmed.
        if a.starts_at.is_some() && a.starts_at != entry.starts_at {
            entry.confirmed_at = None;
        }
        // A later event only overwrites the fields it carries.
        macro_rules! keep {
            ($f:ident) => {
                if a.$f.is_some() {
                    entry.$f = a.$f.clone();
                }
            };
        }
        // A new start without an end makes the old end meaningless.
        if a.starts_at.is_some() && a.starts_at != entry.starts_at && a.ends_at.is_none() {
            entry.ends_at = None;
        }
        keep!(starts_at);
        keep!(ends_at);
        keep!(department);
        keep!(reason);
        keep!(provider);
        keep!(location);
        keep!(telehealth_url);
    }

    fn upsert_prescription(
        &mut self,
        id: &Option<String>,
        medication: &str,
        pharmacy: &Option<String>,
        status: PrescriptionStatus,
        at: DateTime<Utc>,
    ) {
        let key = id.clone().unwrap_or_else(|| medication.to_string());
        let entry = self
            .prescriptions
            .get_or_insert_with(&key, || PrescriptionView {
                id: key.clone(),
                medication: medication.to_string(),
                pharmacy: None,
                status,
                updated_at: at,
            });
        entry.status = status;
        entry.updated_at = at;
        entry.medication = medication.to_string();
        if pharmacy.is_some() {
            entry.pharmacy.clone_from(pharmacy);
        }
    }

    fn push_timeline(&mut self, seq: u64, e: &Envelope) {
        // Newest first by (occurred_at, seq); events may arrive out of order.
        let key = (e.occurred_at, seq);
        let pos = self
            .timeline
            .iter()
            .position(|t| (t.occurred_at, t.seq) < key)
            .unwrap_or(self.timeline.len());
        if pos >= self.limits.timeline {
            return;
        }
        let item = TimelineItem::from_event(seq, e);
        reserve_one_deque(&mut self.timeline);
        self.timeline.insert(pos, item);
        self.timeline.truncate(self.limits.timeline);
    }

    /// Upcoming (booked or rescheduled, starting at or after `now`) appointments, soonest first.
    pub fn upcoming_appointments(&self, now: DateTime<Utc>) -> Vec<&AppointmentView> {
        let mut v: Vec<&AppointmentView> = self
            .appointments
            .values()
            .filter(|a| {
                matches!(
                    a.status,
                    AppointmentStatus::Booked | AppointmentStatus::Rescheduled
                )
            })
            .filter(|a| a.starts_at.is_some_and(|t| t >= now))
            .collect();
        v.sort_by_key(|a| a.starts_at);
        v
    }

    /// Open contacts, oldest first.
    pub fn open_contacts(&self) -> Vec<&ContactView> {
        let mut v: Vec<&ContactView> = self
            .contacts
            .values()
            .filter(|c| c.state == ContactState::Open)
            .collect();
        v.sort_by_key(|c| c.started_at);
        v
    }

    /// The context view served to staff desktops.
    pub fn context(&self, now: DateTime<Utc>) -> ContextView {
        let mut appointments: Vec<AppointmentView> = self.appointments.values().cloned().collect();
        appointments.sort_by_key(|a| a.starts_at);
        let mut recent: Vec<ContactView> = self
            .contacts
            .values()
            .filter(|c| c.state != ContactState::Open)
            .cloned()
            .collect();
        recent.sort_by_key(|c| std::cmp::Reverse(c.closed_at));
        recent.truncate(10);
        ContextView {
            patient_id: self.patient_id,
            identifiers: self.identifiers.iter().cloned().collect(),
            merged_from: self.merged_from.clone(),
            upcoming_appointments: self
                .upcoming_appointments(now)
                .into_iter()
                .map(|a| a.id.clone())
                .collect(),
            appointments,
            medications: self.medications.clone(),
            prescriptions: self.prescriptions.values().cloned().collect(),
            device_readings: self.device_readings.iter().rev().cloned().collect(),
            notes: self.notes.iter().rev().cloned().collect(),
            open_contacts: self.open_contacts().into_iter().cloned().collect(),
            recent_contacts: recent,
            timeline: self.timeline.iter().map(TimelineItem::entry).collect(),
            events_total: self.events_applied,
            opted_out: self.opted_out.clone(),
            visit_summary: self.visit_summary.clone(),
            frustration: None,
        }
    }
}

fn push_bounded_vec<T>(v: &mut Vec<T>, item: T, max: usize) {
    reserve_one(v);
    v.push(item);
    if v.len() > max {
        let excess = v.len() - max;
        v.drain(..excess);
    }
}

/// What `GET /v1/patients/{id}/context` returns.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContextView {
    /// Surviving patient id.
    pub patient_id: PatientId,
    /// Linked identifiers.
    pub identifiers: Vec<IdentifierView>,
    /// Provisional records merged in.
    pub merged_from: Vec<PatientId>,
    /// All appointments, by start time.
    pub appointments: Vec<AppointmentView>,
    /// Ids of upcoming appointments, soonest first.
    pub upcoming_appointments: Vec<String>,
    /// Current medication list.
    pub medications: Option<MedicationList>,
    /// Prescriptions.
    pub prescriptions: Vec<PrescriptionView>,
    /// Device summaries, newest first.
    pub device_readings: Vec<DeviceReadingView>,
    /// Notes, newest first.
    pub notes: Vec<NoteView>,
    /// Open contacts with their transcripts.
    pub open_contacts: Vec<ContactView>,
    /// Recently closed contacts, newest first.
    pub recent_contacts: Vec<ContactView>,
    /// Timeline across channels, newest first.
    pub timeline: Vec<TimelineEntry>,
    /// Events in the journey log.
    pub events_total: u64,
    /// Channels the patient opted out of (STOP): nothing but the carrier's answers
    /// goes out on them.
    pub opted_out: Vec<Channel>,
    /// The latest visit summary and education link.
    pub visit_summary: Option<VisitSummary>,
    /// Frustration of the latest contact (filled by the patient actor, which knows the thresholds).
    pub frustration: Option<crate::rules::frustration::Assessment>,
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut out: String = s.chars().take(max).collect();
    out.push('…');
    out
}

fn when(t: &Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_else(|| "an unspecified time".into())
}

/// A one-line summary of an event for the timeline.
pub fn summarize(e: &Envelope) -> String {
    match &e.kind {
        EventKind::ContactStarted { intent, skill, .. } => {
            let mut s = format!("{} contact started", e.channel);
            if let Some(i) = intent {
                s.push_str(&format!(" (intent: {i})"));
            }
            if let Some(k) = skill {
                s.push_str(&format!(" for {k}"));
            }
            s
        }
        EventKind::ContactMessage { from, text } => {
            let who = match from {
                Author::Patient => "Patient",
                Author::Staff => "Staff",
                Author::Bot => "Bot",
            };
            format!("{who}: {}", clip(text, 120))
        }
        EventKind::BotTurn {
            resolved, intent, ..
        } => format!(
            "Virtual agent exchange ({}){}",
            if *resolved {
                "resolved"
            } else {
                "not resolved"
            },
            intent
                .as_deref()
                .map(|i| format!(", intent {i}"))
                .unwrap_or_default()
        ),
        EventKind::ContactTransferred { to, .. } => format!("Transferred to {to}"),
        EventKind::ContactAbandoned => "Abandoned while waiting".into(),
        EventKind::ContactEnded {
            disposition,
            summary,
            ..
        } => {
            let mut s = "Contact ended".to_string();
            if let Some(d) = disposition {
                s.push_str(&format!(" ({d})"));
            }
            if let Some(sum) = summary {
                s.push_str(&format!(": {}", clip(sum, 120)));
            }
            s
        }
        EventKind::AppointmentBooked(a) => appointment_line("booked", a),
        EventKind::AppointmentRescheduled(a) => appointment_line("rescheduled", a),
        EventKind::AppointmentCancelled(a) => appointment_line("cancelled", a),
        EventKind::AppointmentNoShow(a) => appointment_line("missed (no-show)", a),
        EventKind::AppointmentCheckedIn(a) => appointment_line("checked in", a),
        EventKind::AppointmentConfirmed(a) => appointment_line("confirmed by the patient", a),
        EventKind::EncounterFinished { summary, .. } => match summary {
            Some(s) => format!("Visit finished: {}", clip(s, 120)),
            None => "Visit finished".into(),
        },
        EventKind::MedicationsUpdated { medications } => {
            let names: Vec<&str> = medications.iter().map(|m| m.name.as_str()).collect();
            format!(
                "Medication list updated ({}): {}",
                medications.len(),
                clip(&names.join(", "), 120)
            )
        }
        EventKind::PrescriptionRouted {
            medication,
            pharmacy,
            ..
        } => format!(
            "Prescription for {medication} routed{}",
            pharmacy
                .as_deref()
                .map(|p| format!(" to {p}"))
                .unwrap_or_default()
        ),
        EventKind::PrescriptionReady {
            medication,
            pharmacy,
            ..
        } => format!(
            "Prescription for {medication} ready{}",
            pharmacy
                .as_deref()
                .map(|p| format!(" at {p}"))
                .unwrap_or_default()
        ),
        EventKind::DeviceReadings { device, .. } => format!("{device} readings received"),
        EventKind::AppointmentRequested {
            appointment_id,
            action,
        } => format!(
            "Patient asked to {} appointment {}",
            action.as_str(),
            clip(appointment_id, 64)
        ),
        EventKind::NoteRecorded { role, text, .. } => format!(
            "Note{}: {}",
            role.as_deref()
                .map(|r| format!(" by {r}"))
                .unwrap_or_default(),
            clip(text, 120)
        ),
        EventKind::IdentityLinked => "Identifiers linked to this patient".into(),
        EventKind::AgentState { .. } => "Agent state changed".into(),
        EventKind::OfferAccepted { .. } => "Offer accepted by an agent".into(),
        EventKind::OfferDeclined { .. } => "Offer declined by an agent".into(),
        EventKind::ContactWrapped { .. } => "Agent finished wrap-up".into(),
        EventKind::CallbackRequested => "Callback requested".into(),
        EventKind::CallbackResult { answered, .. } => if *answered {
            "Callback answered"
        } else {
            "Callback not answered"
        }
        .into(),
        EventKind::Unknown => format!("{} event", e.event_type),
    }
}

fn appointment_line(verb: &str, a: &AppointmentFields) -> String {
    let mut s = format!(
        "{} appointment {verb}",
        a.department.as_deref().unwrap_or("An")
    );
    if matches!(verb, "booked" | "rescheduled") || a.starts_at.is_some() {
        s.push_str(&format!(" for {}", when(&a.starts_at)));
    }
    if let Some(r) = &a.reason {
        s.push_str(&format!(": {}", clip(r, 80)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(n: u128, ty: &str, at: &str, extra: Value) -> Envelope {
        let mut v = json!({
            "id": Uuid::from_u128(n).to_string(),
            "type": ty,
            "occurred_at": at,
            "site": "north",
            "channel": "portal",
            "patient": {"mrn": "M1"},
        });
        for (k, val) in extra.as_object().unwrap() {
            v[k] = val.clone();
        }
        Envelope::parse(v.to_string().as_bytes(), 1 << 20).unwrap()
    }

    fn sample() -> Vec<Envelope> {
        vec![
            ev(
                1,
                "appointment.booked",
                "2026-11-20T23:00:00Z",
                json!({
                "appointment_id": "A1", "starts_at": "2026-11-27T09:30:00Z",
                "department": "dermatology", "reason": "itchy rash on forearm"}),
            ),
            ev(
                2,
                "medications.updated",
                "2026-11-21T08:00:00Z",
                json!({
                "medications": [{"name": "methotrexate", "dose": "15 mg"}]}),
            ),
            ev(
                3,
                "contact.started",
                "2026-11-23T10:00:00Z",
                json!({"contact_id": "chat-9", "channel": "chat"}),
            ),
            ev(
                4,
                "contact.message",
                "2026-11-23T10:00:05Z",
                json!({
                "contact_id": "chat-9", "from": "patient", "text": "Should I stop methotrexate?"}),
            ),
            ev(
                5,
                "note.recorded",
                "2026-11-23T10:10:00Z",
                json!({
                "contact_id": "chat-9", "author": "rn-4", "role": "nurse", "text": "Keep taking it."}),
            ),
        ]
    }

    #[test]
    fn the_fold_shows_the_appointment_reason_and_current_medications() {
        let evs = sample();
        let p = PatientId::new();
        let j = Journey::fold(
            p,
            Limits::default(),
            evs.iter().enumerate().map(|(i, e)| (i as u64, e)),
        );
        let ctx = j.context("2026-11-23T11:00:00Z".parse().unwrap());
        assert_eq!(
            ctx.appointments[0].reason.as_deref(),
            Some("itchy rash on forearm")
        );
        assert_eq!(ctx.upcoming_appointments, vec!["A1".to_string()]);
        assert_eq!(ctx.medications.unwrap().items[0].name, "methotrexate");
        assert_eq!(ctx.open_contacts.len(), 1);
        assert_eq!(ctx.notes[0].text, "Keep taking it.");
        assert_eq!(ctx.timeline[0].event_type, "note.recorded");
        assert_eq!(ctx.timeline.len(), 5);
    }

    #[test]
    fn the_timeline_is_newest_first_even_when_events_arrive_out_of_order() {
        let evs = sample();
        let mut j = Journey::new(PatientId::new(), Limits::default());
        for (i, e) in evs.iter().rev().enumerate() {
            j.apply(i as u64, e);
        }
        let times: Vec<_> = j.timeline.iter().map(|t| t.occurred_at).collect();
        let mut sorted = times.clone();
        sorted.sort_by(|a, b| b.cmp(a));
        assert_eq!(times, sorted);
    }

    #[test]
    fn a_packed_timeline_line_serves_the_entry_of_its_event() {
        for e in sample() {
            let served = TimelineItem::from_event(7, &e).entry();
            let expected = TimelineEntry {
                id: e.id,
                event_type: e.event_type.clone(),
                channel: e.channel,
                site: e.site.clone(),
                occurred_at: e.occurred_at,
                contact_id: e.contact_id.clone(),
                summary: summarize(&e),
                seq: 7,
            };
            assert_eq!(served, expected);
        }
        let with_contact = &sample()[3];
        assert!(with_contact.contact_id.is_some(), "the sample covers both");
    }

    #[test]
    fn a_packed_timeline_line_is_smaller_than_the_served_one() {
        // docs/benchmarks.md (Passivation, issue 11) counts on these sizes.
        assert_eq!(std::mem::size_of::<TimelineItem>(), 88);
        assert_eq!(std::mem::size_of::<TimelineEntry>(), 136);
    }

    #[test]
    fn an_older_medication_list_arriving_late_does_not_replace_the_newer_one() {
        let newer = ev(
            1,
            "medications.updated",
            "2026-11-22T00:00:00Z",
            json!({"medications": [{"name": "new"}]}),
        );
        let older = ev(
            2,
            "medications.updated",
            "2026-11-01T00:00:00Z",
            json!({"medications": [{"name": "old"}]}),
        );
        let mut j = Journey::new(PatientId::new(), Limits::default());
        j.apply(1, &newer);
        j.apply(2, &older);
        assert_eq!(j.medications.unwrap().items[0].name, "new");
    }

    #[test]
    fn bounded_collections_stay_within_their_limits() {
        let limits = Limits {
            timeline: 3,
            notes: 2,
            closed_contacts: 1,
            messages_per_contact: 2,
            device_readings: 1,
        };
        let mut j = Journey::new(PatientId::new(), limits);
        for i in 0..10u128 {
            let at = format!("2026-11-2{}T00:00:00Z", i % 10);
            j.apply(
                i as u64,
                &ev(i, "note.recorded", &at, json!({"author": "a", "text": "t"})),
            );
            j.apply(
                100 + i as u64,
                &ev(
                    100 + i,
                    "contact.ended",
                    &at,
                    json!({"contact_id": format!("c{i}")}),
                ),
            );
        }
        assert_eq!(j.timeline.len(), 3);
        assert_eq!(j.notes.len(), 2);
        assert_eq!(j.contacts.len(), 1);
        assert_eq!(j.events_applied, 20);
    }

    #[test]
    fn a_no_show_or_a_check_in_leaves_the_upcoming_list_and_keeps_the_details() {
        let mut j = Journey::new(PatientId::new(), Limits::default());
        let booked = |n: u128, id: &str| {
            ev(
                n,
                "appointment.booked",
                "2026-11-20T09:00:00Z",
                json!({
                "appointment_id": id, "starts_at": "2026-12-01T09:30:00Z",
                "ends_at": "2026-12-01T10:00:00Z", "department": "dermatology"}),
            )
        };
        j.apply(1, &booked(1, "A1"));
        j.apply(2, &booked(2, "A2"));
        j.apply(
            3,
            &ev(
                3,
                "appointment.no_show",
                "2026-12-01T10:00:00Z",
                json!({"appointment_id": "A1"}),
            ),
        );
        j.apply(
            4,
            &ev(
                4,
                "appointment.checked_in",
                "2026-12-01T09:20:00Z",
                json!({"appointment_id": "A2"}),
            ),
        );
        let now = "2026-11-30T00:00:00Z".parse().unwrap();
        assert!(j.upcoming_appointments(now).is_empty());
        let a1 = j.appointments.get("A1").unwrap();
        assert_eq!(a1.status, AppointmentStatus::NoShow);
        assert_eq!(a1.department.as_deref(), Some("dermatology"));
        assert_eq!(a1.ends_at, Some("2026-12-01T10:00:00Z".parse().unwrap()));
        assert_eq!(
            j.appointments.get("A2").unwrap().status,
            AppointmentStatus::CheckedIn
        );
        assert_eq!(
            j.timeline[0].summary(),
            "An appointment missed (no-show)",
            "the timeline says what happened without inventing a time"
        );
    }

    #[test]
    fn unresolved_bot_exchanges_count_since_the_last_resolution() {
        let mut j = Journey::new(PatientId::new(), Limits::default());
        for (i, resolved) in [true, false, false].into_iter().enumerate() {
            j.apply(
                i as u64,
                &ev(
                    i as u128,
                    "bot.turn",
                    "2026-11-20T00:00:00Z",
                    json!({"contact_id": "b1", "resolved": resolved, "channel": "iva"}),
                ),
            );
        }
        let c = j.contacts.values().next().unwrap();
        assert_eq!(c.unresolved_bot_exchanges(), 2);
    }
}
