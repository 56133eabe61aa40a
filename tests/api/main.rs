//! Integration tests: one binary, each test with its own app and database.

mod helpers;

mod canary;
mod contract;
mod dashboards;
mod health;
mod journeys;
mod passivation;
mod routing;
mod security;
mod supervision;
mod tls;
