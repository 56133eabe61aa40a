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
/// Events rejected at the edge, by `reason` (`ContractError::reason`: `validation`,
/// `too_large`, `syntax`, `routing_key`).
pub const EVENTS_REJECTED_TOTAL: &str = "frontdoor_events_rejected_total";
/// Events this node stored and applied to a patient it owns (in a cluster, the
/// owner counts an event whichever node received it).
pub const EVENTS_APPLIED_TOTAL: &str = "frontdoor_events_applied_total";
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
/// FHIR entries received on `POST /fhir/r4`, by `resource` (an R4 resource type, or
/// `none`) and `outcome` (`stored`, `duplicate`, `skipped`, `unsupported`, `refused`, `failed`).
pub const FHIR_ENTRIES_TOTAL: &str = "frontdoor_fhir_entries_total";
/// FHIR bodies refused as a whole, by `reason` (`validation`, `syntax`, `too_large`,
/// `media_type`, `unprocessable`, `site_not_configured`).
pub const FHIR_REJECTED_TOTAL: &str = "frontdoor_fhir_rejected_total";
/// Resident set size of the process (Linux `/proc/self/statm`).
pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "frontdoor_process_resident_memory_bytes";

/// Broker deliveries settled by the consumer, by `outcome` (`stored`, `duplicate`,
/// `routed`, `dead_lettered`, `requeued`).
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
/// Requests refused by authentication or authorization, by `reason`
/// (`missing_token`, `unknown_token`, `forbidden`, `rate_limited`) and `role`.
pub const AUTH_DENIED_TOTAL: &str = "frontdoor_auth_denied_total";
/// Emergency (break-glass) reads of patient data, by `role`: each one is reviewed.
pub const BREAK_GLASS_TOTAL: &str = "frontdoor_break_glass_total";
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
// --- Routing (queues, agents, offers, overflow, escalations) ---
/// Contacts waiting, by `site`, `skill`.
pub const QUEUE_DEPTH: &str = "frontdoor_queue_depth";
/// Wait of the oldest waiting contact, by `site`, `skill`.
pub const QUEUE_OLDEST_WAIT_SECONDS: &str = "frontdoor_queue_oldest_wait_seconds";
/// Estimated wait of a new contact, by `site`, `skill`.
pub const QUEUE_ESTIMATED_WAIT_SECONDS: &str = "frontdoor_queue_estimated_wait_seconds";
/// Offered load / available capacity, by `site`, `skill` (above 1: the queue grows).
pub const QUEUE_SATURATION_RATIO: &str = "frontdoor_queue_saturation_ratio";
/// Agents signed in for the skill at the site and available, by `site`, `skill`.
pub const QUEUE_AGENTS_AVAILABLE: &str = "frontdoor_queue_agents_available";
/// Agents by `site` and `state` (available, away, offline).
pub const AGENTS: &str = "frontdoor_agents";
/// Contacts queued for a human, by `site`, `skill`, `channel`.
pub const CONTACTS_QUEUED_TOTAL: &str = "frontdoor_contacts_queued_total";
/// Contacts answered (offer accepted), by `site`, `skill`, `within_target` (true/false).
pub const CONTACTS_ANSWERED_TOTAL: &str = "frontdoor_contacts_answered_total";
/// Contacts abandoned while queued, by `site`, `skill`.
pub const CONTACTS_ABANDONED_TOTAL: &str = "frontdoor_contacts_abandoned_total";
/// Offers by `site`, `skill` and `outcome` (accepted, declined, timeout).
pub const OFFERS_TOTAL: &str = "frontdoor_offers_total";
/// Contacts moved between sites, by `from_site`, `to_site`, `skill`.
pub const OVERFLOW_TOTAL: &str = "frontdoor_overflow_total";
/// Frustration signals fired, by `signal`.
pub const ESCALATIONS_TOTAL: &str = "frontdoor_escalations_total";
/// Virtual-agent contacts by `outcome` (contained, handed_off).
pub const BOT_CONTACTS_TOTAL: &str = "frontdoor_bot_contacts_total";
/// Bot sessions by `intent` (configured intents, else `other`), `outcome`
/// (contained, handed_off) and `reason` (none, unresolved, asked_for_person,
/// red_flag, intent): containment and hand-offs per intent.
pub const BOT_INTENTS_TOTAL: &str = "frontdoor_bot_intents_total";
/// Red flags that raised a contact to the emergency level, by `category`.
pub const RED_FLAGS_TOTAL: &str = "frontdoor_red_flags_total";
/// Queued callbacks by `outcome` (requested, dialed, answered, retried, failed).
pub const CALLBACKS_TOTAL: &str = "frontdoor_callbacks_total";
/// Contacts that reached a closed queue, by the after-hours `policy` applied
/// (on_call, self_service_or_callback, wait_for_opening).
pub const AFTER_HOURS_TOTAL: &str = "frontdoor_after_hours_total";
/// Wait announcements sent, by `channel`.
pub const QUEUE_ANNOUNCEMENTS_TOTAL: &str = "frontdoor_queue_announcements_total";
/// Time to take one routing decision (match a contact to an agent or keep it waiting).
pub const ROUTING_DECISION_SECONDS: &str = "frontdoor_routing_decision_duration_seconds";
/// Service level over the sliding window (answered within target / (answered + abandoned)), by `site`, `skill`.
pub const SERVICE_LEVEL_RATIO: &str = "frontdoor_service_level_ratio";
/// Share of bot contacts ended without a human over the sliding window.
pub const CONTAINMENT_RATIO: &str = "frontdoor_containment_ratio";
/// Agents required to meet the service-level target, by `site`, `skill`, `model` (erlang_c, erlang_a).
pub const STAFFING_REQUIRED_AGENTS: &str = "frontdoor_staffing_required_agents";
/// Agents staffed now (signed in with the skill at the site), by `site`, `skill`.
pub const STAFFING_STAFFED_AGENTS: &str = "frontdoor_staffing_staffed_agents";
/// Predicted service level with the agents staffed now, by `site`, `skill`, `model`.
pub const STAFFING_PREDICTED_SERVICE_LEVEL: &str =
    "frontdoor_staffing_predicted_service_level_ratio";
