//! erp-writer outcomes → HubSpot write-backs, and the "already synced" knowledge they give the
//! company and contact flows.

use std::collections::BTreeMap;

use l2l_tests::sim::hubspot::ObjectType;
use shared::commands::{ErpOutcome, UpdateContact, UpdateCustomer};

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
