//! The figures of one run, per queue (site, skill) and hour.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

const HOUR_MS: i64 = 3_600_000;

/// A queue: site and skill.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct QueueKey(pub String, pub String);

impl QueueKey {
    /// The queue of a contact at `site` needing `skill`.
    pub fn new(site: &frontdoor_actors::ids::SiteId, skill: &str) -> QueueKey {
        QueueKey(site.as_str().to_string(), skill.to_string())
    }

    /// The queue from its parts.
    pub fn from_parts(site: &str, skill: &str) -> QueueKey {
        QueueKey(site.to_string(), skill.to_string())
    }

    /// Its site.
    pub fn site(&self) -> &str {
        &self.0
    }

    /// `site/skill`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.0, self.1)
    }
}

/// Counts and sums of one queue in one hour (by when contacts entered the queue;
/// busy and staffed time by when they were spent).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Cell {
    /// Contacts that needed a human.
    pub arrivals: u64,
    /// Answered by an agent.
    pub answered: u64,
    /// Answered within the service-level threshold.
    pub within_target: u64,
    /// Sum of waits of the answered, ms.
    pub wait_ms: i64,
    /// Patients who left while waiting.
    pub abandoned: u64,
    /// Answered by an agent of another site.
    pub overflowed: u64,
    /// Escalation signals fired on the contacts entering the queue.
    pub escalations: BTreeMap<String, u64>,
    /// Agent time spent on the queue's contacts (handling and wrap-up), ms.
    pub busy_ms: i64,
    /// Time of agents with the skill at the site, logged in, ms.
    pub staffed_ms: i64,
    /// Sum of handle times (answer to end of wrap-up) of the answered, ms.
    pub handle_ms: i64,
    /// Handle times summed.
    pub handled: u64,
}

/// Figures of a run.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// Service-level threshold, ms.
    target_ms: i64,
    /// By queue, then hour (ms since the epoch / 3.6e6).
    pub cells: BTreeMap<QueueKey, BTreeMap<i64, Cell>>,
    /// Agents: site, skills, logged in since (None: offline).
    agents: HashMap<String, (String, Vec<String>, Option<i64>)>,
}

fn split(from: i64, to: i64, mut f: impl FnMut(i64, i64)) {
    let mut t = from;
    while t < to {
        let hour = t.div_euclid(HOUR_MS);
        let end = ((hour + 1) * HOUR_MS).min(to);
        f(hour, end - t);
        t = end;
    }
}

impl RunStats {
    /// Empty figures for a service-level threshold of `target_secs`.
    pub fn new(target_secs: u32) -> RunStats {
        RunStats {
            target_ms: i64::from(target_secs) * 1000,
            ..RunStats::default()
        }
    }

    fn cell(&mut self, q: &QueueKey, at: i64) -> &mut Cell {
        self.cells
            .entry(q.clone())
            .or_default()
            .entry(at.div_euclid(HOUR_MS))
            .or_default()
    }

    /// A contact entered `q`.
    pub fn arrival(&mut self, q: &QueueKey, at: i64) {
        self.cell(q, at).arrivals += 1;
    }

    /// A signal fired on a contact entering `q`.
    pub fn escalation(&mut self, q: &QueueKey, at: i64, signal: &str) {
        *self
            .cell(q, at)
            .escalations
            .entry(signal.to_string())
            .or_default() += 1;
    }

    /// A contact that entered `q` at `entry` was answered after `wait` ms.
    pub fn answered(&mut self, q: &QueueKey, entry: i64, wait: i64) {
        let target = self.target_ms;
        let c = self.cell(q, entry);
        c.answered += 1;
        c.wait_ms += wait;
        if wait <= target {
            c.within_target += 1;
        }
    }

    /// It was answered at another site.
    pub fn overflow(&mut self, q: &QueueKey, entry: i64) {
        self.cell(q, entry).overflowed += 1;
    }

    /// A patient left `q` after waiting `waited` ms.
    pub fn abandoned(&mut self, q: &QueueKey, entry: i64, waited: i64) {
        let _ = waited;
        self.cell(q, entry).abandoned += 1;
    }

    /// `agent` spent `from..to` on a contact of `q` (counted on the agent's own
    /// site's queue of that skill).
    pub fn busy(&mut self, q: &QueueKey, agent: &str, from: i64, to: i64) {
        let site = self
            .agents
            .get(agent)
            .map(|a| a.0.clone())
            .unwrap_or_else(|| q.0.clone());
        let own = QueueKey(site, q.1.clone());
        self.cell(q, from).handle_ms += to - from;
        self.cell(q, from).handled += 1;
        let mut parts = Vec::new();
        split(from, to, |h, ms| parts.push((h, ms)));
        for (h, ms) in parts {
            self.cells
                .entry(own.clone())
                .or_default()
                .entry(h)
                .or_default()
                .busy_ms += ms;
        }
    }

    /// An agent's presence changed (logged in: available or away).
    pub fn staffing(
        &mut self,
        agent: &str,
        site: &str,
        skills: &BTreeMap<String, u8>,
        logged_in: bool,
        now: i64,
    ) {
        self.log_out(agent, now);
        self.agents.insert(
            agent.to_string(),
            (
                site.to_string(),
                skills.keys().cloned().collect(),
                logged_in.then_some(now),
            ),
        );
    }

    fn log_out(&mut self, agent: &str, now: i64) {
        let Some((site, skills, Some(since))) = self.agents.get(agent).cloned() else {
            return;
        };
        let mut parts = Vec::new();
        split(since, now, |h, ms| parts.push((h, ms)));
        for skill in skills {
            for (h, ms) in &parts {
                self.cells
                    .entry(QueueKey(site.clone(), skill.clone()))
                    .or_default()
                    .entry(*h)
                    .or_default()
                    .staffed_ms += ms;
            }
        }
        if let Some(a) = self.agents.get_mut(agent) {
            a.2 = Some(now);
        }
    }

    /// The run ended at `end`: staffed time up to then is counted.
    pub fn close(&mut self, end: i64) {
        let mut ids: Vec<String> = self.agents.keys().cloned().collect();
        ids.sort();
        for a in ids {
            self.log_out(&a, end);
        }
    }
}
