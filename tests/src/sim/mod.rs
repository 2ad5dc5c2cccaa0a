//! Simulators of the two external systems, faithful to `tests/contracts` (DESIGN §10).

pub mod erpnext;
pub mod faults;
pub mod hubspot;
