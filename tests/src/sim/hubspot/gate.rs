//! What every API request passes before its handler, in HubSpot's order as a client sees it:
//! counted (per endpoint, ids folded), then the seeded fault injector (latency, hang, 5xx, 429
//! burst — infrastructure trouble comes before any application logic), then bearer
//! authentication (401), then the token's rate budget (429). Non-search answers carry the
//! `X-HubSpot-RateLimit-*` headers. `/_sim` admin routes are not behind the gate.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::{ApiError, CORRELATION_HEADER};
use super::portal::Portal;
use super::rate_limit::{Policy, too_many_requests};
use crate::sim::faults::Fault;

/// The counter label of a request: method and path with numeric segments folded to `{id}`, so
/// `GET /crm/v3/objects/deals/18204735012` counts as `GET /crm/v3/objects/deals/{id}`.
pub fn endpoint_label(method: &Method, path: &str) -> String {
    let folded: Vec<&str> = path
        .split('/')
        .map(|seg| {
            if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
                "{id}"
            } else {
                seg
            }
        })
        .collect();
    format!("{method} {}", folded.join("/"))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Sleep unless the simulator shuts down first; `false` on shutdown.
async fn pause(portal: &Portal, d: Duration) -> bool {
    if d.is_zero() {
        return true;
    }
    tokio::select! {
        () = portal.cancel.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}

pub async fn gate(State(portal): State<Arc<Portal>>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    if path.starts_with("/_sim") {
        // Unknown admin paths reach the API fallback; they are not API calls.
        return next.run(req).await;
    }
    let mut response = admit(&portal, &path, req, next).await;
    portal.record_status(response.status().as_u16());
    // HubSpot answers every API call with a correlation ID (errors carry theirs already).
    if !response.headers().contains_key(CORRELATION_HEADER)
        && let Ok(id) = HeaderValue::from_str(&uuid::Uuid::now_v7().to_string())
    {
        response.headers_mut().insert(CORRELATION_HEADER, id);
    }
    response
}

async fn admit(portal: &Portal, path: &str, req: Request, next: Next) -> Response {
    portal.faults.count(&endpoint_label(req.method(), path));
    let search = path.ends_with("/search");
    let (fault, latency) = portal.faults.decide(path);
    if !pause(portal, latency).await {
        return ApiError::injected(503).into_response();
    }
    match fault {
        Fault::None => {}
        Fault::Error(status) => return ApiError::injected(status).into_response(),
        Fault::TooManyRequests => {
            let budget = portal.limiter().exhausted(search);
            return too_many_requests(Policy::TenSecondlyRolling, &budget, &group_name(portal));
        }
        // Hang past the client's timeout, then answer normally: a client that gave up may have
        // had its write applied all the same, exactly the ambiguity real timeouts create.
        Fault::Hang(d) => {
            if !pause(portal, d).await {
                return ApiError::injected(503).into_response();
            }
        }
    }
    let Some(token) = bearer(req.headers()).map(str::to_string) else {
        return ApiError::unauthenticated(false).into_response();
    };
    if !portal.token_accepted(&token) {
        return ApiError::unauthenticated(true).into_response();
    }
    let verdict = portal.limiter().admit(&token, search, Instant::now());
    match verdict {
        Err((policy, budget)) => {
            portal.record_throttled();
            too_many_requests(policy, &budget, &group_name(portal))
        }
        Ok(budget) => {
            let mut response = next.run(req).await;
            // HubSpot's search endpoints do not send the standard rate-limit headers (README §4).
            if !search {
                budget.apply(response.headers_mut());
            }
            response
        }
    }
}

fn group_name(portal: &Portal) -> String {
    format!("privateapp:{}", portal.webhooks.config().app_id)
}

/// Answer for paths no route matches.
pub async fn not_found() -> ApiError {
    ApiError::route_not_found()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_fold_ids_only() {
        assert_eq!(
            endpoint_label(&Method::GET, "/crm/v3/objects/deals/18204735012"),
            "GET /crm/v3/objects/deals/{id}"
        );
        assert_eq!(
            endpoint_label(&Method::POST, "/crm/v3/objects/0-3/batch/read"),
            "POST /crm/v3/objects/0-3/batch/read"
        );
        assert_eq!(
            endpoint_label(&Method::POST, "/crm/v3/objects/deals/search"),
            "POST /crm/v3/objects/deals/search"
        );
    }

    #[test]
    fn bearer_tokens_are_read_case_insensitively() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer(&h), None);
        h.insert(header::AUTHORIZATION, "bearer abc".parse().expect("header"));
        assert_eq!(bearer(&h), Some("abc"));
        h.insert(header::AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(bearer(&h), None);
    }
}
