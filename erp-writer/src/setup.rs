//! `erp-writer setup`: make an ERPNext site ready for lead2ledger, idempotently (DESIGN §8).
//!
//! Creates what is missing, corrects what differs, leaves what is right alone, and says which,
//! per object: `created`, `updated: field, field`, or `unchanged`.
//! - First the site's time zone (System Settings): `erpnext.time_zone` must name the zone ERPNext
//!   stamps `modified` in, or every ordering decision is hours off; a mismatch is refused
//!   before anything is written (`shared::erpnext::site_check`).
//! - Custom Fields: `Customer.hubspot_company_id` (unique), `Contact.hubspot_contact_id`
//!   (unique), `Address.hubspot_address_key` (unique, `<company>:<address type>`),
//!   `Sales Order.hubspot_deal_id` (on every revision; copied onto the Sales Invoice by
//!   ERPNext's order → invoice mapping because the Invoice has a field of the same name),
//!   `Sales Order.hubspot_deal_key` (unique, not copied into amendments: the creation guard),
//!   `Sales Invoice.hubspot_deal_id`, and `hubspot_modified_at` on Customer, Contact, Address
//!   and Sales Order (the HubSpot version each was written from).
//! - Webhooks: Sales Invoice `on_submit`, `on_change` (the Paid transition: `on_update_after_submit`
//!   never fires in Frappe 15), `on_cancel`, Customer `after_insert`, and Sales Order `on_cancel`
//!   and `after_insert` of an amendment, each posting to
//!   `<target>/webhooks/erpnext/<DocType>/<event>` (Frappe sends no event name, so it is in the
//!   URL and in the body), JSON with a body template, an explicit `Content-Type:
//!   application/json` header (Frappe sends none otherwise), and HMAC security with the shared
//!   secret. Their names are ours (`lead2ledger-…`): a Webhook's name is prompted, and Frappe
//!   refuses one inserted without it (`live-findings/webhook_create_without_name.json`).
//!
//! Every field setup sets is owned: on each run it is compared with what ERPNext holds, and what
//! differs is written back (only that). The documents are lead2ledger's, so a hand edit of one of
//! those fields (a header row added, the URL changed, the webhook disabled) is drift and is
//! undone. Fields setup never sets (a webhook's queue, a custom field's description) are left
//! alone. Two fields Frappe will not change in place (`webhook_doctype` and `webhook_docevent` are
//! set-only-once) are corrected by deleting the Webhook and creating it again.
//!
//! The webhook secret: a Password field, which Frappe stores encrypted and shows on every read as
//! `*` repeated to its length, so a GET cannot tell an old secret from a new one of the same
//! length (that is how a rotation used to go unnoticed). Setup asks for it in clear with
//! `frappe.client.get_password`, which Frappe allows a System Manager, the role that may write
//! Webhooks at all, so whoever can run setup can read it. Comparing the secret itself is the only
//! check that also catches a secret changed by hand in the desk; a fingerprint we kept beside it
//! would still say "unchanged" then, and writing it on every run would make a second run change
//! something. If the secret cannot be read back (a role that may write Webhooks without being
//! System Manager, no secret stored), setup writes it and says so. The secret read back is held
//! only for the comparison and never printed or logged.

use std::fmt::Write as _;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value, json};
use shared::config::{Problem, Settings};
use shared::erpnext::site_check;
use shared::erpnext::{Doc, ErpNextClient, ErpNextError, ErrorClass, ListQuery};
use url::Url;

pub const CUSTOM_FIELD: &str = "Custom Field";
pub const WEBHOOK: &str = "Webhook";
/// Frappe's whitelisted read of a Password field, System Manager only.
pub const GET_PASSWORD: &str = "frappe.client.get_password";

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what}: {source}")]
    Erp {
        what: String,
        #[source]
        source: ErpNextError,
    },
    #[error("{0}")]
    Config(String),
    /// `erpnext.time_zone` is not the site's; nothing was written.
    #[error("{0}; nothing was changed")]
    TimeZone(Problem),
}

