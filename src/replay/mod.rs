//! `frontdoor replay`: a recorded window of the event log re-run through the journey
//! rules and the real router on virtual time, twice (the configuration in force,
//! and a changed one), reported side by side. See docs/whatif.md.
//!
//! # Layout
//! - [`engine`]: one run (recorded arrivals and agent states; answers, handle
//!   times, wrap-up and abandons modelled from the recording).
//! - [`patch`]: the what-if patch (routing thresholds, staffing, model knobs).
//! - [`stats`]: per queue and hour figures of a run.
//! - [`report`]: both runs side by side (terminal table, JSON, HTML with SVG).
//! - [`synth`]: a synthetic three-site day (benchmark, worked example).

pub mod engine;
pub mod patch;
pub mod report;
pub mod stats;
pub mod synth;

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use frontdoor_actors::event::Envelope;
use frontdoor_actors::ids::PatientId;
use frontdoor_actors::sites::SiteDirectory;
use serde_json::{json, Value};

use crate::configuration::get_configuration;
use crate::store::replay::RecordedEvent;
use engine::{Facts, Recorded};

/// The export file format this version writes (and every earlier one it reads).
/// 2: each event's place in the router's order (`applied_seq`, `applied_at_ms`,
/// `applied_at_us`) and lines for the router's timer runs (`"tick": true`).
pub const EXPORT_SCHEMA_VERSION: u64 = 2;
/// The header line's `format`.
pub const EXPORT_FORMAT: &str = "frontdoor-replay-export";

/// Where the window comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A store URL (`sqlite://…` or `postgres://…`) and a window.
    Store {
        url: String,
        since: DateTime<Utc>,
        until: DateTime<Utc>,
    },
    /// An export file (JSON lines with a header).
    File(PathBuf),
}

/// A loaded window.
#[derive(Debug, Clone)]
pub struct Window {
    /// Start (RFC 3339).
    pub since: String,
    /// End, exclusive (RFC 3339).
    pub until: String,
    /// The events, in the order the runtime received them.
    pub events: Vec<RecordedEvent>,
}

/// Reads the window from the store.
pub async fn load_store(
    url: &str,
    since: DateTime<Utc>,
    until: DateTime<Utc>,
) -> anyhow::Result<Window> {
    let settings = crate::configuration::StoreSettings {
        url: secrecy::SecretString::from(url.to_string()),
        max_connections: 2,
        acquire_timeout_secs: 10,
        group_commit_max_batch: 0,
    };
    let store = crate::store::Store::connect(&settings)
        .await
        .context("cannot open the store")?;
    let events = store.recorded_window(since, until).await?;
    Ok(Window {
        since: since.to_rfc3339(),
        until: until.to_rfc3339(),
        events,
    })
}

/// Writes a window as an export file: a header line, then one event a line.
pub fn write_export(w: &Window, out: &mut dyn Write) -> anyhow::Result<()> {
    writeln!(
        out,
        "{}",
        json!({"format": EXPORT_FORMAT, "schema_version": EXPORT_SCHEMA_VERSION, "since": w.since, "until": w.until})
    )?;
    for e in &w.events {
        if e.tick {
            writeln!(
                out,
                "{}",
                json!({"tick": true, "applied_seq": e.applied_seq, "applied_at_ms": e.applied_at_ms, "applied_at_us": e.applied_at_us})
            )?;
            continue;
        }
        let event: Value = serde_json::from_str(&e.body)?;
        writeln!(
            out,
            "{}",
            json!({"patient_id": e.patient_id, "occurred_at_ms": e.occurred_at_ms, "received_at_ms": e.received_at_ms, "applied_seq": e.applied_seq, "applied_at_ms": e.applied_at_ms, "applied_at_us": e.applied_at_us, "event": event})
        )?;
    }
    Ok(())
}

