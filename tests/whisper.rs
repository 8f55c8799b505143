//! Whisper end to end with the real converted models: audio file in,
//! timestamped words out.

mod common;

use colloquy::audio::{load_16k_mono, DecodeLimits};
use colloquy::text::{normalize_words, word_errors};
use colloquy::whisper::WhisperEngine;
use common::{config, config_with, repo_path, shared_data, vad_config};

const CLIP_TEXT: &str = "Good morning everyone, thank you for coming to the meeting today. We will talk about the budget for next year, and then we will plan the summer trip.";

fn engine() -> Option<WhisperEngine> {
    Some(WhisperEngine::load(&config()?).expect("load whisper"))
}

#[test]
fn transcribes_the_committed_clip() {
    let Some(mut engine) = engine() else { return };
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let t = engine.transcribe(&audio.samples).unwrap();
    let errs = word_errors(CLIP_TEXT, &t.full_text());
    assert!(
        errs.wer() <= 0.10,
        "WER {:.3}: {:?}",
        errs.wer(),
        t.full_text()
    );
    assert_eq!(t.language, "en");
    assert!(!t.segments.is_empty());
    let mut last_end = 0.0;
    for s in &t.segments {
        assert!(s.start >= last_end - 1e-9 && s.end > s.start, "{s:?}");
        assert!(s.end <= t.duration + 0.5, "{s:?} beyond {}", t.duration);
        last_end = s.end;
    }
}

#[test]
fn resampled_stereo_gives_the_same_words() {
    let Some(mut engine) = engine() else { return };
    let mono = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let stereo = load_16k_mono(
        &repo_path("tests/data/speech_en_44k_stereo.flac"),
        DecodeLimits::NONE,
    )
    .unwrap();
    assert_eq!(stereo.channels, 2);
    assert!((stereo.samples.len() as i64 - mono.samples.len() as i64).abs() < 16);
    let a = engine.transcribe(&mono.samples).unwrap().full_text();
    let b = engine.transcribe(&stereo.samples).unwrap().full_text();
    assert_eq!(normalize_words(&a), normalize_words(&b));
}

#[test]
fn silence_and_faint_noise_give_no_text() {
    let Some(mut engine) = engine() else { return };
    let silence = vec![0.0f32; 16_000 * 20];
    let t = engine.transcribe(&silence).unwrap();
    assert!(
        t.segments.is_empty(),
        "silence produced {:?}",
        t.full_text()
    );
    // uniform noise at peak 0.001 and 0.01 (-60 and -40 dBFS): the no-speech
    // detection and the no-words rule decide, whatever the fallback samples
    for scale in [0.002f32, 0.02] {
        let mut seed = 7u32;
        let noise: Vec<f32> = (0..16_000 * 12)
            .map(|_| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                ((seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * scale
            })
            .collect();
        let t = engine.transcribe(&noise).unwrap();
        assert!(
            t.segments.is_empty(),
            "noise at {scale} produced {:?}",
            t.full_text()
        );
    }
}

#[test]
fn long_audio_is_transcribed_across_windows() {
    let Some(mut engine) = engine() else { return };
    let clip = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE)
        .unwrap()
        .samples;
    // clip, 4 s pause, clip, ...: about 60 s, three windows or more
    let mut long = Vec::new();
    for _ in 0..5 {
        long.extend_from_slice(&clip);
        long.extend(std::iter::repeat(0.0).take(16_000 * 4));
    }
    let t = engine.transcribe(&long).unwrap();
    assert!(t.timings.windows >= 3, "{} windows", t.timings.windows);
    let reference = vec![CLIP_TEXT; 5].join(" ");
    let errs = word_errors(&reference, &t.full_text());
    assert!(
        errs.wer() <= 0.10,
        "WER {:.3}: {}",
        errs.wer(),
        t.full_text()
    );
    assert!(
        t.segments.last().unwrap().start > 45.0,
        "{:?}",
        t.segments.last()
    );
    for w in t.segments.windows(2) {
        assert!(w[1].start >= w[0].start, "{:?} then {:?}", w[0], w[1]);
    }
}

