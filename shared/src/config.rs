//! Configuration (DESIGN §8): one TOML file for every binary, every key overridable from the
//! environment as `L2L_<SECTION>__<KEY>` (e.g. `L2L_AMQP__URL`), secrets also from a file named by
//! `L2L_<SECTION>__<KEY>_FILE` (Kubernetes secrets), all with defaults that run the local demo.
//!
//! Loading uses figment so an error names the key and where its value came from, which is what
//! `<binary> config check` prints. Semantic checks that span keys live in [`Settings::validate`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::mapping::MappingConfig;
use crate::names::Names;

pub const ENV_PREFIX: &str = "L2L_";
pub const CONFIG_PATH_ENV: &str = "L2L_CONFIG";
/// Prefixes of the test harness's own variables (`L2L_TEST_AMQP_URL`, `L2L_REQUIRE_REAL_ERPNEXT`,
/// …): never configuration, so a service a test starts as a child process ignores them.
pub const NOT_CONFIG_PREFIXES: [&str; 2] = ["L2L_TEST_", "L2L_REQUIRE_"];

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read secret file {path} (from {var}): {source}")]
    SecretFile {
        var: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(Box<figment::Error>),
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// One semantic problem, located by its key, with a fix a human can apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub key: String,
    pub message: String,
    pub fix: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.message, self.fix)
    }
}

