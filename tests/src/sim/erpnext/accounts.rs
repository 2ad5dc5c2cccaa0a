//! Receivable accounts and currencies, as ERPNext checks them (`erpnext/accounts/party.py`,
//! `AccountsController.validate_currency`/`validate_party_account_currency`,
//! `TransactionBase.validate_currency_for_receivable_payable_and_advance_account`).
//!
//! A customer's receivable account for a company is the one on its `accounts` table, else the
//! company's default (`Debtors - ATL`, USD). An invoice is refused when that account's currency
//! differs from the invoice's and the customer has no ledger entries yet
//! (`live-findings/sales_invoice_insert_eur_party_account_currency.json`); an order in a
//! foreign currency is accepted at the Currency Exchange rate
//! (`live-findings/sales_order_create_eur_customer_without_eur_account.json`). A customer
//! billed in EUR therefore needs a EUR receivable account on its `accounts` table, and a
//! billing currency (`default_currency`) equal to it.
//!
//! The simulator keeps no General Ledger: a customer's "ledger currency" is that of the party
//! account of its first submitted invoice or payment, which is where ERPNext's GL entries come
//! from.

use serde_json::{Map, Value};

use super::controllers::{fl, s};
use super::doctypes::str_of;
use super::errors::FrappeError;
use super::state::{Doc, Site};

fn bold(v: &str) -> String {
    format!("<strong>{v}</strong>")
}

pub fn account_currency(site: &Site, account: &str) -> Option<String> {
    site.get("Account", account)
        .and_then(|a| str_of(a, "account_currency"))
}

pub fn company_currency(site: &Site, company: &str) -> String {
    site.get("Company", company)
        .and_then(|c| str_of(c, "default_currency"))
        .unwrap_or_else(|| site.config.currency.clone())
}

/// The company's `default_receivable_account`.
fn default_receivable(site: &Site, company: &str) -> Option<String> {
    site.get("Company", company)
        .and_then(|c| str_of(c, "default_receivable_account"))
}

fn rows<'a>(doc: &'a Doc, table: &str) -> impl Iterator<Item = &'a Map<String, Value>> {
    doc.get(table)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

/// The first ledger entry of a customer in a company: (party account, its currency), from the
/// invoices and payments it has submitted (`cancelled` too when asked, as
/// `get_party_gle_account` does not filter them out).
fn first_ledger_entry(
    site: &Site,
    customer: &str,
    company: &str,
    cancelled: bool,
) -> Option<(String, String)> {
    let is = |d: &Doc, k: &str, v: &str| d.get(k).and_then(Value::as_str) == Some(v);
    let counts = |d: &Doc| {
        let ds = d.get("docstatus").and_then(Value::as_i64).unwrap_or(0);
        ds == 1 || (cancelled && ds == 2)
    };
    let invoices = site
        .all("Sales Invoice")
        .filter(|d| counts(d) && is(d, "customer", customer) && is(d, "company", company))
        .map(|d| (d, "debit_to", "party_account_currency"));
    let payments = site
        .all("Payment Entry")
        .filter(|d| {
            counts(d)
                && is(d, "party_type", "Customer")
                && is(d, "party", customer)
                && is(d, "company", company)
        })
        .map(|d| (d, "paid_from", "paid_from_account_currency"));
    invoices
        .chain(payments)
        .min_by(|a, b| created(a.0).cmp(created(b.0)))
        .map(|(d, account, currency)| (s(d, account), s(d, currency)))
}

fn created(d: &Doc) -> &str {
    d.get("creation").and_then(Value::as_str).unwrap_or("")
}

/// `get_party_gle_currency`.
pub fn ledger_currency(site: &Site, customer: &str, company: &str) -> Option<String> {
    first_ledger_entry(site, customer, company, false).map(|(_, c)| c)
}

/// `get_party_account("Customer", customer, company)`.
pub fn party_account(site: &Site, customer: &str, company: &str) -> Option<String> {
    let own = site.get("Customer", customer).and_then(|c| {
        rows(c, "accounts")
            .find(|r| s(r, "company") == company)
            .and_then(|r| str_of(r, "account"))
    });
    let account = own.or_else(|| default_receivable(site, company));
    if let Some(gle_currency) = ledger_currency(site, customer, company) {
        let matches = account
            .as_deref()
            .and_then(|a| account_currency(site, a))
            .is_some_and(|c| c == gle_currency);
        if !matches {
            return first_ledger_entry(site, customer, company, true)
                .map(|(a, _)| a)
                .or(account);
        }
    }
    account
}

/// `get_party_account_currency`.
pub fn party_account_currency(site: &Site, customer: &str, company: &str) -> Option<String> {
    party_account(site, customer, company).and_then(|a| account_currency(site, &a))
}

/// `erpnext.setup.utils.get_exchange_rate(from, to, date, "for_selling")`: the latest Currency
/// Exchange record on or before the date. A site that cannot reach an exchange-rate API has
/// no other source, so a missing record is 0.
pub fn exchange_rate(site: &Site, from: &str, to: &str, date: &str) -> f64 {
    if from == to {
        return 1.0;
    }
    site.all("Currency Exchange")
        .filter(|r| {
            s(r, "from_currency") == from
                && s(r, "to_currency") == to
                && fl(r, "for_selling") != 0.0
                && s(r, "date").as_str() <= date
        })
        .max_by(|a, b| s(a, "date").cmp(&s(b, "date")))
        .map(|r| fl(r, "exchange_rate"))
        .unwrap_or(0.0)
}