#[test]
fn int8_model_transcribes_the_clip() {
    let Some(config) = config_with(&[("whisper.precision", "int8")]) else {
        return;
    };
    let mut engine = WhisperEngine::load(&config).unwrap();
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let t = engine.transcribe(&audio.samples).unwrap();
    let errs = word_errors(CLIP_TEXT, &t.full_text());
    assert!(
        errs.wer() <= 0.15,
        "WER {:.3}: {:?}",
        errs.wer(),
        t.full_text()
    );
}

#[test]
fn jfk_word_for_word() {
    let Some(path) = shared_data("asr/whisper_jfk.flac") else {
        return;
    };
    let Some(mut engine) = engine() else { return };
    let audio = load_16k_mono(&path, DecodeLimits::NONE).unwrap();
    let t = engine.transcribe(&audio.samples).unwrap();
    let reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert_eq!(
        normalize_words(&t.full_text()),
        normalize_words(reference),
        "{}",
        t.full_text()
    );
}

#[test]
fn base_model_detects_english() {
    let Some(config) = config_with(&[("whisper.model", "base"), ("whisper.language", "auto")])
    else {
        return;
    };
    let mut engine = WhisperEngine::load(&config).unwrap();
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let t = engine.transcribe(&audio.samples).unwrap();
    assert_eq!(t.language, "en");
    let errs = word_errors(CLIP_TEXT, &t.full_text());
    assert!(
        errs.wer() <= 0.10,
        "WER {:.3}: {:?}",
        errs.wer(),
        t.full_text()
    );
}

#[test]
fn english_only_model_refuses_other_languages() {
    let Some(config) = config_with(&[("whisper.language", "de")]) else {
        return;
    };
    let err = WhisperEngine::load(&config)
        .err()
        .expect("must refuse")
        .to_string();
    assert!(err.contains("English-only"), "{err}");
}

#[test]
fn cuda_request_falls_back_to_cpu_without_a_gpu() {
    // the CPU-only ONNX Runtime library has no CUDA provider: the engine must
    // warn, fall back and still transcribe
    let Some(config) = config_with(&[("runtime.device", "cuda")]) else {
        return;
    };
    let mut engine = WhisperEngine::load(&config).unwrap();
    if std::path::Path::new("/dev/nvidia0").exists() {
        eprintln!("a GPU is present: not checking the fallback");
        return;
    }
    assert_eq!(engine.device(), colloquy::runtime::DeviceUsed::Cpu);
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let t = engine.transcribe(&audio.samples).unwrap();
    assert!(
        word_errors(CLIP_TEXT, &t.full_text()).wer() <= 0.10,
        "{}",
        t.full_text()
    );
}

#[test]
fn tokenizer_round_trip_and_timestamps() {
    use colloquy::whisper::model::ModelDir;
    use colloquy::whisper::tokenizer::WhisperTokenizer;
    let Some(config) = config() else { return };
    let dir = ModelDir::open(&config.models_root(), "tiny.en").unwrap();
    let tok =
        WhisperTokenizer::from_file(&dir.tokenizer_path(), dir.config.tokens.clone()).unwrap();
    let sp = tok.special.clone();
    let ids = tok
        .encode(" Ask not what your country can do for you, café 10%.")
        .unwrap();
    assert!(ids.iter().all(|&i| i < sp.eot), "{ids:?}");
    assert_eq!(
        tok.decode(&ids).unwrap(),
        " Ask not what your country can do for you, café 10%."
    );
    // timestamps and special tokens are dropped from the text
    let mut with_ts = vec![sp.sot, sp.timestamp_begin];
    with_ts.extend(&ids);
    with_ts.extend([sp.timestamp_begin + 150, sp.eot]);
    assert_eq!(tok.decode(&with_ts).unwrap(), tok.decode(&ids).unwrap());
    assert_eq!(tok.timestamp_seconds(sp.timestamp_begin + 150), Some(3.0));
    assert_eq!(tok.timestamp_seconds(ids[0]), None);
    assert!(tok.is_timestamp(sp.timestamp_begin) && !tok.is_timestamp(sp.no_timestamps));
    assert_eq!(tok.token_to_id("<|endoftext|>"), Some(sp.eot));
}

