//! Source versions kept in HubSpot beside the values they date, so a money-bearing write-back
//! never moves backwards, whatever Redis remembers (issue 16).
//!
//! The Redis guard ([`crate::ordering`]) is fast but not the truth: a Redis that restarts empty,
//! or fails over and loses its recent writes, forgets that "paid" was written, and a late
//! "unpaid" (out of the 30-minute retry tier, or a replayed Frappe delivery whose seen key
//! expired) would then overwrite it for good. So some properties carry a companion property in
//! HubSpot itself: the deal's invoice status has `erpnext_invoice_status_at`, the ERPNext time
//! the status became true. Before such a property is written, the objects' companions are read
//! (one `batch/read` per flush that carries one); a value whose source time is older than the one
//! HubSpot holds is left out, and every value written carries its time in the same update, so
//! HubSpot always holds a value and its time together.
//!
//! When the read fails, nothing of those objects is written (their messages are retried): an
//! unguarded write is exactly what this exists to prevent. Redis stays the fast path: what it
//! already knows to be older never costs the read.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use shared::hubspot::{HubSpotClient, HubSpotError, ObjectType};
use shared::mapping::WritebackConfig;

use crate::metrics;
use crate::ordering::Stamped;

/// Value property → the property holding its source time, per object type.
#[derive(Debug, Clone, Default)]
pub struct SourceVersions {
    pairs: Vec<(String, String)>,
}

impl SourceVersions {
    /// The pairs of `object_type` under `writeback`: the deal's invoice status and its time.
    pub fn for_object(object_type: ObjectType, writeback: &WritebackConfig) -> Self {
        let pairs = match object_type {
            ObjectType::Deals => vec![(
                writeback.deal_invoice_status.clone(),
                writeback.deal_invoice_status_at.clone(),
            )],
            _ => Vec::new(),
        };
        Self { pairs }
    }

    /// Whether `fresh` holds a value whose write needs HubSpot's source time first.
    pub fn guards(&self, fresh: &BTreeMap<String, Stamped>) -> bool {
        self.companions(fresh).next().is_some()
    }

    fn companions<'a>(
        &'a self,
        fresh: &'a BTreeMap<String, Stamped>,
    ) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.pairs
            .iter()
            .filter(|(value, _)| fresh.contains_key(value))
            .map(|(v, c)| (v.as_str(), c.as_str()))
    }

    /// Drop from each object's `fresh` the versioned values older than what HubSpot holds, and
    /// add the companion time to the ones that stay. Returns how many values were dropped, or
    /// the read's error (then nothing of these objects may be written).
    pub async fn check(
        &self,
        client: &HubSpotClient,
        object_type: ObjectType,
        objects: &mut [(&str, &mut BTreeMap<String, Stamped>)],
    ) -> Result<usize, HubSpotError> {
        let ids: Vec<&str> = objects
            .iter()
            .filter(|(_, fresh)| self.guards(fresh))
            .map(|(id, _)| *id)
            .collect();
        if ids.is_empty() {
            return Ok(0);
        }
        let properties: Vec<&str> = self.pairs.iter().map(|(_, c)| c.as_str()).collect();
        let read = client.batch_read(object_type, &ids, &properties).await?;
        let held: HashMap<&str, &BTreeMap<String, Option<String>>> = read
            .objects
            .iter()
            .map(|o| (o.id.as_str(), &o.properties))
            .collect();
        let mut dropped = 0;
        for (id, fresh) in objects.iter_mut() {
            let pairs: Vec<(String, String)> = self
                .companions(fresh)
                .map(|(v, c)| (v.to_string(), c.to_string()))
                .collect();
            for (value, companion) in pairs {
                let Some(stamped) = fresh.get(&value).cloned() else {
                    continue;
                };
                let incoming = stamped.at.trunc_subsecs(3);
                let holds = held
                    .get(id)
                    .and_then(|p| p.get(&companion))
                    .and_then(|v| v.as_deref())
                    .and_then(parse_time);
                match holds {
                    Some(holds) if holds > incoming => {
                        tracing::info!(
                            object_type = object_type.as_str(),
                            object_id = id,
                            property = value,
                            value = stamped.value,
                            source_time = %incoming,
                            hubspot_holds = %holds,
                            "skipped: HubSpot holds a newer value of this property"
                        );
                        fresh.remove(&value);
                        dropped += 1;
                    }
                    _ => {
                        fresh.insert(
                            companion,
                            Stamped {
                                value: incoming.to_rfc3339_opts(SecondsFormat::Millis, true),
                                at: stamped.at,
                            },
                        );
                    }
                }
            }
        }
        if dropped > 0 {
            metrics::stale_in_hubspot(object_type, dropped);
        }
        Ok(dropped)
    }
}

/// A HubSpot datetime as it comes back (ISO 8601), or epoch milliseconds.
fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if raw.is_empty() {
        return None;
    }
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| {
            raw.parse::<i64>()
                .ok()
                .and_then(DateTime::from_timestamp_millis)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hubspot_datetimes_parse_as_iso_or_epoch_ms() {
        let t = parse_time("2026-12-07T19:30:00.123Z").expect("iso");
        assert_eq!(t.timestamp_millis(), 1_796_671_800_123);
        assert_eq!(parse_time("1796671800123"), Some(t));
        assert_eq!(parse_time(""), None);
        assert_eq!(parse_time("yesterday"), None);
    }

    #[test]
    fn only_deals_carry_the_invoice_status_time() {
        let w = WritebackConfig::default();
        let deals = SourceVersions::for_object(ObjectType::Deals, &w);
        assert_eq!(
            deals.pairs,
            vec![(
                "invoice_status".to_string(),
                "erpnext_invoice_status_at".to_string()
            )]
        );
        assert!(
            SourceVersions::for_object(ObjectType::Companies, &w)
                .pairs
                .is_empty()
        );
    }
}
