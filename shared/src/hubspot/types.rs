//! HubSpot CRM wire types, mirroring `contracts/hubspot/api` (OpenAPI models of the v3 objects,
//! v3 properties, v3 pipelines and v4 associations APIs).
//!
//! Decoding is lenient where HubSpot is known to vary (property values may be `null`, association
//! keys may be `line items` with a space, `toObjectId` was an integer in older versions, optional
//! fields come and go) and strict where a mismatch means we misunderstood the contract (an object
//! without `id`). Unknown fields are ignored: HubSpot adds fields without notice.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};

/// The CRM object types lead2ledger reads and writes. `as_str` is the URL path segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjectType {
    Deals,
    Companies,
    Contacts,
    LineItems,
    /// Read only when a line item lacks its SKU (the product holds it).
    Products,
}

impl ObjectType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectType::Deals => "deals",
            ObjectType::Companies => "companies",
            ObjectType::Contacts => "contacts",
            ObjectType::LineItems => "line_items",
            ObjectType::Products => "products",
        }
    }

    /// The keys this type may appear under in an object's `associations` map. HubSpot has been
    /// observed answering `associations=line_items` with the key `"line items"` (contract §1).
    pub fn association_keys(self) -> &'static [&'static str] {
        match self {
            ObjectType::Deals => &["deals"],
            ObjectType::Companies => &["companies"],
            ObjectType::Contacts => &["contacts"],
            ObjectType::LineItems => &["line_items", "line items"],
            ObjectType::Products => &["products"],
        }
    }
}

impl std::fmt::Display for ObjectType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `SimplePublicObject` / `SimplePublicObjectWithAssociations`. All property values are strings;
/// HubSpot sends `null` for a requested property that has no value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimplePublicObject {
    pub id: String,
    #[serde(default)]
    pub properties: BTreeMap<String, Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// Only on single-object reads with `associations=`; keyed by plural type name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub associations: BTreeMap<String, AssociationCollection>,
}

impl SimplePublicObject {
    /// A property's value; `None` when absent, `null` or empty (HubSpot clears with `""`).
    pub fn property(&self, name: &str) -> Option<&str> {
        self.properties
            .get(name)
            .and_then(|v| v.as_deref())
            .filter(|v| !v.is_empty())
    }

    /// IDs of associated objects of `to`, from either spelling of the key, deduplicated, in order.
    pub fn association_ids(&self, to: ObjectType) -> Vec<String> {
        let mut ids: Vec<String> = Vec::new();
        for key in to.association_keys() {
            if let Some(c) = self.associations.get(*key) {
                for a in &c.results {
                    if !ids.contains(&a.id) {
                        ids.push(a.id.clone());
                    }
                }
            }
        }
        ids
    }

    /// Whether any association list was cut off (more than one page of associations).
    pub fn associations_truncated(&self, to: ObjectType) -> bool {
        to.association_keys().iter().any(|k| {
            self.associations
                .get(*k)
                .is_some_and(|c| c.paging.as_ref().is_some_and(|p| p.next.is_some()))
        })
    }
}

/// `CollectionResponseAssociatedId`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AssociationCollection {
    #[serde(default)]
    pub results: Vec<AssociatedId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociatedId {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// e.g. `deal_to_company`.
    #[serde(rename = "type", default)]
    pub association_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Paging {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextPage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NextPage {
    #[serde(deserialize_with = "string_or_number")]
    pub after: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

/// `{ "id": … }`, the input of batch reads and the `from` of v4 association results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectId {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
}

/// `BatchReadInputSimplePublicObjectId`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchReadRequest {
    pub inputs: Vec<ObjectId>,
    pub properties: Vec<String>,
    pub properties_with_history: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
}

/// `BatchResponse…` and `BatchResponse…WithErrors` (HTTP 200 and 207) in one type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchResponse<T> {
    /// PENDING | PROCESSING | CANCELED | COMPLETE.
    #[serde(default)]
    pub status: String,
    #[serde(default = "Vec::new")]
    pub results: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_errors: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<StandardError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_at: Option<DateTime<Utc>>,
}

/// One entry of a batch response's `errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StandardError {
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub category: String,
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<serde_json::Value>,
    #[serde(default)]
    pub context: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
}

impl StandardError {
    /// The object IDs an `OBJECT_NOT_FOUND` error names (`context.ids`).
    pub fn missing_ids(&self) -> &[String] {
        if self.category == "OBJECT_NOT_FOUND" {
            self.context
                .get("ids")
                .map(Vec::as_slice)
                .unwrap_or_default()
        } else {
            &[]
        }
    }
}

/// `ErrorDetail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorDetail {
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, rename = "in", skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<BTreeMap<String, Vec<String>>>,
}

