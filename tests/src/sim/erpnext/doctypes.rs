//! DocType metadata and the three JSON views of a document.
//!
//! Field lists come from `schema.json`, distilled from the captures: the full field list of each
//! doctype (those a submit/cancel response or a `{{ doc | tojson }}` webhook shows with `null`s) in
//! Frappe's order, with the default a new document starts with. What the captures cannot show
//! (labels, mandatory fields, Link targets, `allow_on_submit`) is overlaid in code below; master
//! data doctypes (Item, Price List, Customer Group, ...) are declared here too.
//!
//! Views, as Frappe builds them:
//! * resource view (`GET/POST/PUT /api/resource`): fields whose value is `null` are left out
//!   (except the odd ones a new document sets to `null` explicitly, e.g. `last_scanned_warehouse`);
//! * full view (`frappe.client.submit`/`cancel`, webhook context): every field, `null` included;
//! * both order keys as Frappe does: standard fields, doctype fields, `doctype`, child tables,
//!   then `__` markers. Docs are stored as plain `serde_json::Map`s; only output is ordered.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// Standard fields every document starts with, in Frappe's order.
pub const HEAD: [&str; 7] = [
    "name",
    "owner",
    "creation",
    "modified",
    "modified_by",
    "docstatus",
    "idx",
];
pub const CHILD_TAIL: [&str; 3] = ["parent", "parentfield", "parenttype"];

#[derive(Debug, Clone, PartialEq)]
pub struct FieldMeta {
    pub fieldname: String,
    pub label: String,
    /// What a new document holds; its JSON type is the field's type (`0.0` Float, `0` Int/Check).
    pub default: Value,
    pub reqd: bool,
    pub unique: bool,
    pub allow_on_submit: bool,
    /// Target DocType of a Link field (`DocType` for links to doctypes themselves).
    pub link: Option<String>,
    /// Password fields are masked with `*` in every response.
    pub password: bool,
    /// Added by a Custom Field document.
    pub custom: bool,
    /// Frappe's `set_only_once`: fixed after insert (a Webhook's doctype and event).
    pub set_only_once: bool,
}

impl FieldMeta {
    fn new(fieldname: &str, default: Value) -> Self {
        Self {
            fieldname: fieldname.to_string(),
            label: title_case(fieldname),
            default,
            reqd: false,
            unique: false,
            allow_on_submit: false,
            link: None,
            password: false,
            custom: false,
            set_only_once: false,
        }
    }

