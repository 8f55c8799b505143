//! Whisper speech recognition on ONNX Runtime: plain synchronous code, no
//! actors. `WhisperEngine::transcribe` takes 16 kHz mono samples and returns
//! timestamped segments, decoded the way faster-whisper decodes the same
//! weights (greedy, temperature fallback, no-speech and repetition guards).

pub mod decode;
pub mod gate;
pub mod logits;
pub mod mel;
pub mod model;
pub mod timing;
pub mod tokenizer;
pub mod transcribe;

use std::time::Instant;

use serde::Serialize;

use crate::audio::Samples;
use crate::config::{Config, Precision, Task};
use crate::runtime::{DeviceUsed, StopFlag};
use decode::DecodeOptions;
use mel::MelFrontEnd;
use model::{ModelDir, ModelError, WhisperOnnx};
pub use timing::Word;
use tokenizer::WhisperTokenizer;
use transcribe::{transcribe_features, Job, LoopOptions};
pub use transcribe::{Segment, Timings};

/// The result of transcribing one recording.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    pub language: String,
    /// Audio duration in seconds.
    pub duration: f64,
    pub segments: Vec<Segment>,
    pub timings: Timings,
}

impl Transcript {
    /// The segments' text joined, trimmed.
    pub fn full_text(&self) -> String {
        let joined: String = self.segments.iter().map(|s| s.text.as_str()).collect();
        joined.trim().to_string()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WhisperError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error("tokenizer: {0}")]
    Tokenizer(#[from] tokenizer::TokenizerError),
    #[error("invalid whisper settings: {0}")]
    Settings(String),
}

/// Per-job changes to the configured decoding: the OpenAI-compatible
/// route's `language`, `prompt` and `temperature`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Overrides {
    /// A language code instead of `whisper.language`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// Text given as the text before the first window (spellings, names,
    /// style), as faster-whisper's `initial_prompt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt: Option<String>,
    /// The first temperature; the configured ones above it follow as the
    /// fallback. 0 (or none): the configured list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// Another installed model than `whisper.model` (the transcription
    /// stage loads it: [`ModelLoader`]); engines themselves ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

/// Loads another installed model by name, with the served model's settings
/// otherwise (a job that names one: `/v1`'s `model`).
pub type ModelLoader =
    std::sync::Arc<dyn Fn(&str) -> Result<Box<dyn SpeechToText>, WhisperError> + Send + Sync>;

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self == &Overrides::default()
    }
}

/// What the pipeline's transcription stage needs from a speech recogniser:
/// [`WhisperEngine`] in service, a fake in the pipeline's own tests (no
/// models, no clock).
pub trait SpeechToText: Send {
    /// Transcribes 16 kHz mono samples, gated by `speech` when given; stops
    /// (error) soon after `stop` is set.
    fn transcribe_until(
        &mut self,
        samples: Samples<'_>,
        speech: Option<&gate::SpeechMap>,
        stop: Option<StopFlag>,
    ) -> Result<Transcript, WhisperError>;
    /// As [`SpeechToText::transcribe_until`], and tells `partial` the
    /// segments of each window as soon as they are decoded (provisional:
    /// the returned transcript is the result). An engine that cannot tell
    /// earlier tells them all once at the end.
    /// `overrides` change the configured decoding for this call (an engine
    /// that has none of these settings ignores them).
    fn transcribe_live(
        &mut self,
        samples: Samples<'_>,
        speech: Option<&gate::SpeechMap>,
        stop: Option<StopFlag>,
        overrides: &Overrides,
        partial: &mut dyn FnMut(&[Segment]),
    ) -> Result<Transcript, WhisperError> {
        let _ = overrides;
        let transcript = self.transcribe_until(samples, speech, stop)?;
        partial(&transcript.segments);
        Ok(transcript)
    }
    /// The model's name, reported in results.
    fn model_name(&self) -> &str;
    /// Where the model really runs.
    fn device(&self) -> DeviceUsed;
}

