//! `erp-writer setup`: make an ERPNext site ready for lead2ledger, idempotently (DESIGN §8).
//!
//! Creates what is missing, corrects what differs, leaves what is right alone, and says which:
//! - Custom Fields: `Customer.hubspot_company_id` (unique), `Contact.hubspot_contact_id`,
//!   `Sales Order.hubspot_deal_id` (unique; copied onto the Sales Invoice by ERPNext's
//!   order → invoice mapping because the Invoice has a field of the same name),
//!   `Sales Invoice.hubspot_deal_id`.
//! - Webhooks: Sales Invoice `on_submit`, `on_change` (the Paid transition: `on_update_after_submit`
//!   never fires in Frappe 15), `on_cancel`, and Customer `after_insert`, each posting to
//!   `<target>/webhooks/erpnext/<DocType>/<event>` (Frappe sends no event name, so it is in the
//!   URL and in the body), JSON with a body template, an explicit `Content-Type:
//!   application/json` header (Frappe sends none otherwise), and HMAC security with the shared
//!   secret.
//!
//! A second run finds everything present and changes nothing. The webhook secret cannot be
//! compared (ERPNext masks it on read); it is written whenever a webhook is created or corrected.

use std::fmt::Write as _;

use secrecy::ExposeSecret;
use serde_json::{Value, json};
use shared::config::Settings;
use shared::erpnext::{Doc, ErpNextClient, ErpNextError, ListQuery};
use url::Url;

pub const CUSTOM_FIELD: &str = "Custom Field";
pub const WEBHOOK: &str = "Webhook";

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
}

/// What setup did to one document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Present,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Updated => "updated",
            Action::Present => "already present",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub doctype: &'static str,
    pub name: String,
    pub action: Action,
    /// What differed, for `Updated`.
    pub detail: String,
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
    pub fn all_present(&self) -> bool {
        self.count(Action::Present) == self.rows.len()
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
            let detail = if r.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.detail)
            };
            let _ = writeln!(
                out,
                "{:<w0$}  {:<w1$}  {}{detail}",
                r.doctype,
                r.name,
                r.action.as_str()
            );
        }
        let _ = write!(
            out,
            "{} created, {} updated, {} already present",
            self.count(Action::Created),
            self.count(Action::Updated),
            self.count(Action::Present)
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
}

pub const CUSTOM_FIELDS: &[CustomFieldSpec] = &[
    CustomFieldSpec {
        dt: "Customer",
        fieldname: "hubspot_company_id",
        label: "HubSpot Company ID",
        unique: true,
        insert_after: "customer_name",
    },
    CustomFieldSpec {
        dt: "Contact",
        fieldname: "hubspot_contact_id",
        label: "HubSpot Contact ID",
        unique: false,
        insert_after: "last_name",
    },
    CustomFieldSpec {
        dt: "Sales Order",
        fieldname: "hubspot_deal_id",
        label: "HubSpot Deal ID",
        unique: true,
        insert_after: "customer",
    },
    CustomFieldSpec {
        dt: "Sales Invoice",
        fieldname: "hubspot_deal_id",
        label: "HubSpot Deal ID",
        unique: false,
        insert_after: "customer",
    },
];

/// One Webhook lead2ledger needs.
#[derive(Debug, Clone)]
pub struct WebhookSpec {
    pub doctype: &'static str,
    pub event: &'static str,
}

pub const WEBHOOKS: &[WebhookSpec] = &[
    WebhookSpec {
        doctype: "Sales Invoice",
        event: "on_submit",
    },
    WebhookSpec {
        doctype: "Sales Invoice",
        event: "on_change",
    },
    WebhookSpec {
        doctype: "Sales Invoice",
        event: "on_cancel",
    },
    WebhookSpec {
        doctype: "Customer",
        event: "after_insert",
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
}

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

/// Create or correct every Custom Field and Webhook; see the module doc.
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
    Ok(report)
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
    let query = ListQuery::new()
        .filter("dt", "=", spec.dt)
        .filter("fieldname", "=", spec.fieldname)
        .fields(&["name", "fieldtype", "unique"])
        .limit(1);
    let existing = client
        .list(CUSTOM_FIELD, &query)
        .await
        .map_err(err)?
        .into_iter()
        .next();
    let row = |name: String, action, detail: String| Row {
        doctype: CUSTOM_FIELD,
        name,
        action,
        detail,
    };
    match existing {
        None => {
            let doc = client
                .insert(
                    CUSTOM_FIELD,
                    &json!({
                        "dt": spec.dt,
                        "fieldname": spec.fieldname,
                        "label": spec.label,
                        "fieldtype": "Data",
                        "unique": i32::from(spec.unique),
                        "insert_after": spec.insert_after,
                        "in_standard_filter": 1,
                        "search_index": i32::from(!spec.unique),
                        "no_copy": 0,
                        "translatable": 0,
                    }),
                )
                .await
                .map_err(err)?;
            Ok(row(doc.name().to_string(), Action::Created, String::new()))
        }
        Some(doc) => {
            let mut changes = serde_json::Map::new();
            if doc.str("fieldtype").is_some_and(|t| t != "Data") {
                changes.insert("fieldtype".into(), json!("Data"));
            }
            if spec.unique && doc.i64("unique") != Some(1) {
                changes.insert("unique".into(), json!(1));
            }
            if changes.is_empty() {
                return Ok(row(doc.name().to_string(), Action::Present, String::new()));
            }
            let detail = changes.keys().cloned().collect::<Vec<_>>().join(", ");
            client
                .update(CUSTOM_FIELD, doc.name(), &Value::Object(changes))
                .await
                .map_err(err)?;
            Ok(row(doc.name().to_string(), Action::Updated, detail))
        }
    }
}

