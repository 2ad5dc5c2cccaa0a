//! `l2l-demo`: the README's main job. The whole loop on this machine: the HubSpot simulator, an
//! ERPNext (the simulator by default, or the real site `deploy/erpnext.sh` runs, with
//! `--erpnext real`), ingest, mapper, erp-writer and crm-writer on the real RabbitMQ and Redis; a
//! sample deal is won in HubSpot, and the demo shows what appears in ERPNext and what comes back
//! to HubSpot, invoice included. The stack then keeps running for exploring until Ctrl-C.
//!
//! Everything the story reads or does in ERPNext goes through [`Stack::erp`] (Frappe's REST API),
//! so the simulator and a real site tell the same story.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, ValueEnum};
use l2l_tests::stack::erpnext::{ENV_API_KEY, ENV_API_SECRET, ENV_TIME_ZONE, ENV_URL};
use l2l_tests::stack::{DealSpec, ErpTarget, Stack, StackOptions};
use serde_json::Value;
use shared::erpnext::{Doc, ListQuery};

/// Where `deploy/erpnext.sh` writes the real site's credentials.
const DEFAULT_CREDENTIALS: &str = "/var/lib/lead2ledger/erpnext/credentials.env";

#[derive(Parser)]
#[command(
    about = "lead2ledger demo: HubSpot → ERPNext → HubSpot, on the simulators or a real ERPNext"
)]
struct Cli {
    /// Exit after the story instead of keeping the stack up for exploring.
    #[arg(long)]
    no_wait: bool,
    /// Broker and Redis namespace.
    #[arg(long, default_value = "l2l-demo")]
    namespace: String,
    /// Which ERPNext: the simulator, or a real Frappe/ERPNext site (deploy/erpnext.sh builds one).
    #[arg(long, value_enum, default_value_t = Erp::Sim)]
    erpnext: Erp,
    /// With `--erpnext real`: a credentials.env naming the site (L2L_TEST_ERPNEXT_URL, _API_KEY,
    /// _API_SECRET, _TIME_ZONE). Default: those variables from the environment when
    /// L2L_TEST_ERPNEXT_URL is set, else /var/lib/lead2ledger/erpnext/credentials.env.
    #[arg(long, value_name = "FILE")]
    erpnext_credentials: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Erp {
    /// The in-process ERPNext simulator.
    Sim,
    /// A real ERPNext site (persistent; the demo's submitted documents stay on it).
    Real,
}

const LINES: &[(&str, u32, f64)] = &[
    ("SKU-WIDGET", 10, 25.0),
    ("SKU-GADGET", 5, 40.0),
    ("SKU-SERVICE", 3, 150.0),
];

fn step(n: u32, text: impl std::fmt::Display) {
    println!("\n\x1b[1m{n}. {text}\x1b[0m");
}

/// The real site from `--erpnext-credentials`, else from the environment, else from the
/// default credentials file.
fn real_target(cli: &Cli) -> anyhow::Result<(ErpTarget, String)> {
    let from_file = |path: &Path| -> anyhow::Result<(ErpTarget, String)> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the ERPNext credentials {}", path.display()))?;
        let vars = parse_env_file(&text);
        let real = ErpTarget::from_vars(|name| vars.get(name).cloned())
            .with_context(|| format!("in {}", path.display()))?
            .with_context(|| format!("{} does not set {ENV_URL}", path.display()))?;
        Ok((ErpTarget::Real(real), path.display().to_string()))
    };
    if let Some(path) = &cli.erpnext_credentials {
        return from_file(path);
    }
    if let Some(real) = ErpTarget::from_env().context("the ERPNext named by the environment")? {
        return Ok((ErpTarget::Real(real), "the environment".into()));
    }
    let default = Path::new(DEFAULT_CREDENTIALS);
    anyhow::ensure!(
        default.exists(),
        "--erpnext real needs a site: run deploy/erpnext.sh (it builds one and writes \
         {DEFAULT_CREDENTIALS}), pass --erpnext-credentials FILE, or set {ENV_URL}, \
         {ENV_API_KEY}, {ENV_API_SECRET} and {ENV_TIME_ZONE}"
    );
    from_file(default)
}

