//! Unmappable deals go to the mapper's DLQ with a message sales ops can act on; after the fix
//! (config or data), a DLQ replay turns them into commands.

use std::collections::BTreeMap;

use l2l_tests::sim::hubspot::ObjectType;
use shared::commands::SyncDeal;
use shared::names::WorkQueue;
use shared::runtime::DeadLetterKind;
use shared::runtime::dlq::{self, Selector};

use crate::support::{TestEnv, deal_won, seed_won_deal};

#[tokio::test]
async fn unmappable_deals_dead_letter_with_their_reason_and_replay_after_the_fix() {
    let mut env = TestEnv::start().await;
    let unknown_sku = seed_won_deal(
        &env.hubspot,
        "Unknown SKU",
        1,
        2,
        true,
        &BTreeMap::from([(1, "W-9")]),
    );
    let no_company = seed_won_deal(&env.hubspot, "No company", 1, 2, false, &BTreeMap::new());
    let no_lines = seed_won_deal(&env.hubspot, "No lines", 1, 0, true, &BTreeMap::new());
    env.publish_hubspot(&[
        deal_won(1, &unknown_sku["deal"]),
        deal_won(2, &no_company["deal"]),
        deal_won(3, &no_lines["deal"]),
    ])
    .await;
    let (erp, crm) = env.settle().await;
    assert!(erp.is_empty(), "{erp:?}");
    // Sales sees it on the deal while the message waits in the DLQ.
    let mut flagged: Vec<(String, String)> = crm
        .iter()
        .map(|t| {
            let u = t.crm();
            (u.object_id, u.properties["erpnext_sync_status"].clone())
        })
        .collect();
    flagged.sort();
    let mut expected: Vec<(String, String)> = [&unknown_sku, &no_company, &no_lines]
        .iter()
        .map(|d| (d["deal"].clone(), "error".to_string()))
        .collect();
    expected.sort();
    assert_eq!(flagged, expected);

    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    assert!(
        letters
            .iter()
            .all(|l| l.kind == Some(DeadLetterKind::Permanent)),
        "{letters:?}"
    );
    let errors: Vec<String> = letters
        .iter()
        .map(|l| l.error.clone().unwrap_or_default())
        .collect();
    let expect = [
        format!(
            "Deal {} 'Unknown SKU': HubSpot SKU 'W-9' has no ERPNext Item; add the Item in ERPNext or map it under [mapping.items.map] in the config",
            unknown_sku["deal"]
        ),
        format!(
            "Deal {} 'No company': it has no associated company",
            no_company["deal"]
        ),
        format!("Deal {} 'No lines': it has no line items", no_lines["deal"]),
    ];
    for e in &expect {
        assert!(
            errors.iter().any(|got| got.contains(e.as_str())),
            "{e:?} not in {errors:?}"
        );
    }

    // Fix the data: a company for one deal, a line item for the other.
    let company = env
        .hubspot
        .create_object(ObjectType::Companies, &[("name", "Initech")])
        .expect("company");
    env.hubspot
        .associate(
            (ObjectType::Deals, &no_company["deal"]),
            (ObjectType::Companies, &company),
            true,
        )
        .expect("associate");
    let line = env
        .hubspot
        .create_object(
            ObjectType::LineItems,
            &[("hs_sku", "SKU-GADGET"), ("price", "40"), ("quantity", "1")],
        )
        .expect("line");
    env.hubspot
        .associate(
            (ObjectType::Deals, &no_lines["deal"]),
            (ObjectType::LineItems, &line),
            false,
        )
        .expect("associate");
    // Fix the config: map the HubSpot SKU to an ERPNext Item.
    env.restart_mapper_with(|s| {
        s.mapping
            .items
            .map
            .insert("W-9".into(), "SKU-WIDGET".into());
    })
    .await;

    let tally = dlq::replay(&env.broker, WorkQueue::Mapper, &Selector::all())
        .await
        .expect("replay");
    assert_eq!(tally.matched, 3);
    let (erp, _) = env.settle().await;
    assert_eq!(erp.len(), 3, "{erp:?}");
    let by_deal: BTreeMap<String, SyncDeal> = erp
        .iter()
        .map(|t| {
            let s: SyncDeal = t.envelope.decode_payload().expect("payload");
            (s.hubspot_deal_id.clone(), s)
        })
        .collect();
    assert_eq!(
        by_deal[&unknown_sku["deal"]].order.items[1].item_code,
        "SKU-WIDGET"
    );
    assert_eq!(
        by_deal[&no_company["deal"]].customer.customer_name,
        "Initech"
    );
    assert_eq!(by_deal[&no_lines["deal"]].order.items.len(), 1);
    assert!(env.dead_letters().await.is_empty());
    env.finish().await;
}

#[tokio::test]
async fn unknown_sku_replays_once_the_item_exists_in_erpnext() {
    let env = TestEnv::start().await;
    let ids = seed_won_deal(
        &env.hubspot,
        "New product",
        1,
        1,
        true,
        &BTreeMap::from([(0, "SKU-NEW")]),
    );
    env.publish_hubspot(&[deal_won(1, &ids["deal"])]).await;
    let (erp, _) = env.settle().await;
    assert!(erp.is_empty());
    let letters = env.dead_letters().await;
    assert_eq!(letters.len(), 1);
    assert!(
        letters[0]
            .error
            .as_deref()
            .unwrap_or_default()
            .contains("HubSpot SKU 'SKU-NEW' has no ERPNext Item")
    );

    env.erpnext
        .seed(
            "Item",
            serde_json::json!({"item_code": "SKU-NEW", "item_name": "New", "item_group": "Products", "stock_uom": "Nos"}),
        )
        .expect("item");
    dlq::replay(&env.broker, WorkQueue::Mapper, &Selector::all())
        .await
        .expect("replay");
    let (erp, _) = env.settle().await;
    assert_eq!(
        erp.len(),
        1,
        "the running mapper sees the new item without a restart"
    );
    let sync: SyncDeal = erp[0].envelope.decode_payload().expect("payload");
    assert_eq!(sync.order.items[0].item_code, "SKU-NEW");
    env.finish().await;
}
