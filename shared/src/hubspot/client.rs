//! The HubSpot CRM client: typed calls over `reqwest`, every one paid for from the shared
//! [`RateBudget`] first, with bounded retries.
//!
//! # Retries
//! - 5xx and transport errors (connect, timeout, reset): jittered exponential backoff (`backon`),
//!   at most [`RetryPolicy::max_retries`] extra attempts. Every call here is idempotent (reads,
//!   "set these properties", "create property" whose repeat answers 409), so a retry after a
//!   timeout cannot double an effect.
//! - 429: the wait comes from `Retry-After`, else the policy in the body (`SECONDLY` → 1 s, `DAILY`
//!   → next UTC midnight), else `X-HubSpot-RateLimit-Interval-Milliseconds`, else the bucket's
//!   period. The shared budget is penalized by that wait, so every process slows down, and the
//!   request is retried through the budget (which does the waiting). A wait longer than
//!   [`RetryPolicy::max_rate_limit_wait`] is not waited out in-process: the error goes back to the
//!   caller (transient, with `retry_after`) for its retry ladder.
//! - Anything else is returned at once as a classified [`HubSpotError`].
//!
//! The access token lives in a header value marked sensitive and is never logged or formatted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde::de::DeserializeOwned;
use url::Url;

use super::error::{ErrorKind, HubSpotError};
use super::types::{
    ApiErrorBody, AssociatedId, AssociationBatchReadRequest, AssociationCollection,
    AssociationFetchInput, AssociationMulti, AssociationTarget, BatchInput, BatchReadRequest,
    BatchResponse, BatchUpdateInput, Collection, ObjectId, ObjectType, Pipeline, PropertiesInput,
    Property, PropertyCreate, SearchRequest, SearchResponse, SimplePublicObject, StandardError,
};
use crate::budget::{Bucket, RateBudget};
use crate::config::HubSpotConfig;

/// Counter, labels `system`, `operation`, `status` (HTTP code or `transport`): one per attempt.
pub const METRIC_REQUESTS: &str = "l2l_external_requests_total";
/// Histogram, labels `system`, `operation`: seconds per attempt.
pub const METRIC_DURATION: &str = "l2l_external_request_duration_seconds";
/// Gauge, label `window` (`interval`, `daily`): `X-HubSpot-RateLimit-*-Remaining` of the last answer.
pub const METRIC_REMAINING: &str = "l2l_hubspot_ratelimit_remaining";

const SYSTEM: &str = "hubspot";

/// HubSpot's batch endpoints take at most 100 inputs.
pub const BATCH_LIMIT: usize = 100;
/// The associations a deal sync needs.
pub const DEAL_ASSOCIATIONS: [ObjectType; 3] = [
    ObjectType::Companies,
    ObjectType::Contacts,
    ObjectType::LineItems,
];

/// Bounds on in-process retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first (5xx, transport, 429 together).
    pub max_retries: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// A 429 asking for a longer wait is returned to the caller instead of waited out.
    pub max_rate_limit_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 3,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(3),
            max_rate_limit_wait: Duration::from_secs(15),
        }
    }
}

/// Result of [`HubSpotClient::batch_read`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchRead {
    pub objects: Vec<SimplePublicObject>,
    /// IDs HubSpot reported as not found (207 `OBJECT_NOT_FOUND`).
    pub missing: Vec<String>,
    /// Any other per-input errors of a 207.
    pub errors: Vec<StandardError>,
}

/// Result of [`HubSpotClient::batch_update`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchWrite {
    pub objects: Vec<SimplePublicObject>,
    pub errors: Vec<StandardError>,
}

/// Result of [`HubSpotClient::batch_read_associations`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AssociationsRead {
    /// From-object ID → all its associations of the target type (every page). Objects without
    /// associations are absent.
    pub links: BTreeMap<String, Vec<AssociationTarget>>,
    pub errors: Vec<StandardError>,
}

impl AssociationsRead {
    /// Target IDs associated with `from`, in HubSpot's order.
    pub fn ids(&self, from: &str) -> Vec<String> {
        self.links
            .get(from)
            .map(|v| v.iter().map(|t| t.to_object_id.clone()).collect())
            .unwrap_or_default()
    }
}

/// Result of [`HubSpotClient::create_property`]: setup is idempotent, so "exists" is not an error.
#[derive(Debug, Clone, PartialEq)]
pub enum PropertyCreated {
    Created(Property),
    AlreadyExists,
}

