//! Both runs side by side: per queue and hour, service level, average speed of
//! answer, abandonment, escalations by signal, overflows, occupancy, and Erlang C/A's
//! prediction for the hour's arrivals, handle time and staffing. As a terminal
//! table, JSON, and a self-contained HTML page with SVG plots.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use frontdoor_actors::rules::erlang::{erlang_a, erlang_c};
use serde::Serialize;

use super::stats::{Cell, QueueKey, RunStats};

/// One run's figures for one queue in one hour (or the whole window).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Row {
    /// Contacts that needed a human.
    pub offered: u64,
    /// Answered.
    pub answered: u64,
    /// Share answered within the threshold, of those offered (abandons count against).
    pub service_level: Option<f64>,
    /// Average speed of answer, seconds.
    pub asa_secs: Option<f64>,
    /// Abandoned.
    pub abandoned: u64,
    /// Abandoned / offered.
    pub abandon_rate: Option<f64>,
    /// Answered at another site.
    pub overflowed: u64,
    /// Escalation signals fired, by signal.
    pub escalations: BTreeMap<String, u64>,
    /// Busy / staffed time of the site's agents with the skill.
    pub occupancy: Option<f64>,
    /// Agents staffed (average over the period).
    pub agents: f64,
    /// Erlang C's service level for the offered load and the staffed agents.
    pub erlang_c_service_level: Option<f64>,
    /// Erlang C's ASA, seconds.
    pub erlang_c_asa_secs: Option<f64>,
    /// Erlang A's abandonment probability (patience from the recorded abandons).
    pub erlang_a_abandon: Option<f64>,
}

/// The two runs of one queue and period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Pair {
    /// Configuration in force.
    pub base: Row,
    /// Changed configuration.
    pub whatif: Row,
}

/// One queue.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueReport {
    /// `site/skill`.
    pub queue: String,
    /// The whole window.
    pub total: Pair,
    /// By hour (`YYYY-MM-DD HH:00` UTC).
    pub hours: BTreeMap<String, Pair>,
}

/// The report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// Window replayed, RFC 3339.
    pub since: String,
    /// End of the window (exclusive).
    pub until: String,
    /// Events replayed.
    pub events: usize,
    /// Offers the base run made.
    pub offers_base: usize,
    /// Offers the what-if run made.
    pub offers_whatif: usize,
    /// The patch (TOML), as given.
    pub patch: String,
    /// Queues.
    pub queues: Vec<QueueReport>,
}

/// What a row's Erlang figures need besides the cell.
pub struct ErlangInputs<'a> {
    /// Service-level threshold, seconds.
    pub target_secs: f64,
    /// Handle time before any is observed, seconds.
    pub default_aht_secs: f64,
    /// Mean patience per queue, seconds.
    pub patience: &'a dyn Fn(&QueueKey) -> Option<f64>,
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0).then(|| a / b)
}

fn row(c: &Cell, q: &QueueKey, hours: f64, fallback_aht: f64, e: &ErlangInputs<'_>) -> Row {
    let aht = ratio(c.handle_ms as f64 / 1000.0, c.handled as f64).unwrap_or(fallback_aht);
    let agents = c.staffed_ms as f64 / 3_600_000.0 / hours;
    let load = c.arrivals as f64 / (hours * 3600.0) * aht;
    let n = agents.floor() as u32;
    let ec = erlang_c(load, aht, n, e.target_secs);
    let ea = (e.patience)(q).and_then(|p| erlang_a(load, aht, 1.0 / p, n, e.target_secs));
    Row {
        offered: c.arrivals,
        answered: c.answered,
        service_level: ratio(c.within_target as f64, (c.answered + c.abandoned) as f64),
        asa_secs: ratio(c.wait_ms as f64 / 1000.0, c.answered as f64),
        abandoned: c.abandoned,
        abandon_rate: ratio(c.abandoned as f64, c.arrivals as f64),
        overflowed: c.overflowed,
        escalations: c.escalations.clone(),
        occupancy: ratio(c.busy_ms as f64, c.staffed_ms as f64).map(|o| o.min(1.0)),
        agents,
        erlang_c_service_level: (c.arrivals > 0)
            .then_some(())
            .and(ec.map(|m| m.service_level)),
        erlang_c_asa_secs: (c.arrivals > 0)
            .then_some(())
            .and(ec.and_then(|m| m.asa_secs)),
        erlang_a_abandon: (c.arrivals > 0)
            .then_some(())
            .and(ea.map(|m| m.probability_abandon)),
    }
}