impl SpeechToText for WhisperEngine {
    fn transcribe_until(
        &mut self,
        samples: Samples<'_>,
        speech: Option<&gate::SpeechMap>,
        stop: Option<StopFlag>,
    ) -> Result<Transcript, WhisperError> {
        WhisperEngine::transcribe_until(self, samples, speech, stop)
    }
    fn transcribe_live(
        &mut self,
        samples: Samples<'_>,
        speech: Option<&gate::SpeechMap>,
        stop: Option<StopFlag>,
        overrides: &Overrides,
        partial: &mut dyn FnMut(&[Segment]),
    ) -> Result<Transcript, WhisperError> {
        WhisperEngine::transcribe_with(self, samples, speech, stop, overrides, Some(partial))
    }
    fn model_name(&self) -> &str {
        WhisperEngine::model_name(self)
    }
    fn device(&self) -> DeviceUsed {
        WhisperEngine::device(self)
    }
}

/// A loaded Whisper model with its decoding settings.
pub struct WhisperEngine {
    model: WhisperOnnx,
    tok: WhisperTokenizer,
    mel: MelFrontEnd,
    opts: DecodeOptions,
    language: Option<String>,
    task: Task,
    condition_on_previous_text: bool,
    prompt_reset_on_temperature: f32,
    silence_peak: f32,
    seed: u64,
    word_timestamps: bool,
    gate: gate::GateOptions,
    batch_size: usize,
}

/// The models whose int8 conversion is offered: its word error rate
/// measured within 0.5 points of fp32 on the 14 shared clips, realmix1 and
/// conv1 (`benches/int8_parity.py`, README "int8"). base's int8 was 1.3
/// points worse on the clips (its int8 encoder alone still 1.0 on conv1),
/// and a model added from a faster-whisper folder is unmeasured: fp32 only.
pub const INT8_OFFERED: &[&str] = &["tiny.en"];

/// `precision` for `model`, or why it is not offered.
pub fn check_precision(model: &str, precision: Precision) -> Result<(), String> {
    if precision == Precision::Int8 && !INT8_OFFERED.contains(&model) {
        return Err(format!(
            "precision int8 is not offered for model '{model}': only where its int8 conversion was measured within \
             0.5 WER points of fp32 ({}; benches/int8_parity.py). Use precision fp32",
            INT8_OFFERED.join(", ")
        ));
    }
    Ok(())
}

fn model_has_no_alignment_heads(dir: &ModelDir) -> bool {
    if dir.config.alignment_heads.is_empty() {
        tracing::warn!(model = %dir.config.name, "model has no alignment heads (converted before word timestamps): run `make setup`; no word timestamps");
        return true;
    }
    false
}

impl WhisperEngine {
    /// Loads the configured model; fails with a message naming `make setup`
    /// when the model or ONNX Runtime is not installed.
    pub fn load(config: &Config) -> Result<WhisperEngine, WhisperError> {
        let w = &config.whisper;
        if w.beam_size != 1 {
            return Err(WhisperError::Settings(format!(
                "beam_size = {} is not supported yet: only greedy decoding (beam_size = 1) is implemented",
                w.beam_size
            )));
        }
        check_precision(&w.model, w.precision).map_err(WhisperError::Settings)?;
        let dir = ModelDir::open(&config.models_root(), &w.model)?;
        let mc = &dir.config;
        let language = match w.language.as_str() {
            "auto" if mc.multilingual => None,
            "auto" => Some("en".to_string()),
            code => {
                check_language(&w.model, mc.multilingual, &mc.languages, code)
                    .map_err(WhisperError::Settings)?;
                Some(code.to_string())
            }
        };
        if !mc.multilingual && w.task == Task::Translate {
            return Err(WhisperError::Settings(
                "translation needs a multilingual model".into(),
            ));
        }
        let tok = WhisperTokenizer::from_file(&dir.tokenizer_path(), mc.tokens.clone())?;
        let model = WhisperOnnx::load(
            &config.onnxruntime_library(),
            &dir,
            w.precision,
            &config.runtime,
        )?;
        let opts = DecodeOptions {
            temperatures: w.temperatures.clone(),
            compression_ratio_threshold: w.compression_ratio_threshold,
            log_prob_threshold: w.log_prob_threshold,
            no_speech_threshold: w.no_speech_threshold,
            without_timestamps: false,
            max_initial_timestamp_index: Some(
                (w.max_initial_timestamp as f64 / tokenizer::TIME_PRECISION).round() as u32,
            ),
            suppress_blank: w.suppress_blank,
            suppress_tokens: dir.ct2.suppress_ids.clone(),
            suppress_tokens_begin: dir.ct2.suppress_ids_begin.clone(),
            max_length: mc.n_text_ctx,
        };
        Ok(WhisperEngine {
            mel: MelFrontEnd::new(mc.n_mels),
            model,
            tok,
            opts,
            language,
            task: w.task,
            condition_on_previous_text: w.condition_on_previous_text,
            prompt_reset_on_temperature: w.prompt_reset_on_temperature,
            silence_peak: 10f32.powf(w.silence_threshold_db / 20.0),
            seed: w.seed,
            word_timestamps: w.word_timestamps && !model_has_no_alignment_heads(&dir),
            gate: gate::GateOptions::from_config(&config.vad),
            batch_size: w.batch_size as usize,
        })
    }

