//! silero VAD with the real model: silence and noise give no speech, speech
//! is found where it is, the sequence model the engine runs gives the
//! streaming model's probabilities, and the regions cover the sound inside
//! the reference turns of the test recordings. The speed measurement on the
//! 161 s of shared clips is `cargo test --release --test vad -- --ignored
//! --nocapture vad_speed`.

mod common;

use std::path::Path;
use std::time::Instant;

use colloquy::audio::{load_16k_mono, DecodeLimits};
use colloquy::config::{Config, Device, RuntimeConfig};
use colloquy::diarize::rttm::parse_rttm;
use colloquy::runtime;
use colloquy::vad::{self, SileroVad, Speech, SpeechDetector, SpeechRegion};
use common::{config_with, pink_noise, repo_path, shared_data, vad_config};
use ort::value::TensorRef;

const RATE: usize = 16_000;

fn engine() -> Option<SileroVad> {
    Some(SileroVad::load(&vad_config(&[])?).expect("load silero VAD"))
}

fn speech_en() -> Vec<f32> {
    load_16k_mono(&repo_path("tests/data/speech_en.flac"), DecodeLimits::NONE)
        .expect("decode speech_en.flac")
        .samples
}

fn inside(regions: &[SpeechRegion], t: f64) -> bool {
    regions.iter().any(|r| r.start <= t && t < r.end)
}

/// Centres of the 10 ms frames of `samples` louder than `dbfs` RMS.
fn loud_frames(samples: &[f32], dbfs: f32) -> Vec<f64> {
    samples
        .chunks(RATE / 100)
        .enumerate()
        .filter(|(_, c)| {
            let rms = (c.iter().map(|v| v * v).sum::<f32>() / c.len() as f32).sqrt();
            20.0 * rms.max(1e-10).log10() > dbfs
        })
        .map(|(i, _)| (i as f64 + 0.5) * 0.01)
        .collect()
}

/// A session of the streaming model (`silero_vad.onnx`): the reference for
/// the sequence model the engine runs.
fn streaming_session(config: &Config, threads: usize) -> ort::session::Session {
    let env = runtime::environment(&config.onnxruntime_library()).unwrap();
    let rt = RuntimeConfig {
        device: Device::Cpu,
        intra_threads: threads,
        inter_threads: 1,
        ..config.runtime.clone()
    };
    let path = vad::model_dir(&config.models_root()).join(vad::STREAMING_MODEL_FILE);
    runtime::session(env, &path, &rt).unwrap().0
}

/// The streaming model run frame by frame, as silero's own `OnnxWrapper` does.
fn streaming_probabilities(session: &mut ort::session::Session, samples: &[f32]) -> Vec<f32> {
    let mut probs = Vec::new();
    let mut input = vec![0.0f32; vad::CONTEXT_SAMPLES + vad::FRAME_SAMPLES];
    let mut state = vec![0.0f32; 2 * 128];
    let rate = [16_000i64];
    for frame in 0..samples.len().div_ceil(vad::FRAME_SAMPLES) {
        vad::fill_frame(samples, frame, &mut input);
        let x = TensorRef::from_array_view(([1usize, input.len()], &input[..])).unwrap();
        let h = TensorRef::from_array_view(([2usize, 1, 128], &state[..])).unwrap();
        let sr = TensorRef::from_array_view(((), &rate[..])).unwrap();
        let out = session
            .run(ort::inputs!["input" => x, "state" => h, "sr" => sr])
            .unwrap();
        probs.push(out["output"].try_extract_tensor::<f32>().unwrap().1[0]);
        let next = out["stateN"]
            .try_extract_tensor::<f32>()
            .unwrap()
            .1
            .to_vec();
        drop(out);
        state = next;
    }
    probs
}

