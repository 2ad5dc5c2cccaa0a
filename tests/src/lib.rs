//! Test support for lead2ledger: stateful simulators of HubSpot and ERPNext (library + the
//! `hubspot-sim` and `erpnext-sim` binaries), and the helpers the end-to-end, reliability and
//! benchmark suites share.
//!
//! The simulators stand in for the two SaaS APIs only; RabbitMQ and Redis are always the real ones.

pub mod bench;
pub mod publish;
pub mod sim;
pub mod stack;