    /// The execution provider the model runs on.
    pub fn device(&self) -> DeviceUsed {
        self.model.device
    }

    pub fn model_name(&self) -> &str {
        &self.model.config.name
    }

    /// Transcribes 16 kHz mono samples.
    pub fn transcribe<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_until(samples, None, None)
    }

    /// Transcribes 16 kHz mono samples; stops early (error `Cancelled`) once
    /// `stop` is set, checked before each 30 s window (or batch of them). With
    /// `speech` (regions a voice activity detector found, sorted, in seconds),
    /// windows without speech are skipped and the result is gated by them
    /// (`gate.rs`); with `speech` and `whisper.batch_size` above 1, the
    /// speech is decoded in lanes, their windows batched (`transcribe.rs`).
    pub fn transcribe_until<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
        speech: Option<&gate::SpeechMap>,
        stop: Option<StopFlag>,
    ) -> Result<Transcript, WhisperError> {
        self.transcribe_with(samples, speech, stop, &Overrides::default(), None)
    }

    /// [`WhisperEngine::transcribe_until`], telling `partial` each window's
    /// segments as soon as they are decoded (before gating: provisional).
    pub fn transcribe_with<'s>(
        &mut self,
        samples: impl Into<Samples<'s>>,
        speech: Option<&gate::SpeechMap>,
        stop: Option<StopFlag>,
        overrides: &Overrides,
        partial: Option<&mut dyn FnMut(&[Segment])>,
    ) -> Result<Transcript, WhisperError> {
        let samples: Samples = samples.into();
        let mc = &self.model.config;
        if let Some(code) = &overrides.language {
            check_language(&mc.name, mc.multilingual, &mc.languages, code)
                .map_err(WhisperError::Settings)?;
        }
        let initial_prompt = match overrides.prompt.as_deref().map(str::trim) {
            Some(p) if !p.is_empty() => self.tok.encode(&format!(" {p}"))?,
            _ => Vec::new(),
        };
        let opts = match overrides.temperature {
            Some(t) if t > 0.0 => {
                let mut o = self.opts.clone();
                o.temperatures = std::iter::once(t)
                    .chain(self.opts.temperatures.iter().copied().filter(|c| *c > t))
                    .collect();
                std::borrow::Cow::Owned(o)
            }
            _ => std::borrow::Cow::Borrowed(&self.opts),
        };
        let mut timings = Timings::default();
        let t0 = Instant::now();
        let features = self.mel.compute(samples);
        timings.features = t0.elapsed().as_secs_f64();
        let duration = samples.len() as f64 / mel::SAMPLE_RATE as f64;
        let mut rng = fastrand::Rng::with_seed(self.seed);
        let language = match overrides.language.as_ref().or(self.language.as_ref()) {
            Some(l) => l.clone(),
            None => detect_language(&mut self.model, self.tok.special.sot, &features)?,
        };
        let sp = &self.tok.special;
        let sot_sequence = if self.model.config.multilingual {
            let lang = self.language_token(&language)?;
            let task = if self.task == Task::Translate {
                sp.translate
            } else {
                sp.transcribe
            };
            vec![sp.sot, lang, task]
        } else {
            vec![sp.sot]
        };
        let loop_opts = LoopOptions {
            condition_on_previous_text: self.condition_on_previous_text,
            prompt_reset_on_temperature: self.prompt_reset_on_temperature,
            sot_sequence,
            silence_peak: self.silence_peak,
            stop,
            word_timestamps: self.word_timestamps,
            language: language.clone(),
            speech: speech.map(|m| m.regions.clone()),
            batch_size: self.batch_size,
            initial_prompt,
        };
        let mut segments = transcribe_features(Job {
            model: &mut self.model,
            tok: &self.tok,
            samples,
            mel: &features,
            opts: &opts,
            loop_opts: &loop_opts,
            rng: &mut rng,
            timings: &mut timings,
            // a shorter-lived borrow of the same sink
            partial: match partial {
                Some(p) => Some(p),
                None => None,
            },
        })?;
        if let Some(map) = speech {
            segments = gate::gate_segments(segments, map, self.gate);
        }
        Ok(Transcript {
            language,
            duration,
            segments,
            timings,
        })
    }

    /// Windows decoded at once (`whisper.batch_size`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// Whether words get timestamps (configured, and the model has alignment heads).
    pub fn word_timestamps(&self) -> bool {
        self.word_timestamps
    }

    fn language_token(&self, code: &str) -> Result<u32, WhisperError> {
        self.model
            .config
            .language_token(code)
            .ok_or_else(|| WhisperError::Settings(format!("no language token for '{code}'")))
    }
}

