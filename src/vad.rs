//! Voice activity detection (who speaks at all, not who): silero VAD on ONNX
//! Runtime gives a speech probability per 32 ms frame of 16 kHz mono audio,
//! and silero's own `get_speech_timestamps` rules turn those into speech
//! regions. Plain synchronous code, no actors. The regions are meant to drop
//! text Whisper writes where nobody speaks and to clamp word times to speech
//! ([`overlap_with_speech`], [`clamp_to_speech`]); the per-frame
//! probabilities come back too, so that a caller can cut speech chunks with
//! other rules ([`speech_regions`]).
//!
//! The model: silero VAD is an LSTM over 32 ms frames, each fed as its 512
//! new samples preceded by the 64 samples before them (576 values; without
//! that context it detects nothing). The silero-vad wheel ships it twice with
//! the same weights (`make setup` stages both): `silero_vad.onnx`, streaming,
//! one frame per call (`input [1, 576]`, `state [2, 1, 128]`, `sr` i64
//! scalar -> `output [1, 1]`, `stateN`), and `silero_vad_16k_sequence.onnx`,
//! a block of frames per call (`input [T, 576]`, `h`, `c [1, 1, 128]` ->
//! `speech_probs [T]`, `hn`, `cn`). [`SileroVad`] runs the sequence model on
//! blocks of 512 frames with the LSTM state carried over: the probabilities
//! are the streaming model's to the last bit (tests/vad.rs checks it) at
//! about half the cost, without the per-call overhead (README: "VAD speed").

use std::path::{Path, PathBuf};

use ort::session::Session;
use ort::value::TensorRef;
use serde::{Deserialize, Serialize};

use crate::audio::Samples;
use crate::config::{Config, Device, RuntimeConfig, VadConfig};
use crate::runtime::{self, RuntimeError};

/// Sample rate the model takes.
pub const SAMPLE_RATE: u32 = 16_000;
/// New samples per model call (one frame: 32 ms).
pub const FRAME_SAMPLES: usize = 512;
/// Samples of the previous frame fed before each frame.
pub const CONTEXT_SAMPLES: usize = 64;
/// Seconds per frame: frame `i` covers `[i, i + 1) * FRAME_SECONDS`.
pub const FRAME_SECONDS: f64 = FRAME_SAMPLES as f64 / SAMPLE_RATE as f64;
/// The model [`SileroVad`] runs, in `models/vad/`.
pub const MODEL_FILE: &str = "silero_vad_16k_sequence.onnx";
/// The same model, streaming (one frame per call): the reference the
/// sequence model is checked against.
pub const STREAMING_MODEL_FILE: &str = "silero_vad.onnx";

const STATE_SIZE: usize = 128;
const INPUT_SIZE: usize = CONTEXT_SAMPLES + FRAME_SAMPLES;
/// silero's `min_silence_at_max_speech`: only pauses longer than this (ms)
/// are candidates for cutting a region that reached `max_speech_s`.
const MIN_SILENCE_AT_MAX_SPEECH_MS: f64 = 98.0;
/// Frames per call of the sequence model (about 16 s; silero's default).
const BLOCK_FRAMES: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum VadError {
    #[error("vad model not found in {0}: run `make setup`")]
    NotInstalled(PathBuf),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

impl From<ort::Error> for VadError {
    fn from(e: ort::Error) -> Self {
        VadError::Runtime(RuntimeError::Ort(e.to_string()))
    }
}

/// A stretch of speech, in seconds from the start of the audio.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SpeechRegion {
    pub start: f64,
    pub end: f64,
}

impl SpeechRegion {
    pub fn new(start: f64, end: f64) -> SpeechRegion {
        SpeechRegion { start, end }
    }

    pub fn duration(&self) -> f64 {
        self.end - self.start
    }
}

/// Where the speech is in one recording.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Speech {
    /// Speech regions in time order, disjoint (neighbours may touch).
    pub regions: Vec<SpeechRegion>,
    /// Speech probability of each 32 ms frame: `probs[i]` is for the samples
    /// `[i * 512, (i + 1) * 512)` (the last frame zero-padded).
    pub probs: Vec<f32>,
}

impl Speech {
    /// Seconds of speech (the regions' total length).
    pub fn speech_seconds(&self) -> f64 {
        self.regions.iter().map(SpeechRegion::duration).sum()
    }

