//! erp-writer outcomes → HubSpot write-backs, and the "already synced" knowledge they give the
//! company and contact flows.

use std::collections::BTreeMap;
use std::time::Duration;

use l2l_tests::sim::hubspot::ObjectType;
use shared::commands::{ErpOutcome, UpdateContact, UpdateCustomer};
use shared::names::WorkQueue;
use shared::testkit::{eventually, queue_len};

use crate::support::{TestEnv, hubspot_event, link, obj};

#[tokio::test]
async fn outcomes_become_write_backs_and_unlock_company_and_contact_updates() {
    let env = TestEnv::start().await;
    let seeded = env
        .hubspot
        .seed(l2l_tests::sim::hubspot::Seed {
            objects: vec![
                obj(
                    "co",
                    ObjectType::Companies,
                    &[
                        ("name", "Globex Corporation"),
                        ("address", "2 Elm St"),
                        ("city", "Shelbyville"),
                    ],
                ),
                obj(
                    "ct",
                    ObjectType::Contacts,
                    &[("firstname", "Ada"), ("email", "ada@globex.example")],
                ),
            ],
            associations: vec![link("ct", "co")],
            emit_webhooks: false,
        })
        .expect("seed")
        .ids;
    let (company, contact) = (&seeded["co"], &seeded["ct"]);

    // Not synced yet: changes are ignored.
    env.publish_hubspot(&[
        hubspot_event(
            1,
            "company.propertyChange",
            company,
            Some(("name", "Globex Corporation")),
        ),
        hubspot_event(
            2,
            "contact.propertyChange",
            contact,
            Some(("email", "ada@globex.example")),
        ),
    ])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty() && crm.is_empty(), "{erp:?} {crm:?}");

    env.publish_outcome(&ErpOutcome::CustomerUpserted {
        hubspot_company_id: company.clone(),
        customer: "Globex Corporation".into(),
        created: true,
    })
    .await;
    env.publish_outcome(&ErpOutcome::SalesOrderUpserted {
        hubspot_deal_id: "9001".into(),
        hubspot_company_id: company.clone(),
        sales_order: "SAL-ORD-2026-00001".into(),
        docstatus: 0,
        status: "Draft".into(),
        created: true,
        modified: "2026-11-24 12:17:39.499006".into(),
    })
    .await;
    env.publish_outcome(&ErpOutcome::SalesOrderConflict {
        hubspot_deal_id: "9002".into(),
        sales_order: "SAL-ORD-2026-00002".into(),
        reason: "line items changed after submit".into(),
    })
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty());
    let got: Vec<(String, String, BTreeMap<String, String>)> = crm
        .iter()
        .map(|t| (t.routing_key.clone(), t.crm().object_id, t.crm().properties))
        .collect();
    let props = |kv: &[(&str, String)]| {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let so_url = format!(
        "{}/app/sales-order/SAL-ORD-2026-00001",
        env.settings.erpnext.base_url.as_str().trim_end_matches('/')
    );
    assert_eq!(
        got,
        [
            (
                "crm.update_company".into(),
                company.clone(),
                props(&[("erpnext_customer_id", "Globex Corporation".into())])
            ),
            (
                "crm.update_deal".into(),
                "9001".into(),
                props(&[
                    ("erpnext_sales_order", "SAL-ORD-2026-00001".into()),
                    ("erpnext_sales_order_url", so_url),
                    ("erpnext_sync_status", "synced".into()),
                    ("erpnext_sync_message", String::new()),
                ])
            ),
            (
                "crm.update_deal".into(),
                "9002".into(),
                props(&[
                    ("erpnext_sales_order", "SAL-ORD-2026-00002".into()),
                    ("erpnext_sync_status", "needs_review".into()),
                    (
                        "erpnext_sync_message",
                        "Sales Order SAL-ORD-2026-00002: line items changed after submit".into()
                    ),
                ])
            ),
        ]
    );

    // Now the company is synced: its changes, and its contacts' changes, reach ERPNext.
    env.publish_hubspot(&[
        hubspot_event(
            3,
            "company.propertyChange",
            company,
            Some(("city", "Shelbyville")),
        ),
        hubspot_event(
            4,
            "contact.propertyChange",
            contact,
            Some(("email", "ada@globex.example")),
        ),
    ])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(crm.is_empty());
    assert_eq!(erp.len(), 2, "{erp:?}");
    assert_eq!(erp[0].routing_key, "erp.update_customer");
    let uc: UpdateCustomer = erp[0].envelope.decode_payload().expect("payload");
    assert_eq!(uc.customer.hubspot_company_id, *company);
    assert_eq!(
        uc.address.as_ref().map(|a| a.city.as_str()),
        Some("Shelbyville")
    );
    assert_eq!(erp[1].routing_key, "erp.update_contact");
    let ut: UpdateContact = erp[1].envelope.decode_payload().expect("payload");
    assert_eq!(ut.hubspot_company_id.as_deref(), Some(company.as_str()));
    assert_eq!(ut.contact.email_id.as_deref(), Some("ada@globex.example"));
    env.finish().await;
}

