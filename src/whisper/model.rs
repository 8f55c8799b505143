//! The converted Whisper model on disk (`model.json`, `ct2_config.json`,
//! ONNX graphs) and the two ONNX Runtime sessions that run it.
//!
//! Encoder: `mel [B, n_mels, 3000]` -> per decoder layer `cross_k_i [B, H, 64, 1500]`
//! and `cross_v_i [B, H, 1500, 64]`: the cross-attention keys and values are
//! computed once per 30 s window.
//! Decoder: `tokens [B, T]` + `past_k_i/past_v_i [B, H, P, 64]` + the cross K/V ->
//! `logits [B, vocab]` for the last position and `present_k_i/present_v_i
//! [B, H, P+T, 64]`, fed back as the next step's past (the self-attention cache),
//! and `alignment_qk [B, A, T, 1500]`: the cross-attention scores of the A
//! alignment heads for every fed position (word timestamps, `timing.rs`).
//!
//! B is 1 in the sequential loop; batched transcription (`transcribe.rs`)
//! runs B windows at once. There is no attention mask: every row of a batch
//! is fed the same number of tokens.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};
use serde::Deserialize;

use super::logits::{Projection, StepLogits};
use crate::config::{Precision, RuntimeConfig};
use crate::runtime::{self, DeviceUsed, RuntimeError};

/// `model.json`, written by `scripts/convert_whisper.py`.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub n_mels: usize,
    pub n_audio_ctx: usize,
    pub n_text_ctx: usize,
    pub d_model: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub n_encoder_layers: usize,
    pub n_decoder_layers: usize,
    pub n_vocab: usize,
    pub multilingual: bool,
    pub tokens: SpecialTokens,
    /// Language codes in token order: `<|languages[i]|>` is `tokens.lang_first + i`.
    #[serde(default)]
    pub languages: Vec<String>,
    /// (decoder layer, head) pairs whose cross-attention follows the audio;
    /// the decoder's `alignment_qk` output holds their scores in this order.
    #[serde(default)]
    pub alignment_heads: Vec<[usize; 2]>,
}

impl ModelConfig {
    /// The token of a language code (multilingual models), from model.json's
    /// ids: older vocabularies spell some codes differently (`<|iw|>` for he).
    pub fn language_token(&self, code: &str) -> Option<u32> {
        let i = self.languages.iter().position(|l| l == code)?;
        Some(self.tokens.lang_first + i as u32)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct SpecialTokens {
    pub eot: u32,
    pub sot: u32,
    pub sot_prev: u32,
    pub sot_lm: u32,
    pub no_timestamps: u32,
    pub no_speech: u32,
    pub timestamp_begin: u32,
    pub transcribe: u32,
    pub translate: u32,
    pub lang_first: u32,
}

/// The parts of CTranslate2's `config.json` we use.
#[derive(Debug, Clone, Deserialize)]
pub struct Ct2Config {
    pub suppress_ids: Vec<u32>,
    pub suppress_ids_begin: Vec<u32>,
    #[serde(default)]
    pub lang_ids: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(
        "whisper model '{name}' is not installed in {}: installed: {}; add one with `colloquy models add DIR` \
         (a CTranslate2/faster-whisper folder) or run `make setup`",
        .root.display(),
        if .installed.is_empty() { "none".to_string() } else { .installed.join(", ") }
    )]
    NotInstalled {
        name: String,
        root: PathBuf,
        installed: Vec<String>,
    },
    #[error(
        "'{0}' is not a model name: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit, \
         without '..'"
    )]
    BadName(String),
    #[error("model file {path} is unreadable: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("transcription stopped: the job was cancelled")]
    Cancelled,
}

impl From<ort::Error> for ModelError {
    fn from(e: ort::Error) -> Self {
        ModelError::Runtime(RuntimeError::Ort(e.to_string()))
    }
}

/// A model directory as `make setup` leaves it.
#[derive(Debug, Clone)]
pub struct ModelDir {
    pub dir: PathBuf,
    pub config: ModelConfig,
    pub ct2: Ct2Config,
}

/// A name `whisper.model` may take: one path component of `[A-Za-z0-9._-]`,
/// starting with a letter or digit, without `..` (so `<root>/models/whisper-<name>`
/// stays inside `models/`). `scripts/convert_whisper.py` applies the same rule.
pub fn valid_model_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !name.contains("..")
}