/// Whether `model` can transcribe language `code`; the error is for the user.
pub fn check_language(
    model: &str,
    multilingual: bool,
    languages: &[String],
    code: &str,
) -> Result<(), String> {
    if !multilingual && code != "en" {
        return Err(format!(
            "model {model} is English-only; language '{code}' needs a multilingual model such as base"
        ));
    }
    if multilingual && !languages.iter().any(|l| l == code) {
        return Err(format!("unknown language code '{code}'"));
    }
    Ok(())
}

/// The most probable language of the first 30 s (multilingual models).
fn detect_language(
    model: &mut WhisperOnnx,
    sot: u32,
    features: &mel::LogMel,
) -> Result<String, WhisperError> {
    let window = features.window(0, mel::N_FRAMES);
    let encoded = model.encode(&window)?;
    let mut cache = model.new_cache()?;
    let mut step = model.decode(&[sot], &mut cache, &encoded.active())?;
    let mut best: Option<(f32, &str)> = None;
    let first = model.config.tokens.lang_first as usize;
    let languages = first..(first + model.config.languages.len());
    let logits = match step.rows_mut().next() {
        Some((l, exact)) => {
            let n = l.len();
            for t in languages.filter(|&t| t < n) {
                exact.token(l, t);
            }
            &*l
        }
        None => &[][..],
    };
    for (i, code) in model.config.languages.iter().enumerate() {
        if let Some(&l) = logits.get(first + i) {
            if best.is_none_or(|(b, _)| l > b) {
                best = Some((l, code));
            }
        }
    }
    Ok(best
        .map(|(_, c)| c.to_string())
        .unwrap_or_else(|| "en".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_is_offered_only_where_it_was_measured_as_accurate_as_fp32() {
        assert!(check_precision("tiny.en", Precision::Int8).is_ok());
        assert!(check_precision("base", Precision::Fp32).is_ok());
        assert!(check_precision("large-v3", Precision::Fp32).is_ok());
        for model in ["base", "large-v3"] {
            let e = check_precision(model, Precision::Int8).unwrap_err();
            assert!(
                e.contains(&format!("not offered for model '{model}'"))
                    && e.contains("Use precision fp32"),
                "{e}"
            );
        }
    }
}