/// `KEY=VALUE` lines as a shell `source`s them (comments, `export `, simple quotes).
fn parse_env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("export ").unwrap_or(l).split_once('='))
        .map(|(k, v)| {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            (k.trim().to_string(), v.to_string())
        })
        .collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // Keep the story readable: services log warnings and errors only, unless RUST_LOG says more.
    shared::telemetry::init_tracing(&shared::config::TelemetryConfig {
        log_level: "warn".into(),
        ..Default::default()
    });
    let (target, source) = match cli.erpnext {
        Erp::Sim => (ErpTarget::Simulator, String::new()),
        Erp::Real => real_target(&cli)?,
    };
    match &target {
        ErpTarget::Simulator => println!(
            "\x1b[1mlead2ledger demo\x1b[0m — HubSpot ⇄ ERPNext on the simulators, real RabbitMQ and Redis"
        ),
        ErpTarget::Real(real) => {
            println!(
                "\x1b[1mlead2ledger demo\x1b[0m — HubSpot simulator ⇄ the real ERPNext at {}, real RabbitMQ and Redis",
                real.url
            );
            println!(
                "   credentials from {source}; one stack at a time on the site (waits up to 150 s for another)"
            );
        }
    }
    let started = Instant::now();
    let stack = Stack::start(StackOptions {
        namespace: Some(cli.namespace.clone()),
        fast_retries: false,
        services: true,
        submit_orders: true,
        demo_ports: true,
        erpnext: target,
        ..StackOptions::default()
    })
    .await
    .context("starting the stack (is RabbitMQ/Redis up? deploy/services.sh; a real ERPNext? deploy/erpnext.sh status)")?;
    let result = story(&stack, started).await;
    if let Err(e) = &result {
        eprintln!("\ndemo failed: {e:#}");
        report_webhooks(&stack).await;
    } else if !cli.no_wait {
        explore(&stack, &result);
        let _ = tokio::signal::ctrl_c().await;
        println!("\nstopping…");
    }
    if stack.target().is_real() {
        println!(
            "cleaning up what the site lets the demo delete; the submitted Sales Order, invoice and payment (and the Customer they name) stay"
        );
    }
    stack.stop().await?;
    result.map(|_| ())
}

/// What the story made, for the explore hints.
struct Story {
    sales_order: String,
    invoice: String,
}

fn explore(stack: &Stack, story: &anyhow::Result<Story>) {
    println!("\nThe stack keeps running — explore it:");
    println!(
        "  HubSpot simulator  {}  (e.g. GET /_sim/objects/deals)",
        stack.hubspot.base_url()
    );
    match stack.erp_sim() {
        Some(sim) => println!(
            "  ERPNext simulator  {}  (e.g. GET /_sim/docs/Sales Order)",
            sim.base_url()
        ),
        None => {
            let site = stack
                .erp()
                .client()
                .base_url()
                .as_str()
                .trim_end_matches('/');
            println!(
                "  ERPNext            {site}/app  (user Administrator, password in the admin-password file beside the credentials)"
            );
            if let Ok(s) = story {
                println!(
                    "                     {site}/app/sales-order/{}  ·  {site}/app/sales-invoice/{}",
                    s.sales_order, s.invoice
                );
            }
            println!(
                "                     (the site's webhooks point at this demo's ingest until another stack runs setup)"
            );
        }
    }
    println!(
        "  ingest             {}  (/healthz /readyz /metrics)",
        stack.ingest_url
    );
    println!("Press Ctrl-C to stop everything the demo started.");
}

/// On failure: what ERPNext's webhooks did (the usual reason a write-back does not arrive).
async fn report_webhooks(stack: &Stack) {
    if let Some(sim) = stack.erp_sim() {
        for d in sim.webhook_deliveries() {
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
        return;
    }
    // A real site logs every webhook request (success or not) as a Webhook Request Log.
    let query = ListQuery::new()
        .fields(&["name", "webhook", "reference_document", "url", "response"])
        .order_by("creation desc")
        .limit(10);
    match stack
        .erp()
        .client()
        .list("Webhook Request Log", &query)
        .await
    {
        Ok(rows) => {
            eprintln!("  the site's latest webhook requests (newest first):");
            for r in rows {
                let response: String = r
                    .str("response")
                    .unwrap_or("no response")
                    .chars()
                    .take(120)
                    .collect();
                eprintln!(
                    "  {} {} {} → {}: {}",
                    r.name(),
                    r.str("webhook").unwrap_or_default(),
                    r.str("reference_document").unwrap_or_default(),
                    r.str("url").unwrap_or_default(),
                    response
                );
            }
        }
        Err(e) => eprintln!("  (could not list the site's Webhook Request Log: {e})"),
    }
}

/// Poll `check` until it has a value. A read that fails (a real site's hiccup) is retried; the
/// last failure is in the timeout's message.
async fn wait_for<T, F, Fut>(stack: &Stack, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    // A real site books in seconds and sends its webhooks through its RQ worker.
    let (patience, poll) = if stack.target().is_real() {
        (Duration::from_secs(120), Duration::from_millis(300))
    } else {
        (Duration::from_secs(60), Duration::from_millis(100))
    };
    let deadline = Instant::now() + patience;
    let mut last_error = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_error = Some(e),
        }
        if Instant::now() >= deadline {
            let why = last_error.map_or_else(String::new, |e| format!(" (last error: {e:#})"));
            anyhow::bail!("timed out after {patience:?} waiting for {what}{why}");
        }
        tokio::time::sleep(poll).await;
    }
}

