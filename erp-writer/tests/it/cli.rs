//! The binary's operator surface: `config check`, `dlq`, and `/readyz` when ERPNext refuses us.

use std::time::Duration;

use secrecy::SecretString;
use shared::names::{self, WorkQueue};
use shared::testkit::{eventually, queue_len};
use tokio_util::sync::CancellationToken;

use crate::common::{ChildWriter, World, Writer, deal, line, publish, sync_envelope};

async fn dead_letters_queued(w: &World, n: u32) {
    let url = w.ns.settings.amqp.url.clone();
    let dlq = w.ns.names().dead_letter_queue(WorkQueue::ErpWriter);
    eventually(Duration::from_secs(15), "dead letters", || {
        let (url, dlq) = (url.clone(), dlq.clone());
        async move { (queue_len(&url, &dlq).await >= n).then_some(()) }
    })
    .await;
}

#[tokio::test]
async fn config_check_and_dlq_list_and_purge_through_the_binary() {
    let w = World::start().await;
    let child = ChildWriter::new(&w);
    let (code, out, err) = child.command(&["config", "check"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("configuration OK"), "{out}");

    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let writer = Writer::spawn(w.settings());
    let mut cmd = deal("cli");
    cmd.order.items = vec![line("W-9", 1.0, 10.0)];
    let env = sync_envelope(&cmd, "evt-cli");
    publish(&broker, &env).await;
    dead_letters_queued(&w, 1).await;
    writer.stop().await;

    let (code, out, err) = child.command(&["dlq", "list", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&env.id.to_string()), "{out}");
    assert!(out.contains("ERPNext rejected item 'W-9'"), "{out}");
    let (code, out, err) = child.command(&["dlq", "purge", "--all"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        queue_len(
            &w.ns.settings.amqp.url,
            &w.ns.names().dead_letter_queue(WorkQueue::ErpWriter)
        )
        .await,
        0
    );
    stop.cancel();
    w.cleanup().await;
}

#[tokio::test]
async fn wrong_credentials_dead_letter_with_a_fix_and_fail_readyz() {
    let mut w = World::start().await;
    w.ns.settings.erpnext.api_secret = Some(SecretString::from("wrong-secret".to_string()));
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    w.ns.settings.worker.metrics_listen = Some(([127, 0, 0, 1], port).into());
    let stop = CancellationToken::new();
    let broker = w.broker(&stop).await;
    let writer = Writer::spawn(w.settings());
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(10),
        "ready before any ERPNext call",
        || {
            let (http, base) = (http.clone(), base.clone());
            async move {
                let r = http.get(format!("{base}/readyz")).send().await.ok()?;
                (r.status() == 200).then_some(())
            }
        },
    )
    .await;

    publish(&broker, &sync_envelope(&deal("auth"), "evt-auth")).await;
    let letters = eventually(Duration::from_secs(15), "a dead letter", || async {
        let l = w.take_dead_letters().await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    let error = letters[0].header(names::HEADER_ERROR).unwrap_or_default();
    assert_eq!(
        letters[0].header(names::HEADER_ERROR_KIND).as_deref(),
        Some("permanent")
    );
    assert!(error.contains("HTTP 401 AuthenticationError"), "{error}");
    assert!(
        error.contains("check erpnext.api_key/api_secret"),
        "{error}"
    );
    assert!(
        !error.contains("wrong-secret"),
        "the secret never leaks: {error}"
    );

    let r = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(
        body["problem"].as_str().unwrap_or_default().contains("401"),
        "{body}"
    );
    let metrics = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("l2l_external_requests_total")
                && l.contains("system=\"erpnext\"")
                && l.contains("status=\"401\"")),
        "{metrics}"
    );
    writer.stop().await;
    stop.cancel();
    w.cleanup().await;
}