/// The body of a non-2xx answer (`Error` in the spec, plus the 429 body's `errorType`,
/// `policyName`, `groupName`). Every field optional: it is parsed to enrich an error, never to
/// decide whether there is one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiErrorBody {
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub sub_category: Option<serde_json::Value>,
    #[serde(default)]
    pub context: Option<BTreeMap<String, Vec<String>>>,
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
    /// `RATE_LIMIT` on 429s.
    #[serde(default)]
    pub error_type: Option<String>,
    /// `TEN_SECONDLY_ROLLING` | `SECONDLY` | `DAILY` on 429s.
    #[serde(default)]
    pub policy_name: Option<String>,
    #[serde(default)]
    pub group_name: Option<String>,
}

/// `PublicObjectSearchRequest`. Groups are OR-ed, filters inside a group AND-ed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchRequest {
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub sorts: Vec<Sort>,
    #[serde(default)]
    pub properties: Vec<String>,
    /// Page size, at most 200.
    pub limit: u32,
    /// Paging cursor from the previous page's `paging.next.after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FilterGroup {
    pub filters: Vec<Filter>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub property_name: String,
    pub operator: FilterOperator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// Upper bound for `BETWEEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub high_value: Option<String>,
    /// For `IN` / `NOT_IN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

impl Filter {
    /// `property <op> value`; date values are epoch milliseconds as strings.
    pub fn new(
        property_name: impl Into<String>,
        operator: FilterOperator,
        value: impl Into<String>,
    ) -> Self {
        Self {
            property_name: property_name.into(),
            operator,
            value: Some(value.into()),
            high_value: None,
            values: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FilterOperator {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sort {
    pub property_name: String,
    pub direction: SortDirection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum SortDirection {
    Ascending,
    Descending,
}

/// `CollectionResponseWithTotalSimplePublicObject`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    pub total: u64,
    #[serde(default)]
    pub results: Vec<SimplePublicObject>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

impl SearchResponse {
    pub fn next_after(&self) -> Option<&str> {
        self.paging
            .as_ref()?
            .next
            .as_ref()
            .map(|n| n.after.as_str())
    }
}

/// v4 `BatchInputPublicFetchAssociationsBatchRequest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociationBatchReadRequest {
    pub inputs: Vec<AssociationFetchInput>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociationFetchInput {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// v4 `PublicAssociationMultiWithLabel`: one source object's associations of one target type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssociationMulti {
    pub from: ObjectId,
    #[serde(default)]
    pub to: Vec<AssociationTarget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paging: Option<Paging>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationTarget {
    /// A string in the current spec, an integer in older SDKs: both accepted.
    #[serde(deserialize_with = "string_or_number")]
    pub to_object_id: String,
    #[serde(default)]
    pub association_types: Vec<AssociationType>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationType {
    /// HUBSPOT_DEFINED | USER_DEFINED | INTEGRATOR_DEFINED | WORK.
    pub category: String,
    pub type_id: i64,
    #[serde(default)]
    pub label: Option<String>,
}

/// One input of `batch/update`: set `properties` on object `id` (`""` clears a property).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchUpdateInput {
    pub id: String,
    pub properties: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_property: Option<String>,
}

/// Body of a single-object `PATCH`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PropertiesInput {
    pub properties: BTreeMap<String, String>,
}

/// `{ "inputs": [...] }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BatchInput<T> {
    pub inputs: Vec<T>,
}

/// `PropertyCreate`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyCreate {
    pub name: String,
    pub label: String,
    #[serde(rename = "type")]
    pub property_type: PropertyType,
    pub field_type: FieldType,
    /// `dealinformation`, `companyinformation`, …
    pub group_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<PropertyOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_unique_value: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_field: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyType {
    String,
    Number,
    Date,
    Datetime,
    Enumeration,
    Bool,
    PhoneNumber,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    Textarea,
    Number,
    Date,
    Select,
    Radio,
    Checkbox,
    Booleancheckbox,
    File,
    Html,
    Phonenumber,
    CalculationEquation,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PropertyOption {
    pub label: String,
    pub value: String,
    #[serde(default)]
    pub hidden: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_order: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// `Property` as HubSpot returns it. `type`/`fieldType` stay strings: HubSpot has more than
/// `PropertyCreate` accepts, and listing must not fail on one we do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    pub name: String,
    #[serde(default)]
    pub label: String,
    #[serde(rename = "type", default)]
    pub property_type: String,
    #[serde(default)]
    pub field_type: String,
    #[serde(default)]
    pub group_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub options: Vec<PropertyOption>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_unique_value: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hidden: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived: Option<bool>,
}

/// `{ "results": [...] }` (property and pipeline listings).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Collection<T> {
    #[serde(default = "Vec::new")]
    pub results: Vec<T>,
}

/// `Pipeline`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub id: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub display_order: i32,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub stages: Vec<PipelineStage>,
}

/// `PipelineStage`. Identify "won" by metadata (`isClosed == "true"`, `probability == "1.0"`),
/// not by the id `closedwon`: custom pipelines have numeric stage ids.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStage {
    pub id: String,
    #[serde(default)]
    pub label: String,
    #[serde(default)]
    pub display_order: i32,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    #[serde(default)]
    pub archived: bool,
}

impl PipelineStage {
    pub fn is_closed_won(&self) -> bool {
        self.metadata.get("isClosed").map(String::as_str) == Some("true")
            && self
                .metadata
                .get("probability")
                .and_then(|p| p.parse::<f64>().ok())
                .is_some_and(|p| p >= 1.0)
    }
}

/// IDs are strings in the current spec; some fields were integers in older API versions.
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Id {
        S(String),
        N(i64),
        U(u64),
    }
    Ok(match Id::deserialize(d)? {
        Id::S(s) => s,
        Id::N(n) => n.to_string(),
        Id::U(n) => n.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn contract(name: &str) -> String {
        let path: PathBuf = crate::contracts::path("hubspot/api").join(name);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn get_deal_response_with_spaced_line_items_key() {
        let deal: SimplePublicObject =
            serde_json::from_str(&contract("get_deal_response.json")).expect("decodes");
        assert_eq!(deal.id, "18204735012");
        assert_eq!(deal.property("dealstage"), Some("closedwon"));
        assert_eq!(deal.property("amount"), Some("12500.50"));
        assert_eq!(
            deal.association_ids(ObjectType::Companies),
            vec!["9911223344"]
        );
        assert_eq!(
            deal.association_ids(ObjectType::Contacts),
            vec!["65059681032"]
        );
        assert_eq!(
            deal.association_ids(ObjectType::LineItems),
            vec!["7001", "7002"]
        );
        assert!(!deal.associations_truncated(ObjectType::LineItems));
        assert!(!deal.archived);
        assert_eq!(
            deal.updated_at.map(|t| t.timestamp_millis()),
            Some(
                DateTime::parse_from_rfc3339("2025-01-02T11:59:50.123Z")
                    .expect("date")
                    .timestamp_millis()
            )
        );
    }

    #[test]
    fn null_and_empty_properties_read_as_absent() {
        let o: SimplePublicObject = serde_json::from_value(serde_json::json!({
            "id": "1", "properties": {"a": null, "b": "", "c": "x"},
            "createdAt": "2024-01-01T00:00:00Z", "updatedAt": "2024-01-01T00:00:00Z", "archived": false,
            "associations": {"line_items": {"results": [{"id": "5", "type": "deal_to_line_item"}],
                                             "paging": {"next": {"after": "5"}}}}
        }))
        .expect("decodes");
        assert_eq!(o.property("a"), None);
        assert_eq!(o.property("b"), None);
        assert_eq!(o.property("c"), Some("x"));
        assert_eq!(o.association_ids(ObjectType::LineItems), vec!["5"]);
        assert!(o.associations_truncated(ObjectType::LineItems));
    }

    #[test]
    fn batch_read_request_and_207_response() {
        let req: BatchReadRequest =
            serde_json::from_str(&contract("batch_read_request.json")).expect("decodes");
        let again: serde_json::Value = serde_json::to_value(&req).expect("encodes");
        let original: serde_json::Value =
            serde_json::from_str(&contract("batch_read_request.json")).expect("json");
        assert_eq!(
            again, original,
            "our encoding matches the contract byte-for-byte in structure"
        );

        let resp: BatchResponse<SimplePublicObject> =
            serde_json::from_str(&contract("batch_read_response_207.json")).expect("decodes");
        assert_eq!(resp.status, "COMPLETE");
        assert_eq!(resp.results.len(), 1);
        assert_eq!(
            resp.results[0].property("erpnext_customer_id"),
            Some("CUST-0042")
        );
        assert_eq!(resp.num_errors, Some(1));
        assert_eq!(resp.errors[0].missing_ids(), ["404404404".to_string()]);
    }

    #[test]
    fn search_request_and_response() {
        let req = SearchRequest {
            filter_groups: vec![FilterGroup {
                filters: vec![
                    Filter::new("dealstage", FilterOperator::Eq, "closedwon"),
                    Filter::new("hs_lastmodifieddate", FilterOperator::Gte, "1735689600000"),
                ],
            }],
            sorts: vec![Sort {
                property_name: "hs_lastmodifieddate".into(),
                direction: SortDirection::Ascending,
            }],
            properties: vec![
                "dealname".into(),
                "amount".into(),
                "dealstage".into(),
                "closedate".into(),
            ],
            limit: 200,
            after: Some("0".into()),
            query: None,
        };
        let original: serde_json::Value =
            serde_json::from_str(&contract("search_request.json")).expect("json");
        assert_eq!(serde_json::to_value(&req).expect("encodes"), original);

        let resp: SearchResponse =
            serde_json::from_str(&contract("search_response.json")).expect("decodes");
        assert_eq!(resp.total, 2);
        assert_eq!(resp.results.len(), 1);
        assert_eq!(resp.next_after(), Some("1"));
    }

    #[test]
    fn v4_association_batch_read() {
        let req: AssociationBatchReadRequest =
            serde_json::from_str(&contract("assoc_v4_batch_read_request.json")).expect("decodes");
        let original: serde_json::Value =
            serde_json::from_str(&contract("assoc_v4_batch_read_request.json")).expect("json");
        assert_eq!(serde_json::to_value(&req).expect("encodes"), original);

        let resp: BatchResponse<AssociationMulti> =
            serde_json::from_str(&contract("assoc_v4_batch_read_response.json")).expect("decodes");
        assert_eq!(resp.results[0].from.id, "18204735012");
        let to: Vec<&str> = resp.results[0]
            .to
            .iter()
            .map(|t| t.to_object_id.as_str())
            .collect();
        assert_eq!(to, ["7001", "7002"]);
        assert_eq!(resp.results[0].to[0].association_types[0].type_id, 19);
        assert_eq!(resp.results[0].to[0].association_types[0].label, None);

        let legacy: AssociationTarget =
            serde_json::from_value(serde_json::json!({"toObjectId": 7001, "associationTypes": []}))
                .expect("int id");
        assert_eq!(legacy.to_object_id, "7001");
    }

    #[test]
    fn batch_update_request_and_response() {
        let req: BatchInput<BatchUpdateInput> =
            serde_json::from_str(&contract("batch_update_request.json")).expect("decodes");
        let original: serde_json::Value =
            serde_json::from_str(&contract("batch_update_request.json")).expect("json");
        assert_eq!(serde_json::to_value(&req).expect("encodes"), original);
        let resp: BatchResponse<SimplePublicObject> =
            serde_json::from_str(&contract("batch_update_response.json")).expect("decodes");
        assert_eq!(
            resp.results[0].property("erpnext_sales_order"),
            Some("SO-2025-00017")
        );
        assert!(resp.errors.is_empty());
    }

    #[test]
    fn property_create_requests_roundtrip() {
        let p: PropertyCreate =
            serde_json::from_str(&contract("property_create_request.json")).expect("decodes");
        let original: serde_json::Value =
            serde_json::from_str(&contract("property_create_request.json")).expect("json");
        assert_eq!(serde_json::to_value(&p).expect("encodes"), original);
        let batch: BatchInput<PropertyCreate> =
            serde_json::from_str(&contract("property_batch_create_request.json")).expect("decodes");
        assert_eq!(batch.inputs[0].property_type, PropertyType::Enumeration);
        assert_eq!(batch.inputs[0].field_type, FieldType::Select);
        assert_eq!(batch.inputs[0].options.len(), 2);
        let original: serde_json::Value =
            serde_json::from_str(&contract("property_batch_create_request.json")).expect("json");
        assert_eq!(serde_json::to_value(&batch).expect("encodes"), original);
    }

    #[test]
    fn error_bodies() {
        let e: ApiErrorBody =
            serde_json::from_str(&contract("error_400_validation.json")).expect("decodes");
        assert_eq!(e.category.as_deref(), Some("VALIDATION_ERROR"));
        assert_eq!(
            e.correlation_id.as_deref(),
            Some("1d6b3c9e-5f2a-4e8b-8c70-3a9d2e1f4b55")
        );
        let e: ApiErrorBody =
            serde_json::from_str(&contract("error_409_property_exists.json")).expect("decodes");
        assert_eq!(e.category.as_deref(), Some("OBJECT_ALREADY_EXISTS"));
        assert_eq!(
            e.context
                .as_ref()
                .and_then(|c| c.get("name"))
                .map(Vec::as_slice),
            Some(["erpnext_sales_order".to_string()].as_slice())
        );
        let e: ApiErrorBody =
            serde_json::from_str(&contract("error_429_rate_limit.json")).expect("decodes");
        assert_eq!(e.error_type.as_deref(), Some("RATE_LIMIT"));
        assert_eq!(e.policy_name.as_deref(), Some("TEN_SECONDLY_ROLLING"));
        assert_eq!(e.category, None);
    }

    #[test]
    fn pipelines_identify_won_by_metadata() {
        let p: Collection<Pipeline> =
            serde_json::from_str(&contract("pipelines_deals_response.json")).expect("decodes");
        let won: Vec<&str> = p.results[0]
            .stages
            .iter()
            .filter(|s| s.is_closed_won())
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(won, ["closedwon"]);
    }
}