/// A HubSpot CRM API client. Cheap to clone (connection pool and budget are shared).
#[derive(Clone)]
pub struct HubSpotClient {
    http: reqwest::Client,
    base_url: Url,
    auth: HeaderValue,
    budget: Option<RateBudget>,
    retry: RetryPolicy,
}

impl std::fmt::Debug for HubSpotClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSpotClient")
            .field("base_url", &self.base_url.as_str())
            .field("budget", &self.budget)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl HubSpotClient {
    /// `timeout` bounds each attempt (connect + answer). Without a budget nothing is rate-limited
    /// locally (tests, one-off tools); 429s are still honoured.
    pub fn new(
        base_url: Url,
        token: SecretString,
        budget: Option<RateBudget>,
        timeout: Duration,
    ) -> Result<Self, HubSpotError> {
        let setup_error = |kind, message: String| HubSpotError {
            kind,
            operation: "new",
            status: None,
            category: None,
            message,
            correlation_id: None,
            retry_after: None,
        };
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose_secret()))
            .map_err(|_| {
                setup_error(
                    ErrorKind::Auth,
                    "the access token contains characters not allowed in a header".into(),
                )
            })?;
        auth.set_sensitive(true);
        if base_url.cannot_be_a_base() {
            return Err(setup_error(
                ErrorKind::Validation,
                format!("base URL {base_url} cannot take a path"),
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("lead2ledger/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                setup_error(
                    ErrorKind::Transport,
                    format!("cannot build the HTTP client: {e}"),
                )
            })?;
        Ok(Self {
            http,
            base_url,
            auth,
            budget,
            retry: RetryPolicy::default(),
        })
    }

    /// From the `[hubspot]` section; fails when no access token is configured.
    pub fn from_config(
        cfg: &HubSpotConfig,
        budget: Option<RateBudget>,
    ) -> Result<Self, HubSpotError> {
        let Some(token) = cfg.access_token.clone() else {
            return Err(HubSpotError {
                kind: ErrorKind::Auth,
                operation: "new",
                status: None,
                category: None,
                message: "hubspot.access_token is not set (L2L_HUBSPOT__ACCESS_TOKEN or _FILE)"
                    .into(),
                correlation_id: None,
                retry_after: None,
            });
        };
        Self::new(cfg.base_url.clone(), token, budget, cfg.timeout)
    }

    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    pub fn budget(&self) -> Option<&RateBudget> {
        self.budget.as_ref()
    }

    /// `GET /crm/v3/objects/{type}/{id}?properties=…&associations=…`. Association lists hold the
    /// first page only; see [`HubSpotClient::get_deal_with_associations`] for complete ones.
    pub async fn get_object<S: AsRef<str>>(
        &self,
        object_type: ObjectType,
        id: &str,
        properties: &[S],
        associations: &[ObjectType],
    ) -> Result<SimplePublicObject, HubSpotError> {
        let mut url = self.url(&["crm", "v3", "objects", object_type.as_str(), id])?;
        {
            let mut q = url.query_pairs_mut();
            if !properties.is_empty() {
                q.append_pair("properties", &join(properties));
            }
            if !associations.is_empty() {
                let a: Vec<&str> = associations.iter().map(|a| a.as_str()).collect();
                q.append_pair("associations", &a.join(","));
            }
            q.append_pair("archived", "false");
        }
        self.send("get_object", Bucket::General, Method::GET, url, None)
            .await
    }

    /// A deal with its properties and the IDs of its associated objects (normally
    /// [`DEAL_ASSOCIATIONS`]), complete: a list HubSpot cut off after one page is completed with
    /// the v4 associations API (one more call, only for such deals). Associations end up under
    /// [`ObjectType::as_str`] keys (`line_items`, never `line items`).
    pub async fn get_deal_with_associations<S: AsRef<str>>(
        &self,
        id: &str,
        properties: &[S],
        associations: &[ObjectType],
    ) -> Result<SimplePublicObject, HubSpotError> {
        let mut deal = self
            .get_object(ObjectType::Deals, id, properties, associations)
            .await?;
        for to in associations {
            let truncated = deal.associations_truncated(*to);
            let mut ids = deal.association_ids(*to);
            for key in to.association_keys() {
                deal.associations.remove(*key);
            }
            if truncated {
                ids = self
                    .batch_read_associations(ObjectType::Deals, *to, &[id])
                    .await?
                    .ids(id);
            }
            let results = ids
                .into_iter()
                .map(|id| AssociatedId {
                    id,
                    association_type: format!("deal_to_{}", singular(*to)),
                })
                .collect();
            deal.associations.insert(
                to.as_str().to_string(),
                AssociationCollection {
                    results,
                    paging: None,
                },
            );
        }
        Ok(deal)
    }

    /// `POST /crm/v3/objects/{type}/batch/read`, 100 IDs per call (duplicates sent once). IDs
    /// HubSpot does not know come back in `missing`, not as an error.
    pub async fn batch_read<I: AsRef<str>, S: AsRef<str>>(
        &self,
        object_type: ObjectType,
        ids: &[I],
        properties: &[S],
    ) -> Result<BatchRead, HubSpotError> {
        let url = self.url(&[
            "crm",
            "v3",
            "objects",
            object_type.as_str(),
            "batch",
            "read",
        ])?;
        let mut out = BatchRead::default();
        for chunk in unique(ids).chunks(BATCH_LIMIT) {
            let request = BatchReadRequest {
                inputs: chunk.iter().map(|id| ObjectId { id: id.clone() }).collect(),
                properties: properties.iter().map(|p| p.as_ref().to_string()).collect(),
                properties_with_history: Vec::new(),
                id_property: None,
            };
            let resp: BatchResponse<SimplePublicObject> = self
                .send(
                    "batch_read",
                    Bucket::General,
                    Method::POST,
                    url.clone(),
                    Some(body(&request)?),
                )
                .await?;
            out.objects.extend(resp.results);
            for e in resp.errors {
                if e.missing_ids().is_empty() {
                    out.errors.push(e);
                } else {
                    out.missing.extend(e.missing_ids().iter().cloned());
                }
            }
        }
        Ok(out)
    }

    /// One page of `POST /crm/v3/objects/{type}/search` (search budget).
    pub async fn search(
        &self,
        object_type: ObjectType,
        request: &SearchRequest,
    ) -> Result<SearchResponse, HubSpotError> {
        let url = self.url(&["crm", "v3", "objects", object_type.as_str(), "search"])?;
        self.send(
            "search",
            Bucket::Search,
            Method::POST,
            url,
            Some(body(request)?),
        )
        .await
    }

    /// Every page of a search, following `paging.next.after` from `request.after`. HubSpot stops
    /// a query at 10,000 results (HTTP 400 beyond): callers with more must window the query
    /// (e.g. by `hs_lastmodifieddate`), as the backfill does.
    pub async fn search_all(
        &self,
        object_type: ObjectType,
        mut request: SearchRequest,
    ) -> Result<Vec<SimplePublicObject>, HubSpotError> {
        let mut all = Vec::new();
        loop {
            let page = self.search(object_type, &request).await?;
            let next = page.next_after().map(str::to_string);
            let empty = page.results.is_empty();
            all.extend(page.results);
            match next {
                // An empty page or a cursor that does not move would loop forever.
                Some(after) if !empty && request.after.as_deref() != Some(after.as_str()) => {
                    request.after = Some(after)
                }
                _ => return Ok(all),
            }
        }
    }

    /// `POST /crm/v4/associations/{from}/{to}/batch/read`, 100 IDs per call, following each
    /// object's `paging` until its list is complete.
    pub async fn batch_read_associations<I: AsRef<str>>(
        &self,
        from: ObjectType,
        to: ObjectType,
        ids: &[I],
    ) -> Result<AssociationsRead, HubSpotError> {
        let url = self.url(&[
            "crm",
            "v4",
            "associations",
            from.as_str(),
            to.as_str(),
            "batch",
            "read",
        ])?;
        let mut out = AssociationsRead::default();
        let mut pending: Vec<AssociationFetchInput> = unique(ids)
            .into_iter()
            .map(|id| AssociationFetchInput { id, after: None })
            .collect();
        while !pending.is_empty() {
            let batch: Vec<AssociationFetchInput> =
                pending.drain(..pending.len().min(BATCH_LIMIT)).collect();
            let request = AssociationBatchReadRequest {
                inputs: batch.clone(),
            };
            let resp: BatchResponse<AssociationMulti> = self
                .send(
                    "assoc_batch_read",
                    Bucket::General,
                    Method::POST,
                    url.clone(),
                    Some(body(&request)?),
                )
                .await?;
            out.errors.extend(resp.errors);
            for r in resp.results {
                let after = r
                    .paging
                    .as_ref()
                    .and_then(|p| p.next.as_ref())
                    .map(|n| n.after.clone());
                let previous = batch
                    .iter()
                    .find(|i| i.id == r.from.id)
                    .and_then(|i| i.after.clone());
                let from_id = r.from.id;
                out.links.entry(from_id.clone()).or_default().extend(r.to);
                if let Some(after) = after
                    && previous.as_deref() != Some(after.as_str())
                {
                    pending.push(AssociationFetchInput {
                        id: from_id,
                        after: Some(after),
                    });
                }
            }
        }
        Ok(out)
    }

    /// `PATCH /crm/v3/objects/{type}/{id}`: set properties (`""` clears one).
    pub async fn update(
        &self,
        object_type: ObjectType,
        id: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<SimplePublicObject, HubSpotError> {
        let url = self.url(&["crm", "v3", "objects", object_type.as_str(), id])?;
        let input = PropertiesInput {
            properties: properties.clone(),
        };
        self.send(
            "update",
            Bucket::General,
            Method::PATCH,
            url,
            Some(body(&input)?),
        )
        .await
    }

    /// `POST /crm/v3/objects/{type}/batch/update`, 100 inputs per call. Per-input failures of a
    /// 207 are returned in `errors`.
    pub async fn batch_update(
        &self,
        object_type: ObjectType,
        inputs: &[BatchUpdateInput],
    ) -> Result<BatchWrite, HubSpotError> {
        let url = self.url(&[
            "crm",
            "v3",
            "objects",
            object_type.as_str(),
            "batch",
            "update",
        ])?;
        let mut out = BatchWrite::default();
        for chunk in inputs.chunks(BATCH_LIMIT) {
            let request = BatchInput {
                inputs: chunk.to_vec(),
            };
            let resp: BatchResponse<SimplePublicObject> = self
                .send(
                    "batch_update",
                    Bucket::General,
                    Method::POST,
                    url.clone(),
                    Some(body(&request)?),
                )
                .await?;
            out.objects.extend(resp.results);
            out.errors.extend(resp.errors);
        }
        Ok(out)
    }

    /// `GET /crm/v3/properties/{type}`.
    pub async fn list_properties(
        &self,
        object_type: ObjectType,
    ) -> Result<Vec<Property>, HubSpotError> {
        let url = self.url(&["crm", "v3", "properties", object_type.as_str()])?;
        let c: Collection<Property> = self
            .send("list_properties", Bucket::General, Method::GET, url, None)
            .await?;
        Ok(c.results)
    }

    /// `POST /crm/v3/properties/{type}`; a 409 (the name exists) is [`PropertyCreated::AlreadyExists`].
    pub async fn create_property(
        &self,
        object_type: ObjectType,
        property: &PropertyCreate,
    ) -> Result<PropertyCreated, HubSpotError> {
        let url = self.url(&["crm", "v3", "properties", object_type.as_str()])?;
        match self
            .send(
                "create_property",
                Bucket::General,
                Method::POST,
                url,
                Some(body(property)?),
            )
            .await
        {
            Ok(p) => Ok(PropertyCreated::Created(p)),
            Err(e) if e.kind == ErrorKind::Conflict => Ok(PropertyCreated::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    /// `GET /crm/v3/pipelines/{type}` (to find the won stages of custom pipelines).
    pub async fn list_pipelines(
        &self,
        object_type: ObjectType,
    ) -> Result<Vec<Pipeline>, HubSpotError> {
        let url = self.url(&["crm", "v3", "pipelines", object_type.as_str()])?;
        let c: Collection<Pipeline> = self
            .send("list_pipelines", Bucket::General, Method::GET, url, None)
            .await?;
        Ok(c.results)
    }

    /// `base_url` + percent-encoded path segments (IDs come from webhooks: never trust them in a path).
    fn url(&self, segments: &[&str]) -> Result<Url, HubSpotError> {
        let mut url = self.base_url.clone();
        url.path_segments_mut()
            .map_err(|()| HubSpotError {
                kind: ErrorKind::Validation,
                operation: "url",
                status: None,
                category: None,
                message: "base URL cannot take a path".into(),
                correlation_id: None,
                retry_after: None,
            })?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    /// One call with the retries of the module docs.
    async fn send<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        bucket: Bucket,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<T, HubSpotError> {
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.retry.min_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.max_retries);
        let max_rate_limit_wait = self.retry.max_rate_limit_wait;
        let has_budget = self.budget.is_some();
        (|| self.attempt::<T>(operation, bucket, method.clone(), url.clone(), body.clone()))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .when(|e: &HubSpotError| match e.kind {
                // A 429 we can wait out; not the budget's own "exhausted" (it already waited).
                ErrorKind::RateLimited => {
                    e.status == Some(429) && e.retry_after.is_none_or(|d| d <= max_rate_limit_wait)
                }
                ErrorKind::Server | ErrorKind::Transport => true,
                _ => false,
            })
            .adjust(move |e: &HubSpotError, next: Option<Duration>| match (e.kind, next) {
                (_, None) => None,
                // The penalized budget makes the next `acquire` wait; waiting here too would double it.
                (ErrorKind::RateLimited, Some(_)) if has_budget => Some(Duration::ZERO),
                (ErrorKind::RateLimited, Some(d)) => Some(e.retry_after.unwrap_or(d)),
                (_, d) => d,
            })
            .notify(|e: &HubSpotError, wait: Duration| {
                tracing::debug!(operation = e.operation, error = %e, wait = ?wait, "retrying HubSpot call");
            })
            .await
    }

    async fn attempt<T: DeserializeOwned>(
        &self,
        operation: &'static str,
        bucket: Bucket,
        method: Method,
        url: Url,
        body: Option<Bytes>,
    ) -> Result<T, HubSpotError> {
        if let Some(budget) = &self.budget {
            budget
                .acquire(bucket)
                .await
                .map_err(|e| HubSpotError::budget(operation, &e))?;
        }
        let started = Instant::now();
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, self.auth.clone());
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let answer = match request.send().await {
            Ok(response) => {
                let status = response.status();
                let headers = response.headers().clone();
                response.bytes().await.map(|bytes| (status, headers, bytes))
            }
            Err(e) => Err(e),
        };
        let elapsed = started.elapsed().as_secs_f64();
        metrics::histogram!(METRIC_DURATION, "system" => SYSTEM, "operation" => operation)
            .record(elapsed);
        let (status, headers, bytes) = match answer {
            Ok(a) => a,
            Err(e) => {
                metrics::counter!(METRIC_REQUESTS, "system" => SYSTEM, "operation" => operation, "status" => "transport")
                    .increment(1);
                tracing::debug!(operation, error = %e, "HubSpot call failed without an answer");
                return Err(HubSpotError::transport(operation, &e));
            }
        };
        metrics::counter!(
            METRIC_REQUESTS,
            "system" => SYSTEM,
            "operation" => operation,
            "status" => status.as_u16().to_string()
        )
        .increment(1);
        record_remaining(&headers);
        tracing::debug!(operation, status = status.as_u16(), elapsed, "HubSpot call");
        if status.is_success() {
            return serde_json::from_slice(&bytes)
                .map_err(|e| HubSpotError::decode(operation, status.as_u16(), &e));
        }
        let correlation_id = header(&headers, "x-hubspot-correlation-id");
        if status == StatusCode::TOO_MANY_REQUESTS {
            let parsed: ApiErrorBody = serde_json::from_slice(&bytes).unwrap_or_default();
            let (penalized, retry_after) = rate_limit_wait(&headers, &parsed, bucket);
            if let Some(budget) = &self.budget {
                budget.penalize(penalized, retry_after).await;
            }
            tracing::info!(operation, policy = ?parsed.policy_name, retry_after = ?retry_after, "HubSpot answered 429");
            return Err(HubSpotError::from_response(
                operation,
                status.as_u16(),
                &bytes,
                correlation_id,
                Some(retry_after),
            ));
        }
        Err(HubSpotError::from_response(
            operation,
            status.as_u16(),
            &bytes,
            correlation_id,
            None,
        ))
    }
}

/// Which bucket a 429 is about and how long to stay away (module docs, "Retries").
fn rate_limit_wait(headers: &HeaderMap, body: &ApiErrorBody, bucket: Bucket) -> (Bucket, Duration) {
    let policy = body.policy_name.as_deref().unwrap_or_default();
    let penalized = if policy == "DAILY" {
        Bucket::Daily
    } else {
        bucket
    };
    if let Some(d) = header(headers, "retry-after").and_then(|v| parse_retry_after(&v)) {
        return (penalized, d);
    }
    let wait = match policy {
        "SECONDLY" => Duration::from_secs(1),
        "DAILY" => until_next_utc_midnight(),
        _ => header(headers, "x-hubspot-ratelimit-interval-milliseconds")
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_millis)
            .unwrap_or(match bucket {
                Bucket::Search => Duration::from_secs(1),
                Bucket::General | Bucket::Daily => Duration::from_secs(10),
            }),
    };
    (penalized, wait)
}

/// `Retry-After`: delay-seconds (fractions tolerated) or an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let delta = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(delta.to_std().unwrap_or(Duration::ZERO))
}

