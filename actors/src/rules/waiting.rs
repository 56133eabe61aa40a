//! # While the patient waits: announcements and callbacks
//!
//! A patient in a queue hears (or reads) where they stand: a `queue.announce` on
//! entry and then every `interval_secs`, with their position and the estimated wait
//! the queue already computes (`super::overflow::estimated_wait_secs`). When the
//! estimate is unknown (nobody staffed yet) the message says so instead of
//! guessing. Announcements stop once the contact is offered to an agent.
//!
//! A patient waiting in a voice queue may ask to be called back instead of holding:
//! the contact keeps its place, and when an agent takes it the channel is told to
//! dial (`callback.dial`). An unanswered callback is tried again after
//! `retry_after_secs`, at most `max_attempts` times, then the contact closes with
//! the reason.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::event::Channel;

/// Wait announcements (reloadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnnounceConfig {
    /// Seconds between announcements after the first (on queue entry).
    pub interval_secs: u32,
    /// Channels announcements go to (the contact's own channel); any other
    /// channel gets none (email waits silently, for example).
    pub channels: BTreeSet<Channel>,
}

impl Default for AnnounceConfig {
    fn default() -> Self {
        AnnounceConfig {
            interval_secs: 60,
            channels: BTreeSet::from([Channel::Voice, Channel::Sms, Channel::Chat, Channel::Iva]),
        }
    }
}

impl AnnounceConfig {
    /// Refuses an interval too short to be meant (it would flood an SMS thread).
    pub fn validate(&self) -> Result<(), String> {
        if self.interval_secs < 10 {
            return Err(format!(
                "interval_secs must be at least 10 (got {})",
                self.interval_secs
            ));
        }
        Ok(())
    }

    /// Whether `channel` hears announcements.
    pub fn on(&self, channel: Channel) -> bool {
        self.channels.contains(&channel)
    }
}

/// The words of an announcement: position and wait, or an honest "unknown".
pub fn announcement_text(position: Option<u32>, estimate_secs: Option<f64>) -> String {
    let place = match position {
        Some(0) | None => "An agent will be with you shortly.".to_string(),
        Some(1) => "You are next in line.".to_string(),
        Some(p) => format!("You are number {p} in line."),
    };
    let wait = match estimate_secs {
        None => "We cannot estimate the wait right now.".to_string(),
        Some(s) if s < 60.0 => "The estimated wait is less than a minute.".to_string(),
        Some(s) => {
            let mins = (s / 60.0).ceil() as u64;
            format!(
                "The estimated wait is about {mins} minute{}.",
                if mins == 1 { "" } else { "s" }
            )
        }
    };
    format!("{place} {wait}")
}

/// Callback retries (reloadable).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackPolicy {
    /// Dial attempts before the contact closes unanswered.
    pub max_attempts: u32,
    /// Seconds between an unanswered dial and the next try.
    pub retry_after_secs: u32,
}

impl Default for CallbackPolicy {
    fn default() -> Self {
        CallbackPolicy {
            max_attempts: 3,
            retry_after_secs: 120,
        }
    }
}

impl CallbackPolicy {
    /// Refuses a policy that never dials or retries at once.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=10).contains(&self.max_attempts) {
            return Err(format!(
                "max_attempts must be 1-10 (got {})",
                self.max_attempts
            ));
        }
        if self.retry_after_secs == 0 {
            return Err("retry_after_secs must be > 0".into());
        }
        Ok(())
    }
}

/// A queued callback, kept on the contact's routing record (durable: a new leader
/// keeps it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Callback {
    /// When the patient asked for it.
    pub requested_at: DateTime<Utc>,
    /// Dials made so far.
    pub attempts: u32,
    /// When the next try may be offered (after an unanswered dial).
    pub retry_at: Option<DateTime<Utc>>,
}

/// What happens after a dial nobody answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterNoAnswer {
    /// Offer it again from this time, keeping its place.
    Retry(DateTime<Utc>),
    /// Attempts used up: close the contact.
    GiveUp,
}

/// The next step after the `attempts`-th dial went unanswered.
pub fn after_no_answer(
    attempts: u32,
    now: DateTime<Utc>,
    policy: &CallbackPolicy,
) -> AfterNoAnswer {
    if attempts >= policy.max_attempts {
        AfterNoAnswer::GiveUp
    } else {
        AfterNoAnswer::Retry(now + Duration::seconds(i64::from(policy.retry_after_secs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_estimate_is_said_not_guessed() {
        let t = announcement_text(Some(3), None);
        assert!(t.contains("number 3"), "{t}");
        assert!(t.contains("cannot estimate"), "{t}");
        assert!(!t.contains("minute"), "{t}");
    }

    #[test]
    fn a_known_estimate_is_rounded_up_to_minutes() {
        assert!(announcement_text(Some(1), Some(61.0)).contains("about 2 minutes"));
        assert!(announcement_text(Some(2), Some(30.0)).contains("less than a minute"));
        assert!(announcement_text(Some(2), Some(60.0)).contains("about 1 minute."));
    }

    #[test]
    fn callbacks_retry_until_the_attempts_are_used_up() {
        let p = CallbackPolicy::default();
        let now = Utc::now();
        assert_eq!(
            after_no_answer(1, now, &p),
            AfterNoAnswer::Retry(now + Duration::seconds(120))
        );
        assert_eq!(
            after_no_answer(2, now, &p),
            AfterNoAnswer::Retry(now + Duration::seconds(120))
        );
        assert_eq!(after_no_answer(3, now, &p), AfterNoAnswer::GiveUp);
    }

    #[test]
    fn nonsense_policies_are_refused_with_their_key() {
        let p = CallbackPolicy {
            max_attempts: 0,
            ..CallbackPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("max_attempts"));
        let a = AnnounceConfig {
            interval_secs: 1,
            ..AnnounceConfig::default()
        };
        assert!(a.validate().unwrap_err().contains("interval_secs"));
    }
}
