//! `l2l-demo`: the README's main job. The whole loop on this machine: the HubSpot and ERPNext
//! simulators, ingest, mapper, erp-writer and crm-writer on the real RabbitMQ and Redis; a sample
//! deal is won in HubSpot, and the demo shows what appears in ERPNext and what comes back to
//! HubSpot, invoice included. The stack then keeps running for exploring until Ctrl-C.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use l2l_tests::stack::{Stack, StackOptions};
use serde_json::Value;

#[derive(Parser)]
#[command(about = "lead2ledger demo: HubSpot → ERPNext → HubSpot on the simulators")]
struct Cli {
    /// Exit after the story instead of keeping the stack up for exploring.
    #[arg(long)]
    no_wait: bool,
    /// Broker and Redis namespace.
    #[arg(long, default_value = "l2l-demo")]
    namespace: String,
}

const LINES: &[(&str, u32, f64)] = &[
    ("SKU-WIDGET", 10, 25.0),
    ("SKU-GADGET", 5, 40.0),
    ("SKU-SERVICE", 3, 150.0),
];

fn step(n: u32, text: impl std::fmt::Display) {
    println!("\n\x1b[1m{n}. {text}\x1b[0m");
}

async fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Keep the story readable: services log warnings and errors only, unless RUST_LOG says more.
    shared::telemetry::init_tracing(&shared::config::TelemetryConfig {
        log_level: "warn".into(),
        ..Default::default()
    });
    println!(
        "\x1b[1mlead2ledger demo\x1b[0m — HubSpot ⇄ ERPNext on the simulators, real RabbitMQ and Redis"
    );
    let stack = Stack::start(StackOptions {
        namespace: Some(cli.namespace.clone()),
        fast_retries: false,
        services: true,
        submit_orders: true,
        demo_ports: true,
        ..StackOptions::default()
    })
    .await
    .context("starting the stack (is RabbitMQ/Redis up? deploy/services.sh)")?;
    let result = story(&stack).await;
    if let Err(e) = &result {
        eprintln!("\ndemo failed: {e:#}");
        for d in stack.erpnext.webhook_deliveries() {
            eprintln!(
                "  ERPNext webhook {} {} {} → {} attempts {:?}: {:?}",
                d.doctype,
                d.docname,
                d.event,
                d.url,
                d.attempts.len(),
                d.state
            );
        }
    } else if !cli.no_wait {
        println!("\nThe stack keeps running — explore it:");
        println!(
            "  HubSpot simulator  {}  (e.g. GET /_sim/objects/deals)",
            stack.hubspot.base_url()
        );
        println!(
            "  ERPNext simulator  {}  (e.g. GET /_sim/docs/Sales Order)",
            stack.erpnext.base_url()
        );
        println!(
            "  ingest             {}  (/healthz /readyz /metrics)",
            stack.ingest_url
        );
        println!("Press Ctrl-C to stop everything the demo started.");
        let _ = tokio::signal::ctrl_c().await;
        println!("\nstopping…");
    }
    stack.stop().await?;
    result
}

