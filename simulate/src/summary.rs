//! What a run did: counted by the simulator, plus the runtime's own totals for
//! what only it knows (escalations, overflows), read from `/metrics`.

use std::collections::BTreeMap;
use std::fmt;

/// Counters of one run.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Events sent, by type.
    pub events_by_type: BTreeMap<String, u64>,
    /// Responses by status class (`2xx`, `4xx`, `5xx`, `transport`).
    pub responses: BTreeMap<String, u64>,
    /// Requests retried after a 429 or 503 with `Retry-After` (over AMQP: events
    /// published again after a nack or a return).
    pub retries: u64,
    /// Events went over RabbitMQ (`--amqp`), not HTTP.
    pub over_amqp: bool,
    /// AMQP: publishes made (first attempts and republishes).
    pub published: u64,
    /// AMQP: events the broker confirmed (acked and routed).
    pub confirmed: u64,
    /// AMQP: publishes the broker nacked.
    pub nacked: u64,
    /// AMQP: publishes returned unroutable (`mandatory`, no queue bound).
    pub returned: u64,
    /// AMQP: commands received from the commands exchange, by type (each id once).
    pub commands_by_type: BTreeMap<String, u64>,
    /// AMQP: commands received again under an id already seen (at-least-once relay).
    pub commands_duplicate: u64,
    /// AMQP: deliveries on the commands queue that were not commands.
    pub commands_unreadable: u64,
    /// The runtime's broker deliveries by outcome (`stored`, `routed`, …), from
    /// `/metrics` at the end.
    pub broker_deliveries: BTreeMap<String, f64>,
    /// The first few failures (type and status only: bodies may name fields).
    pub error_samples: Vec<String>,
    /// Contacts started.
    pub contacts_started: u64,
    /// Of those, repeat contacts (same patient again, incl. callbacks after abandoning).
    pub repeat_contacts: u64,
    /// Virtual-agent contacts.
    pub bot_contacts: u64,
    /// Virtual-agent contacts resolved without a human.
    pub bot_contained: u64,
    /// Virtual-agent contacts handed to a human (two failures, billing, asked for a
    /// person, a red flag).
    pub bot_handed_off: u64,
    /// Virtual-agent contacts that opened with a red flag.
    pub red_flags: u64,
    /// Contacts queued for a human (incl. transfers and hand-offs).
    pub queued: u64,
    /// Offers the desktops saw.
    pub offers_seen: u64,
    /// Offers declined.
    pub offers_declined: u64,
    /// Contacts answered (offer accepted, and the runtime took the acceptance).
    pub answered: u64,
    /// Acceptances the runtime refused because the offer had ended before they
    /// arrived (taken back from `answered`; the contact waited on).
    pub answers_refused: u64,
    /// Answered within the service-level target (real seconds).
    pub answered_within_target: u64,
    /// Sum of real waits of answered contacts, seconds.
    pub wait_secs_sum: f64,
    /// Contacts served to the end by an agent.
    pub served: u64,
    /// Transfers.
    pub transfers: u64,
    /// Contacts abandoned while waiting.
    pub abandoned: u64,
    /// Contacts still waiting when the run closed (abandoned at close).
    pub left_at_close: u64,
    /// Appointments booked, prescriptions routed, notes recorded.
    pub follow_ups: u64,
    /// Escalations by signal, from the runtime's `/metrics` at the end.
    pub escalations: BTreeMap<String, f64>,
    /// Contacts moved between sites, from the runtime's `/metrics` at the end.
    pub overflows: f64,
    /// The runtime's own service level by site/skill at the end, if exported.
    pub runtime_service_level: BTreeMap<String, f64>,
    /// Real seconds the run took.
    pub elapsed_secs: f64,
    /// Simulated hours covered.
    pub simulated_hours: f64,
    /// The service-level target used, real seconds.
    pub sl_target_secs: f64,
}