/// Wait until the deal's `property` is `value` in HubSpot.
async fn deal_shows(
    stack: &Stack,
    deal_id: &str,
    property: &str,
    value: &str,
) -> anyhow::Result<String> {
    wait_for(stack, &format!("deal.{property} = {value}"), || async {
        Ok(stack
            .deal_property(deal_id, property)
            .filter(|v| v == value))
    })
    .await
}

async fn story(stack: &Stack, started: Instant) -> anyhow::Result<Story> {
    let s = &stack.settings;
    let erp = stack.erp();
    let real = stack.target().is_real();
    let site = erp
        .client()
        .base_url()
        .as_str()
        .trim_end_matches('/')
        .to_string();
    step(1, "Services up");
    println!(
        "   RabbitMQ {}  ·  Redis {}  ·  namespace {}",
        shared::config::redact_url(&s.amqp.url),
        s.redis.url,
        s.amqp.namespace
    );
    println!(
        "   HubSpot simulator {}  ·  ERPNext {} {}  ·  ingest {}",
        stack.hubspot.base_url(),
        if real { "(real)" } else { "simulator" },
        site,
        stack.ingest_url
    );
    // The first webhook would meet a 503 (and HubSpot's retry) while ingest still connects.
    wait_for(stack, "ingest ready (/readyz)", || async {
        let ready = reqwest::get(format!("{}/readyz", stack.ingest_url)).await?;
        Ok(ready.status().is_success().then_some(()))
    })
    .await?;
    if real {
        println!(
            "   erp-writer setup on the site: custom fields checked, its webhooks now point at {}",
            stack.ingest_url
        );
        println!("   crm-writer setup: HubSpot custom properties");
    } else {
        println!("   setup done: ERPNext custom fields and webhooks, HubSpot custom properties");
    }

    step(2, "A sales rep's deal in HubSpot");
    // The real site keeps every run's Customers: the run tag keeps this run's names apart.
    let spec = DealSpec {
        suffix: if real {
            format!(" {}", stack.run_tag())
        } else {
            String::new()
        },
        ..DealSpec::new(1, 3, LINES)
    };
    let deal = stack.seed(&spec)?;
    println!("   company  {}  \"{}\"", deal.company_id, deal.company_name);
    println!("   contacts {}", deal.contact_ids.join(", "));
    println!(
        "   deal     {}  \"Globex expansion 1{}\" — 3 line items, USD 900.00, stage contractsent",
        deal.deal_id, spec.suffix
    );

    step(3, "The deal is moved to Closed Won in HubSpot");
    let won = Instant::now();
    stack.win_deal(&deal.deal_id)?;
    println!("   HubSpot sends a signed webhook → ingest → mapper reads the deal → erp-writer");

    let so = wait_for(stack, "the Sales Order in ERPNext", || async {
        Ok(erp
            .sales_orders_for_deal(&deal.deal_id)
            .await?
            .into_iter()
            .next())
    })
    .await?;
    let so_name = so.name().to_string();
    let customer_name = so.str("customer").unwrap_or_default().to_string();
    step(
        4,
        format_args!(
            "In ERPNext ({:.1} s after the win)",
            won.elapsed().as_secs_f64()
        ),
    );
    if let Some(c) = erp.get("Customer", &customer_name).await? {
        println!(
            "   Customer     {}  (hubspot_company_id {})",
            c.name(),
            c.str("hubspot_company_id").unwrap_or_default()
        );
    }
    let contacts = erp
        .linked_to_customer("Contact", &customer_name)
        .await?
        .iter()
        .filter(|c| {
            deal.contact_ids
                .iter()
                .any(|id| c.str("hubspot_contact_id") == Some(id))
        })
        .count();
    println!("   Contacts     {contacts} linked to the Customer");
    println!(
        "   Sales Order  {}  status {}  date {}  delivery {}  (hubspot_deal_id {})",
        so_name,
        field(&so, "status"),
        field(&so, "transaction_date"),
        field(&so, "delivery_date"),
        field(&so, "hubspot_deal_id")
    );
    for item in so.table("items") {
        println!(
            "      {:<12} {:>5} × {:>8.2} = {:>9.2}",
            field(&item, "item_code"),
            item.f64("qty").unwrap_or(0.0),
            item.f64("rate").unwrap_or(0.0),
            item.f64("amount").unwrap_or(0.0)
        );
    }
    println!(
        "      {:<12} {:>27.2}",
        "net total",
        so.f64("net_total").unwrap_or(0.0)
    );
    println!(
        "      {:<12} {:>27.2}  ({})",
        "taxes",
        so.f64("total_taxes_and_charges").unwrap_or(0.0),
        field(&so, "taxes_and_charges")
    );
    println!(
        "      {:<12} {:>27.2}  {}",
        "grand total",
        so.f64("grand_total").unwrap_or(0.0),
        field(&so, "currency")
    );

    deal_shows(stack, &deal.deal_id, "erpnext_sales_order", &so_name).await?;
    let customer_id = wait_for(stack, "the Customer ID on the HubSpot company", || async {
        Ok(stack.company_property(&deal.company_id, "erpnext_customer_id"))
    })
    .await?;
    step(5, "Written back to HubSpot");
    println!("   company.erpnext_customer_id    = {customer_id}");
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
    let invoice = erp
        .invoice_sales_order(&so_name)
        .await
        .context("invoicing the Sales Order")?;
    let invoice_name = invoice.name().to_string();
    let status = deal_shows(stack, &deal.deal_id, "invoice_status", "unpaid").await?;
    println!(
        "   Sales Invoice {invoice_name} submitted ({} {:.2}, status {}) → deal.invoice_status = {}",
        field(&invoice, "currency"),
        invoice.f64("grand_total").unwrap_or(0.0),
        field(&invoice, "status"),
        label(&status)
    );

    step(7, "The customer pays; the payment is entered in ERPNext");
    let payment = erp
        .pay_invoice(&invoice_name)
        .await
        .context("paying the Sales Invoice")?;
    let status = deal_shows(stack, &deal.deal_id, "invoice_status", "paid").await?;
    let invoice = erp
        .get("Sales Invoice", &invoice_name)
        .await?
        .with_context(|| format!("Sales Invoice {invoice_name} after the payment"))?;
    println!(
        "   Payment Entry {} ({:.2}) → Sales Invoice {invoice_name} status {}, outstanding {:.2}",
        payment.name(),
        payment.f64("paid_amount").unwrap_or(0.0),
        field(&invoice, "status"),
        invoice.f64("outstanding_amount").unwrap_or(0.0)
    );
    println!("   deal.invoice_status = \x1b[1m{}\x1b[0m", label(&status));
    println!(
        "\n✔ One won deal: one Customer, {contacts} Contacts, Sales Order {so_name}, and the paid invoice on the deal \
         ({:.1} s in all, against the {} ERPNext).",
        started.elapsed().as_secs_f64(),
        stack.target().label()
    );
    Ok(Story {
        sales_order: so_name,
        invoice: invoice_name,
    })
}