/// Predicted occupancy (offered load / staffed agents), by `site`, `skill`.
pub const STAFFING_OCCUPANCY_RATIO: &str = "frontdoor_staffing_occupancy_ratio";
/// Offered load in Erlangs over the window, by `site`, `skill`.
pub const STAFFING_OFFERED_LOAD: &str = "frontdoor_staffing_offered_load_erlangs";

// --- Actor system (issue 7) ---
/// Actor restarts by `kind`.
pub const ACTOR_RESTARTS_TOTAL: &str = "frontdoor_actor_restarts_total";
/// Messages waiting in mailboxes, by `kind`.
pub const MAILBOX_DEPTH: &str = "frontdoor_mailbox_depth";
/// Escalations to the parent (too many restarts within the period), by `kind`.
pub const ACTOR_ESCALATIONS_TOTAL: &str = "frontdoor_actor_escalations_total";
/// Messages that failed every retry and went to the dead-letter path, by `kind`.
pub const POISON_MESSAGES_TOTAL: &str = "frontdoor_poison_messages_total";
/// Messages refused because mailboxes were full, by `kind`.
pub const MESSAGES_SHED_TOTAL: &str = "frontdoor_messages_shed_total";
/// 1 while a supervised component is healthy, 0 after it escalated, by `kind`.
pub const COMPONENT_UP: &str = "frontdoor_component_up";
/// 1 while the store answers the health probe, else 0.
pub const STORE_UP: &str = "frontdoor_store_up";
/// Configuration version in force (increments on every accepted reload).
pub const CONFIG_VERSION: &str = "frontdoor_config_version";

// --- Cluster (issue 10) ---
/// 1 while this node is a cluster member (0: joining, refused, or left).
pub const CLUSTER_MEMBER: &str = "frontdoor_cluster_member";
/// Live cluster members, as this node last read them.
pub const CLUSTER_NODES: &str = "frontdoor_cluster_nodes";
/// Patient partitions this node owns (applies and consumes) now.
pub const CLUSTER_PARTITIONS_OWNED: &str = "frontdoor_cluster_partitions_owned";
/// 1 while this node leads routing (holds the router lease).
pub const ROUTER_LEADER: &str = "frontdoor_router_leader";
/// Ownership changes on this node, by `reason` (`taken`, `released`, `lost`).
pub const CLUSTER_REBALANCES_TOTAL: &str = "frontdoor_cluster_rebalances_total";
/// From a dead holder's lease expiry to this node holding it (and, for the router,
/// having rebuilt routing), by `lease` (`router`, `partition`).
pub const CLUSTER_TAKEOVER_SECONDS: &str = "frontdoor_cluster_takeover_duration_seconds";
/// Calls forwarded to the node that owns a patient, by `outcome` (`ok`, `not_owner`,
/// `no_route`, `timeout`, `error`).
pub const CLUSTER_FORWARDS_TOTAL: &str = "frontdoor_cluster_forwards_total";