/// What setup did to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Unchanged => "unchanged",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub doctype: &'static str,
    pub name: String,
    pub action: Action,
    /// The fields written, for `Updated` (`webhook_docevent (re-created)` when the document had
    /// to be replaced).
    pub changed: Vec<String>,
}

impl Row {
    /// `created`, `updated: request_url, enabled`, `unchanged`.
    pub fn result(&self) -> String {
        match self.action {
            Action::Updated if !self.changed.is_empty() => {
                format!("updated: {}", self.changed.join(", "))
            }
            a => a.as_str().to_string(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetupReport {
    pub rows: Vec<Row>,
}

impl SetupReport {
    pub fn count(&self, action: Action) -> usize {
        self.rows.iter().filter(|r| r.action == action).count()
    }

    /// True when the run changed nothing.
    pub fn unchanged(&self) -> bool {
        self.count(Action::Unchanged) == self.rows.len()
    }

    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }
}

impl std::fmt::Display for SetupReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w0 = self
            .rows
            .iter()
            .map(|r| r.doctype.len())
            .max()
            .unwrap_or(0)
            .max(8);
        let w1 = self
            .rows
            .iter()
            .map(|r| r.name.len())
            .max()
            .unwrap_or(0)
            .max(4);
        let mut out = String::new();
        let _ = writeln!(out, "{:<w0$}  {:<w1$}  result", "doctype", "name");
        for r in &self.rows {
            let _ = writeln!(out, "{:<w0$}  {:<w1$}  {}", r.doctype, r.name, r.result());
        }
        let _ = write!(
            out,
            "{} created, {} updated, {} unchanged",
            self.count(Action::Created),
            self.count(Action::Updated),
            self.count(Action::Unchanged)
        );
        f.write_str(&out)
    }
}

/// One Custom Field lead2ledger needs.
#[derive(Debug, Clone)]
pub struct CustomFieldSpec {
    pub dt: &'static str,
    pub fieldname: &'static str,
    pub label: &'static str,
    pub unique: bool,
    pub insert_after: &'static str,
    /// Not copied into a new document made from this one (duplicate, amendment).
    pub no_copy: bool,
}

pub const CUSTOM_FIELDS: &[CustomFieldSpec] = &[
    CustomFieldSpec {
        dt: "Customer",
        fieldname: "hubspot_company_id",
        label: "HubSpot Company ID",
        unique: true,
        insert_after: "customer_name",
        no_copy: false,
    },
    // Unique, so a second Contact of one HubSpot contact is refused whoever inserts it, however
    // late the insert commits (on a site with such twins already, setup stops here with
    // ERPNext's `NonUniqueError`: merge them, then run setup again). Not copied: a Contact
    // duplicated in the desk would be refused otherwise.
    CustomFieldSpec {
        dt: "Contact",
        fieldname: "hubspot_contact_id",
        label: "HubSpot Contact ID",
        unique: true,
        insert_after: "last_name",
        no_copy: true,
    },
    // `<hubspot_company_id>:<address_type>`: the company's Address of that type, unique.
    CustomFieldSpec {
        dt: "Address",
        fieldname: "hubspot_address_key",
        label: "HubSpot Address Key",
        unique: true,
        insert_after: "address_type",
        no_copy: true,
    },
    // Every revision of a deal's order carries its ID (ERPNext copies it into an amendment);
    // only the order lead2ledger creates carries the unique, never-copied key, which keeps two
    // writers from both creating one and still lets a human amend a cancelled order.
    CustomFieldSpec {
        dt: "Sales Order",
        fieldname: "hubspot_deal_id",
        label: "HubSpot Deal ID",
        unique: false,
        insert_after: "customer",
        no_copy: false,
    },
    CustomFieldSpec {
        dt: "Sales Order",
        fieldname: "hubspot_deal_key",
        label: "HubSpot Deal Key",
        unique: true,
        insert_after: "hubspot_deal_id",
        no_copy: true,
    },
    // The HubSpot version each record was written from (`site::SOURCE_VERSION`): newer-wins
    // compares HubSpot time with HubSpot time. Not copied: a duplicate or an amendment is a
    // person's document.
    version_field("Customer", "hubspot_company_id"),
    version_field("Contact", "hubspot_contact_id"),
    version_field("Address", "hubspot_address_key"),
    version_field("Sales Order", "hubspot_deal_key"),
    CustomFieldSpec {
        dt: "Sales Invoice",
        fieldname: "hubspot_deal_id",
        label: "HubSpot Deal ID",
        unique: false,
        insert_after: "customer",
        no_copy: false,
    },
];

const fn version_field(dt: &'static str, insert_after: &'static str) -> CustomFieldSpec {
    CustomFieldSpec {
        dt,
        fieldname: crate::site::SOURCE_VERSION,
        label: "HubSpot Modified At",
        unique: false,
        insert_after,
        no_copy: true,
    }
}

impl CustomFieldSpec {
    /// Every field setup owns on the Custom Field document (`dt` and `fieldname` are its
    /// identity). A unique field already has an index; a non-unique one is looked up by value,
    /// so it gets one.
    pub fn owned(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("label".into(), json!(self.label));
        m.insert("fieldtype".into(), json!("Data"));
        m.insert("unique".into(), json!(i32::from(self.unique)));
        m.insert("insert_after".into(), json!(self.insert_after));
        m.insert("in_standard_filter".into(), json!(1));
        m.insert("search_index".into(), json!(i32::from(!self.unique)));
        m.insert("no_copy".into(), json!(i32::from(self.no_copy)));
        m.insert("translatable".into(), json!(0));
        m
    }
}

/// One Webhook lead2ledger needs.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub doctype: &'static str,
    pub event: &'static str,
    /// Frappe's condition (Python on `doc`): only matching documents are sent.
    pub condition: Option<&'static str>,
}

