//! Every metric name in one place, the recorder, and its histogram buckets.
//!
//! Naming: `frontdoor_` prefix, base units, `_total` on counters. Labels are
//! bounded sets only (channel, type, outcome, operation, site, skill, signal):
//! never a patient, contact, phone or agent id.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Events received, by `channel`, `type` (known types, else `other`) and `outcome`
/// (`accepted`, `duplicate`, `rejected`, `failed`).
pub const EVENTS_TOTAL: &str = "frontdoor_events_total";
/// Events rejected at the edge, by `reason` (`validation`, `too_large`, `syntax`).
pub const EVENTS_REJECTED_TOTAL: &str = "frontdoor_events_rejected_total";
/// Time from receiving an event to having it stored, by `outcome`.
pub const EVENT_INGEST_SECONDS: &str = "frontdoor_event_ingest_duration_seconds";
/// Store operation latency, by `operation` and `outcome`.
pub const STORE_SECONDS: &str = "frontdoor_store_operation_duration_seconds";
/// Resident patient actors.
pub const RESIDENT_PATIENTS: &str = "frontdoor_patients_resident";
/// Identity resolutions, by `grade` (certain, probable, possible) and `outcome`
/// (`existing`, `new`, `conflict`).
pub const IDENTITY_RESOLUTIONS_TOTAL: &str = "frontdoor_identity_resolutions_total";
/// HTTP requests, by `route`, `method` and `status` class.
pub const HTTP_REQUESTS_TOTAL: &str = "frontdoor_http_requests_total";

/// Requests refused by authentication or authorization, by `reason`
/// (`missing_token`, `unknown_token`, `forbidden`, `rate_limited`) and `role`.
pub const AUTH_DENIED_TOTAL: &str = "frontdoor_auth_denied_total";
/// Principals in force (after the last successful load).
pub const PRINCIPALS: &str = "frontdoor_principals";
/// Principals file reloads, by `outcome` (`ok`, `error`).
pub const PRINCIPAL_RELOADS_TOTAL: &str = "frontdoor_principal_reloads_total";
/// Audit records written, by `resource` and `outcome`.
pub const AUDIT_RECORDS_TOTAL: &str = "frontdoor_audit_records_total";
/// Audit writes that failed (the read they covered was refused), by `resource`.
pub const AUDIT_FAILURES_TOTAL: &str = "frontdoor_audit_failures_total";
/// Audit records purged after the retention period.
pub const AUDIT_PURGED_TOTAL: &str = "frontdoor_audit_purged_total";

/// Buckets around the ingest SLO (p99 under 50 ms on a local store).
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                // unwrap: the bucket list above is a non-empty constant.
                .unwrap();
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that install their own; keep ours either way.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            handle
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        EVENTS_TOTAL,
        "Events received by channel, type and outcome."
    );
    describe_counter!(
        EVENTS_REJECTED_TOTAL,
        "Events rejected at the edge by reason."
    );
    describe_histogram!(
        EVENT_INGEST_SECONDS,
        Unit::Seconds,
        "Receive-to-stored latency of events."
    );
    describe_histogram!(STORE_SECONDS, Unit::Seconds, "Store operation latency.");
    describe_gauge!(RESIDENT_PATIENTS, "Patient actors resident in memory.");
    describe_counter!(
        IDENTITY_RESOLUTIONS_TOTAL,
        "Identity resolutions by grade and outcome."
    );
    describe_counter!(
        AUTH_DENIED_TOTAL,
        "Requests refused by authentication or authorization, by reason and role."
    );
    describe_gauge!(PRINCIPALS, "Principals in force.");
    describe_counter!(PRINCIPAL_RELOADS_TOTAL, "Principals file reloads by outcome.");
    describe_counter!(
        AUDIT_RECORDS_TOTAL,
        "Audit records written by resource and outcome."
    );
    describe_counter!(
        AUDIT_FAILURES_TOTAL,
        "Audit writes that failed (the covered read was refused)."
    );
    describe_counter!(AUDIT_PURGED_TOTAL, "Audit records purged after retention.");
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route, method and status class."
    );
}