    /// Coerce an incoming value the way Frappe casts by fieldtype (`"10"` → `10.0` for a Float).
    pub fn coerce(&self, v: Value) -> Value {
        match (&self.default, &v) {
            (Value::Number(d), Value::Number(n)) if d.is_f64() && !n.is_f64() => {
                Value::from(n.as_f64().unwrap_or(0.0))
            }
            (Value::Number(d), Value::String(s)) if d.is_f64() => {
                Value::from(s.trim().parse::<f64>().unwrap_or(0.0))
            }
            (Value::Number(d), Value::Number(n)) if !d.is_f64() && n.is_f64() => {
                Value::from(n.as_f64().unwrap_or(0.0) as i64)
            }
            (Value::Number(d), Value::String(s)) if !d.is_f64() => {
                Value::from(s.trim().parse::<f64>().map(|f| f as i64).unwrap_or(0))
            }
            (Value::Number(_), Value::Bool(b)) => Value::from(i64::from(*b)),
            (Value::Number(_), Value::Null) => self.default.clone(),
            _ => v,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct DocTypeMeta {
    pub name: String,
    /// Non-table fields in order.
    pub fields: Vec<FieldMeta>,
    /// (fieldname, child doctype) in order.
    pub tables: Vec<(String, String)>,
    pub submittable: bool,
    pub is_child: bool,
    /// Keeps unknown fields (child doctypes whose rows the captures never show).
    pub open: bool,
    /// Default list order: (field, descending).
    pub sort: (String, bool),
    /// Fields a new document sets to `null` explicitly, so the resource view shows them.
    pub keep_null: Vec<String>,
    /// Fields without a default that a new document leaves unset (`None` in Python) until the
    /// controller fills them, so "not sent" can be told from `0` (ERPNext fetches
    /// `price_list_rate` and `conversion_rate` only when they are `None`).
    pub unset: Vec<String>,
    /// A single DocType (`Accounts Settings`): one document named after the doctype.
    pub single: bool,
}

impl DocTypeMeta {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            fields: Vec::new(),
            tables: Vec::new(),
            submittable: false,
            is_child: false,
            open: false,
            sort: ("modified".into(), true),
            keep_null: Vec::new(),
            unset: Vec::new(),
            single: false,
        }
    }

    pub fn field(&self, fieldname: &str) -> Option<&FieldMeta> {
        self.fields.iter().find(|f| f.fieldname == fieldname)
    }

    fn field_mut(&mut self, fieldname: &str) -> Option<&mut FieldMeta> {
        self.fields.iter_mut().find(|f| f.fieldname == fieldname)
    }

    pub fn table(&self, fieldname: &str) -> Option<&str> {
        self.tables
            .iter()
            .find(|(f, _)| f == fieldname)
            .map(|(_, c)| c.as_str())
    }

    /// Whether `fieldname` can be selected or filtered on in a list query.
    pub fn is_column(&self, fieldname: &str) -> bool {
        HEAD.contains(&fieldname)
            || self.field(fieldname).is_some()
            || (self.is_child && CHILD_TAIL.contains(&fieldname))
    }

    pub fn label(&self, fieldname: &str) -> String {
        self.field(fieldname)
            .map(|f| f.label.clone())
            .unwrap_or_else(|| title_case(fieldname))
    }
}

/// All doctypes of the simulated site, including the fields Custom Field documents added.
#[derive(Debug, Clone)]
pub struct Registry {
    doctypes: BTreeMap<String, DocTypeMeta>,
}

#[derive(serde::Deserialize)]
struct SchemaEntry {
    fields: Vec<(String, Value)>,
    tables: Vec<(String, String)>,
}

/// Child doctypes the captures only ever show empty; their rows are kept as given.
const OPEN_CHILDREN: [&str; 11] = [
    "Sales Team",
    "Packed Item",
    "Pricing Rule Detail",
    "Allowed To Transact With",
    "Customer Credit Limit",
    "Portal User",
    "Sales Invoice Timesheet",
    "Sales Invoice Advance",
    "Sales Invoice Payment",
    "Payment Entry Deduction",
    "Advance Taxes and Charges",
];

impl Registry {
    pub fn new() -> Self {
        let schema: BTreeMap<String, SchemaEntry> =
            match serde_json::from_str(include_str!("schema.json")) {
                Ok(s) => s,
                // The file is compiled in; a parse failure is a bug caught by every test.
                Err(e) => panic!("schema.json is invalid: {e}"),
            };
        let mut doctypes = BTreeMap::new();
        for (name, entry) in schema {
            let mut meta = DocTypeMeta::new(&name);
            meta.fields = entry
                .fields
                .iter()
                .map(|(f, d)| FieldMeta::new(f, d.clone()))
                .collect();
            meta.tables = entry.tables;
            doctypes.insert(name, meta);
        }
        let mut reg = Self { doctypes };
        reg.declare_masters();
        reg.overlay();
        reg
    }

    pub fn get(&self, doctype: &str) -> Option<&DocTypeMeta> {
        self.doctypes.get(doctype)
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.doctypes.keys()
    }

    fn put(&mut self, meta: DocTypeMeta) {
        self.doctypes.insert(meta.name.clone(), meta);
    }

    fn simple(&mut self, name: &str, fields: &[(&str, Value)]) -> &mut DocTypeMeta {
        let mut meta = DocTypeMeta::new(name);
        meta.fields = fields
            .iter()
            .map(|(f, d)| FieldMeta::new(f, d.clone()))
            .collect();
        self.put(meta);
        self.doctypes
            .entry(name.to_string())
            .or_insert_with(|| DocTypeMeta::new(name))
    }

