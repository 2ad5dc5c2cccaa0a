//! The declarative mapping from HubSpot records to ERPNext documents (DESIGN §8): which deals
//! trigger a sync, which HubSpot property fills which ERPNext field, SKU → Item, defaults, and the
//! HubSpot property names written back. Read by the mapper; checked by every `config check`.

use serde::{Deserialize, Serialize};

use crate::config::Problem;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MappingConfig {}

impl MappingConfig {
    pub fn validate(&self) -> Vec<Problem> {
        Vec::new()
    }
}
