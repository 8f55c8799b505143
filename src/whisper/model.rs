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

use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorRef};
use serde::Deserialize;

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
/// batch of them along the first axis), one pair per decoder layer.
pub struct EncodedWindow {
    cross: Vec<DynValue>,
    batch: usize,
}

impl EncodedWindow {
    /// Number of windows (rows) encoded.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Encoded windows one after another as one batch.
    pub fn stack(windows: &[EncodedWindow]) -> Result<EncodedWindow, ModelError> {
        let n = windows.first().map_or(0, |w| w.cross.len());
        let cross = (0..n)
            .map(|i| stack_values(windows.iter().map(|w| &w.cross[i])))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EncodedWindow {
            cross,
            batch: windows.iter().map(|w| w.batch).sum(),
        })
    }

    /// The rows `keep` (indices into this batch, in the order given) as a
    /// batch of their own: a batch that lost finished rows, or one window
    /// decoded alone again (fallback, word timestamps).
    pub fn rows(&self, keep: &[usize]) -> Result<EncodedWindow, ModelError> {
        let cross = self
            .cross
            .iter()
            .map(|v| select_rows_value(v, keep))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EncodedWindow {
            cross,
            batch: keep.len(),
        })
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

/// f32 tensors of equal shape but for the first axis, concatenated along it.
fn stack_values<'v>(values: impl Iterator<Item = &'v DynValue>) -> Result<DynValue, ModelError> {
    let mut dims: Vec<i64> = Vec::new();
    let mut data: Vec<f32> = Vec::new();
    for v in values {
        let (shape, d) = v.try_extract_tensor::<f32>()?;
        if dims.is_empty() {
            dims = shape.iter().copied().collect();
        } else {
            dims[0] += shape[0];
        }
        data.extend_from_slice(d);
    }
    Ok(Tensor::<f32>::from_array((dims, data))?.into_dyn())
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
            cross_names: kv("cross"),
            past_names: kv("past"),
            present_names: kv("present"),
        })
    }

    /// Runs the encoder on one `[n_mels, 3000]` window (mel-major).
    pub fn encode(&mut self, mel: &[f32]) -> Result<EncodedWindow, ModelError> {
        self.run_encoder(mel, 1)
    }

    /// Runs the encoder on several `[n_mels, 3000]` windows: the batch the
    /// decoder then steps through together. On CUDA in one run. On the CPU
    /// one window at a time, the outputs stacked: the encoder is
    /// compute-bound there (measured: about 0.6 s a tiny.en window at batch
    /// 1, 4, 8 or 16 alike), and one run over 8 windows held 2.9 GB at its
    /// peak against 1.0 GB (46 min file).
    pub fn encode_batch(&mut self, mels: &[Vec<f32>]) -> Result<EncodedWindow, ModelError> {
        if self.device == DeviceUsed::Cuda || mels.len() == 1 {
            return self.run_encoder(&mels.concat(), mels.len());
        }
        let windows = mels
            .iter()
            .map(|m| self.run_encoder(m, 1))
            .collect::<Result<Vec<_>, _>>()?;
        EncodedWindow::stack(&windows)
    }

    /// The encoder over `batch` windows laid one after another in `mel`.
    fn run_encoder(&mut self, mel: &[f32], batch: usize) -> Result<EncodedWindow, ModelError> {
        let frames = mel.len() / (batch * self.config.n_mels);
        let input = TensorRef::from_array_view(([batch, self.config.n_mels, frames], mel))?;
        let mut out = self.encoder.run(ort::inputs!["mel" => input])?;
        let cross = self
            .cross_names
            .iter()
            .map(|name| {
                out.remove(name.as_str()).ok_or_else(|| {
                    ModelError::Runtime(RuntimeError::Ort(format!("encoder has no output {name}")))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(EncodedWindow { cross, batch })
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

    /// One decoder run over `tokens` (`[B, T]` row-major, B the window's
    /// batch) after the cached positions `past`
    /// (a free function over the fields, so callers keep the tensor names
    /// borrowed while the outputs are alive).
    fn run_decoder<'s>(
        decoder: &'s mut Session,
        names: (&[String], &[String]),
        tokens: &[u32],
        past: &[DynValue],
        window: &EncodedWindow,
    ) -> Result<ort::session::SessionOutputs<'s>, ModelError> {
        let (past_names, cross_names) = names;
        let ids: Vec<i64> = tokens.iter().map(|&t| t as i64).collect();
        let batch = window.batch;
        let tokens_t = TensorRef::from_array_view(([batch, ids.len() / batch], &ids[..]))?;
        let mut inputs: Vec<(std::borrow::Cow<'_, str>, SessionInputValue<'_>)> =
            Vec::with_capacity(1 + past_names.len() + cross_names.len());
        inputs.push(("tokens".into(), tokens_t.into()));
        for (name, v) in past_names.iter().zip(past) {
            inputs.push((name.as_str().into(), v.into()));
        }
        for (name, v) in cross_names.iter().zip(&window.cross) {
            inputs.push((name.as_str().into(), v.into()));
        }
        Ok(decoder.run(inputs)?)
    }

    /// Feeds `tokens` after what `cache` holds; returns the logits that
    /// predict the token after the last one, and extends the cache. For a
    /// batch, `tokens` is `[B, T]` row-major (every row the same length),
    /// `cache` and `window` hold B rows, and the logits are `[B, vocab]`
    /// row-major.
    pub fn decode(
        &mut self,
        tokens: &[u32],
        cache: &mut KvCache,
        window: &EncodedWindow,
    ) -> Result<Vec<f32>, ModelError> {
        let batch = window.batch;
        if cache.batch != batch || tokens.len() % batch != 0 {
            return Err(ModelError::Runtime(RuntimeError::Ort(format!(
                "decoder batch mismatch: {} cached rows, {batch} windows, {} tokens",
                cache.batch,
                tokens.len()
            ))));
        }
        let names = (&self.past_names[..], &self.cross_names[..]);
        let mut out = Self::run_decoder(&mut self.decoder, names, tokens, &cache.past, window)?;
        let logits = out["logits"].try_extract_tensor::<f32>()?.1.to_vec();
        let mut present = Vec::with_capacity(self.present_names.len());
        for name in &self.present_names {
            present.push(out.remove(name.as_str()).ok_or_else(|| {
                ModelError::Runtime(RuntimeError::Ort(format!("decoder has no output {name}")))
            })?);
        }
        drop(out);
        cache.past = present;
        cache.len += tokens.len() / batch;
        Ok(logits)
    }

    /// Feeds the whole of `tokens` with an empty cache and returns the
    /// alignment heads' cross-attention scores, `[heads, tokens.len(), stride]`
    /// row-major, with `(heads, stride)`.
    /// `window` is one window (take a batch's row with [`EncodedWindow::rows`]).
    pub fn alignment_scores(
        &mut self,
        tokens: &[u32],
        window: &EncodedWindow,
    ) -> Result<(Vec<f32>, usize, usize), ModelError> {
        if window.batch != 1 {
            return Err(ModelError::Runtime(RuntimeError::Ort(format!(
                "alignment scores take one window, not a batch of {}",
                window.batch
            ))));
        }
        let empty = self.new_cache()?;
        let names = (&self.past_names[..], &self.cross_names[..]);
        let out = Self::run_decoder(&mut self.decoder, names, tokens, &empty.past, window)?;
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