fn until_next_utc_midnight() -> Duration {
    let now = chrono::Utc::now();
    let secs_today = u64::try_from(now.timestamp().rem_euclid(86_400)).unwrap_or(0);
    Duration::from_secs(86_400 - secs_today)
}

fn record_remaining(headers: &HeaderMap) {
    for (name, window) in [
        ("x-hubspot-ratelimit-remaining", "interval"),
        ("x-hubspot-ratelimit-daily-remaining", "daily"),
    ] {
        if let Some(v) = header(headers, name).and_then(|v| v.trim().parse::<f64>().ok()) {
            metrics::gauge!(METRIC_REMAINING, "window" => window).set(v);
        }
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn body<T: Serialize>(value: &T) -> Result<Bytes, HubSpotError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| HubSpotError {
            kind: ErrorKind::Decode,
            operation: "encode",
            status: None,
            category: None,
            message: format!("cannot encode the request: {e}"),
            correlation_id: None,
            retry_after: None,
        })
}

fn join<S: AsRef<str>>(items: &[S]) -> String {
    items
        .iter()
        .map(AsRef::as_ref)
        .collect::<Vec<_>>()
        .join(",")
}

/// The distinct values of `ids`, in first-seen order.
fn unique<I: AsRef<str>>(ids: &[I]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    ids.iter()
        .map(|i| i.as_ref().to_string())
        .filter(|i| seen.insert(i.clone()))
        .collect()
}

