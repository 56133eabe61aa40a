//! `frontdoor replay` speed: a synthetic three-site day (about 50,000 events)
//! replayed twice (configuration in force, and a what-if adding staff and moving the
//! bot hand-off), end to end as the command does it (parse, both runs, report).
//!
//! `cargo bench --bench replay` (release). Figures in docs/benchmarks.md.

use std::time::Instant;

use frontdoor::replay::{self, report, synth};
use frontdoor_actors::routing::RoutingConfig;
use serde_json::json;

const PATCH: &str = "[routing.frustration]\nbot_handoff_after_exchanges = 3\n\n\
[[staffing.add]]\nsite = \"north\"\nskill = \"nurse_advice\"\nagents = 2\nfrom = \"08:00\"\nto = \"11:00\"\n";

fn main() {
    let per_site: u32 = std::env::var("BENCH_CONTACTS_PER_SITE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4500);
    let day = chrono::DateTime::parse_from_rfc3339("2026-11-30T00:00:00Z")
        .unwrap()
        .to_utc();
    let w = synth::day(1, day, per_site);
    let current = json!({
        "routing": RoutingConfig::default(),
        "supervision": {
            "patient": frontdoor_actors::supervision::SupervisionPolicy::default(),
            "tasks": frontdoor_actors::supervision::SupervisionPolicy::default(),
        }
    });
    // No site directory: every site open all day (the synthetic day's own hours).
    let sites = std::sync::Arc::new(frontdoor_actors::sites::SiteDirectory::default());
    let sys = actix::System::new();
    for round in 1..=3 {
        let t = Instant::now();
        let (r, base, whatif) = sys
            .block_on(replay::replay(
                &w,
                &current,
                &sites,
                PATCH,
                &mut |_, _, _| {},
            ))
            .expect("replay");
        let table = report::table(&r);
        let html = report::html(&r);
        let secs = t.elapsed().as_secs_f64();
        println!(
            "round {round}: {} events, two runs, offers {} / {}, report {} + {} bytes: {secs:.2} s ({:.0} events/s per run)",
            w.events.len(),
            base.len(),
            whatif.len(),
            table.len(),
            html.len(),
            2.0 * w.events.len() as f64 / secs
        );
    }
}
