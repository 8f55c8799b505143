//! Whisper's log-mel front end: 80 mel bins (128 for large-v3 and turbo), 25 ms periodic Hann window,
//! 10 ms hop, at 16 kHz.
//!
//! It reproduces faster-whisper's `FeatureExtractor` (the reference our
//! transcripts are compared against): the waveform is padded with 160 zeros,
//! reflect-padded by half a window on both sides (a centred STFT), the last
//! STFT frame is dropped, power spectra go through Slaney-style mel filters,
//! then `log10(max(x, 1e-10))`, floored at the file's maximum minus 8, and
//! mapped by `(x + 4) / 4`. The floor uses the maximum over the whole file,
//! not per 30 s window, as faster-whisper does.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

use crate::audio::Samples;

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in one 30 s encoder window.
pub const N_FRAMES: usize = 3000;

/// Log-mel features of a recording, computed window by window as the
/// transcriber asks for them: a long recording never holds its whole
/// spectrogram (80 mels x 100 frames/s x 4 bytes: 346 MB for 3 hours), only
/// the samples and the global maximum that Whisper's normalisation needs.
/// Values are those of the whole-recording computation (faster-whisper's),
/// frame for frame.
pub struct LogMel<'a> {
    pub n_mels: usize,
    /// Frames of the whole recording.
    pub n_frames: usize,
    front: &'a MelFrontEnd,
    samples: Samples<'a>,
    /// log10 values below this are raised to it (the maximum over the recording - 8).
    floor: f32,
}

impl LogMel<'_> {
    /// Frames `start..start + len` (clipped to the recording), mel-major:
    /// `out[m * len + t]`.
    pub fn frames(&self, start: usize, len: usize) -> Vec<f32> {
        let start = start.min(self.n_frames);
        let len = len.min(self.n_frames - start);
        let mut out = vec![0.0f32; self.n_mels * len];
        self.front
            .each_frame(self.samples, start..start + len, |t, energies| {
                for (m, &v) in energies.iter().enumerate() {
                    out[m * len + t - start] = (v.max(self.floor) + 4.0) / 4.0;
                }
            });
        out
    }

    /// The `[n_mels, N_FRAMES]` window starting at frame `start` with `len`
    /// frames of content, zero-padded in log-mel space (faster-whisper's
    /// `pad_or_trim` on the features).
    pub fn window(&self, start: usize, len: usize) -> Vec<f32> {
        let len = len.min(N_FRAMES).min(self.n_frames.saturating_sub(start));
        let content = self.frames(start, len);
        let mut out = vec![0.0f32; self.n_mels * N_FRAMES];
        for m in 0..self.n_mels {
            out[m * N_FRAMES..m * N_FRAMES + len].copy_from_slice(&content[m * len..(m + 1) * len]);
        }
        out
    }
}

/// Sample `i` of the signal the STFT frames: faster-whisper pads 160 zeros,
/// then the STFT reflect-pads N_FFT/2 on both sides (numpy's "reflect": the
/// edge sample is not repeated; a signal no longer than the pad is
/// zero-extended first so the reflection exists).
fn padded_sample(samples: Samples, i: usize) -> f32 {
    let pad = N_FFT / 2;
    let n = (samples.len() + HOP).max(pad + 1);
    let src = |j: usize| samples.get(j).unwrap_or(0.0);
    if i < pad {
        src(pad - i)
    } else if i < pad + n {
        src(i - pad)
    } else {
        src(2 * (n - 1) + pad - i)
    }
}

/// STFT frame `t` (N_FFT samples from `t * HOP` of the padded signal).
fn padded_frame(samples: Samples, t: usize, frame: &mut [f32]) {
    let pad = N_FFT / 2;
    let first = t * HOP;
    if first >= pad && first - pad + N_FFT <= samples.len() {
        samples.copy_into(first - pad, frame);
    } else {
        for (k, v) in frame.iter_mut().enumerate() {
            *v = padded_sample(samples, first + k);
        }
    }
}

/// The padded signal's frame count, the last STFT frame dropped (as faster-whisper).
fn frame_count(n_samples: usize) -> usize {
    let pad = N_FFT / 2;
    let n = (n_samples + HOP).max(pad + 1);
    let n_stft = 1 + (n + 2 * pad - N_FFT) / HOP;
    n_stft - 1
}

/// One thread's FFT work buffers.
struct FftBuffers {
    input: Vec<f32>,
    spectrum: Vec<realfft::num_complex::Complex<f32>>,
    scratch: Vec<realfft::num_complex::Complex<f32>>,
    power: Vec<f32>,
}

