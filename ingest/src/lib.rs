//! ingest: the thin front door of lead2ledger (DESIGN §7).
//!
//! It verifies webhook signatures, turns each event into one persistent message on the
//! `<ns>.events` exchange, and answers 200 only after the broker has confirmed every message of
//! the request. It never deduplicates (that is the mapper's job) and never calls HubSpot or
//! ERPNext on the webhook path, so it stays fast and a slow SaaS API can never make HubSpot give up
//! on a delivery.
//!
//! # Layout
//! - [`app`]: shared state, the router, `run`.
//! - [`routes`]: one module per endpoint family (`hubspot`, `erpnext`, `health`).
//! - [`error`]: the one `ApiError` every handler answers with.
//! - [`clock`]: injectable time, so signature tests can pin "now" to a vector's time.
//! - [`rejections`]: every refused delivery counted, and logged at WARN (rate-limited) with its
//!   source and reason.
//! - [`backfill`]: `ingest backfill`, enqueueing every deal already in a trigger stage (the one
//!   place ingest calls HubSpot, and never on the webhook path).

pub mod app;
pub mod backfill;
pub mod clock;
pub mod error;
pub mod metrics;
pub mod rejections;
pub mod routes;

pub use app::{App, run};
pub use clock::Clock;