fn max_difference(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Seconds of CPU this process has used (user + system, /proc/self/stat).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn show(name: &str, s: &Speech) {
    let regions: Vec<String> = s
        .regions
        .iter()
        .map(|r| format!("{:.2}-{:.2}", r.start, r.end))
        .collect();
    eprintln!(
        "{name}: {} regions [{}]",
        s.regions.len(),
        regions.join(", ")
    );
}

#[test]
fn digital_silence_has_no_speech() {
    let Some(mut vad) = engine() else { return };
    let s = vad.speech((&vec![0.0; 10 * RATE]).into()).unwrap();
    show("10 s of zeros", &s);
    assert!(s.regions.is_empty());
    assert_eq!(s.probs.len(), (10 * RATE).div_ceil(512));
    let max = s.probs.iter().cloned().fold(0.0f32, f32::max);
    assert!(max < 0.1, "highest probability {max}");
}

#[test]
fn pink_noise_has_no_speech() {
    let Some(mut vad) = engine() else { return };
    for (dbfs, seed) in [(-60.0, 1), (-45.0, 2), (-25.0, 3)] {
        let noise = pink_noise(10.0, dbfs, seed);
        let s = vad.speech((&noise).into()).unwrap();
        let max = s.probs.iter().cloned().fold(0.0f32, f32::max);
        show(
            &format!("pink noise at {dbfs} dBFS (highest probability {max:.3})"),
            &s,
        );
        assert!(
            s.regions.is_empty(),
            "speech found in pink noise at {dbfs} dBFS"
        );
    }
}

#[test]
fn speech_is_found_where_it_is() {
    let Some(mut vad) = engine() else { return };
    let samples = speech_en();
    let duration = samples.len() as f64 / RATE as f64;
    let s = vad.speech((&samples).into()).unwrap();
    show("speech_en.flac", &s);
    let loud = loud_frames(&samples, -45.0);
    let (first, last) = (loud[0], *loud.last().unwrap());
    assert!(!s.regions.is_empty());
    assert!(
        s.regions[0].start <= first,
        "first region starts at {} after the sound at {first}",
        s.regions[0].start
    );
    assert!(
        s.regions.last().unwrap().end >= last,
        "last region ends before the sound ({last})"
    );
    let covered = loud
        .iter()
        .filter(|&&t| s.regions.iter().any(|r| r.start <= t && t < r.end))
        .count();
    assert!(
        covered as f64 >= 0.98 * loud.len() as f64,
        "{covered} of {} loud 10 ms frames in speech",
        loud.len()
    );
    assert!(
        s.speech_seconds() >= 0.7 * duration,
        "{:.2} s of speech in {duration:.2} s",
        s.speech_seconds()
    );
}

#[test]
fn speech_after_silence_starts_late() {
    let Some(mut vad) = engine() else { return };
    let mut samples = vec![0.0f32; 8 * RATE];
    samples.extend(speech_en());
    let s = vad.speech((&samples).into()).unwrap();
    show("8 s of zeros + speech_en.flac", &s);
    assert!(!s.regions.is_empty());
    assert!(
        s.regions[0].start > 7.5,
        "first region starts at {:.2} s",
        s.regions[0].start
    );
    assert!(s.speech_seconds() > 5.0);
}

#[test]
fn sequence_model_matches_streaming_model() {
    let Some(config) = vad_config(&[]) else {
        return;
    };
    let mut vad = SileroVad::load(&config).unwrap();
    // speech, then digital silence, then quiet noise, then speech again
    // (over 1024 frames: three blocks of the sequence model)
    let mut samples = speech_en();
    samples.extend(vec![0.0; 8 * RATE]);
    samples.extend(pink_noise(10.0, -50.0, 4));
    samples.extend(speech_en());
    samples.extend(vec![0.0; 1000]);
    let sequence = vad.probabilities(&samples).unwrap();
    let streaming = streaming_probabilities(&mut streaming_session(&config, 1), &samples);
    let d = max_difference(&sequence, &streaming);
    eprintln!("{} frames: largest difference {d:e}", sequence.len());
    assert!(sequence.len() > 1024);
    assert!(
        d <= 1e-5,
        "sequence and streaming probabilities differ by {d}"
    );
    assert!(
        sequence.iter().filter(|&&p| p > 0.5).count() > 300,
        "speech was seen"
    );
}

/// VAD of `audio` against the reference turns of `rttm`: the 10 ms frames
/// with sound (> -40 dBFS) inside the turns that lie outside the speech
/// regions, the frames with sound inside the turns, the seconds of regions
/// outside the turns, and the seconds of turns.
fn check_coverage(
    vad: &mut SileroVad,
    audio: &Path,
    rttm: &Path,
    id: &str,
) -> (usize, usize, f64, f64) {
    let samples = load_16k_mono(audio, DecodeLimits::NONE).unwrap().samples;
    let turns = &parse_rttm(&std::fs::read_to_string(rttm).unwrap()).unwrap()[id];
    let reference: Vec<SpeechRegion> = turns
        .iter()
        .map(|t| SpeechRegion::new(t.start, t.end))
        .collect();
    let s = vad.speech((&samples).into()).unwrap();
    let loud: Vec<f64> = loud_frames(&samples, -40.0)
        .into_iter()
        .filter(|&t| inside(&reference, t))
        .collect();
    let missed: Vec<f64> = loud
        .iter()
        .copied()
        .filter(|&t| !inside(&s.regions, t))
        .collect();
    let duration = samples.len() as f64 / RATE as f64;
    let grid = |f: &dyn Fn(f64) -> bool| {
        (0..(duration * 100.0) as usize)
            .filter(|&i| f((i as f64 + 0.5) * 0.01))
            .count() as f64
            / 100.0
    };
    let false_alarm = grid(&|t| inside(&s.regions, t) && !inside(&reference, t));
    let reference_speech = grid(&|t| inside(&reference, t));
    let at: Vec<String> = missed.iter().map(|t| format!("{t:.2}")).collect();
    eprintln!(
        "{id}: {} regions, {:.1} s of speech; turns {reference_speech:.1} s",
        s.regions.len(),
        s.speech_seconds()
    );
    eprintln!(
        "  sound outside the regions: {} of {} frames {at:?}",
        missed.len(),
        loud.len()
    );
    eprintln!("  regions outside the turns: {false_alarm:.2} s");
    (missed.len(), loud.len(), false_alarm, reference_speech)
}

#[test]
fn regions_cover_the_sound_in_reference_turns() {
    let Some(mut vad) = engine() else { return };
    let mut sets = vec![(
        repo_path("tests/data/two_voices.flac"),
        repo_path("tests/data/two_voices.rttm"),
        "two_voices",
    )];
    if let (Some(conv1), Some(mix), Some(ami)) = (
        shared_data("synthetic"),
        shared_data("mix"),
        shared_data("diarization"),
    ) {
        sets.push((conv1.join("conv1.wav"), conv1.join("conv1.rttm"), "conv1"));
        sets.push((
            mix.join("realmix1.wav"),
            mix.join("realmix1.rttm"),
            "realmix1",
        ));
        sets.push((ami.join("ami_dev00.wav"), ami.join("ami.rttm"), "ami_dev00"));
        sets.push((ami.join("ami_dev01.wav"), ami.join("ami.rttm"), "ami_dev01"));
    }
    for (audio, rttm, id) in sets {
        let (missed, loud, false_alarm, reference) = check_coverage(&mut vad, &audio, &rttm, id);
        assert!(loud > 300, "{id}: {loud} loud frames");
        assert!(
            missed as f64 <= 0.01 * loud as f64,
            "{id}: {missed} of {loud} frames with sound outside speech"
        );
        assert!(
            false_alarm <= 0.15 * reference,
            "{id}: {false_alarm:.2} s of regions outside {reference:.1} s of turns"
        );
    }
}

/// The 14 single-speaker clips of the shared manifest (161 s), end to end.
fn asr_clips() -> Option<Vec<f32>> {
    let manifest = shared_data("asr_manifest.tsv")?;
    let dir = manifest.parent().unwrap().to_path_buf();
    let mut samples = Vec::new();
    for line in std::fs::read_to_string(&manifest).unwrap().lines().skip(1) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols[2] == "single" {
            samples.extend(
                load_16k_mono(&dir.join(cols[1]), DecodeLimits::NONE)
                    .unwrap()
                    .samples,
            );
        }
    }
    Some(samples)
}

