//! ERPNext (Frappe REST) access shared by erp-writer, which writes Customers, Contacts,
//! Addresses and Sales Orders, and the mapper's reconcile, which reads Sales Orders.
//!
//! - [`client`]: the HTTP client (token auth, concurrency cap, metrics) and [`Doc`].
//! - [`error`]: Frappe error bodies parsed and classified (duplicate / transient / permanent /
//!   configuration), `exc_type` first.
//!
//! Document-level logic (find-or-create by `hubspot_*` IDs) belongs to the writer, not here.

pub mod client;
pub mod error;

pub use client::{Doc, ErpNextClient, ListQuery};
pub use error::{ErpNextError, ErrorClass, classify};
