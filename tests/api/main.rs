//! Integration tests: one binary, each test with its own app and database.

mod helpers;

mod amqp;
mod broker;
mod canary;
mod chaos;
mod child;
mod cluster;
mod contract;
mod dashboards;
mod drills;
mod edge;
mod faults;
mod fhir;
mod health;
mod journeys;
mod passivation;
mod replay;
mod routing;
mod security;
mod supervision;
mod tls;