    /// Each region without its padding: from the start of its first frame
    /// at or above `threshold` to the end of its last one (the region itself
    /// when none is, as with [`FixedSpeech`]'s 0/1 frames outside regions).
    pub fn cores(&self, threshold: f32) -> Vec<SpeechRegion> {
        self.regions
            .iter()
            .map(|r| {
                let first = ((r.start / FRAME_SECONDS).floor() as usize).min(self.probs.len());
                let last = ((r.end / FRAME_SECONDS).ceil() as usize).min(self.probs.len());
                let inside = &self.probs[first..last];
                match (
                    inside.iter().position(|&p| p >= threshold),
                    inside.iter().rposition(|&p| p >= threshold),
                ) {
                    (Some(a), Some(b)) => SpeechRegion::new(
                        ((first + a) as f64 * FRAME_SECONDS).max(r.start),
                        ((first + b + 1) as f64 * FRAME_SECONDS).min(r.end),
                    ),
                    _ => *r,
                }
            })
            .collect()
    }
}

/// Finds speech in 16 kHz mono samples. [`SileroVad`] is the real one;
/// [`FixedSpeech`] answers given regions (tests).
pub trait SpeechDetector {
    fn speech(&mut self, samples: Samples<'_>) -> Result<Speech, VadError>;
}

/// A detector that answers the regions it was given (in time order, not
/// overlapping; clipped to the audio),
/// with probability 1 for frames whose centre lies in a region and 0
/// elsewhere. For tests of code that uses speech regions.
#[derive(Debug, Clone, Default)]
pub struct FixedSpeech(pub Vec<SpeechRegion>);

impl SpeechDetector for FixedSpeech {
    fn speech(&mut self, samples: Samples<'_>) -> Result<Speech, VadError> {
        let duration = samples.len() as f64 / SAMPLE_RATE as f64;
        let regions: Vec<SpeechRegion> = self
            .0
            .iter()
            .map(|r| SpeechRegion::new(r.start.max(0.0), r.end.min(duration)))
            .filter(|r| r.end > r.start)
            .collect();
        let probs = (0..samples.len().div_ceil(FRAME_SAMPLES))
            .map(|i| {
                let centre = (i as f64 + 0.5) * FRAME_SECONDS;
                if regions.iter().any(|r| r.start <= centre && centre < r.end) {
                    1.0
                } else {
                    0.0
                }
            })
            .collect();
        Ok(Speech { regions, probs })
    }
}

/// silero's `get_speech_timestamps` parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegionRules {
    /// A frame at or above this probability starts (or continues) speech.
    pub threshold: f32,
    /// In speech, a frame below this starts a pause (silero: threshold - 0.15).
    pub neg_threshold: f32,
    /// Speech shorter than this is dropped.
    pub min_speech_ms: u32,
    /// A pause must last this long to end a region.
    pub min_silence_ms: u32,
    /// Regions are widened by this on each side (half the gap when two are closer).
    pub speech_pad_ms: u32,
    /// Longest region in seconds, cut at its longest pause (> 98 ms) or else
    /// hard; 0 or infinite: no limit.
    pub max_speech_s: f64,
}

impl RegionRules {
    /// neg_threshold as silero sets it: threshold - 0.15, at least 0.01.
    pub fn neg_threshold_for(threshold: f32) -> f32 {
        (threshold - 0.15).max(0.01)
    }

    pub fn from_config(v: &VadConfig) -> RegionRules {
        RegionRules {
            threshold: v.threshold,
            neg_threshold: Self::neg_threshold_for(v.threshold),
            min_speech_ms: v.min_speech_ms,
            min_silence_ms: v.min_silence_ms,
            speech_pad_ms: v.speech_pad_ms,
            max_speech_s: v.max_speech_s,
        }
    }
}

impl Default for RegionRules {
    /// silero's own defaults.
    fn default() -> RegionRules {
        RegionRules {
            threshold: 0.5,
            neg_threshold: Self::neg_threshold_for(0.5),
            min_speech_ms: 250,
            min_silence_ms: 100,
            speech_pad_ms: 30,
            max_speech_s: f64::INFINITY,
        }
    }
}

/// Speech regions (seconds) of audio of `num_samples` samples at 16 kHz from
/// its per-frame probabilities, by silero's `get_speech_timestamps` rules
/// (silero-vad 6.2.3, `use_max_poss_sil_at_max_speech` on).
pub fn speech_regions(probs: &[f32], num_samples: usize, rules: &RegionRules) -> Vec<SpeechRegion> {
    let rate = SAMPLE_RATE as f64;
    speech_spans(probs, num_samples, rules)
        .into_iter()
        .map(|(s, e)| SpeechRegion::new(s as f64 / rate, e as f64 / rate))
        .collect()
}

