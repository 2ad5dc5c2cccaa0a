//! The captured contracts every test is held to: real ERPNext 15 requests and answers, HubSpot
//! signature vectors made with HubSpot's SDK, webhook samples and API shapes. They live in the
//! repository (`tests/contracts`, with a README naming where each came from), so a clone alone
//! runs its tests; this module is the one way to reach them.

use std::path::{Path, PathBuf};

/// The contracts folder of this checkout.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/contracts")
}

/// A file or folder inside the contracts, e.g. `erpnext/customer_create_ok.json`.
pub fn path(relative: &str) -> PathBuf {
    dir().join(relative)
}

/// A contract file's text. Test support: a missing contract is a broken checkout, so it panics
/// with the path.
pub fn read(relative: &str) -> String {
    let p = path(relative);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("contract {}: {e}", p.display()))
}

/// A contract file parsed as JSON.
pub fn json(relative: &str) -> serde_json::Value {
    serde_json::from_str(&read(relative))
        .unwrap_or_else(|e| panic!("contract {relative} is not JSON: {e}"))
}
