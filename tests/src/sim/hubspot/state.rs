//! The portal's data: objects, associations and property definitions, and the mutations on them.
//! Pure data behind one mutex, no I/O: every mutation returns the [`Change`]s it made so the
//! caller can turn them into webhook events after releasing the lock.
//!
//! Timestamps come from a monotonic millisecond clock, so two writes to one object always get
//! distinct, increasing `hs_lastmodifieddate`s — the writers rely on that ordering (DESIGN §5).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::model::{ObjectType, can_associate, from_ms, has_primary, iso, parse_instant_ms};
use super::properties::{PropertyDef, standard};

/// One CRM object.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    pub id: u64,
    /// Every value is a string; an empty write removes the property (HubSpot's "clear").
    pub properties: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub archived: bool,
    pub archived_at: Option<DateTime<Utc>>,
}

/// An object as the admin API and in-process accessors show it: all properties, all associations.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectView {
    pub id: String,
    pub object_type: ObjectType,
    pub properties: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
    pub archived: bool,
    /// Associated ids per object type (`companies`, `line_items`, …); archived targets left out.
    pub associations: BTreeMap<String, Vec<String>>,
}

/// What one stored association carries besides its ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssocMeta {
    /// The "Primary" label (a deal's or contact's main company).
    pub primary: bool,
}

/// The line item properties HubSpot computes `amount` from.
const AMOUNT_INPUTS: [&str; 4] = ["price", "quantity", "discount", "hs_discount_percentage"];

/// A line item's `amount` as HubSpot computes it: price × quantity, less the discount (an
/// amount, `discount`, or a percentage, `hs_discount_percentage`), to the cent. `None` without
/// a price.
fn line_item_amount(p: &BTreeMap<String, String>) -> Option<String> {
    let num = |k: &str| p.get(k).and_then(|v| v.trim().parse::<f64>().ok());
    let gross = num("price")? * num("quantity").unwrap_or(1.0);
    let net = match num("hs_discount_percentage") {
        Some(pct) => gross * (1.0 - pct / 100.0),
        None => gross - num("discount").unwrap_or(0.0),
    };
    let cents = (net * 100.0).round() / 100.0;
    Some(format!("{cents}"))
}

/// A mutation, for webhook subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Created {
        ty: ObjectType,
        id: u64,
        at_ms: i64,
    },
    PropertyChanged {
        ty: ObjectType,
        id: u64,
        name: String,
        value: String,
        at_ms: i64,
    },
    /// Deleted (archived) by a user.
    Deleted {
        ty: ObjectType,
        id: u64,
        at_ms: i64,
    },
    /// Restored from the recycle bin by a user.
    Restored {
        ty: ObjectType,
        id: u64,
        at_ms: i64,
    },
    /// A user associated `from` with `to` (or removed the association).
    Associated {
        from: (ObjectType, u64),
        to: (ObjectType, u64),
        removed: bool,
        at_ms: i64,
    },
    /// `merged` were merged into `primary`, which keeps its ID.
    Merged {
        ty: ObjectType,
        primary: u64,
        merged: Vec<u64>,
        at_ms: i64,
    },
}

/// Why a store mutation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no {0} with id {1}")]
    NotFound(ObjectType, u64),
    #[error("a {0} with id {1} already exists")]
    Duplicate(ObjectType, u64),
    #[error("{0} cannot be associated with {1}")]
    Unassociable(ObjectType, ObjectType),
}

type Key = (ObjectType, u64);

#[derive(Debug)]
pub struct Store {
    objects: BTreeMap<ObjectType, BTreeMap<u64, Object>>,
    associations: BTreeMap<Key, BTreeMap<Key, AssocMeta>>,
    properties: BTreeMap<ObjectType, BTreeMap<String, PropertyDef>>,
    /// Never rewound, not even by `reset`: a reset portal must not hand out an id a downstream
    /// system already stored as `hubspot_deal_id`.
    next_id: u64,
    last_ms: i64,
}

impl Store {
    pub fn new(first_id: u64) -> Self {
        Self {
            objects: BTreeMap::new(),
            associations: BTreeMap::new(),
            properties: ObjectType::ALL.iter().map(|t| (*t, standard(*t))).collect(),
            next_id: first_id,
            last_ms: 0,
        }
    }

    /// Forget objects, associations and custom properties.
    pub fn reset(&mut self) {
        self.objects.clear();
        self.associations.clear();
        self.properties = ObjectType::ALL.iter().map(|t| (*t, standard(*t))).collect();
    }