impl FftBuffers {
    fn new(front: &MelFrontEnd) -> FftBuffers {
        FftBuffers {
            input: front.fft.make_input_vec(),
            spectrum: front.fft.make_output_vec(),
            scratch: front.fft.make_scratch_vec(),
            power: vec![0.0f32; N_FFT / 2 + 1],
        }
    }
}

/// One mel filter: its first FFT bin and its non-zero weights.
struct Filter {
    first_bin: usize,
    weights: Vec<f32>,
}

/// Computes log-mel features; build once and reuse (FFT plan and filters).
pub struct MelFrontEnd {
    n_mels: usize,
    filters: Vec<Filter>,
    window: Vec<f32>,
    fft: Arc<dyn RealToComplex<f32>>,
}

impl MelFrontEnd {
    pub fn new(n_mels: usize) -> Self {
        let dense = mel_filters(SAMPLE_RATE as f64, N_FFT, n_mels);
        let filters = dense
            .iter()
            .map(|row| {
                let first = row.iter().position(|&w| w > 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w > 0.0).unwrap_or(0);
                Filter {
                    first_bin: first,
                    weights: row[first..=last.max(first)]
                        .iter()
                        .map(|&w| w as f32)
                        .collect(),
                }
            })
            .collect();
        let window = (0..N_FFT)
            .map(|i| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self {
            n_mels,
            filters,
            window,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// log10 mel energies of one windowed frame (before the floor).
    fn log_energies(&self, frame: &[f32], b: &mut FftBuffers, out: &mut [f32]) {
        for ((dst, &x), &w) in b.input.iter_mut().zip(frame).zip(&self.window) {
            *dst = x * w;
        }
        self.fft
            .process_with_scratch(&mut b.input, &mut b.spectrum, &mut b.scratch)
            .expect("fft buffers have the planned sizes");
        for (p, c) in b.power.iter_mut().zip(&b.spectrum) {
            *p = c.re * c.re + c.im * c.im;
        }
        for (o, f) in out.iter_mut().zip(&self.filters) {
            let e: f32 = f
                .weights
                .iter()
                .zip(&b.power[f.first_bin..])
                .map(|(w, p)| w * p)
                .sum();
            *o = e.max(1e-10).log10();
        }
    }

    /// Log-mel features of 16 kHz mono samples, computed on demand by
    /// window; this pass finds the maximum over the whole recording (the
    /// normalisation's reference), storing nothing.
    pub fn compute<'a>(&'a self, samples: impl Into<Samples<'a>>) -> LogMel<'a> {
        let samples = samples.into();
        let n_frames = frame_count(samples.len());
        let mut max = f32::NEG_INFINITY;
        self.each_frame(samples, 0..n_frames, |_, energies| {
            max = energies.iter().copied().fold(max, f32::max)
        });
        LogMel {
            n_mels: self.n_mels,
            n_frames,
            front: self,
            samples,
            floor: max - 8.0,
        }
    }

    /// The log10 mel energies (before the floor) of STFT frames `frames`
    /// of `samples`, handed to `f` with each frame's index.
    fn each_frame(
        &self,
        samples: Samples,
        frames: std::ops::Range<usize>,
        mut f: impl FnMut(usize, &[f32]),
    ) {
        let mut fft = FftBuffers::new(self);
        let mut frame = vec![0.0f32; N_FFT];
        let mut energies = vec![0.0f32; self.n_mels];
        for t in frames {
            padded_frame(samples, t, &mut frame);
            self.log_energies(&frame, &mut fft, &mut energies);
            f(t, &energies);
        }
    }
}

/// Slaney-style mel filter bank (librosa `mel(htk=False, norm="slaney")`),
/// `n_mels` rows of `n_fft/2 + 1` weights.
pub fn mel_filters(sr: f64, n_fft: usize, n_mels: usize) -> Vec<Vec<f64>> {
    let n_bins = n_fft / 2 + 1;
    let fft_freqs: Vec<f64> = (0..n_bins).map(|i| i as f64 * sr / n_fft as f64).collect();
    let f_sp = 200.0 / 3.0;
    let min_log_hz = 1000.0;
    let min_log_mel = min_log_hz / f_sp;
    let logstep = 6.4f64.ln() / 27.0;
    let hz_to_mel = |f: f64| {
        if f >= min_log_hz {
            min_log_mel + (f / min_log_hz).ln() / logstep
        } else {
            f / f_sp
        }
    };
    let mel_to_hz = |m: f64| {
        if m >= min_log_mel {
            min_log_hz * (logstep * (m - min_log_mel)).exp()
        } else {
            f_sp * m
        }
    };
    let max_mel = hz_to_mel(sr / 2.0);
    let freqs: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(max_mel * i as f64 / (n_mels + 1) as f64))
        .collect();
    (0..n_mels)
        .map(|m| {
            let (lo, mid, hi) = (freqs[m], freqs[m + 1], freqs[m + 2]);
            let enorm = 2.0 / (hi - lo);
            fft_freqs
                .iter()
                .map(|&f| {
                    let lower = (f - lo) / (mid - lo);
                    let upper = (hi - f) / (hi - mid);
                    lower.min(upper).max(0.0) * enorm
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A direct O(N^2) DFT log-mel, written from the definition, to check the
    /// FFT path and the framing against.
    fn naive_log_mel(samples: &[f32], n_mels: usize) -> Vec<Vec<f64>> {
        let mut x: Vec<f64> = samples.iter().map(|&s| s as f64).collect();
        x.extend(std::iter::repeat(0.0).take(HOP));
        let n = x.len();
        let pad = N_FFT / 2;
        let get = |i: isize| -> f64 {
            // reflect without repeating the edge
            let j = if i < 0 {
                -i
            } else if i >= n as isize {
                2 * (n as isize - 1) - i
            } else {
                i
            };
            x[j as usize]
        };
        let n_frames = (n + 2 * pad - N_FFT) / HOP; // last frame dropped
        let filters = mel_filters(16000.0, N_FFT, n_mels);
        let mut out = vec![vec![0.0; n_frames]; n_mels];
        let mut max = f64::NEG_INFINITY;
        for t in 0..n_frames {
            let mut power = vec![0.0; N_FFT / 2 + 1];
            for (k, p) in power.iter_mut().enumerate() {
                let (mut re, mut im) = (0.0, 0.0);
                for i in 0..N_FFT {
                    let w =
                        0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos();
                    let s = get((t * HOP + i) as isize - pad as isize) * w;
                    let ang = -2.0 * std::f64::consts::PI * (k * i) as f64 / N_FFT as f64;
                    re += s * ang.cos();
                    im += s * ang.sin();
                }
                *p = re * re + im * im;
            }
            for m in 0..n_mels {
                let e: f64 = filters[m].iter().zip(&power).map(|(a, b)| a * b).sum();
                let v = e.max(1e-10).log10();
                max = max.max(v);
                out[m][t] = v;
            }
        }
        for row in &mut out {
            for v in row.iter_mut() {
                *v = (v.max(max - 8.0) + 4.0) / 4.0;
            }
        }
        out
    }

    fn test_signal(len: usize) -> Vec<f32> {
        // two tones and a deterministic pseudo-noise
        let mut seed = 12345u32;
        (0..len)
            .map(|i| {
                seed = seed.wrapping_mul(1664525).wrapping_add(1013904223);
                let noise = (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5;
                let t = i as f32 / 16000.0;
                0.5 * (2.0 * std::f32::consts::PI * 440.0 * t).sin()
                    + 0.2 * (2.0 * std::f32::consts::PI * 2500.0 * t).sin()
                    + 0.05 * noise
            })
            .collect()
    }

    #[test]
    fn frame_count_matches_faster_whisper() {
        let fe = MelFrontEnd::new(80);
        // N samples -> N/160 + 1 frames for N a multiple of 160
        assert_eq!(fe.compute(&vec![0.0; 16000]).n_frames, 101);
        assert_eq!(fe.compute(&vec![0.0; 480_000]).n_frames, 3001);
        assert_eq!(fe.compute(&vec![0.0; 16100]).n_frames, 101);
    }

    #[test]
    fn fft_path_matches_direct_dft() {
        let x = test_signal(4000);
        let fe = MelFrontEnd::new(80);
        let fast = fe.compute(&x);
        let fast_data = fast.frames(0, fast.n_frames);
        let slow = naive_log_mel(&x, 80);
        assert_eq!(fast.n_frames, slow[0].len());
        let mut max_diff = 0.0f64;
        for m in 0..80 {
            for t in 0..fast.n_frames {
                max_diff =
                    max_diff.max((fast_data[m * fast.n_frames + t] as f64 - slow[m][t]).abs());
            }
        }
        assert!(max_diff < 1e-4, "max diff {max_diff}");
    }

    #[test]
    fn filters_are_slaney_normalised_triangles() {
        let f = mel_filters(16000.0, 400, 80);
        assert_eq!(f.len(), 80);
        assert_eq!(f[0].len(), 201);
        // Slaney normalisation: each filter's area in Hz is 1 (weights sum * bin width).
        let bin_hz = 16000.0 / 400.0;
        for (m, row) in f.iter().enumerate().skip(10) {
            let area: f64 = row.iter().sum::<f64>() * bin_hz;
            assert!((area - 1.0).abs() < 0.1, "filter {m} area {area}");
        }
        // the first filter's only weight, as faster-whisper's get_mel_filters gives it
        assert!((f[0][1] - 0.024_862_59).abs() < 1e-7, "{}", f[0][1]);
        assert_eq!(f[0][0], 0.0);
        assert_eq!(f[0][2], 0.0);
    }

    /// openai-whisper's own filter banks (`mel_filters.npz`: librosa's
    /// `mel(sr=16000, n_fft=400, n_mels=80|128)`, float32), every weight.
    #[test]
    fn filters_match_openai_whispers_mel_filters_npz() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../tests/data/mel_filters_openai.json")).unwrap();
        for n_mels in [80usize, 128] {
            let ours = mel_filters(16000.0, 400, n_mels);
            let rows = fixture[format!("mel_{n_mels}")].as_array().unwrap();
            assert_eq!((ours.len(), rows.len()), (n_mels, n_mels));
            for (m, (mine, row)) in ours.iter().zip(rows).enumerate() {
                let first = row[0].as_u64().unwrap() as usize;
                let weights: Vec<f64> = row[1]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect();
                assert_eq!(mine.len(), 201);
                for (bin, &w) in mine.iter().enumerate() {
                    let want = if (first..first + weights.len()).contains(&bin) {
                        weights[bin - first]
                    } else {
                        0.0
                    };
                    // float32 reference: a few ulps of the larger weights
                    let tol = 1e-6 * want.abs().max(1e-3);
                    assert!(
                        (w - want).abs() <= tol,
                        "n_mels {n_mels} filter {m} bin {bin}: {w} vs {want}"
                    );
                }
            }
        }
        // the 128-bin front end runs and keeps its shape
        let (fe, x) = (MelFrontEnd::new(128), test_signal(16000));
        let mel = fe.compute(&x);
        assert_eq!(
            (mel.n_mels, mel.n_frames, mel.frames(0, 101).len()),
            (128, 101, 128 * 101)
        );
        assert_eq!(mel.window(0, mel.n_frames).len(), 128 * N_FRAMES);
    }

    #[test]
    fn a_tone_lights_up_its_mel_band() {
        let x: Vec<f32> = (0..16000)
            .map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin())
            .collect();
        let fe = MelFrontEnd::new(80);
        let mel = fe.compute(&x);
        let t = 50;
        let data = mel.frames(0, mel.n_frames);
        let col: Vec<f32> = (0..80).map(|m| data[m * mel.n_frames + t]).collect();
        let peak = col
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0;
        // 1000 Hz is mel 15; filter centres are 45.2456/81 mel apart, the
        // first one at one spacing: 15 / 0.5586 - 1 = 25.9
        assert!((25..=27).contains(&peak), "peak at {peak}");
    }

    #[test]
    fn window_pads_with_zeros() {
        let fe = MelFrontEnd::new(80);
        let x = test_signal(16000);
        let mel = fe.compute(&x);
        let w = mel.window(0, mel.n_frames);
        let data = mel.frames(0, mel.n_frames);
        assert_eq!(w.len(), 80 * N_FRAMES);
        assert_eq!(w[mel.n_frames - 1], data[mel.n_frames - 1]);
        assert_eq!(w[mel.n_frames], 0.0);
        assert_eq!(w[N_FRAMES + 5], data[mel.n_frames + 5]);
    }

    #[test]
    fn a_window_computed_alone_equals_the_same_frames_of_the_whole_recording() {
        // 3.7 s: windows touching the reflected start, the middle and the padded end
        let x = test_signal(59_200);
        let fe = MelFrontEnd::new(80);
        let mel = fe.compute(&x);
        let all = mel.frames(0, mel.n_frames);
        for (start, len) in [
            (0, 10),
            (1, 7),
            (150, 40),
            (mel.n_frames - 5, 5),
            (mel.n_frames - 3, 50),
        ] {
            let part = mel.frames(start, len);
            let len = len.min(mel.n_frames - start);
            for m in 0..80 {
                assert_eq!(
                    &part[m * len..(m + 1) * len],
                    &all[m * mel.n_frames + start..m * mel.n_frames + start + len],
                    "frames {start}+{len}, mel {m}"
                );
            }
        }
        // and both equal the direct DFT (checked above on the whole): the
        // floor comes from the whole recording, not the window
        let quiet = mel.frames(mel.n_frames - 1, 1);
        assert!(quiet.iter().all(|v| v.is_finite()));
    }
}
