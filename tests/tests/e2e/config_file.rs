//! `--config FILE`: flag > environment > file > default, a typo'd key stops
//! the start with a message naming it, and `crier.example.toml` documents
//! every key of every binary.

use std::collections::BTreeSet;
use std::path::Path;

use clap::CommandFactory;
use reqwest::StatusCode;
use serde_json::json;

use crate::broker::free_port;
use crate::helpers::{CRIER, new_channel, wait_for_ready};
use crate::process::Service;

const EXAMPLE: &str = include_str!("../../../crier.example.toml");

/// The keys the example shows (`# key = value` lines).
fn documented_keys() -> BTreeSet<String> {
    EXAMPLE
        .lines()
        .filter_map(|line| line.strip_prefix("# "))
        .filter_map(|line| line.split_once(" = "))
        .map(|(key, _)| key.to_string())
        .filter(|key| key.chars().all(|c| c.is_ascii_lowercase() || c == '-'))
        .collect()
}

fn flags_of(command: clap::Command) -> BTreeSet<String> {
    command
        .get_arguments()
        .filter_map(|arg| arg.get_long())
        .filter(|long| !["config", "help", "version"].contains(long))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_example_documents_every_key_of_every_binary() {
    let documented = documented_keys();
    let binaries = [
        ("crier", flags_of(crier::config::Config::command())),
        (
            "chat-service",
            flags_of(chat_service::config::Config::command()),
        ),
        (
            "broadcast-sse",
            flags_of(broadcast_sse::config::Config::command()),
        ),
    ];
    let mut every_flag = BTreeSet::new();
    for (binary, flags) in binaries {
        let missing: Vec<&String> = flags.difference(&documented).collect();
        assert!(
            missing.is_empty(),
            "{binary}: undocumented keys {missing:?}"
        );
        every_flag.extend(flags);
    }
    let stale: Vec<&String> = documented.difference(&every_flag).collect();
    assert!(stale.is_empty(), "documented keys no binary has: {stale:?}");
}

/// A file's `listen` and `max-text-chars` apply; `CRIER_MAX_TEXT_CHARS` wins
/// over the file, and `--listen` over both.
#[tokio::test]
async fn flags_win_over_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file_port = free_port();
    let config = dir.path().join("crier.toml");
    let settings = format!("listen = \"127.0.0.1:{file_port}\"\nmax-text-chars = 5\n");
    std::fs::write(&config, settings).expect("write the file");

    let crier = start(dir.path(), &config, &[], &[]);
    assert_eq!(
        crier.url,
        format!("http://127.0.0.1:{file_port}"),
        "the file's listen"
    );
    assert_eq!(
        post(&crier.url, "sixsix").await,
        StatusCode::BAD_REQUEST,
        "the file's limit"
    );
    assert_eq!(post(&crier.url, "five!").await, StatusCode::CREATED);
    crier.kill();

    let flag_port = free_port();
    let listen = ["--listen".to_string(), format!("127.0.0.1:{flag_port}")];
    let env = [
        ("CRIER_MAX_TEXT_CHARS", "7"),
        ("CRIER_LISTEN", "127.0.0.1:1"),
    ];
    let crier = start(dir.path(), &config, &listen, &env);
    assert_eq!(
        crier.url,
        format!("http://127.0.0.1:{flag_port}"),
        "the flag's listen"
    );
    assert_eq!(
        post(&crier.url, "sixsix").await,
        StatusCode::CREATED,
        "the env's limit"
    );
    assert_eq!(post(&crier.url, "eight!!!").await, StatusCode::BAD_REQUEST);
}

#[test]
fn a_typo_in_the_file_stops_the_start_naming_the_key_and_the_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("crier.toml");
    std::fs::write(&config, "max-txt-chars = 5\n").expect("write the file");
    let output = std::process::Command::new(CRIER)
        .arg("--config")
        .arg(&config)
        .output()
        .expect("run crier");
    assert!(!output.status.success(), "crier refused to start");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown key `max-txt-chars`"), "{stderr}");
    assert!(stderr.contains(&config.display().to_string()), "{stderr}");
}

fn start(dir: &Path, config: &Path, flags: &[String], env: &[(&str, &str)]) -> Service {
    let mut args = vec![
        "--config".to_string(),
        config.display().to_string(),
        "--data-dir".into(),
        dir.join("data").display().to_string(),
    ];
    args.extend_from_slice(flags);
    Service::start_with_env(CRIER, &args, env, &dir.join("crier.log"))
}

async fn post(base: &str, text: &str) -> StatusCode {
    let http = crate::helpers::http_client();
    wait_for_ready(&http, base).await;
    let channel = new_channel();
    http.post(format!("{base}/channels/{channel}/messages"))
        .json(&json!({"author": "ann", "text": text}))
        .send()
        .await
        .expect("POST")
        .status()
}
