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

/// Broker deliveries settled by the consumer, by `outcome` (`stored`, `duplicate`,
/// `dead_lettered`, `requeued`).
pub const BROKER_DELIVERIES_TOTAL: &str = "frontdoor_broker_deliveries_total";
/// Deliveries received and not yet settled (bounded by prefetch x partitions).
pub const BROKER_IN_FLIGHT: &str = "frontdoor_broker_deliveries_in_flight";
/// 1 while the broker connection of a `component` (`consumer`, `relay`) is up.
pub const BROKER_CONNECTED: &str = "frontdoor_broker_connected";
/// Broker connection attempts that failed or connections lost, by `component`.
pub const BROKER_RECONNECTS_TOTAL: &str = "frontdoor_broker_reconnects_total";
/// 1 while the broker blocks a `component`'s connection (resource alarm).
pub const BROKER_BLOCKED: &str = "frontdoor_broker_blocked";
/// Times the broker blocked a connection, by `component`.
pub const BROKER_BLOCKED_TOTAL: &str = "frontdoor_broker_blocked_total";
/// Times the consumer paused because the store was unavailable.
pub const BROKER_STORE_PAUSES_TOTAL: &str = "frontdoor_broker_store_pauses_total";
/// Commands relayed and confirmed by the broker, by `type`.
pub const COMMANDS_PUBLISHED_TOTAL: &str = "frontdoor_commands_published_total";
/// Commands the broker could not route (`basic.return`), parked, by `type`.
pub const COMMANDS_UNROUTABLE_TOTAL: &str = "frontdoor_commands_unroutable_total";
/// Commands waiting in the outbox, by `state` (`pending`, `parked`).
pub const OUTBOX_COMMANDS: &str = "frontdoor_outbox_commands";

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
        BROKER_DELIVERIES_TOTAL,
        "Broker deliveries settled by outcome."
    );
    describe_gauge!(BROKER_IN_FLIGHT, "Broker deliveries received, not settled.");
    describe_gauge!(BROKER_CONNECTED, "1 while the broker connection is up.");
    describe_counter!(
        BROKER_RECONNECTS_TOTAL,
        "Broker connections failed or lost."
    );
    describe_gauge!(BROKER_BLOCKED, "1 while the broker blocks the connection.");
    describe_counter!(
        BROKER_BLOCKED_TOTAL,
        "Times the broker blocked a connection."
    );
    describe_counter!(
        BROKER_STORE_PAUSES_TOTAL,
        "Consumer pauses because the store was unavailable."
    );
    describe_counter!(
        COMMANDS_PUBLISHED_TOTAL,
        "Commands relayed and confirmed by type."
    );
    describe_counter!(
        COMMANDS_UNROUTABLE_TOTAL,
        "Commands the broker could not route, parked."
    );
    describe_gauge!(OUTBOX_COMMANDS, "Commands in the outbox by state.");
    describe_counter!(
        HTTP_REQUESTS_TOTAL,
        "HTTP requests by route, method and status class."
    );
}
