//! The `ingest` binary's command line: an invalid configuration stops every command with
//! EX_CONFIG (78) and names the key, as the workers do, so an orchestrator does not restart it
//! in a loop hoping for a different result.

use std::process::{Command, Output};

fn ingest(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ingest"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("L2L_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .expect("run ingest")
}

fn bad_config() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("ingest-cli-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[ingest]\nlisten = \"not an address\"\n").expect("write");
    path
}

#[test]
fn an_invalid_configuration_exits_78_naming_the_key_for_every_command() {
    let config = bad_config();
    for args in [&["run"][..], &["backfill"], &["config", "check"]] {
        let out = ingest(&config, args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "ingest {args:?}: {err}");
        assert!(err.contains("listen"), "ingest {args:?}: {err}");
    }
    if let Some(dir) = config.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}
