//! The ERPNext site as the steps see it: the client plus the site's clock.
//!
//! ERPNext stamps documents with a naive site-local `modified` (`2026-11-24 12:17:35.284407`),
//! HubSpot with UTC instants. DESIGN §5 asks writers to compare the two so an older HubSpot change
//! never overwrites a newer ERPNext document; that needs the site's time zone
//! (`erpnext.time_zone`). It also holds what a process caches about the site (tax templates).

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use shared::erpnext::ErpNextClient;

use crate::taxes::TaxTemplates;

#[derive(Debug, Clone)]
pub struct ErpSite {
    pub client: ErpNextClient,
    pub time_zone: Tz,
    /// Tax template rows, cached for every command this process applies.
    pub taxes: TaxTemplates,
}

impl ErpSite {
    pub fn new(client: ErpNextClient, time_zone: Tz) -> Self {
        Self {
            client,
            time_zone,
            taxes: TaxTemplates::default(),
        }
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
