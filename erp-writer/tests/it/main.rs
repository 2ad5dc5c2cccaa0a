//! erp-writer against the ERPNext simulator, the real RabbitMQ and the real Redis; every test
//! in its own namespace. One test binary, many modules (one link instead of one per file).

mod cli;
mod common;
mod crash;
mod late_commit;
mod setup;
mod site_check;
mod steps;
mod worker;
