//! Whisper held to the speech silero VAD finds, as the pipeline runs them
//! (the transcriber's `SpeechMap`, then `transcribe_until`): silence and
//! noise give no words, speech after silence keeps every word, each timed
//! inside the speech.

mod common;

use colloquy::audio::{load_16k_mono, DecodeLimits};
use colloquy::config::Config;
use colloquy::text::{normalize_words, word_errors};
use colloquy::vad::{SileroVad, SpeechDetector};
use colloquy::whisper::gate::SpeechMap;
use colloquy::whisper::{Transcript, WhisperEngine};
use common::{pink_noise, repo_path, shared_data, vad_config};

const RATE: usize = 16_000;
/// What tests/data/speech_en.flac says (tests/whisper.rs holds the same).
const CLIP_TEXT: &str = "Good morning everyone, thank you for coming to the meeting today. We will talk about the budget for next year, and then we will plan the summer trip.";

fn engines() -> Option<(Config, WhisperEngine, SileroVad)> {
    let config = vad_config(&[])?;
    let whisper = WhisperEngine::load(&config).expect("load whisper");
    let vad = SileroVad::load(&config).expect("load vad");
    Some((config, whisper, vad))
}

fn gated(
    config: &Config,
    whisper: &mut WhisperEngine,
    vad: &mut SileroVad,
    samples: &[f32],
) -> (Transcript, SpeechMap) {
    let map = SpeechMap::new(
        &vad.speech(samples.into()).unwrap(),
        samples,
        config.vad.threshold,
    );
    let t = whisper.transcribe_until(samples, Some(&map), None).unwrap();
    (t, map)
}

#[test]
fn silence_and_pink_noise_give_no_words() {
    let Some((config, mut whisper, mut vad)) = engines() else {
        return;
    };
    let silence = vec![0.0f32; 10 * RATE];
    let (t, _) = gated(&config, &mut whisper, &mut vad, &silence);
    assert!(t.segments.is_empty(), "silence: {:?}", t.full_text());
    for (dbfs, seed) in [(-45.0, 3), (-25.0, 4)] {
        let noise = pink_noise(10.0, dbfs, seed);
        let (t, map) = gated(&config, &mut whisper, &mut vad, &noise);
        assert!(
            map.regions.is_empty(),
            "speech found in noise at {dbfs} dBFS: {:?}",
            map.regions
        );
        assert!(
            t.segments.is_empty(),
            "noise at {dbfs} dBFS: {:?}",
            t.full_text()
        );
    }
}

/// 8 s of silence, then speech: no word in the silence, each inside speech.
fn after_silence(samples: &[f32]) -> Option<Transcript> {
    let (config, mut whisper, mut vad) = engines()?;
    let mut audio = vec![0.0f32; 8 * RATE];
    audio.extend_from_slice(samples);
    let (t, map) = gated(&config, &mut whisper, &mut vad, &audio);
    for s in &t.segments {
        assert!(s.start >= 7.9, "{s:?} starts in the silence");
        for w in &s.words {
            // inside a region, or its core widened to where the sound starts and ends
            let spans = map
                .regions
                .iter()
                .zip(&map.cores)
                .map(|(r, c)| (r.start.min(c.start), r.end.max(c.end)));
            let inside = spans
                .clone()
                .any(|(a, b)| a <= w.start + 1e-6 && w.end <= b + 1e-6);
            assert!(
                inside && w.start >= 7.9,
                "{w:?} outside the speech {:?}",
                spans.collect::<Vec<_>>()
            );
        }
    }
    Some(t)
}

#[test]
fn jfk_after_eight_seconds_of_silence_word_for_word() {
    let Some(path) = shared_data("asr/whisper_jfk.flac") else {
        return;
    };
    let audio = load_16k_mono(&path, DecodeLimits::NONE).unwrap();
    let Some(t) = after_silence(&audio.samples) else {
        return;
    };
    let reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert_eq!(
        normalize_words(&t.full_text()),
        normalize_words(reference),
        "{}",
        t.full_text()
    );
}

#[test]
fn committed_clip_after_eight_seconds_of_silence_keeps_its_words() {
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let Some(t) = after_silence(&audio.samples) else {
        return;
    };
    let errs = word_errors(CLIP_TEXT, &t.full_text());
    assert!(
        errs.wer() <= 0.10,
        "WER {:.3}: {:?}",
        errs.wer(),
        t.full_text()
    );
}
