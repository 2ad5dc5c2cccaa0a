//! What a simulated HubSpot portal is configured with: accepted tokens, the rate budget, webhook
//! subscriptions and delivery, fault injection. Every field has a default that makes a working demo
//! portal (token `demo-token`, portal 62515), so a config file only names what differs.
//!
//! Loading from a file lives here too (`load`), so the binary stays a thin `main.rs`.

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::sim::faults::FaultConfig;

/// The whole simulator configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSpotSimConfig {
    /// Bearer tokens the API accepts (private-app access tokens). Each token has its own budget,
    /// as HubSpot keys its limits per token/app.
    pub tokens: Vec<String>,
    pub rate_limits: RateLimitConfig,
    pub webhooks: WebhookConfig,
    pub faults: FaultConfig,
    /// First object id handed out. `None`: derived from the clock, so ids differ between runs and a
    /// long-lived ERPNext never sees a restarted simulator reuse a `hubspot_deal_id`.
    pub first_object_id: Option<u64>,
    /// Answer `null` for a requested property that has no value, as HubSpot does (its spec types the
    /// map as strings, the live API sends nulls). `false` omits such properties instead.
    pub unset_properties_as_null: bool,
}

impl Default for HubSpotSimConfig {
    fn default() -> Self {
        Self {
            tokens: vec!["demo-token".into()],
            rate_limits: RateLimitConfig::default(),
            webhooks: WebhookConfig::default(),
            faults: FaultConfig::default(),
            first_object_id: None,
            unset_properties_as_null: true,
        }
    }
}

/// HubSpot's request budget (contracts/hubspot/api/README.md §8). A limit of 0 disables it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per rolling window per token (100 Free/Starter, 190 Professional/Enterprise).
    pub per_10s: u32,
    /// Length of that rolling window. HubSpot's is 10 s; tests shorten it to observe recovery fast.
    pub window_ms: u64,
    /// Search requests per second per token; search has its own budget, outside the 10 s window.
    pub search_per_second: u32,
    /// Length of the search window (1 s at HubSpot).
    pub search_window_ms: u64,
    /// Requests per token since start (or the last reset); HubSpot's daily cap.
    pub daily: u64,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            per_10s: 100,
            window_ms: 10_000,
            search_per_second: 4,
            search_window_ms: 1_000,
            daily: 250_000,
        }
    }
}

/// Webhook subscriptions of the simulated app and how deliveries behave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where batches are POSTed; `None`: events are recorded but not sent.
    pub target_url: Option<Url>,
    /// The app's client secret, the key of `X-HubSpot-Signature-v3`.
    pub client_secret: String,
    pub portal_id: u64,
    pub app_id: u64,
    /// `deal.propertyChange` subscriptions (one per property, as in HubSpot).
    pub deal_properties: Vec<String>,
    /// `deal.creation` subscription.
    pub deal_creation: bool,
    pub company_creation: bool,
    pub company_properties: Vec<String>,
    pub contact_creation: bool,
    pub contact_properties: Vec<String>,
    /// Line item property changes: HubSpot offers them only as generic subscriptions
    /// (`object.propertyChange` with `objectName: line_item`), sent with `objectTypeId: "0-8"`.
    pub line_item_properties: Vec<String>,
    /// `<type>.deletion` and `<type>.restore` subscriptions (deals, companies, contacts).
    pub deletions: bool,
    /// `<type>.associationChange` subscriptions.
    pub association_changes: bool,
    /// `deal.merge`, `company.merge` and `contact.merge` subscriptions.
    pub merges: bool,
    /// Give every event the same `eventId`: HubSpot documents it as "not guaranteed to be
    /// unique", so a receiver must not take it for an event's identity.
    pub repeat_event_ids: bool,
    /// Send every batch twice (HubSpot's at-least-once delivery, exaggerated for reliability tests).
    pub duplicate: bool,
    /// Attempts per batch, the first included (HubSpot: 10).
    pub max_attempts: u32,
    /// Pause before the first retry; doubles per attempt up to `retry_max_ms`.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// Most events in one request (HubSpot: 100).
    pub batch_max: usize,
    /// How long the first event of a batch waits for more events before the batch is sent.
    pub flush_ms: u64,
    /// A delivery that takes longer failed (HubSpot: 5 s).
    pub timeout_ms: u64,
    /// Deliveries in flight at once (HubSpot's per-app `maxConcurrentRequests`, default 10).
    pub max_concurrent: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            target_url: None,
            client_secret: "demo-client-secret".into(),
            portal_id: 62515,
            app_id: 1160452,
            deal_properties: vec!["dealstage".into()],
            deal_creation: true,
            company_creation: false,
            company_properties: Vec::new(),
            contact_creation: false,
            contact_properties: Vec::new(),
            line_item_properties: Vec::new(),
            deletions: false,
            association_changes: false,
            merges: false,
            repeat_event_ids: false,
            duplicate: false,
            max_attempts: 10,
            retry_initial_ms: 1_000,
            retry_max_ms: 60_000,
            batch_max: 100,
            flush_ms: 50,
            timeout_ms: 5_000,
            max_concurrent: 10,
        }
    }
}