    /// The current instant, strictly after every instant handed out before.
    pub fn now(&mut self) -> DateTime<Utc> {
        let ms = Utc::now().timestamp_millis().max(self.last_ms + 1);
        self.last_ms = ms;
        from_ms(ms)
    }

    pub fn property_defs(&self, ty: ObjectType) -> &BTreeMap<String, PropertyDef> {
        static EMPTY: BTreeMap<String, PropertyDef> = BTreeMap::new();
        self.properties.get(&ty).unwrap_or(&EMPTY)
    }

    pub fn add_property(&mut self, ty: ObjectType, def: PropertyDef) {
        self.properties
            .entry(ty)
            .or_default()
            .insert(def.name.clone(), def);
    }

    /// An object, archived or not.
    pub fn get(&self, ty: ObjectType, id: u64) -> Option<&Object> {
        self.objects.get(&ty)?.get(&id)
    }

    /// An object that is not archived.
    pub fn live(&self, ty: ObjectType, id: u64) -> Option<&Object> {
        self.get(ty, id).filter(|o| !o.archived)
    }

    /// Every object of a type in id order, archived ones included.
    pub fn objects(&self, ty: ObjectType) -> impl Iterator<Item = &Object> {
        self.objects.get(&ty).into_iter().flat_map(|m| m.values())
    }

    /// The live object whose `name` property equals `value` (`idProperty` look-ups).
    pub fn find_by_property(&self, ty: ObjectType, name: &str, value: &str) -> Option<u64> {
        self.objects(ty)
            .find(|o| !o.archived && o.properties.get(name).is_some_and(|v| v == value))
            .map(|o| o.id)
    }

    /// Create an object. `createdate`/`hs_lastmodifieddate` in `props` (ISO or epoch ms) set its
    /// timestamps, which lets seeds place deals in the past; otherwise both are now.
    pub fn create(
        &mut self,
        ty: ObjectType,
        props: BTreeMap<String, String>,
        id: Option<u64>,
    ) -> Result<(u64, Vec<Change>), StoreError> {
        let now = self.now();
        let id = match id {
            Some(id) if self.get(ty, id).is_some() => return Err(StoreError::Duplicate(ty, id)),
            Some(id) => id,
            None => {
                while self.get(ty, self.next_id).is_some() {
                    self.next_id += 1;
                }
                self.next_id += 1;
                self.next_id - 1
            }
        };
        let created_at = props
            .get("createdate")
            .and_then(|v| parse_instant_ms(v))
            .map_or(now, from_ms);
        let updated_at = props
            .get("hs_lastmodifieddate")
            .and_then(|v| parse_instant_ms(v))
            .map_or(if created_at < now { created_at } else { now }, from_ms);
        let mut properties: BTreeMap<String, String> =
            props.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if ty == ObjectType::LineItems
            && let Some(amount) = line_item_amount(&properties)
        {
            properties.insert("amount".into(), amount);
        }
        properties.insert("hs_object_id".into(), id.to_string());
        properties.insert("createdate".into(), iso(created_at));
        stamp_modified(ty, &mut properties, updated_at);
        let object = Object {
            id,
            properties,
            created_at,
            updated_at,
            archived: false,
            archived_at: None,
        };
        self.objects.entry(ty).or_default().insert(id, object);
        Ok((
            id,
            vec![Change::Created {
                ty,
                id,
                at_ms: created_at.timestamp_millis(),
            }],
        ))
    }

