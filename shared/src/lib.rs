//! lead2ledger's shared crate: only what two or more binaries need.
//!
//! # Layout
//! - [`names`]: exchanges, queues, routing keys, header names, Redis key shapes — defined once.
//! - [`envelope`]: the message envelope every queue carries; [`events`]: raw webhook payloads.
//! - [`signature`]: HubSpot v1/v2/v3 and Frappe webhook signatures (ingest verifies, simulators sign).
//! - [`config`]: one TOML file + `L2L_…` environment overrides for every binary; [`mapping`]: the
//!   declarative HubSpot → ERPNext mapping inside it.
//! - [`broker`]: the AMQP connection with reconnect, topology declaration and confirmed publishing.
//! - [`commands`]: payloads of `erp.*`/`crm.*` commands and `outcome.erp.*` events.
//! - [`telemetry`]: tracing and the Prometheus recorder.

pub mod broker;
pub mod budget;
pub mod cli;
pub mod commands;
pub mod config;
#[cfg(any(test, feature = "testkit"))]
pub mod contracts;
pub mod dedup;
pub mod envelope;
pub mod erpnext;
pub mod events;
pub mod health;
pub mod hubspot;
pub mod mapping;
pub mod names;
pub mod redis_conn;
pub mod runtime;
pub mod shutdown;
pub mod signature;
pub mod subscriptions;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
