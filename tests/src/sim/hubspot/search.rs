//! `POST /crm/v3/objects/{type}/search` (README §4): filter groups OR-ed, filters inside a group
//! AND-ed, one sort, `limit` ≤ 200, offset paging through `after`, and the 10,000-result cap that
//! forces a backfill to slice its query by `hs_lastmodifieddate`.
//!
//! Values compare numerically when both sides read as numbers or instants (epoch ms, ISO-8601,
//! `YYYY-MM-DD`) — which is how a filter `GTE "1735689600000"` matches a stored
//! `"2025-01-02T11:59:50.123Z"` — and as case-insensitive strings otherwise.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::{ApiError, HsJson};
use super::model::parse_instant_ms;
use super::objects::{Selection, object_type, render};
use super::portal::Portal;

/// Results a query can page through at most.
pub const RESULT_CAP: u64 = 10_000;
pub const MAX_LIMIT: u64 = 200;
pub const DEFAULT_LIMIT: u64 = 10;
/// HubSpot's current search limits (search guide, "Limitations"): 5 filter groups, 10 filters
/// per group, 25 filters in total (they were 3 groups of 3 once, then 6 and 18).
pub const MAX_GROUPS: usize = 5;
pub const MAX_FILTERS_PER_GROUP: usize = 10;
pub const MAX_FILTERS: usize = 25;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operator {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    Between,
    In,
    NotIn,
    HasProperty,
    NotHasProperty,
    ContainsToken,
    NotContainsToken,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub property_name: String,
    pub operator: Operator,
    #[serde(default)]
    pub value: Option<Value>,
    #[serde(default)]
    pub high_value: Option<Value>,
    #[serde(default)]
    pub values: Option<Vec<Value>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct FilterGroup {
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// A sort: the documented object form, or the spec's bare string (`"-createdate"` descending).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Sort {
    Object {
        #[serde(rename = "propertyName")]
        property_name: String,
        #[serde(default)]
        direction: Option<String>,
    },
    Name(String),
}

impl Sort {
    fn key(&self) -> (String, bool) {
        match self {
            Sort::Object {
                property_name,
                direction,
            } => (
                property_name.clone(),
                direction
                    .as_deref()
                    .is_some_and(|d| d.eq_ignore_ascii_case("DESCENDING")),
            ),
            Sort::Name(n) => match n.strip_prefix('-') {
                Some(rest) => (rest.to_string(), true),
                None => (n.clone(), false),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub sorts: Vec<Sort>,
    #[serde(default)]
    pub properties: Vec<String>,
    #[serde(default)]
    pub limit: Option<u64>,
    #[serde(default)]
    pub after: Option<Value>,
    #[serde(default)]
    pub query: Option<String>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(s: &str) -> Option<f64> {
    let t = s.trim();
    t.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .or_else(|| parse_instant_ms(t).map(|ms| ms as f64))
}

/// Numeric when both sides are numbers or instants, else case-insensitive text.
pub fn compare(a: &str, b: &str) -> Ordering {
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(Ordering::Equal),
        _ => a.to_lowercase().cmp(&b.to_lowercase()),
    }
}

impl Filter {
    /// Check the operands the operator needs.
    fn validate(&self) -> Result<(), ApiError> {
        let need = |what: &str| {
            ApiError::validation(format!(
                "{what} is required for operator {:?} on {}",
                self.operator, self.property_name
            ))
        };
        match self.operator {
            Operator::HasProperty | Operator::NotHasProperty => Ok(()),
            Operator::In | Operator::NotIn => match &self.values {
                Some(v) if !v.is_empty() => Ok(()),
                _ => Err(need("values")),
            },
            Operator::Between => {
                self.value
                    .as_ref()
                    .and_then(scalar)
                    .ok_or_else(|| need("value"))?;
                self.high_value
                    .as_ref()
                    .and_then(scalar)
                    .ok_or_else(|| need("highValue"))
                    .map(|_| ())
            }
            _ => self
                .value
                .as_ref()
                .and_then(scalar)
                .ok_or_else(|| need("value"))
                .map(|_| ()),
        }
    }

    pub fn matches(&self, props: &BTreeMap<String, String>) -> bool {
        let actual = props.get(&self.property_name).filter(|v| !v.is_empty());
        let value = self.value.as_ref().and_then(scalar).unwrap_or_default();
        let cmp = |want: &str| actual.map(|a| compare(a, want));
        let in_values = || {
            self.values
                .iter()
                .flatten()
                .filter_map(scalar)
                .any(|w| cmp(&w) == Some(Ordering::Equal))
        };
        let token = || {
            let t = value.trim_matches('*').to_lowercase();
            actual.is_some_and(|a| a.to_lowercase().contains(&t))
        };
        match self.operator {
            Operator::Eq => cmp(&value) == Some(Ordering::Equal),
            Operator::Neq => cmp(&value) != Some(Ordering::Equal),
            Operator::Lt => cmp(&value) == Some(Ordering::Less),
            Operator::Lte => matches!(cmp(&value), Some(Ordering::Less | Ordering::Equal)),
            Operator::Gt => cmp(&value) == Some(Ordering::Greater),
            Operator::Gte => matches!(cmp(&value), Some(Ordering::Greater | Ordering::Equal)),
            Operator::Between => {
                let high = self
                    .high_value
                    .as_ref()
                    .and_then(scalar)
                    .unwrap_or_default();
                matches!(cmp(&value), Some(Ordering::Greater | Ordering::Equal))
                    && matches!(cmp(&high), Some(Ordering::Less | Ordering::Equal))
            }
            Operator::In => in_values(),
            Operator::NotIn => !in_values(),
            Operator::HasProperty => actual.is_some(),
            Operator::NotHasProperty => actual.is_none(),
            Operator::ContainsToken => token(),
            Operator::NotContainsToken => !token(),
        }
    }
}

/// A page of results: ids in order, the total and the next offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub ids: Vec<u64>,
    pub total: u64,
    pub next_after: Option<u64>,
}

impl SearchRequest {
    fn limit(&self) -> Result<u64, ApiError> {
        match self.limit {
            None => Ok(DEFAULT_LIMIT),
            Some(l) if l > MAX_LIMIT => Err(ApiError::validation(format!(
                "limit {l} is above the maximum of {MAX_LIMIT}"
            ))),
            Some(l) => Ok(l),
        }
    }

    fn after(&self) -> Result<u64, ApiError> {
        match &self.after {
            None | Some(Value::Null) => Ok(0),
            Some(v) => scalar(v).filter(|s| !s.is_empty()).map_or(Ok(0), |s| {
                s.trim().parse().map_err(|_| {
                    ApiError::validation(format!("after {s:?} is not a valid paging cursor"))
                })
            }),
        }
    }

    /// Validate and run the query over `(id, properties)` of live objects.
    pub fn run<'a>(
        &self,
        objects: impl Iterator<Item = (u64, &'a BTreeMap<String, String>)>,
    ) -> Result<Page, ApiError> {
        if self.filter_groups.len() > MAX_GROUPS {
            return Err(ApiError::validation(format!(
                "Too many filter groups: {} (max {MAX_GROUPS})",
                self.filter_groups.len()
            )));
        }
        let mut count = 0;
        for g in &self.filter_groups {
            if g.filters.len() > MAX_FILTERS_PER_GROUP {
                return Err(ApiError::validation(format!(
                    "Too many filters in a group: {} (max {MAX_FILTERS_PER_GROUP})",
                    g.filters.len()
                )));
            }
            count += g.filters.len();
            g.filters.iter().try_for_each(Filter::validate)?;
        }
        if count > MAX_FILTERS {
            return Err(ApiError::validation(format!(
                "Too many filters: {count} (max {MAX_FILTERS})"
            )));
        }
        if self.sorts.len() > 1 {
            return Err(ApiError::validation("Only one sort is supported"));
        }
        let limit = self.limit()?;
        let after = self.after()?;
        if after + limit > RESULT_CAP {
            return Err(ApiError::validation(format!(
                "Search results are limited to {RESULT_CAP}: after ({after}) + limit ({limit}) goes past the cap. Narrow the query instead of paging further."
            )));
        }
        let query = self
            .query
            .as_deref()
            .map(str::to_lowercase)
            .filter(|q| !q.is_empty());
        let mut hits: Vec<(u64, &BTreeMap<String, String>)> = objects
            .filter(|(_, p)| {
                self.filter_groups.is_empty()
                    || self
                        .filter_groups
                        .iter()
                        .any(|g| g.filters.iter().all(|f| f.matches(p)))
            })
            .filter(|(_, p)| {
                query
                    .as_ref()
                    .is_none_or(|q| p.values().any(|v| v.to_lowercase().contains(q)))
            })
            .collect();
        let (sort_prop, descending) = self
            .sorts
            .first()
            .map_or(("hs_object_id".to_string(), false), Sort::key);
        hits.sort_by(|(ia, pa), (ib, pb)| {
            let ord = match (pa.get(&sort_prop), pb.get(&sort_prop)) {
                (Some(a), Some(b)) => compare(a, b),
                // Objects without the property come last either way.
                (Some(_), None) => return Ordering::Less,
                (None, Some(_)) => return Ordering::Greater,
                (None, None) => Ordering::Equal,
            };
            let ord = if descending { ord.reverse() } else { ord };
            ord.then(ia.cmp(ib))
        });
        let total = hits.len() as u64;
        let start = usize::try_from(after).unwrap_or(usize::MAX);
        let take = usize::try_from(limit).unwrap_or(usize::MAX);
        let ids: Vec<u64> = hits
            .iter()
            .skip(start)
            .take(take)
            .map(|(id, _)| *id)
            .collect();
        let end = after + ids.len() as u64;
        Ok(Page {
            next_after: (end < total).then_some(end),
            ids,
            total,
        })
    }
}

/// `POST /crm/v3/objects/{type}/search`
pub async fn search(
    State(portal): State<Arc<Portal>>,
    Path(ty): Path<String>,
    HsJson(req): HsJson<SearchRequest>,
) -> Result<Json<Value>, ApiError> {
    let ty = object_type(&ty)?;
    let store = portal.store();
    let page = req.run(
        store
            .objects(ty)
            .filter(|o| !o.archived)
            .map(|o| (o.id, &o.properties)),
    )?;
    let sel = if req.properties.is_empty() {
        Selection::Default
    } else {
        Selection::Requested(&req.properties)
    };
    let results: Vec<Value> = page
        .ids
        .iter()
        .filter_map(|id| store.get(ty, *id))
        .map(|o| render(&store, ty, o, sel, portal.unset_as_null, &[]))
        .collect();
    let mut body = json!({ "total": page.total, "results": results });
    if let Some(next) = page.next_after {
        body["paging"] =
            json!({ "next": { "after": next.to_string(), "link": format!("?after={next}") } });
    }
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(n: u64) -> Vec<(u64, BTreeMap<String, String>)> {
        (1..=n)
            .map(|i| {
                let mut p = BTreeMap::new();
                p.insert("hs_object_id".into(), i.to_string());
                p.insert(
                    "dealstage".into(),
                    if i % 2 == 0 {
                        "closedwon".into()
                    } else {
                        "appointmentscheduled".into()
                    },
                );
                p.insert(
                    "hs_lastmodifieddate".into(),
                    format!("2025-01-{:02}T00:00:00.000Z", (i % 28) + 1),
                );
                p.insert("amount".into(), format!("{}", i * 10));
                (i, p)
            })
            .collect()
    }

    fn run(req: Value, data: &[(u64, BTreeMap<String, String>)]) -> Result<Page, ApiError> {
        let req: SearchRequest = serde_json::from_value(req).expect("request");
        req.run(data.iter().map(|(id, p)| (*id, p)))
    }

    #[test]
    fn groups_or_filters_and_compare_numbers_and_dates() {
        let data = objects(10);
        let page = run(
            json!({"filterGroups": [
                {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "CLOSEDWON"},
                             {"propertyName": "amount", "operator": "GT", "value": 50}]},
                {"filters": [{"propertyName": "hs_object_id", "operator": "IN", "values": ["1", "3"]}]}
            ], "limit": 100}),
            &data,
        )
        .expect("ok");
        assert_eq!(
            page.ids,
            vec![1, 3, 6, 8, 10],
            "amount 60 > 50 numerically (not '60' < '9' as text)"
        );
        let page = run(
            json!({"filterGroups": [{"filters": [
                {"propertyName": "hs_lastmodifieddate", "operator": "BETWEEN", "value": "1735689600000", "highValue": "2025-01-03"}
            ]}], "sorts": [{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}]}),
            &data,
        )
        .expect("ok");
        assert_eq!(page.ids, vec![2, 1], "Jan 1..Jan 3 inclusive, newest first");
        let page = run(json!({"filterGroups": [{"filters": [{"propertyName": "nothing", "operator": "NOT_HAS_PROPERTY"}]}]}), &data).expect("ok");
        assert_eq!(page.total, 10);
    }

    #[test]
    fn paging_walks_every_result_once() {
        let data = objects(25);
        let mut after: Option<String> = None;
        let mut seen = Vec::new();
        loop {
            let page = run(json!({"limit": 10, "after": after}), &data).expect("page");
            assert_eq!(page.total, 25);
            seen.extend(page.ids);
            match page.next_after {
                Some(n) => after = Some(n.to_string()),
                None => break,
            }
        }
        assert_eq!(seen, (1..=25).collect::<Vec<_>>());
    }

    #[test]
    fn limits_are_enforced() {
        let data = objects(1);
        assert!(run(json!({"limit": 201}), &data).is_err());
        assert!(run(json!({"limit": 200, "after": "9800"}), &data).is_ok());
        assert!(run(json!({"limit": 200, "after": "9801"}), &data).is_err());
        assert!(
            run(
                json!({"filterGroups": [{"filters": [{"propertyName": "a", "operator": "EQ"}]}]}),
                &data
            )
            .is_err()
        );
        assert!(serde_json::from_value::<SearchRequest>(json!({"filterGroups": [{"filters": [{"propertyName": "a", "operator": "LIKE", "value": "x"}]}]})).is_err());
        let groups: Vec<Value> = (0..6).map(|_| json!({"filters": []})).collect();
        assert!(run(json!({"filterGroups": groups}), &data).is_err());
    }
}