/// Seconds (wall, CPU) of the fastest of three runs of `f`.
fn fastest<T>(mut f: impl FnMut() -> T) -> (f64, f64, T) {
    let mut best = (f64::MAX, 0.0);
    let mut last = None;
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_seconds());
        last = Some(f());
        let wall = t.elapsed().as_secs_f64();
        if wall < best.0 {
            best = (wall, cpu_seconds() - c);
        }
    }
    (best.0, best.1, last.unwrap())
}

#[test]
#[ignore = "timing: run alone with --ignored --nocapture"]
fn vad_speed() {
    let Some(config) = vad_config(&[]) else {
        return;
    };
    let Some(samples) = asr_clips() else { return };
    let seconds = samples.len() as f64 / RATE as f64;
    eprintln!(
        "{seconds:.1} s of audio, {} frames",
        samples.len().div_ceil(vad::FRAME_SAMPLES)
    );
    let mut reference = Vec::new();
    for threads in [1usize, 2] {
        let mut session = streaming_session(&config, threads);
        let (wall, cpu, streaming) = fastest(|| streaming_probabilities(&mut session, &samples));
        let speed = seconds / wall;
        eprintln!("streaming model, frame by frame, {threads} thread(s): {wall:.3} s, {cpu:.2} s CPU ({speed:.0}x)");
        let config = config_with(&[("vad.threads", &threads.to_string())]).unwrap();
        let mut vad = SileroVad::load(&config).unwrap();
        let (wall, cpu, speech) = fastest(|| vad.speech((&samples).into()).unwrap());
        let speed = seconds / wall;
        eprintln!("SileroVad::speech (sequence model), {threads} thread(s): {wall:.3} s, {cpu:.2} s CPU ({speed:.0}x)");
        assert!(
            seconds / wall >= 100.0,
            "VAD at {:.0}x real time",
            seconds / wall
        );
        assert!(max_difference(&speech.probs, &streaming) <= 1e-5);
        if reference.is_empty() {
            reference = speech.regions;
        } else {
            assert_eq!(
                speech.regions, reference,
                "1 and 2 threads give the same regions"
            );
        }
    }
}
