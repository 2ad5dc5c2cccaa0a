//! ERPNext (Frappe REST) access shared by erp-writer, which writes Customers, Contacts,
//! Addresses and Sales Orders, and the mapper's reconcile, which reads Sales Orders.
//!
//! - [`client`]: the HTTP client (token auth, concurrency cap, metrics) and [`Doc`].
//! - [`error`]: Frappe error bodies parsed and classified (duplicate / transient / permanent /
//!   configuration), `exc_type` first.
//! - [`sales_order`]: which revision of a deal's Sales Order counts (cancel and amend).
//! - [`site_check`]: the configuration checked against the site (time zone, mapped records).
//!
//! Document-level logic (find-or-create by `hubspot_*` IDs) belongs to the writer, not here.

pub mod client;
pub mod error;
pub mod sales_order;
pub mod site_check;

pub use client::{Doc, ErpNextClient, ListQuery};
pub use error::{ErpNextError, ErrorClass, classify};
