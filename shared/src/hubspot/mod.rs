//! HubSpot CRM API client used by the mapper (reads), crm-writer (writes, property setup) and the
//! backfill (search) — DESIGN §1, §6.
//!
//! - [`types`]: wire structs mirroring `contracts/hubspot/api`.
//! - [`client`]: [`HubSpotClient`], every call paid for from the shared [`crate::budget::RateBudget`],
//!   429s and 5xx retried within bounds.
//! - [`error`]: [`HubSpotError`] with an [`ErrorKind`] to classify retry vs dead letter.
//!
//! Deliberately absent: webhook parsing (`crate::events`), signatures (`crate::signature`), and any
//! mapping logic — this module speaks HubSpot's API, nothing more.

pub mod client;
pub mod error;
pub mod types;

pub use client::{
    AssociationsRead, BATCH_LIMIT, BatchRead, BatchWrite, DEAL_ASSOCIATIONS, HubSpotClient,
    PropertyCreated, RetryPolicy,
};
pub use error::{ErrorKind, HubSpotError};
/// Re-exported so callers can build a client without depending on `secrecy` themselves.
pub use secrecy::SecretString;
pub use types::ObjectType;