impl Problem {
    pub fn new(key: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub amqp: AmqpConfig,
    pub redis: RedisConfig,
    pub ingest: IngestConfig,
    pub hubspot: HubSpotConfig,
    pub erpnext: ErpNextConfig,
    pub worker: WorkerConfig,
    pub crm_writer: CrmWriterConfig,
    pub reconcile: ReconcileConfig,
    pub telemetry: TelemetryConfig,
    pub mapping: MappingConfig,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AmqpConfig {
    /// Broker URL; the vhost is the path (`%2f` for `/`).
    pub url: String,
    /// Prefix of every exchange and queue name, so tenants and tests can share a broker.
    pub namespace: String,
    /// The poison budget: a message whose handler panicked this many times, or that came back
    /// more often than this without being settled (a worker crashing on it), is dead-lettered as
    /// `poison`. Enforced by the consumer runtime, not by a queue argument, so it can change
    /// freely; at most [`crate::broker::WORK_QUEUE_DELIVERY_LIMIT`].
    pub delivery_limit: u32,
    /// Longest pause between reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub reconnect_max_delay: Duration,
}

impl Default for AmqpConfig {
    fn default() -> Self {
        Self {
            url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            namespace: "l2l".into(),
            delivery_limit: 20,
            reconnect_max_delay: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub url: String,
    /// How long the mapper remembers an event it has seen (HubSpot retries for up to a day).
    #[serde(with = "humantime_serde")]
    pub seen_ttl: Duration,
    /// A writer's lease on one key. The holder renews it every third of this while it works, so
    /// it only has to outlast a missed renewal; it is also how long a crashed writer's keys stay
    /// blocked (others wait for it rather than climb the retry ladder).
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// How long a writer remembers a finished command.
    #[serde(with = "humantime_serde")]
    pub done_ttl: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            seen_ttl: Duration::from_secs(7 * 24 * 3600),
            lease_ttl: Duration::from_secs(15),
            done_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestConfig {
    pub listen: SocketAddr,
    /// Public base URL HubSpot calls (scheme and host as HubSpot sees them; TLS usually ends at a
    /// proxy). The v3 signature covers this URL, not the one the process listens on.
    pub public_url: Url,
    /// The exact public URL of the HubSpot webhook endpoint, when a proxy maps another path onto
    /// `/webhooks/hubspot`; default `<public_url>/webhooks/hubspot`. The request's query string
    /// is appended, as HubSpot signs it.
    pub hubspot_public_url: Option<Url>,
    /// Largest accepted body. HubSpot batches up to 100 events (~60 KiB); Frappe full documents are
    /// larger. Beyond this: 413.
    pub max_body_bytes: usize,
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Accept HubSpot v1/v2 signatures (no timestamp, so no replay protection). Off by default.
    pub accept_v1_v2: bool,
    /// Maximum age of a v3 request timestamp.
    #[serde(with = "humantime_serde")]
    pub signature_max_age: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            #[allow(clippy::unwrap_used)] // a constant that parses
            public_url: Url::parse("http://127.0.0.1:8080").unwrap(),
            hubspot_public_url: None,
            max_body_bytes: 1024 * 1024,
            request_timeout: Duration::from_secs(10),
            accept_v1_v2: false,
            signature_max_age: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HubSpotConfig {
    /// API base; the simulator's URL in the demo, `https://api.hubapi.com` for real.
    pub base_url: Url,
    /// Private-app access token (Bearer).
    #[serde(skip_serializing)]
    pub access_token: Option<SecretString>,
    /// The app's client secret: the key of webhook signatures.
    #[serde(skip_serializing)]
    pub client_secret: Option<SecretString>,
    /// Portal (hub) ID; names the shared rate budget.
    pub portal_id: String,
    /// Base URL of the HubSpot UI, for links.
    pub app_url: Url,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    pub budget: BudgetConfig,
}

impl Default for HubSpotConfig {
    fn default() -> Self {
        #[allow(clippy::unwrap_used)] // constants that parse
        Self {
            base_url: Url::parse("http://127.0.0.1:8091").unwrap(),
            access_token: None,
            client_secret: None,
            portal_id: "62515".into(),
            app_url: Url::parse("https://app.hubspot.com").unwrap(),
            timeout: Duration::from_secs(20),
            budget: BudgetConfig::default(),
        }
    }
}

/// HubSpot's limits for the account tier (DESIGN §6); shared by every replica through Redis.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Requests per rolling 10 s (100 Free/Starter, 190 Professional/Enterprise).
    pub per_10s: u32,
    /// Search requests per second (4 per token).
    pub search_per_second: u32,
    /// Requests per day (0 = unlimited).
    pub daily: u32,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            per_10s: 100,
            search_per_second: 4,
            daily: 250_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ErpNextConfig {
    pub base_url: Url,
    /// Site name used in idempotency keys (`erpnext:<site>:…`); defaults to the base URL's host.
    pub site: Option<String>,
    pub api_key: Option<String>,
    #[serde(skip_serializing)]
    pub api_secret: Option<SecretString>,
    /// Secret of the Frappe Webhooks (`enable_security`), key of `X-Frappe-Webhook-Signature`.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<SecretString>,
    /// Requests in flight per writer process (protects ERPNext's gunicorn workers).
    pub max_concurrency: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// URL ERPNext's webhooks call (ingest's public URL as ERPNext sees it); `erp-writer setup`
    /// appends `/webhooks/erpnext/<doctype>/<event>`.
    pub webhook_target: Option<Url>,
    /// IANA time zone of the ERPNext site (System Settings → Time Zone). ERPNext's `modified` is a
    /// naive site-local time; erp-writer compares it with HubSpot's UTC timestamps so an older
    /// HubSpot change never overwrites a newer ERPNext document.
    pub time_zone: String,
}

impl Default for ErpNextConfig {
    fn default() -> Self {
        #[allow(clippy::unwrap_used)] // a constant that parses
        Self {
            base_url: Url::parse("http://127.0.0.1:8092").unwrap(),
            site: None,
            api_key: None,
            api_secret: None,
            webhook_secret: None,
            max_concurrency: 8,
            timeout: Duration::from_secs(30),
            webhook_target: None,
            time_zone: "UTC".into(),
        }
    }
}

impl IngestConfig {
    /// The URL HubSpot's v3 signature covers, without query string.
    pub fn hubspot_webhook_url(&self) -> String {
        match &self.hubspot_public_url {
            Some(u) => u.as_str().to_string(),
            None => format!(
                "{}/webhooks/hubspot",
                self.public_url.as_str().trim_end_matches('/')
            ),
        }
    }
}

impl ErpNextConfig {
    pub fn site(&self) -> String {
        self.site
            .clone()
            .or_else(|| self.base_url.host_str().map(str::to_string))
            .unwrap_or_else(|| "erpnext".into())
    }
}

/// Consumer runtime settings shared by mapper, erp-writer and crm-writer (DESIGN §3, §4).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Unacked deliveries per consumer (`basic_qos`): bounds memory and in-flight work.
    pub prefetch: u16,
    /// Deliveries handled concurrently by one process.
    pub concurrency: usize,
    /// Quick in-process attempts for a transient error before the retry ladder.
    pub quick_attempts: u32,
    #[serde(with = "humantime_serde")]
    pub quick_base_delay: Duration,
    /// The retry ladder, one queue per tier.
    #[serde(with = "duration_list")]
    pub retry_tiers: Vec<Duration>,
    /// Where `/healthz`, `/readyz` and `/metrics` of a worker are served.
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM, how long in-flight deliveries may take to finish and be acked. Past it the
    /// worker closes its channel and exits anyway: the unfinished deliveries go back to the
    /// queue and are applied idempotently, as after a crash. Keep it below the platform's grace
    /// period (Kubernetes `terminationGracePeriodSeconds`, compose `stop_grace_period`) so the
    /// exit is clean and logged rather than a SIGKILL.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            prefetch: 32,
            concurrency: 16,
            quick_attempts: 3,
            quick_base_delay: Duration::from_millis(200),
            retry_tiers: vec![
                Duration::from_secs(5),
                Duration::from_secs(30),
                Duration::from_secs(300),
                Duration::from_secs(1800),
            ],
            metrics_listen: None,
            drain_timeout: Duration::from_secs(60),
        }
    }
}

/// crm-writer's batching of HubSpot writes (DESIGN §6). Its handlers mostly wait for a batch to
/// fill, so it needs far more deliveries in flight than the other workers: `in_flight` replaces
/// `worker.prefetch` and `worker.concurrency` for crm-writer, and should be at least
/// `2 × max_batch` so one batch can fill while the previous one is being written.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct CrmWriterConfig {
    /// How long the first pending update of a batch waits for more (same object: merged into one
    /// input; other objects: same `batch/update` call).
    #[serde(with = "humantime_serde")]
    pub coalesce_window: Duration,
    /// Objects per `batch/update` call (HubSpot accepts at most 100).
    pub max_batch: usize,
    /// Unacked deliveries and concurrent handler calls of one crm-writer process.
    pub in_flight: u16,
    /// HubSpot write calls in flight at once per object type, per process.
    pub parallel_batches: usize,
    /// How long the last applied `source_modified` per (object, property) is remembered in Redis.
    #[serde(with = "humantime_serde")]
    pub ordering_ttl: Duration,
}

impl Default for CrmWriterConfig {
    fn default() -> Self {
        Self {
            coalesce_window: Duration::from_millis(200),
            max_batch: 100,
            in_flight: 200,
            parallel_batches: 2,
            ordering_ttl: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// The mapper's sweep of ERPNext for Sales Invoices and Sales Orders changed since the last
/// sweep (`mapper/src/sweep.rs`): Frappe drops a webhook after three tries within ~5 s, so no fact
/// may depend on one delivery.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReconcileConfig {
    /// How often one mapper replica sweeps; `"off"` (or `"0s"`) disables the periodic sweep
    /// (`mapper reconcile --fix` still sweeps on demand).
    #[serde(with = "interval")]
    pub interval: Duration,
    /// How far back a sweep reads when its watermark is lost (Redis flushed or unreachable): a
    /// lost watermark costs a longer sweep, never a missed fact.
    #[serde(with = "humantime_serde")]
    pub lookback: Duration,
    /// Each sweep starts this far before the newest `modified` the last one saw, so a document
    /// whose transaction committed late (or a clock that disagrees) is still read.
    #[serde(with = "humantime_serde")]
    pub overlap: Duration,
}

impl Default for ReconcileConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            lookback: Duration::from_secs(7 * 24 * 3600),
            overlap: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    pub log_format: LogFormat,
    /// `RUST_LOG`-style filter, used when `RUST_LOG` is unset.
    pub log_level: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            log_format: LogFormat::Text,
            log_level: "info".into(),
        }
    }
}

impl Settings {
    /// Load from `path` (or `L2L_CONFIG`, or defaults only), then the process environment.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        let vars: Vec<(String, String)> = std::env::vars().collect();
        Self::load_from(path, &vars)
    }