    fn declare_masters(&mut self) {
        use serde_json::json;
        let n = Value::Null;
        self.simple(
            "Company",
            &[
                ("company_name", n.clone()),
                ("abbr", n.clone()),
                ("default_currency", n.clone()),
                ("country", n.clone()),
                ("default_receivable_account", n.clone()),
            ],
        );
        for (dt, name_field, parent) in [
            (
                "Customer Group",
                "customer_group_name",
                "parent_customer_group",
            ),
            ("Territory", "territory_name", "parent_territory"),
            ("Item Group", "item_group_name", "parent_item_group"),
        ] {
            self.simple(
                dt,
                &[
                    (name_field, n.clone()),
                    (parent, n.clone()),
                    ("is_group", json!(0)),
                ],
            );
        }
        self.simple(
            "UOM",
            &[
                ("uom_name", n.clone()),
                ("enabled", json!(1)),
                ("must_be_whole_number", json!(0)),
            ],
        );
        self.simple(
            "Country",
            &[("country_name", n.clone()), ("code", n.clone())],
        );
        self.simple(
            "Currency",
            &[
                ("currency_name", n.clone()),
                ("enabled", json!(1)),
                ("symbol", n.clone()),
            ],
        );
        self.simple(
            "Price List",
            &[
                ("price_list_name", n.clone()),
                ("currency", n.clone()),
                ("buying", json!(0)),
                ("selling", json!(1)),
                ("enabled", json!(1)),
            ],
        );
        self.simple(
            "Warehouse",
            &[
                ("warehouse_name", n.clone()),
                ("company", n.clone()),
                ("is_group", json!(0)),
            ],
        );
        self.simple(
            "Mode of Payment",
            &[
                ("mode_of_payment", n.clone()),
                ("enabled", json!(1)),
                ("type", n.clone()),
            ],
        );
        self.simple(
            "Item",
            &[
                ("naming_series", json!("STO-ITEM-.YYYY.-")),
                ("item_code", n.clone()),
                ("item_name", n.clone()),
                ("item_group", n.clone()),
                ("stock_uom", n.clone()),
                ("disabled", json!(0)),
                ("is_stock_item", json!(1)),
                ("is_sales_item", json!(1)),
                ("include_item_in_manufacturing", json!(1)),
                ("opening_stock", json!(0.0)),
                ("valuation_rate", json!(0.0)),
                ("standard_rate", json!(0.0)),
                ("description", n.clone()),
                ("brand", n.clone()),
                ("image", n.clone()),
            ],
        )
        .sort = ("item_code".into(), false);
        self.simple(
            "Item Price",
            &[
                ("item_code", n.clone()),
                ("uom", n.clone()),
                ("packing_unit", json!(0)),
                ("item_name", n.clone()),
                ("brand", n.clone()),
                ("item_description", n.clone()),
                ("price_list", n.clone()),
                ("customer", n.clone()),
                ("supplier", n.clone()),
                ("batch_no", n.clone()),
                ("buying", json!(0)),
                ("selling", json!(0)),
                ("currency", n.clone()),
                ("price_list_rate", json!(0.0)),
                ("valid_from", n.clone()),
                ("lead_time_days", json!(0)),
                ("valid_upto", n.clone()),
                ("note", n.clone()),
                ("reference", n.clone()),
            ],
        )
        .sort = ("modified".into(), false);
        let stct = self.simple(
            "Sales Taxes and Charges Template",
            &[
                ("title", n.clone()),
                ("is_default", json!(0)),
                ("disabled", json!(0)),
                ("company", n.clone()),
                ("tax_category", n.clone()),
            ],
        );
        stct.tables = vec![("taxes".into(), "Sales Taxes and Charges".into())];
        let taxes = self.simple(
            "Sales Taxes and Charges",
            &[
                ("charge_type", n.clone()),
                ("row_id", n.clone()),
                ("account_head", n.clone()),
                ("description", n.clone()),
                ("included_in_print_rate", json!(0)),
                ("included_in_paid_amount", json!(0)),
                ("cost_center", n.clone()),
                ("project", n.clone()),
                ("rate", json!(0.0)),
                ("account_currency", n.clone()),
                ("tax_amount", json!(0.0)),
                ("total", json!(0.0)),
                ("tax_amount_after_discount_amount", json!(0.0)),
                ("base_tax_amount", json!(0.0)),
                ("base_total", json!(0.0)),
                ("base_tax_amount_after_discount_amount", json!(0.0)),
                ("item_wise_tax_detail", n.clone()),
                ("dont_recompute_tax", json!(0)),
            ],
        );
        taxes.is_child = true;
        // ERPNext's account tree, leaves only (`<account_name> - <abbr>`).
        self.simple(
            "Account",
            &[
                ("account_name", n.clone()),
                ("account_number", n.clone()),
                ("is_group", json!(0)),
                ("company", n.clone()),
                ("root_type", n.clone()),
                ("report_type", n.clone()),
                ("account_currency", n.clone()),
                ("parent_account", n.clone()),
                ("account_type", n.clone()),
                ("tax_rate", json!(0.0)),
                ("freeze_account", json!("No")),
                ("disabled", json!(0)),
            ],
        )
        .sort = ("name".into(), false);
        // A customer's receivable account per company (`Customer.accounts`).
        let party_account = self.simple(
            "Party Account",
            &[
                ("company", n.clone()),
                ("account", n.clone()),
                ("advance_account", n.clone()),
            ],
        );
        party_account.is_child = true;
        self.simple(
            "Currency Exchange",
            &[
                ("date", n.clone()),
                ("from_currency", n.clone()),
                ("to_currency", n.clone()),
                ("exchange_rate", json!(0.0)),
                ("for_buying", json!(1)),
                ("for_selling", json!(1)),
            ],
        );
        // The setup wizard turns `auto_insert_price_list_rate_if_missing` on
        // (`erpnext/setup/setup_wizard/operations/defaults_setup.py`).
        self.simple(
            "Stock Settings",
            &[
                ("auto_insert_price_list_rate_if_missing", json!(1)),
                ("update_price_list_based_on", json!("Rate")),
                ("update_existing_price_list_rate", json!(0)),
            ],
        )
        .single = true;
        // The site's time zone: `erp-writer setup` and `config check` compare it with
        // `erpnext.time_zone` (naive `modified` times are in it).
        self.simple("System Settings", &[("time_zone", n.clone())])
            .single = true;
        let data = self.simple(
            "Webhook Data",
            &[("fieldname", n.clone()), ("key", n.clone())],
        );
        data.is_child = true;
        self.simple(
            "Custom Field",
            &[
                ("is_system_generated", json!(0)),
                ("dt", n.clone()),
                ("module", n.clone()),
                ("label", n.clone()),
                ("placeholder", n.clone()),
                ("fieldname", n.clone()),
                ("insert_after", n.clone()),
                ("length", json!(0)),
                ("link_filters", n.clone()),
                ("fieldtype", json!("Data")),
                ("precision", n.clone()),
                ("hide_seconds", json!(0)),
                ("hide_days", json!(0)),
                ("options", n.clone()),
                ("sort_options", json!(0)),
                ("fetch_from", n.clone()),
                ("fetch_if_empty", json!(0)),
                ("collapsible", json!(0)),
                ("collapsible_depends_on", n.clone()),
                ("default", n.clone()),
                ("depends_on", n.clone()),
                ("mandatory_depends_on", n.clone()),
                ("read_only_depends_on", n.clone()),
                ("non_negative", json!(0)),
                ("reqd", json!(0)),
                ("unique", json!(0)),
                ("is_virtual", json!(0)),
                ("read_only", json!(0)),
                ("ignore_user_permissions", json!(0)),
                ("hidden", json!(0)),
                ("print_hide", json!(0)),
                ("print_hide_if_no_value", json!(0)),
                ("print_width", n.clone()),
                ("no_copy", json!(0)),
                ("allow_on_submit", json!(0)),
                ("in_list_view", json!(0)),
                ("in_standard_filter", json!(0)),
                ("in_global_search", json!(0)),
                ("in_preview", json!(0)),
                ("bold", json!(0)),
                ("report_hide", json!(0)),
                ("search_index", json!(0)),
                ("allow_in_quick_entry", json!(0)),
                ("ignore_xss_filter", json!(0)),
                ("translatable", json!(0)),
                ("hide_border", json!(0)),
                ("show_dashboard", json!(0)),
                ("description", n.clone()),
                ("permlevel", json!(0)),
                ("width", n.clone()),
                ("columns", json!(0)),
            ],
        );
        for child in OPEN_CHILDREN {
            let meta = self.simple(child, &[]);
            meta.is_child = true;
            meta.open = true;
        }
    }

