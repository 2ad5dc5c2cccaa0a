//! Wire-shape tests of the HubSpot client against a tiny in-test HTTP stub that answers with the
//! contract JSON files (`contracts/hubspot/api`). They check what the client sends (paths, query,
//! bodies, chunking, auth) and how it reacts (207s, paging, retries, 429s with the shared budget
//! in the real Redis). Behaviour against the stateful HubSpot simulator lives in the `l2l-tests`
//! crate.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use secrecy::SecretString;
use serde_json::{Value, json};
use shared::budget::{Bucket, BudgetLimits, Rate, RateBudget, TryAcquire};
use shared::config::BudgetConfig;
use shared::hubspot::types::{
    BatchUpdateInput, FieldType, Filter, FilterGroup, FilterOperator, PropertyCreate, PropertyType,
    SearchRequest,
};
use shared::hubspot::{
    DEAL_ASSOCIATIONS, ErrorKind, HubSpotClient, ObjectType, PropertyCreated, RetryPolicy,
};
use shared::names::Names;
use url::Url;

const TOKEN: &str = "pat-na1-secret-token";

fn contract(name: &str) -> Value {
    let path = shared::contracts::path("hubspot/api").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).expect("contract file"))
        .expect("contract JSON")
}

/// One request the stub received.
#[derive(Debug, Clone)]
struct Call {
    at: Instant,
    method: Method,
    path: String,
    query: BTreeMap<String, String>,
    authorization: Option<String>,
    body: Value,
}

/// What the stub answers: status, extra headers, JSON body, optional delay.
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
    body: Value,
    delay: Duration,
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body,
            delay: Duration::ZERO,
        }
    }

    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

type Responder = dyn Fn(&Call, usize) -> Reply + Send + Sync;

#[derive(Clone)]
struct Stub {
    calls: Arc<Mutex<Vec<Call>>>,
    respond: Arc<Responder>,
}

impl Stub {
    /// Serve `respond(call, index)` on a free port; returns the stub and its base URL.
    async fn start(respond: impl Fn(&Call, usize) -> Reply + Send + Sync + 'static) -> (Stub, Url) {
        let stub = Stub {
            calls: Arc::new(Mutex::new(Vec::new())),
            respond: Arc::new(respond),
        };
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (stub, Url::parse(&format!("http://{addr}/")).expect("url"))
    }

    fn calls(&self) -> Vec<Call> {
        self.calls.lock().expect("lock").clone()
    }
}