/// `paid` → `Paid (paid)`: the label HubSpot shows, and the stored enumeration value.
fn label(value: &str) -> String {
    shared::mapping::INVOICE_STATUSES
        .iter()
        .find(|(_, v, _)| *v == value)
        .map_or_else(|| value.to_string(), |(_, v, l)| format!("{l} ({v})"))
}

/// A field as text: strings as they are, numbers printed, missing or null empty.
fn field(doc: &Doc, name: &str) -> String {
    match doc.get(name) {
        Some(Value::String(s)) => s.clone(),
        None | Some(Value::Null) => String::new(),
        Some(other) => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::parse_env_file;

    #[test]
    fn credentials_file_lines() {
        let vars = parse_env_file(
            "# written by deploy/erpnext.sh\nL2L_TEST_ERPNEXT_URL=http://127.0.0.1:8000\n\
             export L2L_TEST_ERPNEXT_API_KEY='abc'\nL2L_TEST_ERPNEXT_API_SECRET=\"s=1\"\n\n",
        );
        assert_eq!(vars["L2L_TEST_ERPNEXT_URL"], "http://127.0.0.1:8000");
        assert_eq!(vars["L2L_TEST_ERPNEXT_API_KEY"], "abc");
        assert_eq!(vars["L2L_TEST_ERPNEXT_API_SECRET"], "s=1");
        assert_eq!(vars.len(), 3);
    }
}
