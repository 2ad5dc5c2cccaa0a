//! Ingest throughput and latency beside the broker's own ceiling, measured in the same run.
//!
//! The ceiling publishes exactly what ingest would publish for the same batches — the same
//! envelopes, through the same [`Broker::publish_all`] with confirms, at the same concurrency —
//! straight to RabbitMQ. Ingest adds HTTP, signature verification, parsing and envelope building on
//! top; the ratio of the two is ingest's efficiency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use shared::broker::{Broker, Outgoing};
use shared::config::Settings;
use shared::envelope::{Envelope, Kind, Source};
use shared::events::HubSpotEvent;
use shared::names::{Exchange, WorkQueue, routing};
use tokio_util::sync::CancellationToken;

use super::report::{Row, percentile};

#[derive(Debug, Clone)]
pub struct IngestBench {
    /// Webhook requests per run.
    pub requests: usize,
    /// Events per request (HubSpot batches up to 100).
    pub batch: usize,
    /// Concurrent senders.
    pub concurrency: usize,
}

const SECRET: &str = "bench-secret";

fn batch_body(first_event: u64, n: usize) -> String {
    let events: Vec<serde_json::Value> = (0..n as u64)
        .map(|i| {
            serde_json::json!({
                "eventId": first_event + i, "subscriptionId": 2881778, "portalId": 62515, "appId": 1160452,
                "occurredAt": 1735819200000_i64 + i as i64, "subscriptionType": "deal.propertyChange",
                "attemptNumber": 0, "objectId": 18204735012_u64 + i, "propertyName": "dealstage",
                "propertyValue": "closedwon", "changeSource": "CRM_UI", "sourceId": "userId:3349201"
            })
        })
        .collect();
    serde_json::Value::Array(events).to_string()
}

struct Measured {
    events_per_s: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn summarize(mut lat: Vec<f64>, events: usize, elapsed: Duration) -> Measured {
    lat.sort_by(|a, b| a.total_cmp(b));
    Measured {
        events_per_s: events as f64 / elapsed.as_secs_f64(),
        p50_ms: percentile(&lat, 50.0),
        p99_ms: percentile(&lat, 99.0),
    }
}

/// Run `requests` jobs on `concurrency` workers; each job returns when done. Latencies in ms.
async fn drive<F, Fut>(
    requests: usize,
    concurrency: usize,
    job: F,
) -> anyhow::Result<(Vec<f64>, Duration)>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let job = job.clone();
        let next = next.clone();
        tasks.spawn(async move {
            let mut lat = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= requests {
                    break;
                }
                let t = Instant::now();
                job(i).await?;
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            anyhow::Ok(lat)
        });
    }
    let mut all = Vec::with_capacity(requests);
    while let Some(r) = tasks.join_next().await {
        all.extend(r??);
    }
    Ok((all, started.elapsed()))
}

impl IngestBench {
    pub async fn run(&self, base: &Settings) -> anyhow::Result<Vec<Row>> {
        let mut settings = base.clone();
        settings.amqp.namespace = format!("bench{}", uuid::Uuid::now_v7().simple());
        settings.hubspot.client_secret = Some(SECRET.into());
        let spec = shared::broker::TopologySpec {
            delivery_limit: settings.amqp.delivery_limit,
            retry_tiers: settings.worker.retry_tiers.clone(),
        };
        let stop = CancellationToken::new();
        let broker = Broker::start(
            &settings.amqp.url,
            settings.names(),
            spec.clone(),
            settings.amqp.reconnect_max_delay,
            stop.clone(),
        );
        anyhow::ensure!(
            broker.wait_ready(Duration::from_secs(20)).await,
            "broker not reachable"
        );
        let result = self.measure(&settings, &broker).await;
        stop.cancel();
        let _ =
            shared::broker::delete_namespace(&settings.amqp.url, &settings.names(), &spec).await;
        result
    }