fn sum(cells: &BTreeMap<i64, Cell>) -> Cell {
    let mut t = Cell::default();
    for c in cells.values() {
        t.arrivals += c.arrivals;
        t.answered += c.answered;
        t.within_target += c.within_target;
        t.wait_ms += c.wait_ms;
        t.abandoned += c.abandoned;
        t.overflowed += c.overflowed;
        for (k, v) in &c.escalations {
            *t.escalations.entry(k.clone()).or_default() += v;
        }
        t.busy_ms += c.busy_ms;
        t.staffed_ms += c.staffed_ms;
        t.handle_ms += c.handle_ms;
        t.handled += c.handled;
    }
    t
}

fn hour_label(h: i64) -> String {
    DateTime::<Utc>::from_timestamp(h * 3600, 0)
        .map(|t| t.format("%Y-%m-%d %H:00").to_string())
        .unwrap_or_default()
}

/// Builds the report from both runs.
#[allow(clippy::too_many_arguments)] // each is a distinct part of the report header
pub fn build(
    since: &str,
    until: &str,
    events: usize,
    patch: &str,
    base: &RunStats,
    whatif: &RunStats,
    offers: (usize, usize),
    e: &ErlangInputs<'_>,
) -> Report {
    let empty = BTreeMap::new();
    let queues: BTreeSet<&QueueKey> = base.cells.keys().chain(whatif.cells.keys()).collect();
    let mut out = Vec::new();
    for q in queues {
        let b = base.cells.get(q).unwrap_or(&empty);
        let w = whatif.cells.get(q).unwrap_or(&empty);
        let (tb, tw) = (sum(b), sum(w));
        if tb.arrivals == 0 && tw.arrivals == 0 {
            continue;
        }
        let hours_span: BTreeSet<i64> = b.keys().chain(w.keys()).copied().collect();
        let n_hours = hours_span.len().max(1) as f64;
        let aht = |t: &Cell| {
            ratio(t.handle_ms as f64 / 1000.0, t.handled as f64).unwrap_or(e.default_aht_secs)
        };
        let (ab, aw) = (aht(&tb), aht(&tw));
        let zero = Cell::default();
        let hours = hours_span
            .iter()
            .map(|h| {
                (
                    hour_label(*h),
                    Pair {
                        base: row(b.get(h).unwrap_or(&zero), q, 1.0, ab, e),
                        whatif: row(w.get(h).unwrap_or(&zero), q, 1.0, aw, e),
                    },
                )
            })
            .collect();
        out.push(QueueReport {
            queue: q.label(),
            total: Pair {
                base: row(&tb, q, n_hours, ab, e),
                whatif: row(&tw, q, n_hours, aw, e),
            },
            hours,
        });
    }
    Report {
        since: since.to_string(),
        until: until.to_string(),
        events,
        offers_base: offers.0,
        offers_whatif: offers.1,
        patch: patch.to_string(),
        queues: out,
    }
}

fn pct(v: Option<f64>) -> String {
    v.map(|v| format!("{:.1}", v * 100.0))
        .unwrap_or_else(|| "-".into())
}

fn secs(v: Option<f64>) -> String {
    v.map(|v| format!("{v:.1}")).unwrap_or_else(|| "-".into())
}

fn esc(r: &Row) -> u64 {
    r.escalations.values().sum()
}

fn both(b: String, w: String) -> String {
    format!("{b:>6} {w:>6}")
}

