//! The ERPNext site as the steps see it: the client, and what a process caches about the site
//! (tax templates, the API user).
//!
//! Every document lead2ledger writes carries the HubSpot version it was written from
//! ([`SOURCE_VERSION`]), so "older never overwrites newer" compares HubSpot time with HubSpot
//! time ([`ErpSite::judge`]). It used to compare HubSpot's time with ERPNext's `modified`, in the
//! site's time zone; but our own writes set `modified`, so a newer deal change was judged stale
//! whenever our insert of an older one happened after it, and two servers' clocks were compared.

use std::sync::Arc;

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use shared::erpnext::{Doc, ErpNextClient, ErpNextError};
use tokio::sync::OnceCell;

use crate::taxes::TaxTemplates;

#[derive(Debug, Clone)]
pub struct ErpSite {
    pub client: ErpNextClient,
    /// Tax template rows, cached for every command this process applies.
    pub taxes: TaxTemplates,
    /// The user our API key acts as (`modified_by` of what we write), asked once.
    user: Arc<OnceCell<String>>,
}

/// The custom field (created by `setup`) holding the HubSpot version a document was written
/// from: the deal's `hs_lastmodifieddate`, RFC 3339 UTC with microseconds.
pub const SOURCE_VERSION: &str = "hubspot_modified_at";

/// How a document lead2ledger wrote before stands against a HubSpot version of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// The document was written from this version or a newer one: leave it.
    Stale { stored: DateTime<Utc> },
    /// Someone else saved it after lead2ledger last wrote it: neither overwrite nor drop the
    /// newer HubSpot version; flag it for review.
    EditedInErpNext { by: String, at: String },
    /// Newer, and the document is as lead2ledger left it.
    Apply,
}

/// `t` as stored in [`SOURCE_VERSION`].
pub fn source_version(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The HubSpot version `doc` was written from, if it records one.
pub fn stored_version(doc: &Doc) -> Option<DateTime<Utc>> {
    let raw = doc.str(SOURCE_VERSION)?;
    DateTime::parse_from_rfc3339(raw.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

impl ErpSite {
    pub fn new(client: ErpNextClient) -> Self {
        Self {
            client,
            taxes: TaxTemplates::default(),
            user: Arc::new(OnceCell::new()),
        }
    }

    /// The user the API key acts as (`frappe.auth.get_logged_user`), asked once per process and
    /// only when a document written before is about to change.
    pub async fn api_user(&self) -> Result<&str, ErpNextError> {
        self.user
            .get_or_try_init(|| async {
                let answer = self
                    .client
                    .call("frappe.auth.get_logged_user", &serde_json::json!({}))
                    .await?;
                Ok(answer.as_str().unwrap_or_default().to_string())
            })
            .await
            .map(String::as_str)
    }

    /// How `doc`, written by lead2ledger before, stands against the HubSpot version `source`:
    /// versions compare HubSpot time with HubSpot time ([`SOURCE_VERSION`]); a document without
    /// one (written by an older version) counts as older. Then who saved it last: anyone but our
    /// API user means a human (or another integration) edited it since.
    pub async fn judge(&self, doc: &Doc, source: DateTime<Utc>) -> Result<Judgement, ErpNextError> {
        // Stored with microseconds: compare at that precision.
        let source = source.trunc_subsecs(6);
        if let Some(stored) = stored_version(doc)
            && source <= stored
        {
            return Ok(Judgement::Stale { stored });
        }
        let by = doc.str("modified_by").unwrap_or_default();
        if !by.is_empty() && by != self.api_user().await? {
            return Ok(Judgement::EditedInErpNext {
                by: by.to_string(),
                at: doc.modified().unwrap_or_default().to_string(),
            });
        }
        Ok(Judgement::Apply)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn versions_round_trip_at_microseconds() {
        let t = "2026-11-24T17:17:35.284407123Z"
            .parse::<DateTime<Utc>>()
            .expect("ts");
        let stored = source_version(t);
        assert_eq!(stored, "2026-11-24T17:17:35.284407Z");
        let doc = Doc(json!({"name": "SO-1", SOURCE_VERSION: stored})
            .as_object()
            .cloned()
            .unwrap_or_default());
        assert_eq!(stored_version(&doc), Some(t.trunc_subsecs(6)));
        let none = Doc(json!({"name": "SO-1"})
            .as_object()
            .cloned()
            .unwrap_or_default());
        assert_eq!(stored_version(&none), None);
    }
}