/// `validate_conversion_rate`: no rate for a foreign currency is an error.
pub fn require_rate(
    rate: f64,
    label: &str,
    currency: &str,
    company_currency: &str,
) -> Result<(), FrappeError> {
    if rate != 0.0 {
        return Ok(());
    }
    Err(FrappeError::erpnext_validation(format!(
        "{label} is mandatory. Maybe Currency Exchange record is not created for {currency} to {company_currency}."
    )))
}

/// `AccountsController.validate_currency` (orders and invoices): a customer whose receivable
/// account is in a foreign currency can only trade in that currency.
pub fn validate_currency(site: &Site, doc: &Doc) -> Result<(), FrappeError> {
    let (customer, company, currency) = (s(doc, "customer"), s(doc, "company"), s(doc, "currency"));
    if customer.is_empty() || currency.is_empty() {
        return Ok(());
    }
    let Some(party_currency) = party_account_currency(site, &customer, &company) else {
        return Ok(());
    };
    if party_currency != company_currency(site, &company) && currency != party_currency {
        return Err(FrappeError::erpnext_validation(format!(
            "Accounting Entry for Customer: {customer} can only be made in currency: {party_currency}"
        ))
        .raised_as("erpnext.exceptions.InvalidCurrency"));
    }
    Ok(())
}

/// `AccountsController.validate_party_account_currency` (invoices): the receivable account
/// (`debit_to`) must be in the invoice's currency, unless the customer already has ledger
/// entries or Accounts Settings allows multi-currency invoices on one party account.
pub fn validate_party_account_currency(site: &Site, doc: &Doc) -> Result<(), FrappeError> {
    if s(doc, "is_opening") == "Yes" {
        return Ok(());
    }
    let (customer, company) = (s(doc, "customer"), s(doc, "company"));
    let debit_to = s(doc, "debit_to");
    let account_currency = account_currency(site, &debit_to).unwrap_or_default();
    let allowed = site
        .get("Accounts Settings", "Accounts Settings")
        .is_some_and(|a| {
            fl(
                a,
                "allow_multi_currency_invoices_against_single_party_account",
            ) != 0.0
        });
    if ledger_currency(site, &customer, &company).is_none()
        && account_currency != s(doc, "currency")
        && !allowed
    {
        return Err(FrappeError::erpnext_validation(format!(
            "Party Account {} currency ({account_currency}) and document currency ({}) should be same",
            bold(&debit_to),
            s(doc, "currency")
        )));
    }
    Ok(())
}

/// `Customer.validate`'s account checks: one row per company, rows in the ledger currency,
/// accounts of the row's company, and each account in the billing currency or the company's.
/// Rows naming an account that does not exist are left to the Link check.
pub fn validate_customer_accounts(site: &Site, doc: &Doc) -> Result<(), FrappeError> {
    let name = s(doc, "name");
    let billing = str_of(doc, "default_currency");
    let mut companies: Vec<String> = Vec::new();
    let known: Vec<&Map<String, Value>> = rows(doc, "accounts")
        .filter(|r| site.exists("Account", &s(r, "account")))
        .collect();
    for (i, row) in rows(doc, "accounts").enumerate() {
        let company = s(row, "company");
        if companies.contains(&company) {
            return Err(FrappeError::erpnext_validation(format!(
                "There can only be 1 Account per Company in Customer {name}"
            ))
            .raised_as("erpnext.accounts.party.DuplicatePartyAccountError"));
        }
        companies.push(company.clone());
        if !known.contains(&row) {
            continue;
        }
        let account = s(row, "account");
        let currency = account_currency(site, &account).unwrap_or_default();
        let company_currency = company_currency(site, &company);
        if let Some(gle) = ledger_currency(site, &name, &company)
            && gle != currency
        {
            return Err(FrappeError::erpnext_validation(format!(
                "{} {} has accounting entries in currency {} for company {}. Please select a receivable or payable account with currency {}.",
                bold("Customer"),
                bold(&name),
                bold(&gle),
                bold(&company),
                bold(&gle)
            ))
            .raised_as("erpnext.exceptions.InvalidAccountCurrency"));
        }
        if let Some(billing) = &billing
            && *billing != currency
            && *billing != company_currency
        {
            return Err(FrappeError::erpnext_validation(
                "Billing currency must be equal to either default company's currency or party account currency",
            ));
        }
        let account_company = site
            .get("Account", &account)
            .map(|a| s(a, "company"))
            .unwrap_or_default();
        let idx = row
            .get("idx")
            .and_then(Value::as_i64)
            .unwrap_or(i as i64 + 1);
        if account_company != company {
            return Err(FrappeError::erpnext_validation(format!(
                "Row {idx}:  Account {} does not belong to Company {}",
                bold(&account),
                bold(&company)
            ))
            .titled("Invalid Account"));
        }
    }
    for row in known {
        let account = s(row, "account");
        let currency = account_currency(site, &account).unwrap_or_default();
        let company_currency = company_currency(site, &s(row, "company"));
        if currency != billing.clone().unwrap_or_default() && currency != company_currency {
            return Err(FrappeError::erpnext_validation(format!(
                "Receivable Account: {} ({}) must be in either customer billing currency: {} or Company default currency: {}",
                bold(&account),
                bold(&currency),
                bold(billing.as_deref().unwrap_or("None")),
                bold(&company_currency)
            )));
        }
    }
    Ok(())
}