/// Reads an export file; refuses one from a newer schema version, naming both.
pub fn read_export(path: &Path) -> anyhow::Result<Window> {
    let f = std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut lines = std::io::BufReader::new(f).lines();
    let header: Value = match lines.next() {
        Some(l) => serde_json::from_str(&l?).context("the first line is not a JSON header")?,
        None => bail!("{} is empty: no header, no events", path.display()),
    };
    if header["format"] != EXPORT_FORMAT {
        bail!(
            "{} is not a Front Door replay export (header format {})",
            path.display(),
            header["format"]
        );
    }
    let version = header["schema_version"].as_u64().unwrap_or(0);
    if version > EXPORT_SCHEMA_VERSION {
        bail!(
            "{} is export schema version {version}; this frontdoor reads up to version {EXPORT_SCHEMA_VERSION}: \
             replay it with a newer frontdoor",
            path.display()
        );
    }
    let mut events = Vec::new();
    for (n, l) in lines.enumerate() {
        let l = l?;
        if l.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(&l).with_context(|| format!("line {}", n + 2))?;
        if v["tick"] == true {
            let (Some(seq), Some(at)) = (v["applied_seq"].as_i64(), v["applied_at_ms"].as_i64())
            else {
                bail!(
                    "line {}: a timer run without applied_seq and applied_at_ms",
                    n + 2
                );
            };
            events.push(RecordedEvent::tick(seq, at, v["applied_at_us"].as_i64()));
            continue;
        }
        events.push(RecordedEvent {
            patient_id: v["patient_id"].as_str().unwrap_or_default().to_string(),
            occurred_at_ms: v["occurred_at_ms"].as_i64().unwrap_or_default(),
            received_at_ms: v["received_at_ms"].as_i64().unwrap_or_default(),
            body: v["event"].to_string(),
            applied_seq: v["applied_seq"].as_i64(),
            applied_at_ms: v["applied_at_ms"].as_i64(),
            applied_at_us: v["applied_at_us"].as_i64(),
            tick: false,
        });
    }
    Ok(Window {
        since: header["since"].as_str().unwrap_or_default().to_string(),
        until: header["until"].as_str().unwrap_or_default().to_string(),
        events,
    })
}

/// The window's events in the order routing saw them: the inputs the router
/// applied in its order (`applied_seq`), each patient's other events just before
/// that patient's next routed one (its journey is complete when routing asks), and
/// what has no place in the router's order after the last routed event before it in
/// the log. Each patient's events keep their log order. With no `applied_seq` at all
/// (an older recording, a synthetic day) this is the log order.
pub fn router_order(events: &[RecordedEvent]) -> Vec<usize> {
    // (router position, before = 0 / at = 1 / after = 2, log position)
    let mut keys: Vec<(i64, u8, usize)> = Vec::with_capacity(events.len());
    let mut last = 0i64;
    for (i, e) in events.iter().enumerate() {
        keys.push(match e.applied_seq {
            Some(a) => {
                last = last.max(a);
                (a, 1, i)
            }
            None => (last, 2, i),
        });
    }
    // Backwards: a patient's unrouted event goes just before that patient's next
    // routed one.
    let mut next_routed: HashMap<&str, i64> = HashMap::new();
    for i in (0..events.len()).rev() {
        let p = events[i].patient_id.as_str();
        if p.is_empty() {
            continue;
        }
        match events[i].applied_seq {
            Some(a) => {
                next_routed.insert(p, a);
            }
            None => {
                if let Some(a) = next_routed.get(p) {
                    keys[i] = (*a, 0, i);
                }
            }
        }
    }
    // A patient's events never pass each other.
    let mut latest: HashMap<&str, (i64, u8, usize)> = HashMap::new();
    for (i, e) in events.iter().enumerate() {
        if e.patient_id.is_empty() {
            continue;
        }
        let k = latest.entry(e.patient_id.as_str()).or_insert(keys[i]);
        if keys[i] < *k {
            keys[i] = (k.0, k.1, i);
        }
        *k = keys[i];
    }
    let mut order: Vec<usize> = (0..events.len()).collect();
    order.sort_by_key(|&i| keys[i]);
    order
}

/// Parses the stored events in [`router_order`] (an unreadable one is an error
/// naming it).
pub fn recorded(w: &Window) -> anyhow::Result<Vec<Recorded>> {
    // Replay time is when the router applied each event (when the runtime received
    // it, for what routing never saw), never going back; in microseconds where the
    // router kept them.
    let mut at_us = i64::MIN;
    router_order(&w.events)
        .into_iter()
        .map(|n| (n, &w.events[n]))
        .map(|(n, e)| {
            let event = if e.tick {
                None
            } else {
                Some(Envelope::from_stored(&e.body).map_err(|err| {
                    anyhow::anyhow!("event {} of the window is unreadable: {err}", n + 1)
                })?)
            };
            let us = e
                .applied_at_us
                .or_else(|| e.applied_at_ms.map(|ms| ms * 1000))
                .unwrap_or(e.received_at_ms * 1000);
            at_us = at_us.max(us);
            Ok(Recorded {
                patient: PatientId::parse(&e.patient_id),
                at_ms: at_us.div_euclid(1000),
                at_us,
                event,
            })
        })
        .collect()
}

/// The values in force, in the `GET /v1/runtime` tunables shape.
pub fn tunables(settings: &crate::configuration::Settings) -> Value {
    json!({
        "routing": settings.routing,
        "supervision": {"patient": settings.supervision.patient, "tasks": settings.supervision.tasks},
    })
}