/// The terminal table: per queue, its hours and its total, base then what-if.
pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Replay {} .. {}: {} events; offers base {} / what-if {}",
        r.since, r.until, r.events, r.offers_base, r.offers_whatif
    );
    let _ = writeln!(
        s,
        "Each figure: base (configuration in force) then what-if. SL % of offered answered within the threshold; \
         ErlC = Erlang C's SL for the hour's load and staffed agents; ErlA abn = Erlang A's abandonment."
    );
    for q in &r.queues {
        let _ = writeln!(s, "\n{}", q.queue);
        let _ = writeln!(
            s,
            "{:<16} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13} {:>13}",
            "hour (UTC)",
            "offered",
            "SL %",
            "ASA s",
            "abandon %",
            "escalations",
            "overflows",
            "occupancy %",
            "ErlC SL %",
            "ErlA abn %"
        );
        let mut line = |label: &str, p: &Pair| {
            let (b, w) = (&p.base, &p.whatif);
            let _ = writeln!(
                s,
                "{:<16} {} {} {} {} {} {} {} {} {}",
                label,
                both(b.offered.to_string(), w.offered.to_string()),
                both(pct(b.service_level), pct(w.service_level)),
                both(secs(b.asa_secs), secs(w.asa_secs)),
                both(pct(b.abandon_rate), pct(w.abandon_rate)),
                both(esc(b).to_string(), esc(w).to_string()),
                both(b.overflowed.to_string(), w.overflowed.to_string()),
                both(pct(b.occupancy), pct(w.occupancy)),
                both(pct(b.erlang_c_service_level), pct(w.erlang_c_service_level)),
                both(pct(b.erlang_a_abandon), pct(w.erlang_a_abandon)),
            );
        };
        for (h, p) in &q.hours {
            line(h, p);
        }
        line("total", &q.total);
        let signals: BTreeSet<&String> = q
            .total
            .base
            .escalations
            .keys()
            .chain(q.total.whatif.escalations.keys())
            .collect();
        if !signals.is_empty() {
            let parts: Vec<String> = signals
                .iter()
                .map(|k| {
                    format!(
                        "{k} {}→{}",
                        q.total.base.escalations.get(*k).unwrap_or(&0),
                        q.total.whatif.escalations.get(*k).unwrap_or(&0)
                    )
                })
                .collect();
            let _ = writeln!(s, "escalations by signal: {}", parts.join(", "));
        }
    }
    s
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A line chart of one figure by hour, base and what-if.
fn chart(
    title: &str,
    hours: &[&String],
    base: &[Option<f64>],
    whatif: &[Option<f64>],
    unit: &str,
) -> String {
    let (w, h, pad) = (560.0, 180.0, 36.0);
    let max = base
        .iter()
        .chain(whatif)
        .flatten()
        .fold(0.0f64, |m, v| m.max(*v))
        .max(1e-9);
    let n = hours.len().max(2) as f64 - 1.0;
    let x = |i: usize| pad + (w - 2.0 * pad) * i as f64 / n;
    let y = |v: f64| h - pad - (h - 2.0 * pad) * v / max;
    let path = |vals: &[Option<f64>]| {
        let mut d = String::new();
        let mut pen = false;
        for (i, v) in vals.iter().enumerate() {
            match v {
                Some(v) => {
                    let _ = write!(
                        d,
                        "{}{:.1},{:.1} ",
                        if pen { "L" } else { "M" },
                        x(i),
                        y(*v)
                    );
                    pen = true;
                }
                None => pen = false,
            }
        }
        d
    };
    let mut s = String::new();
    let _ = write!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" role=\"img\">\
         <title>{t}</title><text x=\"{pad}\" y=\"16\" font-size=\"13\">{t}</text>\
         <line x1=\"{pad}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#999\"/>\
         <line x1=\"{pad}\" y1=\"{pad}\" x2=\"{pad}\" y2=\"{b}\" stroke=\"#999\"/>\
         <text x=\"2\" y=\"{top}\" font-size=\"10\">{m}{unit}</text><text x=\"2\" y=\"{b}\" font-size=\"10\">0</text>",
        t = html_escape(title),
        b = h - pad,
        r = w - pad,
        top = pad + 4.0,
        m = format_args!("{max:.1}"),
    );
    for (i, label) in hours.iter().enumerate() {
        if hours.len() <= 12 || i % 3 == 0 {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"9\" text-anchor=\"middle\">{}</text>",
                x(i),
                h - pad + 14.0,
                html_escape(label.get(11..13).unwrap_or(label))
            );
        }
    }
    let _ = write!(
        s,
        "<path d=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"2\"/>\
         <path d=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" stroke-dasharray=\"5 3\"/></svg>",
        path(base),
        path(whatif)
    );
    s
}

