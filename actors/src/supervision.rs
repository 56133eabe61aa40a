//! Restart policies, as in Erlang/OTP: an actor or task that fails is restarted
//! according to its policy, with backoff; more than `max_restarts` restarts within
//! `within_secs` escalates to the parent instead of looping.
//!
//! The rule is plain data ([`RestartTracker::record`]); the patient actor and the
//! runtime's task supervisor apply it.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// When a failed actor is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Restart {
    /// Always restarted (also after it stops normally).
    Permanent,
    /// Restarted only after a failure.
    Transient,
    /// Never restarted.
    Temporary,
}

/// One actor kind's restart policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisionPolicy {
    /// permanent, transient or temporary.
    pub restart: Restart,
    /// Restarts allowed within `within_secs` before escalating.
    pub max_restarts: u32,
    /// The intensity period, seconds.
    pub within_secs: u32,
    /// First backoff between restarts, milliseconds (doubles each restart in the period).
    pub backoff_ms: u64,
    /// Largest backoff, milliseconds.
    pub max_backoff_ms: u64,
}

impl Default for SupervisionPolicy {
    fn default() -> Self {
        SupervisionPolicy {
            restart: Restart::Transient,
            max_restarts: 3,
            within_secs: 10,
            backoff_ms: 100,
            max_backoff_ms: 5_000,
        }
    }
}

impl SupervisionPolicy {
    /// Rejects nonsense with a reason naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.within_secs == 0 {
            return Err("within_secs must be > 0".into());
        }
        if self.max_backoff_ms < self.backoff_ms {
            return Err("max_backoff_ms must be >= backoff_ms".into());
        }
        if self.max_backoff_ms > 600_000 {
            return Err("max_backoff_ms must be <= 600000".into());
        }
        Ok(())
    }
}

/// What to do after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Restart after this backoff.
    Restart { after: Duration },
    /// Too many restarts in the period: hand the failure to the parent.
    Escalate,
    /// The policy says never restart.
    Stop,
}

/// Failures of one actor within the intensity period.
#[derive(Debug, Clone, Default)]
pub struct RestartTracker {
    /// Restart times within the period.
    times: VecDeque<Instant>,
}

impl RestartTracker {
    /// Records a failure at `now` and decides.
    pub fn record(&mut self, now: Instant, policy: &SupervisionPolicy) -> Decision {
        if policy.restart == Restart::Temporary {
            return Decision::Stop;
        }
        let period = Duration::from_secs(u64::from(policy.within_secs));
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) > period)
        {
            self.times.pop_front();
        }
        self.times.push_back(now);
        let n = u32::try_from(self.times.len()).unwrap_or(u32::MAX);
        if n > policy.max_restarts {
            return Decision::Escalate;
        }
        let factor = 1u64 << (n.saturating_sub(1)).min(20);
        let ms = policy
            .backoff_ms
            .saturating_mul(factor)
            .min(policy.max_backoff_ms);
        Decision::Restart {
            after: Duration::from_millis(ms),
        }
    }

    /// Restarts within the current period.
    pub fn recent(&self) -> usize {
        self.times.len()
    }

    /// Forgets past failures (after an escalation was handled).
    pub fn reset(&mut self) {
        self.times.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> SupervisionPolicy {
        SupervisionPolicy {
            restart: Restart::Transient,
            max_restarts: 3,
            within_secs: 10,
            backoff_ms: 100,
            max_backoff_ms: 250,
        }
    }

    #[test]
    fn restarts_back_off_and_the_fourth_failure_in_the_period_escalates() {
        let mut t = RestartTracker::default();
        let now = Instant::now();
        let p = policy();
        assert_eq!(
            t.record(now, &p),
            Decision::Restart {
                after: Duration::from_millis(100)
            }
        );
        assert_eq!(
            t.record(now, &p),
            Decision::Restart {
                after: Duration::from_millis(200)
            }
        );
        assert_eq!(
            t.record(now, &p),
            Decision::Restart {
                after: Duration::from_millis(250)
            }
        );
        assert_eq!(t.record(now, &p), Decision::Escalate);
    }

    #[test]
    fn failures_older_than_the_period_are_forgotten() {
        let mut t = RestartTracker::default();
        let now = Instant::now();
        let p = policy();
        for _ in 0..3 {
            t.record(now, &p);
        }
        let later = now + Duration::from_secs(11);
        assert!(matches!(t.record(later, &p), Decision::Restart { .. }));
        assert_eq!(t.recent(), 1);
    }

    #[test]
    fn a_temporary_actor_is_never_restarted() {
        let p = SupervisionPolicy {
            restart: Restart::Temporary,
            ..policy()
        };
        assert_eq!(
            RestartTracker::default().record(Instant::now(), &p),
            Decision::Stop
        );
    }

    #[test]
    fn an_invalid_policy_names_its_field() {
        let p = SupervisionPolicy {
            within_secs: 0,
            ..policy()
        };
        assert!(p.validate().unwrap_err().contains("within_secs"));
    }
}