#[test]
fn a_set_stop_flag_stops_before_the_next_window() {
    let Some(mut engine) = engine() else { return };
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let err = engine
        .transcribe_until(&audio.samples, None, Some(stop.clone()))
        .err()
        .expect("stopped");
    assert!(err.to_string().contains("cancelled"), "{err}");
    // the engine is fine afterwards, and an unset flag changes nothing
    stop.store(false, std::sync::atomic::Ordering::SeqCst);
    let a = engine
        .transcribe_until(&audio.samples, None, Some(stop))
        .unwrap();
    let b = engine.transcribe(&audio.samples).unwrap();
    assert_eq!(a.full_text(), b.full_text());
    assert!(
        a.full_text().to_lowercase().contains("meeting"),
        "{}",
        a.full_text()
    );
}

/// Word timestamps on the committed clip: every word of the text has a time,
/// in order, inside its segment and the audio; known words where they are said.
#[test]
fn words_have_times_inside_their_segments() {
    let Some(mut engine) = engine() else { return };
    assert!(
        engine.word_timestamps(),
        "word timestamps are on by default"
    );
    let audio = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE).unwrap();
    let t = engine.transcribe(&audio.samples).unwrap();
    let mut last = 0.0f64;
    let mut all = Vec::new();
    for s in &t.segments {
        assert!(!s.words.is_empty(), "segment without words: {s:?}");
        let joined: String = s.words.iter().map(|w| w.word.as_str()).collect();
        assert_eq!(
            normalize_words(&joined),
            normalize_words(&s.text),
            "words and text differ"
        );
        for w in &s.words {
            assert!(
                w.start >= last - 1e-9 && w.end >= w.start,
                "{w:?} after {last}"
            );
            assert!(
                w.start >= s.start - 1e-9 && w.end <= s.end + 1e-9,
                "{w:?} outside {}..{}",
                s.start,
                s.end
            );
            assert!((0.0..=1.0).contains(&w.probability), "{w:?}");
            last = w.end;
            all.push(w.clone());
        }
    }
    assert!(last <= t.duration + 1e-6);
    // the clip opens on "Good morning" within its first second and a half,
    // and "trip" is the last word, in the clip's last three seconds
    let first = &all[0];
    assert_eq!(first.word.trim(), "Good");
    assert!(first.start < 1.5, "{first:?}");
    let end = all.last().unwrap();
    assert!(end.word.contains("trip"), "{end:?}");
    assert!(end.end > t.duration - 3.0, "{end:?} in {}", t.duration);
}

/// An engine with `whisper.batch_size` = `batch` and the silero VAD (what
/// batched mode takes its chunks from), or None (skipped) without the models.
fn engine_with_vad(
    batch: &str,
) -> Option<(
    colloquy::config::Config,
    WhisperEngine,
    colloquy::vad::SileroVad,
)> {
    let config = vad_config(&[("whisper.batch_size", batch)])?;
    let engine = WhisperEngine::load(&config).expect("load whisper");
    assert_eq!(engine.batch_size(), batch.parse::<usize>().unwrap());
    let vad = colloquy::vad::SileroVad::load(&config).expect("load vad");
    Some((config, engine, vad))
}

/// `samples` through the VAD and then the engine, as `transcribe --whisper-only` runs them.
fn with_speech(
    config: &colloquy::config::Config,
    engine: &mut WhisperEngine,
    vad: &mut colloquy::vad::SileroVad,
    samples: &[f32],
) -> (
    colloquy::whisper::Transcript,
    colloquy::whisper::gate::SpeechMap,
) {
    use colloquy::vad::SpeechDetector;
    let map = colloquy::whisper::gate::SpeechMap::new(
        &vad.speech(samples.into()).unwrap(),
        samples,
        config.vad.threshold,
    );
    let t = engine.transcribe_until(samples, Some(&map), None).unwrap();
    (t, map)
}

