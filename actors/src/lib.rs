//! Front Door's actors and the rules they apply.
//!
//! Each patient, queue and agent is an actix actor; the rules that decide things
//! (identity resolution, journey projection, frustration, priority, matching,
//! overflow, staffing math) are plain functions with unit tests beside them, and the
//! actors are thin shells that hold state and call them. This crate knows no SQL,
//! AMQP or HTTP: it talks to [`ports`] that the runtime implements.
//!
//! # Layout
//! - [`ids`]: identifier newtypes (`PatientId`, `Mrn`, `PhoneNumber`, `SiteId`...) with `parse`.
//! - [`compact`]: small sorted vector collections for per-patient state (memory at a million actors).
//! - [`command`]: commands for adapters (notify.send, contact.offer...), with deterministic ids.
//! - [`ehr`]: what is filed in the EHR (a FHIR `Communication` per staff exchange, identity suggestions).
//! - [`event`]: the event contract, parsed at the edge into a typed [`event::Envelope`].
//! - [`intern`]: one shared copy of repeated text (event types, sites) across resident journeys.
//! - [`identity`]: which patient an event's identifiers name; what an explicit link merges.
//! - [`journey`]: the patient journey folded from the event log, and the context view.
//! - [`outreach`]: reminders, templates, consent keywords, quiet hours: what goes out to patients and when.
//! - [`ports`]: the traits the runtime implements (journey store).
//! - [`rules`]: frustration, priority, matching, overflow and Erlang staffing math.
//! - [`patient`]: the patient actor (one per resident patient).
//! - [`supervision`]: restart policies with intensity and period (OTP), as a plain rule.
//! - [`shard`]: patient shards and the [`shard::PatientRegistry`] handle (activation, passivation).
//! - [`sites`]: the site directory (time zone, address, opening hours, holidays, quiet hours) and local time.

pub mod command;
pub mod compact;
pub mod ehr;
pub mod event;
pub mod identity;
pub mod ids;
pub mod intern;
pub mod journey;
pub mod outreach;
pub mod patient;
pub mod ports;
pub mod routing;
pub mod rules;
pub mod shard;
pub mod sites;
pub mod supervision;