/// Both runs of a window and the report, with `sites` (hours, holidays, time zones)
/// closing sites and queues as live; `progress` hears (run, done, total).
pub async fn replay(
    window: &Window,
    current: &Value,
    sites: &Arc<SiteDirectory>,
    patch_text: &str,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> anyhow::Result<(report::Report, Vec<engine::Offer>, Vec<engine::Offer>)> {
    let base_cfg: frontdoor_actors::routing::RoutingConfig =
        serde_json::from_value(current["routing"].clone()).context("routing in force")?;
    // Refused before anything runs.
    let whatif =
        patch::parse(patch_text, current).map_err(|e| anyhow::anyhow!("patch refused: {e}"))?;
    if window.events.iter().all(|e| e.tick) {
        bail!(
            "no events in the window {} .. {}: nothing to replay",
            window.since,
            window.until
        );
    }
    let rec = recorded(window)?;
    let facts = Facts::of(&rec, &base_cfg);
    let until_ms = DateTime::parse_from_rfc3339(&window.until)
        .map(|t| t.timestamp_millis())
        .unwrap_or(i64::MAX);
    let total = rec.len();
    let base = engine::run(
        &rec,
        until_ms,
        &facts,
        engine::Setup {
            routing: base_cfg.clone(),
            sites: sites.clone(),
            staffing: &patch::Staffing::default(),
            model: whatif.model,
        },
        &mut |n| progress("base", n, total),
    )
    .await?;
    let changed = engine::run(
        &rec,
        until_ms,
        &facts,
        engine::Setup {
            routing: whatif.routing.clone(),
            sites: sites.clone(),
            staffing: &whatif.staffing,
            model: whatif.model,
        },
        &mut |n| progress("what-if", n, total),
    )
    .await?;
    let patience = |q: &stats::QueueKey| facts.mean_patience_secs(q);
    let inputs = report::ErlangInputs {
        target_secs: f64::from(base_cfg.service_level_target_secs),
        default_aht_secs: base_cfg.default_aht_secs,
        patience: &patience,
    };
    let r = report::build(
        &window.since,
        &window.until,
        total,
        patch_text,
        &base.stats,
        &changed.stats,
        (base.offers.len(), changed.offers.len()),
        &inputs,
    );
    Ok((r, base.offers, changed.offers))
}

const USAGE: &str = "usage: frontdoor replay (--store URL --since RFC3339 --until RFC3339 | --file EXPORT.jsonl)
                        [--patch WHATIF.toml] [--config DIR] [--html REPORT.html] [--json REPORT.json]
                        [--sites-open] [--quiet]
       frontdoor replay --store URL --since RFC3339 --until RFC3339 --export EXPORT.jsonl
       frontdoor replay --synthetic-day EXPORT.jsonl [--date YYYY-MM-DD] [--contacts-per-site N]";

fn time(flag: &str, v: Option<String>) -> anyhow::Result<DateTime<Utc>> {
    let v = v.with_context(|| format!("{flag} needs a value\n{USAGE}"))?;
    DateTime::parse_from_rfc3339(&v)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{flag}: {v:?} is not an RFC 3339 time"))
}

/// The `replay` command line (after `frontdoor replay`); answers the exit code.
pub async fn main(args: Vec<String>) -> anyhow::Result<i32> {
    let mut it = args.into_iter();
    let (mut store, mut since, mut until, mut file) = (None, None, None, None);
    let (mut patch, mut config, mut html, mut json_out, mut export) =
        (None, PathBuf::from("config"), None, None, None);
    let mut quiet = false;
    // Every site open all day instead of the site directory's hours and holidays
    // (a synthetic day, whose hours are its own).
    let mut sites_open = false;
    let (mut synthetic, mut date, mut per_site) = (None, None, 4500u32);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--synthetic-day" => synthetic = it.next().map(PathBuf::from),
            "--sites-open" => sites_open = true,
            "--date" => date = it.next(),
            "--contacts-per-site" => {
                per_site = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .context("--contacts-per-site needs a number")?
            }
            "--store" => store = it.next(),
            "--since" => since = Some(time("--since", it.next())?),
            "--until" => until = Some(time("--until", it.next())?),
            "--file" => file = it.next().map(PathBuf::from),
            "--patch" => patch = it.next().map(PathBuf::from),
            "--config" => config = it.next().map(PathBuf::from).unwrap_or(config),
            "--html" => html = it.next().map(PathBuf::from),
            "--json" => json_out = it.next().map(PathBuf::from),
            "--export" => export = it.next().map(PathBuf::from),
            "--quiet" => quiet = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if let Some(out) = synthetic {
        let day = match date {
            Some(d) => chrono::NaiveDate::parse_from_str(&d, "%Y-%m-%d")
                .with_context(|| format!("--date: {d:?} is not YYYY-MM-DD"))?
                .and_hms_opt(0, 0, 0)
                .map(|t| t.and_utc())
                .unwrap_or_default(),
            None => Utc::now(),
        };
        let w = synth::day(1, day, per_site);
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&out)
                .with_context(|| format!("cannot write {}", out.display()))?,
        );
        write_export(&w, &mut f)?;
        f.flush()?;
        eprintln!(
            "wrote a synthetic day of {} events to {}",
            w.events.len(),
            out.display()
        );
        return Ok(0);
    }
    let source = match (store, file) {
        (Some(url), None) => Source::Store {
            url,
            since: since.context("--since is required with --store")?,
            until: until.context("--until is required with --store")?,
        },
        (None, Some(f)) => Source::File(f),
        _ => bail!("give either --store (with --since and --until) or --file\n{USAGE}"),
    };
    // The patch is read and validated before the window is loaded.
    let patch_text = match &patch {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let settings = get_configuration(&config).context("cannot read the configuration in force")?;
    let current = tunables(&settings);
    // Opening hours and holidays close sites and their queues in routing, as live.
    let sites = Arc::new(if sites_open {
        SiteDirectory::default()
    } else {
        settings
            .site_directory()
            .map_err(|e| anyhow::anyhow!("the site directory in force: {e}"))?
    });
    if let Err(e) = patch::parse(&patch_text, &current) {
        eprintln!("patch refused: {e}");
        return Ok(2);
    }
    let window = match &source {
        Source::Store { url, since, until } => load_store(url, *since, *until).await?,
        Source::File(f) => read_export(f)?,
    };
    if let Some(out) = export {
        let mut f = std::io::BufWriter::new(
            std::fs::File::create(&out)
                .with_context(|| format!("cannot write {}", out.display()))?,
        );
        write_export(&window, &mut f)?;
        f.flush()?;
        eprintln!(
            "exported {} events to {}",
            window.events.len(),
            out.display()
        );
        return Ok(if window.events.iter().all(|e| e.tick) {
            1
        } else {
            0
        });
    }
    if window.events.iter().all(|e| e.tick) {
        eprintln!(
            "no events in the window {} .. {}: nothing to replay",
            window.since, window.until
        );
        return Ok(1);
    }
    let show = !quiet && std::io::stderr().is_terminal();
    let mut bar = |run: &str, done: usize, total: usize| {
        if quiet {
            return;
        }
        let width = 40;
        let filled = done * width / total.max(1);
        let line = format!(
            "{run:>8} [{}{}] {done}/{total} events",
            "#".repeat(filled),
            " ".repeat(width - filled)
        );
        if show {
            eprint!("\r{line}");
            if done == total {
                eprintln!();
            }
        } else if done == total {
            eprintln!("{line}");
        }
    };
    let (r, _, _) = replay(&window, &current, &sites, &patch_text, &mut bar).await?;
    print!("{}", report::table(&r));
    if let Some(p) = html {
        std::fs::write(&p, report::html(&r))
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("report: {}", p.display());
    }
    if let Some(p) = json_out {
        std::fs::write(&p, serde_json::to_string_pretty(&r)? + "\n")
            .with_context(|| format!("cannot write {}", p.display()))?;
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(patient: &str, applied: Option<i64>) -> RecordedEvent {
        RecordedEvent {
            patient_id: patient.into(),
            occurred_at_ms: 0,
            received_at_ms: 0,
            body: String::new(),
            applied_seq: applied,
            applied_at_ms: None,
            applied_at_us: None,
            tick: false,
        }
    }

    #[test]
    fn routing_inputs_are_replayed_in_the_routers_order_and_a_patients_events_before_its_next_routed_one(
    ) {
        // Log order: A's note, an agent event the router applied second, A's
        // contact the router applied first, B's note (B never routed), A's end
        // applied third.
        let events = vec![
            ev("A", None),
            ev("", Some(2)),
            ev("A", Some(1)),
            ev("B", None),
            ev("A", Some(3)),
        ];
        assert_eq!(router_order(&events), vec![0, 2, 1, 3, 4]);
    }

    #[test]
    fn a_recording_without_the_routers_order_keeps_the_log_order() {
        let events = vec![ev("A", None), ev("", None), ev("B", None), ev("A", None)];
        assert_eq!(router_order(&events), vec![0, 1, 2, 3]);
    }

    #[test]
    fn a_patients_events_never_pass_each_other() {
        // A's second routed event was (oddly) applied before its first: the log
        // order of the patient wins.
        let events = vec![ev("A", Some(5)), ev("A", Some(2)), ev("", Some(3))];
        let order = router_order(&events);
        let a: Vec<usize> = order.iter().copied().filter(|&i| i < 2).collect();
        assert_eq!(a, vec![0, 1]);
    }
}
