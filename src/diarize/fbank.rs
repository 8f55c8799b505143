//! Kaldi-style log-mel filter bank, the front end of the CAM++ speaker
//! embedding model: 25 ms frames every 10 ms (edges snipped), DC offset
//! removed, 0.97 pre-emphasis, Povey window, 512-point FFT power spectrum,
//! 80 triangular filters on the HTK mel scale from 20 Hz to Nyquist, natural
//! log floored at f32 epsilon. Matches `kaldi-native-fbank` / torchaudio's
//! `compliance.kaldi.fbank` with dither 0.

use std::sync::Arc;

use realfft::{RealFftPlanner, RealToComplex};

pub const FRAME_LENGTH: usize = 400;
pub const FRAME_SHIFT: usize = 160;
const PADDED: usize = 512;
const PREEMPH: f32 = 0.97;

pub struct Fbank {
    n_mels: usize,
    window: Vec<f32>,
    /// (first bin, weights) per mel bin
    banks: Vec<(usize, Vec<f32>)>,
    fft: Arc<dyn RealToComplex<f32>>,
}

fn mel(f: f64) -> f64 {
    1127.0 * (1.0 + f / 700.0).ln()
}

impl Fbank {
    pub fn new(n_mels: usize, sample_rate: f64, low_freq: f64) -> Self {
        let window = (0..FRAME_LENGTH)
            .map(|i| {
                let a = 2.0 * std::f64::consts::PI * i as f64 / (FRAME_LENGTH - 1) as f64;
                (0.5 - 0.5 * a.cos()).powf(0.85) as f32
            })
            .collect();
        let n_bins = PADDED / 2; // Kaldi leaves out the Nyquist bin
        let bin_hz = sample_rate / PADDED as f64;
        let (lo, hi) = (mel(low_freq), mel(sample_rate / 2.0));
        let delta = (hi - lo) / (n_mels + 1) as f64;
        let banks = (0..n_mels)
            .map(|m| {
                let left = lo + m as f64 * delta;
                let center = left + delta;
                let right = center + delta;
                let w: Vec<f64> = (0..n_bins)
                    .map(|k| {
                        let mm = mel(k as f64 * bin_hz);
                        if mm > left && mm < right {
                            if mm <= center {
                                (mm - left) / (center - left)
                            } else {
                                (right - mm) / (right - center)
                            }
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let first = w.iter().position(|&x| x > 0.0).unwrap_or(0);
                let last = w.iter().rposition(|&x| x > 0.0).unwrap_or(first);
                (first, w[first..=last].iter().map(|&x| x as f32).collect())
            })
            .collect();
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(PADDED);
        Fbank {
            n_mels,
            window,
            banks,
            fft,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Number of frames for `n` samples (edges snipped).
    pub fn num_frames(n: usize) -> usize {
        if n < FRAME_LENGTH {
            0
        } else {
            1 + (n - FRAME_LENGTH) / FRAME_SHIFT
        }
    }

    /// Log-mel energies, frame-major `[frames][n_mels]` flattened, of the
    /// samples as given (no rescaling: after per-utterance mean
    /// normalisation the input scale cancels out).
    pub fn compute(&self, samples: &[f32]) -> Vec<f32> {
        let n_frames = Self::num_frames(samples.len());
        let mut out = Vec::with_capacity(n_frames * self.n_mels);
        let mut input = self.fft.make_input_vec();
        let mut spectrum = self.fft.make_output_vec();
        let mut scratch = self.fft.make_scratch_vec();
        let mut frame = [0.0f32; FRAME_LENGTH];
        let mut power = vec![0.0f32; PADDED / 2];
        for t in 0..n_frames {
            for (d, &s) in frame
                .iter_mut()
                .zip(&samples[t * FRAME_SHIFT..t * FRAME_SHIFT + FRAME_LENGTH])
            {
                *d = s;
            }
            let mean = frame.iter().sum::<f32>() / FRAME_LENGTH as f32;
            frame.iter_mut().for_each(|x| *x -= mean);
            for i in (1..FRAME_LENGTH).rev() {
                frame[i] -= PREEMPH * frame[i - 1];
            }
            frame[0] -= PREEMPH * frame[0];
            input.fill(0.0);
            for ((d, &x), &w) in input.iter_mut().zip(&frame).zip(&self.window) {
                *d = x * w;
            }
            self.fft
                .process_with_scratch(&mut input, &mut spectrum, &mut scratch)
                .expect("fft buffers have the planned sizes");
            for (p, c) in power.iter_mut().zip(&spectrum) {
                *p = c.re * c.re + c.im * c.im;
            }
            for (first, w) in &self.banks {
                let e: f32 = w.iter().zip(&power[*first..]).map(|(a, b)| a * b).sum();
                out.push(e.max(f32::EPSILON).ln());
            }
        }
        out
    }
}

/// Subtracts each mel bin's mean over frames (CAM++'s per-utterance normalisation).
pub fn mean_normalise(feats: &mut [f32], n_mels: usize) {
    let frames = feats.len() / n_mels;
    if frames == 0 {
        return;
    }
    let mut mean = vec![0.0f32; n_mels];
    for f in feats.chunks_exact(n_mels) {
        for (m, v) in mean.iter_mut().zip(f) {
            *m += v;
        }
    }
    mean.iter_mut().for_each(|m| *m /= frames as f32);
    for f in feats.chunks_exact_mut(n_mels) {
        for (v, m) in f.iter_mut().zip(&mean) {
            *v -= m;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `tests/data/fbank_fixture.json`: kaldi-native-fbank's output for a
    /// stored test signal (scripts/verify_diarization.py wrote it).
    #[test]
    fn matches_kaldi_native_fbank() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fbank_fixture.json");
        let fixture: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let input: Vec<f32> = fixture["input"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let expect: Vec<Vec<f64>> = fixture["fbank"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| {
                row.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        let fb = Fbank::new(80, 16_000.0, 20.0);
        let got = fb.compute(&input);
        assert_eq!(Fbank::num_frames(input.len()), expect.len());
        assert_eq!(got.len(), expect.len() * 80);
        let mut max = 0.0f64;
        for (t, row) in expect.iter().enumerate() {
            for (m, &e) in row.iter().enumerate() {
                max = max.max((got[t * 80 + m] as f64 - e).abs());
            }
        }
        assert!(max < 1e-3, "max abs diff {max}");
    }

    #[test]
    fn mean_normalisation_centres_each_bin() {
        let mut f = vec![1.0, 10.0, 3.0, 20.0];
        mean_normalise(&mut f, 2);
        assert_eq!(f, vec![-1.0, -5.0, 1.0, 5.0]);
    }
}
