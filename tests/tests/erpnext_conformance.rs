//! ERPNext conformance: the same scenarios against the ERPNext simulator (`sim_*`, always) and
//! against a real Frappe/ERPNext 15 site (`real_*`, whenever `L2L_TEST_ERPNEXT_URL` and its
//! credentials are set; `deploy/erpnext.sh` sets one up and writes them to its
//! `credentials.env`). Without a real site the `real_*` tests print one `SKIPPED:` line and pass,
//! unless `L2L_REQUIRE_REAL_ERPNEXT=1` (CI), which makes them fail.
//!
//! Each scenario is written once, as `async fn scenario(&mut Stack)`, and reads ERPNext only over
//! REST ([`Stack::erp`]), so what passes on the simulator and fails on the real site is a place
//! where the simulator is more forgiving than ERPNext. HubSpot is always the simulator.
//!
//! Real-site runs are serialised (the site's Webhooks point at one ingest at a time): nextest
//! puts the `real_*` tests in one test group (`.config/nextest.toml`), and [`Stack`] holds a
//! machine-wide lock while it uses the site. Run:
//!
//! ```text
//! set -a; . /var/lib/lead2ledger/erpnext/credentials.env; set +a
//! cargo nextest run -p l2l-tests --test erpnext_conformance
//! ```

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use l2l_tests::sim::hubspot::{ObjectType, WebhookUpdate};
use l2l_tests::stack::erpnext::{brief, money_eq, tax_rows};
use l2l_tests::stack::{DealSpec, ErpTarget, SeededDeal, Stack, StackOptions};
use lapin::options::{
    BasicAckOptions, BasicGetOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::{Value, json};
use shared::broker::{Outgoing, TopologySpec};
use shared::erpnext::Doc;
use shared::names::{Exchange, WorkQueue};
use shared::testkit::{eventually, queue_len};

/// How long one step may take: a real site books an order in seconds and delivers a webhook
/// through its RQ worker; the simulator is faster. Below nextest's 3-minute kill per test.
const WAIT: Duration = Duration::from_secs(90);
const POLL: Duration = Duration::from_millis(50);

/// 10 × 25 + 5 × 40 + 3 × 150 = 900 at the site's standard prices.
const LINES: &[(&str, u32, f64)] = &[
    ("SKU-WIDGET", 10, 25.0),
    ("SKU-GADGET", 5, 40.0),
    ("SKU-SERVICE", 3, 150.0),
];
const NET: f64 = 900.0;
/// "US Sales Tax - ATL": 8 % On Net Total to "Sales Tax - ATL".
const US_TAX_TEMPLATE: &str = "US Sales Tax - ATL";
const US_TAX_ACCOUNT: &str = "Sales Tax - ATL";

// ---------------------------------------------------------------------------------------------
// Harness

/// Every scenario counts the services' ERPNext calls (a proxy; always on for a real site).
fn options() -> StackOptions {
    StackOptions {
        count_erpnext_calls: true,
        ..StackOptions::default()
    }
}

/// Start a stack on `target`, run the scenario, stop the stack whatever happened (so the broker
/// namespace and the real site's lock are released, and the run's documents cleaned up), then
/// report the scenario's failure, if any.
async fn run(
    test: &str,
    target: ErpTarget,
    options: StackOptions,
    scenario: impl AsyncFnOnce(&mut Stack) -> anyhow::Result<()>,
) {
    if std::env::var_os("TEST_LOG").is_some() {
        // The services' logs on stderr (RUST_LOG filters; default info).
        shared::telemetry::init_tracing(&shared::config::TelemetryConfig::default());
    }
    let started = Instant::now();
    let label = target.label();
    let options = StackOptions {
        erpnext: target,
        ..options
    };
    let mut stack = match Stack::start(options).await {
        Ok(s) => s,
        Err(e) => panic!("{test}: starting the stack against the {label} ERPNext: {e:#}"),
    };
    let outcome = AssertUnwindSafe(scenario(&mut stack)).catch_unwind().await;
    let stopped = stack.stop().await;
    eprintln!(
        "{test}: {label} ERPNext, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    match outcome {
        Err(panic) => std::panic::resume_unwind(panic),
        Ok(Err(e)) => panic!("{test}: {e:#}"),
        Ok(Ok(())) => {}
    }
    if let Err(e) = stopped {
        panic!("{test}: stopping the stack: {e:#}");
    }
}

/// `sim_<name>` and `real_<name>` for one scenario.
macro_rules! conformance {
    ($scenario:ident, $options:expr, $sim:ident, $real:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $sim() {
            run(stringify!($sim), ErpTarget::Simulator, $options, $scenario).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $real() {
            let Some(target) = ErpTarget::real_or_skip(stringify!($real)) else {
                return;
            };
            run(stringify!($real), target, $options, $scenario).await;
        }
    };
}

conformance!(
    company_with_address_and_contacts,
    options(),
    sim_company_with_address_and_contacts,
    real_company_with_address_and_contacts
);
conformance!(
    taxes_follow_the_template,
    options(),
    sim_taxes_follow_the_template,
    real_taxes_follow_the_template
);
conformance!(
    foreign_currency_deals_are_invoiced_and_paid,
    options(),
    sim_foreign_currency_deals_are_invoiced_and_paid,
    real_foreign_currency_deals_are_invoiced_and_paid
);
conformance!(
    name_clash_gets_its_own_customer,
    options(),
    sim_name_clash_gets_its_own_customer,
    real_name_clash_gets_its_own_customer
);
conformance!(
    unknown_item_is_reported_on_the_deal,
    StackOptions {
        // Let the SKU reach erp-writer (and ERPNext) instead of being stopped by the mapper.
        configure: Some(|s| s.mapping.items.verify_in_erpnext = false),
        ..options()
    },
    sim_unknown_item_is_reported_on_the_deal,
    real_unknown_item_is_reported_on_the_deal
);
conformance!(
    duplicates_make_one_customer_and_one_order,
    options(),
    sim_duplicates_make_one_customer_and_one_order,
    real_duplicates_make_one_customer_and_one_order
);
conformance!(
    invoice_goes_unpaid_then_paid_on_the_deal,
    options(),
    sim_invoice_goes_unpaid_then_paid_on_the_deal,
    real_invoice_goes_unpaid_then_paid_on_the_deal
);
conformance!(
    submit_mode_submits_the_order,
    StackOptions {
        submit_orders: true,
        ..options()
    },
    sim_submit_mode_submits_the_order,
    real_submit_mode_submits_the_order
);
conformance!(
    draft_mode_leaves_the_order_draft,
    StackOptions {
        submit_orders: false,
        ..options()
    },
    sim_draft_mode_leaves_the_order_draft,
    real_draft_mode_leaves_the_order_draft
);
conformance!(
    order_rows_carry_the_price_list_rate,
    options(),
    sim_order_rows_carry_the_price_list_rate,
    real_order_rows_carry_the_price_list_rate
);
conformance!(
    half_cent_rates_stay_synced,
    options(),
    sim_half_cent_rates_stay_synced,
    real_half_cent_rates_stay_synced
);
conformance!(
    setup_twice_and_after_a_secret_change,
    StackOptions {
        // The services start after the secret is rotated, so ingest verifies with the new one.
        services: false,
        ..options()
    },
    sim_setup_twice_and_after_a_secret_change,
    real_setup_twice_and_after_a_secret_change
);

conformance!(
    sigkilled_writer_leaves_one_order,
    StackOptions {
        // The scenario starts the services itself: erp-writer as a child process.
        services: false,
        ..options()
    },
    sim_sigkilled_writer_leaves_one_order,
    real_sigkilled_writer_leaves_one_order
);
conformance!(
    cancel_then_amend,
    options(),
    sim_cancel_then_amend,
    real_cancel_then_amend
);

// ---------------------------------------------------------------------------------------------
// Helpers

/// A deal numbered `n` whose names carry the stack's run tag (unique on a persistent site).
fn spec<'a>(
    stack: &Stack,
    n: usize,
    contacts: usize,
    lines: &'a [(&'a str, u32, f64)],
) -> DealSpec<'a> {
    DealSpec {
        suffix: format!(" {}", stack.run_tag()),
        ..DealSpec::new(n, contacts, lines)
    }
}