/// The self-contained HTML report (inline CSS and SVG; nothing fetched).
pub fn html(r: &Report) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Front Door what-if {since} .. {until}</title>\
         <style>body{{font-family:sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;font-size:12px}}\
         td,th{{border:1px solid #ccc;padding:2px 6px;text-align:right}}th{{background:#f3f3f3}}\
         .b{{color:#1f77b4}}.w{{color:#d62728}}pre{{background:#f7f7f7;padding:1em}}section{{margin-bottom:2.5em}}</style></head><body>\
         <h1>What-if replay</h1><p>Window {since} .. {until}: {events} events. Offers: base {ob}, what-if {ow}.</p>\
         <p><span class=\"b\">━ base (configuration in force)</span> &nbsp; <span class=\"w\">╍ what-if</span></p>\
         <h2>Patch</h2><pre>{patch}</pre>",
        since = html_escape(&r.since),
        until = html_escape(&r.until),
        events = r.events,
        ob = r.offers_base,
        ow = r.offers_whatif,
        patch = html_escape(&r.patch),
    );
    for q in &r.queues {
        let hours: Vec<&String> = q.hours.keys().collect();
        let pick = |f: &dyn Fn(&Row) -> Option<f64>, base: bool| -> Vec<Option<f64>> {
            q.hours
                .values()
                .map(|p| f(if base { &p.base } else { &p.whatif }))
                .collect()
        };
        let sl = |r: &Row| r.service_level.map(|v| v * 100.0);
        let asa = |r: &Row| r.asa_secs;
        let abn = |r: &Row| r.abandon_rate.map(|v| v * 100.0);
        let occ = |r: &Row| r.occupancy.map(|v| v * 100.0);
        let _ = write!(s, "<section><h2>{}</h2><div>", html_escape(&q.queue));
        s.push_str(&chart(
            "Service level %",
            &hours,
            &pick(&sl, true),
            &pick(&sl, false),
            "%",
        ));
        s.push_str(&chart(
            "ASA (s)",
            &hours,
            &pick(&asa, true),
            &pick(&asa, false),
            "s",
        ));
        s.push_str(&chart(
            "Abandonment %",
            &hours,
            &pick(&abn, true),
            &pick(&abn, false),
            "%",
        ));
        s.push_str(&chart(
            "Occupancy %",
            &hours,
            &pick(&occ, true),
            &pick(&occ, false),
            "%",
        ));
        s.push_str("</div><table><tr><th>hour (UTC)</th><th>run</th><th>offered</th><th>answered</th><th>SL %</th><th>ASA s</th>\
                    <th>abandoned</th><th>abandon %</th><th>overflows</th><th>escalations by signal</th><th>occupancy %</th>\
                    <th>agents</th><th>Erlang C SL %</th><th>Erlang C ASA s</th><th>Erlang A abandon %</th></tr>");
        let rows = q
            .hours
            .iter()
            .map(|(h, p)| (h.as_str(), p))
            .chain(std::iter::once(("total", &q.total)));
        for (h, p) in rows {
            for (run, r, class) in [("base", &p.base, "b"), ("what-if", &p.whatif, "w")] {
                let signals: Vec<String> = r
                    .escalations
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect();
                let _ = write!(
                    s,
                    "<tr class=\"{class}\"><td>{}</td><td>{run}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                     <td>{}</td><td>{}</td><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    html_escape(h),
                    r.offered,
                    r.answered,
                    pct(r.service_level),
                    secs(r.asa_secs),
                    r.abandoned,
                    pct(r.abandon_rate),
                    r.overflowed,
                    html_escape(&signals.join(", ")),
                    pct(r.occupancy),
                    r.agents,
                    pct(r.erlang_c_service_level),
                    secs(r.erlang_c_asa_secs),
                    pct(r.erlang_a_abandon),
                );
            }
        }
        s.push_str("</table></section>");
    }
    s.push_str("</body></html>\n");
    s
}
