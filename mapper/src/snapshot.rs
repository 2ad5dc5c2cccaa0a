//! Reading HubSpot: a deal with everything its Sales Order needs, in as few calls as HubSpot
//! allows (DESIGN §1, §6), and the single company or contact behind a change event.
//!
//! A deal costs: 1 `GET` of the deal with its association IDs, then one batch read each of its
//! company, contacts and line items, sent concurrently — 4 calls for any deal with up to 100 of
//! each (a 5th only when line items lack a SKU and their products must be read). The trigger is
//! checked between the first call and the others, so a deal that is not won costs 1 call.
//!
//! Only the properties the mapping uses are requested (from the config), plus the write-back
//! properties that tell whether a record is already synced.

use std::collections::BTreeMap;

use shared::hubspot::types::SimplePublicObject;
use shared::hubspot::{DEAL_ASSOCIATIONS, HubSpotClient, HubSpotError, ObjectType};
use shared::mapping::MappingConfig;

use crate::error::MapError;
use crate::map::{self, DealSnapshot};

/// Deal properties: trigger, header, and the write-backs that say a Sales Order exists.
pub fn deal_properties(cfg: &MappingConfig) -> Vec<String> {
    let mut p: Vec<String> = [
        "dealname",
        "dealstage",
        "pipeline",
        "amount",
        "hs_lastmodifieddate",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    p.extend([
        cfg.order.currency_property.clone(),
        cfg.order.transaction_date_property.clone(),
        cfg.writeback.deal_sales_order.clone(),
        cfg.writeback.deal_sync_status.clone(),
    ]);
    dedup(p)
}

pub fn company_properties(cfg: &MappingConfig) -> Vec<String> {
    let (c, a) = (&cfg.customer, &cfg.address);
    let mut p = vec![
        "hs_lastmodifieddate".to_string(),
        "domain".to_string(),
        c.name_property.clone(),
        c.website_property.clone(),
        a.line1_property.clone(),
        a.line2_property.clone(),
        a.city_property.clone(),
        a.state_property.clone(),
        a.pincode_property.clone(),
        a.country_property.clone(),
        a.phone_property.clone(),
        cfg.writeback.company_customer_id.clone(),
    ];
    p.extend(c.tax_id_property.clone());
    p.extend(a.email_property.clone());
    dedup(p)
}

pub fn contact_properties(cfg: &MappingConfig) -> Vec<String> {
    let c = &cfg.contact;
    dedup(vec![
        "lastmodifieddate".into(),
        "hs_lastmodifieddate".into(),
        c.first_name_property.clone(),
        c.last_name_property.clone(),
        c.email_property.clone(),
        c.phone_property.clone(),
    ])
}

pub fn line_item_properties(cfg: &MappingConfig) -> Vec<String> {
    let i = &cfg.items;
    dedup(vec![
        "name".into(),
        "amount".into(),
        "hs_product_id".into(),
        "hs_lastmodifieddate".into(),
        i.sku_property.clone(),
        i.quantity_property.clone(),
        i.rate_property.clone(),
        i.description_property.clone(),
    ])
}

fn product_properties(cfg: &MappingConfig) -> Vec<String> {
    dedup(vec!["name".into(), cfg.items.sku_property.clone()])
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|s| !s.is_empty() && seen.insert(s.clone()));
    v
}

/// HubSpot reads for the mapper. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reader {
    client: HubSpotClient,
}

impl Reader {
    pub fn new(client: HubSpotClient) -> Self {
        Self { client }
    }

    /// The deal with its association IDs; `None` when HubSpot does not know it (deleted, merged
    /// away). One call (two when a deal has more than a page of associations).
    pub async fn deal(
        &self,
        cfg: &MappingConfig,
        id: &str,
    ) -> Result<Option<SimplePublicObject>, HubSpotError> {
        not_found_as_none(
            self.client
                .get_deal_with_associations(id, &deal_properties(cfg), &DEAL_ASSOCIATIONS)
                .await,
        )
    }

