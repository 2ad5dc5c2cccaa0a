//! The ERPNext site as the steps see it: the client plus the site's clock.
//!
//! ERPNext stamps documents with a naive site-local `modified` (`2026-11-24 12:17:35.284407`),
//! HubSpot with UTC instants. DESIGN §5 asks writers to compare the two so an older HubSpot change
//! never overwrites a newer ERPNext document; that needs the site's time zone
//! (`erpnext.time_zone`). It also holds what a process caches about the site (tax templates, the
//! API user).
//!
//! Documents lead2ledger keeps following HubSpot (draft Sales Orders) also carry the HubSpot
//! version they were written from ([`SOURCE_VERSION`]), so "older never overwrites newer"
//! compares HubSpot time with HubSpot time ([`ErpSite::judge`]): ERPNext's own `modified` is set
//! by our own writes too, and comparing it with HubSpot's clock judged a newer deal change
//! "stale" whenever our insert of an older one happened after it.

use std::sync::Arc;

use chrono::{DateTime, NaiveDateTime, SecondsFormat, SubsecRound, TimeZone, Utc};
use chrono_tz::Tz;
use shared::erpnext::{Doc, ErpNextClient, ErpNextError};
use tokio::sync::OnceCell;

use crate::taxes::TaxTemplates;

#[derive(Debug, Clone)]
pub struct ErpSite {
    pub client: ErpNextClient,
    pub time_zone: Tz,
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
    pub fn new(client: ErpNextClient, time_zone: Tz) -> Self {
        Self {
            client,
            time_zone,
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

    /// ERPNext's naive `modified` as a UTC instant; `None` when missing or unparseable.
    pub fn erp_instant(&self, modified: Option<&str>) -> Option<DateTime<Utc>> {
        let raw = modified?.trim();
        let naive = NaiveDateTime::parse_from_str(raw, "%Y-%m-%d %H:%M:%S%.f")
            .or_else(|_| NaiveDateTime::parse_from_str(raw, "%Y-%m-%dT%H:%M:%S%.f"))
            .ok()?;
        // A time in a DST gap does not exist; one in an overlap is ambiguous: take the earlier
        // reading, which only ever lets a HubSpot change through, never blocks one.
        self.time_zone
            .from_local_datetime(&naive)
            .earliest()
            .map(|t| t.with_timezone(&Utc))
    }

    /// Whether a HubSpot change at `hubspot_modified` is newer than ERPNext's last write
    /// (`erp_modified`). An unknown ERPNext time counts as older: applying is the safe default
    /// for a document we cannot date.
    pub fn hubspot_is_newer(
        &self,
        hubspot_modified: DateTime<Utc>,
        erp_modified: Option<&str>,
    ) -> bool {
        match self.erp_instant(erp_modified) {
            Some(erp) => hubspot_modified > erp,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use shared::erpnext::ErpNextClient;

    use super::*;

    fn site(tz: &str) -> ErpSite {
        let client = ErpNextClient::with_token(
            &url::Url::parse("http://erp.test").expect("url"),
            "k",
            "s",
            Duration::from_secs(1),
            1,
        )
        .expect("client");
        ErpSite::new(client, tz.parse().expect("tz"))
    }

    #[test]
    fn site_time_is_converted_with_the_site_zone() {
        let s = site("America/New_York");
        let t = s
            .erp_instant(Some("2026-11-24 12:17:35.284407"))
            .expect("parses");
        assert_eq!(t.to_rfc3339(), "2026-11-24T17:17:35.284407+00:00");
        assert_eq!(
            site("UTC")
                .erp_instant(Some("2026-11-24 12:17:35"))
                .expect("parses")
                .to_rfc3339(),
            "2026-11-24T12:17:35+00:00"
        );
        assert_eq!(s.erp_instant(Some("yesterday")), None);
    }

    #[test]
    fn newer_compares_instants_not_wall_clocks() {
        let s = site("America/New_York");
        // 12:30 New York is 17:30 UTC: a HubSpot change at 17:00 UTC is older.
        let hs = "2026-11-24T17:00:00Z".parse::<DateTime<Utc>>().expect("ts");
        assert!(!s.hubspot_is_newer(hs, Some("2026-11-24 12:30:00.000000")));
        let hs = "2026-11-24T17:31:00Z".parse::<DateTime<Utc>>().expect("ts");
        assert!(s.hubspot_is_newer(hs, Some("2026-11-24 12:30:00.000000")));
        assert!(s.hubspot_is_newer(hs, None));
    }
}