/// How a response is counted: `2xx`, `4xx`, `5xx`..., except 401 and 429, counted
/// by themselves because each has one cause the summary names (no token; the
/// runtime's per-token rate limit).
pub fn response_class(status: u16) -> String {
    match status {
        401 | 429 => status.to_string(),
        s => format!("{}xx", s / 100),
    }
}

impl Summary {
    /// Events sent in total.
    pub fn events_sent(&self) -> u64 {
        self.events_by_type.values().sum()
    }

    /// Failed requests (4xx, 5xx and transport errors; not throttled or shed ones;
    /// over AMQP, events not confirmed after every retry).
    pub fn errors(&self) -> u64 {
        self.responses
            .iter()
            .filter(|(k, _)| {
                !matches!(
                    k.as_str(),
                    "2xx" | "confirmed" | "throttled" | "shed" | crate::driver::OFFER_ENDED_CLASS
                )
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Events the runtime refused with 429 (rate limited) after every retry.
    pub fn throttled(&self) -> u64 {
        self.responses.get("throttled").copied().unwrap_or(0)
    }

    /// Offer answers (accepted or declined) the runtime refused with 422 because
    /// the offer had already ended: it timed out, or the patient left, first.
    pub fn offer_answers_too_late(&self) -> u64 {
        self.responses
            .get(crate::driver::OFFER_ENDED_CLASS)
            .copied()
            .unwrap_or(0)
    }

    /// Events the runtime shed with 503 (overloaded, unavailable) after every retry.
    pub fn shed(&self) -> u64 {
        self.responses.get("shed").copied().unwrap_or(0)
    }

    /// Answered within target over answered + abandoned (abandons count against it).
    pub fn service_level(&self) -> Option<f64> {
        let denom = self.answered + self.abandoned;
        (denom > 0).then(|| self.answered_within_target as f64 / denom as f64)
    }

    /// Contained over all bot contacts that finished in the bot or were handed off.
    pub fn containment(&self) -> Option<f64> {
        let denom = self.bot_contained + self.bot_handed_off;
        (denom > 0).then(|| self.bot_contained as f64 / denom as f64)
    }

    /// Fills the runtime-side figures from a `/metrics` text.
    pub fn read_runtime_metrics(&mut self, text: &str) {
        for s in parse_samples(text) {
            match s.name.as_str() {
                "frontdoor_escalations_total" => {
                    let signal = s.label("signal").unwrap_or("unknown").to_string();
                    *self.escalations.entry(signal).or_default() += s.value;
                }
                "frontdoor_overflow_total" => self.overflows += s.value,
                "frontdoor_broker_deliveries_total" => {
                    let outcome = s.label("outcome").unwrap_or("unknown").to_string();
                    *self.broker_deliveries.entry(outcome).or_default() += s.value;
                }
                "frontdoor_service_level_ratio" => {
                    let key = format!(
                        "{}/{}",
                        s.label("site").unwrap_or("?"),
                        s.label("skill").unwrap_or("?")
                    );
                    self.runtime_service_level.insert(key, s.value);
                }
                _ => {}
            }
        }
    }
}

fn pct(x: Option<f64>) -> String {
    x.map(|v| format!("{:.1} %", v * 100.0))
        .unwrap_or_else(|| "n/a".into())
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "simulated {:.1} h in {:.1} s",
            self.simulated_hours, self.elapsed_secs
        )?;
        writeln!(
            f,
            "events sent: {} ({:.0}/s)",
            self.events_sent(),
            self.events_sent() as f64 / self.elapsed_secs.max(0.001)
        )?;
        for (t, n) in &self.events_by_type {
            writeln!(f, "  {t:<24} {n}")?;
        }
        let responses: Vec<String> = self
            .responses
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "responses: {}", responses.join(", "))?;
        if self.over_amqp {
            writeln!(
                f,
                "amqp: published {} (incl. republished), confirmed {}, nacked {}, returned {}",
                self.published, self.confirmed, self.nacked, self.returned
            )?;
            let commands: Vec<String> = self
                .commands_by_type
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(
                f,
                "commands received: {} [{}]; duplicates {}; unreadable {}",
                self.commands_by_type.values().sum::<u64>(),
                commands.join(", "),
                self.commands_duplicate,
                self.commands_unreadable
            )?;
            let deliveries: Vec<String> = self
                .broker_deliveries
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            writeln!(
                f,
                "broker deliveries (runtime): [{}]",
                deliveries.join(", ")
            )?;
        }
        writeln!(
            f,
            "throttled (429 after retries): {}; shed (503 after retries): {}; retried after Retry-After: {}",
            self.throttled(),
            self.shed(),
            self.retries
        )?;
        writeln!(
            f,
            "offer answers too late (422, the offer had ended: timed out or the patient left): {}; acceptances taken back: {}",
            self.offer_answers_too_late(),
            self.answers_refused
        )?;
        writeln!(f, "errors: {}", self.errors())?;
        if let Some(n) = self.responses.get("401") {
            writeln!(
                f,
                "  {n} refused with 401: no token or an unknown one (--token, else $FRONTDOOR_TOKEN)"
            )?;
        }
        let throttled = self.throttled();
        if throttled > 0 {
            let n = throttled;
            writeln!(
                f,
                "  {n} refused with 429 (after every retry) by the runtime's per-token rate limit (security.events_rate_per_sec, security.events_burst): raise them for a surge, e.g. FRONTDOOR__SECURITY__EVENTS_RATE_PER_SEC=5000 FRONTDOOR__SECURITY__EVENTS_BURST=10000"
            )?;
        }
        for e in &self.error_samples {
            writeln!(f, "  {e}")?;
        }
        writeln!(
            f,
            "contacts started: {} (repeat {})",
            self.contacts_started, self.repeat_contacts
        )?;
        writeln!(
            f,
            "virtual agent: {} contacts, {} contained, {} handed off (containment {}); {} red flags",
            self.bot_contacts,
            self.bot_contained,
            self.bot_handed_off,
            pct(self.containment()),
            self.red_flags
        )?;
        writeln!(
            f,
            "queued for a human: {}; offers seen {} (declined {}); answered {}; served {}; transferred {}; abandoned by patients {}; left at close {}",
            self.queued, self.offers_seen, self.offers_declined, self.answered, self.served, self.transfers, self.abandoned, self.left_at_close
        )?;
        let asa = if self.answered > 0 {
            format!("{:.2} s", self.wait_secs_sum / self.answered as f64)
        } else {
            "n/a".into()
        };
        writeln!(
            f,
            "service level achieved ({:.0} s, real clock, abandons count against): {}; average speed of answer {asa}",
            self.sl_target_secs,
            pct(self.service_level())
        )?;
        writeln!(
            f,
            "follow-ups (appointments, prescriptions, notes): {}",
            self.follow_ups
        )?;
        let esc: f64 = self.escalations.values().fold(0.0, |a, b| a + b);
        let by: Vec<String> = self
            .escalations
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        writeln!(f, "escalations (runtime): {esc} [{}]", by.join(", "))?;
        writeln!(f, "overflows between sites (runtime): {}", self.overflows)?;
        if !self.runtime_service_level.is_empty() {
            let sl: Vec<String> = self
                .runtime_service_level
                .iter()
                .map(|(k, v)| format!("{k} {:.2}", v))
                .collect();
            writeln!(f, "runtime service level by queue: {}", sl.join(", "))?;
        }
        Ok(())
    }
}

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Labels in order.
    pub labels: Vec<(String, String)>,
    /// Value.
    pub value: f64,
}