/// [`speech_regions`] in samples.
fn speech_spans(probs: &[f32], num_samples: usize, rules: &RegionRules) -> Vec<(usize, usize)> {
    let rate = SAMPLE_RATE as f64;
    let frame = FRAME_SAMPLES as f64;
    let min_speech = rate * rules.min_speech_ms as f64 / 1000.0;
    let min_silence = rate * rules.min_silence_ms as f64 / 1000.0;
    let pad = (rate * rules.speech_pad_ms as f64 / 1000.0).round() as i64;
    let max_speech = if rules.max_speech_s > 0.0 && rules.max_speech_s.is_finite() {
        rate * rules.max_speech_s - frame - 2.0 * pad as f64
    } else {
        f64::INFINITY
    };
    let min_silence_at_max = rate * MIN_SILENCE_AT_MAX_SPEECH_MS / 1000.0;

    let mut spans: Vec<(usize, usize)> = Vec::new();
    // start of the region being built (silero's `triggered` + `current_speech`)
    let mut start: Option<usize> = None;
    // first frame of the pause under way, if any (silero's `temp_end`)
    let mut pause: Option<usize> = None;
    // pauses (start, length) longer than 98 ms in the current region: where
    // a region reaching max_speech_s is cut
    let mut pauses: Vec<(usize, usize)> = Vec::new();

    for (i, &p) in probs.iter().enumerate() {
        let now = i * FRAME_SAMPLES;
        if p >= rules.threshold {
            if let Some(t) = pause.take() {
                if (now - t) as f64 > min_silence_at_max {
                    pauses.push((t, now - t));
                }
            }
            if start.is_none() {
                start = Some(now);
                continue;
            }
        }
        let Some(s) = start else { continue };
        if (now - s) as f64 > max_speech {
            // the longest pause (the first of equals), else a hard cut here
            let longest = pauses
                .iter()
                .copied()
                .reduce(|a, b| if b.1 > a.1 { b } else { a });
            pause = None;
            pauses.clear();
            match longest {
                Some((at, len)) => {
                    spans.push((s, at));
                    // the next region starts where that pause ended (still in speech)
                    start = Some(at + len);
                }
                None => {
                    spans.push((s, now));
                    start = None;
                    continue;
                }
            }
        }
        if p < rules.neg_threshold {
            let t = *pause.get_or_insert(now);
            if ((now - t) as f64) < min_silence {
                continue;
            }
            let s = start.take().expect("in speech");
            if (t - s) as f64 > min_speech {
                spans.push((s, t));
            }
            pause = None;
            pauses.clear();
        }
    }
    if let Some(s) = start {
        if (num_samples.saturating_sub(s)) as f64 > min_speech {
            spans.push((s, num_samples));
        }
    }

    // padding: `pad` on each side, or half the gap each when two regions are
    // closer than 2 * pad
    let n = num_samples as i64;
    let mut out: Vec<(i64, i64)> = spans.iter().map(|&(s, e)| (s as i64, e as i64)).collect();
    for i in 0..out.len() {
        if i == 0 {
            out[0].0 = (out[0].0 - pad).max(0);
        }
        if i + 1 < out.len() {
            let gap = out[i + 1].0 - out[i].1;
            if gap < 2 * pad {
                out[i].1 += gap.div_euclid(2);
                out[i + 1].0 = (out[i + 1].0 - gap.div_euclid(2)).max(0);
            } else {
                out[i].1 = (out[i].1 + pad).min(n);
                out[i + 1].0 = (out[i + 1].0 - pad).max(0);
            }
        } else {
            out[i].1 = (out[i].1 + pad).min(n);
        }
    }
    out.into_iter()
        .map(|(s, e)| (s as usize, e as usize))
        .collect()
}

/// Seconds of `[start, end]` that lie in speech. `regions` sorted and
/// disjoint, as [`SpeechDetector::speech`] returns them.
pub fn overlap_with_speech(start: f64, end: f64, regions: &[SpeechRegion]) -> f64 {
    if end <= start {
        return 0.0;
    }
    let first = regions.partition_point(|r| r.end <= start);
    regions[first..]
        .iter()
        .take_while(|r| r.start < end)
        .map(|r| r.end.min(end) - r.start.max(start))
        .filter(|d| *d > 0.0)
        .sum()
}

