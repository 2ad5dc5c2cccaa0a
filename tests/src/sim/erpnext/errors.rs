//! Frappe's error responses: one variant per `exc_type` the captures show, each rendered with the
//! exact status code and body keys of `contracts/erpnext/README.md` ("Error shapes").
//!
//! `_server_messages` and `exc` are JSON *strings* in Python's `json.dumps` format; the traceback
//! in `exc` is a plausible stand-in (clients must not rely on it, and neither do we).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use rand::Rng;

use serde_json::Value;

use super::doctypes::ListRow;
use super::pyjson::{PyValue, dumps_dict, dumps_str_list};

/// An error the simulated Frappe raises. `Display` is the Python exception line.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrappeError {
    /// 404, body `exc_type` + `_server_messages` only.
    #[error("frappe.exceptions.DoesNotExistError: {message}")]
    DoesNotExist { message: String },
    /// 417: a unique (custom) field already holds the value.
    #[error(
        "frappe.exceptions.UniqueValidationError: ('{doctype}', '{name}', IntegrityError(1062, \"Duplicate entry '{value}' for key '{fieldname}'\"))"
    )]
    UniqueValidation {
        doctype: String,
        name: String,
        fieldname: String,
        value: String,
        label: String,
    },
    /// 417: mandatory fields missing; `missing` are fieldnames, `messages` the user texts.
    #[error("frappe.exceptions.MandatoryError: [{doctype}, {name}]: {}", missing.join(", "))]
    Mandatory {
        doctype: String,
        name: String,
        missing: Vec<String>,
        messages: Vec<String>,
    },
    /// 417 `frappe.throw`: `ValidationError` or, with `class`, one of its subclasses
    /// (`erpnext.exceptions.InvalidCurrency`); `app_source` adds `_exc_source`, `title` replaces
    /// the message dialog's default title ("Message").
    #[error("{}: {message}", .class.unwrap_or("frappe.exceptions.ValidationError"))]
    Validation {
        message: String,
        app_source: Option<&'static str>,
        title: Option<&'static str>,
        class: Option<&'static str>,
    },
    #[error("frappe.exceptions.LinkValidationError: {message}")]
    LinkValidation { message: String },
    #[error("frappe.exceptions.UpdateAfterSubmitError: {message}")]
    UpdateAfterSubmit { message: String },
    #[error("frappe.exceptions.TimestampMismatchError: {message}")]
    TimestampMismatch { message: String },
    #[error("frappe.exceptions.DocstatusTransitionError: {message}")]
    DocstatusTransition { message: String },
    #[error("frappe.exceptions.LinkExistsError: {message}")]
    LinkExists { message: String },
    /// 409.
    #[error("frappe.exceptions.DuplicateEntryError: {message}")]
    DuplicateEntry { message: String },
    /// 500 from ERPNext code (e.g. a Sales Order without items).
    #[error("TypeError: {message}")]
    Type { message: String },
    /// 500 when the request body is not JSON.
    #[error("json.decoder.JSONDecodeError: {message}")]
    JsonDecode { message: String },
    /// 500 from the database (unknown column in `fields`/`filters`, an ambiguous `ORDER BY`).
    #[error("pymysql.err.OperationalError: {message}")]
    Operational { message: String },
    /// 401: wrong API key or secret.
    #[error("frappe.exceptions.AuthenticationError")]
    Authentication,
    /// 403: Guest, or a role without read on the DocType.
    #[error("frappe.exceptions.PermissionError")]
    Permission { user: String, doctype: String },
    /// 403 for a whitelisted method a Guest may not call.
    #[error("frappe.exceptions.PermissionError")]
    MethodNotPermitted,
}

impl FrappeError {
    pub fn not_found(doctype: &str, name: &str) -> Self {
        Self::DoesNotExist {
            message: format!("{doctype} {name} not found"),
        }
    }

