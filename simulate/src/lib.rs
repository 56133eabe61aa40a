//! `frontdoor-simulate`: a traffic simulator that drives a running Front Door
//! over HTTP with a realistic multi-site contact-center day. A client of the
//! runtime's API, so it is its own crate: the runtime does not link an HTTP client.
//!
//! Three sites (a large hospital, a mid-size one and a small clinic) with agent
//! rosters, four skills, six patient channels; Poisson arrivals by hour with a
//! Monday-morning peak; a virtual agent that contains some contacts and hands
//! the rest to a human after two failed turns; repeat contacts and callbacks
//! after abandoning; transfers; appointments, prescriptions and notes after
//! contacts; and a flu-season surge (10x within five simulated minutes). The
//! agents' desktops poll `GET /v1/agents` for offers and answer them.
//!
//! With `--amqp` it behaves like a channel adapter on RabbitMQ instead
//! (docs/contract.md, "RabbitMQ"): events go to the events exchange with publisher
//! confirms and `x-patient-key`, and the desktops take their offers from the
//! `contact.offer` commands on the commands exchange; the API is still read for
//! the runtime's own totals (`/metrics`).
//!
//! A simulated floor day runs `compression` times faster than the wall clock,
//! handle times and patience included; the runtime measures waits on the wall
//! clock, so at high compression its service level is optimistic (see
//! `docs/dashboards.md`). Every run is bounded in time and contacts, seeded,
//! and only talks to loopback addresses.
//!
//! # Layout
//! - `main.rs`: the `frontdoor-simulate` binary (options, logs, the summary on stdout).
//! - [`args`]: the command's options (hand-parsed) and their checks.
//! - [`amqp`]: the `--amqp` mode: events published to RabbitMQ with confirms and
//!   `x-patient-key`, commands read from an exclusive queue on the commands exchange.
//! - [`model`]: the arrival model (hourly profile, weekday, surge), pure.
//! - [`arrivals`]: the seeded stream of new contacts built on the model.
//! - [`rng`]: a seeded random source (Poisson, exponential, weighted choice).
//! - [`scenario`]: sites, skills, rosters, channel mix and event builders.
//! - [`driver`]: the run loop and the patients' and agents' behaviour.
//! - [`summary`]: the counters and the final report.

pub mod amqp;
pub mod args;
pub mod arrivals;
pub mod driver;
pub mod model;
pub mod rng;
pub mod scenario;
pub mod summary;

pub use args::{AmqpOptions, ArgsError, SimulateOptions, USAGE};
pub use driver::run;
pub use summary::Summary;