/// Patient messages decided, by `template` and `outcome` (`sent`, `held`,
/// `suppressed`, `failed`): reminders when they fire, the others when their event
/// is stored.
pub const OUTREACH_MESSAGES_TOTAL: &str = "frontdoor_outreach_messages_total";
/// Messages not sent, by `template` and `reason` (`opted_out`, `too_late`).
pub const OUTREACH_SUPPRESSED_TOTAL: &str = "frontdoor_outreach_suppressed_total";
/// Reminders planned (one per appointment and offset still ahead).
pub const REMINDERS_PLANNED_TOTAL: &str = "frontdoor_reminders_planned_total";
/// From a reminder's due time to the tick that sent it.
pub const REMINDER_LATENESS_SECONDS: &str = "frontdoor_reminder_lateness_seconds";
/// Appointments by `outcome` (`booked`, `rescheduled`, `confirmed`, `kept`
/// (checked in), `cancelled`, `no_show`).
pub const APPOINTMENTS_TOTAL: &str = "frontdoor_appointments_total";
/// Consent changes, by `channel` and `change` (`opted_out`, `opted_in`).
pub const CONSENT_CHANGES_TOTAL: &str = "frontdoor_consent_changes_total";

/// Buckets around the reminder bound (sent within 5 s of its time).
const REMINDER_BUCKETS: &[f64] = &[
    0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 30.0, 60.0,
];

/// Buckets around the takeover bound (10 s after a lease expires).
const TAKEOVER_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0, 30.0,
];

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
                .set_buckets_for_metric(
                    Matcher::Full(CLUSTER_TAKEOVER_SECONDS.into()),
                    TAKEOVER_BUCKETS,
                )
                // unwrap: the bucket list above is a non-empty constant.
                .unwrap()
                .set_buckets_for_metric(
                    Matcher::Full(REMINDER_LATENESS_SECONDS.into()),
                    REMINDER_BUCKETS,
                )
                // unwrap: the bucket list above is a non-empty constant.
                .unwrap()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                // unwrap: the bucket list above is a non-empty constant.
                .unwrap();
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may exist in tests that install their own; keep ours either way.
            let _ = metrics::set_global_recorder(recorder);
            describe();
            zero_known_series();
            handle
        })
        .clone()
}

/// Why a FHIR body is refused as a whole (the `reason` label of [`FHIR_REJECTED_TOTAL`]).
pub const FHIR_REJECT_REASONS: [&str; 6] = [
    "validation",
    "syntax",
    "too_large",
    "media_type",
    "unprocessable",
    "site_not_configured",
];