    fn overlay(&mut self) {
        for child in [
            "Sales Order Item",
            "Sales Invoice Item",
            "Payment Schedule",
            "Contact Email",
            "Contact Phone",
            "Dynamic Link",
            "Payment Entry Reference",
            "Webhook Header",
        ] {
            if let Some(m) = self.doctypes.get_mut(child) {
                m.is_child = true;
            }
        }
        if let Some(m) = self.doctypes.get_mut("Accounts Settings") {
            m.single = true;
        }
        for (dt, fields) in [
            (
                "Sales Order",
                &["conversion_rate", "plc_conversion_rate"] as &[&str],
            ),
            ("Sales Invoice", &["conversion_rate", "plc_conversion_rate"]),
            ("Sales Order Item", &["price_list_rate"]),
            ("Sales Invoice Item", &["price_list_rate"]),
        ] {
            if let Some(m) = self.doctypes.get_mut(dt) {
                m.unset = fields.iter().map(|f| f.to_string()).collect();
            }
        }
        for f in ["webhook_doctype", "webhook_docevent"] {
            if let Some(field) = self
                .doctypes
                .get_mut("Webhook")
                .and_then(|m| m.field_mut(f))
            {
                field.set_only_once = true;
            }
        }
        for dt in ["Sales Order", "Sales Invoice", "Payment Entry"] {
            if let Some(m) = self.doctypes.get_mut(dt) {
                m.submittable = true;
            }
        }
        for dt in ["Sales Order", "Sales Invoice"] {
            if let Some(m) = self.doctypes.get_mut(dt) {
                m.keep_null = vec!["last_scanned_warehouse".into()];
            }
        }
        let labels: &[(&str, &str, &str)] = &[
            ("Address", "address_line1", "Address Line 1"),
            ("Address", "city", "City/Town"),
            ("Address", "pincode", "Postal Code"),
            ("Address", "state", "State/Province"),
            ("Sales Order", "transaction_date", "Date"),
            ("Sales Invoice", "posting_date", "Date"),
            ("Sales Order Item", "qty", "Quantity"),
            ("Sales Order Item", "uom", "UOM"),
            (
                "Sales Order Item",
                "conversion_factor",
                "UOM Conversion Factor",
            ),
            ("Sales Invoice Item", "qty", "Quantity"),
            ("Sales Invoice Item", "uom", "UOM"),
            (
                "Sales Invoice Item",
                "conversion_factor",
                "UOM Conversion Factor",
            ),
            ("Webhook", "webhook_doctype", "DocType"),
            ("Webhook", "webhook_docevent", "Doc Event"),
            ("Webhook", "request_url", "Request URL"),
            ("Custom Field", "dt", "DocType"),
        ];
        for (dt, f, label) in labels {
            if let Some(field) = self.doctypes.get_mut(*dt).and_then(|m| m.field_mut(f)) {
                field.label = label.to_string();
            }
        }
        let reqd: &[(&str, &[&str])] = &[
            ("Customer", &["customer_name", "customer_type"]),
            (
                "Address",
                &["address_type", "address_line1", "city", "country"],
            ),
            (
                "Sales Order",
                &[
                    "naming_series",
                    "customer",
                    "transaction_date",
                    "company",
                    "currency",
                    "selling_price_list",
                ],
            ),
            (
                "Sales Order Item",
                &["item_code", "item_name", "qty", "uom", "conversion_factor"],
            ),
            (
                "Sales Invoice",
                &[
                    "naming_series",
                    "customer",
                    "company",
                    "posting_date",
                    "currency",
                    "debit_to",
                ],
            ),
            (
                "Sales Invoice Item",
                &[
                    "item_name",
                    "qty",
                    "uom",
                    "conversion_factor",
                    "income_account",
                ],
            ),
            (
                "Payment Entry",
                &[
                    "naming_series",
                    "payment_type",
                    "posting_date",
                    "company",
                    "paid_from",
                    "paid_to",
                    "paid_amount",
                    "received_amount",
                ],
            ),
            (
                "Payment Entry Reference",
                &["reference_doctype", "reference_name"],
            ),
            ("Item", &["item_code", "item_group", "stock_uom"]),
            (
                "Item Price",
                &["item_code", "price_list", "price_list_rate"],
            ),
            ("Webhook", &["webhook_doctype", "request_url"]),
            ("Party Account", &["company", "account"]),
            ("Custom Field", &["dt", "fieldname", "fieldtype"]),
        ];
        for (dt, fields) in reqd {
            for f in *fields {
                if let Some(field) = self.doctypes.get_mut(*dt).and_then(|m| m.field_mut(f)) {
                    field.reqd = true;
                }
            }
        }
        let links: &[(&str, &str, &str)] = &[
            ("Customer", "customer_group", "Customer Group"),
            ("Customer", "territory", "Territory"),
            ("Customer", "default_currency", "Currency"),
            ("Customer", "default_price_list", "Price List"),
            ("Address", "country", "Country"),
            ("Sales Order", "company", "Company"),
            ("Sales Order", "currency", "Currency"),
            ("Sales Order", "selling_price_list", "Price List"),
            (
                "Sales Order",
                "taxes_and_charges",
                "Sales Taxes and Charges Template",
            ),
            ("Sales Order", "customer_group", "Customer Group"),
            ("Sales Order", "territory", "Territory"),
            ("Sales Order Item", "uom", "UOM"),
            ("Sales Order Item", "warehouse", "Warehouse"),
            ("Sales Invoice", "company", "Company"),
            ("Sales Invoice", "currency", "Currency"),
            ("Sales Invoice", "selling_price_list", "Price List"),
            (
                "Sales Invoice",
                "taxes_and_charges",
                "Sales Taxes and Charges Template",
            ),
            ("Sales Invoice Item", "uom", "UOM"),
            ("Payment Entry", "company", "Company"),
            ("Payment Entry", "mode_of_payment", "Mode of Payment"),
            ("Item", "item_group", "Item Group"),
            ("Item", "stock_uom", "UOM"),
            ("Item Price", "item_code", "Item"),
            ("Item Price", "price_list", "Price List"),
            ("Webhook", "webhook_doctype", "DocType"),
            ("Custom Field", "dt", "DocType"),
            ("Sales Order", "amended_from", "Sales Order"),
            ("Sales Invoice", "amended_from", "Sales Invoice"),
            ("Sales Invoice", "debit_to", "Account"),
            ("Sales Invoice Item", "income_account", "Account"),
            ("Sales Invoice Item", "expense_account", "Account"),
            ("Sales Taxes and Charges", "account_head", "Account"),
            ("Payment Entry", "paid_from", "Account"),
            ("Payment Entry", "paid_to", "Account"),
            ("Party Account", "company", "Company"),
            ("Party Account", "account", "Account"),
            ("Party Account", "advance_account", "Account"),
            ("Account", "company", "Company"),
            ("Account", "account_currency", "Currency"),
        ];
        for (dt, f, target) in links {
            if let Some(field) = self.doctypes.get_mut(*dt).and_then(|m| m.field_mut(f)) {
                field.link = Some(target.to_string());
            }
        }
        let on_submit: &[(&str, &[&str])] = &[
            (
                "Sales Order",
                &[
                    "po_no",
                    "po_date",
                    "letter_head",
                    "select_print_heading",
                    "from_date",
                    "to_date",
                    "auto_repeat",
                    "terms",
                    "tc_name",
                ],
            ),
            (
                "Sales Invoice",
                &[
                    "po_no",
                    "po_date",
                    "letter_head",
                    "select_print_heading",
                    "remarks",
                    "from_date",
                    "to_date",
                    "auto_repeat",
                    "subscription",
                    "is_discounted",
                ],
            ),
            (
                "Payment Entry",
                &["letter_head", "print_heading", "clearance_date", "remarks"],
            ),
        ];
        for (dt, fields) in on_submit {
            for f in *fields {
                if let Some(field) = self.doctypes.get_mut(*dt).and_then(|m| m.field_mut(f)) {
                    field.allow_on_submit = true;
                }
            }
        }
        if let Some(field) = self
            .doctypes
            .get_mut("Webhook")
            .and_then(|m| m.field_mut("webhook_secret"))
        {
            field.password = true;
        }
    }