    /// Set properties of a live object; `""` clears one. Only actual changes are reported and
    /// only they move `hs_lastmodifieddate` (which a caller may also set explicitly, for seeds).
    pub fn update(
        &mut self,
        ty: ObjectType,
        id: u64,
        props: &BTreeMap<String, String>,
    ) -> Result<Vec<Change>, StoreError> {
        let now = self.now();
        let object = self
            .objects
            .get_mut(&ty)
            .and_then(|m| m.get_mut(&id))
            .filter(|o| !o.archived)
            .ok_or(StoreError::NotFound(ty, id))?;
        let explicit_modified = props
            .get("hs_lastmodifieddate")
            .and_then(|v| parse_instant_ms(v));
        let at = explicit_modified.map_or(now, from_ms);
        let mut changes = Vec::new();
        for (name, value) in props {
            if matches!(
                name.as_str(),
                "hs_object_id" | "hs_lastmodifieddate" | "lastmodifieddate"
            ) {
                continue;
            }
            let old = object.properties.get(name);
            let changed = if value.is_empty() {
                old.is_some()
            } else {
                old != Some(value)
            };
            if !changed {
                continue;
            }
            if value.is_empty() {
                object.properties.remove(name);
            } else {
                object.properties.insert(name.clone(), value.clone());
            }
            changes.push(Change::PropertyChanged {
                ty,
                id,
                name: name.clone(),
                value: value.clone(),
                at_ms: at.timestamp_millis(),
            });
        }
        // HubSpot recomputes a line item's amount when its price, quantity or discount changes.
        if ty == ObjectType::LineItems
            && changes.iter().any(|c| {
                matches!(c, Change::PropertyChanged { name, .. }
                    if AMOUNT_INPUTS.contains(&name.as_str()))
            })
            && let Some(amount) = line_item_amount(&object.properties)
            && object.properties.get("amount") != Some(&amount)
        {
            object.properties.insert("amount".into(), amount.clone());
            changes.push(Change::PropertyChanged {
                ty,
                id,
                name: "amount".into(),
                value: amount,
                at_ms: at.timestamp_millis(),
            });
        }
        if !changes.is_empty() || explicit_modified.is_some() {
            object.updated_at = at;
            stamp_modified(ty, &mut object.properties, at);
        }
        Ok(changes)
    }

    /// Restore an archived object (the recycle bin's "Restore"). `false` if there was none.
    pub fn restore(&mut self, ty: ObjectType, id: u64) -> bool {
        match self
            .objects
            .get_mut(&ty)
            .and_then(|m| m.get_mut(&id))
            .filter(|o| o.archived)
        {
            Some(o) => {
                o.archived = false;
                o.archived_at = None;
                true
            }
            None => false,
        }
    }

    /// Archive (HubSpot's DELETE). `false` if there was no live object.
    pub fn archive(&mut self, ty: ObjectType, id: u64) -> bool {
        let now = self.now();
        match self
            .objects
            .get_mut(&ty)
            .and_then(|m| m.get_mut(&id))
            .filter(|o| !o.archived)
        {
            Some(o) => {
                o.archived = true;
                o.archived_at = Some(now);
                true
            }
            None => false,
        }
    }

    /// Associate two live objects, both directions. A primary association demotes the previous
    /// primary of `from` towards `to`'s type.
    pub fn associate(&mut self, from: Key, to: Key, primary: bool) -> Result<(), StoreError> {
        if !can_associate(from.0, to.0) {
            return Err(StoreError::Unassociable(from.0, to.0));
        }
        for (ty, id) in [from, to] {
            if self.live(ty, id).is_none() {
                return Err(StoreError::NotFound(ty, id));
            }
        }
        let primary = primary && has_primary(from.0, to.0);
        if primary {
            let demoted: Vec<Key> = self
                .associations
                .get(&from)
                .into_iter()
                .flatten()
                .filter(|(k, m)| k.0 == to.0 && m.primary)
                .map(|(k, _)| *k)
                .collect();
            for other in demoted {
                self.set_meta(from, other, AssocMeta { primary: false });
            }
        }
        self.set_meta(from, to, AssocMeta { primary });
        Ok(())
    }

    fn set_meta(&mut self, a: Key, b: Key, meta: AssocMeta) {
        self.associations.entry(a).or_default().insert(b, meta);
        self.associations.entry(b).or_default().insert(a, meta);
    }

    /// Live objects of type `to` associated with `(ty, id)`, in id order.
    pub fn associated(&self, ty: ObjectType, id: u64, to: ObjectType) -> Vec<(u64, AssocMeta)> {
        self.associations
            .get(&(ty, id))
            .into_iter()
            .flatten()
            .filter(|((t, other), _)| *t == to && self.live(*t, *other).is_some())
            .map(|((_, other), meta)| (*other, *meta))
            .collect()
    }

    /// Whether `(ty, id)` already has a primary association towards `to`.
    pub fn has_primary_towards(&self, ty: ObjectType, id: u64, to: ObjectType) -> bool {
        self.associated(ty, id, to).iter().any(|(_, m)| m.primary)
    }