/// Every word inside a detected speech region and inside the audio; no
/// segment or word starts before the one before it. The speech gate holds
/// words to the regions, but may move a word edge out to where the sound of
/// its speech starts or ends, at most 0.5 s beyond the region (`gate.rs`,
/// SOUND_REACH): that much leeway.
fn assert_words_in_speech_and_in_order(
    t: &colloquy::whisper::Transcript,
    map: &colloquy::whisper::gate::SpeechMap,
) {
    const GATE_REACH: f64 = 0.5;
    let regions = &map.regions;
    let mut last = 0.0f64;
    for s in &t.segments {
        assert!(
            s.start >= last - 1e-9 && s.end > s.start,
            "{s:?} after {last}"
        );
        for w in &s.words {
            assert!(
                w.start >= last - 1e-9 && w.end >= w.start,
                "{w:?} after {last}"
            );
            assert!(w.end <= t.duration + 1e-6, "{w:?} beyond {}", t.duration);
            assert!(
                regions
                    .iter()
                    .any(|r| w.start >= r.start - GATE_REACH && w.end <= r.end + GATE_REACH),
                "{w:?} outside every speech region {regions:?}"
            );
            last = w.start;
        }
        last = last.max(s.start);
    }
}

#[test]
fn batched_jfk_word_for_word() {
    let Some(path) = shared_data("asr/whisper_jfk.flac") else {
        return;
    };
    let Some((config, mut engine, mut vad)) = engine_with_vad("8") else {
        return;
    };
    let audio = load_16k_mono(&path, DecodeLimits::NONE).unwrap();
    let (t, map) = with_speech(&config, &mut engine, &mut vad, &audio.samples);
    let reference = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    assert_eq!(
        normalize_words(&t.full_text()),
        normalize_words(reference),
        "{}",
        t.full_text()
    );
    assert_words_in_speech_and_in_order(&t, &map);
    let words: usize = t.segments.iter().map(|s| s.words.len()).sum();
    assert_eq!(
        words,
        normalize_words(reference).len(),
        "every word has a time"
    );
}

/// The 14 single-speaker clips of the shared manifest one after another
/// (2 s pauses, about 190 s): lanes of different speech. Batched keeps
/// every word (held against the reference: without following up windows
/// whose text ended early, batched lost 8 words) and is at least as
/// accurate as the sequential loop.
#[test]
fn batched_long_audio_keeps_every_word() {
    let Some(manifest) = shared_data("asr_manifest.tsv") else {
        return;
    };
    let Some((config, mut batched, mut vad)) = engine_with_vad("8") else {
        return;
    };
    let Some((_, mut sequential, _)) = engine_with_vad("1") else {
        return;
    };
    let items = colloquy::eval::read_manifest(&manifest, Some("single")).unwrap();
    assert_eq!(items.len(), 14);
    let (mut long, mut reference) = (Vec::new(), Vec::new());
    for item in &items {
        long.extend(
            load_16k_mono(&item.audio, DecodeLimits::NONE)
                .unwrap()
                .samples,
        );
        long.extend(std::iter::repeat(0.0).take(16_000 * 2));
        reference.push(item.reference_text.clone().unwrap_or_default());
    }
    let reference = reference.join(" ");
    let (b, map) = with_speech(&config, &mut batched, &mut vad, &long);
    let (s, _) = with_speech(&config, &mut sequential, &mut vad, &long);
    // lanes of 20-45 s (the clips' long regions are not cut): a window
    // each, and some a second from where their text ended
    let lanes = colloquy::whisper::transcribe::lanes(&map.regions, 8, 30.0);
    assert!((5..=8).contains(&lanes.len()), "{lanes:?}");
    assert!(
        b.timings.windows >= lanes.len(),
        "{} windows, {lanes:?}",
        b.timings.windows
    );
    let (wer_b, wer_s) = (
        word_errors(&reference, &b.full_text()).wer(),
        word_errors(&reference, &s.full_text()).wer(),
    );
    assert!(
        wer_b <= 0.08 && wer_b <= wer_s + 0.01,
        "WER batched {wer_b:.3}, sequential {wer_s:.3}: {}",
        b.full_text()
    );
    // the seek loop goes on from where a window's text ended, not after the
    // window (it dropped a whole 42 s clip here: WER 29%)
    assert!(
        wer_s <= 0.08,
        "WER sequential {wer_s:.3}: {}",
        s.full_text()
    );
    assert_words_in_speech_and_in_order(&b, &map);
    let words = b.segments.iter().map(|s| s.words.len()).sum::<usize>() as f64;
    let expected = normalize_words(&reference).len() as f64;
    assert!(
        (words - expected).abs() <= 0.03 * expected,
        "{words} words batched, {expected} in the reference"
    );
    assert!(
        b.segments.last().unwrap().end > 180.0,
        "{:?}",
        b.segments.last()
    );
}

