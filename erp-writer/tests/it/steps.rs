//! The steps of `erp.sync_deal` against the ERPNext simulator, without broker or Redis.

use chrono::{Duration as ChronoDuration, Utc};
use erp_writer::apply_sync_deal;
use erp_writer::updates::{Applied, apply_update_contact, apply_update_customer};
use serde_json::{Value, json};
use shared::commands::{ErpOutcome, UpdateContact, UpdateCustomer};

use crate::common::{World, company, deal, line};

fn str_of<'a>(v: &'a Value, f: &str) -> &'a str {
    v[f].as_str().unwrap_or_default()
}

#[tokio::test]
async fn sync_deal_creates_customer_address_contacts_and_sales_order() {
    let w = World::start().await;
    let site = w.site();
    let cmd = deal("full");
    let outcomes = apply_sync_deal(&site, &cmd).await.expect("applied");

    // Customer, keyed by the HubSpot company.
    let customers = w.docs_where("Customer", "hubspot_company_id", "co-full");
    assert_eq!(customers.len(), 1);
    let customer = str_of(&customers[0], "name").to_string();
    assert_eq!(customer, "Globex full");
    assert_eq!(str_of(&customers[0], "customer_group"), "Commercial");
    assert_eq!(str_of(&customers[0], "website"), "https://globex.example");

    // Address, linked to it.
    let addresses = w.docs("Address");
    assert_eq!(addresses.len(), 1);
    let address = &addresses[0];
    assert_eq!(str_of(address, "address_line1"), "1 Globex Way");
    assert_eq!(address["links"][0]["link_doctype"], "Customer");
    assert_eq!(address["links"][0]["link_name"], customer.as_str());

    // Three contacts, each linked, each with its HubSpot ID.
    let contacts = w.docs("Contact");
    assert_eq!(contacts.len(), 3);
    for (i, c) in contacts.iter().enumerate() {
        assert_eq!(
            str_of(c, "hubspot_contact_id"),
            format!("ct-full-{}", i + 1)
        );
        assert_eq!(c["links"][0]["link_name"], customer.as_str(), "{c}");
        assert_eq!(
            str_of(c, "email_id"),
            format!("p{}.full@globex.example", i + 1)
        );
    }
    assert_eq!(str_of(&contacts[0], "phone"), "+1 555 0100");

    // The Sales Order with the deal's lines, terms and ID, submitted.
    let orders = w.docs("Sales Order");
    assert_eq!(orders.len(), 1);
    let so = &orders[0];
    assert_eq!(str_of(so, "hubspot_deal_id"), "deal-full");
    assert_eq!(str_of(so, "customer"), customer);
    assert_eq!(str_of(so, "currency"), "USD");
    assert_eq!(str_of(so, "selling_price_list"), "HubSpot USD");
    assert_eq!(str_of(so, "taxes_and_charges"), "US Sales Tax - ATL");
    assert_eq!(str_of(so, "delivery_date"), "2027-01-15");
    assert_eq!(str_of(so, "customer_address"), str_of(address, "name"));
    assert_eq!(
        str_of(so, "contact_person"),
        str_of(&contacts[1], "name"),
        "the primary contact"
    );
    assert_eq!(so["docstatus"], 1);
    let items: Vec<(String, f64, f64)> = so["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                str_of(i, "item_code").to_string(),
                i["qty"].as_f64().unwrap_or(0.0),
                i["rate"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    assert_eq!(
        items,
        vec![
            ("SKU-WIDGET".to_string(), 10.0, 25.0),
            ("SKU-SERVICE".to_string(), 4.0, 150.0)
        ]
    );
    assert_eq!(
        so["grand_total"].as_f64(),
        Some(918.0),
        "850 + 8% from the tax template"
    );
    // ERPNext does not fill the rows from the template over REST: the writer sent them.
    let taxes = so["taxes"].as_array().expect("taxes");
    assert_eq!(taxes.len(), 1, "{taxes:#?}");
    assert_eq!(str_of(&taxes[0], "account_head"), "Sales Tax - ATL");
    assert_eq!(str_of(&taxes[0], "charge_type"), "On Net Total");
    assert_eq!(taxes[0]["rate"].as_f64(), Some(8.0));
    assert_eq!(so["total_taxes_and_charges"].as_f64(), Some(68.0));

    // One outcome per step, in order.
    let kinds: Vec<String> = outcomes.iter().map(|o| o.routing_key()).collect();
    assert_eq!(
        kinds,
        vec![
            "outcome.erp.customer_upserted",
            "outcome.erp.address_upserted",
            "outcome.erp.contact_upserted",
            "outcome.erp.contact_upserted",
            "outcome.erp.contact_upserted",
            "outcome.erp.sales_order_upserted",
        ]
    );
    match outcomes.last() {
        Some(ErpOutcome::SalesOrderUpserted {
            sales_order,
            docstatus,
            created,
            status,
            ..
        }) => {
            assert_eq!(sales_order, str_of(so, "name"));
            assert_eq!(*docstatus, 1);
            assert!(*created);
            assert_eq!(status, "To Deliver and Bill");
        }
        other => panic!("{other:?}"),
    }
    w.cleanup().await;
}

#[tokio::test]
async fn same_name_companies_become_two_customers_and_each_deal_lands_on_its_own() {
    let w = World::start().await;
    let site = w.site();
    let mut a = deal("a");
    let mut b = deal("b");
    a.customer.customer_name = "Globex Corporation".into();
    b.customer.customer_name = "Globex Corporation".into();
    // Apply each twice, interleaved: lookups must go by HubSpot ID, never by name.
    for cmd in [&a, &b, &a, &b] {
        apply_sync_deal(&site, cmd).await.expect("applied");
    }
    let customers = w.docs("Customer");
    assert_eq!(customers.len(), 2, "{customers:#?}");
    let name_of = |company: &str| {
        str_of(
            &w.docs_where("Customer", "hubspot_company_id", company)[0],
            "name",
        )
        .to_string()
    };
    assert_eq!(name_of("co-a"), "Globex Corporation");
    assert_eq!(
        name_of("co-b"),
        "Globex Corporation - 1",
        "ERPNext renames the second"
    );
    let orders = w.docs("Sales Order");
    assert_eq!(orders.len(), 2);
    for (deal_id, company) in [("deal-a", "co-a"), ("deal-b", "co-b")] {
        let so = w.docs_where("Sales Order", "hubspot_deal_id", deal_id);
        assert_eq!(so.len(), 1);
        assert_eq!(
            str_of(&so[0], "customer"),
            name_of(company),
            "{deal_id} lands on its own customer"
        );
    }
    assert_eq!(w.docs("Contact").len(), 6);
    assert_eq!(w.docs("Address").len(), 2);
    w.cleanup().await;
}

#[tokio::test]
async fn reapplying_changes_nothing_and_reports_existing_documents() {
    let w = World::start().await;
    let site = w.site();
    let cmd = deal("again");
    apply_sync_deal(&site, &cmd).await.expect("first");
    let before: Vec<Value> = ["Customer", "Address", "Contact", "Sales Order"]
        .iter()
        .flat_map(|d| w.docs(d))
        .collect();
    w.sim.reset_calls();
    for _ in 0..4 {
        let outcomes = apply_sync_deal(&site, &cmd).await.expect("again");
        assert!(
            outcomes.iter().all(|o| !matches!(
                o,
                ErpOutcome::CustomerUpserted { created: true, .. }
                    | ErpOutcome::AddressUpserted { created: true, .. }
                    | ErpOutcome::ContactUpserted { created: true, .. }
                    | ErpOutcome::SalesOrderUpserted { created: true, .. }
            )),
            "{outcomes:?}"
        );
    }
    let after: Vec<Value> = ["Customer", "Address", "Contact", "Sales Order"]
        .iter()
        .flat_map(|d| w.docs(d))
        .collect();
    assert_eq!(before, after, "a replay writes nothing");
    let writes: u64 = w
        .sim
        .calls()
        .iter()
        .filter(|(k, _)| k.starts_with("POST") || k.starts_with("PUT"))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(writes, 0, "no POST/PUT on a replay: {:?}", w.sim.calls());
    w.cleanup().await;
}

#[tokio::test]
async fn draft_orders_follow_the_deal_and_submitted_ones_report_a_conflict() {
    let w = World::start().await;
    let site = w.site();
    let mut cmd = deal("draft");
    cmd.order.submit = false;
    apply_sync_deal(&site, &cmd).await.expect("draft created");

    // The deal's lines change (a newer HubSpot change): the Draft follows.
    cmd.order.items = vec![line("SKU-GADGET", 3.0, 40.0)];
    cmd.deal_modified = Utc::now() + ChronoDuration::seconds(5);
    apply_sync_deal(&site, &cmd).await.expect("draft updated");
    let so = &w.docs("Sales Order")[0];
    assert_eq!(so["docstatus"], 0);
    assert_eq!(so["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(so["items"][0]["item_code"], "SKU-GADGET");
    assert_eq!(so["items"][0]["qty"].as_f64(), Some(3.0));

    // An older change arriving late does not overwrite it.
    let mut stale = cmd.clone();
    stale.order.items = vec![line("SKU-WIDGET", 99.0, 25.0)];
    stale.deal_modified = Utc::now() - ChronoDuration::days(1);
    apply_sync_deal(&site, &stale)
        .await
        .expect("stale is not an error");
    assert_eq!(
        w.docs("Sales Order")[0]["items"][0]["item_code"],
        "SKU-GADGET"
    );

    // Submit, then change the deal again: the order is left alone and a conflict reported.
    cmd.order.submit = true;
    apply_sync_deal(&site, &cmd).await.expect("submitted");
    let submitted = w.docs("Sales Order")[0].clone();
    assert_eq!(submitted["docstatus"], 1);
    let mut changed = cmd.clone();
    changed.order.items = vec![line("SKU-GADGET", 5.0, 40.0)];
    changed.deal_modified = Utc::now() + ChronoDuration::seconds(10);
    let outcomes = apply_sync_deal(&site, &changed)
        .await
        .expect("conflict is an outcome");
    match outcomes.last() {
        Some(ErpOutcome::SalesOrderConflict {
            sales_order,
            reason,
            ..
        }) => {
            assert_eq!(sales_order, str_of(&submitted, "name"));
            assert!(
                reason.contains("SKU-GADGET × 3 @ 40") && reason.contains("SKU-GADGET × 5 @ 40"),
                "{reason}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(
        w.docs("Sales Order"),
        vec![submitted],
        "the submitted order is untouched"
    );
    w.cleanup().await;
}

/// Issue 16: the deal is read at t1 (qty 10, command C1), changed at t2 (qty 7, command C2), and
/// C1's insert happens after t2. C2 must still win: versions compare HubSpot time with the
/// HubSpot time the order was written from, not with ERPNext's `modified` (which our own insert
/// set, after t2). A late C1 then changes nothing.
#[tokio::test]
async fn a_newer_deal_version_wins_over_an_older_one_inserted_after_it() {
    let w = World::start().await;
    let site = w.site();
    let t1 = Utc::now() - ChronoDuration::seconds(20);
    let t2 = Utc::now() - ChronoDuration::seconds(10);
    let mut c1 = deal("c1c2");
    c1.order.submit = false;
    c1.order.items = vec![line("SKU-WIDGET", 10.0, 25.0)];
    c1.deal_modified = t1;
    let mut c2 = c1.clone();
    c2.order.items = vec![line("SKU-WIDGET", 7.0, 25.0)];
    c2.deal_modified = t2;

    apply_sync_deal(&site, &c1).await.expect("C1 inserts");
    apply_sync_deal(&site, &c2).await.expect("C2 applies");
    let qty = |w: &World| w.docs("Sales Order")[0]["items"][0]["qty"].as_f64();
    assert_eq!(qty(&w), Some(7.0), "the newer deal version wins");
    assert_eq!(
        w.docs("Sales Order")[0]["hubspot_modified_at"],
        erp_writer::site::source_version(t2).as_str()
    );
    apply_sync_deal(&site, &c1)
        .await
        .expect("a late C1 is fine");
    assert_eq!(
        qty(&w),
        Some(7.0),
        "an older version never overwrites a newer one"
    );
    w.cleanup().await;
}

/// Issue 16: a draft a person edited in ERPNext after lead2ledger wrote it is neither
/// overwritten nor silently kept when the deal changes too: the deal is flagged with what
/// differs, and the person's edit stays.
#[tokio::test]
async fn a_draft_edited_in_erpnext_is_flagged_for_review_not_overwritten() {
    let w = World::start().await;
    let site = w.site();
    let mut cmd = deal("human");
    cmd.order.submit = false;
    cmd.order.items = vec![line("SKU-WIDGET", 10.0, 25.0)];
    cmd.deal_modified = Utc::now() - ChronoDuration::seconds(30);
    apply_sync_deal(&site, &cmd).await.expect("draft created");
    let so = w.docs("Sales Order")[0].clone();
    let mut items = so["items"].clone();
    items[0]["qty"] = json!(12.0);
    w.sim
        .edit_as(
            "Sales Order",
            str_of(&so, "name"),
            "clerk@example.com",
            json!({ "items": items }),
        )
        .expect("the clerk saves");

    // The same deal version again: nothing new from HubSpot, the clerk's edit stands quietly.
    let outcomes = apply_sync_deal(&site, &cmd).await.expect("replay");
    assert!(
        matches!(outcomes.last(), Some(ErpOutcome::SalesOrderUpserted { .. })),
        "{outcomes:?}"
    );
    // A newer deal version that differs: flagged, not applied.
    let mut newer = cmd.clone();
    newer.order.items = vec![line("SKU-WIDGET", 8.0, 25.0)];
    newer.deal_modified = Utc::now();
    let outcomes = apply_sync_deal(&site, &newer).await.expect("an outcome");
    match outcomes.last() {
        Some(ErpOutcome::SalesOrderConflict { reason, .. }) => {
            assert!(
                reason.contains("clerk@example.com") && reason.contains("SKU-WIDGET × 8 @ 25"),
                "{reason}"
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let kept = &w.docs("Sales Order")[0];
    assert_eq!(
        kept["items"][0]["qty"].as_f64(),
        Some(12.0),
        "the edit stays"
    );
    assert_eq!(kept["modified_by"], "clerk@example.com");
    w.cleanup().await;
}

/// Issue 16: the Customer and a Contact a person edited in ERPNext after lead2ledger wrote them
/// are left as they are when the company and the contact change in HubSpot too, and the deal is
/// flagged for review naming both; the untouched Address follows HubSpot. A company change read
/// before the last sync but arriving after it (older source time) changes nothing, although
/// ERPNext's `modified` is older than it.
#[tokio::test]
async fn customers_and_contacts_edited_in_erpnext_flag_the_deal_and_keep_the_edit() {
    let w = World::start().await;
    let site = w.site();
    let t0 = Utc::now() - ChronoDuration::seconds(60);
    let mut cmd = deal("edits");
    cmd.customer.modified = t0;
    for c in &mut cmd.contacts {
        c.modified = t0;
    }
    apply_sync_deal(&site, &cmd).await.expect("synced");
    let customer = w.docs_where("Customer", "hubspot_company_id", "co-edits")[0].clone();
    let contact = w.docs_where("Contact", "hubspot_contact_id", "ct-edits-1")[0].clone();
    w.sim
        .edit_as(
            "Customer",
            str_of(&customer, "name"),
            "clerk@example.com",
            json!({"website": "https://clerk.example"}),
        )
        .expect("clerk edits the customer");
    w.sim
        .edit_as(
            "Contact",
            str_of(&contact, "name"),
            "clerk@example.com",
            json!({"first_name": "Personne"}),
        )
        .expect("clerk edits the contact");

    // An older company version that arrives late: nothing changes, nothing is flagged.
    let mut late = cmd.clone();
    late.customer.modified = t0 - ChronoDuration::seconds(30);
    late.customer.website = Some("https://late.example".into());
    let outcomes = apply_sync_deal(&site, &late).await.expect("late");
    assert!(
        !outcomes
            .iter()
            .any(|o| matches!(o, ErpOutcome::SalesOrderConflict { .. })),
        "{outcomes:?}"
    );

    let mut newer = cmd.clone();
    let t1 = Utc::now();
    newer.customer.modified = t1;
    newer.customer.website = Some("https://hubspot.example".into());
    newer.contacts[0].modified = t1;
    newer.contacts[0].first_name = "Persona".into();
    newer.address.as_mut().expect("address").city = "Springfield".into();
    let outcomes = apply_sync_deal(&site, &newer).await.expect("an outcome");
    match outcomes.last() {
        Some(ErpOutcome::SalesOrderConflict { reason, .. }) => {
            assert!(
                reason.contains(&format!("Customer {}", str_of(&customer, "name")))
                    && reason.contains(&format!("Contact {}", str_of(&contact, "name")))
                    && !reason.contains("Address"),
                "{reason}"
            );
        }
        other => panic!("expected the deal flagged, got {other:?}"),
    }
    let kept = &w.docs_where("Customer", "hubspot_company_id", "co-edits")[0];
    assert_eq!(str_of(kept, "website"), "https://clerk.example");
    let kept = &w.docs_where("Contact", "hubspot_contact_id", "ct-edits-1")[0];
    assert_eq!(str_of(kept, "first_name"), "Personne");
    let address = &w.docs("Address")[0];
    assert_eq!(str_of(address, "city"), "Springfield");
    assert_eq!(
        str_of(address, "hubspot_modified_at"),
        erp_writer::site::source_version(t1)
    );
    w.cleanup().await;
}

#[tokio::test]
async fn customer_fields_are_refreshed_only_by_newer_hubspot_changes() {
    let w = World::start().await;
    let site = w.site();
    let cmd = deal("upd");
    apply_sync_deal(&site, &cmd).await.expect("synced");

    let mut newer = UpdateCustomer {
        customer: company(
            "co-upd",
            "Globex Renamed",
            Utc::now() + ChronoDuration::seconds(5),
        ),
        address: None,
    };
    newer.customer.website = Some("https://new.example".into());
    let applied = apply_update_customer(&site, &newer).await.expect("applied");
    assert!(matches!(applied, Applied::Outcomes(_)));
    let c = &w.docs_where("Customer", "hubspot_company_id", "co-upd")[0];
    assert_eq!(str_of(c, "customer_name"), "Globex Renamed");
    assert_eq!(str_of(c, "website"), "https://new.example");
    assert_eq!(
        str_of(c, "name"),
        "Globex upd",
        "the document name never changes"
    );

    let mut older = newer.clone();
    older.customer.modified = Utc::now() - ChronoDuration::days(2);
    older.customer.website = Some("https://old.example".into());
    apply_update_customer(&site, &older)
        .await
        .expect("stale is fine");
    assert_eq!(
        str_of(
            &w.docs_where("Customer", "hubspot_company_id", "co-upd")[0],
            "website"
        ),
        "https://new.example"
    );

    // A company never synced is not created by an update.
    let unknown = UpdateCustomer {
        customer: company("co-never", "Nobody", Utc::now()),
        address: None,
    };
    assert!(matches!(
        apply_update_customer(&site, &unknown).await.expect("ok"),
        Applied::NothingToDo(_)
    ));
    assert!(
        w.docs_where("Customer", "hubspot_company_id", "co-never")
            .is_empty()
    );

    // A contact update: new email becomes primary, the old row is kept.
    let mut contact = cmd.contacts[0].clone();
    contact.email_id = Some("new.p1@globex.example".into());
    contact.modified = Utc::now() + ChronoDuration::seconds(5);
    apply_update_contact(
        &site,
        &UpdateContact {
            hubspot_company_id: Some("co-upd".into()),
            contact,
        },
    )
    .await
    .expect("contact updated");
    let c = &w.docs_where("Contact", "hubspot_contact_id", "ct-upd-1")[0];
    assert_eq!(str_of(c, "email_id"), "new.p1@globex.example");
    assert_eq!(c["email_ids"].as_array().map(Vec::len), Some(2), "{c}");
    assert_eq!(w.docs("Contact").len(), 3);
    w.cleanup().await;
}

/// What a deal costs in ERPNext calls (issue 18: at most 6), with the tax template's rows
/// cached as in a running writer. A new company's deal: its Customer looked up and inserted,
/// its Address and Contacts inserted in one batch (a new Customer has nothing linked yet, and
/// the unique keys refuse a second record of anything that exists), its order inserted
/// submitted. A second deal of the company: one look-up per doctype, one insert for its new
/// contact, one for the order.
#[tokio::test]
async fn a_deal_costs_at_most_six_erpnext_calls() {
    let w = World::start().await;
    let site = w.site();
    let first = deal("calls");
    site.taxes
        .rows(&site.client, "US Sales Tax - ATL")
        .await
        .expect("template rows");
    let calls = |w: &World| -> Vec<(String, u64)> { w.sim.calls().into_iter().collect() };
    let expect = |list: &[(&str, u64)]| -> Vec<(String, u64)> {
        list.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    };

    w.sim.reset_calls();
    apply_sync_deal(&site, &first).await.expect("first deal");
    assert_eq!(
        calls(&w),
        expect(&[
            ("GET /api/resource/Customer", 1),
            ("POST /api/method/frappe.client.insert_many", 1),
            ("POST /api/resource/Customer", 1),
            ("POST /api/resource/Sales Order", 1),
        ])
    );
    let so = &w.docs("Sales Order")[0];
    assert_eq!(
        (so["docstatus"].clone(), so["status"].clone()),
        (json!(1), json!("To Deliver and Bill"))
    );

    let mut second = first.clone();
    second.hubspot_deal_id = "deal-calls-2".into();
    let mut newcomer = first.contacts[0].clone();
    newcomer.hubspot_contact_id = "ct-calls-4".into();
    newcomer.first_name = "Person4".into();
    newcomer.email_id = Some("p4.calls@globex.example".into());
    second.contacts.push(newcomer);
    w.sim.reset_calls();
    apply_sync_deal(&site, &second).await.expect("second deal");
    assert_eq!(
        calls(&w),
        expect(&[
            ("GET /api/resource/Address", 1),
            ("GET /api/resource/Contact", 1),
            ("GET /api/resource/Customer", 1),
            ("GET /api/resource/Sales Order", 1),
            ("POST /api/resource/Contact", 1),
            ("POST /api/resource/Sales Order", 1),
        ])
    );
    assert_eq!(w.docs("Contact").len(), 4);
    assert_eq!(w.docs("Address").len(), 1);
    assert_eq!(w.docs("Sales Order").len(), 2);
    w.cleanup().await;
}

/// A site synced before Addresses had a key: the company's keyless Address linked to its
/// Customer is adopted (the key written on it), not duplicated. Then a new company whose deal
/// names a contact that already exists (linked to the first Customer): the batch insert meets
/// its unique key, nothing of the batch is kept, and each record is looked up and inserted on
/// its own; the existing Contact is linked to both Customers.
#[tokio::test]
async fn records_synced_before_the_keys_are_adopted_and_existing_contacts_linked() {
    let w = World::start().await;
    let site = w.site();
    let old = deal("legacy");
    w.sim
        .seed(
            "Customer",
            json!({"customer_name": "Globex legacy", "customer_type": "Company",
                   "customer_group": "Commercial", "territory": "United States",
                   "hubspot_company_id": "co-legacy"}),
        )
        .expect("customer");
    w.sim
        .seed(
            "Address",
            json!({"address_title": "Globex legacy HQ", "address_type": "Billing",
                   "address_line1": "1 Globex Way", "city": "Cypress Creek",
                   "country": "United States",
                   "links": [{"link_doctype": "Customer", "link_name": "Globex legacy"}]}),
        )
        .expect("address without a key");
    apply_sync_deal(&site, &old).await.expect("synced");
    let addresses = w.docs("Address");
    assert_eq!(addresses.len(), 1, "{addresses:#?}");
    assert_eq!(
        str_of(&addresses[0], "hubspot_address_key"),
        "co-legacy:Billing",
        "adopted"
    );

    let mut new = deal("newco");
    new.contacts[0] = old.contacts[0].clone();
    let outcomes = apply_sync_deal(&site, &new).await.expect("synced");
    let shared_contact = w.docs_where("Contact", "hubspot_contact_id", "ct-legacy-1");
    assert_eq!(shared_contact.len(), 1);
    let links: Vec<&str> = shared_contact[0]["links"]
        .as_array()
        .expect("links")
        .iter()
        .map(|l| str_of(l, "link_name"))
        .collect();
    assert_eq!(links, vec!["Globex legacy", "Globex newco"]);
    assert_eq!(w.docs("Contact").len(), 5, "3 + 2 new");
    assert_eq!(
        w.docs_where("Address", "hubspot_address_key", "co-newco:Billing")
            .len(),
        1
    );
    assert!(
        outcomes.iter().any(|o| matches!(
            o,
            ErpOutcome::ContactUpserted { hubspot_contact_id, created: false, .. }
                if hubspot_contact_id == "ct-legacy-1"
        )),
        "{outcomes:?}"
    );
    assert_eq!(w.docs("Sales Order").len(), 2);
    w.cleanup().await;
}
