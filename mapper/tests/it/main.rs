//! The mapper against the real RabbitMQ and Redis, with the HubSpot and ERPNext simulators.
//! One test binary; every test has its own namespace and removes it.

mod config;
mod dead_letters;
mod deals;
mod duplicates;
mod erpnext_events;
mod outcomes;
mod pipeline;
mod reconcile;
mod support;
mod sweep;
