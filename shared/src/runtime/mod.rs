//! The consumer runtime shared by mapper, erp-writer and crm-writer (DESIGN §3–§4): a worker
//! plugs in a [`Handler`] and gets consuming with prefetch and bounded concurrency, acks after
//! the effect, quick retries, the retry ladder, dead letters, reconnects, graceful drain, metrics
//! and the `dlq` operator commands.
//!
//! # Layout
//! - [`handler`]: what a handler receives and answers ([`Incoming`], [`Outcome`], [`HandlerError`]).
//! - [`disposition`]: the pure mapping from an answer to an AMQP action ([`classify`]).
//! - [`consumer`]: the [`Worker`] loop.
//! - [`dead_letter`]: the headers of retry copies and dead letters, and reading them back.
//! - [`dlq`]: `dlq list | show | replay | purge`.
//! - [`metrics`]: metric names.
//!
//! Deliberately not here: deduplication (handlers use `crate::dedup` themselves) and the HubSpot
//! rate budget (`crate::budget`).

pub mod consumer;
pub mod dead_letter;
pub mod disposition;
pub mod dlq;
pub mod handler;
pub mod metrics;

pub use consumer::{RuntimeError, Worker};
pub use disposition::{DeadLetterKind, Disposition, classify};
pub use dlq::{DlqCommand, run_dlq, run_dlq_with_settings};
pub use handler::{ErrorClass, Handler, HandlerError, Incoming, Outcome};