/// A partial change of [`WebhookConfig`] at runtime (`PUT /_sim/webhooks`); absent fields stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookUpdate {
    /// A URL sets the target; an empty string removes it.
    pub target_url: Option<String>,
    pub client_secret: Option<String>,
    pub duplicate: Option<bool>,
    pub deal_properties: Option<Vec<String>>,
    pub deal_creation: Option<bool>,
    pub company_creation: Option<bool>,
    pub company_properties: Option<Vec<String>>,
    pub contact_creation: Option<bool>,
    pub contact_properties: Option<Vec<String>>,
    pub line_item_properties: Option<Vec<String>>,
    pub deletions: Option<bool>,
    pub association_changes: Option<bool>,
    pub merges: Option<bool>,
    pub repeat_event_ids: Option<bool>,
    pub max_attempts: Option<u32>,
    pub retry_initial_ms: Option<u64>,
    pub retry_max_ms: Option<u64>,
}

/// Why a configuration could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file: {0}")]
    Toml(#[from] Box<figment::Error>),
    #[error("configuration file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("configuration file {path}: {source}")]
    Json {
        path: String,
        source: serde_json::Error,
    },
    #[error("target_url {0:?} is not a URL: {1}")]
    TargetUrl(String, url::ParseError),
}

impl HubSpotSimConfig {
    /// Read a TOML or JSON (by extension) file over the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            return serde_json::from_str(&text).map_err(|source| ConfigError::Json {
                path: path.display().to_string(),
                source,
            });
        }
        Figment::new()
            .merge(Toml::file_exact(path))
            .extract()
            .map_err(|e| ConfigError::Toml(Box::new(e)))
    }
}

impl WebhookConfig {
    /// Apply a runtime update; the target is parsed before anything changes.
    pub fn apply(&mut self, update: WebhookUpdate) -> Result<(), ConfigError> {
        let target = match update.target_url {
            None => self.target_url.clone(),
            Some(s) if s.trim().is_empty() => None,
            Some(s) => Some(Url::parse(&s).map_err(|e| ConfigError::TargetUrl(s.clone(), e))?),
        };
        self.target_url = target;
        let WebhookUpdate {
            target_url: _,
            client_secret,
            duplicate,
            deal_properties,
            deal_creation,
            company_creation,
            company_properties,
            contact_creation,
            contact_properties,
            line_item_properties,
            deletions,
            association_changes,
            merges,
            repeat_event_ids,
            max_attempts,
            retry_initial_ms,
            retry_max_ms,
        } = update;
        set(&mut self.line_item_properties, line_item_properties);
        set(&mut self.deletions, deletions);
        set(&mut self.association_changes, association_changes);
        set(&mut self.repeat_event_ids, repeat_event_ids);
        set(&mut self.merges, merges);
        set(&mut self.client_secret, client_secret);
        set(&mut self.duplicate, duplicate);
        set(&mut self.deal_properties, deal_properties);
        set(&mut self.deal_creation, deal_creation);
        set(&mut self.company_creation, company_creation);
        set(&mut self.company_properties, company_properties);
        set(&mut self.contact_creation, contact_creation);
        set(&mut self.contact_properties, contact_properties);
        set(&mut self.max_attempts, max_attempts);
        set(&mut self.retry_initial_ms, retry_initial_ms);
        set(&mut self.retry_max_ms, retry_max_ms);
        Ok(())
    }
}

fn set<T>(slot: &mut T, value: Option<T>) {
    if let Some(v) = value {
        *slot = v;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_file_overrides_only_what_it_names() {
        let dir =
            std::env::temp_dir().join(format!("hs-sim-cfg-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("sim.toml");
        std::fs::write(
            &path,
            "tokens = [\"a\", \"b\"]\n[rate_limits]\nper_10s = 7\n[webhooks]\ntarget_url = \"http://127.0.0.1:9/hook\"\n",
        )
        .expect("write");
        let cfg = HubSpotSimConfig::load(&path).expect("load");
        assert_eq!(cfg.tokens, ["a", "b"]);
        assert_eq!(cfg.rate_limits.per_10s, 7);
        assert_eq!(cfg.rate_limits.search_per_second, 4);
        assert_eq!(
            cfg.webhooks.target_url.as_ref().map(Url::as_str),
            Some("http://127.0.0.1:9/hook")
        );
        assert_eq!(cfg.webhooks.deal_properties, ["dealstage"]);
        std::fs::write(&path, "bogus = 1\n").expect("write");
        assert!(
            HubSpotSimConfig::load(&path).is_err(),
            "unknown keys are refused"
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn webhook_update_changes_named_fields_and_clears_target() {
        let mut cfg = WebhookConfig::default();
        cfg.apply(WebhookUpdate {
            target_url: Some("http://127.0.0.1:1/x".into()),
            duplicate: Some(true),
            ..Default::default()
        })
        .expect("apply");
        assert!(cfg.duplicate);
        assert!(cfg.target_url.is_some());
        assert_eq!(cfg.client_secret, "demo-client-secret");
        cfg.apply(WebhookUpdate {
            target_url: Some(String::new()),
            ..Default::default()
        })
        .expect("apply");
        assert!(cfg.target_url.is_none());
        assert!(
            cfg.apply(WebhookUpdate {
                target_url: Some("not a url".into()),
                ..Default::default()
            })
            .is_err()
        );
    }
}