/// A word's `[start, end]` clamped into the speech it overlaps: the start
/// moved to the first overlapping region's start if it lies before it, the
/// end to the last overlapping region's end if it lies after it (a word
/// spanning several regions keeps the pauses between them). None when the
/// word overlaps no speech (touching a region's edge is no overlap); a word
/// of zero length (or with `end` before `start`) is the point `start`, in
/// speech when it lies in a region, edges included. `regions` sorted and
/// disjoint.
pub fn clamp_to_speech(start: f64, end: f64, regions: &[SpeechRegion]) -> Option<(f64, f64)> {
    if end <= start {
        let i = regions.partition_point(|r| r.end < start);
        return regions
            .get(i)
            .filter(|r| r.start <= start)
            .map(|_| (start, start));
    }
    let first = regions.partition_point(|r| r.end <= start);
    let touched = regions[first..]
        .iter()
        .take_while(|r| r.start < end)
        .count();
    if touched == 0 {
        return None;
    }
    let (a, b) = (&regions[first], &regions[first + touched - 1]);
    Some((start.max(a.start), end.min(b.end)))
}

/// Where the sound of each region begins and ends: each core edge moved out
/// (at most `reach` seconds, never into the neighbouring core) over the 10 ms
/// frames that stay at least 10 dB above the quietest frame there (the
/// pause's noise floor).
/// The detector's probability rises only once speech is clearly there; a
/// soft onset (a breath, a quiet first consonant) starts earlier. `cores`
/// as [`Speech::cores`].
pub fn sound_edges<'s>(
    samples: impl Into<Samples<'s>>,
    cores: &[SpeechRegion],
    reach: f64,
) -> Vec<SpeechRegion> {
    const STEP: usize = SAMPLE_RATE as usize / 100;
    let samples: Samples = samples.into();
    let n = samples.len().div_ceil(STEP);
    let db = |f: usize| -> f32 {
        let s = samples.slice((f * STEP).min(samples.len())..((f + 1) * STEP).min(samples.len()));
        let e = s.iter().map(|v| v * v).sum::<f32>() / s.len().max(1) as f32;
        10.0 * e.max(1e-10).log10()
    };
    let frame = |t: f64| ((t * 100.0).floor().max(0.0) as usize).min(n);
    let duration = samples.len() as f64 / SAMPLE_RATE as f64;
    cores
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut out = *c;
            let prev_end = if i > 0 { cores[i - 1].end } else { 0.0 };
            let next_start = cores.get(i + 1).map_or(duration, |n| n.start);
            let r = SpeechRegion::new(
                (c.start - reach).max(prev_end),
                (c.end + reach).min(next_start),
            );
            // onset: from the core's start back over the pause before it
            let (a, b) = (frame(r.start), frame(c.start));
            if b > a {
                let floor = (a..b).map(db).fold(f32::INFINITY, f32::min);
                let mut f = b;
                while f > a && db(f - 1) >= floor + 10.0 {
                    f -= 1;
                }
                out.start = (f as f64 / 100.0).max(r.start);
            }
            // offset: from the core's end on over the pause after it
            let (a, b) = (frame(c.end), frame(r.end));
            if b > a {
                let floor = (a..b).map(db).fold(f32::INFINITY, f32::min);
                let mut f = a;
                while f < b && db(f) >= floor + 10.0 {
                    f += 1;
                }
                out.end = (f as f64 / 100.0).min(r.end);
            }
            out
        })
        .collect()
}

/// `<root>/models/vad`.
pub fn model_dir(root: &Path) -> PathBuf {
    root.join("models").join("vad")
}

/// Fills `out` (576 values) with frame `frame`'s model input: the 64 samples
/// before it, then its 512 samples, zeros past the audio's ends.
pub fn fill_frame<'s>(samples: impl Into<Samples<'s>>, frame: usize, out: &mut [f32]) {
    let samples: Samples = samples.into();
    out.fill(0.0);
    let first = frame * FRAME_SAMPLES;
    let from = first.saturating_sub(CONTEXT_SAMPLES);
    let to = (first + FRAME_SAMPLES).min(samples.len());
    if from < to {
        let at = CONTEXT_SAMPLES - (first - from);
        samples.copy_into(from, &mut out[at..at + (to - from)]);
    }
}

/// silero VAD on ONNX Runtime, always on the CPU (faster-whisper keeps it
/// there too: the model is tiny and its LSTM runs frame after frame).
pub struct SileroVad {
    session: Session,
    rules: RegionRules,
}

