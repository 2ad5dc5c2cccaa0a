//! Application state, router and the `run` entry point that `main` and the tests share.

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use secrecy::ExposeSecret;
use shared::broker::Broker;
use shared::config::Settings;
use shared::names::Names;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::clock::Clock;
use crate::rejections::Rejections;
use crate::routes;

/// Everything a handler needs; cloned per request (all fields are cheap handles).
#[derive(Clone)]
pub struct AppState {
    pub broker: Broker,
    pub names: Names,
    pub clock: Clock,
    /// The public URL of the HubSpot endpoint (what v3 signatures cover), without query.
    pub hubspot_url: Arc<str>,
    pub hubspot_secret: Option<Arc<str>>,
    pub accept_v1_v2: bool,
    pub signature_max_age_ms: i64,
    pub erpnext_secret: Option<Arc<str>>,
    pub erpnext_site: String,
    /// Refused deliveries: counted, and logged at most once per source and reason per window.
    pub rejections: Arc<Rejections>,
}

/// The ingest service, ready to serve.
pub struct App {
    state: AppState,
    settings: Settings,
}

impl App {
    pub fn new(settings: &Settings, broker: Broker) -> Self {
        let state = AppState {
            broker,
            names: settings.names(),
            clock: Clock::system(),
            hubspot_url: Arc::from(settings.ingest.hubspot_webhook_url()),
            hubspot_secret: settings
                .hubspot
                .client_secret
                .as_ref()
                .map(|s| Arc::from(s.expose_secret())),
            accept_v1_v2: settings.ingest.accept_v1_v2,
            signature_max_age_ms: settings.ingest.signature_max_age.as_millis() as i64,
            erpnext_secret: settings
                .erpnext
                .webhook_secret
                .as_ref()
                .map(|s| Arc::from(s.expose_secret())),
            erpnext_site: settings.erpnext.site(),
            rejections: Arc::new(Rejections::default()),
        };
        Self {
            state,
            settings: settings.clone(),
        }
    }

    /// Pin the clock (tests of the signature window).
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.state.clock = clock;
        self
    }

    pub fn router(&self) -> Router {
        let webhooks = Router::new()
            .route("/webhooks/hubspot", post(routes::hubspot::receive))
            .route(
                "/webhooks/erpnext/{doctype}/{event}",
                post(routes::erpnext::receive),
            )
            .layer(DefaultBodyLimit::max(self.settings.ingest.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                self.settings.ingest.request_timeout,
            ))
            // One span per webhook request; the handler records the correlation ID it gives
            // the request's events, so every line about them carries it (the workers' delivery
            // spans carry the same ID on).
            .layer(
                TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                    tracing::info_span!(
                        "webhook",
                        method = %req.method(),
                        path = %req.uri().path(),
                        correlation_id = tracing::field::Empty,
                    )
                }),
            );
        Router::new()
            .merge(webhooks)
            .with_state(self.state.clone())
            .merge(shared::health::router(self.state.broker.clone(), None))
    }

    /// Serve until `shutdown`; in-flight requests (and their publisher confirms) finish first.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        let router = self.router();
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }
}

/// Run ingest on `listener` until `shutdown` is cancelled. The broker connection outlives the HTTP
/// server so that requests still in flight at shutdown get their confirms.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let broker_stop = CancellationToken::new();
    let broker = Broker::from_settings(&settings, broker_stop.clone());
    let addr = listener.local_addr()?;
    tracing::info!(%addr, public_url = %settings.ingest.public_url, "ingest listening");
    let result = App::new(&settings, broker).serve(listener, shutdown).await;
    broker_stop.cancel();
    tracing::info!("ingest stopped");
    result
}