    /// The deal's company, contacts and line items (concurrently), then products if needed.
    /// Returns the snapshot and the number of HubSpot calls it took, the deal's own included.
    pub async fn snapshot(
        &self,
        cfg: &MappingConfig,
        deal: SimplePublicObject,
    ) -> Result<(DealSnapshot, u32), MapError> {
        let company_ids: Vec<String> = deal
            .association_ids(ObjectType::Companies)
            .into_iter()
            .take(1)
            .collect();
        let contact_ids = deal.association_ids(ObjectType::Contacts);
        let line_ids = deal.association_ids(ObjectType::LineItems);
        let mut calls = 1;
        let count = |ids: &[String]| {
            u32::try_from(ids.len().div_ceil(shared::hubspot::BATCH_LIMIT)).unwrap_or(u32::MAX)
        };
        calls += count(&company_ids) + count(&contact_ids) + count(&line_ids);
        let (companies, contacts, lines) = tokio::try_join!(
            self.batch(ObjectType::Companies, &company_ids, company_properties(cfg)),
            self.batch(ObjectType::Contacts, &contact_ids, contact_properties(cfg)),
            self.batch(ObjectType::LineItems, &line_ids, line_item_properties(cfg)),
        )?;
        let label = map::deal_label(&deal);
        if !company_ids.is_empty() && companies.is_empty() {
            return Err(MapError::Incomplete(format!(
                "{label}: HubSpot did not return its company {}; retrying in case it was just changed",
                company_ids.join(",")
            )));
        }
        let line_items = in_order(&line_ids, lines);
        if line_items.len() != line_ids.len() {
            return Err(MapError::Incomplete(format!(
                "{label}: HubSpot returned {} of its {} line items; retrying in case they were just changed",
                line_items.len(),
                line_ids.len()
            )));
        }
        let product_ids = map::products_needed(cfg, &line_items);
        calls += count(&product_ids);
        let products = self
            .batch(ObjectType::Products, &product_ids, product_properties(cfg))
            .await?
            .into_iter()
            .map(|p| (p.id.clone(), p))
            .collect::<BTreeMap<_, _>>();
        Ok((
            DealSnapshot {
                deal,
                company: companies.into_iter().next(),
                // A contact deleted a moment ago is simply not part of the order.
                contacts: in_order(&contact_ids, contacts),
                line_items,
                products,
            },
            calls,
        ))
    }

    /// One company; `None` when deleted or unknown.
    pub async fn company(
        &self,
        cfg: &MappingConfig,
        id: &str,
    ) -> Result<Option<SimplePublicObject>, HubSpotError> {
        not_found_as_none(
            self.client
                .get_object(ObjectType::Companies, id, &company_properties(cfg), &[])
                .await,
        )
    }

    /// One contact with its company association IDs; `None` when deleted or unknown.
    pub async fn contact(
        &self,
        cfg: &MappingConfig,
        id: &str,
    ) -> Result<Option<SimplePublicObject>, HubSpotError> {
        not_found_as_none(
            self.client
                .get_object(
                    ObjectType::Contacts,
                    id,
                    &contact_properties(cfg),
                    &[ObjectType::Companies],
                )
                .await,
        )
    }

    /// The deals HubSpot still associates with these companies or contacts (one v4 batch read
    /// per 100). A deleted record's associations are gone: the caller adds what it recorded.
    pub async fn associated_deals(
        &self,
        from: ObjectType,
        ids: &[String],
    ) -> Result<Vec<String>, HubSpotError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let read = self
            .client
            .batch_read_associations(from, ObjectType::Deals, ids)
            .await?;
        Ok(ids.iter().flat_map(|id| read.ids(id)).collect())
    }

    /// Deals' current `properties` (one batch read per 100); deals HubSpot does not know are
    /// left out. The sweep's view of what HubSpot shows.
    pub async fn deals(
        &self,
        ids: &[String],
        properties: &[String],
    ) -> Result<Vec<SimplePublicObject>, HubSpotError> {
        self.batch(ObjectType::Deals, ids, properties.to_vec())
            .await
    }

    async fn batch(
        &self,
        ty: ObjectType,
        ids: &[String],
        properties: Vec<String>,
    ) -> Result<Vec<SimplePublicObject>, HubSpotError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self.client.batch_read(ty, ids, &properties).await?.objects)
    }
}

fn not_found_as_none(
    r: Result<SimplePublicObject, HubSpotError>,
) -> Result<Option<SimplePublicObject>, HubSpotError> {
    match r {
        Ok(o) if o.archived => Ok(None),
        Ok(o) => Ok(Some(o)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Objects in the order of `ids` (batch reads do not promise order).
fn in_order(ids: &[String], objects: Vec<SimplePublicObject>) -> Vec<SimplePublicObject> {
    let mut by_id: BTreeMap<String, SimplePublicObject> =
        objects.into_iter().map(|o| (o.id.clone(), o)).collect();
    ids.iter().filter_map(|id| by_id.remove(id)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn property_lists_follow_the_config() {
        let mut cfg = MappingConfig::default();
        cfg.customer.tax_id_property = Some("vat_number".into());
        let p = company_properties(&cfg);
        assert!(p.contains(&"vat_number".to_string()));
        assert!(p.contains(&"erpnext_customer_id".to_string()));
        let d = deal_properties(&cfg);
        for must in [
            "dealstage",
            "pipeline",
            "closedate",
            "deal_currency_code",
            "erpnext_sales_order",
        ] {
            assert!(d.contains(&must.to_string()), "{must}");
        }
        let l = line_item_properties(&cfg);
        assert_eq!(
            l.iter().filter(|x| *x == "name").count(),
            1,
            "deduplicated: {l:?}"
        );
    }

    #[test]
    fn batch_results_come_back_in_association_order() {
        let o = |id: &str| -> SimplePublicObject {
            serde_json::from_value(serde_json::json!({"id": id})).expect("object")
        };
        let ids = ["3".to_string(), "1".to_string(), "2".to_string()];
        let got: Vec<String> = in_order(&ids, vec![o("1"), o("2"), o("3")])
            .into_iter()
            .map(|x| x.id)
            .collect();
        assert_eq!(got, ["3", "1", "2"]);
    }
}