async fn story(stack: &Stack) -> anyhow::Result<()> {
    let s = &stack.settings;
    step(1, "Services up");
    println!(
        "   RabbitMQ {}  ·  Redis {}  ·  namespace {}",
        shared::config::redact_url(&s.amqp.url),
        s.redis.url,
        s.amqp.namespace
    );
    println!(
        "   HubSpot simulator {}  ·  ERPNext simulator {}  ·  ingest {}",
        stack.hubspot.base_url(),
        stack.erpnext.base_url(),
        stack.ingest_url
    );
    println!("   setup done: ERPNext custom fields and webhooks, HubSpot custom properties");

    step(2, "A sales rep's deal in HubSpot");
    let deal = stack.seed_deal(1, 3, LINES)?;
    println!("   company  {}  \"Globex Corporation 1\"", deal.company_id);
    println!("   contacts {}", deal.contact_ids.join(", "));
    println!(
        "   deal     {}  \"Globex expansion 1\" — 3 line items, USD 900.00, stage contractsent",
        deal.deal_id
    );

    step(3, "The deal is moved to Closed Won in HubSpot");
    stack.win_deal(&deal.deal_id)?;
    println!("   HubSpot sends a signed webhook → ingest → mapper reads the deal → erp-writer");

    let so = wait_for("the Sales Order in ERPNext", || {
        stack.sales_orders_for(&deal.deal_id).into_iter().next()
    })
    .await?;
    let customer_name = so["customer"].as_str().unwrap_or_default().to_string();
    step(4, "In ERPNext");
    if let Some(c) = stack.erpnext.get("Customer", &customer_name) {
        println!(
            "   Customer     {}  (hubspot_company_id {})",
            text(&c["name"]),
            text(&c["hubspot_company_id"])
        );
    }
    let contacts = stack
        .erpnext
        .list("Contact")
        .into_iter()
        .filter(|c| {
            deal.contact_ids
                .iter()
                .any(|id| c["hubspot_contact_id"].as_str() == Some(id))
        })
        .count();
    println!("   Contacts     {contacts} linked to the Customer");
    println!(
        "   Sales Order  {}  status {}  delivery {}  (hubspot_deal_id {})",
        text(&so["name"]),
        text(&so["status"]),
        text(&so["delivery_date"]),
        text(&so["hubspot_deal_id"])
    );
    for item in so["items"].as_array().into_iter().flatten() {
        println!(
            "      {:<12} {:>5} × {:>8.2} = {:>9.2}",
            text(&item["item_code"]),
            item["qty"].as_f64().unwrap_or(0.0),
            item["rate"].as_f64().unwrap_or(0.0),
            item["amount"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "      {:<12} {:>27.2}",
        "net total",
        so["net_total"].as_f64().unwrap_or(0.0)
    );
    println!(
        "      {:<12} {:>27.2}  ({})",
        "taxes",
        so["total_taxes_and_charges"].as_f64().unwrap_or(0.0),
        text(&so["taxes_and_charges"])
    );
    println!(
        "      {:<12} {:>27.2}  {}",
        "grand total",
        so["grand_total"].as_f64().unwrap_or(0.0),
        text(&so["currency"])
    );

    let so_name = text(&so["name"]);
    wait_for("the Sales Order on the HubSpot deal", || {
        stack
            .deal_property(&deal.deal_id, "erpnext_sales_order")
            .filter(|v| *v == so_name)
    })
    .await?;
    wait_for("the Customer ID on the HubSpot company", || {
        stack.company_property(&deal.company_id, "erpnext_customer_id")
    })
    .await?;
    step(5, "Written back to HubSpot");
    println!(
        "   company.erpnext_customer_id    = {}",
        stack
            .company_property(&deal.company_id, "erpnext_customer_id")
            .unwrap_or_default()
    );
    for p in [
        "erpnext_sales_order",
        "erpnext_sales_order_url",
        "erpnext_sync_status",
    ] {
        println!(
            "   deal.{p:<26}= {}",
            stack.deal_property(&deal.deal_id, p).unwrap_or_default()
        );
    }

    step(6, "Finance invoices the order in ERPNext");
    let invoice = stack
        .erpnext
        .invoice_sales_order(&so_name)
        .map_err(|e| anyhow::anyhow!("invoicing: {e:?}"))?;
    let status = wait_for("invoice_status Unpaid on the deal", || {
        stack
            .deal_property(&deal.deal_id, "invoice_status")
            .filter(|v| v == "unpaid")
    })
    .await?;
    println!(
        "   Sales Invoice {invoice} submitted → deal.invoice_status = {}",
        label(&status)
    );

    step(7, "The customer pays; the payment is entered in ERPNext");
    let payment = stack
        .erpnext
        .pay_invoice(&invoice, None)
        .map_err(|e| anyhow::anyhow!("paying: {e:?}"))?;
    let status = wait_for("invoice_status Paid on the deal", || {
        stack
            .deal_property(&deal.deal_id, "invoice_status")
            .filter(|v| v == "paid")
    })
    .await?;
    println!(
        "   Payment Entry {payment} → deal.invoice_status = \x1b[1m{}\x1b[0m",
        label(&status)
    );
    println!(
        "\n✔ One won deal: one Customer, {contacts} Contacts, one Sales Order, and the paid invoice on the deal."
    );
    Ok(())
}

/// `paid` → `Paid (paid)`: the label HubSpot shows, and the stored enumeration value.
fn label(value: &str) -> String {
    shared::mapping::INVOICE_STATUSES
        .iter()
        .find(|(_, v, _)| *v == value)
        .map_or_else(|| value.to_string(), |(_, v, l)| format!("{l} ({v})"))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