    async fn measure(&self, settings: &Settings, broker: &Broker) -> anyhow::Result<Vec<Row>> {
        let total_events = self.requests * self.batch;
        // Warm-up both paths a little so connection set-up is not measured.
        let ceiling = self
            .ceiling(settings, broker, self.requests / 10 + 1)
            .await?;
        let _ = ceiling;
        let ceiling = self.ceiling(settings, broker, self.requests).await?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut s = settings.clone();
        s.ingest.public_url = format!("http://{addr}").parse()?;
        let shutdown = CancellationToken::new();
        let app = ingest::App::new(&s, broker.clone());
        let server = tokio::spawn(app.serve(listener, shutdown.clone()));
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(self.concurrency)
            .build()?;
        let url = format!("http://{addr}/webhooks/hubspot");
        let bodies: Arc<Vec<String>> = Arc::new(
            (0..self.requests)
                .map(|i| batch_body((i * self.batch) as u64, self.batch))
                .collect(),
        );
        let job = {
            let http = http.clone();
            let url = url.clone();
            let bodies = bodies.clone();
            move |i: usize| {
                let http = http.clone();
                let url = url.clone();
                let bodies = bodies.clone();
                async move {
                    let ts = chrono::Utc::now().timestamp_millis().to_string();
                    let body = &bodies[i % bodies.len()];
                    let sig = shared::signature::hubspot_v3_sign(
                        SECRET,
                        "POST",
                        &url,
                        body.as_bytes(),
                        &ts,
                    );
                    let r = http
                        .post(&url)
                        .header("X-HubSpot-Signature-v3", sig)
                        .header("X-HubSpot-Request-Timestamp", ts)
                        .body(body.clone())
                        .send()
                        .await?;
                    anyhow::ensure!(r.status().is_success(), "ingest answered {}", r.status());
                    Ok(())
                }
            }
        };
        let (warm, _) = drive(self.requests / 10 + 1, self.concurrency, job.clone()).await?;
        drop(warm);
        let (lat, elapsed) = drive(self.requests, self.concurrency, job).await?;
        shutdown.cancel();
        let _ = server.await;
        let ingest = summarize(lat, total_events, elapsed);
        let note = format!(
            "{} requests × {} events, concurrency {}",
            self.requests, self.batch, self.concurrency
        );
        let queued = settings.names().queue(WorkQueue::Mapper);
        Ok(vec![
            Row::new(
                "ingest",
                "broker ceiling (publish+confirm)",
                ceiling.events_per_s,
                "events/s",
                note.clone(),
            ),
            Row::new(
                "ingest",
                "broker ceiling p50 per batch",
                ceiling.p50_ms,
                "ms",
                "",
            ),
            Row::new(
                "ingest",
                "broker ceiling p99 per batch",
                ceiling.p99_ms,
                "ms",
                "",
            ),
            Row::new(
                "ingest",
                "ingest throughput",
                ingest.events_per_s,
                "events/s",
                note,
            ),
            Row::new(
                "ingest",
                "ingest p50 per request",
                ingest.p50_ms,
                "ms",
                "signed HTTP POST → 200 after confirms",
            ),
            Row::new("ingest", "ingest p99 per request", ingest.p99_ms, "ms", ""),
            Row::new(
                "ingest",
                "ingest / ceiling",
                100.0 * ingest.events_per_s / ceiling.events_per_s.max(f64::MIN_POSITIVE),
                "%",
                format!("goal ≥ 70%; messages land on {queued}"),
            ),
        ])
    }

    async fn ceiling(
        &self,
        settings: &Settings,
        broker: &Broker,
        requests: usize,
    ) -> anyhow::Result<Measured> {
        let exchange = settings.names().exchange(Exchange::Events);
        let batch = self.batch;
        let broker = broker.clone();
        let job = move |i: usize| {
            let broker = broker.clone();
            let exchange = exchange.clone();
            async move {
                let body = batch_body((i * batch) as u64, batch);
                let events: Vec<HubSpotEvent> = serde_json::from_str(&body)?;
                let now = chrono::Utc::now();
                let correlation = uuid::Uuid::now_v7().to_string();
                let msgs = events
                    .iter()
                    .map(|e| {
                        let env = Envelope {
                            id: uuid::Uuid::now_v7(),
                            kind: Kind::HubSpotEvent,
                            idempotency_key: e.idempotency_key(),
                            correlation_id: correlation.clone(),
                            occurred_at: now,
                            received_at: now,
                            source: Source::Hubspot,
                            payload: e,
                        };
                        Outgoing::envelope(
                            exchange.clone(),
                            routing::hubspot_event("deal", "propertyChange"),
                            &env,
                            0,
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                broker.publish_all(&msgs).await?;
                Ok(())
            }
        };
        let (lat, elapsed) = drive(requests, self.concurrency, job).await?;
        Ok(summarize(lat, requests * self.batch, elapsed))
    }
}