impl SileroVad {
    /// Loads `models/vad/silero_vad_16k_sequence.onnx` with `vad.threads`
    /// ONNX Runtime threads; fails with a message naming `make setup` when
    /// it is missing.
    pub fn load(config: &Config) -> Result<SileroVad, VadError> {
        let dir = model_dir(&config.models_root());
        if !dir.join("manifest.json").exists() {
            return Err(VadError::NotInstalled(dir));
        }
        let env = runtime::environment(&config.onnxruntime_library())?;
        let rt = RuntimeConfig {
            device: Device::Cpu,
            intra_threads: config.vad.threads,
            inter_threads: 1,
            ..config.runtime.clone()
        };
        let (session, _) = runtime::session(env, &dir.join(MODEL_FILE), &rt)?;
        Ok(SileroVad {
            session,
            rules: RegionRules::from_config(&config.vad),
        })
    }

    /// The rules [`SpeechDetector::speech`] applies.
    pub fn rules(&self) -> &RegionRules {
        &self.rules
    }

    /// Speech probability of each 32 ms frame of `samples` (16 kHz mono).
    pub fn probabilities<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
    ) -> Result<Vec<f32>, VadError> {
        let samples: Samples = samples.into();
        let frames = samples.len().div_ceil(FRAME_SAMPLES);
        let mut probs = Vec::with_capacity(frames);
        let mut input = vec![0.0f32; BLOCK_FRAMES.min(frames) * INPUT_SIZE];
        let mut h = vec![0.0f32; STATE_SIZE];
        let mut c = vec![0.0f32; STATE_SIZE];
        for first in (0..frames).step_by(BLOCK_FRAMES) {
            let count = BLOCK_FRAMES.min(frames - first);
            let rows = &mut input[..count * INPUT_SIZE];
            for (i, row) in rows.chunks_exact_mut(INPUT_SIZE).enumerate() {
                fill_frame(samples, first + i, row);
            }
            let x = TensorRef::from_array_view(([count, INPUT_SIZE], &*rows))?;
            let hi = TensorRef::from_array_view(([1usize, 1, STATE_SIZE], &h[..]))?;
            let ci = TensorRef::from_array_view(([1usize, 1, STATE_SIZE], &c[..]))?;
            let out = self
                .session
                .run(ort::inputs!["input" => x, "h" => hi, "c" => ci])?;
            let (_, p) = out["speech_probs"].try_extract_tensor::<f32>()?;
            let (_, hn) = out["hn"].try_extract_tensor::<f32>()?;
            let (_, cn) = out["cn"].try_extract_tensor::<f32>()?;
            if p.len() != count || hn.len() != STATE_SIZE || cn.len() != STATE_SIZE {
                return Err(VadError::Runtime(RuntimeError::Ort(format!(
                    "silero vad returned {} probabilities for {count} frames and states of {} and {} values",
                    p.len(),
                    hn.len(),
                    cn.len()
                ))));
            }
            probs.extend_from_slice(p);
            let (hn, cn) = (hn.to_vec(), cn.to_vec());
            drop(out);
            h = hn;
            c = cn;
        }
        Ok(probs)
    }
}

