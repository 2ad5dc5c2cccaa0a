//! `l2l-demo`: the README's main job. Starts ingest in-process against the local RabbitMQ,
//! sends a signed sample HubSpot webhook batch and shows the messages it queued for the mapper.
//! (Later stages extend this to the whole loop on the simulators.)

use std::time::Duration;

use anyhow::{Context, bail};
use shared::config::Settings;
use shared::envelope::Envelope;
use shared::names::WorkQueue;
use tokio_util::sync::CancellationToken;

const SAMPLE: &str = include_str!("../../../../shared/contracts/hubspot/webhooks/batch_mixed.json");

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut settings = Settings::load(None).context("loading configuration")?;
    if settings.amqp.namespace == "l2l" {
        settings.amqp.namespace = "l2l-demo".into();
    }
    let secret = "demo-client-secret";
    settings.hubspot.client_secret = Some(secret.into());
    shared::telemetry::init_tracing(&settings.telemetry);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    settings.ingest.public_url = format!("http://{addr}").parse()?;
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(ingest::run(settings.clone(), listener, shutdown.clone()));

    println!("▶ ingest listening on http://{addr}");
    let http = reqwest::Client::new();
    let ready = format!("http://{addr}/readyz");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !http
        .get(&ready)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        if std::time::Instant::now() > deadline {
            bail!("ingest did not become ready: is RabbitMQ running? (deploy/services.sh)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let url = format!("http://{addr}/webhooks/hubspot");
    let ts = chrono::Utc::now().timestamp_millis().to_string();
    let sig = shared::signature::hubspot_v3_sign(secret, "POST", &url, SAMPLE.as_bytes(), &ts);
    let resp = http
        .post(&url)
        .header("Content-Type", "application/json")
        .header("X-HubSpot-Signature-v3", sig)
        .header("X-HubSpot-Request-Timestamp", &ts)
        .body(SAMPLE)
        .send()
        .await?;
    println!(
        "▶ POST /webhooks/hubspot (5 signed events) → {} {}",
        resp.status(),
        resp.text().await?
    );

    let queue = settings.names().queue(WorkQueue::Mapper);
    let msgs = shared_queue_peek(&settings.amqp.url, &queue).await?;
    println!("▶ {} message(s) now queued on {queue}:", msgs.len());
    for (rk, env) in &msgs {
        println!(
            "   {rk:<32} key={:<28} correlation={}",
            env.idempotency_key, env.correlation_id
        );
    }
    shutdown.cancel();
    let _ = server.await;
    Ok(())
}

/// Read the queue's messages and put them back (nack + requeue), so the demo leaves them queued.
async fn shared_queue_peek(url: &str, queue: &str) -> anyhow::Result<Vec<(String, Envelope)>> {
    use lapin::options::{BasicGetOptions, BasicNackOptions};
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let mut out = Vec::new();
    let mut tags = Vec::new();
    while let Some(m) = ch
        .basic_get(queue.into(), BasicGetOptions::default())
        .await?
    {
        let env: Envelope = serde_json::from_slice(&m.delivery.data)?;
        out.push((m.delivery.routing_key.to_string(), env));
        tags.push(m.delivery);
    }
    for d in tags {
        d.nack(BasicNackOptions {
            requeue: true,
            ..Default::default()
        })
        .await?;
    }
    let _ = conn.close(200, "demo".into()).await;
    Ok(out)
}