/// The deal's lead2ledger properties, for failure messages.
fn writeback(props: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    props
        .iter()
        .filter(|(k, _)| k.starts_with("erpnext_") || k.as_str() == "invoice_status")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// Poll the deal's HubSpot properties until `check` says yes; on timeout, fail with what the
/// deal shows (a `shared::testkit::eventually` that can say where it got stuck).
async fn wait_deal<T>(
    stack: &Stack,
    deal: &SeededDeal,
    what: &str,
    mut check: impl FnMut(&BTreeMap<String, String>) -> Option<T>,
) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        let props = stack
            .hubspot
            .object(ObjectType::Deals, &deal.deal_id)
            .map(|o| o.properties)
            .unwrap_or_default();
        if let Some(v) = check(&props) {
            return v;
        }
        if Instant::now() > deadline {
            panic!(
                "timed out after {WAIT:?} waiting for {what} on deal {} ({} ERPNext); the deal \
                 shows {:?}",
                deal.deal_id,
                stack.target().label(),
                writeback(&props)
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Wait until the deal shows `synced` with its Sales Order; the order's name. Fails at once when
/// the deal shows `error`.
async fn synced(stack: &Stack, deal: &SeededDeal) -> String {
    wait_deal(stack, deal, "sync status synced", |p| {
        let status = p.get("erpnext_sync_status").map(String::as_str);
        if status == Some("error") {
            panic!(
                "deal {} ({} ERPNext) shows sync status error: {:?}",
                deal.deal_id,
                stack.target().label(),
                p.get("erpnext_sync_message")
            );
        }
        let order = p.get("erpnext_sales_order").filter(|s| !s.is_empty())?;
        (status == Some("synced")).then(|| order.clone())
    })
    .await
}

async fn invoice_status(stack: &Stack, deal: &SeededDeal, want: &str) {
    wait_deal(stack, deal, &format!("invoice_status {want}"), |p| {
        (p.get("invoice_status").map(String::as_str) == Some(want)).then_some(())
    })
    .await;
}

async fn company_shows_customer(stack: &Stack, deal: &SeededDeal, customer: &str) {
    eventually(
        WAIT,
        &format!(
            "erpnext_customer_id {customer} on company {}",
            deal.company_id
        ),
        || async {
            (stack
                .company_property(&deal.company_id, "erpnext_customer_id")
                .as_deref()
                == Some(customer))
            .then_some(())
        },
    )
    .await;
}

/// The deal's one Sales Order, read back over REST.
async fn the_order(stack: &Stack, deal: &SeededDeal) -> anyhow::Result<Doc> {
    let mut orders = stack.erp().sales_orders_for_deal(&deal.deal_id).await?;
    assert_eq!(
        orders.len(),
        1,
        "exactly one Sales Order for deal {}: {:?}",
        deal.deal_id,
        orders.iter().map(brief).collect::<Vec<_>>()
    );
    Ok(orders.remove(0))
}

/// The company's one Customer, read back over REST.
async fn the_customer(stack: &Stack, deal: &SeededDeal) -> anyhow::Result<Doc> {
    let mut customers = stack.erp().customers_for_company(&deal.company_id).await?;
    assert_eq!(
        customers.len(),
        1,
        "exactly one Customer for company {}: {:?}",
        deal.company_id,
        customers.iter().map(Doc::name).collect::<Vec<_>>()
    );
    Ok(customers.remove(0))
}

fn assert_lines(so: &Doc, lines: &[(&str, u32, f64)]) {
    let mut got: Vec<(String, f64, f64)> = so
        .table("items")
        .iter()
        .map(|i| {
            (
                i.str("item_code").unwrap_or_default().to_string(),
                i.f64("qty").unwrap_or_default(),
                i.f64("rate").unwrap_or_default(),
            )
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    let mut want: Vec<(String, f64, f64)> = lines
        .iter()
        .map(|(s, q, p)| (s.to_string(), f64::from(*q), *p))
        .collect();
    want.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got, want, "order lines of {}", so.name());
}

fn num(doc: &Doc, field: &str) -> f64 {
    doc.f64(field)
        .unwrap_or_else(|| panic!("{} has no number {field}: {}", doc.name(), brief(doc)))
}

// ---------------------------------------------------------------------------------------------
// Scenarios

/// a. A company with an address and two contacts: Customer (territory from the country), its
/// Address and Contacts linked to it, the Sales Order with the deal's lines; the deal shows the
/// order and `synced`, the company its Customer ID.
async fn company_with_address_and_contacts(stack: &mut Stack) -> anyhow::Result<()> {
    let deal = stack.seed(&spec(stack, 1, 2, LINES))?;
    stack.reset_erp_calls();
    let started = Instant::now();
    stack.win_deal(&deal.deal_id)?;
    let so_name = synced(stack, &deal).await;
    let elapsed = started.elapsed();

    let so = the_order(stack, &deal).await?;
    assert_eq!(so.name(), so_name);
    assert_lines(&so, LINES);
    let customer = the_customer(stack, &deal).await?;
    assert_eq!(so.str("customer"), Some(customer.name()), "{}", brief(&so));
    assert_eq!(
        customer.str("customer_name"),
        Some(deal.company_name.as_str())
    );
    assert_eq!(
        customer.str("territory"),
        Some("United States"),
        "a US company's territory"
    );

    let erp = stack.erp();
    let addresses = erp.linked_to_customer("Address", customer.name()).await?;
    assert_eq!(
        addresses.len(),
        1,
        "one Address linked to {}: {:?}",
        customer.name(),
        addresses.iter().map(Doc::name).collect::<Vec<_>>()
    );
    let address = &addresses[0];
    assert_eq!(address.str("address_line1"), Some("1 Globex Way"));
    assert_eq!(address.str("city"), Some("Cypress Creek"));
    assert_eq!(address.str("pincode"), Some("97000"));
    assert_eq!(address.str("country"), Some("United States"));

    for contact_id in &deal.contact_ids {
        let contacts = erp.contacts_for(contact_id).await?;
        assert_eq!(
            contacts.len(),
            1,
            "one Contact for HubSpot contact {contact_id}"
        );
        let linked = contacts[0].table("links").iter().any(|l| {
            l.str("link_doctype") == Some("Customer") && l.str("link_name") == Some(customer.name())
        });
        assert!(
            linked,
            "Contact {} links to Customer {}",
            contacts[0].name(),
            customer.name()
        );
    }
    let linked_contacts = erp.linked_to_customer("Contact", customer.name()).await?;
    assert_eq!(
        linked_contacts.len(),
        2,
        "two Contacts linked to the Customer"
    );

    company_shows_customer(stack, &deal, customer.name()).await;
    // Everything the deal caused is done once the company shows its Customer (the Customer's
    // `after_insert` webhook included); none of the reads above went through the counter.
    let calls = stack.erp_calls();
    assert_eq!(
        stack
            .deal_property(&deal.deal_id, "erpnext_sync_message")
            .filter(|m| !m.is_empty()),
        None,
        "a synced deal shows no sync message"
    );
    let link = stack
        .deal_property(&deal.deal_id, "erpnext_sales_order_url")
        .unwrap_or_default();
    assert!(link.contains(&so_name), "order link {link:?}");
    if let Some(calls) = calls {
        eprintln!(
            "ERPNext calls for one synced deal (2 contacts, address, 3 lines) on the {} ERPNext, \
             won → synced in {:.1} s: {calls}",
            stack.target().label(),
            elapsed.as_secs_f64()
        );
        // The budget (issue 18), with this process's caches cold: the mapper's Item check and
        // the tax template's rows are asked once here, then served from memory.
        anyhow::ensure!(
            calls.total() <= 6,
            "one synced deal cost {calls}, over the budget of 6 ERPNext calls"
        );
    }
    Ok(())
}

/// b. The order's tax rows are the template's (8 % to "Sales Tax - ATL"), its grand total is net
/// × 1.08, and the invoice made from it has the same rows and total.
async fn taxes_follow_the_template(stack: &mut Stack) -> anyhow::Result<()> {
    let deal = stack.seed(&spec(stack, 2, 1, LINES))?;
    stack.win_deal(&deal.deal_id)?;
    synced(stack, &deal).await;
    let so = the_order(stack, &deal).await?;
    let erp = stack.erp();
    let template = erp
        .get("Sales Taxes and Charges Template", US_TAX_TEMPLATE)
        .await?
        .unwrap_or_else(|| panic!("no Sales Taxes and Charges Template {US_TAX_TEMPLATE}"));
    let template_rows = tax_rows(&template);
    assert_eq!(
        template_rows,
        vec![("On Net Total".to_string(), US_TAX_ACCOUNT.to_string(), 8.0)],
        "the site's template"
    );
    assert_eq!(so.str("taxes_and_charges"), Some(US_TAX_TEMPLATE));
    assert_eq!(
        tax_rows(&so),
        template_rows,
        "the order's tax rows: {}",
        brief(&so)
    );
    assert!(money_eq(num(&so, "net_total"), NET), "{}", brief(&so));
    assert!(
        money_eq(num(&so, "total_taxes_and_charges"), NET * 0.08),
        "{}",
        brief(&so)
    );
    assert!(
        money_eq(num(&so, "grand_total"), NET * 1.08),
        "grand total = net × 1.08: {}",
        brief(&so)
    );

    let invoice = erp.invoice_sales_order(so.name()).await?;
    assert_eq!(invoice.docstatus(), 1, "{}", brief(&invoice));
    assert_eq!(tax_rows(&invoice), template_rows, "{}", brief(&invoice));
    assert!(
        money_eq(num(&invoice, "grand_total"), num(&so, "grand_total")),
        "the invoice's total equals the order's: order {}, invoice {}",
        brief(&so),
        brief(&invoice)
    );
    Ok(())
}

/// c. EUR and GBP deals: a submitted order in the deal's currency, a submitted invoice against the
/// receivable account of that currency, a payment, and the deal ends `paid`.
async fn foreign_currency_deals_are_invoiced_and_paid(stack: &mut Stack) -> anyhow::Result<()> {
    let cases = [(31, "EUR", "Germany"), (32, "GBP", "United Kingdom")];
    let mut deals = Vec::new();
    for (n, currency, country) in cases {
        let spec = DealSpec {
            currency,
            country,
            ..spec(stack, n, 1, &LINES[..2])
        };
        let deal = stack.seed(&spec)?;
        stack.win_deal(&deal.deal_id)?;
        deals.push((deal, currency));
    }
    for (deal, currency) in &deals {
        synced(stack, deal).await;
        let so = the_order(stack, deal).await?;
        assert_eq!(so.str("currency"), Some(*currency), "{}", brief(&so));
        assert_eq!(so.docstatus(), 1, "submitted: {}", brief(&so));
        assert!(
            num(&so, "conversion_rate") > 1.0,
            "{currency} → USD rate: {}",
            brief(&so)
        );
        let invoice = stack.erp().invoice_sales_order(so.name()).await?;
        assert_eq!(invoice.docstatus(), 1, "{}", brief(&invoice));
        assert_eq!(invoice.str("currency"), Some(*currency));
        let account = stack
            .settings
            .mapping
            .order
            .receivable_account(currency)
            .unwrap_or_else(|| panic!("no receivable account mapped for {currency}"));
        assert_eq!(
            invoice.str("debit_to"),
            Some(account.as_str()),
            "{}",
            brief(&invoice)
        );
        assert!(
            money_eq(num(&invoice, "grand_total"), num(&so, "grand_total")),
            "order {} invoice {}",
            brief(&so),
            brief(&invoice)
        );
        invoice_status(stack, deal, "unpaid").await;
        stack.erp().pay_invoice(invoice.name()).await?;
        invoice_status(stack, deal, "paid").await;
        let paid = stack
            .erp()
            .get("Sales Invoice", invoice.name())
            .await?
            .unwrap_or_else(|| panic!("invoice {} vanished", invoice.name()));
        assert_eq!(paid.str("status"), Some("Paid"), "{}", brief(&paid));
        assert!(money_eq(num(&paid, "outstanding_amount"), 0.0));
    }
    Ok(())
}

/// d. A Customer with the company's name already exists (made in the desk): the deal gets its own
/// Customer, which ERPNext names "<name> - 1", keyed by the HubSpot company ID.
async fn name_clash_gets_its_own_customer(stack: &mut Stack) -> anyhow::Result<()> {
    let spec = spec(stack, 41, 1, &LINES[..1]);
    let name = spec.company_name();
    let existing = stack.erp().insert_customer(&name).await?;
    assert_eq!(
        existing.name(),
        name,
        "the desk's Customer takes the plain name"
    );
    let deal = stack.seed(&spec)?;
    stack.win_deal(&deal.deal_id)?;
    synced(stack, &deal).await;

    let customer = the_customer(stack, &deal).await?;
    let renamed = format!("{name} - 1");
    assert_eq!(customer.name(), renamed);
    assert_eq!(customer.str("customer_name"), Some(name.as_str()));
    assert_eq!(
        customer.str("hubspot_company_id"),
        Some(deal.company_id.as_str())
    );
    let so = the_order(stack, &deal).await?;
    assert_eq!(so.str("customer"), Some(renamed.as_str()));
    let untouched = stack
        .erp()
        .get("Customer", &name)
        .await?
        .unwrap_or_else(|| panic!("the desk's Customer {name} vanished"));
    assert!(
        untouched
            .str("hubspot_company_id")
            .is_none_or(str::is_empty),
        "the desk's Customer is not claimed: {:?}",
        untouched.get("hubspot_company_id")
    );
    assert_eq!(stack.erp().customers_named(&name).await?.len(), 2);
    company_shows_customer(stack, &deal, &renamed).await;
    Ok(())
}

/// e. A SKU with no Item reaches erp-writer: no order, one dead letter in erp-writer's DLQ, and
/// the deal shows `error` with a message naming the SKU.
async fn unknown_item_is_reported_on_the_deal(stack: &mut Stack) -> anyhow::Result<()> {
    let sku = format!("SKU-NOPE-{}", stack.run_tag().to_uppercase());
    let lines: [(&str, u32, f64); 2] = [("SKU-WIDGET", 1, 25.0), (sku.as_str(), 2, 10.0)];
    let deal = stack.seed(&spec(stack, 51, 1, &lines))?;
    stack.win_deal(&deal.deal_id)?;
    let message = wait_deal(stack, &deal, "sync status error", |p| {
        (p.get("erpnext_sync_status").map(String::as_str) == Some("error"))
            .then(|| p.get("erpnext_sync_message").cloned().unwrap_or_default())
    })
    .await;
    assert!(
        message.contains(&sku),
        "the deal's sync message names the SKU {sku}: {message:?}"
    );
    let dlq = stack
        .settings
        .names()
        .dead_letter_queue(WorkQueue::ErpWriter);
    let url = stack.settings.amqp.url.clone();
    eventually(WAIT, &format!("one dead letter in {dlq}"), || async {
        (queue_len(&url, &dlq).await >= 1).then_some(())
    })
    .await;
    assert_eq!(queue_len(&url, &dlq).await, 1, "exactly one dead letter");
    assert!(
        stack
            .erp()
            .sales_orders_for_deal(&deal.deal_id)
            .await?
            .is_empty(),
        "no Sales Order for a deal with an unknown item"
    );
    Ok(())
}

/// A queue of our own bound to one routing key of the namespace, on its own connection.
struct Tap {
    _conn: Connection,
    channel: lapin::Channel,
    queue: String,
}

/// One message taken off a tap.
struct Tapped {
    body: Vec<u8>,
    properties: BasicProperties,
}

impl Tapped {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

impl Tap {
    async fn open(stack: &Stack, exchange: Exchange, routing_key: &str) -> anyhow::Result<Tap> {
        let conn =
            Connection::connect(&stack.settings.amqp.url, ConnectionProperties::default()).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        // The same idempotent declaration the services make, so the exchange exists to bind to.
        shared::broker::declare(
            &conn,
            &stack.settings.names(),
            &TopologySpec::from_settings(&stack.settings),
        )
        .await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?
            .name()
            .as_str()
            .to_string();
        channel
            .queue_bind(
                queue.as_str().into(),
                stack.settings.names().exchange(exchange).as_str().into(),
                routing_key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(Tap {
            _conn: conn,
            channel,
            queue,
        })
    }

    /// Every message on the tap now.
    async fn take(&self) -> anyhow::Result<Vec<Tapped>> {
        let mut out = Vec::new();
        while let Some(msg) = self
            .channel
            .basic_get(self.queue.as_str().into(), BasicGetOptions::default())
            .await?
        {
            msg.delivery.ack(BasicAckOptions::default()).await?;
            out.push(Tapped {
                body: msg.delivery.data.clone(),
                properties: msg.delivery.properties.clone(),
            });
        }
        Ok(out)
    }

    /// Publish `message` to the namespace's `exchange` with a confirm.
    async fn publish(
        &self,
        stack: &Stack,
        exchange: Exchange,
        routing_key: &str,
        message: &Tapped,
    ) -> anyhow::Result<()> {
        let out = Outgoing {
            exchange: stack.settings.names().exchange(exchange),
            routing_key: routing_key.to_string(),
            body: message.body.clone(),
            properties: message.properties.clone(),
        };
        shared::broker::publish_on(&self.channel, &[out]).await?;
        Ok(())
    }
}

/// The `sales_order_upserted` outcomes for `deal` among `tapped`, as `created` flags.
fn order_outcomes(tapped: &[Tapped], deal: &SeededDeal) -> Vec<bool> {
    tapped
        .iter()
        .map(Tapped::json)
        .filter(|e| e["payload"]["hubspot_deal_id"].as_str() == Some(deal.deal_id.as_str()))
        .map(|e| e["payload"]["created"].as_bool().unwrap_or(false))
        .collect()
}

/// f. Every HubSpot webhook delivered twice, and the deal's `erp.sync_deal` command published
/// twice more after it was applied (its done marker removed, so erp-writer must find the
/// documents by their HubSpot IDs): one Customer, one Address, one Contact, one Sales Order.
async fn duplicates_make_one_customer_and_one_order(stack: &mut Stack) -> anyhow::Result<()> {
    const SYNC_DEAL: &str = "erp.sync_deal";
    const ORDER_UPSERTED: &str = "outcome.erp.sales_order_upserted";
    stack
        .hubspot
        .set_webhooks(WebhookUpdate {
            duplicate: Some(true),
            ..WebhookUpdate::default()
        })
        .map_err(|e| anyhow::anyhow!("HubSpot simulator webhooks: {e:?}"))?;
    let commands = Tap::open(stack, Exchange::Commands, SYNC_DEAL).await?;
    let outcomes = Tap::open(stack, Exchange::Events, ORDER_UPSERTED).await?;
    let deal = stack.seed(&spec(stack, 61, 1, LINES))?;
    stack.win_deal(&deal.deal_id)?;
    let so_name = synced(stack, &deal).await;

    let won_twice = stack
        .hubspot
        .webhook_deliveries()
        .iter()
        .filter(|d| d.status.is_some_and(|s| (200..300).contains(&s)))
        .map(|d| d.copy)
        .collect::<std::collections::BTreeSet<_>>();
    assert_eq!(
        won_twice.len(),
        2,
        "HubSpot delivered the won webhook and its duplicate"
    );
    // Outcomes taken off the tap so far.
    let seen = std::sync::Mutex::new(Vec::new());
    let outcomes_now = || async {
        let mut more = outcomes.take().await.unwrap_or_default();
        let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.append(&mut more);
        order_outcomes(&seen, &deal)
    };
    eventually(WAIT, "the first sales_order_upserted outcome", || async {
        (!outcomes_now().await.is_empty()).then_some(())
    })
    .await;
    let captured = commands.take().await?;
    let command = captured
        .iter()
        .find(|c| c.json()["payload"].to_string().contains(&deal.deal_id))
        .unwrap_or_else(|| panic!("no {SYNC_DEAL} command captured for deal {}", deal.deal_id));
    let key = command.json()["idempotency_key"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!key.is_empty(), "the command has an idempotency key");
    let redis = redis::Client::open(stack.settings.redis.url.as_str())?;
    let mut conn = redis.get_multiplexed_async_connection().await?;
    let done_key = stack.settings.names().done_key(&key);
    for copy in 1..=2 {
        // erp-writer publishes the outcome, then sets the done marker: wait for the marker of
        // the run before, or the copy would find it and be dropped as a duplicate.
        eventually(WAIT, &format!("the done marker {done_key}"), || {
            let mut conn = conn.clone();
            let done_key = done_key.clone();
            async move {
                let exists: i64 = redis::cmd("EXISTS")
                    .arg(&done_key)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                (exists == 1).then_some(())
            }
        })
        .await;
        // Without the done marker erp-writer cannot take the fast path: it must look the
        // documents up by their HubSpot IDs and find them.
        let _: () = redis::cmd("DEL")
            .arg(&done_key)
            .query_async(&mut conn)
            .await?;
        commands
            .publish(stack, Exchange::Commands, SYNC_DEAL, command)
            .await?;
        eventually(
            WAIT,
            &format!("the outcome of redelivered copy {copy}"),
            || async { (outcomes_now().await.len() > copy).then_some(()) },
        )
        .await;
    }
    assert_eq!(
        outcomes_now().await,
        vec![true, false, false],
        "created once, then found twice"
    );

    let so = the_order(stack, &deal).await?;
    assert_eq!(so.name(), so_name);
    let customer = the_customer(stack, &deal).await?;
    assert_eq!(
        stack
            .erp()
            .linked_to_customer("Address", customer.name())
            .await?
            .len(),
        1,
        "one Address"
    );
    for contact in &deal.contact_ids {
        assert_eq!(
            stack.erp().contacts_for(contact).await?.len(),
            1,
            "one Contact for {contact}"
        );
    }
    assert_eq!(
        captured
            .iter()
            .filter(|c| c.json()["payload"].to_string().contains(&deal.deal_id))
            .count(),
        1,
        "the mapper dropped the duplicate webhook: one command"
    );
    Ok(())
}

/// g. A USD invoice made from the order shows `unpaid` on the deal, then `paid` once paid.
async fn invoice_goes_unpaid_then_paid_on_the_deal(stack: &mut Stack) -> anyhow::Result<()> {
    let deal = stack.seed(&spec(stack, 71, 1, &LINES[..2]))?;
    stack.win_deal(&deal.deal_id)?;
    let so_name = synced(stack, &deal).await;
    let before = stack.erp_calls();
    let invoice = stack.erp().invoice_sales_order(&so_name).await?;
    assert_eq!(invoice.str("currency"), Some("USD"));
    assert_eq!(
        invoice.str("hubspot_deal_id"),
        Some(deal.deal_id.as_str()),
        "the invoice carries the deal's ID from the order"
    );
    invoice_status(stack, &deal, "unpaid").await;
    stack.erp().pay_invoice(invoice.name()).await?;
    invoice_status(stack, &deal, "paid").await;
    let invoices = stack.erp().sales_invoices_for_deal(&deal.deal_id).await?;
    assert_eq!(invoices.len(), 1);
    assert_eq!(invoices[0].str("status"), Some("Paid"));
    if let (Some(before), Some(after)) = (before, stack.erp_calls()) {
        eprintln!(
            "ERPNext calls for the invoice's write-back (unpaid, then paid) on the {} ERPNext: {}",
            stack.target().label(),
            after.since(&before)
        );
    }
    assert_eq!(
        stack
            .erp()
            .sales_orders_for_deal(&deal.deal_id)
            .await?
            .len(),
        1
    );
    Ok(())
}

/// h (on). Submit mode: the order is submitted.
async fn submit_mode_submits_the_order(stack: &mut Stack) -> anyhow::Result<()> {
    assert!(stack.settings.mapping.order.submit);
    let deal = stack.seed(&spec(stack, 81, 1, &LINES[..1]))?;
    stack.win_deal(&deal.deal_id)?;
    let so_name = synced(stack, &deal).await;
    let so = the_order(stack, &deal).await?;
    assert_eq!(so.name(), so_name);
    assert_eq!(so.docstatus(), 1, "{}", brief(&so));
    assert_eq!(
        so.str("status"),
        Some("To Deliver and Bill"),
        "{}",
        brief(&so)
    );
    Ok(())
}

/// h (off). Draft mode: the order stays a draft, and the deal still shows it, synced.
async fn draft_mode_leaves_the_order_draft(stack: &mut Stack) -> anyhow::Result<()> {
    assert!(!stack.settings.mapping.order.submit);
    let deal = stack.seed(&spec(stack, 82, 1, &LINES[..1]))?;
    stack.win_deal(&deal.deal_id)?;
    let so_name = synced(stack, &deal).await;
    let so = the_order(stack, &deal).await?;
    assert_eq!(so.name(), so_name);
    assert_eq!(so.docstatus(), 0, "{}", brief(&so));
    assert_eq!(so.str("status"), Some("Draft"), "{}", brief(&so));
    Ok(())
}

/// The order's rows show the price list's rate beside the deal's (issue 14, finding 11: ERPNext
/// fills `price_list_rate` only when the row asks for it). The deal's prices are the site's
/// "Standard Selling" prices, so the two are equal and there is no discount.
async fn order_rows_carry_the_price_list_rate(stack: &mut Stack) -> anyhow::Result<()> {
    let deal = stack.seed(&spec(stack, 85, 1, LINES))?;
    stack.win_deal(&deal.deal_id)?;
    synced(stack, &deal).await;
    let so = the_order(stack, &deal).await?;
    assert_eq!(so.str("selling_price_list"), Some("Standard Selling"));
    let rows: Vec<(String, f64, f64)> = so
        .table("items")
        .iter()
        .map(|i| {
            (
                i.str("item_code").unwrap_or_default().to_string(),
                i.f64("rate").unwrap_or_default(),
                i.f64("price_list_rate").unwrap_or_default(),
            )
        })
        .collect();
    assert!(
        rows.iter().all(|(_, rate, list)| money_eq(*rate, *list)),
        "(item, rate, price_list_rate) of {}: {rows:?}",
        so.name()
    );
    Ok(())
}

/// Rates HubSpot gives with more decimals than the currency's: ERPNext keeps them at its
/// precision, ties to even (19.995 → 20.0, 0.125 → 0.12), and a later change of the deal that
/// leaves its lines alone finds the order unchanged: the deal stays `synced`. (Compared as
/// floats, 19.995 read as 19.99 against the stored 20.0, and the deal went to `needs_review`.)
async fn half_cent_rates_stay_synced(stack: &mut Stack) -> anyhow::Result<()> {
    let lines: &[(&str, u32, f64)] = &[("SKU-WIDGET", 3, 19.995), ("SKU-GADGET", 1, 0.125)];
    let upserted = Tap::open(stack, Exchange::Events, "outcome.erp.sales_order_upserted").await?;
    let conflicts = Tap::open(stack, Exchange::Events, "outcome.erp.sales_order_conflict").await?;
    let deal = stack.seed(&spec(stack, 87, 1, lines))?;
    stack.win_deal(&deal.deal_id)?;
    synced(stack, &deal).await;
    let so = the_order(stack, &deal).await?;
    let mut rows: Vec<(String, f64)> = so
        .table("items")
        .iter()
        .map(|i| {
            (
                i.str("item_code").unwrap_or_default().to_string(),
                i.f64("rate").unwrap_or_default(),
            )
        })
        .collect();
    rows.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        rows,
        [
            ("SKU-GADGET".to_string(), 0.12),
            ("SKU-WIDGET".to_string(), 20.0)
        ],
        "{}",
        so.name()
    );
    let first = upserted.take().await?.len();
    assert!(first >= 1, "the order's outcome");

    // The rep moves the stage back and wins the deal again: the mapper syncs it again, lines
    // as before.
    stack
        .hubspot
        .update_as_user(
            ObjectType::Deals,
            &deal.deal_id,
            &[("dealstage", "contractsent")],
        )
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    stack.win_deal(&deal.deal_id)?;
    let again = eventually(WAIT, "the order's outcome after winning again", || async {
        let up = upserted.take().await.unwrap_or_default();
        let conflict = conflicts.take().await.unwrap_or_default();
        let of_deal = |t: &[Tapped]| order_outcomes(t, &deal).len();
        (of_deal(&up) + of_deal(&conflict) > 0).then(|| (of_deal(&up), conflict))
    })
    .await;
    let (upserts, conflict) = again;
    assert!(
        conflict.is_empty() && upserts == 1,
        "unchanged, not a conflict: {:?}",
        conflict.iter().map(Tapped::json).collect::<Vec<_>>()
    );
    synced(stack, &deal).await;
    Ok(())
}

/// i. `erp-writer setup` run again changes nothing; after the webhook secret changes it rewrites
/// the secret of every Webhook (and says so), a third run changes nothing again, and ingest,
/// holding the new secret, accepts ERPNext's deliveries: an invoice reaches the deal.
async fn setup_twice_and_after_a_secret_change(stack: &mut Stack) -> anyhow::Result<()> {
    use erp_writer::setup::{Action, CUSTOM_FIELDS, WEBHOOKS};
    // Stack::start ran setup once.
    let second = erp_writer::run_setup(&stack.settings).await?;
    assert!(
        second.unchanged(),
        "a second setup changes nothing:\n{second}"
    );

    let old_secret = stack.settings.erpnext.webhook_secret.clone();
    let new_secret = format!(
        "rotated-{}-{}",
        stack.run_tag(),
        uuid::Uuid::now_v7().simple()
    );
    stack.settings.erpnext.webhook_secret = Some(new_secret.clone().into());
    let rotated = erp_writer::run_setup(&stack.settings).await?;
    for spec in WEBHOOKS {
        let row = rotated
            .row(&spec.name())
            .unwrap_or_else(|| panic!("setup reports no row for {}:\n{rotated}", spec.name()));
        assert_eq!(row.action, Action::Updated, "{}:\n{rotated}", spec.name());
        assert!(
            row.changed.iter().any(|c| c.starts_with("webhook_secret")),
            "{} reports the secret it rewrote:\n{rotated}",
            spec.name()
        );
    }
    assert_eq!(
        rotated.count(Action::Unchanged),
        CUSTOM_FIELDS.len(),
        "the custom fields stay as they are:\n{rotated}"
    );
    let third = erp_writer::run_setup(&stack.settings).await?;
    assert!(
        third.unchanged(),
        "after the rotation, setup again changes nothing:\n{third}"
    );

    stack.start_services();
    // Ingest verifies with the new secret only.
    let probe = json!({
        "event": "after_insert", "doctype": "Customer", "name": "l2l signature probe",
        "customer_name": "l2l signature probe", "hubspot_company_id": null,
        "modified": "2026-01-01 00:00:00.000000"
    })
    .to_string();
    let url = format!(
        "{}/webhooks/erpnext/Customer/after_insert",
        stack.ingest_url
    );
    let http = reqwest::Client::new();
    let post = |secret: String| {
        let (http, url, probe) = (http.clone(), url.clone(), probe.clone());
        async move {
            http.post(url)
                .header("content-type", "application/json")
                .header(
                    shared::signature::FRAPPE_SIGNATURE,
                    shared::signature::frappe_sign(&secret, probe.as_bytes()),
                )
                .body(probe)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    // The secret every stack starts with (`Stack::start`).
    let old = l2l_tests::stack::FRAPPE_WEBHOOK_SECRET.to_string();
    // 503 until ingest has its broker connection.
    let status = eventually(WAIT, "ingest answering with its broker up", || async {
        post(new_secret.clone()).await.ok().filter(|s| *s != 503)
    })
    .await;
    assert_eq!(status, 200, "a delivery signed with the new secret");
    assert_eq!(
        post(old.clone()).await?,
        401,
        "a delivery signed with the old secret"
    );

    // ERPNext signs with what setup stored: the invoice's webhooks reach the deal.
    let deal = stack.seed(&spec(stack, 91, 1, &LINES[..1]))?;
    stack.win_deal(&deal.deal_id)?;
    let so_name = synced(stack, &deal).await;
    stack.erp().invoice_sales_order(&so_name).await?;
    invoice_status(stack, &deal, "unpaid").await;

    // Leave the site's Webhooks with the secret every other stack uses.
    stack.settings.erpnext.webhook_secret = old_secret;
    let restored = erp_writer::run_setup(&stack.settings).await?;
    assert_eq!(
        restored.count(Action::Updated),
        WEBHOOKS.len(),
        "restoring the secret rewrites it again:\n{restored}"
    );
    Ok(())
}

/// Cancel, then amend, as people do in ERPNext's desk. The cancel flags the deal for review; the
/// amendment (it copies the deal's ID, not the unique key) goes in, the deal follows it and its
/// invoice reaches the deal; the deal won again creates nothing. A cancelled order that nobody
/// amends keeps the deal flagged, even when the deal is won again.
async fn cancel_then_amend(stack: &mut Stack) -> anyhow::Result<()> {
    assert!(stack.settings.mapping.order.submit);
    let deal = stack.seed(&spec(stack, 91, 1, &LINES[..1]))?;
    let lone = stack.seed(&spec(stack, 92, 1, &LINES[..1]))?;
    stack.win_deal(&deal.deal_id)?;
    stack.win_deal(&lone.deal_id)?;
    let original = synced(stack, &deal).await;
    let lone_order = synced(stack, &lone).await;

    stack.erp().cancel("Sales Order", &original).await?;
    stack.erp().cancel("Sales Order", &lone_order).await?;
    for (d, so) in [(&deal, &original), (&lone, &lone_order)] {
        wait_deal(stack, d, "needs_review after the cancel", |p| {
            (p.get("erpnext_sync_status").map(String::as_str) == Some("needs_review")
                && p.get("erpnext_sales_order") == Some(so))
            .then_some(())
        })
        .await;
    }

    let amendment = stack.erp().amend("Sales Order", &original).await?;
    assert_eq!(
        amendment.str("hubspot_deal_id"),
        Some(deal.deal_id.as_str()),
        "the amendment keeps the deal's ID"
    );
    let amended = amendment.name().to_string();
    wait_deal(stack, &deal, "the amendment on the deal", |p| {
        (p.get("erpnext_sales_order") == Some(&amended)
            && p.get("erpnext_sync_status").map(String::as_str) == Some("synced"))
        .then_some(())
    })
    .await;
    stack.erp().client().submit("Sales Order", &amended).await?;
    let invoice = stack.erp().invoice_sales_order(&amended).await?;
    assert_eq!(invoice.str("hubspot_deal_id"), Some(deal.deal_id.as_str()));
    invoice_status(stack, &deal, "unpaid").await;

    // Won again (the rep moves the stage back and forth): no new order for either deal.
    for d in [&deal, &lone] {
        stack
            .hubspot
            .update_as_user(
                ObjectType::Deals,
                &d.deal_id,
                &[("dealstage", "contractsent")],
            )
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        stack.win_deal(&d.deal_id)?;
    }
    wait_deal(
        stack,
        &lone,
        "the lone deal still flagged after winning again",
        |p| {
            (p.get("erpnext_sync_status").map(String::as_str) == Some("needs_review")
                && p.get("erpnext_sync_message")
                    .is_some_and(|m| m.contains("cancelled")))
            .then_some(())
        },
    )
    .await;
    synced(stack, &deal).await;
    let orders = stack.erp().sales_orders_for_deal(&deal.deal_id).await?;
    let mut names: Vec<&str> = orders.iter().map(Doc::name).collect();
    names.sort();
    let mut want = vec![original.as_str(), amended.as_str()];
    want.sort();
    assert_eq!(names, want, "the original and its amendment, nothing more");
    assert_eq!(
        stack
            .erp()
            .sales_orders_for_deal(&lone.deal_id)
            .await?
            .len(),
        1,
        "a cancelled order is not replaced by lead2ledger"
    );
    Ok(())
}

/// erp-writer as its own process, run as deployed, from the same binary CI built.
struct ChildWriter {
    child: std::process::Child,
}

impl ChildWriter {
    fn start(stack: &Stack) -> anyhow::Result<Self> {
        let demo = std::path::PathBuf::from(env!("CARGO_BIN_EXE_l2l-demo"));
        let binary = demo
            .parent()
            .map(|d| d.join("erp-writer"))
            .filter(|p| p.exists())
            .ok_or_else(|| {
                anyhow::anyhow!("erp-writer not built; run `cargo nextest run --workspace`")
            })?;
        let child = std::process::Command::new(binary)
            .arg("run")
            .envs(stack.service_env())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()?;
        Ok(Self { child })
    }

    fn sigkill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildWriter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A writer SIGKILLed as soon as the deal's Sales Order exists in ERPNext — before it could
/// submit, report or ack — and a new one started: the command is redelivered, finds the order by
/// the deal's ID, finishes it, and the deal ends synced with exactly one order, one Customer.
async fn sigkilled_writer_leaves_one_order(stack: &mut Stack) -> anyhow::Result<()> {
    stack.start_services_except(&["erp-writer"]);
    let deal = stack.seed(&spec(stack, 95, 2, LINES))?;
    let writer = ChildWriter::start(stack)?;
    stack.win_deal(&deal.deal_id)?;
    let erp = stack.erp();
    let deadline = Instant::now() + WAIT;
    let first = loop {
        if let Some(so) = erp
            .sales_orders_for_deal(&deal.deal_id)
            .await?
            .into_iter()
            .next()
        {
            break so;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no Sales Order for deal {} within {WAIT:?}",
            deal.deal_id
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    writer.sigkill();
    eprintln!(
        "SIGKILLed erp-writer with Sales Order {} in ERPNext (docstatus {})",
        first.name(),
        first.docstatus()
    );
    let _writer = ChildWriter::start(stack)?;
    let so_name = synced(stack, &deal).await;
    assert_eq!(so_name, first.name(), "the order the killed writer made");
    let so = the_order(stack, &deal).await?;
    assert_eq!(
        so.docstatus(),
        1,
        "submitted by the second writer: {}",
        brief(&so)
    );
    the_customer(stack, &deal).await?;
    Ok(())
}
