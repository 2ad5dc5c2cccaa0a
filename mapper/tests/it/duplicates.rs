//! HubSpot delivers batches at least once: the same batch three times through the real ingest
//! must produce one command.

use std::collections::BTreeMap;
use std::time::Duration;

use shared::signature;
use tokio_util::sync::CancellationToken;

use crate::support::{HUBSPOT_SECRET, TestEnv, deal_won, seed_won_deal};

#[tokio::test]
async fn same_webhook_batch_delivered_three_times_yields_one_command() {
    let env = TestEnv::start().await;
    let ids = seed_won_deal(&env.hubspot, "Thrice", 1, 3, true, &BTreeMap::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut settings = env.settings.clone();
    settings.ingest.public_url = format!("http://{addr}").parse().expect("url");
    let stop = CancellationToken::new();
    let ingest = tokio::spawn(ingest::run(settings, listener, stop.clone()));

    let mut retry = deal_won(3771652950, &ids["deal"]);
    let first = serde_json::to_string(&[retry.clone()]).expect("json");
    retry.attempt_number = 1;
    let again = serde_json::to_string(&[retry]).expect("json");
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/webhooks/hubspot");
    for body in [&first, &again, &again] {
        let ts = chrono::Utc::now().timestamp_millis().to_string();
        let sig = signature::hubspot_v3_sign(HUBSPOT_SECRET, "POST", &url, body.as_bytes(), &ts);
        let mut accepted = false;
        for _ in 0..100 {
            let r = http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-HubSpot-Signature-v3", &sig)
                .header("X-HubSpot-Request-Timestamp", &ts)
                .body(body.clone())
                .send()
                .await;
            // 503 until ingest's broker connection is up.
            if r.is_ok_and(|r| r.status().is_success()) {
                accepted = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(accepted, "ingest accepted the delivery");
    }
    let (erp, crm) = env.settle().await;
    assert_eq!(erp.len(), 1, "one command for three deliveries: {erp:?}");
    assert!(crm.is_empty());
    stop.cancel();
    let _ = ingest.await;
    env.finish().await;
}

/// HubSpot says `eventId` is "not guaranteed to be unique": two different deals won under the
/// same event ID are two events, and each deal gets its command.
#[tokio::test]
async fn two_different_events_sharing_an_id_are_both_handled() {
    let env = TestEnv::start().await;
    let a = seed_won_deal(&env.hubspot, "Shared id A", 1, 1, true, &BTreeMap::new());
    let b = seed_won_deal(&env.hubspot, "Shared id B", 1, 1, true, &BTreeMap::new());
    env.publish_hubspot(&[deal_won(42, &a["deal"]), deal_won(42, &b["deal"])])
        .await;
    let (erp, _) = env.settle().await;
    let mut deals: Vec<String> = erp
        .iter()
        .map(|t| {
            t.envelope
                .decode_payload::<shared::commands::SyncDeal>()
                .expect("sync_deal")
                .hubspot_deal_id
        })
        .collect();
    deals.sort();
    let mut want = vec![a["deal"].clone(), b["deal"].clone()];
    want.sort();
    assert_eq!(deals, want, "{:?}", env.dead_letters().await);
    env.finish().await;
}
