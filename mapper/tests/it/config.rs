//! `deploy/config.example.toml` documents every key of the configuration and loads to the
//! defaults; `mapper config check` locates problems and fixes.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_json::Value;
use shared::config::Settings;

fn example() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/config.example.toml")
}

/// Keys documented per section: `key = …` or `# key = …` lines (quoted table keys included).
fn documented(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let l = line.trim();
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            section = s.to_string();
            out.insert(section.clone());
            continue;
        }
        let l = l.trim_start_matches('#').trim();
        let Some((key, _)) = l.split_once('=') else {
            continue;
        };
        let key = key.trim().trim_matches('"');
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
        {
            out.insert(if section.is_empty() {
                key.to_string()
            } else {
                format!("{section}.{key}")
            });
        }
    }
    out
}

/// Every key path of the serialized defaults; tables (maps) contribute their own entries.
fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            // An empty table (e.g. `items.map`) must still show its section.
            if m.is_empty() {
                out.push(prefix.to_string());
            }
            for (k, v) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                keys(&p, v, out);
            }
        }
        _ => out.push(prefix.to_string()),
    }
}

#[test]
fn example_config_documents_every_key_and_loads_to_the_defaults() {
    let text = std::fs::read_to_string(example()).expect("example config");
    let documented = documented(&text);
    let mut all = Vec::new();
    keys(
        "",
        &serde_json::to_value(Settings::default()).expect("defaults"),
        &mut all,
    );
    // Secrets are never serialized; they must be documented all the same.
    all.extend(
        [
            "hubspot.access_token",
            "hubspot.client_secret",
            "erpnext.api_secret",
            "erpnext.webhook_secret",
        ]
        .map(String::from),
    );
    let missing: Vec<&String> = all.iter().filter(|k| !documented.contains(*k)).collect();
    assert!(
        missing.is_empty(),
        "keys not documented in deploy/config.example.toml: {missing:?}"
    );

    let loaded = Settings::load_from(Some(&example()), &[]).expect("the example loads");
    assert_eq!(
        serde_json::to_value(&loaded).expect("loaded"),
        serde_json::to_value(Settings::default()).expect("defaults"),
        "the example shows the defaults"
    );
}

#[test]
fn config_check_locates_mapping_problems() {
    let dir = std::env::temp_dir().join(format!("mapper-cfg-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[mapping.trigger]\nstages = []\n[mapping.items]\nunknown_sku = \"fallback_item\"\nsku_property = \"HS SKU\"\n",
    )
    .expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mapper"))
        .args(["--config", bad.to_str().expect("utf8"), "config", "check"])
        .env_remove("L2L_CONFIG")
        .output()
        .expect("run mapper");
    assert_eq!(out.status.code(), Some(78), "EX_CONFIG");
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "mapping.trigger.stages",
        "mapping.items.fallback_item",
        "mapping.items.sku_property",
    ] {
        assert!(err.contains(key), "{key} not in {err}");
    }
    assert!(err.contains("fix:"), "{err}");

    let good = dir.join("good.toml");
    std::fs::write(&good, "[mapping.items.map]\n\"W-9\" = \"SKU-WIDGET\"\n").expect("write");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mapper"))
        .args(["--config", good.to_str().expect("utf8"), "config", "check"])
        .env_remove("L2L_CONFIG")
        .output()
        .expect("run mapper");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// The mapper talks to ERPNext (reconcile, the sweep), so its `config check` asks the site too:
/// a time zone that is not the site's is refused with the key to set.
#[tokio::test]
async fn config_check_asks_erpnext_for_its_time_zone() {
    use l2l_tests::sim::erpnext::{ErpNextSim, ErpNextSimConfig};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let sim = ErpNextSim::start(ErpNextSimConfig::default(), listener)
        .await
        .expect("sim");
    let cfg = sim.config();
    let run = async |tz: &str| {
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_mapper"))
            .args(["config", "check"])
            .env_remove("L2L_CONFIG")
            .env("L2L_ERPNEXT__BASE_URL", sim.base_url())
            .env("L2L_ERPNEXT__API_KEY", &cfg.api_key)
            .env("L2L_ERPNEXT__API_SECRET", &cfg.api_secret)
            .env("L2L_ERPNEXT__TIME_ZONE", tz)
            .output()
            .await
            .expect("run mapper");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run("UTC").await;
    assert_eq!(code, Some(78), "{err}");
    assert!(
        err.contains("erpnext.time_zone") && err.contains("America/New_York"),
        "{err}"
    );
    let (code, err) = run(&cfg.timezone).await;
    assert_eq!(code, Some(0), "{err}");
    sim.shutdown().await;
}