/// The configured Whisper model's folder, tokenizer, ONNX sessions and
/// greedy decoding options (None without models).
fn decoder_parts() -> Option<(
    colloquy::whisper::model::ModelDir,
    colloquy::whisper::tokenizer::WhisperTokenizer,
    colloquy::whisper::model::WhisperOnnx,
    colloquy::whisper::decode::DecodeOptions,
)> {
    use colloquy::whisper::model::{ModelDir, WhisperOnnx};
    use colloquy::whisper::tokenizer::WhisperTokenizer;
    let config = config()?;
    let dir = ModelDir::open(&config.models_root(), &config.whisper.model).unwrap();
    let tok =
        WhisperTokenizer::from_file(&dir.tokenizer_path(), dir.config.tokens.clone()).unwrap();
    let model = WhisperOnnx::load(
        &config.onnxruntime_library(),
        &dir,
        config.whisper.precision,
        &config.runtime,
    )
    .unwrap();
    let opts = common::greedy_options(&dir);
    Some((dir, tok, model, opts))
}

/// The batched decoder step by step: a batch of one row is `decode_once`
/// exactly; a batch of three windows, whose rows end at different steps
/// (compaction), gives each window's text as decoding it alone does.
#[test]
fn batched_decoder_matches_decode_once() {
    use colloquy::whisper::decode::{decode_batch, decode_once};
    use colloquy::whisper::mel::{MelFrontEnd, N_FRAMES};
    let Some((dir, tok, mut model, opts)) = decoder_parts() else {
        return;
    };
    let front = MelFrontEnd::new(dir.config.n_mels);
    let clip = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE)
        .unwrap()
        .samples;
    // three windows of different lengths: the first 4 s, the whole clip, its second half
    let pieces = [&clip[..16_000 * 4], &clip[..], &clip[clip.len() / 2..]];
    let windows: Vec<Vec<f32>> = pieces
        .iter()
        .map(|p| {
            let mel = front.compute(*p);
            mel.window(0, N_FRAMES.min(mel.n_frames - 1))
        })
        .collect();
    let prompt = [tok.special.sot];
    let mut rng = fastrand::Rng::with_seed(0);
    let alone: Vec<_> = windows
        .iter()
        .map(|w| {
            let encoded = model.encode(w).unwrap();
            decode_once(
                &mut model,
                &tok,
                &encoded.active(),
                &prompt,
                0.0,
                &opts,
                &mut rng,
            )
            .unwrap()
        })
        .collect();

    let mut one = model.encode_batch(&windows[1..2]).unwrap();
    let b1 = decode_batch(&mut model, &tok, &mut one, &prompt, 0.0, &opts, &mut rng).unwrap();
    assert_eq!(b1.len(), 1);
    assert_eq!(b1[0].tokens, alone[1].tokens);
    assert_eq!(b1[0].token_probs, alone[1].token_probs);
    assert_eq!(b1[0].sum_logprob, alone[1].sum_logprob);
    assert_eq!(b1[0].no_speech_prob, alone[1].no_speech_prob);

    let mut three = model.encode_batch(&windows).unwrap();
    let b3 = decode_batch(&mut model, &tok, &mut three, &prompt, 0.0, &opts, &mut rng).unwrap();
    let lengths: Vec<usize> = alone.iter().map(|d| d.tokens.len()).collect();
    assert!(
        lengths[0] < lengths[2] && lengths[2] < lengths[1],
        "rows end at different steps: {lengths:?}"
    );
    // the rows that left the batch early moved behind the others with
    // their keys and values intact: each decodes alone as it did before
    for (i, a) in alone.iter().enumerate() {
        let again = decode_once(
            &mut model,
            &tok,
            &three.row(i),
            &prompt,
            0.0,
            &opts,
            &mut rng,
        )
        .unwrap();
        assert_eq!(again.tokens, a.tokens, "window {i} after the batch");
    }
    for (i, (b, a)) in b3.iter().zip(&alone).enumerate() {
        let (tb, ta) = (
            tok.decode(&b.tokens).unwrap(),
            tok.decode(&a.tokens).unwrap(),
        );
        assert_eq!(normalize_words(&tb), normalize_words(&ta), "window {i}");
        assert!(
            (b.no_speech_prob - a.no_speech_prob).abs() < 1e-3,
            "window {i}"
        );
        let avg =
            |d: &colloquy::whisper::decode::Decoded| d.sum_logprob / (d.tokens.len() as f64 + 1.0);
        assert!(
            (avg(b) - avg(a)).abs() < 0.05,
            "window {i}: {} vs {}",
            avg(b),
            avg(a)
        );
    }
}

