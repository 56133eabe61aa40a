//! Integration tests: one binary, each test with its own app and database.

mod helpers;

mod amqp;
mod batches;
mod broker;
mod canary;
mod chaos;
mod child;
mod cli;
mod cluster;
mod contract;
mod dashboards;
mod docs;
mod drills;
mod edge;
mod faults;
mod fhir;
mod fuzz_regressions;
mod health;
mod journeys;
mod live_config;
mod outreach;
mod passivation;
mod replay;
mod routing;
mod security;
mod simulate;
mod supervision;
mod tls;
mod virtual_agent;