pub const WEBHOOKS: &[WebhookSpec] = &[
    WebhookSpec {
        doctype: "Sales Invoice",
        event: "on_submit",
        condition: None,
    },
    WebhookSpec {
        doctype: "Sales Invoice",
        event: "on_change",
        condition: None,
    },
    WebhookSpec {
        doctype: "Sales Invoice",
        event: "on_cancel",
        condition: None,
    },
    WebhookSpec {
        doctype: "Customer",
        event: "after_insert",
        condition: None,
    },
    // A cancelled order, and the amendment that replaces it: the deal must follow.
    WebhookSpec {
        doctype: "Sales Order",
        event: "on_cancel",
        condition: None,
    },
    WebhookSpec {
        doctype: "Sales Order",
        event: "after_insert",
        condition: Some("doc.amended_from"),
    },
];

impl WebhookSpec {
    /// `lead2ledger-sales-invoice-on-submit`: Webhook names are prompted, so we choose them.
    pub fn name(&self) -> String {
        format!("lead2ledger-{}-{}", slug(self.doctype), slug(self.event))
    }

    /// `<target>/webhooks/erpnext/<DocType>/<event>`, the doctype percent-encoded.
    pub fn url(&self, target: &Url) -> String {
        let mut url = target.clone();
        if let Ok(mut seg) = url.path_segments_mut() {
            seg.pop_if_empty()
                .extend(["webhooks", "erpnext", self.doctype, self.event]);
        }
        url.to_string()
    }