impl Sample {
    /// A label's value.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the samples of a Prometheus text exposition (comments skipped;
/// label values without escaped quotes, which is all this runtime emits).
pub fn parse_samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (head, value) = match line.rfind('}') {
            Some(i) => (&line[..=i], line[i + 1..].trim()),
            None => match line.split_once(' ') {
                Some((h, v)) => (h, v.trim()),
                None => continue,
            },
        };
        let value = value.split_whitespace().next().unwrap_or("");
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => {
                let body = rest.trim_end_matches('}');
                let labels = body
                    .split("\",")
                    .filter_map(|kv| {
                        let (k, v) = kv.split_once('=')?;
                        Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (head.to_string(), Vec::new()),
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_parse_with_and_without_labels() {
        let text = "# HELP x y\n# TYPE frontdoor_overflow_total counter\nfrontdoor_overflow_total{from_site=\"east\",to_site=\"north\",skill=\"billing\"} 3\nfrontdoor_patients_resident 12\n";
        let s = parse_samples(text);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].label("to_site"), Some("north"));
        assert_eq!(s[0].value, 3.0);
        assert_eq!(s[1].name, "frontdoor_patients_resident");
    }

    #[test]
    fn the_summary_reads_escalations_and_overflows_from_the_runtime() {
        let mut sum = Summary::default();
        sum.read_runtime_metrics(
            "frontdoor_escalations_total{signal=\"repeat_contacts\"} 2\nfrontdoor_escalations_total{signal=\"bot_not_resolving\"} 5\nfrontdoor_overflow_total{from_site=\"east\",to_site=\"north\",skill=\"billing\"} 3\nfrontdoor_overflow_total{from_site=\"east\",to_site=\"south\",skill=\"billing\"} 1\n",
        );
        assert_eq!(sum.escalations.values().sum::<f64>(), 7.0);
        assert_eq!(sum.overflows, 4.0);
    }

    #[test]
    fn over_amqp_the_summary_separates_published_confirmed_nacked_and_returned() {
        let mut sum = Summary {
            over_amqp: true,
            published: 12,
            confirmed: 9,
            nacked: 1,
            returned: 2,
            ..Summary::default()
        };
        sum.responses.insert("confirmed".into(), 9);
        sum.responses.insert("returned".into(), 1);
        sum.commands_by_type.insert("contact.offer".into(), 4);
        sum.read_runtime_metrics("frontdoor_broker_deliveries_total{outcome=\"stored\"} 7\n");
        assert_eq!(
            sum.errors(),
            1,
            "only the event never confirmed is an error"
        );
        let text = sum.to_string();
        assert!(
            text.contains(
                "amqp: published 12 (incl. republished), confirmed 9, nacked 1, returned 2"
            ),
            "{text}"
        );
        assert!(
            text.contains("commands received: 4 [contact.offer 4]"),
            "{text}"
        );
        assert!(
            text.contains("broker deliveries (runtime): [stored 7]"),
            "{text}"
        );
    }

    #[test]
    fn service_level_counts_abandons_against_it() {
        let s = Summary {
            answered: 8,
            answered_within_target: 6,
            abandoned: 2,
            ..Summary::default()
        };
        assert_eq!(s.service_level(), Some(0.6));
        assert_eq!(Summary::default().service_level(), None);
    }

    #[test]
    fn the_summary_names_rate_limited_and_unauthorized_events() {
        let mut sum = Summary::default();
        for status in [202, 202, 401, 503] {
            *sum.responses.entry(response_class(status)).or_default() += 1;
        }
        // A 429 still refused after every retry is counted as throttled.
        *sum.responses.entry("throttled".into()).or_default() += 3;
        // Offer answers that arrived after the offer ended are no errors either.
        *sum.responses
            .entry(crate::driver::OFFER_ENDED_CLASS.into())
            .or_default() += 4;
        sum.answers_refused = 3;
        assert_eq!(sum.errors(), 2);
        assert_eq!(sum.offer_answers_too_late(), 4);
        assert_eq!(sum.throttled(), 3);
        let text = sum.to_string();
        assert!(
            text.contains(
                "3 refused with 429 (after every retry) by the runtime's per-token rate limit"
            ),
            "{text}"
        );
        assert!(text.contains("1 refused with 401"), "{text}");
        assert!(text.contains("5xx 1"), "{text}");
        assert!(
            text.contains("the patient left): 4; acceptances taken back: 3"),
            "{text}"
        );
    }
}