/// The directory of model `name` under the models root.
pub fn model_dir(root: &Path, name: &str) -> PathBuf {
    root.join("models").join(format!("whisper-{name}"))
}

/// An installed model: its name (what `whisper.model` takes) and shapes.
#[derive(Debug, Clone)]
pub struct InstalledModel {
    pub name: String,
    pub dir: PathBuf,
    pub config: ModelConfig,
}

/// The complete conversions under `<root>/models` (a `manifest.json` and a
/// readable `model.json`), sorted by name. A missing root gives none.
pub fn installed_models(root: &Path) -> Vec<InstalledModel> {
    let Ok(entries) = std::fs::read_dir(root.join("models")) else {
        return Vec::new();
    };
    let mut out: Vec<InstalledModel> = entries
        .filter_map(|e| {
            let dir = e.ok()?.path();
            let name = dir
                .file_name()?
                .to_str()?
                .strip_prefix("whisper-")?
                .to_string();
            if !valid_model_name(&name) || !dir.join("manifest.json").is_file() {
                return None;
            }
            let config: ModelConfig = read_json(&dir.join("model.json")).ok()?;
            Some(InstalledModel { name, dir, config })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

impl ModelDir {
    /// `<root>/models/whisper-<name>`; a model that is not there fails with a
    /// message listing the installed ones and naming `colloquy models add` and `make setup`.
    pub fn open(root: &Path, name: &str) -> Result<ModelDir, ModelError> {
        if !valid_model_name(name) {
            return Err(ModelError::BadName(name.to_string()));
        }
        let dir = model_dir(root, name);
        if !dir.join("manifest.json").exists() {
            let installed = installed_models(root).into_iter().map(|m| m.name).collect();
            return Err(ModelError::NotInstalled {
                name: name.to_string(),
                root: root.to_path_buf(),
                installed,
            });
        }
        let config: ModelConfig = read_json(&dir.join("model.json"))?;
        let ct2: Ct2Config = read_json(&dir.join("ct2_config.json"))?;
        Ok(ModelDir { dir, config, ct2 })
    }

    pub fn encoder_path(&self, precision: Precision) -> PathBuf {
        self.dir.join(match precision {
            Precision::Fp32 => "encoder.onnx",
            Precision::Int8 => "encoder.int8.onnx",
        })
    }

    pub fn decoder_path(&self, precision: Precision) -> PathBuf {
        self.dir.join(match precision {
            Precision::Fp32 => "decoder.onnx",
            Precision::Int8 => "decoder.int8.onnx",
        })
    }

    /// The fp32 output projection (converted with the 8-bit one; absent
    /// from models converted before it).
    pub fn projection_path(&self) -> PathBuf {
        self.dir.join("projection.f32")
    }

    pub fn tokenizer_path(&self) -> PathBuf {
        self.dir.join("tokenizer.json")
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    serde_json::from_str(&text).map_err(|e| ModelError::BadFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Cross-attention keys and values of encoded windows (one window, or a
/// batch of them), one buffer per decoder-layer tensor, each window's data a
/// *slot* of its buffers (`[slots, ...]`, row-major). The decoder reads
/// them in place ([`Cross`]: borrowed views, no copies): the batch it steps
/// through is the first `active` slots, and when rows finish
/// ([`EncodedWindow::keep`]) the remaining ones are moved to the front, the
/// finished ones behind them, so every window's keys and values stay there
/// for its word timestamps or temperature fallback ([`EncodedWindow::row`]).
pub struct EncodedWindow {
    cross: Vec<Vec<f32>>,
    /// Each tensor's shape without the batch axis.
    row_dims: Vec<Vec<i64>>,
    /// The window in each slot (indices of the windows as encoded).
    order: Vec<usize>,
    /// The first `active` slots are the batch [`EncodedWindow::active`] gives.
    active: usize,
}

/// Cross-attention keys and values of `batch` windows, borrowed: what one
/// decoder run reads.
pub struct Cross<'a> {
    tensors: Vec<&'a [f32]>,
    row_dims: &'a [Vec<i64>],
    batch: usize,
}

impl EncodedWindow {
    /// Windows from one encoder run's outputs (each `[b, ...]`, in
    /// decoder-layer order), in buffers with room for `capacity` windows
    /// in all.
    fn from_run(run: Vec<DynValue>, capacity: usize) -> Result<EncodedWindow, ModelError> {
        let mut cross = Vec::with_capacity(run.len());
        let mut row_dims = Vec::with_capacity(run.len());
        for value in &run {
            let (shape, data) = value.try_extract_tensor::<f32>()?;
            let rows = (shape[0] as usize).max(capacity);
            let row = data.len().checked_div(shape[0] as usize).unwrap_or(0);
            cross.push(Vec::with_capacity(row * rows));
            row_dims.push(shape.iter().skip(1).copied().collect::<Vec<i64>>());
        }
        let mut encoded = EncodedWindow {
            cross,
            row_dims,
            order: Vec::new(),
            active: 0,
        };
        encoded.append_run(run)?;
        Ok(encoded)
    }

    /// Appends the windows of one more encoder run (the same shapes but
    /// for the batch axis), after those already held; all are active.
    fn append_run(&mut self, run: Vec<DynValue>) -> Result<(), ModelError> {
        let mut added = 0;
        for (buffer, value) in self.cross.iter_mut().zip(&run) {
            let (shape, data) = value.try_extract_tensor::<f32>()?;
            buffer.extend_from_slice(data);
            added = shape[0] as usize;
        }
        let n = self.order.len();
        self.order.extend(n..n + added);
        self.active = self.order.len();
        Ok(())
    }

    /// Number of windows encoded.
    pub fn batch(&self) -> usize {
        self.order.len()
    }

    fn row_len(&self, tensor: usize) -> usize {
        self.cross[tensor]
            .len()
            .checked_div(self.order.len())
            .unwrap_or(0)
    }

    /// The active batch: every window at first, the rows still decoding
    /// after [`EncodedWindow::keep`].
    pub fn active(&self) -> Cross<'_> {
        Cross {
            tensors: (0..self.cross.len())
                .map(|i| &self.cross[i][..self.active * self.row_len(i)])
                .collect(),
            row_dims: &self.row_dims,
            batch: self.active,
        }
    }

    /// Window `index` (as encoded) alone, wherever its slot now is.
    pub fn row(&self, index: usize) -> Cross<'_> {
        let slot = self
            .order
            .iter()
            .position(|&w| w == index)
            .expect("a window of this batch");
        Cross {
            tensors: (0..self.cross.len())
                .map(|i| {
                    let n = self.row_len(i);
                    &self.cross[i][slot * n..(slot + 1) * n]
                })
                .collect(),
            row_dims: &self.row_dims,
            batch: 1,
        }
    }

    /// Shrinks the active batch to its rows at `keep` (positions in the
    /// active batch, in the order given): their slots move to the front in
    /// that order, the others' behind them, all data kept.
    pub fn keep(&mut self, keep: &[usize]) {
        // slot i takes the data of slot source[i]: the kept positions first,
        // then the others in their order
        let source: Vec<usize> = keep
            .iter()
            .copied()
            .chain((0..self.order.len()).filter(|p| !keep.contains(p)))
            .collect();
        for i in 0..self.cross.len() {
            let n = self.row_len(i);
            permute_rows(&mut self.cross[i], n, &source);
        }
        self.order = source.iter().map(|&p| self.order[p]).collect();
        self.active = keep.len();
    }
}

/// Moves the rows of `data` (rows of `n` values) so that row i holds what
/// row `source[i]` held (`source` a permutation), in place, one row of
/// scratch per cycle.
pub fn permute_rows(data: &mut [f32], n: usize, source: &[usize]) {
    let mut done = vec![false; source.len()];
    let mut scratch = Vec::new();
    for start in 0..source.len() {
        if done[start] || source[start] == start {
            done[start] = true;
            continue;
        }
        scratch.clear();
        scratch.extend_from_slice(&data[start * n..(start + 1) * n]);
        let mut j = start;
        loop {
            done[j] = true;
            let k = source[j];
            if k == start {
                data[j * n..(j + 1) * n].copy_from_slice(&scratch);
                break;
            }
            data.copy_within(k * n..(k + 1) * n, j * n);
            j = k;
        }
    }
}

/// The decoder's self-attention cache for one sequence, or for a batch of
/// sequences of equal length.
pub struct KvCache {
    past: Vec<DynValue>,
    len: usize,
    batch: usize,
}

impl KvCache {
    /// Number of positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of sequences (rows).
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Keeps only the rows `keep` (indices into the current batch, in order).
    pub fn retain_rows(&mut self, keep: &[usize]) -> Result<(), ModelError> {
        self.past = self
            .past
            .iter()
            .map(|v| select_rows_value(v, keep))
            .collect::<Result<Vec<_>, _>>()?;
        self.batch = keep.len();
        Ok(())
    }
}

/// The rows `keep` of a row-major tensor buffer whose first axis is the
/// batch (`[B, ...]`, `data.len()` a multiple of B): their data, one after
/// another in the order of `keep`.
pub fn select_rows(data: &[f32], batch: usize, keep: &[usize]) -> Vec<f32> {
    let row = data.len().checked_div(batch).unwrap_or(0);
    let mut out = Vec::with_capacity(row * keep.len());
    for &r in keep {
        out.extend_from_slice(&data[r * row..(r + 1) * row]);
    }
    out
}

/// [`select_rows`] on an ONNX Runtime f32 tensor: a new tensor with the
/// same shape but `keep.len()` rows.
fn select_rows_value(value: &DynValue, keep: &[usize]) -> Result<DynValue, ModelError> {
    let (shape, data) = value.try_extract_tensor::<f32>()?;
    let mut dims: Vec<i64> = shape.iter().copied().collect();
    let data = select_rows(data, dims[0] as usize, keep);
    dims[0] = keep.len() as i64;
    Ok(Tensor::<f32>::from_array((dims, data))?.into_dyn())
}

/// Encoder and decoder sessions with the tensor names precomputed.
pub struct WhisperOnnx {
    encoder: Session,
    decoder: Session,
    pub config: ModelConfig,
    pub device: DeviceUsed,
    /// Makes the likeliest of the 8-bit logits exact (None: they are).
    projection: Option<Arc<Projection>>,
    cross_names: Vec<String>,
    past_names: Vec<String>,
    present_names: Vec<String>,
}

impl WhisperOnnx {
    pub fn load(
        library: &Path,
        model: &ModelDir,
        precision: Precision,
        rt: &RuntimeConfig,
    ) -> Result<WhisperOnnx, ModelError> {
        let env = runtime::environment(library)?;
        let (encoder, dev_e) = runtime::session(env, &model.encoder_path(precision), rt)?;
        let (decoder, dev_d) = runtime::session(env, &model.decoder_path(precision), rt)?;
        // the fp32 decoder's logits come from 8-bit weights: the likeliest
        // are made exact from its hidden state (logits.rs); the int8
        // decoder's are its own, as measured (benches/int8_parity.py)
        let has_hidden = decoder.outputs().iter().any(|o| o.name() == "hidden");
        let projection = if precision == Precision::Fp32 && has_hidden {
            Some(Arc::new(Projection::load(
                &model.projection_path(),
                model.config.n_vocab,
                model.config.d_model,
            )?))
        } else {
            None
        };
        let device = if dev_e == DeviceUsed::Cuda && dev_d == DeviceUsed::Cuda {
            DeviceUsed::Cuda
        } else {
            DeviceUsed::Cpu
        };
        let n = model.config.n_decoder_layers;
        let kv = |prefix: &str| -> Vec<String> {
            (0..n)
                .flat_map(|i| [format!("{prefix}_k_{i}"), format!("{prefix}_v_{i}")])
                .collect()
        };
        Ok(WhisperOnnx {
            encoder,
            decoder,
            config: model.config.clone(),
            device,
            projection,
            cross_names: kv("cross"),
            past_names: kv("past"),
            present_names: kv("present"),
        })
    }

    /// Runs the encoder on one `[n_mels, 3000]` window (mel-major).
    pub fn encode(&mut self, mel: &[f32]) -> Result<EncodedWindow, ModelError> {
        let run = self.run_encoder(mel, 1)?;
        EncodedWindow::from_run(run, 1)
    }

    /// Runs the encoder on several `[n_mels, 3000]` windows: the batch the
    /// decoder then steps through together. On CUDA in one run. On the CPU
    /// one window at a time, each copied into the batch's buffers (sized
    /// for the batch up front) and let go before the next: the encoder is
    /// compute-bound there (measured: about 0.6 s a tiny.en window at batch
    /// 1, 4, 8 or 16 alike), and one run over 8 windows held 2.9 GB at its
    /// peak against 1.0 GB (46 min file).
    pub fn encode_batch(&mut self, mels: &[Vec<f32>]) -> Result<EncodedWindow, ModelError> {
        if mels.is_empty() {
            return EncodedWindow::from_run(Vec::new(), 0);
        }
        if self.device == DeviceUsed::Cuda || mels.len() == 1 {
            let run = self.run_encoder(&mels.concat(), mels.len())?;
            return EncodedWindow::from_run(run, mels.len());
        }
        let mut encoded = EncodedWindow::from_run(self.run_encoder(&mels[0], 1)?, mels.len())?;
        for m in &mels[1..] {
            let run = self.run_encoder(m, 1)?;
            encoded.append_run(run)?;
        }
        Ok(encoded)
    }

    /// The encoder over `batch` windows laid one after another in `mel`:
    /// its cross-attention outputs, in decoder-layer order.
    fn run_encoder(&mut self, mel: &[f32], batch: usize) -> Result<Vec<DynValue>, ModelError> {
        let frames = mel.len() / (batch * self.config.n_mels);
        let input = TensorRef::from_array_view(([batch, self.config.n_mels, frames], mel))?;
        let mut out = self.encoder.run(ort::inputs!["mel" => input])?;
        self.cross_names
            .iter()
            .map(|name| {
                out.remove(name.as_str()).ok_or_else(|| {
                    ModelError::Runtime(RuntimeError::Ort(format!("encoder has no output {name}")))
                })
            })
            .collect()
    }

    /// An empty self-attention cache.
    pub fn new_cache(&self) -> Result<KvCache, ModelError> {
        self.new_batch_cache(1)
    }

    /// An empty self-attention cache for `batch` sequences.
    pub fn new_batch_cache(&self, batch: usize) -> Result<KvCache, ModelError> {
        let shape = [batch, self.config.n_heads, 0, self.config.head_dim];
        let past = (0..2 * self.config.n_decoder_layers)
            .map(|_| Tensor::<f32>::from_array((shape, Vec::<f32>::new())).map(|t| t.into_dyn()))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KvCache {
            past,
            len: 0,
            batch,
        })
    }

    /// One decoder run over `tokens` (`[B, T]` row-major, B = `rows`)
    /// after the cached positions `past`, reading the keys and values of
    /// `window` (B windows, or one that every row reads: the graph's
    /// cross-attention products broadcast it)
    /// (a free function over the fields, so callers keep the tensor names
    /// borrowed while the outputs are alive).
    fn run_decoder<'s>(
        decoder: &'s mut Session,
        names: (&[String], &[String]),
        tokens: &[u32],
        rows: usize,
        past: &[DynValue],
        window: &Cross<'_>,
    ) -> Result<ort::session::SessionOutputs<'s>, ModelError> {
        let (past_names, cross_names) = names;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let batch = window.batch;
        let tokens_t = TensorRef::from_array_view(([rows, ids.len() / rows], &ids[..]))?;
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + past_names.len() + cross_names.len());
        inputs.push(("tokens".into(), tokens_t.into()));
        for (name, v) in past_names.iter().zip(past) {
            inputs.push((name.as_str().into(), v.into()));
        }
        for ((name, data), dims) in cross_names.iter().zip(&window.tensors).zip(window.row_dims) {
            let mut shape = Vec::with_capacity(1 + dims.len());
            shape.push(batch as i64);
            shape.extend_from_slice(dims);
            let view = TensorRef::from_array_view((shape, *data))?;
            inputs.push((name.as_str().into(), view.into()));
        }
        Ok(decoder.run(inputs)?)
    }

    /// Feeds `tokens` after what `cache` holds; returns the logits that
    /// predict the token after the last one, and extends the cache. For a
    /// batch, `tokens` is `[B, T]` row-major (every row the same length),
    /// `cache` holds B rows and `window` B windows (or one, which every row
    /// reads), and the logits are `[B, vocab]`
    /// row-major, with what makes the likeliest exact ([`StepLogits`]).
    pub fn decode(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        window: &Cross<'_>,
    ) -> Result<StepLogits, ModelError> {
        let batch = cache.batch;
        if (window.batch != batch && window.batch != 1) || tokens.len() % batch != 0 {
            return Err(ModelError::Runtime(RuntimeError::Ort(format!(
                "decoder batch mismatch: {batch} cached rows, {} windows, {} tokens",
                window.batch,
                tokens.len()
            ))));
        }
        let names = (&self.past_names[..], &self.cross_names[..]);
        let mut out =
            Self::run_decoder(&mut self.decoder, names, tokens, batch, &cache.past, window)?;
        let logits = out["logits"].try_extract_tensor::<f32>()?.1.to_vec();
        let hidden = match (&self.projection, out.get("hidden")) {
            (Some(_), Some(h)) => h.try_extract_tensor::<f32>()?.1.to_vec(),
            _ => Vec::new(),
        };
        let mut present = Vec::with_capacity(self.present_names.len());
        for name in &self.present_names {
            present.push(out.remove(name.as_str()).ok_or_else(|| {
                ModelError::Runtime(RuntimeError::Ort(format!("decoder has no output {name}")))
            })?);
        }
        drop(out);
        cache.past = present;
        cache.len += tokens.len() / batch;
        let vocab = logits.len() / batch;
        Ok(StepLogits::new(
            logits,
            vocab,
            hidden,
            self.projection.clone(),
        ))
    }

    /// Feeds the whole of `tokens` with an empty cache and returns the
    /// alignment heads' cross-attention scores, `[heads, tokens.len(), stride]`
    /// row-major, with `(heads, stride)`.
    /// `window` is one window (take a batch's row with [`EncodedWindow::row`]).
    pub fn alignment_scores(
        &mut self,
        tokens: &[u32],
        window: &Cross<'_>,
    ) -> Result<(Vec<f32>, usize, usize), ModelError> {
        if window.batch != 1 {
            return Err(ModelError::Runtime(RuntimeError::Ort(format!(
                "alignment scores take one window, not a batch of {}",
                window.batch
            ))));
        }
        let empty = self.new_cache()?;
        let names = (&self.past_names[..], &self.cross_names[..]);
        let out = Self::run_decoder(&mut self.decoder, names, tokens, 1, &empty.past, window)?;
        let value = out.get("alignment_qk").ok_or_else(|| {
            ModelError::Runtime(RuntimeError::Ort(
                "decoder has no output alignment_qk (converted before word timestamps): run `make setup`".into(),
            ))
        })?;
        let (shape, data) = value.try_extract_tensor::<f32>()?;
        let (heads, stride) = (shape[1] as usize, shape[3] as usize);
        Ok((data.to_vec(), heads, stride))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `[B, H, T, D]` buffer whose every value says where it is: b*1000 + h*100 + t*10 + d.
    fn labelled(b: usize, h: usize, t: usize, d: usize) -> Vec<f32> {
        let mut v = Vec::new();
        for bi in 0..b {
            for hi in 0..h {
                for ti in 0..t {
                    for di in 0..d {
                        v.push((bi * 1000 + hi * 100 + ti * 10 + di) as f32);
                    }
                }
            }
        }
        v
    }

    #[test]
    fn rows_move_in_place_and_none_is_lost() {
        let (h, t, d) = (2, 3, 4);
        let row = h * t * d;
        let mut data = labelled(5, h, t, d);
        let original = data.clone();
        // rows 3 and 1 stay (in that order), the others go behind them
        let source = [3, 1, 0, 2, 4];
        permute_rows(&mut data, row, &source);
        for (slot, &from) in source.iter().enumerate() {
            assert_eq!(
                &data[slot * row..(slot + 1) * row],
                &original[from * row..(from + 1) * row],
                "slot {slot}"
            );
        }
        // a cycle of every row, and no move at all
        let mut cycle = original.clone();
        permute_rows(&mut cycle, row, &[1, 2, 3, 4, 0]);
        assert_eq!(&cycle[..row], &original[row..2 * row]);
        assert_eq!(&cycle[4 * row..], &original[..row]);
        let mut same = original.clone();
        permute_rows(&mut same, row, &[0, 1, 2, 3, 4]);
        assert_eq!(same, original);
    }

    #[test]
    fn finished_rows_leave_a_batch_buffer_and_the_rest_keep_their_data() {
        let (h, t, d) = (2, 3, 4);
        let full = labelled(4, h, t, d);
        // rows 1 and 3 finished: 0 and 2 remain, in order, untouched
        let kept = select_rows(&full, 4, &[0, 2]);
        assert_eq!(kept.len(), 2 * h * t * d);
        let row = h * t * d;
        assert_eq!(&kept[..row], &full[..row]);
        assert_eq!(&kept[row..], &full[2 * row..3 * row]);
        assert_eq!(kept[row], 2000.0);
        assert_eq!(kept[2 * row - 1], 2000.0 + 100.0 + 20.0 + 3.0);
        // one row alone (a window decoded again by itself)
        assert_eq!(select_rows(&full, 4, &[3]), full[3 * row..].to_vec());
        // every row gone, and an empty cache (T = 0) stays empty
        assert!(select_rows(&full, 4, &[]).is_empty());
        assert!(select_rows(&[], 4, &[1, 2]).is_empty());
    }
}
