//! Simulators of the two external systems, faithful to `shared/contracts` (DESIGN §10).

pub mod erpnext;
pub mod faults;
pub mod hubspot;
