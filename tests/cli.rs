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
        .args([
            "transcribe",
            repo_path("tests/data/speech_en.flac").to_str().unwrap(),
        ])
        .env("COLLOQUY__MODELS__DIR", &dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("make setup"), "stderr: {err}");
    assert!(!dir.exists(), "nothing is created on failure");
}

#[test]
fn whisper_only_json_has_segments_provider_and_timings() {
    if config().is_none() {
        return;
    }
    let out = colloquy()
        .args([
            "transcribe",
            "--whisper-only",
            "--format",
            "json",
            repo_path("tests/data/speech_en.flac").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["full_text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("thank you for coming to the meeting"),
        "{v}"
    );
    assert!(!v["segments"].as_array().unwrap().is_empty());
    assert_eq!(v["provider"]["runtime"], "onnxruntime");
    assert_eq!(v["provider"]["device"], "cpu");
    assert!(v["performance_metrics"]["total_seconds"].as_f64().unwrap() > 0.0);
    assert!((v["duration"].as_f64().unwrap() - 9.83).abs() < 0.05);
}

#[test]
fn transcribe_txt_and_srt_print_the_api_exports() {
    if config().is_none() {
        return;
    }
    let out = colloquy()
        .args([
            "transcribe",
            repo_path("tests/data/speech_en.flac").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // the API's txt export: one paragraph per speaker turn
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with("[0:0") && first.contains(" - 0:") && first.contains("] Speaker 1: "),
        "{text}"
    );
    // the other export formats too
    let srt = colloquy()
        .args([
            "transcribe",
            "--format",
            "srt",
            repo_path("tests/data/speech_en.flac").to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(srt.status.success());
    let srt = String::from_utf8_lossy(&srt.stdout);
    let lines: Vec<&str> = srt.lines().collect();
    assert_eq!(lines[0], "1", "{srt}");
    assert!(
        lines[1].starts_with("00:00:0") && lines[1].contains(" --> 00:00:"),
        "{srt}"
    );
    assert!(lines[2].starts_with("Speaker 1: "), "{srt}");
}

#[test]
fn a_non_audio_file_is_a_clear_error() {
    if config().is_none() {
        return;
    }
    let out = colloquy()
        .args(["transcribe", repo_path("Cargo.toml").to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a supported audio file"), "stderr: {err}");
}

#[test]
fn transcribe_goes_through_the_pipeline_with_speakers() {
    if config().is_none() {
        return;
    }
    let clip = repo_path("tests/data/speech_en.flac");
    let out = colloquy()
        .args([
            "transcribe",
            "--format",
            "json",
            "--num-speakers",
            "1",
            clip.to_str().unwrap(),
            clip.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), 2, "one result per file");
    for v in &results {
        // the seed's result JSON
        for key in [
            "segments",
            "aligned_segments",
            "full_text",
            "language",
            "duration",
            "speaker_turns",
            "provider",
            "performance_metrics",
        ] {
            assert!(v.get(key).is_some(), "missing {key}: {v}");
        }
        assert!(
            v["full_text"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("thank you for coming to the meeting"),
            "{v}"
        );
        let segs = v["aligned_segments"].as_array().unwrap();
        assert!(!segs.is_empty());
        assert!(segs.iter().all(|s| s["speaker"] == "SPEAKER_00"), "{v}");
        for stage in [
            "decoding",
            "preprocessing",
            "transcription",
            "diarization",
            "alignment",
        ] {
            assert!(
                v["performance_metrics"]["stages"][stage].as_f64().is_some(),
                "no {stage} timing: {v}"
            );
        }
    }
}

#[test]
fn transcribe_conv1_finds_two_speakers() {
    let Some(path) = common::shared_data("synthetic/conv1.mp3") else {
        return;
    };
    if config().is_none() {
        return;
    }
    let out = colloquy()
        .args([
            "transcribe",
            "--format",
            "json",
            "--num-speakers",
            "2",
            path.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut speakers: Vec<&str> = v["aligned_segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["speaker"].as_str().unwrap())
        .collect();
    speakers.sort();
    speakers.dedup();
    assert_eq!(speakers, vec!["SPEAKER_00", "SPEAKER_01"]);
    let errs = colloquy::text::word_errors(
        "Good morning, thanks for joining the call so early. No problem. I wanted to go over the budget before the meeting on Thursday. Sure. The main change is that travel costs went up by about ten percent. That is more than I expected. Do we know why? Mostly because the conference moved to a different city this year. Okay, then we should ask the team to book their flights as soon as possible. Good idea. I will send an email this afternoon. Great, and please copy me on it so I can follow up next week.",
        v["full_text"].as_str().unwrap(),
    );
    assert!(
        errs.wer() <= 0.05,
        "WER {:.3}: {}",
        errs.wer(),
        v["full_text"]
    );
    // who said which word: in this mp3 the diarization hands over inside
    // the first sentence; the voice check gives it back to its speaker
    let mut items = [colloquy::eval::EvalItem {
        id: "conv1".into(),
        audio: path.clone(),
        ..Default::default()
    }];
    colloquy::eval::attach_stm(&mut items, &path.with_extension("stm")).unwrap();
    let reference = items[0].reference_speaker_text.clone().expect("conv1.stm");
    let hypothesis = colloquy::eval::speaker_text(&v);
    let cp = colloquy::eval::cp_word_errors(&reference, &hypothesis);
    assert!(
        cp.wer() <= errs.wer() + 0.03,
        "cpWER {:.3} against WER {:.3}: {:?}",
        cp.wer(),
        errs.wer(),
        hypothesis
    );
}

#[test]
fn eval_scores_wer_der_speed_and_memory_on_the_projects_own_clips() {
    if config().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("colloquy-eval-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.json");
    let out = colloquy()
        .args(["eval", "--manifest"])
        .arg(repo_path("tests/data/eval_manifest.tsv"))
        .arg("--rttm")
        .arg(repo_path("tests/data/two_voices.rttm"))
        .arg("--stm")
        .arg(repo_path("tests/data/two_voices.stm"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.lines().any(|l| l.starts_with("TOTAL")), "{table}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert!(!dir.join("report.json.tmp").exists());
    let files = r["files"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{r}");
    let speech = files.iter().find(|f| f["id"] == "speech_en").unwrap();
    assert!(speech["der"].is_null(), "no RTTM for this clip: {speech}");
    assert!(speech["wer"].as_f64().unwrap() <= 0.10, "{speech}");
    let two = files.iter().find(|f| f["id"] == "two_voices").unwrap();
    // measured: WER 11.9% (tiny.en on espeak voices), DER 3.0%, cpWER 11.9% (every word with
    // the right speaker), 2 speakers without a hint
    assert_eq!(two["speakers_found"], 2, "{two}");
    assert_eq!(two["speakers_reference"], 2, "{two}");
    assert!(two["der"].as_f64().unwrap() <= 0.10, "{two}");
    assert!(two["wer"].as_f64().unwrap() <= 0.20, "{two}");
    let (wer, cp) = (
        two["wer"].as_f64().unwrap(),
        two["cp_wer"].as_f64().unwrap(),
    );
    assert!(
        cp - wer <= 0.02,
        "speaker attribution cost {:.1} points of cpWER: {two}",
        100.0 * (cp - wer)
    );
    assert!(speech["cp_wer"].is_null(), "no STM for this clip");
    // word timing at the RTTM's turn edges: null while the result has no words
    assert!(
        speech["word_timing"].is_null(),
        "no reference times for this clip: {speech}"
    );
    match &two["word_timing"] {
        serde_json::Value::Null => assert!(two["word_timing_distances"].is_null(), "{two}"),
        t => assert_eq!(t["turns"], 6, "two_voices.rttm has 6 turns: {two}"),
    }
    for f in files {
        assert!(f["speed"].as_f64().unwrap() > 1.0, "{f}");
        assert!(f["peak_rss_mb"].as_f64().unwrap() > 50.0, "{f}");
        assert!(
            f["stage_seconds"]["stages"]["transcription"]
                .as_f64()
                .is_some(),
            "{f}"
        );
    }
    let t = &r["totals"];
    assert!(
        (t["audio_seconds"].as_f64().unwrap() - 40.2).abs() < 0.5,
        "{t}"
    );
    assert!(t["wer"].as_f64().unwrap() <= 0.15, "{t}");
    assert_eq!(t["word_errors"]["reference_words"], 28 + 67, "{t}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn eval_explains_a_bad_manifest_and_a_missing_recording() {
    let dir = std::env::temp_dir().join(format!("colloquy-eval-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("m.tsv"), "name\tfile\nx\tx.wav\n").unwrap();
    let out = colloquy()
        .args(["eval", "--manifest"])
        .arg(dir.join("m.tsv"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("id, path and reference"), "{err}");
    std::fs::write(
        dir.join("m.tsv"),
        "id\tpath\treference\nx\tmissing.wav\thello\n",
    )
    .unwrap();
    let out = colloquy()
        .args(["eval", "--manifest"])
        .arg(dir.join("m.tsv"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("missing.wav: no such file"), "{err}");
    let out = colloquy().args(["eval"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing to evaluate"));
    std::fs::remove_dir_all(&dir).unwrap();
}