    /// Load with an explicit environment, so tests need not touch the process's.
    pub fn load_from(
        path: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let path = path.map(Path::to_path_buf).or_else(|| {
            env.iter()
                .find(|(k, _)| k == CONFIG_PATH_ENV)
                .map(|(_, v)| PathBuf::from(v))
        });
        let mut figment = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(path) = &path {
            if !path.exists() {
                return Err(ConfigError::File {
                    path: path.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "no such file"),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let mut overrides = EnvOverrides::default();
        for (var, value) in env.iter().filter(|(k, _)| {
            k.starts_with(ENV_PREFIX)
                && k != CONFIG_PATH_ENV
                && !NOT_CONFIG_PREFIXES.iter().any(|p| k.starts_with(p))
        }) {
            let name = &var[ENV_PREFIX.len()..];
            // `L2L_HUBSPOT__CLIENT_SECRET_FILE=/run/secrets/x` sets `hubspot.client_secret`.
            if let Some(name) = name.strip_suffix("_FILE") {
                let contents =
                    std::fs::read_to_string(value).map_err(|source| ConfigError::SecretFile {
                        var: var.clone(),
                        path: PathBuf::from(value),
                        source,
                    })?;
                overrides.insert(
                    name,
                    Value::from(contents.trim_end_matches(['\n', '\r']).to_string()),
                );
            } else {
                // Same parsing as figment's own `Env`: "7" is an integer, "[a, b]" an array.
                let parsed: Value = value
                    .parse()
                    .unwrap_or_else(|never: std::convert::Infallible| match never {});
                overrides.insert(name, parsed);
            }
        }
        figment = figment.merge(overrides);
        let settings: Settings = figment
            .extract()
            .map_err(|e| ConfigError::Parse(Box::new(e)))?;
        let problems = settings.validate();
        if problems.is_empty() {
            Ok(settings)
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }

    /// Semantic checks figment cannot do; each problem names its key and a fix.
    pub fn validate(&self) -> Vec<Problem> {
        let mut p = Vec::new();
        if !self.amqp.url.starts_with("amqp://") && !self.amqp.url.starts_with("amqps://") {
            p.push(Problem::new(
                "amqp.url",
                "must start with amqp:// or amqps://",
                "e.g. amqp://guest:guest@127.0.0.1:5672/%2f",
            ));
        }
        if !(1..=crate::broker::WORK_QUEUE_DELIVERY_LIMIT).contains(&self.amqp.delivery_limit) {
            p.push(Problem::new(
                "amqp.delivery_limit",
                format!(
                    "must be between 1 and {} (the work queues' own backstop)",
                    crate::broker::WORK_QUEUE_DELIVERY_LIMIT
                ),
                "the default is 20",
            ));
        }
        if self.amqp.namespace.is_empty() || self.amqp.namespace.contains([' ', '#', '*']) {
            p.push(Problem::new(
                "amqp.namespace",
                "must be non-empty without spaces, '#' or '*'",
                "use e.g. \"l2l\"",
            ));
        }
        if !self.redis.url.starts_with("redis://") && !self.redis.url.starts_with("rediss://") {
            p.push(Problem::new(
                "redis.url",
                "must start with redis:// or rediss://",
                "e.g. redis://127.0.0.1:6379",
            ));
        }
        if self.ingest.max_body_bytes < 1024 {
            p.push(Problem::new(
                "ingest.max_body_bytes",
                "is below 1 KiB",
                "use at least 1048576",
            ));
        }
        if self.worker.prefetch == 0 {
            p.push(Problem::new(
                "worker.prefetch",
                "must be at least 1",
                "use e.g. 32",
            ));
        }
        if self.worker.concurrency == 0 {
            p.push(Problem::new(
                "worker.concurrency",
                "must be at least 1",
                "use e.g. 16",
            ));
        }
        if self.worker.retry_tiers.is_empty() {
            p.push(Problem::new(
                "worker.retry_tiers",
                "is empty",
                "use e.g. [\"5s\", \"30s\", \"5m\", \"30m\"]",
            ));
        }
        if self.reconcile.lookback <= self.reconcile.overlap {
            p.push(Problem::new(
                "reconcile.lookback",
                "must be longer than reconcile.overlap",
                "use e.g. \"7days\" (and an overlap of a few minutes)",
            ));
        }
        if self.erpnext.time_zone.parse::<chrono_tz::Tz>().is_err() {
            p.push(Problem::new(
                "erpnext.time_zone",
                format!("{:?} is not an IANA time zone", self.erpnext.time_zone),
                "use the site's System Settings time zone, e.g. \"America/New_York\" or \"UTC\"",
            ));
        }
        if self.erpnext.max_concurrency == 0 {
            p.push(Problem::new(
                "erpnext.max_concurrency",
                "must be at least 1",
                "use e.g. 8",
            ));
        }
        if self.hubspot.budget.per_10s == 0 {
            p.push(Problem::new(
                "hubspot.budget.per_10s",
                "must be at least 1",
                "100 (Free/Starter) or 190 (Professional/Enterprise)",
            ));
        }
        if !(1..=100).contains(&self.crm_writer.max_batch) {
            p.push(Problem::new(
                "crm_writer.max_batch",
                "must be between 1 and 100 (HubSpot's batch limit)",
                "use 100",
            ));
        }
        if self.crm_writer.in_flight == 0 || self.crm_writer.parallel_batches == 0 {
            p.push(Problem::new(
                "crm_writer.in_flight / crm_writer.parallel_batches",
                "must be at least 1",
                "use in_flight = 200 and parallel_batches = 2",
            ));
        }
        p.extend(self.mapping.validate());
        p
    }

    pub fn names(&self) -> Names {
        Names::new(self.amqp.namespace.clone())
    }
}

/// `L2L_<SECTION>__<KEY>` variables as a figment provider. figment's own `Env` reads the process
/// environment; this one takes the pairs it is given, so tests can pass theirs, and its metadata
/// names the variable in error messages.
#[derive(Default)]
struct EnvOverrides(Dict);

impl EnvOverrides {
    fn insert(&mut self, name: &str, value: Value) {
        let path: Vec<String> = name.split("__").map(str::to_ascii_lowercase).collect();
        let mut dict = &mut self.0;
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        for part in parents {
            let entry = dict
                .entry(part.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if !matches!(entry, Value::Dict(..)) {
                *entry = Value::from(Dict::new());
            }
            let Value::Dict(_, inner) = entry else {
                return;
            };
            dict = inner;
        }
        dict.insert(last.clone(), value);
    }
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable")
            .interpolater(|_, keys| format!("{ENV_PREFIX}{}", keys.join("__").to_ascii_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        Ok(Profile::Default.collect(self.0.clone()))
    }
}

/// `<binary> config check`: load, validate, print a verdict. Exit code 0 when valid, 78 (EX_CONFIG)
/// when not, so scripts can tell a bad config from a crash.
pub fn check_command(path: Option<&Path>, binary: &str) -> std::process::ExitCode {
    match check_offline(path, binary) {
        Ok(_) => std::process::ExitCode::SUCCESS,
        Err(code) => code,
    }
}

/// The offline part of `config check` (the file and the mapping alone), verdict printed; the
/// settings when valid, so binaries that talk to ERPNext can go on to check the site
/// (`erpnext::site_check::check_command`).
pub fn check_offline(
    path: Option<&Path>,
    binary: &str,
) -> Result<Settings, std::process::ExitCode> {
    match Settings::load(path) {
        Ok(s) => {
            println!(
                "{binary}: configuration OK (namespace {}, broker {}, redis {})",
                s.amqp.namespace,
                redact_url(&s.amqp.url),
                redact_url(&s.redis.url)
            );
            println!(
                "{binary}: HubSpot webhook subscriptions this mapping needs (your app's settings):"
            );
            for sub in crate::subscriptions::required(&s.mapping) {
                println!("  {sub}");
            }
            Ok(s)
        }
        Err(e) => {
            eprintln!("{binary}: {e}");
            Err(std::process::ExitCode::from(EXIT_INVALID_CONFIG))
        }
    }
}

/// Distinct exit code for an invalid configuration (sysexits `EX_CONFIG`).
pub const EXIT_INVALID_CONFIG: u8 = 78;

/// A URL with its password replaced, safe to log.
pub fn redact_url(raw: &str) -> String {
    match Url::parse(raw) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparseable url>".into(),
    }
}

/// A duration that can be switched off: `"off"`, `"0s"` or `0` ⇄ `Duration::ZERO`.
mod interval {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        if v.is_zero() {
            s.serialize_str("off")
        } else {
            s.serialize_str(&humantime::format_duration(*v).to_string())
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Seconds(n) => Ok(Duration::from_secs(n)),
            Raw::Text(t) if t.trim().eq_ignore_ascii_case("off") => Ok(Duration::ZERO),
            Raw::Text(t) => humantime::parse_duration(t.trim())
                .map_err(|e| D::Error::custom(format!("{t:?}: {e} (or \"off\")"))),
        }
    }
}

/// `["5s", "30s"]` ⇄ `Vec<Duration>`.
mod duration_list {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<humantime_serde::Serde<Duration>>::deserialize(d)
            .map(|v| v.into_iter().map(|x| x.into_inner()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_sweep_interval_can_be_switched_off() {
        let s = Settings::load_from(None, &[]).expect("defaults");
        assert_eq!(s.reconcile.interval, Duration::from_secs(300));
        for off in ["off", "OFF", "0s", "0"] {
            let s = Settings::load_from(None, &env(&[("L2L_RECONCILE__INTERVAL", off)]))
                .expect("valid");
            assert!(s.reconcile.interval.is_zero(), "{off}");
            assert_eq!(
                serde_json::to_value(&s.reconcile).expect("json")["interval"],
                "off"
            );
        }
        let s =
            Settings::load_from(None, &env(&[("L2L_RECONCILE__INTERVAL", "90s")])).expect("valid");
        assert_eq!(s.reconcile.interval, Duration::from_secs(90));
        assert!(Settings::load_from(None, &env(&[("L2L_RECONCILE__INTERVAL", "soon")])).is_err());
        let problems = Settings::load_from(None, &env(&[("L2L_RECONCILE__LOOKBACK", "1m")]))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(problems.contains("reconcile.lookback"), "{problems}");
    }

    #[test]
    fn defaults_load_without_a_file() {
        let s = Settings::load_from(None, &[]).expect("defaults are valid");
        assert_eq!(s.amqp.namespace, "l2l");
        assert_eq!(s.worker.retry_tiers.len(), 4);
    }

    #[test]
    fn file_then_env_then_secret_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[amqp]\nnamespace = \"fromfile\"\n[ingest]\nlisten = \"127.0.0.1:9000\"\n[worker]\nretry_tiers = [\"50ms\", \"1s\"]\n",
        )
        .expect("write");
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").expect("write");
        let s = Settings::load_from(
            Some(&cfg),
            &env(&[
                ("L2L_INGEST__LISTEN", "127.0.0.1:9100"),
                (
                    "L2L_HUBSPOT__CLIENT_SECRET_FILE",
                    secret.to_str().expect("utf8"),
                ),
                ("L2L_AMQP__DELIVERY_LIMIT", "7"),
                ("OTHER", "x"),
                // The test harness's own variables are not configuration.
                ("L2L_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5673/%2f"),
                ("L2L_REQUIRE_REAL_ERPNEXT", "1"),
            ]),
        )
        .expect("loads");
        assert_eq!(s.amqp.namespace, "fromfile");
        assert_eq!(s.amqp.delivery_limit, 7);
        assert_eq!(s.ingest.listen.port(), 9100);
        assert_eq!(
            s.worker.retry_tiers,
            vec![Duration::from_millis(50), Duration::from_secs(1)]
        );
        assert_eq!(
            s.hubspot
                .client_secret
                .as_ref()
                .map(|s| s.expose_secret().to_string()),
            Some("s3cret".to_string())
        );
        assert!(
            !format!("{s:?}").contains("s3cret"),
            "secrets never reach Debug output"
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_located() {
        let dir = tempfile::tempdir().expect("tmp");
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "[amqp]\nnamspace = \"typo\"\n").expect("write");
        let err = Settings::load_from(Some(&cfg), &[]).expect_err("unknown key");
        let msg = err.to_string();
        assert!(msg.contains("namspace"), "{msg}");

        let err = Settings::load_from(None, &env(&[("L2L_INGEST__LISTEN", "nope")]))
            .expect_err("bad addr");
        assert!(
            err.to_string().contains("L2L_INGEST__LISTEN") || err.to_string().contains("listen"),
            "{err}"
        );

        let err = Settings::load_from(None, &env(&[("L2L_WORKER__PREFETCH", "0")]))
            .expect_err("semantic");
        assert!(err.to_string().contains("worker.prefetch"), "{err}");
    }

    #[test]
    fn the_delivery_limit_is_checked_against_the_queues_backstop() {
        for bad in ["0", "1001"] {
            let err = Settings::load_from(None, &env(&[("L2L_AMQP__DELIVERY_LIMIT", bad)]))
                .expect_err("out of range");
            assert!(
                err.to_string().contains("amqp.delivery_limit"),
                "{bad}: {err}"
            );
        }
        let s = Settings::load_from(None, &env(&[("L2L_AMQP__DELIVERY_LIMIT", "1000")]))
            .expect("the backstop itself is allowed");
        assert_eq!(
            s.amqp.delivery_limit,
            crate::broker::WORK_QUEUE_DELIVERY_LIMIT
        );
    }

    #[test]
    fn erpnext_time_zone_must_be_an_iana_name() {
        let err = Settings::load_from(None, &env(&[("L2L_ERPNEXT__TIME_ZONE", "Mars/Olympus")]))
            .expect_err("bad zone");
        assert!(err.to_string().contains("erpnext.time_zone"), "{err}");
        let s = Settings::load_from(
            None,
            &env(&[("L2L_ERPNEXT__TIME_ZONE", "America/New_York")]),
        )
        .expect("valid zone");
        assert_eq!(s.erpnext.time_zone, "America/New_York");
    }

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("amqp://guest:guest@h:5672/%2f"),
            "amqp://guest:***@h:5672/%2f"
        );
    }
}
