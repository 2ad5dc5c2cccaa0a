//! Which ERPNext Items exist, asked once per deal for exactly the codes it would order, with the
//! positive answers cached for the life of the process (items are rarely deleted; a new item is
//! found on the next deal that needs it, so "add the Item, then replay" works without restart).
//!
//! Without ERPNext credentials, or with `verify_in_erpnext = false`, nothing is checked and the
//! answer is [`ItemCatalog::Unchecked`]: erp-writer then meets an unknown item as ERPNext's 404.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use serde_json::Value;
use shared::erpnext::{ErpNextClient, ErpNextError, ListQuery};

use crate::map::ItemCatalog;

#[derive(Debug)]
pub struct Catalog {
    erpnext: Option<ErpNextClient>,
    known: Mutex<HashSet<String>>,
}

impl Catalog {
    /// `erpnext: None` disables the check.
    pub fn new(erpnext: Option<ErpNextClient>) -> Self {
        Self {
            erpnext,
            known: Mutex::new(HashSet::new()),
        }
    }

    /// Which of `codes` exist in ERPNext (one list call for those not cached yet).
    pub async fn lookup(&self, codes: &BTreeSet<String>) -> Result<ItemCatalog, ErpNextError> {
        let Some(client) = &self.erpnext else {
            return Ok(ItemCatalog::Unchecked);
        };
        let missing: Vec<String> = {
            let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            codes
                .iter()
                .filter(|c| !known.contains(*c))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let query = ListQuery::new()
                .filter("name", "in", Value::from(missing.clone()))
                .fields(&["name"])
                .limit(u32::try_from(missing.len()).unwrap_or(u32::MAX));
            let found = client.list("Item", &query).await?;
            let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
            known.extend(found.iter().map(|d| d.name().to_string()));
        }
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        Ok(ItemCatalog::Known(
            codes
                .iter()
                .filter(|c| known.contains(*c))
                .cloned()
                .collect(),
        ))
    }
}