    /// The Jinja body template, modelled on the captured ones (`contracts/erpnext/webhooks/
    /// webhook_create_*.json`) plus `hubspot_deal_id`, which lets the mapper find the deal
    /// without reading the Sales Order.
    pub fn body_template(&self) -> String {
        let mut fields: Vec<(&str, String)> = vec![
            ("event", format!("\"{}\"", self.event)),
            ("doctype", "\"{{ doc.doctype }}\"".into()),
            ("name", "{{ doc.name | tojson }}".into()),
        ];
        match self.doctype {
            "Sales Invoice" => fields.extend([
                ("docstatus", "{{ doc.docstatus }}".to_string()),
                ("status", "{{ doc.status | tojson }}".into()),
                ("customer", "{{ doc.customer | tojson }}".into()),
                ("currency", "{{ doc.currency | tojson }}".into()),
                ("grand_total", "{{ doc.grand_total }}".into()),
                ("outstanding_amount", "{{ doc.outstanding_amount }}".into()),
                ("hubspot_deal_id", "{{ doc.hubspot_deal_id | tojson }}".into()),
                (
                    "sales_orders",
                    "{{ doc[\"items\"] | map(attribute=\"sales_order\") | unique | list | tojson }}".into(),
                ),
            ]),
            "Sales Order" => fields.extend([
                ("docstatus", "{{ doc.docstatus }}".to_string()),
                ("status", "{{ doc.status | tojson }}".into()),
                ("hubspot_deal_id", "{{ doc.hubspot_deal_id | tojson }}".into()),
                ("amended_from", "{{ doc.amended_from | tojson }}".into()),
            ]),
            _ => fields.extend([
                ("customer_name", "{{ doc.customer_name | tojson }}".to_string()),
                ("hubspot_company_id", "{{ doc.hubspot_company_id | tojson }}".into()),
            ]),
        }
        fields.push(("modified", "{{ doc.modified | tojson }}".into()));
        let body: Vec<String> = fields
            .iter()
            .map(|(k, v)| format!("  \"{k}\": {v}"))
            .collect();
        format!("{{\n{}\n}}", body.join(",\n"))
    }

    /// Every field setup owns on the Webhook, the secret aside (see the module doc).
    pub fn owned(&self, target: &Url) -> Vec<(&'static str, Value)> {
        vec![
            ("webhook_doctype", json!(self.doctype)),
            ("webhook_docevent", json!(self.event)),
            ("enabled", json!(1)),
            (
                "condition",
                self.condition.map_or(Value::Null, |c| json!(c)),
            ),
            ("request_url", json!(self.url(target))),
            ("is_dynamic_url", json!(0)),
            ("request_method", json!("POST")),
            ("request_structure", json!("JSON")),
            ("webhook_json", json!(self.body_template())),
            ("timeout", json!(5)),
            ("enable_security", json!(1)),
            (
                "webhook_headers",
                json!([{"key": "Content-Type", "value": "application/json"}]),
            ),
            ("webhook_data", json!([])),
        ]
    }
}

/// Fields Frappe sets once, at insert (`set_only_once`); a difference means re-creating.
const SET_ONLY_ONCE: &[&str] = &["webhook_doctype", "webhook_docevent"];

fn slug(s: &str) -> String {
    s.to_lowercase().replace([' ', '_'], "-")
}

/// Where ERPNext's webhooks go: `erpnext.webhook_target`, else `ingest.public_url`.
pub fn webhook_target(settings: &Settings) -> Url {
    settings
        .erpnext
        .webhook_target
        .clone()
        .unwrap_or_else(|| settings.ingest.public_url.clone())
}

/// Check the site's time zone, then create or correct every Custom Field and Webhook; see the
/// module doc.
pub async fn setup(client: &ErpNextClient, settings: &Settings) -> Result<SetupReport, SetupError> {
    let secret = settings
        .erpnext
        .webhook_secret
        .as_ref()
        .map(|s| s.expose_secret().to_string())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            SetupError::Config(
                "erpnext.webhook_secret is not set (L2L_ERPNEXT__WEBHOOK_SECRET or _FILE); ingest verifies ERPNext webhooks with it"
                    .into(),
            )
        })?;
    let secret = SecretString::from(secret);
    let site_zone = site_check::site_time_zone(client)
        .await
        .map_err(|source| SetupError::Erp {
            what: "reading the site's time zone (System Settings)".into(),
            source,
        })?;
    if let Some(problem) = site_check::time_zone_problem(&settings.erpnext.time_zone, &site_zone) {
        return Err(SetupError::TimeZone(problem));
    }
    let target = webhook_target(settings);
    let mut report = SetupReport::default();
    for spec in CUSTOM_FIELDS {
        report.rows.push(ensure_custom_field(client, spec).await?);
    }
    for spec in WEBHOOKS {
        report
            .rows
            .push(ensure_webhook(client, spec, &target, &secret).await?);
    }
    for row in &report.rows {
        tracing::info!(doctype = row.doctype, name = %row.name, result = %row.result(), "setup");
    }
    Ok(report)
}

