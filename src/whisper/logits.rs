//! The decoder's logits made exact where they decide anything.
//!
//! The fp32 decoder graph computes its logits with 8-bit weights
//! (`MatMulNBits`, blocks of 32 along the model width): the output
//! projection is the largest read of a decoder step (the vocabulary times
//! the width, 80 MB at fp32 for tiny.en), and a quarter of it is read
//! instead. Those logits are off by up to about 0.5 (tiny.en) or 0.8
//! (base) on real speech ([`MARGIN`]), so the graph also returns the
//! last position's hidden state, and the logits near the top are
//! recomputed from it exactly with the fp32 projection (`projection.f32`,
//! mapped: only the rows read take memory): every logit within [`MARGIN`]
//! of the largest. With an error below half the margin, the likeliest
//! token (what greedy decoding picks, and what every logit rule compares)
//! is the one the fp32 projection gives; only the far tail of the
//! distribution, which a log-sum-exp barely sees, keeps the 8-bit values.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use super::model::ModelError;

/// Logits within this much of the largest are recomputed exactly, so the
/// 8-bit ones may be off by up to half of it. Measured largest errors:
/// tiny.en 0.45 on six recordings, base 0.83 on jfk (`COLLOQUY_VERIFY=1
/// make setup` reports it for every model, and fails from half the margin).
pub const MARGIN: f32 = 4.0;

/// The output projection at fp32: `[vocab, width]` row-major.
pub struct Projection {
    weights: Weights,
    width: usize,
}

/// The file mapped into memory: only the rows read (the tokens that come
/// near the top) take memory; or weights in memory (tests).
enum Weights {
    Mapped(memmap2::Mmap),
    Owned(Vec<f32>),
}

impl Projection {
    /// Maps `projection.f32` (little-endian f32, `vocab * width` of them).
    /// The converter writes a new model folder and renames it into place,
    /// so a mapped file is never rewritten.
    pub fn load(path: &Path, vocab: usize, width: usize) -> Result<Projection, ModelError> {
        let bad = |reason: String| ModelError::BadFile {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => {
                bad("missing: convert the model again (`make setup`)".into())
            }
            _ => bad(e.to_string()),
        })?;
        let len = file.metadata().map_err(|e| bad(e.to_string()))?.len();
        if len != (vocab * width * 4) as u64 {
            return Err(bad(format!(
                "{len} bytes, expected {} ({vocab} x {width} float32): convert the model again (`make setup`)",
                vocab * width * 4
            )));
        }
        if cfg!(target_endian = "big") {
            let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
            let weights = bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            return Ok(Projection::from_weights(weights, width));
        }
        // SAFETY: the file is mapped read-only and never changed in place
        // (see above); a page-aligned map of whole f32s reads as f32s.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| bad(e.to_string()))?;
        Ok(Projection {
            weights: Weights::Mapped(map),
            width,
        })
    }

    /// A projection of `vocab` rows of `width` (tests).
    pub fn from_weights(weights: Vec<f32>, width: usize) -> Projection {
        assert_eq!(weights.len() % width, 0);
        Projection {
            weights: Weights::Owned(weights),
            width,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    fn weights(&self) -> &[f32] {
        match &self.weights {
            Weights::Owned(w) => w,
            Weights::Mapped(map) => {
                // SAFETY: every bit pattern is an f32; the map is page-aligned,
                // so nothing is left before the f32s (checked)
                let (before, floats, _) = unsafe { map.align_to::<f32>() };
                assert!(before.is_empty(), "projection map not aligned");
                floats
            }
        }
    }

    /// The exact logit of `token` for the hidden state `hidden`.
    pub fn logit(&self, hidden: &[f32], token: usize) -> f32 {
        let row = &self.weights()[token * self.width..(token + 1) * self.width];
        // eight partial sums: vectorises, and sums in a fixed order
        let mut acc = [0.0f32; 8];
        for (h, w) in hidden.chunks_exact(8).zip(row.chunks_exact(8)) {
            for k in 0..8 {
                acc[k] += h[k] * w[k];
            }
        }
        let tail: f32 = hidden
            .chunks_exact(8)
            .remainder()
            .iter()
            .zip(row.chunks_exact(8).remainder())
            .map(|(h, w)| h * w)
            .sum();
        acc.iter().sum::<f32>() + tail
    }
}

/// One row's logits and what makes them exact: the row's hidden state and
/// the fp32 projection, or nothing when the logits already are (the int8
/// decoder's, or a model converted before the 8-bit projection).
/// The largest value of `x`, NaN ignored; -inf when `x` is empty or all
/// -inf or NaN. The same value as `x.iter().copied().fold(f32::NEG_INFINITY,
/// f32::max)`, but kept in 16 independent lanes that compile to vector
/// maxima: the fold is one dependency chain through the whole slice, and a
/// decoder step scans the vocabulary (51864 logits) several times per row.
pub fn max_of(x: &[f32]) -> f32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            if c[k] > lanes[k] {
                lanes[k] = c[k];
            }
        }
    }
    lanes
        .into_iter()
        .chain(rest.iter().copied())
        .fold(f32::NEG_INFINITY, f32::max)
}