async fn handle(
    State(stub): State<Stub>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let call = Call {
        at: Instant::now(),
        method,
        path: uri.path().to_string(),
        query: url::form_urlencoded::parse(uri.query().unwrap_or_default().as_bytes())
            .into_owned()
            .collect(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    let index = {
        let mut calls = stub.calls.lock().expect("lock");
        calls.push(call.clone());
        calls.len() - 1
    };
    let reply = (stub.respond)(&call, index);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut response = (
        StatusCode::from_u16(reply.status).expect("status"),
        [("content-type", "application/json")],
        reply.body.to_string(),
    )
        .into_response();
    for (name, value) in reply.headers {
        response
            .headers_mut()
            .insert(name, value.parse().expect("header value"));
    }
    response
}

fn client(base: Url) -> HubSpotClient {
    HubSpotClient::new(
        base,
        SecretString::from(TOKEN),
        None,
        Duration::from_secs(5),
    )
    .expect("client")
    .with_retry(RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        max_rate_limit_wait: Duration::from_secs(5),
    })
}

fn object(id: &str, props: Value) -> Value {
    json!({"id": id, "properties": props, "createdAt": "2024-11-01T08:00:00.000Z",
           "updatedAt": "2025-01-02T11:00:00.000Z", "archived": false})
}

#[tokio::test]
async fn get_deal_sends_properties_associations_and_the_bearer_token() {
    let (stub, base) =
        Stub::start(|_, _| Reply::json(200, contract("get_deal_response.json"))).await;
    let deal = client(base)
        .get_deal_with_associations(
            "18204735012",
            &["dealname", "amount", "dealstage"],
            &DEAL_ASSOCIATIONS,
        )
        .await
        .expect("deal");
    let calls = stub.calls();
    assert_eq!(
        calls.len(),
        1,
        "one call when no association list is truncated"
    );
    let c = &calls[0];
    assert_eq!(c.method, Method::GET);
    assert_eq!(c.path, "/crm/v3/objects/deals/18204735012");
    assert_eq!(c.query["properties"], "dealname,amount,dealstage");
    assert_eq!(c.query["associations"], "companies,contacts,line_items");
    assert_eq!(
        c.authorization.as_deref(),
        Some(format!("Bearer {TOKEN}").as_str())
    );

    assert_eq!(deal.property("dealstage"), Some("closedwon"));
    assert_eq!(
        deal.association_ids(ObjectType::LineItems),
        ["7001", "7002"]
    );
    assert!(
        deal.associations.contains_key("line_items")
            && !deal.associations.contains_key("line items")
    );
    assert_eq!(deal.association_ids(ObjectType::Companies), ["9911223344"]);
}

#[tokio::test]
async fn get_deal_completes_truncated_association_lists_with_v4() {
    let (stub, base) = Stub::start(|call, _| {
        if call.method == Method::GET {
            let mut deal = contract("get_deal_response.json");
            deal["associations"]["line items"]["paging"] = json!({"next": {"after": "7002", "link": "x"}});
            return Reply::json(200, deal);
        }
        // v4: two pages for the deal.
        let after = call.body["inputs"][0]["after"].as_str().map(str::to_string);
        let (ids, paging) = match after.as_deref() {
            None => (vec!["7001", "7002"], json!({"next": {"after": "p2"}})),
            Some("p2") => (vec!["7003"], Value::Null),
            Some(other) => panic!("unexpected cursor {other}"),
        };
        let to: Vec<Value> = ids
            .iter()
            .map(|id| json!({"toObjectId": id, "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 19, "label": null}]}))
            .collect();
        let mut result = json!({"from": {"id": "18204735012"}, "to": to});
        if !paging.is_null() {
            result["paging"] = paging;
        }
        Reply::json(200, json!({"status": "COMPLETE", "results": [result],
            "startedAt": "2025-01-02T12:00:02.000Z", "completedAt": "2025-01-02T12:00:02.020Z"}))
    })
    .await;
    let deal = client(base)
        .get_deal_with_associations("18204735012", &["dealname"], &DEAL_ASSOCIATIONS)
        .await
        .expect("deal");
    assert_eq!(
        deal.association_ids(ObjectType::LineItems),
        ["7001", "7002", "7003"]
    );
    let calls = stub.calls();
    assert_eq!(calls.len(), 3, "GET + two v4 pages");
    assert_eq!(
        calls[1].path,
        "/crm/v4/associations/deals/line_items/batch/read"
    );
    assert_eq!(calls[1].body, json!({"inputs": [{"id": "18204735012"}]}));
    assert_eq!(
        calls[2].body,
        json!({"inputs": [{"id": "18204735012", "after": "p2"}]})
    );
}

#[tokio::test]
async fn batch_read_chunks_by_100_and_reports_missing_ids() {
    let (stub, base) = Stub::start(|call, _| {
        let ids: Vec<String> = call.body["inputs"]
            .as_array()
            .expect("inputs")
            .iter()
            .map(|i| i["id"].as_str().expect("id").to_string())
            .collect();
        // The last id of each chunk does not exist.
        let (found, missing) = ids.split_at(ids.len() - 1);
        let results: Vec<Value> = found
            .iter()
            .map(|id| object(id, json!({"name": format!("n{id}")})))
            .collect();
        let mut body = contract("batch_read_response_207.json");
        body["results"] = json!(results);
        body["errors"][0]["context"]["ids"] = json!(missing);
        Reply::json(207, body)
    })
    .await;
    let mut ids: Vec<String> = (0..250).map(|i| i.to_string()).collect();
    ids.extend(["3".to_string(), "7".to_string()]); // duplicates are sent once
    let read = client(base)
        .batch_read(ObjectType::Companies, &ids, &["name", "domain"])
        .await
        .expect("batch read");
    let calls = stub.calls();
    let sizes: Vec<usize> = calls
        .iter()
        .map(|c| c.body["inputs"].as_array().map(Vec::len).unwrap_or(0))
        .collect();
    assert_eq!(sizes, [100, 100, 50]);
    assert!(
        calls
            .iter()
            .all(|c| c.path == "/crm/v3/objects/companies/batch/read")
    );
    assert_eq!(calls[0].body["properties"], json!(["name", "domain"]));
    assert_eq!(calls[0].body["propertiesWithHistory"], json!([]));
    assert_eq!(read.missing, ["99", "199", "249"]);
    assert_eq!(read.objects.len(), 247);
    assert!(read.errors.is_empty());
    assert_eq!(read.objects[0].property("name"), Some("n0"));
}

#[tokio::test]
async fn search_all_follows_paging_on_the_search_budget() {
    let ns = Names::new(format!("t{}", uuid::Uuid::now_v7().simple()));
    let budget = RateBudget::connect(
        "redis://127.0.0.1:6379",
        ns.clone(),
        "62515",
        BudgetLimits::from_config(&BudgetConfig::default()),
    )
    .expect("budget");
    let (stub, base) = Stub::start(|call, _| {
        let after = call.body["after"].as_str().unwrap_or("start").to_string();
        let (id, next) = match after.as_str() {
            "start" => ("1", Some("1")),
            "1" => ("2", Some("2")),
            _ => ("3", None),
        };
        let mut page =
            json!({"total": 3, "results": [object(id, json!({"dealstage": "closedwon"}))]});
        if let Some(n) = next {
            page["paging"] = json!({"next": {"after": n, "link": format!("?after={n}")}});
        }
        Reply::json(200, page)
    })
    .await;
    let c = HubSpotClient::new(
        base,
        SecretString::from(TOKEN),
        Some(budget.clone()),
        Duration::from_secs(5),
    )
    .expect("client");
    let request = SearchRequest {
        filter_groups: vec![FilterGroup {
            filters: vec![Filter::new("dealstage", FilterOperator::Eq, "closedwon")],
        }],
        properties: vec!["dealstage".into()],
        limit: 1,
        ..Default::default()
    };
    let all = c
        .search_all(ObjectType::Deals, request)
        .await
        .expect("search");
    let ids: Vec<&str> = all.iter().map(|o| o.id.as_str()).collect();
    assert_eq!(ids, ["1", "2", "3"]);
    let calls = stub.calls();
    assert_eq!(calls.len(), 3);
    assert!(
        calls
            .iter()
            .all(|c| c.path == "/crm/v3/objects/deals/search")
    );
    assert_eq!(calls[0].body.get("after"), None);
    assert_eq!(calls[1].body["after"], "1");
    assert_eq!(calls[2].body["after"], "2");
    assert_eq!(
        calls[0].body["filterGroups"][0]["filters"][0]["operator"],
        "EQ"
    );
    // Search paid from the search bucket (3 of 4 per second): the next one must wait.
    assert!(matches!(
        budget.try_acquire(Bucket::Search).await,
        TryAcquire::Wait(_)
    ));
    cleanup(&ns).await;
}

async fn cleanup(ns: &Names) {
    let mut conn = redis::Client::open("redis://127.0.0.1:6379")
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{}:*", ns.namespace()))
        .query_async(&mut conn)
        .await
        .expect("keys");
    if !keys.is_empty() {
        let _: () = redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("del");
    }
}

#[tokio::test]
async fn server_errors_are_retried_within_bounds() {
    let (stub, base) = Stub::start(|_, i| {
        if i < 2 {
            Reply::json(
                503,
                json!({"status": "error", "message": "unavailable", "correlationId": "c-1"}),
            )
        } else {
            Reply::json(200, object("5", json!({"name": "x"})))
        }
    })
    .await;
    let o = client(base)
        .get_object(ObjectType::Companies, "5", &["name"], &[])
        .await
        .expect("third attempt succeeds");
    assert_eq!(o.property("name"), Some("x"));
    assert_eq!(stub.calls().len(), 3);

    let (stub, base) = Stub::start(|_, _| Reply::json(500, json!({"status": "error", "message": "boom", "category": "INTERNAL", "correlationId": "c-2"}))).await;
    let err = client(base)
        .get_object(ObjectType::Companies, "5", &["name"], &[])
        .await
        .expect_err("always 500");
    assert_eq!(err.kind, ErrorKind::Server);
    assert!(err.is_transient());
    assert_eq!(err.status, Some(500));
    assert_eq!(err.correlation_id.as_deref(), Some("c-2"));
    assert_eq!(stub.calls().len(), 4, "1 attempt + max_retries 3");
}

#[tokio::test]
async fn timeouts_are_transport_errors_and_retried() {
    let (stub, base) = Stub::start(|_, i| {
        let mut r = Reply::json(200, object("5", json!({})));
        if i == 0 {
            r.delay = Duration::from_secs(3);
        }
        r
    })
    .await;
    let c = HubSpotClient::new(
        base,
        SecretString::from(TOKEN),
        None,
        Duration::from_millis(300),
    )
    .expect("client")
    .with_retry(RetryPolicy {
        min_delay: Duration::from_millis(10),
        ..RetryPolicy::default()
    });
    let started = Instant::now();
    c.get_object(ObjectType::Deals, "5", &["a"], &[])
        .await
        .expect("second attempt");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(stub.calls().len(), 2);
}

#[tokio::test]
async fn a_429_penalizes_the_shared_budget_and_is_retried_through_it() {
    let ns = Names::new(format!("t{}", uuid::Uuid::now_v7().simple()));
    let limits = BudgetLimits {
        general: Rate::new(100, Duration::from_secs(10)),
        ..BudgetLimits::from_config(&BudgetConfig::default())
    };
    let budget = RateBudget::connect(
        "redis://127.0.0.1:6379",
        ns.clone(),
        "62515",
        limits.clone(),
    )
    .expect("budget");
    let other_process =
        RateBudget::connect("redis://127.0.0.1:6379", ns.clone(), "62515", limits).expect("budget");
    let (stub, base) = Stub::start(|_, i| {
        if i == 0 {
            Reply::json(429, contract("error_429_rate_limit.json")).header("retry-after", "1")
        } else {
            Reply::json(200, contract("batch_update_response.json"))
        }
    })
    .await;
    let c = HubSpotClient::new(
        base,
        SecretString::from(TOKEN),
        Some(budget),
        Duration::from_secs(5),
    )
    .expect("client");
    let answered = stub.clone();
    let checker = tokio::spawn(async move {
        // While the client waits out the penalty, every other process sees the bucket closed:
        // once HubSpot has answered the 429, poll until the penalty shows (a token granted
        // before the client recorded it is harmless; the budget is 100 per 10 s).
        while answered.calls().is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let deadline = tokio::time::Instant::now() + Duration::from_millis(900);
        loop {
            match other_process.try_acquire(Bucket::General).await {
                TryAcquire::Wait(w) => return TryAcquire::Wait(w),
                TryAcquire::Granted if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                granted => return granted,
            }
        }
    });
    let inputs = vec![BatchUpdateInput {
        id: "18204735012".into(),
        properties: BTreeMap::from([("erpnext_sync_status".to_string(), "synced".to_string())]),
        id_property: None,
    }];
    let written = c
        .batch_update(ObjectType::Deals, &inputs)
        .await
        .expect("retried after the 429");
    assert_eq!(written.objects.len(), 1);
    let calls = stub.calls();
    assert_eq!(calls.len(), 2);
    let gap = calls[1].at - calls[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "waited Retry-After: {gap:?}"
    );
    assert!(gap < Duration::from_secs(3), "{gap:?}");
    match checker.await.expect("join") {
        TryAcquire::Wait(w) => assert!(w > Duration::ZERO, "{w:?}"),
        TryAcquire::Granted => panic!("another process could use a penalized budget"),
    }
    assert_eq!(calls[0].path, "/crm/v3/objects/deals/batch/update");
    assert_eq!(
        calls[0].body,
        json!({"inputs": [{"id": "18204735012", "properties": {"erpnext_sync_status": "synced"}}]})
    );
    cleanup(&ns).await;
}

#[tokio::test]
async fn a_429_asking_for_too_long_is_returned_to_the_caller() {
    let (stub, base) = Stub::start(|_, _| {
        Reply::json(429, contract("error_429_rate_limit.json")).header("retry-after", "60")
    })
    .await;
    let err = client(base)
        .get_object(ObjectType::Deals, "1", &["a"], &[])
        .await
        .expect_err("429");
    assert_eq!(err.kind, ErrorKind::RateLimited);
    assert!(err.is_transient());
    assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(err.category.as_deref(), Some("TEN_SECONDLY_ROLLING"));
    assert_eq!(
        err.correlation_id.as_deref(),
        Some("c033cdaa-2c40-4a64-ae48-b4cec88dad24")
    );
    assert_eq!(stub.calls().len(), 1);
}

#[tokio::test]
async fn client_errors_are_typed_and_not_retried() {
    let (stub, base) = Stub::start(|call, _| {
        if call.path.ends_with("/404") {
            Reply::json(404, json!({"status": "error", "message": "Object not found.  objectId are usually numeric.",
                "correlationId": "aa-404", "category": "OBJECT_NOT_FOUND"}))
        } else if call.path.ends_with("/401") {
            Reply::json(401, json!({"status": "error", "message": "Authentication credentials not found.",
                "correlationId": "aa-401", "category": "INVALID_AUTHENTICATION"}))
        } else {
            Reply::json(400, contract("error_400_validation.json"))
        }
    })
    .await;
    let c = client(base);
    let e = c
        .get_object(ObjectType::Deals, "404", &["a"], &[])
        .await
        .expect_err("404");
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.is_not_found() && !e.is_transient());
    assert_eq!(e.category.as_deref(), Some("OBJECT_NOT_FOUND"));
    assert_eq!(e.correlation_id.as_deref(), Some("aa-404"));
    let e = c
        .get_object(ObjectType::Deals, "401", &["a"], &[])
        .await
        .expect_err("401");
    assert_eq!(e.kind, ErrorKind::Auth);
    let props = BTreeMap::from([("erpnext_sales_orderx".to_string(), "SO-1".to_string())]);
    let e = c
        .update(ObjectType::Deals, "1", &props)
        .await
        .expect_err("400");
    assert_eq!(e.kind, ErrorKind::Validation);
    assert_eq!(e.category.as_deref(), Some("VALIDATION_ERROR"));
    assert!(
        e.to_string()
            .contains("1d6b3c9e-5f2a-4e8b-8c70-3a9d2e1f4b55"),
        "{e}"
    );
    let calls = stub.calls();
    assert_eq!(calls.len(), 3, "no retries for 4xx");
    assert_eq!(calls[2].method, Method::PATCH);
    assert_eq!(calls[2].path, "/crm/v3/objects/deals/1");
    assert_eq!(
        calls[2].body,
        json!({"properties": {"erpnext_sales_orderx": "SO-1"}})
    );
}

#[tokio::test]
async fn properties_are_listed_and_created_idempotently() {
    let (stub, base) = Stub::start(|call, _| match (call.method.as_str(), call.body["name"].as_str()) {
        ("GET", _) => Reply::json(200, json!({"results": [{"name": "dealname", "label": "Deal Name", "type": "string",
            "fieldType": "text", "groupName": "dealinformation", "options": [], "calculated": false}]})),
        ("POST", Some("erpnext_sales_order")) => Reply::json(409, contract("error_409_property_exists.json")),
        _ => {
            let mut p = call.body.clone();
            p["createdAt"] = json!("2025-01-01T00:00:00Z");
            Reply::json(201, p)
        }
    })
    .await;
    let c = client(base);
    let props = c.list_properties(ObjectType::Deals).await.expect("list");
    assert_eq!(props[0].name, "dealname");
    let existing = PropertyCreate {
        name: "erpnext_sales_order".into(),
        label: "ERPNext Sales Order".into(),
        property_type: PropertyType::String,
        field_type: FieldType::Text,
        group_name: "dealinformation".into(),
        description: Some("Sales Order name in ERPNext".into()),
        options: vec![],
        display_order: None,
        has_unique_value: Some(false),
        hidden: Some(false),
        form_field: Some(false),
    };
    assert_eq!(
        c.create_property(ObjectType::Deals, &existing)
            .await
            .expect("409 is fine"),
        PropertyCreated::AlreadyExists
    );
    let new = PropertyCreate {
        name: "erpnext_sync_status".into(),
        ..existing.clone()
    };
    match c
        .create_property(ObjectType::Deals, &new)
        .await
        .expect("created")
    {
        PropertyCreated::Created(p) => assert_eq!(p.name, "erpnext_sync_status"),
        other => panic!("{other:?}"),
    }
    let calls = stub.calls();
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].path, "/crm/v3/properties/deals");
    assert_eq!(
        calls[1].body,
        contract("property_create_request.json"),
        "exactly the contract's body"
    );
}

#[tokio::test]
async fn batch_update_chunks_by_100_and_keeps_per_input_errors() {
    let (stub, base) = Stub::start(|call, _| {
        let n = call.body["inputs"].as_array().map(Vec::len).unwrap_or(0);
        let results: Vec<Value> = (0..n - 1)
            .map(|i| object(&i.to_string(), json!({})))
            .collect();
        Reply::json(
            207,
            json!({"status": "COMPLETE", "results": results, "numErrors": 1,
            "errors": [{"status": "error", "category": "OBJECT_NOT_FOUND", "message": "gone",
                        "context": {"ids": ["x"]}, "errors": [], "links": {}}],
            "startedAt": "2025-01-02T12:00:05.000Z", "completedAt": "2025-01-02T12:00:05.100Z"}),
        )
    })
    .await;
    let inputs: Vec<BatchUpdateInput> = (0..150)
        .map(|i| BatchUpdateInput {
            id: i.to_string(),
            properties: BTreeMap::from([("erpnext_customer_id".to_string(), format!("CUST-{i}"))]),
            id_property: None,
        })
        .collect();
    let out = client(base)
        .batch_update(ObjectType::Companies, &inputs)
        .await
        .expect("batch update");
    let sizes: Vec<usize> = stub
        .calls()
        .iter()
        .map(|c| c.body["inputs"].as_array().map(Vec::len).unwrap_or(0))
        .collect();
    assert_eq!(sizes, [100, 50]);
    assert_eq!(out.objects.len(), 148);
    assert_eq!(out.errors.len(), 2);
}

#[tokio::test]
async fn calls_are_counted_per_operation_and_status() {
    let recorder = shared::telemetry::prometheus();
    let (_stub, base) = Stub::start(|_, i| {
        if i == 0 {
            Reply::json(502, json!({}))
        } else {
            Reply::json(200, json!({"results": []}))
        }
    })
    .await;
    client(base)
        .list_pipelines(ObjectType::Deals)
        .await
        .expect("pipelines");
    let text = recorder.render();
    for needle in [
        r#"l2l_external_requests_total{system="hubspot",operation="list_pipelines",status="502"} 1"#,
        r#"l2l_external_requests_total{system="hubspot",operation="list_pipelines",status="200"} 1"#,
        "l2l_external_request_duration_seconds",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    assert!(!text.contains(TOKEN));
}
