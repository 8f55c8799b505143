//! The `colloquy` binary as a user runs it.

mod common;

use std::process::Command;

use common::{config, repo_path};

fn colloquy() -> Command {
    Command::new(env!("CARGO_BIN_EXE_colloquy"))
}

#[test]
fn refuses_to_start_without_models_and_names_make_setup() {
    let dir = std::env::temp_dir().join(format!("colloquy-nomodels-{}", std::process::id()));
    let out = colloquy()
        .args(["transcribe", repo_path("tests/data/speech_en.flac").to_str().unwrap()])
        .env("COLLOQUY__MODELS__DIR", &dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("make setup"), "stderr: {err}");
    assert!(!dir.exists(), "nothing is created on failure");
}

#[test]
fn transcribe_json_has_segments_provider_and_timings() {
    if config().is_none() {
        return;
    }
    let out = colloquy()
        .args(["transcribe", "--format", "json", repo_path("tests/data/speech_en.flac").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["full_text"].as_str().unwrap().to_lowercase().contains("thank you for coming to the meeting"), "{v}");
    assert!(!v["segments"].as_array().unwrap().is_empty());
    assert_eq!(v["provider"]["runtime"], "onnxruntime");
    assert_eq!(v["provider"]["device"], "cpu");
    assert!(v["performance_metrics"]["total_seconds"].as_f64().unwrap() > 0.0);
    assert!((v["duration"].as_f64().unwrap() - 9.83).abs() < 0.05);
}

#[test]
fn transcribe_txt_prints_timestamped_lines() {
    if config().is_none() {
        return;
    }
    let out = colloquy()
        .args(["transcribe", repo_path("tests/data/speech_en.flac").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(first.starts_with("[00:00:0") && first.contains(" --> "), "{text}");
}

#[test]
fn a_non_audio_file_is_a_clear_error() {
    if config().is_none() {
        return;
    }
    let out = colloquy().args(["transcribe", repo_path("Cargo.toml").to_str().unwrap()]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a supported audio file"), "stderr: {err}");
}