/// The committed clip (one window), encoded.
fn encoded_clip(
    dir: &colloquy::whisper::model::ModelDir,
    model: &mut colloquy::whisper::model::WhisperOnnx,
) -> colloquy::whisper::model::EncodedWindow {
    use colloquy::whisper::mel::{MelFrontEnd, N_FRAMES};
    let clip = load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE)
        .unwrap()
        .samples;
    let front = MelFrontEnd::new(dir.config.n_mels);
    let mel = front.compute(&clip);
    model
        .encode(&mel.window(0, N_FRAMES.min(mel.n_frames - 1)))
        .unwrap()
}

/// The fp32 decoder's logits come from 8-bit weights and only those near
/// the top are made exact (`whisper::logits`): that is only sound while
/// every 8-bit logit is within half of `MARGIN` of its exact value. Checked
/// on real speech, at every step of a greedy decode of the committed clip
/// (the exact logits computed for the whole vocabulary here).
#[test]
fn eight_bit_logits_stay_within_half_the_margin_on_real_speech() {
    use colloquy::whisper::logits::MARGIN;
    let Some((dir, tok, mut model, _)) = decoder_parts() else {
        return;
    };
    let encoded = encoded_clip(&dir, &mut model);
    let window = encoded.active();
    let mut cache = model.new_cache().unwrap();
    let mut tokens = vec![tok.special.sot, tok.special.no_timestamps];
    let (mut worst, mut steps, mut changed) = (0.0f32, 0, 0);
    while steps < 60 {
        let mut step = model.decode(&tokens, &mut cache, &window).unwrap();
        let (values, exact) = step.rows_mut().next().unwrap();
        let mut full = values.to_vec();
        let vocab = full.len();
        exact.all(&mut full, 0..vocab);
        for (a, e) in values.iter().zip(&full) {
            worst = worst.max((a - e).abs());
            changed += usize::from(a != e);
        }
        let next = (0..full.len()).fold(0, |b, i| if full[i] > full[b] { i } else { b });
        steps += 1;
        if next as u32 == tok.special.eot {
            break;
        }
        tokens = vec![next as u32];
    }
    assert!(steps > 10, "{steps} steps");
    assert!(
        worst < MARGIN / 2.0,
        "8-bit logits off by up to {worst} over {steps} steps"
    );
    // the fp32 model decodes through the 8-bit projection (its logits moved)
    if config().unwrap().whisper.precision == colloquy::config::Precision::Fp32 {
        assert!(changed > steps * 1000, "{changed} logits recomputed");
    }
}

