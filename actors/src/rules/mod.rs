//! The routing and staffing rules: plain functions with their thresholds in config
//! structs that validate themselves (they are reloaded live).
//!
//! # Layout
//! - [`frustration`]: signals from the patient's journey (repeat contacts, bot not
//!   resolving, transfers, abandonment, upcoming appointment, open prescription question).
//! - [`priority`]: one priority score comparable across every queue and site.
//! - [`matching`]: which agent gets the offer; timed relaxation (bullseye).
//! - [`overflow`]: saturation and cross-site rebalancing with hysteresis.
//! - [`erlang`]: Erlang C and Erlang A staffing math.
//! - [`red_flags`]: urgent phrases and intents (a safety net, not triage).
//! - [`handoff`]: when the virtual agent hands over (asking for a person).
//! - [`waiting`]: wait announcements and queued callbacks.
//! - [`after_hours`]: who answers a contact that reaches a closed queue.

pub mod after_hours;
pub mod erlang;
pub mod frustration;
pub mod handoff;
pub mod matching;
pub mod overflow;
pub mod priority;
pub mod red_flags;
pub mod waiting;
