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

pub const SAMPLE_RATE: usize = 16_000;
pub const N_FFT: usize = 400;
pub const HOP: usize = 160;
/// Frames in one 30 s encoder window.
pub const N_FRAMES: usize = 3000;

/// Log-mel features laid out mel-major: `data[m * n_frames + t]`.
#[derive(Debug, Clone)]
pub struct LogMel {
    pub n_mels: usize,
    pub n_frames: usize,
    pub data: Vec<f32>,
}

impl LogMel {
    /// The `[n_mels, N_FRAMES]` window starting at frame `start` with `len`
    /// frames of content, zero-padded in log-mel space (faster-whisper's
    /// `pad_or_trim` on the features).
    pub fn window(&self, start: usize, len: usize) -> Vec<f32> {
        let len = len.min(N_FRAMES).min(self.n_frames.saturating_sub(start));
        let mut out = vec![0.0f32; self.n_mels * N_FRAMES];
        for m in 0..self.n_mels {
            let src = &self.data[m * self.n_frames + start..m * self.n_frames + start + len];
            out[m * N_FRAMES..m * N_FRAMES + len].copy_from_slice(src);
        }
        out
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
                    weights: row[first..=last.max(first)].iter().map(|&w| w as f32).collect(),
                }
            })
            .collect();
        let window = (0..N_FFT)
            .map(|i| (0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos()) as f32)
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        Self { n_mels, filters, window, fft }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Log-mel features of 16 kHz mono samples.
    pub fn compute(&self, samples: &[f32]) -> LogMel {
        // faster-whisper pads 160 zeros, then the STFT reflect-pads N_FFT/2.
        let mut padded_src = Vec::with_capacity(samples.len() + HOP);
        padded_src.extend_from_slice(samples);
        padded_src.resize(samples.len() + HOP, 0.0);
        let signal = reflect_pad(&padded_src, N_FFT / 2);
        let n_stft = 1 + (signal.len() - N_FFT) / HOP;
        let n_frames = n_stft - 1; // the last STFT frame is dropped
        let n_bins = N_FFT / 2 + 1;

        let mut data = vec![0.0f32; self.n_mels * n_frames];
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut power = vec![0.0f32; n_bins];
        let mut max = f32::NEG_INFINITY;
        for t in 0..n_frames {
            let frame = &signal[t * HOP..t * HOP + N_FFT];
            for ((dst, &x), &w) in input.iter_mut().zip(frame).zip(&self.window) {
                *dst = x * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("fft buffers have the planned sizes");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (m, f) in self.filters.iter().enumerate() {
                let e: f32 = f.weights.iter().zip(&power[f.first_bin..]).map(|(w, p)| w * p).sum();
                let v = e.max(1e-10).log10();
                max = max.max(v);
                data[m * n_frames + t] = v;
            }
        }
        let floor = max - 8.0;
        for v in &mut data {
            *v = (v.max(floor) + 4.0) / 4.0;
        }
        LogMel { n_mels: self.n_mels, n_frames, data }
    }
}

/// numpy's `np.pad(x, pad, mode="reflect")` (the edge sample is not repeated).
/// Signals shorter than the pad are zero-extended first so the reflection exists.
fn reflect_pad(x: &[f32], pad: usize) -> Vec<f32> {
    let mut src = x.to_vec();
    if src.len() <= pad {
        src.resize(pad + 1, 0.0);
    }
    let n = src.len();
    let mut out = Vec::with_capacity(n + 2 * pad);
    out.extend((1..=pad).rev().map(|i| src[i]));
    out.extend_from_slice(&src);
    out.extend((n - 1 - pad..n - 1).rev().map(|i| src[i]));
    out
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
    let hz_to_mel = |f: f64| if f >= min_log_hz { min_log_mel + (f / min_log_hz).ln() / logstep } else { f / f_sp };
    let mel_to_hz = |m: f64| if m >= min_log_mel { min_log_hz * (logstep * (m - min_log_mel)).exp() } else { f_sp * m };
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
            let j = if i < 0 { -i } else if i >= n as isize { 2 * (n as isize - 1) - i } else { i };
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
                    let w = 0.5 - 0.5 * (2.0 * std::f64::consts::PI * i as f64 / N_FFT as f64).cos();
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
        let slow = naive_log_mel(&x, 80);
        assert_eq!(fast.n_frames, slow[0].len());
        let mut max_diff = 0.0f64;
        for m in 0..80 {
            for t in 0..fast.n_frames {
                max_diff = max_diff.max((fast.data[m * fast.n_frames + t] as f64 - slow[m][t]).abs());
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
                let weights: Vec<f64> = row[1].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
                assert_eq!(mine.len(), 201);
                for (bin, &w) in mine.iter().enumerate() {
                    let want = if (first..first + weights.len()).contains(&bin) { weights[bin - first] } else { 0.0 };
                    // float32 reference: a few ulps of the larger weights
                    let tol = 1e-6 * want.abs().max(1e-3);
                    assert!((w - want).abs() <= tol, "n_mels {n_mels} filter {m} bin {bin}: {w} vs {want}");
                }
            }
        }
        // the 128-bin front end runs and keeps its shape
        let mel = MelFrontEnd::new(128).compute(&test_signal(16000));
        assert_eq!((mel.n_mels, mel.n_frames, mel.data.len()), (128, 101, 128 * 101));
        assert_eq!(mel.window(0, mel.n_frames).len(), 128 * N_FRAMES);
    }

    #[test]
    fn a_tone_lights_up_its_mel_band() {
        let x: Vec<f32> = (0..16000).map(|i| (2.0 * std::f32::consts::PI * 1000.0 * i as f32 / 16000.0).sin()).collect();
        let fe = MelFrontEnd::new(80);
        let mel = fe.compute(&x);
        let t = 50;
        let col: Vec<f32> = (0..80).map(|m| mel.data[m * mel.n_frames + t]).collect();
        let peak = col.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
        // 1000 Hz is mel 15; filter centres are 45.2456/81 mel apart, the
        // first one at one spacing: 15 / 0.5586 - 1 = 25.9
        assert!((25..=27).contains(&peak), "peak at {peak}");
    }

    #[test]
    fn window_pads_with_zeros() {
        let fe = MelFrontEnd::new(80);
        let mel = fe.compute(&test_signal(16000));
        let w = mel.window(0, mel.n_frames);
        assert_eq!(w.len(), 80 * N_FRAMES);
        assert_eq!(w[mel.n_frames - 1], mel.data[mel.n_frames - 1]);
        assert_eq!(w[mel.n_frames], 0.0);
        assert_eq!(w[N_FRAMES + 5], mel.data[mel.n_frames + 5]);
    }
}