impl SpeechDetector for SileroVad {
    fn speech(&mut self, samples: Samples<'_>) -> Result<Speech, VadError> {
        let probs = self.probabilities(samples)?;
        let regions = speech_regions(&probs, samples.len(), &self.rules);
        Ok(Speech { regions, probs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities of `frames` frames: `p` on the given frame ranges, 0 elsewhere.
    fn probs(frames: usize, speech: &[(usize, usize, f32)]) -> Vec<f32> {
        let mut v = vec![0.0; frames];
        for &(a, b, p) in speech {
            v[a..b].fill(p);
        }
        v
    }

    fn rules(min_speech_ms: u32, min_silence_ms: u32, speech_pad_ms: u32) -> RegionRules {
        RegionRules {
            min_speech_ms,
            min_silence_ms,
            speech_pad_ms,
            ..RegionRules::default()
        }
    }

    /// Regions in samples.
    fn spans(p: &[f32], rules: &RegionRules) -> Vec<(usize, usize)> {
        speech_spans(p, p.len() * FRAME_SAMPLES, rules)
    }

    const F: usize = FRAME_SAMPLES;

    #[test]
    fn silence_has_no_regions() {
        assert!(spans(&probs(300, &[]), &RegionRules::default()).is_empty());
        assert!(spans(&[], &RegionRules::default()).is_empty());
        // just under the threshold all along
        assert!(spans(&vec![0.49; 300], &RegionRules::default()).is_empty());
    }

    #[test]
    fn one_region_with_its_frame_edges() {
        // speech on frames 10..40, no padding, pause far longer than min_silence
        let r = spans(&probs(100, &[(10, 40, 0.9)]), &rules(0, 100, 0));
        assert_eq!(r, vec![(10 * F, 40 * F)]);
    }

    #[test]
    fn threshold_is_inclusive_and_pauses_need_the_negative_threshold() {
        let r0 = rules(0, 0, 0);
        // exactly the threshold starts speech
        assert_eq!(
            spans(&probs(20, &[(5, 10, 0.5)]), &r0),
            vec![(5 * F, 10 * F)]
        );
        // between neg_threshold (0.35) and threshold: speech goes on once started
        let p = probs(30, &[(5, 10, 0.9), (10, 20, 0.4)]);
        assert_eq!(spans(&p, &r0), vec![(5 * F, 20 * F)]);
        // ... but does not start it
        assert!(spans(&probs(30, &[(5, 20, 0.4)]), &r0).is_empty());
    }

    #[test]
    fn short_pauses_are_bridged_long_ones_split() {
        // min_silence 100 ms = 1600 samples: a region ends at a silent frame
        // at least that long after the pause began (silero's rule), so a
        // pause of 4 frames (the 5th is speech again) is bridged and one of
        // 5 frames splits
        let r = rules(0, 100, 0);
        let bridged = probs(100, &[(10, 30, 0.9), (34, 50, 0.9)]);
        assert_eq!(spans(&bridged, &r), vec![(10 * F, 50 * F)]);
        let split = probs(100, &[(10, 30, 0.9), (35, 50, 0.9)]);
        assert_eq!(spans(&split, &r), vec![(10 * F, 30 * F), (35 * F, 50 * F)]);
    }

    #[test]
    fn short_speech_is_dropped() {
        // 250 ms = 4000 samples: 7 frames (3584) dropped, 8 frames (4096) kept
        let r = rules(250, 100, 0);
        assert!(spans(&probs(100, &[(10, 17, 0.9)]), &r).is_empty());
        assert_eq!(
            spans(&probs(100, &[(10, 18, 0.9)]), &r),
            vec![(10 * F, 18 * F)]
        );
        // speech running to the end counts up to the end of the audio
        let p = probs(20, &[(12, 20, 0.9)]);
        assert_eq!(
            speech_spans(&p, 20 * F - 50, &r),
            vec![(12 * F, 20 * F - 50)]
        );
        assert!(
            speech_spans(&p, 20 * F - 200, &r).is_empty(),
            "8 frames less 200 samples is too short"
        );
    }

    #[test]
    fn padding_widens_and_splits_small_gaps() {
        // pad 30 ms = 480 samples
        let r = rules(0, 100, 30);
        let p = probs(100, &[(10, 20, 0.9), (30, 40, 0.9), (45, 50, 0.9)]);
        let s = spans(&p, &r);
        // gap 20->30 is 5120 samples >= 960: each side padded by 480
        assert_eq!(s[0], (10 * F - 480, 20 * F + 480));
        // gap 40->45 is 2560 >= 960 too
        assert_eq!(s[1], (30 * F - 480, 40 * F + 480));
        assert_eq!(s[2], (45 * F - 480, 50 * F + 480));
        // a larger pad than half a gap: the gap is split in two (regions touch)
        let r = rules(0, 100, 100); // 1600 samples
        let s = spans(&p, &r);
        assert_eq!(s[1].1, 40 * F + 1280, "half of the 2560-sample gap");
        assert_eq!(s[2].0, 45 * F - 1280);
        assert_eq!(s[0], (10 * F - 1600, 20 * F + 1600));
        // padding stops at the audio's ends
        let s = spans(&probs(20, &[(0, 20, 0.9)]), &r);
        assert_eq!(s, vec![(0, 20 * F)]);
    }

    #[test]
    fn long_regions_are_cut_at_their_longest_pause() {
        // max 1 s: 16000 - 512 samples with no padding; pauses of 4 and 6
        // frames (> 98 ms each) shorter than min_silence (0.5 s)
        let r = RegionRules {
            max_speech_s: 1.0,
            ..rules(0, 500, 0)
        };
        let p = probs(200, &[(0, 10, 0.9), (14, 20, 0.9), (26, 60, 0.9)]);
        let s = spans(&p, &r);
        // cut at the longest pause (frames 20..26), the next region starting where it ends
        assert_eq!(s[0], (0, 20 * F));
        assert_eq!(s[1].0, 26 * F);
        // the rest (26..60 = 34 frames > 30.25) has no pause: cut hard, then
        // the frame after the cut starts a new region
        assert_eq!(s[1].1, (26 + 31) * F);
        assert_eq!(s[2], ((26 + 32) * F, 60 * F));
        // no limit: one region (pauses bridged)
        assert_eq!(spans(&p, &rules(0, 500, 0)), vec![(0, 60 * F)]);
    }

    /// `tests/data/vad_rules_fixture.json` (scripts/vad_rules_fixture.py):
    /// regions silero-vad 6.2.3's own `get_speech_timestamps_from_probs`
    /// found in random probability sequences with random rules.
    #[test]
    fn regions_match_silero_on_random_sequences() {
        #[derive(Deserialize)]
        struct Case {
            threshold: f32,
            min_speech_ms: u32,
            min_silence_ms: u32,
            speech_pad_ms: u32,
            max_speech_s: f64,
            num_samples: usize,
            probs: Vec<f32>,
            spans: Vec<(usize, usize)>,
        }
        #[derive(Deserialize)]
        struct Fixture {
            cases: Vec<Case>,
        }
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/vad_rules_fixture.json"
        );
        let fixture: Fixture =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(fixture.cases.len() >= 40);
        let mut regions = 0;
        for (i, c) in fixture.cases.iter().enumerate() {
            let rules = RegionRules {
                threshold: c.threshold,
                neg_threshold: RegionRules::neg_threshold_for(c.threshold),
                min_speech_ms: c.min_speech_ms,
                min_silence_ms: c.min_silence_ms,
                speech_pad_ms: c.speech_pad_ms,
                max_speech_s: c.max_speech_s,
            };
            assert_eq!(
                speech_spans(&c.probs, c.num_samples, &rules),
                c.spans,
                "case {i}: {rules:?}"
            );
            regions += c.spans.len();
        }
        assert!(
            regions > 100,
            "the fixture exercises many regions ({regions})"
        );
    }

    #[test]
    fn regions_are_in_seconds() {
        let r = speech_regions(&probs(100, &[(50, 75, 0.9)]), 100 * F, &rules(0, 100, 0));
        assert_eq!(r, vec![SpeechRegion::new(1.6, 2.4)]);
    }

    fn regions() -> Vec<SpeechRegion> {
        vec![
            SpeechRegion::new(1.0, 2.0),
            SpeechRegion::new(3.0, 4.0),
            SpeechRegion::new(4.0, 5.0),
        ]
    }

    #[test]
    fn sound_edges_reach_back_to_a_soft_onset() {
        // 0.5 s of silence, 0.2 s of quiet breath (-40 dB), then loud speech from 0.7 s to 1.5 s
        let mut x = vec![0.0f32; 32_000];
        for (i, v) in x.iter_mut().enumerate() {
            let t = i as f64 / 16_000.0;
            let amp = if (0.5..0.7).contains(&t) {
                0.01
            } else if (0.7..1.5).contains(&t) {
                0.5
            } else {
                0.0
            };
            *v = amp * ((i as f32) * 0.3).sin();
        }
        let cores = [SpeechRegion::new(0.72, 1.5)];
        let e = sound_edges(&x, &cores, 0.3);
        assert!((e[0].start - 0.5).abs() < 0.011, "{e:?}");
        assert!((e[0].end - 1.5).abs() < 0.011, "{e:?}");
        // a core that already starts at its sound is left alone
        let e = sound_edges(&x, &[SpeechRegion::new(0.5, 1.5)], 0.3);
        assert!((e[0].start - 0.5).abs() < 0.011, "{e:?}");
    }

    #[test]
    fn cores_drop_the_padding() {
        // frames 10..20 above 0.5, the region padded by 3 frames each side
        let mut probs = vec![0.0f32; 40];
        probs[10..20].fill(0.9);
        let speech = Speech {
            regions: vec![SpeechRegion::new(7.0 * FRAME_SECONDS, 23.0 * FRAME_SECONDS)],
            probs,
        };
        let core = speech.cores(0.5);
        assert!(
            (core[0].start - 10.0 * FRAME_SECONDS).abs() < 1e-9
                && (core[0].end - 20.0 * FRAME_SECONDS).abs() < 1e-9
        );
        // nothing above the threshold: the region stands
        let flat = Speech {
            regions: speech.regions.clone(),
            probs: vec![0.2; 40],
        };
        assert_eq!(flat.cores(0.5), flat.regions);
    }

    #[test]
    fn overlap_sums_the_speech_inside() {
        let r = regions();
        assert_eq!(overlap_with_speech(0.0, 0.5, &r), 0.0);
        assert_eq!(
            overlap_with_speech(2.0, 3.0, &r),
            0.0,
            "edges are no overlap"
        );
        assert!((overlap_with_speech(1.5, 1.75, &r) - 0.25).abs() < 1e-12);
        assert!((overlap_with_speech(0.5, 1.5, &r) - 0.5).abs() < 1e-12);
        assert!((overlap_with_speech(1.5, 3.5, &r) - 1.0).abs() < 1e-12);
        assert!((overlap_with_speech(0.0, 10.0, &r) - 3.0).abs() < 1e-12);
        assert_eq!(overlap_with_speech(1.5, 1.5, &r), 0.0);
        assert_eq!(overlap_with_speech(1.5, 1.0, &r), 0.0);
        assert_eq!(overlap_with_speech(1.0, 2.0, &[]), 0.0);
    }

    #[test]
    fn clamp_moves_word_edges_into_speech() {
        let r = regions();
        // inside: unchanged
        assert_eq!(clamp_to_speech(1.2, 1.8, &r), Some((1.2, 1.8)));
        // starting in silence: start moved to the region
        assert_eq!(clamp_to_speech(0.7, 1.3, &r), Some((1.0, 1.3)));
        // running past the end
        assert_eq!(clamp_to_speech(1.7, 2.6, &r), Some((1.7, 2.0)));
        // over a pause into the next region: both ends clamped, the pause kept
        assert_eq!(clamp_to_speech(1.5, 3.5, &r), Some((1.5, 3.5)));
        assert_eq!(clamp_to_speech(0.5, 6.0, &r), Some((1.0, 5.0)));
        // across touching regions
        assert_eq!(clamp_to_speech(3.5, 4.5, &r), Some((3.5, 4.5)));
        // in a pause, touching an edge, past the end, before the start: None
        assert_eq!(clamp_to_speech(2.2, 2.8, &r), None);
        assert_eq!(clamp_to_speech(2.0, 3.0, &r), None);
        assert_eq!(clamp_to_speech(5.0, 6.0, &r), None);
        assert_eq!(clamp_to_speech(0.0, 1.0, &r), None);
        assert_eq!(clamp_to_speech(1.2, 1.8, &[]), None);
        // zero length: in a region (edges included) or not
        assert_eq!(clamp_to_speech(1.5, 1.5, &r), Some((1.5, 1.5)));
        assert_eq!(clamp_to_speech(2.0, 2.0, &r), Some((2.0, 2.0)));
        assert_eq!(clamp_to_speech(2.5, 2.5, &r), None);
    }

    #[test]
    fn fixed_speech_answers_its_regions() {
        let mut fake = FixedSpeech(vec![
            SpeechRegion::new(0.5, 1.0),
            SpeechRegion::new(1.5, 9.0),
        ]);
        let samples = vec![0.0; 32_000]; // 2 s
        let s = fake.speech((&samples).into()).unwrap();
        assert_eq!(
            s.regions,
            vec![SpeechRegion::new(0.5, 1.0), SpeechRegion::new(1.5, 2.0)]
        );
        assert_eq!(s.probs.len(), 63);
        assert_eq!(s.probs[15], 0.0, "frame 15 centred at 0.496 s");
        assert_eq!(s.probs[16], 1.0);
        assert_eq!(s.probs[61], 1.0);
        assert!((s.speech_seconds() - 1.0).abs() < 1e-12);
    }

    #[test]
    fn a_missing_model_names_make_setup() {
        let dir = std::env::temp_dir().join(format!("colloquy-vad-missing-{}", std::process::id()));
        let env = vec![(
            "COLLOQUY__MODELS__DIR".to_string(),
            dir.display().to_string(),
        )];
        let config = Config::load_with_env(None, env).unwrap();
        let Err(err) = SileroVad::load(&config) else {
            panic!("loaded a model from an empty directory")
        };
        assert!(matches!(err, VadError::NotInstalled(_)));
        assert!(err.to_string().contains("make setup"), "{err}");
    }

    #[test]
    fn frames_get_their_context() {
        let samples: Vec<f32> = (0..1200).map(|i| i as f32).collect();
        let mut row = vec![-1.0; INPUT_SIZE];
        fill_frame(&samples, 0, &mut row);
        assert!(row[..64].iter().all(|&v| v == 0.0));
        assert_eq!(row[64], 0.0);
        assert_eq!(row[575], 511.0);
        fill_frame(&samples, 1, &mut row);
        assert_eq!(row[0], 448.0);
        assert_eq!(row[64], 512.0);
        assert_eq!(row[575], 1023.0);
        fill_frame(&samples, 2, &mut row);
        assert_eq!(row[64 + 175], 1199.0);
        assert_eq!(row[64 + 176], 0.0, "zero past the end");
        fill_frame(&samples, 5, &mut row);
        assert!(row.iter().all(|&v| v == 0.0));
    }
}
