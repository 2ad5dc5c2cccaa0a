//! Benchmarks that print a report (DESIGN §10): each section measures one thing and returns rows for
//! the markdown table and the JSON file. Speed is measured here, never asserted by timed tests.

pub mod budget;
pub mod e2e;
pub mod fleet;
pub mod ingest;
pub mod report;
pub mod rss;
pub mod writeback;
