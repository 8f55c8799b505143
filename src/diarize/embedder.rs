//! CAM++ voice prints of stretches of audio: the Kaldi fbank front end and
//! the embedding model. The diarization engine embeds its pieces of speech
//! with it; the aligner checks a change of speaker inside a sentence against
//! the speakers' voices with its own (`crate::align`'s voice check).

use std::path::Path;

use ort::session::Session;
use ort::value::TensorRef;

use super::cluster::l2_normalise;
use super::engine::{go_on, DiarizeError};
use super::fbank::{mean_normalise, Fbank, FRAME_LENGTH};
use crate::audio::Samples;
use crate::config::Config;
use crate::cores::{run_batches, SpareCores};
use crate::runtime::{self, DeviceUsed};

/// Sample rate the embedding model takes.
const SAMPLE_RATE: usize = 16_000;

/// A session of the diarization model `file` in `dir`, with the
/// diarization's runtime settings, and the device it runs on.
pub(crate) fn model_session(
    config: &Config,
    dir: &Path,
    file: &str,
) -> Result<(Session, DeviceUsed), DiarizeError> {
    let env = runtime::environment(&config.onnxruntime_library())?;
    Ok(runtime::session(
        env,
        &dir.join(file),
        &config.diarization_runtime(),
    )?)
}

/// How many samples a piece's ranges hold.
pub(crate) fn samples_in(ranges: &[(usize, usize)]) -> usize {
    ranges.iter().map(|r| r.1 - r.0).sum()
}

/// Voice prints of stretches of time, as the aligner asks for them: a fake
/// in the pipeline's tests, [`VoiceEmbedder`] in service.
pub trait SpanEmbedder: Send {
    /// The unit voice print of each (start, end) stretch of 16 kHz
    /// `samples` (seconds), `None` for a stretch too short to embed.
    fn embed_spans(
        &mut self,
        samples: Samples<'_>,
        spans: &[(f64, f64)],
    ) -> Result<Vec<Option<Vec<f32>>>, DiarizeError>;
}

pub struct VoiceEmbedder {
    session: Session,
    fbank: Fbank,
    /// Pieces of equal length embedded together, at most this many.
    batch: usize,
    /// Shorter stretches are not embedded (`diarization.min_embedding_duration`).
    min_samples: usize,
    pub device: DeviceUsed,
}

impl VoiceEmbedder {
    /// The embedding model of the diarization models' folder `dir`.
    pub fn load(config: &Config, dir: &Path) -> Result<VoiceEmbedder, DiarizeError> {
        let (session, device) = model_session(config, dir, "embedding.onnx")?;
        let cfg = &config.diarization;
        Ok(VoiceEmbedder {
            session,
            fbank: Fbank::new(80, SAMPLE_RATE as f64, 20.0),
            batch: cfg.embedding_batch.max(1),
            min_samples: ((cfg.min_embedding_duration * SAMPLE_RATE as f64) as usize)
                .max(FRAME_LENGTH * 4),
            device,
        })
    }

    /// Shorter pieces are not embedded.
    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// CAM++ embeddings (L2-normalised) of the given pieces of `samples`
    /// (each a list of sample ranges), in order. Pieces of equal length go
    /// through the model together, up to `embedding_batch` at a time (results
    /// do not depend on the batching); a batch's audio is gathered for it alone.
    pub fn embed_pieces<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
        pieces: &[Vec<(usize, usize)>],
        stop: Option<&runtime::StopFlag>,
    ) -> Result<Vec<Vec<f32>>, DiarizeError> {
        Ok(self.embed_pieces_with(samples, pieces, stop, None)?.0)
    }

    /// [`VoiceEmbedder::embed_pieces`], with a `helper` embedder (the same
    /// model and threads) that runs batches beside this one whenever it can
    /// borrow a core lent by an idle engine ([`crate::cores`]). The
    /// embeddings are the same either way; also returns how many pieces the
    /// helper embedded.
    pub fn embed_pieces_with<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
        pieces: &[Vec<(usize, usize)>],
        stop: Option<&runtime::StopFlag>,
        helper: Option<(&mut VoiceEmbedder, &SpareCores)>,
    ) -> Result<(Vec<Vec<f32>>, usize), DiarizeError> {
        let samples: Samples = samples.into();
        let len_of = |i: usize| samples_in(&pieces[i]);
        let mut order: Vec<usize> = (0..pieces.len()).collect();
        order.sort_by_key(|&i| (len_of(i), i));
        // runs of equal length, at most `batch` each
        let mut batches: Vec<&[usize]> = Vec::new();
        let mut k = 0;
        while k < order.len() {
            let len = len_of(order[k]);
            let mut end = k + 1;
            while end < order.len() && end - k < self.batch && len_of(order[end]) == len {
                end += 1;
            }
            batches.push(&order[k..end]);
            k = end;
        }
        let (results, helped) = run_batches(
            batches.len(),
            |b| self.embed_batch(samples, pieces, batches[b]),
            helper.map(|(h, spare)| (|b: usize| h.embed_batch(samples, pieces, batches[b]), spare)),
            || go_on(stop),
        )?;
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); pieces.len()];
        for (batch, embeddings) in batches.iter().zip(results) {
            for (&i, e) in batch.iter().zip(embeddings) {
                out[i] = e;
            }
        }
        Ok((out, helped.iter().map(|&b| batches[b].len()).sum()))
    }

    /// The embeddings of the pieces `batch` (indices into `pieces`, all of
    /// the same length), in that order.
    fn embed_batch(
        &mut self,
        samples: Samples<'_>,
        pieces: &[Vec<(usize, usize)>],
        batch: &[usize],
    ) -> Result<Vec<Vec<f32>>, DiarizeError> {
        let mut feats = Vec::new();
        let mut audio: Vec<f32> = Vec::new();
        for &i in batch {
            audio.clear();
            for &(a, b) in &pieces[i] {
                samples.extend_into(a..b, &mut audio);
            }
            let mut f = self.fbank.compute(&audio);
            mean_normalise(&mut f, 80);
            feats.extend_from_slice(&f);
        }
        let t_frames = feats.len() / 80 / batch.len();
        let t = TensorRef::from_array_view(([batch.len(), t_frames, 80], &feats[..]))?;
        let res = self.session.run(ort::inputs!["fbank" => t])?;
        let (_, e) = res["embedding"].try_extract_tensor::<f32>()?;
        let dim = e.len() / batch.len();
        Ok((0..batch.len())
            .map(|b| {
                let mut v = e[b * dim..(b + 1) * dim].to_vec();
                l2_normalise(&mut v);
                v
            })
            .collect())
    }
}

impl SpanEmbedder for VoiceEmbedder {
    fn embed_spans(
        &mut self,
        samples: Samples<'_>,
        spans: &[(f64, f64)],
    ) -> Result<Vec<Option<Vec<f32>>>, DiarizeError> {
        let at = |t: f64| ((t.max(0.0) * SAMPLE_RATE as f64) as usize).min(samples.len());
        let mut pieces = Vec::new();
        let mut index = Vec::with_capacity(spans.len());
        for &(a, b) in spans {
            let (a, b) = (at(a), at(b));
            if b > a && b - a >= self.min_samples {
                pieces.push(vec![(a, b)]);
                index.push(Some(pieces.len() - 1));
            } else {
                index.push(None);
            }
        }
        let mut embedded = self.embed_pieces(samples, &pieces, None)?;
        Ok(index
            .into_iter()
            .map(|i| i.map(|i| std::mem::take(&mut embedded[i])))
            .collect())
    }
}