    pub fn validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            app_source: None,
            title: None,
            class: None,
        }
    }

    /// A `frappe.throw` raised from ERPNext's code (`_exc_source: "erpnext (app)"`).
    pub fn erpnext_validation(message: impl Into<String>) -> Self {
        Self::Validation {
            message: message.into(),
            app_source: Some("erpnext (app)"),
            title: None,
            class: None,
        }
    }

    /// The same error with the dialog title `frappe.throw(..., title=...)` gives it.
    pub fn titled(self, new_title: &'static str) -> Self {
        match self {
            Self::Validation {
                message,
                app_source,
                class,
                ..
            } => Self::Validation {
                message,
                app_source,
                title: Some(new_title),
                class,
            },
            other => other,
        }
    }

    /// The same error raised as a subclass of `ValidationError` (`exc=...`), given by its
    /// dotted Python path; `exc_type` is the class name.
    pub fn raised_as(self, new_class: &'static str) -> Self {
        match self {
            Self::Validation {
                message,
                app_source,
                title,
                ..
            } => Self::Validation {
                message,
                app_source,
                title,
                class: Some(new_class),
            },
            other => other,
        }
    }

    /// MariaDB's error 1052: an unqualified column that more than one joined table has.
    pub fn ambiguous_column(column: &str, clause: &str) -> Self {
        Self::Operational {
            message: format!("(1052, \"Column '{column}' in {clause} is ambiguous\")"),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::DoesNotExist { .. } => StatusCode::NOT_FOUND,
            Self::DuplicateEntry { .. } => StatusCode::CONFLICT,
            Self::Type { .. } | Self::JsonDecode { .. } | Self::Operational { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
            Self::Authentication => StatusCode::UNAUTHORIZED,
            Self::Permission { .. } | Self::MethodNotPermitted => StatusCode::FORBIDDEN,
            _ => StatusCode::EXPECTATION_FAILED,
        }
    }

    /// The `exc_type` clients classify by.
    pub fn exc_type(&self) -> &'static str {
        match self {
            Self::DoesNotExist { .. } => "DoesNotExistError",
            Self::UniqueValidation { .. } => "UniqueValidationError",
            Self::Mandatory { .. } => "MandatoryError",
            Self::Validation {
                class: Some(class), ..
            } => class.rsplit('.').next().unwrap_or(class),
            Self::Validation { .. } => "ValidationError",
            Self::LinkValidation { .. } => "LinkValidationError",
            Self::UpdateAfterSubmit { .. } => "UpdateAfterSubmitError",
            Self::TimestampMismatch { .. } => "TimestampMismatchError",
            Self::DocstatusTransition { .. } => "DocstatusTransitionError",
            Self::LinkExists { .. } => "LinkExistsError",
            Self::DuplicateEntry { .. } => "DuplicateEntryError",
            Self::Type { .. } => "TypeError",
            Self::JsonDecode { .. } => "JSONDecodeError",
            Self::Operational { .. } => "OperationalError",
            Self::Authentication => "AuthenticationError",
            Self::Permission { .. } | Self::MethodNotPermitted => "PermissionError",
        }
    }

    /// The response body, keys exactly as Frappe 15 sends them.
    pub fn body(&self) -> serde_json::Value {
        serde_json::to_value(self.ordered_body()).unwrap_or_default()
    }

    /// The body entries in the order Frappe writes them.
    pub fn ordered_body(&self) -> ListRow {
        let exception = Value::String(self.to_string());
        let exc = Value::String(traceback(&self.to_string()));
        let exc_type = Value::String(self.exc_type().to_string());
        let s = |v: String| Value::String(v);
        let entries: Vec<(&str, Value)> = match self {
            Self::DoesNotExist { message } => vec![
                ("exc_type", exc_type),
                ("_server_messages", s(thrown(message, "Message"))),
            ],
            Self::UniqueValidation { label, .. } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                (
                    "_server_messages",
                    s(plain(&[format!("{label} must be unique")])),
                ),
            ],
            Self::Mandatory { messages, .. } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                ("_server_messages", s(plain(messages))),
            ],
            Self::Validation {
                message,
                app_source: Some(source),
                title,
                ..
            } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("_exc_source", s(source.to_string())),
                ("exc", exc),
                (
                    "_server_messages",
                    s(thrown(message, title.unwrap_or("Message"))),
                ),
            ],
            Self::Validation {
                message,
                title: Some(title),
                ..
            } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                ("_server_messages", s(thrown(message, title))),
            ],
            Self::UpdateAfterSubmit { message } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                (
                    "_server_messages",
                    s(thrown(message, "Cannot Update After Submit")),
                ),
            ],
            Self::Validation { message, .. }
            | Self::LinkValidation { message }
            | Self::TimestampMismatch { message }
            | Self::DocstatusTransition { message }
            | Self::LinkExists { message }
            | Self::DuplicateEntry { message } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                ("_server_messages", s(thrown(message, "Message"))),
            ],
            Self::Type { .. } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("_exc_source", s("erpnext (app)".into())),
                ("exc", exc),
            ],
            Self::JsonDecode { .. } | Self::Operational { .. } | Self::Authentication => {
                vec![
                    ("exception", exception),
                    ("exc_type", exc_type),
                    ("exc", exc),
                ]
            }
            Self::Permission { user, doctype } => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                (
                    "_server_messages",
                    s(plain(&[format!(
                        "User <strong>{user}</strong> does not have doctype access via role permission for document <strong>{doctype}</strong>"
                    )])),
                ),
                ("_error_message", s(format!("No permission for {doctype}"))),
            ],
            Self::MethodNotPermitted => vec![
                ("exception", exception),
                ("exc_type", exc_type),
                ("exc", exc),
                (
                    "_server_messages",
                    s(plain(&[
                        "You are not permitted to access this resource.".to_string()
                    ])),
                ),
                ("_error_message", s("Not permitted".into())),
            ],
        };
        ListRow(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
}