/// The owned fields of `existing` that differ from `want` (by name, so a report lists them
/// alphabetically).
fn differing(existing: &Doc, want: &Map<String, Value>) -> Map<String, Value> {
    want.iter()
        .filter(|(k, v)| !crate::diff::same(existing.get(k), v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

async fn ensure_custom_field(
    client: &ErpNextClient,
    spec: &CustomFieldSpec,
) -> Result<Row, SetupError> {
    let what = format!("Custom Field {}.{}", spec.dt, spec.fieldname);
    let err = |source| SetupError::Erp {
        what: what.clone(),
        source,
    };
    let want = spec.owned();
    let mut fields: Vec<&str> = vec!["name"];
    fields.extend(want.keys().map(String::as_str));
    let query = ListQuery::new()
        .filter("dt", "=", spec.dt)
        .filter("fieldname", "=", spec.fieldname)
        .fields(&fields)
        .limit(1);
    let existing = client
        .list(CUSTOM_FIELD, &query)
        .await
        .map_err(err)?
        .into_iter()
        .next();
    let row = |name: String, action, changed: Vec<String>| Row {
        doctype: CUSTOM_FIELD,
        name,
        action,
        changed,
    };
    match existing {
        None => {
            let mut doc = want.clone();
            doc.insert("dt".into(), json!(spec.dt));
            doc.insert("fieldname".into(), json!(spec.fieldname));
            let created = client
                .insert(CUSTOM_FIELD, &Value::Object(doc))
                .await
                .map_err(err)?;
            Ok(row(created.name().to_string(), Action::Created, Vec::new()))
        }
        Some(doc) => {
            let changes = differing(&doc, &want);
            if changes.is_empty() {
                return Ok(row(doc.name().to_string(), Action::Unchanged, Vec::new()));
            }
            let changed = changes.keys().cloned().collect();
            client
                .update(CUSTOM_FIELD, doc.name(), &Value::Object(changes))
                .await
                .map_err(err)?;
            Ok(row(doc.name().to_string(), Action::Updated, changed))
        }
    }
}

/// The full document to insert.
fn webhook_doc(spec: &WebhookSpec, target: &Url, secret: &SecretString) -> Value {
    let mut doc = Map::new();
    doc.insert("name".into(), json!(spec.name()));
    for (k, v) in spec.owned(target) {
        doc.insert(k.into(), v);
    }
    doc.insert("webhook_secret".into(), json!(secret.expose_secret()));
    Value::Object(doc)
}

/// Owned fields of an existing Webhook that differ from `owned`; tables compared as sets of
/// rows by their meaningful fields (Frappe adds `name`, `idx`, `parent`… to each row).
fn webhook_differences(existing: &Doc, owned: &[(&'static str, Value)]) -> Map<String, Value> {
    let mut out = Map::new();
    for (field, want) in owned {
        let same = match want {
            Value::Array(rows) => {
                let key_fields: &[&str] = match *field {
                    "webhook_headers" => &["key", "value"],
                    _ => &["fieldname", "key"],
                };
                let norm = |rows: Vec<Vec<String>>| {
                    let mut rows = rows;
                    rows.sort();
                    rows
                };
                let have = norm(
                    existing
                        .table(field)
                        .iter()
                        .map(|r| {
                            key_fields
                                .iter()
                                .map(|k| r.str(k).unwrap_or_default().trim().to_string())
                                .collect()
                        })
                        .collect(),
                );
                let wanted = norm(
                    rows.iter()
                        .map(|r| {
                            key_fields
                                .iter()
                                .map(|k| r[*k].as_str().unwrap_or_default().trim().to_string())
                                .collect()
                        })
                        .collect(),
                );
                have == wanted
            }
            v => crate::diff::same(existing.get(field), v),
        };
        if !same {
            out.insert((*field).to_string(), want.clone());
        }
    }
    out
}

/// Whether ERPNext holds `secret` for the Webhook `name`.
enum StoredSecret {
    Same,
    Differs,
    /// `frappe.client.get_password` refused (no System Manager role, nothing stored): write it.
    Unreadable,
}

async fn stored_secret(
    client: &ErpNextClient,
    name: &str,
    secret: &SecretString,
) -> Result<StoredSecret, ErpNextError> {
    let args = json!({"doctype": WEBHOOK, "name": name, "fieldname": "webhook_secret"});
    match client.call(GET_PASSWORD, &args).await {
        Ok(Value::String(stored)) => {
            let stored = SecretString::from(stored);
            // Not constant-time, and need not be: both sides are already in this process and
            // nobody outside can time the comparison.
            Ok(if stored.expose_secret() == secret.expose_secret() {
                StoredSecret::Same
            } else {
                StoredSecret::Differs
            })
        }
        Ok(_) => Ok(StoredSecret::Unreadable),
        Err(e) if matches!(e.class(), ErrorClass::Permanent | ErrorClass::Configuration) => {
            Ok(StoredSecret::Unreadable)
        }
        Err(e) => Err(e),
    }
}

async fn ensure_webhook(
    client: &ErpNextClient,
    spec: &WebhookSpec,
    target: &Url,
    secret: &SecretString,
) -> Result<Row, SetupError> {
    let name = spec.name();
    let what = format!("Webhook {name}");
    let err = |source| SetupError::Erp {
        what: what.clone(),
        source,
    };
    let row = |action, changed: Vec<String>| Row {
        doctype: WEBHOOK,
        name: name.clone(),
        action,
        changed,
    };
    let Some(existing) = client.get(WEBHOOK, &name).await.map_err(err)? else {
        client
            .insert(WEBHOOK, &webhook_doc(spec, target, secret))
            .await
            .map_err(err)?;
        return Ok(row(Action::Created, Vec::new()));
    };
    let owned = spec.owned(target);
    let mut changes = webhook_differences(&existing, &owned);
    if let Some(fixed) = SET_ONLY_ONCE.iter().find(|f| changes.contains_key(**f)) {
        // Frappe refuses to change these in place: replace the document. The insert also
        // clears Frappe's cached webhook list, so the deleted one stops firing.
        let mut changed: Vec<String> = changes.keys().cloned().collect();
        changed.push(format!("re-created ({fixed} is set only once)"));
        client.delete(WEBHOOK, &name).await.map_err(err)?;
        client
            .insert(WEBHOOK, &webhook_doc(spec, target, secret))
            .await
            .map_err(err)?;
        return Ok(row(Action::Updated, changed));
    }
    let mut changed: Vec<String> = changes.keys().cloned().collect();
    let secret_note = match stored_secret(client, &name, secret).await.map_err(err)? {
        StoredSecret::Same => None,
        StoredSecret::Differs => Some("webhook_secret"),
        StoredSecret::Unreadable => Some("webhook_secret (written: it cannot be read back)"),
    };
    if let Some(note) = secret_note {
        changed.push(note.into());
        changes.insert("webhook_secret".into(), json!(secret.expose_secret()));
    }
    if changes.is_empty() {
        return Ok(row(Action::Unchanged, Vec::new()));
    }
    client
        .update(WEBHOOK, &name, &Value::Object(changes))
        .await
        .map_err(err)?;
    Ok(row(Action::Updated, changed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_put_doctype_and_event_in_the_path() {
        let target = Url::parse("https://hooks.example.com/l2l/").expect("url");
        assert_eq!(
            WEBHOOKS[0].url(&target),
            "https://hooks.example.com/l2l/webhooks/erpnext/Sales%20Invoice/on_submit"
        );
        assert_eq!(WEBHOOKS[0].name(), "lead2ledger-sales-invoice-on-submit");
        assert_eq!(WEBHOOKS[3].name(), "lead2ledger-customer-after-insert");
    }

    /// The template must render to the captured delivery's shape: compare its keys with the
    /// captured `on_submit` body, plus the field we add.
    #[test]
    fn templates_carry_the_captured_fields_and_the_deal_id() {
        let path =
            shared::contracts::path("erpnext/webhooks/webhook_create_sales_invoice_on_submit.json");
        let captured: Value =
            serde_json::from_str(&std::fs::read_to_string(path).expect("contract")).expect("json");
        let captured_template = captured["request"]["body"]["webhook_json"]
            .as_str()
            .expect("template");
        let ours = WEBHOOKS[0].body_template();
        for line in captured_template
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with('"'))
        {
            assert!(
                ours.contains(line.trim_end_matches(',')),
                "missing {line} in\n{ours}"
            );
        }
        assert!(
            ours.contains("\"hubspot_deal_id\": {{ doc.hubspot_deal_id | tojson }}"),
            "{ours}"
        );
        let customer = WEBHOOKS[3].body_template();
        assert!(customer.contains("\"event\": \"after_insert\""));
        assert!(customer.contains("hubspot_company_id"));
    }

    #[test]
    fn report_prints_one_line_per_object_with_what_changed() {
        let report = SetupReport {
            rows: vec![
                Row {
                    doctype: CUSTOM_FIELD,
                    name: "Customer-hubspot_company_id".into(),
                    action: Action::Created,
                    changed: Vec::new(),
                },
                Row {
                    doctype: WEBHOOK,
                    name: "lead2ledger-sales-invoice-on-change".into(),
                    action: Action::Updated,
                    changed: vec!["request_url".into(), "webhook_secret".into()],
                },
                Row {
                    doctype: WEBHOOK,
                    name: "lead2ledger-customer-after-insert".into(),
                    action: Action::Unchanged,
                    changed: Vec::new(),
                },
            ],
        };
        let text = report.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[1].starts_with("Custom Field  Customer-hubspot_company_id")
                && lines[1].ends_with("  created"),
            "{text}"
        );
        assert!(
            lines[2].ends_with("  updated: request_url, webhook_secret"),
            "{text}"
        );
        assert!(lines[3].ends_with("  unchanged"), "{text}");
        assert!(
            text.ends_with("1 created, 1 updated, 1 unchanged"),
            "{text}"
        );
        assert!(!report.unchanged());
    }

    /// Frappe refuses a Webhook inserted without a name (the capture); ours always has one.
    #[test]
    fn webhook_docs_carry_their_name_as_frappe_requires() {
        let captured =
            shared::contracts::json("erpnext/live-findings/webhook_create_without_name.json");
        assert!(captured["request"]["body"].get("name").is_none());
        assert_eq!(captured["response"]["status"], 417);
        let target = Url::parse("http://ingest.test/").expect("url");
        let secret = SecretString::from("s".to_string());
        for spec in WEBHOOKS {
            let doc = webhook_doc(spec, &target, &secret);
            assert_eq!(doc["name"], spec.name().as_str());
        }
    }

    #[test]
    fn header_rows_compare_by_key_and_value_only() {
        let target = Url::parse("http://ingest.test/").expect("url");
        let spec = &WEBHOOKS[0];
        let mut doc = match webhook_doc(spec, &target, &SecretString::from("s".to_string())) {
            Value::Object(m) => m,
            _ => unreachable!(),
        };
        doc.insert(
            "webhook_headers".into(),
            json!([{"name": "abc", "idx": 1, "key": "Content-Type", "value": "application/json", "parent": "x"}]),
        );
        doc.insert("condition".into(), json!(""));
        let existing = Doc(doc.clone());
        assert!(webhook_differences(&existing, &spec.owned(&target)).is_empty());
        doc.insert(
            "webhook_headers".into(),
            json!([{"key": "Content-Type", "value": "application/json"}, {"key": "X-Extra", "value": "1"}]),
        );
        let drifted = Doc(doc);
        let diff = webhook_differences(&drifted, &spec.owned(&target));
        assert_eq!(diff.keys().collect::<Vec<_>>(), ["webhook_headers"]);
    }
}
