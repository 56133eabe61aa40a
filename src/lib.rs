//! Front Door: a real-time contact-center runtime for multi-site health systems.
//!
//! Every event from every channel lands in one patient journey under one identity;
//! staff desktops read that context from the API. This crate is the runtime around
//! the actors in `frontdoor-actors`: configuration, the store, the HTTP edge,
//! telemetry and startup. `main.rs` is a thin shell over [`startup::Application`].
//!
//! # Layout
//! - [`broker`]: RabbitMQ in (events) and out (commands), at-least-once; in a
//!   cluster also the routing queue and the calls nodes forward to each other.
//! - [`cluster`]: several nodes as one runtime: partition and router leases,
//!   fencing, the coordinator.
//! - [`auth`]: principals and their bearer tokens (hashed), roles, the assignment port.
//! - [`audit`]: what the audit trail records, and its FHIR AuditEvent form.
//! - [`configuration`]: typed settings from `config/` and `FRONTDOOR__*` variables.
//! - [`startup`]: builds the application (store, actors, HTTP) and runs it.
//! - [`ingest`]: the one path an event takes from an edge to the patient's journey.
//! - [`fhir`]: FHIR R4 in (bundles mapped into envelopes) and out (the context Bundle).
//! - [`store`]: all SQL (SQLite or PostgreSQL through sqlx).
//! - [`http`]: the actix-web API and its problem+json errors.
//! - [`metrics`]: metric names and the Prometheus recorder.
//! - [`outreach`]: the reminder tick (due reminders and held messages, by partition owner) and outreach counts.
//! - [`supervisor`]: restart policies for long-running components; actor statistics.
//! - [`runtime`]: live reload of thresholds and the `/v1/runtime` view.
//! - [`replay`]: `frontdoor replay`, a recorded window re-run under a changed
//!   configuration (what-if), reported side by side.
//! - [`telemetry`]: tracing subscriber setup.
//!
//! The traffic simulator is a client of this API and lives in its own crate
//! (`simulate/`, binary `frontdoor-simulate`), so the runtime links no HTTP client.

pub mod audit;
pub mod auth;
pub mod broker;
pub mod cluster;
pub mod configuration;
pub mod fhir;
pub mod http;
pub mod ingest;
pub mod metrics;
pub mod outreach;
pub mod replay;
pub mod runtime;
pub mod startup;
pub mod store;
pub mod supervisor;
pub mod telemetry;
