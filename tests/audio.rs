//! The audio front end on committed files: Opus in Ogg, WebM and Matroska
//! (tests/data/jfk*, made by scripts/make_opus_audio.sh) decoded and
//! transcribed, codecs Colloquy does not decode named, the length limit, and
//! damaged input always reported as the user's bad input.

mod common;

use colloquy::audio::{load_16k_mono, load_16k_mono_from_bytes, AudioError, DecodeLimits};
use colloquy::text::normalize_words;
use colloquy::whisper::WhisperEngine;
use common::{config, repo_path};

/// JFK's words, as tests/whisper.rs's jfk_word_for_word expects them.
const JFK: &str = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
/// Seconds of whisper_jfk.flac, the source of the three files.
const JFK_SECONDS: f64 = 11.0;
const OPUS_FILES: [&str; 3] = [
    "tests/data/jfk.opus",
    "tests/data/jfk_opus.webm",
    "tests/data/jfk_opus.mkv",
];

#[test]
fn opus_in_ogg_webm_and_mkv_decodes_to_16k_mono_of_the_source_length() {
    for rel in OPUS_FILES {
        let path = repo_path(rel);
        let audio = load_16k_mono(&path, DecodeLimits::max_seconds(14400))
            .unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!((audio.sample_rate, audio.channels), (16_000, 1), "{rel}");
        let seconds = audio.duration();
        // Ogg trims the encoder's padding to the sample (11.000 s here); WebM
        // and Matroska keep what is left of the last 20 ms frame (11.0135 s)
        assert!(
            (seconds - JFK_SECONDS).abs() < 0.025,
            "{rel}: {seconds} s, the source has {JFK_SECONDS} s"
        );
        // speech, not silence: the loudest sample is well above the noise
        let peak = audio.samples.iter().fold(0.0f32, |m, s| m.max(s.abs()));
        assert!(peak > 0.1, "{rel}: peak {peak}");
        // the bytes entry point (the fuzzer's) decodes the same samples
        let ext = path.extension().and_then(|e| e.to_str());
        let from_bytes = load_16k_mono_from_bytes(
            std::fs::read(&path).unwrap(),
            ext,
            DecodeLimits::max_seconds(14400),
        )
        .unwrap();
        assert_eq!(from_bytes.samples, audio.samples, "{rel}");
    }
}

#[test]
fn opus_in_ogg_webm_and_mkv_transcribes_word_for_word() {
    let Some(config) = config() else { return };
    let mut engine = WhisperEngine::load(&config).expect("load whisper");
    for rel in OPUS_FILES {
        let audio = load_16k_mono(&repo_path(rel), DecodeLimits::NONE).unwrap();
        let t = engine.transcribe(&audio.samples).unwrap();
        assert_eq!(
            normalize_words(&t.full_text()),
            normalize_words(JFK),
            "{rel}: {}",
            t.full_text()
        );
    }
}

#[test]
fn a_recording_over_the_limit_is_refused() {
    let path = repo_path("tests/data/jfk.opus");
    let err = load_16k_mono(&path, DecodeLimits::max_seconds(10)).unwrap_err();
    assert!(
        matches!(err, AudioError::TooLong { seconds_limit: 10 }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "the recording is longer than the 10 s limit (max_audio_seconds = 10)"
    );
    assert!(err.is_bad_input());
    let four_hours = AudioError::TooLong {
        seconds_limit: 14400,
    };
    assert_eq!(
        four_hours.to_string(),
        "the recording is longer than the 4 h 0 min limit (max_audio_seconds = 14400)"
    );
    // at the limit's side of it: accepted
    assert!(load_16k_mono(&path, DecodeLimits::max_seconds(12)).is_ok());
}

/// A Matroska track whose codec is one symphonia knows by name but cannot
/// decode: the committed Opus file with its CodecID "A_OPUS" made "A_EAC3"
/// (same length, so the file stays well formed).
#[test]
fn an_undecodable_codec_in_a_known_container_is_named() {
    let mut bytes = std::fs::read(repo_path("tests/data/jfk_opus.mkv")).unwrap();
    let at = bytes
        .windows(6)
        .position(|w| w == b"A_OPUS")
        .expect("the CodecID of the Opus track");
    bytes[at..at + 6].copy_from_slice(b"A_EAC3");
    let err = load_16k_mono_from_bytes(bytes, Some("mkv"), DecodeLimits::NONE).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the audio codec (E-AC-3) is not supported; supported: MP3, AAC, FLAC, Vorbis, Opus, PCM/WAV, ADPCM, ALAC"
    );
    assert!(err.is_bad_input());
}

/// Damaged copies of the committed files (cut short, bytes overwritten,
/// seeded) either decode to 16 kHz audio within the length limit or fail as
/// the user's bad input: never a panic, never an error that blames us.
#[test]
fn damaged_files_decode_or_fail_as_bad_input() {
    let mut rng = fastrand::Rng::with_seed(12);
    let (mut decoded, mut refused) = (0, 0);
    for rel in OPUS_FILES
        .iter()
        .chain(&["tests/data/speech_en.flac", "tests/data/two_voices.flac"])
    {
        let original = std::fs::read(repo_path(rel)).unwrap();
        let ext = rel.rsplit('.').next();
        for i in 0..24 {
            let mut bytes = original.clone();
            if i % 3 == 0 {
                bytes.truncate(rng.usize(..bytes.len()));
            } else {
                for _ in 0..1 + i {
                    let at = rng.usize(..bytes.len());
                    bytes[at] = rng.u8(..);
                }
            }
            match load_16k_mono_from_bytes(bytes, ext, DecodeLimits::max_seconds(60)) {
                Ok(audio) => {
                    assert_eq!(audio.sample_rate, 16_000, "{rel} #{i}");
                    assert!(audio.duration() <= 60.1, "{rel} #{i}: {}", audio.duration());
                    decoded += 1;
                }
                Err(e) => {
                    assert!(e.is_bad_input(), "{rel} #{i}: {e}");
                    refused += 1;
                }
            }
        }
    }
    eprintln!("{decoded} damaged copies decoded, {refused} refused");
}