/// One window read by several rows (the temperature fallback's batch):
/// the decoder broadcasts the window's keys and values over the rows, so a
/// greedy row gives exactly what decoding the window alone gives, whatever
/// the other rows sample and wherever they end.
#[test]
fn rows_sharing_one_window_decode_as_it_does_alone() {
    use colloquy::whisper::decode::{decode_once, decode_rows, RowsCross};
    let Some((dir, tok, mut model, opts)) = decoder_parts() else {
        return;
    };
    let encoded = encoded_clip(&dir, &mut model);
    let window = encoded.active();
    let prompt = [tok.special.sot];
    let mut rng = fastrand::Rng::with_seed(7);
    let alone = decode_once(&mut model, &tok, &window, &prompt, 0.0, &opts, &mut rng).unwrap();
    assert!(!alone.tokens.is_empty());
    let rows = decode_rows(
        &mut model,
        &tok,
        RowsCross::Shared(&window),
        &prompt,
        &[1.0, 0.0, 1.0, 0.0],
        &opts,
        &mut rng,
    )
    .unwrap();
    assert_eq!(rows.len(), 4);
    for greedy in [&rows[1], &rows[3]] {
        assert_eq!(greedy.tokens, alone.tokens);
        assert_eq!(greedy.token_probs, alone.token_probs);
        assert_eq!(greedy.sum_logprob, alone.sum_logprob);
        assert_eq!(greedy.no_speech_prob, alone.no_speech_prob);
    }
    // the sampled rows are rows of their own: each has text, and at
    // temperature 1 the two are drawn apart
    assert!(rows[0].tokens.len() > 1 && rows[2].tokens.len() > 1);
    assert_ne!(rows[0].tokens, rows[2].tokens);
}

/// A request's own decoding (the OpenAI-compatible route's `prompt`,
/// `language`, `temperature`): the prompt is read as the text before the
/// first window and changes the style Whisper writes in; a language the
/// model cannot do is refused; a first temperature samples.
#[test]
fn a_requests_prompt_language_and_temperature_apply_to_its_job_only() {
    use colloquy::whisper::Overrides;
    let Some(mut engine) = engine() else { return };
    let jfk = "And so my fellow Americans, ask not what your country can do for you, ask what you can do for your country.";
    let audio = load_16k_mono(&repo_path("tests/data/jfk.opus"), DecodeLimits::NONE).unwrap();
    let mut run = |o: &Overrides| {
        engine
            .transcribe_with(&audio.samples, None, None, o, None)
            .map(|t| t.full_text())
    };
    let plain = run(&Overrides::default()).unwrap();
    // a lower-case, unpunctuated prompt: Whisper follows its style
    let style = Overrides {
        prompt: Some("um, uh, so like, and so my fellow americans, uh, ask not".into()),
        ..Default::default()
    };
    let prompted = run(&style).unwrap();
    assert_ne!(prompted, plain, "the prompt changed nothing");
    assert!(prompted.contains("americans"), "{prompted}");
    assert!(word_errors(jfk, &prompted).wer() <= 0.1, "{prompted}");
    // nothing kept between calls: the next plain call is the first one again
    assert_eq!(run(&Overrides::default()).unwrap(), plain);
    let german = Overrides {
        language: Some("de".into()),
        ..Default::default()
    };
    let err = run(&german).unwrap_err().to_string();
    assert!(err.contains("English-only"), "{err}");
    let hot = Overrides {
        temperature: Some(0.8),
        ..Default::default()
    };
    let sampled = run(&hot).unwrap();
    assert!(word_errors(jfk, &sampled).wer() <= 0.25, "{sampled}");
}
