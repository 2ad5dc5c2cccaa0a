//! Contract tests of the HubSpot simulator: each response example in
//! `tests/contracts/hubspot/api` is reproduced by driving the simulator into the same situation
//! (same status, same body shape), plus paging and the 10k cap, rate limiting, every fault mode,
//! signed webhook delivery with retries, the admin API and the binary.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use l2l_tests::sim::faults::FaultConfig;
use l2l_tests::sim::hubspot::{
    HubSpotSim, HubSpotSimConfig, HubSpotSimHandle, ObjectType, RateLimitConfig, Seed,
    SeedAssociation, SeedObject, WebhookConfig,
};
use serde_json::{Value, json};
use shared::events::HubSpotEvent;
use shared::signature::{HUBSPOT_MAX_AGE_MS, V3Request, verify_hubspot_v3};

const TOKEN: &str = "test-token";

fn contracts() -> PathBuf {
    shared::contracts::dir()
}

fn contract(name: &str) -> Value {
    let path = contracts().join("hubspot").join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Same keys recursively and same JSON types; values may differ. Every element of an actual array
/// must have the shape of the expected array's first element.
fn assert_same_shape(expected: &Value, actual: &Value) {
    fn walk(path: &str, e: &Value, a: &Value) {
        assert_eq!(
            kind(e),
            kind(a),
            "type differs at {path}: expected {e}, got {a}"
        );
        match (e, a) {
            (Value::Object(e), Value::Object(a)) => {
                let ek: BTreeSet<&String> = e.keys().collect();
                let ak: BTreeSet<&String> = a.keys().collect();
                assert_eq!(ek, ak, "keys differ at {path}");
                for (k, ev) in e {
                    walk(&format!("{path}.{k}"), ev, &a[k]);
                }
            }
            (Value::Array(e), Value::Array(a)) => {
                if let Some(first) = e.first() {
                    assert!(!a.is_empty(), "expected a non-empty array at {path}");
                    for (i, av) in a.iter().enumerate() {
                        walk(&format!("{path}[{i}]"), first, av);
                    }
                } else {
                    assert!(a.is_empty(), "expected an empty array at {path}, got {a:?}");
                }
            }
            _ => {}
        }
    }
    walk("$", expected, actual);
}

#[test]
fn shape_helper_catches_differences() {
    let e = json!({"a": [{"b": 1, "c": null}], "d": "x"});
    assert_same_shape(
        &e,
        &json!({"a": [{"b": 2, "c": null}, {"b": 3, "c": null}], "d": "y"}),
    );
    for bad in [
        json!({"a": [{"b": "1", "c": null}], "d": "x"}),
        json!({"a": [{"b": 1}], "d": "x"}),
        json!({"a": [{"b": 1, "c": null, "z": 0}], "d": "x"}),
        json!({"a": [], "d": "x"}),
    ] {
        let caught = std::panic::catch_unwind(|| assert_same_shape(&e, &bad));
        assert!(caught.is_err(), "{bad} must not match");
    }
}

fn relaxed() -> HubSpotSimConfig {
    HubSpotSimConfig {
        tokens: vec![TOKEN.into()],
        rate_limits: RateLimitConfig {
            per_10s: 10_000,
            search_per_second: 0,
            ..Default::default()
        },
        ..Default::default()
    }
}

struct Sim {
    handle: HubSpotSimHandle,
    http: reqwest::Client,
}

impl Sim {
    async fn start(config: HubSpotSimConfig) -> Sim {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let handle = HubSpotSim::start(config, listener).expect("start");
        Sim {
            handle,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!(
            "{}{}",
            self.handle.base_url().as_str().trim_end_matches('/'),
            path
        )
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http.request(method, self.url(path)).bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = StatusCode::from_u16(resp.status().as_u16()).expect("status");
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).expect("json body")
        };
        (status, headers, json)
    }

    async fn get(&self, path: &str) -> (StatusCode, HeaderMap, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, HeaderMap, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
}

fn obj(reference: &str, ty: ObjectType, props: &[(&str, &str)]) -> SeedObject {
    SeedObject {
        reference: Some(reference.into()),
        object_type: ty,
        id: None,
        properties: props
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn link(from: &str, to: &str) -> SeedAssociation {
    SeedAssociation {
        from: from.into(),
        to: to.into(),
        primary: None,
    }
}

/// Poll `cond` every 10 ms until it holds or `timeout` passes.
async fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn won_deal_seed() -> Seed {
    Seed {
        objects: vec![
            obj(
                "acme",
                ObjectType::Companies,
                &[("name", "ACME GmbH"), ("domain", "acme.example")],
            ),
            obj(
                "jane",
                ObjectType::Contacts,
                &[("email", "jane@acme.example"), ("firstname", "Jane")],
            ),
            obj(
                "li1",
                ObjectType::LineItems,
                &[
                    ("name", "Widget"),
                    ("hs_sku", "W-1"),
                    ("price", "10"),
                    ("quantity", "2"),
                ],
            ),
            obj(
                "li2",
                ObjectType::LineItems,
                &[
                    ("name", "Gadget"),
                    ("hs_sku", "G-1"),
                    ("price", "5"),
                    ("quantity", "1"),
                ],
            ),
            obj(
                "deal",
                ObjectType::Deals,
                &[
                    ("dealname", "ACME – Rahmenvertrag"),
                    ("dealstage", "closedwon"),
                    ("pipeline", "default"),
                    ("amount", "12500.50"),
                    ("closedate", "2025-01-02T12:00:00Z"),
                ],
            ),
        ],
        associations: vec![
            link("deal", "acme"),
            link("deal", "jane"),
            link("deal", "li1"),
            link("deal", "li2"),
        ],
        emit_webhooks: false,
    }
}

#[tokio::test]
async fn get_deal_with_associations_matches_contract() {
    let sim = Sim::start(relaxed()).await;
    let ids = sim.handle.seed(won_deal_seed()).expect("seed").ids;
    let (status, _, body) = sim
        .get(&format!(
            "/crm/v3/objects/deals/{}?associations=companies,contacts,line_items",
            ids["deal"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_same_shape(&contract("api/get_deal_response.json"), &body);
    assert_eq!(body["properties"]["dealstage"], "closedwon");
    assert_eq!(
        body["associations"]["companies"]["results"][0]["id"],
        ids["acme"].as_str()
    );
    assert_eq!(
        body["associations"]["line items"]["results"][1]["type"],
        "deal_to_line_item"
    );

    let (status, _, body) = sim.get("/crm/v3/objects/deals/404404404").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["category"], "OBJECT_NOT_FOUND");
    assert_eq!(body["status"], "error");

    let (status, _, body) = sim
        .get(&format!(
            "/crm/v3/objects/deals/{}?properties=dealname,nosuchvalue",
            ids["deal"]
        ))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        body["properties"]["nosuchvalue"],
        Value::Null,
        "requested but unset: null, as HubSpot answers"
    );
    assert!(body.get("associations").is_none());
}

#[tokio::test]
async fn batch_read_with_a_missing_id_is_207_like_contract() {
    let sim = Sim::start(relaxed()).await;
    let (status, _, _) = sim
        .post(
            "/crm/v3/properties/companies",
            json!({"name": "erpnext_customer_id", "label": "ERPNext Customer", "type": "string", "fieldType": "text", "groupName": "companyinformation"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ids = sim.handle.seed(won_deal_seed()).expect("seed").ids;
    let (status, _, _) = sim
        .call(
            reqwest::Method::PATCH,
            &format!("/crm/v3/objects/companies/{}", ids["acme"]),
            Some(json!({"properties": {"erpnext_customer_id": "CUST-0042"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut request = contract("api/batch_read_request.json");
    request["inputs"][0]["id"] = json!(ids["acme"]);
    let (status, _, body) = sim
        .post("/crm/v3/objects/companies/batch/read", request)
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_same_shape(&contract("api/batch_read_response_207.json"), &body);
    assert_eq!(body["errors"][0]["context"]["ids"], json!(["404404404"]));
    assert_eq!(
        body["results"][0]["properties"]["erpnext_customer_id"],
        "CUST-0042"
    );

    let all_found = json!({"inputs": [{"id": ids["acme"]}], "properties": ["name"], "propertiesWithHistory": []});
    let (status, _, body) = sim
        .post("/crm/v3/objects/companies/batch/read", all_found)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.get("errors").is_none());

    let too_many: Vec<Value> = (0..101).map(|i| json!({"id": i.to_string()})).collect();
    let (status, _, body) = sim
        .post(
            "/crm/v3/objects/companies/batch/read",
            json!({"inputs": too_many, "properties": [], "propertiesWithHistory": []}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_same_shape(&contract("api/error_400_validation.json"), &body);
}

#[tokio::test]
async fn properties_create_conflict_and_batch_create_follow_contract() {
    let sim = Sim::start(relaxed()).await;
    let create = contract("api/property_create_request.json");
    let (status, _, body) = sim.post("/crm/v3/properties/deals", create.clone()).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["name"], "erpnext_sales_order");
    let (status, _, body) = sim.post("/crm/v3/properties/deals", create).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_same_shape(&contract("api/error_409_property_exists.json"), &body);

    let batch = contract("api/property_batch_create_request.json");
    let (status, _, body) = sim
        .post("/crm/v3/properties/deals/batch/create", batch.clone())
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(body["results"][0]["options"][1]["value"], "error");
    let (status, _, body) = sim
        .post("/crm/v3/properties/deals/batch/create", batch)
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS, "{body}");
    assert_eq!(body["errors"][0]["category"], "OBJECT_ALREADY_EXISTS");

    let (status, _, body) = sim.get("/crm/v3/properties/deals").await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for n in [
        "dealname",
        "dealstage",
        "pipeline",
        "amount",
        "closedate",
        "deal_currency_code",
        "erpnext_sync_status",
    ] {
        assert!(names.contains(&n), "{n} in {names:?}");
    }
    for (ty, wanted) in [
        (
            "companies",
            ["name", "domain", "address", "city", "zip", "country"].as_slice(),
        ),
        (
            "contacts",
            ["email", "firstname", "lastname", "phone"].as_slice(),
        ),
        (
            "line_items",
            ["hs_sku", "price", "quantity", "hs_product_id", "name"].as_slice(),
        ),
    ] {
        let (_, _, body) = sim.get(&format!("/crm/v3/properties/{ty}")).await;
        let names: Vec<&str> = body["results"]
            .as_array()
            .expect("results")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(wanted.iter().all(|w| names.contains(w)), "{ty}: {names:?}");
    }
}

#[tokio::test]
async fn batch_update_matches_contract_and_validates() {
    let sim = Sim::start(relaxed()).await;
    let (status, _, _) = sim
        .post(
            "/crm/v3/properties/deals",
            contract("api/property_create_request.json"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, _, _) = sim
        .post(
            "/crm/v3/properties/deals/batch/create",
            contract("api/property_batch_create_request.json"),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let ids = sim.handle.seed(won_deal_seed()).expect("seed").ids;
    let deal = ids["deal"].clone();
    let before = sim
        .handle
        .object(ObjectType::Deals, &deal)
        .expect("deal")
        .properties["hs_lastmodifieddate"]
        .clone();

    let mut request = contract("api/batch_update_request.json");
    request["inputs"] = json!([request["inputs"][0].clone()]);
    request["inputs"][0]["id"] = json!(deal);
    let (status, _, body) = sim
        .post("/crm/v3/objects/deals/batch/update", request)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_same_shape(&contract("api/batch_update_response.json"), &body);
    let stored = sim.handle.object(ObjectType::Deals, &deal).expect("deal");
    assert_eq!(stored.properties["erpnext_sales_order"], "SO-2025-00017");
    assert!(stored.properties["hs_lastmodifieddate"] > before);

    let bad = json!({"inputs": [{"id": deal, "properties": {"erpnext_sales_orderx": "SO-1"}}]});
    let (status, _, body) = sim.post("/crm/v3/objects/deals/batch/update", bad).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_same_shape(&contract("api/error_400_validation.json"), &body);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("PROPERTY_DOESNT_EXIST")
    );

    let bad_option =
        json!({"inputs": [{"id": deal, "properties": {"erpnext_sync_status": "maybe"}}]});
    let (status, _, body) = sim
        .post("/crm/v3/objects/deals/batch/update", bad_option)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .expect("message")
            .contains("INVALID_OPTION")
    );

    let missing = json!({"inputs": [{"id": deal, "properties": {"erpnext_sync_status": "error"}}, {"id": "404404404", "properties": {"erpnext_sync_status": "error"}}]});
    let (status, _, body) = sim
        .post("/crm/v3/objects/deals/batch/update", missing)
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!(body["errors"][0]["context"]["ids"], json!(["404404404"]));

    let too_many: Vec<Value> = (0..101)
        .map(|i| json!({"id": i.to_string(), "properties": {}}))
        .collect();
    let (status, _, body) = sim
        .post(
            "/crm/v3/objects/deals/batch/update",
            json!({"inputs": too_many}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["category"], "VALIDATION_ERROR");

    let (status, _, body) = sim
        .post(
            "/crm/v3/objects/deals/batch/update",
            json!({"inputs": "nope"}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_same_shape(&contract("api/error_400_validation.json"), &body);
}

#[tokio::test]
async fn association_v4_batch_read_matches_contract() {
    let sim = Sim::start(relaxed()).await;
    let ids = sim.handle.seed(won_deal_seed()).expect("seed").ids;
    let lonely = sim
        .handle
        .create_object(ObjectType::Deals, &[("dealname", "alone")])
        .expect("deal");
    let mut request = contract("api/assoc_v4_batch_read_request.json");
    request["inputs"] = json!([{"id": ids["deal"]}]);
    let (status, _, body) = sim
        .post("/crm/v4/associations/deals/line_items/batch/read", request)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_same_shape(&contract("api/assoc_v4_batch_read_response.json"), &body);
    let to: Vec<&str> = body["results"][0]["to"]
        .as_array()
        .expect("to")
        .iter()
        .filter_map(|t| t["toObjectId"].as_str())
        .collect();
    assert_eq!(to, [ids["li1"].as_str(), ids["li2"].as_str()]);
    assert_eq!(
        body["results"][0]["to"][0]["associationTypes"][0]["typeId"],
        19
    );

    let (status, _, body) = sim
        .post(
            "/crm/v4/associations/deals/companies/batch/read",
            json!({"inputs": [{"id": ids["deal"]}, {"id": lonely}]}),
        )
        .await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    let types = &body["results"][0]["to"][0]["associationTypes"];
    assert_eq!(
        types[0],
        json!({"category": "HUBSPOT_DEFINED", "typeId": 5, "label": "Primary"})
    );
    assert_eq!(types[1]["typeId"], 341);
    assert_eq!(
        body["errors"][0]["subCategory"],
        "crm.associations.NO_ASSOCIATIONS_FOUND"
    );
}

#[tokio::test]
async fn search_matches_contract_and_filters_dates_numerically() {
    let sim = Sim::start(relaxed()).await;
    let mut seed = Seed::default();
    for (i, stage) in ["closedwon", "closedwon", "appointmentscheduled"]
        .iter()
        .enumerate()
    {
        seed.objects.push(obj(
            &format!("d{i}"),
            ObjectType::Deals,
            &[
                ("dealname", "Deal"),
                ("dealstage", stage),
                ("amount", "100"),
                ("closedate", "2025-01-02T12:00:00Z"),
            ],
        ));
    }
    seed.objects.push(obj(
        "old",
        ObjectType::Deals,
        &[
            ("dealstage", "closedwon"),
            ("hs_lastmodifieddate", "2024-06-01T00:00:00Z"),
        ],
    ));
    let ids = sim.handle.seed(seed).expect("seed").ids;
    let mut request = contract("api/search_request.json");
    request["limit"] = json!(1);
    let (status, headers, body) = sim
        .post("/crm/v3/objects/deals/search", request.clone())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_same_shape(&contract("api/search_response.json"), &body);
    assert_eq!(
        body["total"], 2,
        "the 2024 deal is before the epoch-ms bound"
    );
    assert_eq!(body["results"][0]["id"], ids["d0"].as_str());
    assert!(
        headers.get("x-hubspot-ratelimit-remaining").is_none(),
        "search answers carry no rate headers"
    );
    request["after"] = body["paging"]["next"]["after"].clone();
    let (_, _, body) = sim.post("/crm/v3/objects/deals/search", request).await;
    assert_eq!(body["results"][0]["id"], ids["d1"].as_str());
    assert!(body.get("paging").is_none(), "last page has no paging");
}

/// Issue 16, what real portals do that the simulator hid: every answer carries
/// `X-HubSpot-Correlation-Id` (an error's is its body's `correlationId`); search takes HubSpot's
/// current limits (5 groups, 10 filters per group, 25 in total); a line item's `amount` is
/// price × quantity less its discount and follows their changes.
#[tokio::test]
async fn correlation_ids_search_limits_and_line_item_amounts_follow_hubspot() {
    let sim = Sim::start(relaxed()).await;
    let (status, headers, _) = sim.get("/crm/v3/pipelines/deals").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers.contains_key("x-hubspot-correlation-id"),
        "{headers:?}"
    );
    let (status, headers, body) = sim.get("/crm/v3/objects/deals/404404").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        headers
            .get("x-hubspot-correlation-id")
            .and_then(|v| v.to_str().ok()),
        body["correlationId"].as_str(),
        "{body}"
    );

    let filters = |n: usize| -> Value {
        (0..n)
            .map(|i| json!({"propertyName": "amount", "operator": "GT", "value": i}))
            .collect()
    };
    let search = |groups: Vec<Value>| json!({"filterGroups": groups.into_iter().map(|f| json!({"filters": f})).collect::<Vec<_>>(), "limit": 1});
    for (groups, ok) in [
        (vec![filters(10)], true),
        (vec![filters(11)], false),
        (vec![filters(10), filters(10), filters(5)], true),
        (vec![filters(10), filters(10), filters(6)], false),
        (vec![filters(1); 5], true),
        (vec![filters(1); 6], false),
    ] {
        let shape: Vec<usize> = groups
            .iter()
            .map(|g| g.as_array().map_or(0, Vec::len))
            .collect();
        let (status, _, body) = sim
            .post("/crm/v3/objects/deals/search", search(groups))
            .await;
        assert_eq!(status == StatusCode::OK, ok, "groups {shape:?}: {body}");
    }

    let line = sim
        .handle
        .create_object(
            ObjectType::LineItems,
            &[
                ("name", "Widget"),
                ("price", "25.5"),
                ("quantity", "4"),
                ("discount", "2"),
            ],
        )
        .expect("line item");
    let amount = |sim: &Sim| {
        sim.handle
            .object(ObjectType::LineItems, &line)
            .and_then(|o| o.properties.get("amount").cloned())
    };
    assert_eq!(amount(&sim).as_deref(), Some("100"));
    sim.handle
        .update_as_user(ObjectType::LineItems, &line, &[("quantity", "3")])
        .expect("quantity");
    assert_eq!(amount(&sim).as_deref(), Some("74.5"));
    sim.handle
        .update_as_user(
            ObjectType::LineItems,
            &line,
            &[("hs_discount_percentage", "10")],
        )
        .expect("percentage");
    assert_eq!(amount(&sim).as_deref(), Some("68.85"));
    sim.handle.shutdown().await;
}

#[tokio::test]
async fn search_pages_up_to_the_10k_cap_then_windowing_reaches_the_rest() {
    let sim = Sim::start(relaxed()).await;
    let objects = (0..10_050)
        .map(|i| SeedObject {
            reference: None,
            object_type: ObjectType::Deals,
            id: None,
            properties: [(
                "dealstage".to_string(),
                if i % 2 == 0 {
                    "closedwon"
                } else {
                    "closedlost"
                }
                .to_string(),
            )]
            .into_iter()
            .collect(),
        })
        .collect();
    sim.handle
        .seed(Seed {
            objects,
            ..Default::default()
        })
        .expect("seed");
    let query = |after: Option<String>| {
        json!({"filterGroups": [], "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
               "properties": ["dealstage"], "limit": 200, "after": after})
    };
    let mut seen = BTreeSet::new();
    let mut after = None;
    let refused = loop {
        let (status, _, body) = sim
            .post("/crm/v3/objects/deals/search", query(after.clone()))
            .await;
        if status != StatusCode::OK {
            break (status, body);
        }
        assert_eq!(body["total"], 10_050);
        for r in body["results"].as_array().expect("results") {
            assert!(
                seen.insert(r["id"].as_str().expect("id").to_string()),
                "no id twice"
            );
        }
        after = Some(
            body["paging"]["next"]["after"]
                .as_str()
                .expect("more pages")
                .to_string(),
        );
    };
    assert_eq!(seen.len(), 10_000);
    assert_eq!(after.as_deref(), Some("10000"));
    assert_eq!(refused.0, StatusCode::BAD_REQUEST);
    assert_same_shape(&contract("api/error_400_validation.json"), &refused.1);

    let last: u64 = seen
        .iter()
        .map(|s| s.parse::<u64>().expect("numeric id"))
        .max()
        .expect("ids");
    let window = json!({"filterGroups": [{"filters": [{"propertyName": "hs_object_id", "operator": "GT", "value": last.to_string()}]}],
                        "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}], "limit": 200});
    let (status, _, body) = sim.post("/crm/v3/objects/deals/search", window).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["total"], 50);
    assert!(body.get("paging").is_none());
}

#[tokio::test]
async fn pipelines_match_contract() {
    let sim = Sim::start(relaxed()).await;
    let (status, _, body) = sim.get("/crm/v3/pipelines/deals").await;
    assert_eq!(status, StatusCode::OK);
    assert_same_shape(&contract("api/pipelines_deals_response.json"), &body);
    let won: Vec<&str> = body["results"]
        .as_array()
        .expect("pipelines")
        .iter()
        .flat_map(|p| p["stages"].as_array().expect("stages"))
        .filter(|s| s["metadata"]["probability"] == "1.0" && s["metadata"]["isClosed"] == "true")
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(won, ["closedwon", "2001003"]);
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let sim = Sim::start(relaxed()).await;
    let resp = sim
        .http
        .get(sim.url("/crm/v3/pipelines/deals"))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["category"], "INVALID_AUTHENTICATION");
    assert_same_shape(&contract("api/error_400_validation.json"), &body);
    let resp = sim
        .http
        .get(sim.url("/crm/v3/pipelines/deals"))
        .bearer_auth("wrong")
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 401);
    assert_eq!(sim.handle.calls().statuses.get(&401), Some(&2));
}

#[tokio::test]
async fn rate_limit_answers_429_with_headers_and_recovers_after_the_window() {
    let mut cfg = relaxed();
    cfg.rate_limits = RateLimitConfig {
        per_10s: 5,
        window_ms: 400,
        search_per_second: 1,
        search_window_ms: 400,
        daily: 1_000,
    };
    let sim = Sim::start(cfg).await;
    let first = Instant::now();
    for left in (0..5).rev() {
        let (status, headers, _) = sim.get("/crm/v3/pipelines/deals").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["x-hubspot-ratelimit-remaining"],
            left.to_string().as_str()
        );
        assert_eq!(headers["x-hubspot-ratelimit-max"], "5");
    }
    let (status, headers, body) = sim.get("/crm/v3/pipelines/deals").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_same_shape(&contract("api/error_429_rate_limit.json"), &body);
    assert_eq!(body["policyName"], "TEN_SECONDLY_ROLLING");
    for (h, v) in [
        ("x-hubspot-ratelimit-max", "5"),
        ("x-hubspot-ratelimit-remaining", "0"),
        ("x-hubspot-ratelimit-interval-milliseconds", "400"),
        ("x-hubspot-ratelimit-daily", "1000"),
        ("x-hubspot-ratelimit-daily-remaining", "995"),
    ] {
        assert_eq!(headers.get(h).and_then(|x| x.to_str().ok()), Some(v), "{h}");
    }
    assert_eq!(sim.handle.calls().throttled, 1);

    let recovered = loop {
        let (status, _, _) = sim.get("/crm/v3/pipelines/deals").await;
        if status == StatusCode::OK {
            break first.elapsed();
        }
        assert!(first.elapsed() < Duration::from_secs(5), "never recovered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        recovered >= Duration::from_millis(400),
        "recovered after {recovered:?}, inside the window"
    );

    let search = json!({"limit": 1});
    let (status, _, _) = sim
        .post("/crm/v3/objects/deals/search", search.clone())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, headers, body) = sim.post("/crm/v3/objects/deals/search", search).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["policyName"], "SECONDLY");
    assert_eq!(headers["x-hubspot-ratelimit-secondly"], "1");
    let stats = sim.handle.calls();
    assert_eq!(stats.too_many_requests, stats.throttled);
    assert!(stats.throttled >= 2);
}

#[tokio::test]
async fn injected_errors_replay_with_the_same_seed() {
    let sim = Sim::start(relaxed()).await;
    let faults = FaultConfig {
        seed: 7,
        error_rate: 0.4,
        ..Default::default()
    };
    let mut runs = Vec::new();
    for seed in [7, 7, 8] {
        sim.handle.set_faults(FaultConfig {
            seed,
            ..faults.clone()
        });
        let mut statuses = Vec::new();
        for _ in 0..30 {
            let (status, _, body) = sim.get("/crm/v3/pipelines/deals").await;
            if status.is_server_error() {
                assert_eq!(body["status"], "error");
                assert!(body["correlationId"].is_string());
            }
            statuses.push(status.as_u16());
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1], "same seed, same faults");
    assert_ne!(runs[0], runs[2], "another seed, other faults");
    assert!(
        runs[0].iter().any(|s| *s >= 500) && runs[0].contains(&200),
        "{:?}",
        runs[0]
    );
    assert!(runs[0].iter().all(|s| [200, 500, 502, 503].contains(s)));
    assert!(sim.handle.calls().injected["error"] > 0);

    sim.handle.set_faults(FaultConfig {
        error_rate: 1.0,
        path_prefix: "/crm/v3/objects".into(),
        ..Default::default()
    });
    let (status, _, _) = sim.get("/crm/v3/pipelines/deals").await;
    assert_eq!(status, StatusCode::OK, "outside the prefix");
    let (status, _, _) = sim.get("/crm/v3/objects/deals/1").await;
    assert!(status.is_server_error());
}

#[tokio::test]
async fn latency_hang_and_429_bursts_are_observed() {
    let sim = Sim::start(relaxed()).await;
    sim.handle.set_faults(FaultConfig {
        latency_ms: 150,
        ..Default::default()
    });
    let t = Instant::now();
    let (status, _, _) = sim.get("/crm/v3/pipelines/deals").await;
    assert_eq!(status, StatusCode::OK);
    assert!(t.elapsed() >= Duration::from_millis(150));

    sim.handle.set_faults(FaultConfig {
        timeout_rate: 1.0,
        hang_ms: 3_000,
        ..Default::default()
    });
    let err = sim
        .http
        .get(sim.url("/crm/v3/pipelines/deals"))
        .bearer_auth(TOKEN)
        .timeout(Duration::from_millis(200))
        .send()
        .await
        .expect_err("hangs past the timeout");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(sim.handle.calls().injected["timeout"], 1);

    sim.handle.set_faults(FaultConfig {
        burst_429: 2,
        ..Default::default()
    });
    for _ in 0..2 {
        let (status, headers, body) = sim.get("/crm/v3/pipelines/deals").await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_same_shape(&contract("api/error_429_rate_limit.json"), &body);
        assert_eq!(headers["x-hubspot-ratelimit-remaining"], "0");
    }
    let (status, _, _) = sim.get("/crm/v3/pipelines/deals").await;
    assert_eq!(status, StatusCode::OK);
    let stats = sim.handle.calls();
    assert_eq!(
        (
            stats.too_many_requests,
            stats.throttled,
            stats.injected["429"]
        ),
        (2, 0, 2)
    );
}

/// One request the receiver got: signature verdict, parsed events, raw body.
type Received = (Result<(), String>, Vec<HubSpotEvent>, Bytes);

/// A webhook receiver that verifies v3 signatures and fails the first `fail_first` requests.
#[derive(Clone, Default)]
struct Receiver {
    secret: String,
    url: Arc<Mutex<String>>,
    fail_first: usize,
    got: Arc<Mutex<Vec<Received>>>,
}

impl Receiver {
    async fn start(secret: &str, fail_first: usize) -> Receiver {
        let r = Receiver {
            secret: secret.into(),
            fail_first,
            ..Default::default()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        *r.url.lock().expect("lock") = format!(
            "http://{}/webhooks/hubspot",
            listener.local_addr().expect("addr")
        );
        let app = Router::new()
            .route("/webhooks/hubspot", post(receive))
            .with_state(r.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn url(&self) -> String {
        self.url.lock().expect("lock").clone()
    }

    fn count(&self) -> usize {
        self.got.lock().expect("lock").len()
    }

    fn got(&self) -> Vec<Received> {
        self.got.lock().expect("lock").clone()
    }
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let now = chrono::Utc::now().timestamp_millis();
    let url = r.url();
    let request = V3Request {
        method: "POST",
        uri: &url,
        body: &body,
        timestamp: h("x-hubspot-request-timestamp"),
        signature: h("x-hubspot-signature-v3"),
    };
    let verdict =
        verify_hubspot_v3(&r.secret, &request, now, HUBSPOT_MAX_AGE_MS).map_err(|e| e.to_string());
    let events: Vec<HubSpotEvent> = serde_json::from_slice(&body).unwrap_or_default();
    let mut got = r.got.lock().expect("lock");
    got.push((verdict, events, body));
    if got.len() <= r.fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    }
}

fn webhook_config(target: &str, secret: &str) -> HubSpotSimConfig {
    HubSpotSimConfig {
        webhooks: WebhookConfig {
            target_url: Some(target.parse().expect("url")),
            client_secret: secret.into(),
            retry_initial_ms: 20,
            retry_max_ms: 100,
            flush_ms: 50,
            ..Default::default()
        },
        ..relaxed()
    }
}

#[tokio::test]
async fn webhooks_are_signed_batched_and_retried_after_500s() {
    let receiver = Receiver::start("s3cret", 2).await;
    let sim = Sim::start(webhook_config(&receiver.url(), "s3cret")).await;
    let mut seed = won_deal_seed();
    seed.objects[4]
        .properties
        .insert("dealstage".into(), "contractsent".into());
    seed.objects.push(obj(
        "deal2",
        ObjectType::Deals,
        &[("dealstage", "contractsent")],
    ));
    let ids = sim.handle.seed(seed).expect("seed").ids;
    assert_eq!(
        sim.handle.webhook_events().len(),
        0,
        "seeds send nothing unless asked"
    );

    let update = json!({"inputs": [
        {"id": ids["deal"], "properties": {"dealstage": "closedwon", "amount": "99"}},
        {"id": ids["deal2"], "properties": {"dealstage": "closedwon"}}
    ]});
    let (status, _, _) = sim.post("/crm/v3/objects/deals/batch/update", update).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(5), || receiver.count() >= 3).await,
        "3 attempts arrive"
    );
    assert!(sim.handle.wait_webhooks_idle(Duration::from_secs(5)).await);

    let got = receiver.got();
    assert_eq!(got.len(), 3, "delivered once it got a 2xx");
    let shape = contract("webhooks/single_deal_closedwon.json");
    for (attempt, (verdict, events, body)) in got.iter().enumerate() {
        assert_eq!(verdict, &Ok(()), "attempt {attempt} signed");
        assert_eq!(
            events.len(),
            2,
            "both changes in one batch, the unsubscribed amount left out"
        );
        assert!(events.iter().all(|e| e.attempt_number as usize == attempt));
        let raw: Value = serde_json::from_slice(body).expect("json");
        assert_same_shape(&json!([shape[0].clone()]), &raw);
    }
    let first = &got[0].1;
    assert_eq!(
        first.iter().map(|e| e.event_id).collect::<Vec<_>>(),
        got[2].1.iter().map(|e| e.event_id).collect::<Vec<_>>()
    );
    assert!(first[0].event_id < first[1].event_id);
    assert_eq!(
        first[0].object_id.map(|i| i.to_string()).as_deref(),
        Some(ids["deal"].as_str())
    );
    assert_eq!(first[0].subscription_type, "deal.propertyChange");
    assert_eq!(first[0].property_value.as_deref(), Some("closedwon"));
    assert_eq!(first[0].change_source.as_deref(), Some("API"));
    assert_eq!(first[0].portal_id, 62515);
    let statuses: Vec<Option<u16>> = sim
        .handle
        .webhook_deliveries()
        .iter()
        .map(|d| d.status)
        .collect();
    assert_eq!(statuses, [Some(500), Some(500), Some(200)]);
}

#[tokio::test]
async fn webhook_retries_stop_after_max_attempts() {
    let receiver = Receiver::start("k", usize::MAX).await;
    let mut cfg = webhook_config(&receiver.url(), "k");
    cfg.webhooks.max_attempts = 3;
    let sim = Sim::start(cfg).await;
    let id = sim
        .handle
        .create_object(ObjectType::Deals, &[("dealstage", "contractsent")])
        .expect("deal");
    sim.handle
        .update_as_user(ObjectType::Deals, &id, &[("dealstage", "closedwon")])
        .expect("update");
    assert!(sim.handle.wait_webhooks_idle(Duration::from_secs(5)).await);
    let got = receiver.got();
    assert_eq!(
        got.iter()
            .map(|g| g.1[0].attempt_number)
            .collect::<Vec<_>>(),
        [0, 1, 2]
    );
    assert_eq!(got[0].1[0].change_source.as_deref(), Some("CRM_UI"));
}

#[tokio::test]
async fn duplicate_delivery_and_creation_events_via_the_admin_api() {
    let receiver = Receiver::start("dup", 0).await;
    let sim = Sim::start(webhook_config("http://127.0.0.1:9/nowhere", "other")).await;
    let put = sim
        .http
        .put(sim.url("/_sim/webhooks"))
        .json(&json!({"target_url": receiver.url(), "client_secret": "dup", "duplicate": true}))
        .send()
        .await
        .expect("put");
    assert_eq!(put.status().as_u16(), 204);
    let (status, _, body) = sim
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": "New", "dealstage": "closedwon"}}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert!(eventually(Duration::from_secs(5), || receiver.count() >= 2).await);
    assert!(sim.handle.wait_webhooks_idle(Duration::from_secs(5)).await);
    let got = receiver.got();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].1, got[1].1, "the same batch twice");
    assert!(got.iter().all(|g| g.0.is_ok()));
    let event = &got[0].1[0];
    assert_eq!(event.subscription_type, "deal.creation");
    assert_eq!(event.change_flag.as_deref(), Some("CREATED"));
    assert_eq!(
        event.object_id.map(|i| i.to_string()),
        body["id"].as_str().map(str::to_string)
    );
    let shape = contract("webhooks/batch_mixed.json");
    assert_same_shape(
        &json!([shape[0].clone()]),
        &serde_json::from_slice::<Value>(&got[0].2).expect("json"),
    );
}

#[tokio::test]
async fn admin_api_seeds_reads_counts_and_resets() {
    let sim = Sim::start(relaxed()).await;
    let seed = json!({
        "objects": [
            {"ref": "c", "type": "companies", "properties": {"name": "ACME"}},
            {"ref": "d", "type": "deals", "id": "18204735012", "properties": {"dealstage": "closedwon"}}
        ],
        "associations": [{"from": "d", "to": "c"}]
    });
    let resp = sim
        .http
        .post(sim.url("/_sim/seed"))
        .json(&seed)
        .send()
        .await
        .expect("seed");
    assert_eq!(resp.status().as_u16(), 200);
    let ids: Value = resp.json().await.expect("json");
    assert_eq!(ids["ids"]["d"], "18204735012");
    let view: Value = sim
        .http
        .get(sim.url("/_sim/objects/deals/18204735012"))
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(view["associations"]["companies"], json!([ids["ids"]["c"]]));

    for _ in 0..3 {
        sim.get("/crm/v3/objects/deals/18204735012").await;
    }
    sim.post(
        "/crm/v3/objects/deals/batch/read",
        json!({"inputs": [{"id": "18204735012"}], "properties": [], "propertiesWithHistory": []}),
    )
    .await;
    let calls: Value = sim
        .http
        .get(sim.url("/_sim/calls"))
        .send()
        .await
        .expect("calls")
        .json()
        .await
        .expect("json");
    assert_eq!(calls["calls"]["GET /crm/v3/objects/deals/{id}"], 3);
    assert_eq!(calls["calls"]["POST /crm/v3/objects/deals/batch/read"], 1);
    assert_eq!(calls["total"], 4);
    assert_eq!(calls["too_many_requests"], 0);

    let patch = sim
        .http
        .patch(sim.url("/_sim/objects/deals/18204735012"))
        .json(&json!({"properties": {"amount": "5"}}))
        .send()
        .await
        .expect("patch");
    assert_eq!(patch.status().as_u16(), 200);
    assert_eq!(
        sim.handle
            .object(ObjectType::Deals, "18204735012")
            .expect("deal")
            .properties["amount"],
        "5"
    );

    assert_eq!(
        sim.http
            .post(sim.url("/_sim/calls/reset"))
            .send()
            .await
            .expect("reset")
            .status()
            .as_u16(),
        204
    );
    assert_eq!(sim.handle.calls().total, 0);
    assert_eq!(
        sim.http
            .post(sim.url("/_sim/reset"))
            .send()
            .await
            .expect("reset")
            .status()
            .as_u16(),
        204
    );
    assert!(sim.handle.objects(ObjectType::Deals).is_empty());
    let (status, _, _) = sim.get("/crm/v3/objects/deals/18204735012").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let bad = sim
        .http
        .post(sim.url("/_sim/seed"))
        .json(&json!({"associations": [{"from": "x", "to": "y"}]}))
        .send()
        .await
        .expect("seed");
    assert_eq!(bad.status().as_u16(), 400);
}

#[tokio::test]
async fn create_with_associations_and_archive() {
    let sim = Sim::start(relaxed()).await;
    let company = sim
        .handle
        .create_object(ObjectType::Companies, &[("name", "ACME")])
        .expect("company");
    let (status, _, body) = sim
        .post(
            "/crm/v3/objects/deals",
            json!({"properties": {"dealname": "D", "closedate": "1735819200000"},
                   "associations": [{"to": {"id": company}, "types": [{"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": 5}]}]}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body["properties"]["closedate"], "2025-01-02T12:00:00.000Z",
        "epoch ms stored as ISO"
    );
    let id = body["id"].as_str().expect("id").to_string();
    assert_eq!(
        sim.handle
            .object(ObjectType::Deals, &id)
            .expect("deal")
            .associations["companies"],
        [company]
    );

    let (status, _, _) = sim
        .post("/crm/v3/objects/deals", json!({"properties": {}, "associations": [{"to": {"id": "1"}, "types": [{"associationTypeId": 5}]}]}))
        .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "unknown association target"
    );

    let (status, _, _) = sim
        .call(
            reqwest::Method::DELETE,
            &format!("/crm/v3/objects/deals/{id}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = sim.get(&format!("/crm/v3/objects/deals/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = sim
        .get(&format!("/crm/v3/objects/deals/{id}?archived=true"))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["archived"], true);
}

#[tokio::test]
async fn binary_serves_the_demo_portal_with_seed_data() {
    let dir =
        std::env::temp_dir().join(format!("hubspot-sim-bin-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let seed_path = dir.join("seed.json");
    std::fs::write(
        &seed_path,
        r#"{"objects": [{"type": "deals", "id": "4242", "properties": {"dealname": "Demo"}}]}"#,
    )
    .expect("seed");
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_hubspot-sim"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--seed-data"])
        .arg(&seed_path)
        .kill_on_drop(true)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/crm/v3/objects/deals/4242");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        match http.get(&url).bearer_auth("demo-token").send().await {
            Ok(r) if r.status().is_success() => break r.json::<Value>().await.expect("json"),
            _ if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
            other => panic!("simulator binary never answered: {other:?}"),
        }
    };
    assert_eq!(body["properties"]["dealname"], "Demo");
    child.kill().await.expect("kill");
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