#[derive(Clone, Copy)]
pub struct Exact<'a> {
    source: Option<(&'a Projection, &'a [f32])>,
}

impl<'a> Exact<'a> {
    /// Logits that are exact as they come.
    pub const NONE: Exact<'static> = Exact { source: None };

    pub fn new(projection: &'a Projection, hidden: &'a [f32]) -> Exact<'a> {
        Exact {
            source: Some((projection, hidden)),
        }
    }

    /// Recomputes `logits[token]`.
    pub fn token(&self, logits: &mut [f32], token: usize) {
        if let Some((p, h)) = self.source {
            if logits[token].is_finite() {
                logits[token] = p.logit(h, token);
            }
        }
    }

    /// Recomputes every finite logit in `range`.
    pub fn all(&self, logits: &mut [f32], range: Range<usize>) {
        if self.source.is_some() {
            for t in range {
                self.token(logits, t);
            }
        }
    }

    /// Recomputes every finite logit in `range` within [`MARGIN`] of the
    /// range's largest; returns the largest after that (-inf when none is
    /// finite). Recomputing one twice gives the same value.
    pub fn near_max(&self, logits: &mut [f32], range: Range<usize>) -> f32 {
        let slice = &mut logits[range.clone()];
        let max = max_of(slice);
        let Some((p, h)) = self.source else {
            return max;
        };
        if !max.is_finite() {
            return max;
        }
        let floor = max - MARGIN;
        let mut best = f32::NEG_INFINITY;
        for (i, l) in slice.iter_mut().enumerate() {
            if *l >= floor {
                *l = p.logit(h, range.start + i);
                best = best.max(*l);
            }
        }
        best
    }
}

/// A decoder run's logits, `[rows, vocab]` row-major, with the rows'
/// hidden states (`[rows, width]`) when they come from the 8-bit projection.
pub struct StepLogits {
    pub values: Vec<f32>,
    pub vocab: usize,
    hidden: Vec<f32>,
    projection: Option<Arc<Projection>>,
}

impl StepLogits {
    pub fn new(
        values: Vec<f32>,
        vocab: usize,
        hidden: Vec<f32>,
        projection: Option<Arc<Projection>>,
    ) -> StepLogits {
        StepLogits {
            values,
            vocab,
            hidden,
            projection,
        }
    }

