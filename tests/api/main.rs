//! Integration tests: one binary, each test with its own app and database.

mod helpers;

mod contract;
mod health;
mod journeys;
mod amqp;
mod broker;
mod chaos;
