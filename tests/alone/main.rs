//! Tests that need something to themselves, so they live in their own test binary
//! (cargo runs test binaries one after another) and run one at a time:
//!
//! - the process-wide metrics registry: counters are compared before and after,
//!   and no other test's application adds to them meanwhile;
//! - the shared broker's memory alarm, which blocks every publisher on it: while it
//!   is raised no other test of this workspace is publishing.

#[allow(dead_code)] // shared with tests/api; this binary uses part of it
#[path = "../api/helpers.rs"]
mod helpers;

#[allow(dead_code)]
#[path = "../api/amqp.rs"]
mod amqp;

mod alarm;
mod metrics;
mod shedding;

/// Held by each test of this binary: one at a time.
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE_AT_A_TIME.lock().await
}

/// The value of one series in a Prometheus text scrape (0 when absent: a counter
/// not yet incremented).
pub fn series(scrape: &str, name_and_labels: &str) -> f64 {
    scrape
        .lines()
        .find_map(|l| l.strip_prefix(name_and_labels)?.strip_prefix(' '))
        .map(|v| v.trim().parse().expect("a numeric sample"))
        .unwrap_or(0.0)
}