    pub fn view(&self, ty: ObjectType, id: u64) -> Option<ObjectView> {
        let o = self.get(ty, id)?;
        let associations = ObjectType::ALL
            .iter()
            .filter_map(|to| {
                let ids: Vec<String> = self
                    .associated(ty, id, *to)
                    .iter()
                    .map(|(i, _)| i.to_string())
                    .collect();
                (!ids.is_empty()).then(|| (to.path_name().to_string(), ids))
            })
            .collect();
        Some(ObjectView {
            id: o.id.to_string(),
            object_type: ty,
            properties: o.properties.clone(),
            created_at: iso(o.created_at),
            updated_at: iso(o.updated_at),
            archived: o.archived,
            associations,
        })
    }
}

/// `hs_lastmodifieddate` on every type; contacts also carry the older `lastmodifieddate`.
fn stamp_modified(ty: ObjectType, properties: &mut BTreeMap<String, String>, at: DateTime<Utc>) {
    properties.insert("hs_lastmodifieddate".into(), iso(at));
    if ty == ObjectType::Contacts {
        properties.insert("lastmodifieddate".into(), iso(at));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn updates_report_only_real_changes_and_move_modified_forward() {
        let mut s = Store::new(100);
        let (id, created) = s
            .create(
                ObjectType::Deals,
                props(&[("dealstage", "qualifiedtobuy")]),
                None,
            )
            .expect("create");
        assert_eq!(id, 100);
        assert!(matches!(created[..], [Change::Created { id: 100, .. }]));
        let before =
            s.get(ObjectType::Deals, id).expect("deal").properties["hs_lastmodifieddate"].clone();
        assert!(
            s.update(
                ObjectType::Deals,
                id,
                &props(&[("dealstage", "qualifiedtobuy")])
            )
            .expect("noop")
            .is_empty()
        );
        let changes = s
            .update(
                ObjectType::Deals,
                id,
                &props(&[("dealstage", "closedwon"), ("amount", "")]),
            )
            .expect("upd");
        assert_eq!(changes.len(), 1, "clearing an unset property is no change");
        let after =
            s.get(ObjectType::Deals, id).expect("deal").properties["hs_lastmodifieddate"].clone();
        assert!(after > before, "{after} > {before}");
        assert!(s.archive(ObjectType::Deals, id));
        assert_eq!(
            s.update(ObjectType::Deals, id, &props(&[("amount", "1")])),
            Err(StoreError::NotFound(ObjectType::Deals, id))
        );
    }

    #[test]
    fn seeded_timestamps_and_explicit_ids_are_kept() {
        let mut s = Store::new(1);
        let (id, _) = s
            .create(
                ObjectType::Deals,
                props(&[
                    ("createdate", "1735689600000"),
                    ("hs_lastmodifieddate", "2025-01-02T00:00:00Z"),
                ]),
                Some(77),
            )
            .expect("create");
        let d = s.get(ObjectType::Deals, id).expect("deal");
        assert_eq!(d.properties["createdate"], "2025-01-01T00:00:00.000Z");
        assert_eq!(
            d.properties["hs_lastmodifieddate"],
            "2025-01-02T00:00:00.000Z"
        );
        assert_eq!(
            s.create(ObjectType::Deals, BTreeMap::new(), Some(77)),
            Err(StoreError::Duplicate(ObjectType::Deals, 77))
        );
    }

    #[test]
    fn associations_are_two_way_with_one_primary() {
        let mut s = Store::new(1);
        let (deal, _) = s
            .create(ObjectType::Deals, BTreeMap::new(), None)
            .expect("d");
        let (c1, _) = s
            .create(ObjectType::Companies, BTreeMap::new(), None)
            .expect("c1");
        let (c2, _) = s
            .create(ObjectType::Companies, BTreeMap::new(), None)
            .expect("c2");
        s.associate((ObjectType::Deals, deal), (ObjectType::Companies, c1), true)
            .expect("a1");
        s.associate((ObjectType::Deals, deal), (ObjectType::Companies, c2), true)
            .expect("a2");
        let assoc = s.associated(ObjectType::Deals, deal, ObjectType::Companies);
        assert_eq!(
            assoc,
            vec![
                (c1, AssocMeta { primary: false }),
                (c2, AssocMeta { primary: true })
            ]
        );
        assert_eq!(
            s.associated(ObjectType::Companies, c1, ObjectType::Deals)
                .len(),
            1
        );
        assert!(
            s.associate((ObjectType::Deals, deal), (ObjectType::Products, 1), false)
                .is_err()
        );
        s.archive(ObjectType::Companies, c2);
        assert_eq!(
            s.associated(ObjectType::Deals, deal, ObjectType::Companies)
                .len(),
            1
        );
    }
}