fn singular(t: ObjectType) -> &'static str {
    match t {
        ObjectType::Deals => "deal",
        ObjectType::Companies => "company",
        ObjectType::Contacts => "contact",
        ObjectType::LineItems => "line_item",
        ObjectType::Products => "product",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn rate_limit_waits() {
        let none = ApiErrorBody::default();
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "2")]), &none, Bucket::General),
            (Bucket::General, Duration::from_secs(2))
        );
        assert_eq!(
            rate_limit_wait(&headers(&[("retry-after", "0.5")]), &none, Bucket::Search),
            (Bucket::Search, Duration::from_millis(500))
        );
        assert_eq!(
            rate_limit_wait(
                &headers(&[("x-hubspot-ratelimit-interval-milliseconds", "10000")]),
                &none,
                Bucket::General
            ),
            (Bucket::General, Duration::from_secs(10))
        );
        let secondly = ApiErrorBody {
            policy_name: Some("SECONDLY".into()),
            ..Default::default()
        };
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), &secondly, Bucket::Search).1,
            Duration::from_secs(1)
        );
        let daily = ApiErrorBody {
            policy_name: Some("DAILY".into()),
            ..Default::default()
        };
        let (b, d) = rate_limit_wait(&HeaderMap::new(), &daily, Bucket::General);
        assert_eq!(b, Bucket::Daily);
        assert!(d > Duration::ZERO && d <= Duration::from_secs(86_400));
        assert_eq!(
            rate_limit_wait(&HeaderMap::new(), &none, Bucket::Search).1,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn retry_after_accepts_http_dates() {
        let soon = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&soon).expect("parses");
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(parse_retry_after("-1"), None);
    }

    #[test]
    fn urls_encode_ids_and_keep_base_path() {
        let c = HubSpotClient::new(
            Url::parse("http://h:1/prefix/").expect("url"),
            SecretString::from("t0ken"),
            None,
            Duration::from_secs(1),
        )
        .expect("client");
        let u = c
            .url(&["crm", "v3", "objects", "deals", "1/../x y"])
            .expect("url");
        assert_eq!(
            u.as_str(),
            "http://h:1/prefix/crm/v3/objects/deals/1%2F..%2Fx%20y"
        );
        assert!(
            !format!("{c:?}").contains("t0ken"),
            "the token never reaches Debug output"
        );
    }

    #[test]
    fn unique_keeps_first_seen_order() {
        assert_eq!(unique(&["b", "a", "b", "c", "a"]), ["b", "a", "c"]);
    }
}