    /// Each row's logits, mutable, with what makes them exact.
    pub fn rows_mut(&mut self) -> impl Iterator<Item = (&mut [f32], Exact<'_>)> {
        let vocab = self.vocab;
        let projection = self.projection.as_deref();
        let width = projection.map_or(1, Projection::width);
        let hidden = &self.hidden;
        self.values
            .chunks_mut(vocab)
            .enumerate()
            .map(move |(r, row)| {
                let exact = match projection {
                    Some(p) if hidden.len() >= (r + 1) * width => {
                        Exact::new(p, &hidden[r * width..(r + 1) * width])
                    }
                    _ => Exact::NONE,
                };
                (row, exact)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A projection and hidden state whose "8-bit" logits are the exact ones
    /// plus a known error per token.
    fn setup(errors: &[f32]) -> (Projection, Vec<f32>, Vec<f32>) {
        let width = 10;
        let vocab = errors.len();
        let weights: Vec<f32> = (0..vocab * width)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let p = Projection::from_weights(weights, width);
        let hidden: Vec<f32> = (0..width).map(|i| (i as f32 - 4.5) * 0.7).collect();
        let approx = (0..vocab)
            .map(|t| p.logit(&hidden, t) + errors[t])
            .collect();
        (p, hidden, approx)
    }

    fn argmax(x: &[f32]) -> usize {
        (0..x.len()).fold(0, |b, i| if x[i] > x[b] { i } else { b })
    }

    #[test]
    fn the_likeliest_token_is_the_exact_ones_whatever_the_errors_under_half_the_margin() {
        let half = MARGIN / 2.0 - 1e-3;
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let errors: Vec<f32> = (0..300).map(|_| (rng.f32() * 2.0 - 1.0) * half).collect();
            let (p, hidden, mut approx) = setup(&errors);
            let exact: Vec<f32> = (0..300).map(|t| p.logit(&hidden, t)).collect();
            let best = Exact::new(&p, &hidden).near_max(&mut approx, 0..300);
            let chosen = argmax(&approx);
            assert_eq!(chosen, argmax(&exact), "seed {seed}");
            assert_eq!(approx[chosen], exact[chosen]);
            assert_eq!(best, exact[chosen]);
        }
    }

    #[test]
    fn max_of_is_the_folds_maximum() {
        let mut rng = fastrand::Rng::with_seed(3);
        for len in 0..70 {
            let x: Vec<f32> = (0..len)
                .map(|_| match rng.u8(..10) {
                    0 => f32::NEG_INFINITY,
                    1 => f32::NAN,
                    _ => rng.f32() * 20.0 - 10.0,
                })
                .collect();
            let fold = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max_of(&x).to_bits(), fold.to_bits(), "{x:?}");
        }
        assert_eq!(max_of(&[]), f32::NEG_INFINITY);
        assert_eq!(max_of(&[f32::NAN; 20]), f32::NEG_INFINITY);
    }

    #[test]
    fn masked_logits_stay_masked_and_ranges_are_refined_apart() {
        let mut errors = vec![0.3f32; 40];
        errors[5] = -0.3;
        let (p, hidden, mut approx) = setup(&errors);
        approx[7] = f32::NEG_INFINITY;
        let exact = Exact::new(&p, &hidden);
        exact.near_max(&mut approx, 0..20);
        exact.near_max(&mut approx, 20..40);
        assert_eq!(approx[7], f32::NEG_INFINITY);
        let top_first = (0..20)
            .filter(|&t| t != 7)
            .max_by(|&a, &b| p.logit(&hidden, a).total_cmp(&p.logit(&hidden, b)))
            .unwrap();
        let top_second = (20..40)
            .max_by(|&a, &b| p.logit(&hidden, a).total_cmp(&p.logit(&hidden, b)))
            .unwrap();
        assert_eq!(approx[top_first], p.logit(&hidden, top_first));
        assert_eq!(approx[top_second], p.logit(&hidden, top_second));
        // a logit far below its range's top keeps its 8-bit value
        let low = (0..20)
            .filter(|&t| t != 7)
            .min_by(|&a, &b| p.logit(&hidden, a).total_cmp(&p.logit(&hidden, b)))
            .unwrap();
        assert!(p.logit(&hidden, top_first) - p.logit(&hidden, low) > MARGIN + 1.0);
        assert_eq!(approx[low], p.logit(&hidden, low) + errors[low]);
    }

    #[test]
    fn exact_logits_need_nothing() {
        let mut l = vec![1.0, 3.0, f32::NEG_INFINITY, 2.5];
        assert_eq!(Exact::NONE.near_max(&mut l, 0..4), 3.0);
        Exact::NONE.token(&mut l, 1);
        assert_eq!(l, vec![1.0, 3.0, f32::NEG_INFINITY, 2.5]);
    }

    #[test]
    fn a_projection_file_of_the_wrong_size_is_refused_with_a_way_out() {
        let dir = std::env::temp_dir().join(format!("colloquy-projection-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("projection.f32");
        std::fs::write(&path, [0u8; 12]).unwrap();
        let e = Projection::load(&path, 2, 2).err().unwrap().to_string();
        assert!(
            e.contains("12 bytes, expected 16") && e.contains("make setup"),
            "{e}"
        );
        let e = Projection::load(&dir.join("absent.f32"), 2, 2)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("absent.f32") && e.contains("make setup"), "{e}");
        let bytes: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        std::fs::write(&path, bytes).unwrap();
        let p = Projection::load(&path, 2, 2).unwrap();
        assert_eq!(p.logit(&[1.0, 1.0], 1), 7.0);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