impl IntoResponse for FrappeError {
    fn into_response(self) -> Response {
        json_response(self.status(), &self.ordered_body())
    }
}

/// A JSON response with Frappe's content type.
pub fn json_response(status: StatusCode, body: &impl serde::Serialize) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = (status, bytes).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `_server_messages` of `frappe.throw`: red indicator, `raise_exception` and an exception id.
fn thrown(message: &str, title: &str) -> String {
    let id: String = {
        let mut rng = rand::rng();
        (0..56)
            .map(|_| char::from_digit(rng.random_range(0..16), 16).unwrap_or('0'))
            .collect()
    };
    dumps_str_list(&[dumps_dict(vec![
        ("message", PyValue::Str(message.to_string())),
        ("title", PyValue::Str(title.to_string())),
        ("indicator", PyValue::Str("red".into())),
        ("raise_exception", PyValue::Int(1)),
        ("__frappe_exc_id", PyValue::Str(id)),
    ])])
}

/// `_server_messages` of `frappe.msgprint` without an indicator (mandatory/unique errors).
fn plain(messages: &[String]) -> String {
    let items: Vec<String> = messages
        .iter()
        .map(|m| {
            dumps_dict(vec![
                ("message", PyValue::Str(m.clone())),
                ("title", PyValue::Str("Message".into())),
            ])
        })
        .collect();
    dumps_str_list(&items)
}

/// One `msgprint` of a successful request, as `_server_messages` lists it: the Customer rename
/// note (`title` "Note", yellow).
pub fn note_message(message: &str) -> String {
    dumps_dict(vec![
        ("message", PyValue::Str(message.to_string())),
        ("title", PyValue::Str("Note".into())),
        ("indicator", PyValue::Str("yellow".into())),
    ])
}

/// A `msgprint(..., alert=True)` (ERPNext's "Item Price added for ..." toast).
pub fn alert_message(message: &str) -> String {
    dumps_dict(vec![
        ("message", PyValue::Str(message.to_string())),
        ("title", PyValue::Str("Message".into())),
        ("alert", PyValue::Int(1)),
    ])
}

/// `_server_messages`: the JSON string of the list of message strings.
pub fn server_messages(messages: &[String]) -> String {
    dumps_str_list(messages)
}

fn traceback(exception: &str) -> String {
    dumps_str_list(&[format!(
        "Traceback (most recent call last):\n  File \"apps/frappe/frappe/app.py\", line 120, in application\n    response = frappe.api.handle(request)\n               ^^^^^^^^^^^^^^^^^^^^^^^^^^\n  File \"apps/frappe/frappe/api/__init__.py\", line 52, in handle\n    data = endpoint(**arguments)\n           ^^^^^^^^^^^^^^^^^^^^^\n{exception}\n"
    )])
}

/// The body of an injected 5xx: Frappe's own 500 (a lost database connection) or the HTML page
/// nginx answers with when gunicorn is down or overloaded.
pub fn injected_error(status: u16) -> Response {
    match status {
        500 => FrappeError::Operational {
            message: "(2013, 'Lost connection to MySQL server during query')".into(),
        }
        .into_response(),
        code => {
            let (status, reason) = match code {
                502 => (StatusCode::BAD_GATEWAY, "Bad Gateway"),
                504 => (StatusCode::GATEWAY_TIMEOUT, "Gateway Time-out"),
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Temporarily Unavailable",
                ),
            };
            let html = format!(
                "<html>\r\n<head><title>{} {reason}</title></head>\r\n<body>\r\n<center><h1>{} {reason}</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n",
                status.as_u16(),
                status.as_u16()
            );
            let mut resp = (status, html).into_response();
            resp.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
            resp
        }
    }
}