fn webhook_doc(spec: &WebhookSpec, target: &Url, secret: &str) -> Value {
    json!({
        "name": spec.name(),
        "webhook_doctype": spec.doctype,
        "webhook_docevent": spec.event,
        "enabled": 1,
        "request_url": spec.url(target),
        "request_method": "POST",
        "request_structure": "JSON",
        "webhook_json": spec.body_template(),
        "webhook_headers": [{"key": "Content-Type", "value": "application/json"}],
        "timeout": 5,
        "enable_security": 1,
        "webhook_secret": secret,
    })
}

/// Fields of an existing Webhook that differ from what we want (the secret is masked on read).
fn webhook_differences(existing: &Doc, want: &Value) -> Vec<&'static str> {
    let mut out = Vec::new();
    for field in [
        "webhook_doctype",
        "webhook_docevent",
        "enabled",
        "request_url",
        "request_method",
        "request_structure",
        "webhook_json",
        "enable_security",
    ] {
        if !crate::diff::same(existing.get(field), &want[field]) {
            out.push(field);
        }
    }
    let has_content_type = existing.table("webhook_headers").iter().any(|h| {
        h.str("key")
            .is_some_and(|k| k.eq_ignore_ascii_case("content-type"))
            && h.str("value") == Some("application/json")
    });
    if !has_content_type {
        out.push("webhook_headers");
    }
    out
}

async fn ensure_webhook(
    client: &ErpNextClient,
    spec: &WebhookSpec,
    target: &Url,
    secret: &str,
) -> Result<Row, SetupError> {
    let name = spec.name();
    let what = format!("Webhook {name}");
    let err = |source| SetupError::Erp {
        what: what.clone(),
        source,
    };
    let want = webhook_doc(spec, target, secret);
    let row = |action, detail: String| Row {
        doctype: WEBHOOK,
        name: name.clone(),
        action,
        detail,
    };
    match client.get(WEBHOOK, &name).await.map_err(err)? {
        None => {
            client.insert(WEBHOOK, &want).await.map_err(err)?;
            Ok(row(Action::Created, String::new()))
        }
        Some(existing) => {
            let differs = webhook_differences(&existing, &want);
            if differs.is_empty() {
                return Ok(row(Action::Present, String::new()));
            }
            let mut changes = want.clone();
            if let Some(m) = changes.as_object_mut() {
                m.remove("name");
            }
            client.update(WEBHOOK, &name, &changes).await.map_err(err)?;
            Ok(row(Action::Updated, differs.join(", ")))
        }
    }
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
        let path = shared::contracts::path("erpnext/webhooks/webhook_create_sales_invoice_on_submit.json");
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
    fn report_prints_a_table() {
        let report = SetupReport {
            rows: vec![
                Row {
                    doctype: CUSTOM_FIELD,
                    name: "Customer-hubspot_company_id".into(),
                    action: Action::Created,
                    detail: String::new(),
                },
                Row {
                    doctype: WEBHOOK,
                    name: "lead2ledger-customer-after-insert".into(),
                    action: Action::Present,
                    detail: String::new(),
                },
            ],
        };
        let text = report.to_string();
        let line = text.lines().nth(1).expect("row");
        assert!(
            line.starts_with("Custom Field  Customer-hubspot_company_id")
                && line.ends_with("  created"),
            "{text}"
        );
        assert!(
            text.ends_with("1 created, 0 updated, 1 already present"),
            "{text}"
        );
        assert!(!report.all_present());
    }
}