    /// Apply a Custom Field document: the field becomes known (and unique, mandatory, allowed on
    /// submit as it says) on its doctype.
    pub fn apply_custom_field(&mut self, cf: &Map<String, Value>) {
        let (Some(dt), Some(fieldname)) = (str_of(cf, "dt"), str_of(cf, "fieldname")) else {
            return;
        };
        let Some(meta) = self.doctypes.get_mut(&dt) else {
            return;
        };
        let fieldtype = str_of(cf, "fieldtype").unwrap_or_else(|| "Data".into());
        if fieldtype == "Table" {
            if let Some(child) = str_of(cf, "options")
                && meta.table(&fieldname).is_none()
            {
                meta.tables.push((fieldname, child));
            }
            return;
        }
        let default = match fieldtype.as_str() {
            "Float" | "Currency" | "Percent" => Value::from(0.0),
            "Int" | "Check" => Value::from(0),
            _ => Value::Null,
        };
        let mut field = FieldMeta::new(&fieldname, default);
        field.custom = true;
        field.label = str_of(cf, "label").unwrap_or_else(|| title_case(&fieldname));
        field.unique = truthy(cf.get("unique"));
        field.reqd = truthy(cf.get("reqd"));
        field.allow_on_submit = truthy(cf.get("allow_on_submit"));
        field.link = (fieldtype == "Link")
            .then(|| str_of(cf, "options"))
            .flatten();
        let pos = str_of(cf, "insert_after")
            .and_then(|after| meta.fields.iter().position(|f| f.fieldname == after))
            .map(|p| p + 1)
            .unwrap_or(meta.fields.len());
        meta.fields.retain(|f| f.fieldname != field.fieldname);
        let pos = pos.min(meta.fields.len());
        meta.fields.insert(pos, field);
    }