/// Issue 15, item 6: a Sales Order's write-back does not wait behind a backlog of raw events.
/// 2,000 webhook events are queued while the mapper is stopped, then one outcome; once the mapper
/// runs, the outcome's `crm.update_deal` must appear while most of the backlog is still queued.
/// On the old topology (outcomes in the mapper's one queue, behind every raw event, handled one
/// at a time here) it could only appear once the backlog was gone.
#[tokio::test]
async fn an_outcome_is_written_back_while_a_backlog_of_raw_events_waits() {
    const BACKLOG: u64 = 2_000;
    let mut env = TestEnv::start().await;
    env.stop_mapper().await;
    // Changes of a company never synced: each is read, checked and ignored, one at a time.
    let company = "31415926";
    let backlog: Vec<_> = (0..BACKLOG)
        .map(|i| {
            hubspot_event(
                1_000 + i,
                "company.propertyChange",
                company,
                Some(("name", &format!("Globex {i}"))),
            )
        })
        .collect();
    env.publish_hubspot(&backlog).await;
    env.publish_outcome(&ErpOutcome::SalesOrderUpserted {
        hubspot_deal_id: "27182818".into(),
        hubspot_company_id: company.into(),
        sales_order: "SAL-ORD-2026-00042".into(),
        docstatus: 1,
        status: "To Deliver and Bill".into(),
        created: true,
        modified: "2026-11-24 12:17:39.499006".into(),
    })
    .await;
    let main_queue = env.ns.names().queue(WorkQueue::Mapper);
    assert!(
        queue_len(&env.settings.amqp.url, &main_queue).await >= BACKLOG as u32,
        "the backlog is queued"
    );

    env.start_mapper();
    let (write_back, left) = eventually(
        Duration::from_secs(30),
        "the Sales Order's write-back",
        || async {
            let crm = env.take(WorkQueue::CrmWriter).await;
            let found = crm.into_iter().find(|t| t.crm().object_id == "27182818")?;
            Some((found, queue_len(&env.settings.amqp.url, &main_queue).await))
        },
    )
    .await;
    assert_eq!(write_back.routing_key, "crm.update_deal");
    assert_eq!(
        write_back.crm().properties["erpnext_sales_order"],
        "SAL-ORD-2026-00042"
    );
    assert!(
        left > 0,
        "the write-back waited for the whole backlog of {BACKLOG} raw events"
    );
    eprintln!("write-back done with {left} of {BACKLOG} raw events still queued");
    env.finish().await;
}

/// Issue 15, item 6, migration: a broker that ran the old topology has the mapper's main queue
/// bound to `#`, which also matches `outcome.erp.*`. Declaring the new topology removes that
/// binding, so an outcome lands in the outcome queue only, never twice.
#[tokio::test]
async fn declaring_the_topology_removes_the_old_binding_so_outcomes_arrive_once() {
    let mut env = TestEnv::start().await;
    env.stop_mapper().await;
    let names = env.ns.names();
    let url = env.settings.amqp.url.clone();
    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .queue_bind(
            names.queue(WorkQueue::Mapper).into(),
            names.exchange(shared::names::Exchange::Events).into(),
            "#".into(),
            lapin::options::QueueBindOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("the old binding");
    shared::broker::declare(&conn, &names, &env.ns.topology())
        .await
        .expect("declare the topology");
    let _ = conn.close(200, "done".into()).await;

    env.publish_outcome(&ErpOutcome::CustomerUpserted {
        hubspot_company_id: "161803".into(),
        customer: "Globex Corporation".into(),
        created: true,
    })
    .await;
    env.publish_hubspot(&[hubspot_event(
        7,
        "company.propertyChange",
        "161803",
        Some(("name", "Globex")),
    )])
    .await;
    assert_eq!(
        queue_len(&url, &names.queue(WorkQueue::Mapper)).await,
        1,
        "the main queue has the raw event only"
    );
    assert_eq!(
        queue_len(&url, &names.queue(WorkQueue::MapperOutcomes)).await,
        1,
        "the outcome queue has the outcome"
    );
    env.finish().await;
}

/// An outcome the mapper cannot read is dead-lettered to the outcome queue's own DLQ, where
/// `mapper dlq --queue outcomes …` finds it; the raw events' DLQ stays empty.
#[tokio::test]
async fn an_unreadable_outcome_is_parked_in_the_outcome_dlq() {
    let env = TestEnv::start().await;
    let names = env.ns.names();
    env.broker
        .publish(&shared::broker::Outgoing {
            exchange: names.exchange(shared::names::Exchange::Events),
            routing_key: "outcome.erp.sales_order_upserted".into(),
            body: b"not an envelope".to_vec(),
            properties: lapin::BasicProperties::default().with_message_id("bad-outcome-1".into()),
        })
        .await
        .expect("published");
    let letters = eventually(Duration::from_secs(15), "the dead letter", || async {
        let l = shared::runtime::dlq::list(&env.broker, WorkQueue::MapperOutcomes)
            .await
            .expect("dlq list");
        (!l.is_empty()).then_some(l)
    })
    .await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(
        letters[0].routing_key.as_deref(),
        Some("outcome.erp.sales_order_upserted")
    );
    assert!(env.dead_letters().await.is_empty(), "raw events' DLQ");
    env.finish().await;
}