/// Counters whose label sets are known up front start at zero, so a dashboard
/// shows 0 (not "no data") before the first rejection.
fn zero_known_series() {
    for reason in frontdoor_actors::event::ContractError::REASONS {
        metrics::counter!(EVENTS_REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in FHIR_REJECT_REASONS {
        metrics::counter!(FHIR_REJECTED_TOTAL, "reason" => reason).increment(0);
    }
    for reason in ["taken", "released", "lost"] {
        metrics::counter!(CLUSTER_REBALANCES_TOTAL, "reason" => reason).increment(0);
    }
    for outcome in ["ok", "no_route", "timeout", "error"] {
        metrics::counter!(CLUSTER_FORWARDS_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in ["requested", "dialed", "answered", "retried", "failed"] {
        metrics::counter!(CALLBACKS_TOTAL, "outcome" => outcome).increment(0);
    }
    for outcome in ["contained", "handed_off"] {
        metrics::counter!(BOT_CONTACTS_TOTAL, "outcome" => outcome).increment(0);
    }
    for policy in ["on_call", "self_service_or_callback", "wait_for_opening"] {
        metrics::counter!(AFTER_HOURS_TOTAL, "policy" => policy).increment(0);
    }
    for outcome in APPOINTMENT_OUTCOMES {
        metrics::counter!(APPOINTMENTS_TOTAL, "outcome" => outcome).increment(0);
    }
    for reason in frontdoor_actors::outreach::SuppressReason::ALL {
        metrics::counter!(OUTREACH_SUPPRESSED_TOTAL, "template" => "appointment.reminder", "reason" => reason.as_str())
            .increment(0);
    }
    for outcome in ["sent", "held", "suppressed", "failed"] {
        metrics::counter!(OUTREACH_MESSAGES_TOTAL, "template" => "appointment.reminder", "outcome" => outcome)
            .increment(0);
    }
    metrics::counter!(REMINDERS_PLANNED_TOTAL).increment(0);
}

/// Starts the routing counters whose labels come from configuration at zero (red-flag
/// categories, the bot's intents), so the floor dashboard shows 0, not "no data",
/// before the first one. Called at start with the routing rules in force.
pub fn zero_routing_series(cfg: &frontdoor_actors::routing::RoutingConfig) {
    for category in cfg.red_flags.categories.keys() {
        metrics::counter!(RED_FLAGS_TOTAL, "category" => category.clone()).increment(0);
    }
    for intent in &cfg.handoff.bot_intents {
        metrics::counter!(BOT_INTENTS_TOTAL, "intent" => intent.clone(), "outcome" => "contained", "reason" => "none").increment(0);
    }
}

/// The `outcome` label of [`APPOINTMENTS_TOTAL`].
pub const APPOINTMENT_OUTCOMES: [&str; 6] = [
    "booked",
    "rescheduled",
    "confirmed",
    "kept",
    "cancelled",
    "no_show",
];

/// Starts the supervision counters of an actor kind at zero (called the first
/// time supervision sees the kind).
pub fn zero_actor_series(kind: &'static str) {
    for name in [
        ACTOR_RESTARTS_TOTAL,
        ACTOR_ESCALATIONS_TOTAL,
        POISON_MESSAGES_TOTAL,
        MESSAGES_SHED_TOTAL,
    ] {
        metrics::counter!(name, "kind" => kind).increment(0);
    }
}

/// Reads the resident set size from `/proc/self/statm` (None off Linux).
pub fn process_resident_bytes() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // The page size is 4 KiB on the x86-64 and arm64 Linux this runs on.
    Some(pages * 4096.0)
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
    describe_counter!(
        FHIR_ENTRIES_TOTAL,
        "FHIR entries received by resource type and outcome."
    );
    describe_counter!(
        FHIR_REJECTED_TOTAL,
        "FHIR bodies refused as a whole by reason."
    );
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
        OUTREACH_MESSAGES_TOTAL,
        "Patient messages decided, by template and outcome."
    );
    describe_counter!(
        OUTREACH_SUPPRESSED_TOTAL,
        "Patient messages not sent, by template and reason."
    );
    describe_counter!(REMINDERS_PLANNED_TOTAL, "Appointment reminders planned.");
    describe_histogram!(
        REMINDER_LATENESS_SECONDS,
        Unit::Seconds,
        "From a reminder's due time to its sending."
    );
    describe_counter!(APPOINTMENTS_TOTAL, "Appointments by outcome.");
    describe_counter!(
        CONSENT_CHANGES_TOTAL,
        "Consent changes by channel and change."
    );
    describe_counter!(
        AUTH_DENIED_TOTAL,
        "Requests refused by authentication or authorization, by reason and role."
    );
    describe_gauge!(PRINCIPALS, "Principals in force.");
    describe_counter!(
        BREAK_GLASS_TOTAL,
        "Emergency (break-glass) reads of patient data, by role."
    );
    describe_counter!(
        PRINCIPAL_RELOADS_TOTAL,
        "Principals file reloads by outcome."
    );
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
    describe_gauge!(
        PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident set size of the process."
    );
    describe_gauge!(CLUSTER_MEMBER, "1 while this node is a cluster member.");
    describe_gauge!(CLUSTER_NODES, "Live cluster members.");
    describe_gauge!(
        CLUSTER_PARTITIONS_OWNED,
        "Patient partitions this node owns now."
    );
    describe_gauge!(ROUTER_LEADER, "1 while this node leads routing.");
    describe_counter!(
        CLUSTER_REBALANCES_TOTAL,
        "Ownership changes on this node by reason."
    );
    describe_histogram!(
        CLUSTER_TAKEOVER_SECONDS,
        Unit::Seconds,
        "From a dead holder's lease expiry to this node serving it."
    );
    describe_counter!(
        CLUSTER_FORWARDS_TOTAL,
        "Calls forwarded to a patient's owner by outcome."
    );
}

/// Routing's observations, recorded as the metrics named above.
pub struct MetricsObserver;

impl frontdoor_actors::ports::RoutingObserver for MetricsObserver {
    fn queued(&self, site: &str, skill: &str, channel: &str) {
        metrics::counter!(CONTACTS_QUEUED_TOTAL, "site" => site.to_string(), "skill" => skill.to_string(), "channel" => channel.to_string()).increment(1);
    }

    fn offer(&self, site: &str, skill: &str, outcome: &'static str) {
        metrics::counter!(OFFERS_TOTAL, "site" => site.to_string(), "skill" => skill.to_string(), "outcome" => outcome).increment(1);
    }

    fn answered(&self, site: &str, skill: &str, within_target: bool) {
        let within = if within_target { "true" } else { "false" };
        metrics::counter!(CONTACTS_ANSWERED_TOTAL, "site" => site.to_string(), "skill" => skill.to_string(), "within_target" => within).increment(1);
    }

    fn abandoned(&self, site: &str, skill: &str) {
        metrics::counter!(CONTACTS_ABANDONED_TOTAL, "site" => site.to_string(), "skill" => skill.to_string()).increment(1);
    }

    fn escalation(&self, signal: &'static str) {
        metrics::counter!(ESCALATIONS_TOTAL, "signal" => signal).increment(1);
    }

    fn overflow(&self, from_site: &str, to_site: &str, skill: &str, count: u64) {
        metrics::counter!(OVERFLOW_TOTAL, "from_site" => from_site.to_string(), "to_site" => to_site.to_string(), "skill" => skill.to_string()).increment(count);
    }

    fn bot_contact(&self, outcome: &'static str) {
        metrics::counter!(BOT_CONTACTS_TOTAL, "outcome" => outcome).increment(1);
    }

    fn decision(&self, secs: f64) {
        metrics::histogram!(ROUTING_DECISION_SECONDS).record(secs);
    }

    fn queue(&self, s: &frontdoor_actors::routing::queue::QueueSnapshot) {
        let site = s.site.to_string();
        let skill = s.skill.clone();
        let labels = [("site", site.clone()), ("skill", skill.clone())];
        metrics::gauge!(QUEUE_DEPTH, &labels).set(f64::from(s.depth));
        metrics::gauge!(QUEUE_OLDEST_WAIT_SECONDS, &labels).set(s.oldest_wait_secs as f64);
        if let Some(w) = s.estimated_wait_secs {
            metrics::gauge!(QUEUE_ESTIMATED_WAIT_SECONDS, &labels).set(w);
        }
        metrics::gauge!(QUEUE_SATURATION_RATIO, &labels).set(s.saturation);
        metrics::gauge!(QUEUE_AGENTS_AVAILABLE, &labels).set(f64::from(s.agents_available));
        metrics::gauge!(STAFFING_STAFFED_AGENTS, &labels).set(f64::from(s.agents_staffed));
        if let Some(sl) = s.service_level {
            metrics::gauge!(SERVICE_LEVEL_RATIO, &labels).set(sl);
        }
        if let Some(st) = &s.staffing {
            metrics::gauge!(STAFFING_OFFERED_LOAD, &labels).set(st.offered_load_erlangs);
            metrics::gauge!(STAFFING_OCCUPANCY_RATIO, &labels).set(st.occupancy);
            if let Some(n) = st.required_agents_erlang_c {
                metrics::gauge!(STAFFING_REQUIRED_AGENTS, "site" => site.clone(), "skill" => skill.clone(), "model" => "erlang_c").set(f64::from(n));
            }
            if let Some(n) = st.required_agents_erlang_a {
                metrics::gauge!(STAFFING_REQUIRED_AGENTS, "site" => site.clone(), "skill" => skill.clone(), "model" => "erlang_a").set(f64::from(n));
            }
            metrics::gauge!(STAFFING_PREDICTED_SERVICE_LEVEL, "site" => site.clone(), "skill" => skill.clone(), "model" => "erlang_c").set(st.predicted_service_level);
            if let Some(sl) = st.predicted_service_level_erlang_a {
                metrics::gauge!(STAFFING_PREDICTED_SERVICE_LEVEL, "site" => site, "skill" => skill, "model" => "erlang_a").set(sl);
            }
        }
    }

    fn agents(&self, site: &str, presence: &'static str, count: u64) {
        metrics::gauge!(AGENTS, "site" => site.to_string(), "state" => presence).set(count as f64);
    }

    fn containment(&self, ratio: f64) {
        metrics::gauge!(CONTAINMENT_RATIO).set(ratio);
    }

    fn red_flag(&self, category: &str) {
        metrics::counter!(RED_FLAGS_TOTAL, "category" => category.to_string()).increment(1);
    }

    fn bot_intent(&self, intent: &str, outcome: &'static str, reason: &'static str) {
        metrics::counter!(BOT_INTENTS_TOTAL, "intent" => intent.to_string(), "outcome" => outcome, "reason" => reason).increment(1);
    }

    fn callback(&self, outcome: &'static str) {
        metrics::counter!(CALLBACKS_TOTAL, "outcome" => outcome).increment(1);
    }

    fn after_hours(&self, policy: &'static str) {
        metrics::counter!(AFTER_HOURS_TOTAL, "policy" => policy).increment(1);
    }

    fn announcement(&self, channel: &'static str) {
        metrics::counter!(QUEUE_ANNOUNCEMENTS_TOTAL, "channel" => channel).increment(1);
    }
}