    /// Undo [`Registry::apply_custom_field`] when the Custom Field is deleted.
    pub fn remove_custom_field(&mut self, dt: &str, fieldname: &str) {
        if let Some(meta) = self.doctypes.get_mut(dt) {
            meta.fields
                .retain(|f| !(f.custom && f.fieldname == fieldname));
        }
    }
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

pub fn str_of(doc: &Map<String, Value>, key: &str) -> Option<String> {
    match doc.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

pub fn truthy(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty() && s != "0",
        _ => false,
    }
}

/// `customer_group` → `Customer Group`, the label Frappe derives when none is set.
pub fn title_case(fieldname: &str) -> String {
    fieldname
        .split('_')
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(first) => first.to_uppercase().collect::<String>() + c.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Which `null` fields a view shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nulls {
    /// Resource view: drop `null`s except the doctype's `keep_null`.
    Drop,
    /// Full view: every field of the doctype, `null` when unset.
    Keep,
}

/// An ordered, serialisable view of a stored document.
pub struct DocView<'a> {
    pub reg: &'a Registry,
    pub doctype: &'a str,
    pub doc: &'a Map<String, Value>,
    pub nulls: Nulls,
    /// Child rows to mark `"__unsaved": 1` as (table fieldname, index).
    pub unsaved: &'a [(String, usize)],
}

impl<'a> DocView<'a> {
    pub fn new(
        reg: &'a Registry,
        doctype: &'a str,
        doc: &'a Map<String, Value>,
        nulls: Nulls,
    ) -> Self {
        Self {
            reg,
            doctype,
            doc,
            nulls,
            unsaved: &[],
        }
    }

    pub fn with_unsaved(mut self, unsaved: &'a [(String, usize)]) -> Self {
        self.unsaved = unsaved;
        self
    }

    /// The view as a (key-sorted) JSON value, for templates and comparisons.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    fn entries(&self) -> Vec<(String, Out)> {
        let meta = self.reg.get(self.doctype);
        let mut out: Vec<(String, Out)> = Vec::new();
        let mut emitted: std::collections::BTreeSet<&str> = std::collections::BTreeSet::new();
        let keep_null = |f: &str| {
            self.nulls == Nulls::Keep || meta.is_some_and(|m| m.keep_null.iter().any(|k| k == f))
        };
        for key in HEAD {
            if let Some(v) = self.doc.get(key) {
                out.push((key.to_string(), Out::Scalar(v.clone())));
                emitted.insert(key);
            }
        }
        if let Some(meta) = meta {
            for f in &meta.fields {
                emitted.insert(f.fieldname.as_str());
                let v = match self.doc.get(&f.fieldname) {
                    Some(v) => v.clone(),
                    None if self.nulls == Nulls::Keep => Value::Null,
                    None => continue,
                };
                if v.is_null() && !keep_null(&f.fieldname) {
                    continue;
                }
                let v = match (&v, f.password) {
                    (Value::String(s), true) => Value::String("*".repeat(s.chars().count())),
                    _ => v,
                };
                out.push((f.fieldname.clone(), Out::Scalar(v)));
            }
        }
        let is_table = |k: &str| meta.is_some_and(|m| m.table(k).is_some());
        for (k, v) in self.doc {
            if emitted.contains(k.as_str())
                || k.starts_with("__")
                || k == "doctype"
                || CHILD_TAIL.contains(&k.as_str())
                || is_table(k)
                || (v.is_null() && self.nulls == Nulls::Drop)
            {
                continue;
            }
            out.push((k.clone(), Out::Scalar(v.clone())));
        }
        for key in CHILD_TAIL {
            if let Some(v) = self.doc.get(key) {
                out.push((key.to_string(), Out::Scalar(v.clone())));
            }
        }
        out.push((
            "doctype".into(),
            Out::Scalar(Value::String(self.doctype.to_string())),
        ));
        if let Some(meta) = meta {
            for (table, child) in &meta.tables {
                let rows = match self.doc.get(table) {
                    Some(Value::Array(rows)) => rows.as_slice(),
                    _ => &[],
                };
                let rows = rows
                    .iter()
                    .enumerate()
                    .filter_map(|(i, row)| {
                        let row = row.as_object()?;
                        let mut entries = DocView::new(self.reg, child, row, self.nulls).entries();
                        if self.unsaved.iter().any(|(t, idx)| t == table && *idx == i) {
                            entries.retain(|(k, _)| k != "__unsaved");
                            entries.push(("__unsaved".into(), Out::Scalar(Value::from(1))));
                        }
                        Some(entries)
                    })
                    .collect();
                out.push((table.clone(), Out::Rows(rows)));
            }
        }
        for (k, v) in self.doc {
            if k.starts_with("__") {
                out.push((k.clone(), Out::Scalar(v.clone())));
            }
        }
        out
    }
}

/// One entry of a view: a plain value or the rows of a child table.
enum Out {
    Scalar(Value),
    Rows(Vec<Vec<(String, Out)>>),
}

struct Entries<'a>(&'a [(String, Out)]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in self.0 {
            match v {
                Out::Scalar(v) => map.serialize_entry(k, v)?,
                Out::Rows(rows) => {
                    let rows: Vec<Entries<'_>> = rows.iter().map(|r| Entries(r)).collect();
                    map.serialize_entry(k, &rows)?
                }
            }
        }
        map.end()
    }
}

impl Serialize for DocView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        Entries(&self.entries()).serialize(serializer)
    }
}

/// A list-query row: the requested fields in the requested order.
pub struct ListRow(pub Vec<(String, Value)>);

impl Serialize for ListRow {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}
