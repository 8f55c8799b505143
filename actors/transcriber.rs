//! Transcriber: one branch of the fork after the preprocessor.
//!
//! The role of the transcriber is to turn the audio into timed text with
//! Whisper, while the diarizer finds the speakers in the same audio beside
//! it. This includes the following steps:
//! - finding the speech with the voice activity detector (`vad.enabled`):
//!   Whisper skips windows without speech and its words are held to the
//!   speech regions (`crate::whisper::gate`). It runs here, not before the
//!   fork, so that the diarizer starts on the samples while it runs;
//! - running the speech recogniser (`WhisperEngine::transcribe_until` in
//!   service: log-mel features, encoder and decoder on ONNX Runtime, on the
//!   configured device with CPU fallback) on this worker's own engine,
//!   loaded once at start, stopping between 30 s windows when the job is
//!   cancelled;
//! - telling the registry each window's segments as soon as they are
//!   decoded (partial results: `GET /api/jobs/{id}/events` streams them);
//! - passing on the transcript with what the aligner needs to know of the
//!   audio (its duration and trim offset), not the samples: the diarizer
//!   holds its own reference to them, and they are freed once both branches
//!   are done.
//!
//! With `pipeline.lend_idle_cores`, the stage has one more worker than
//! `pipeline.transcriber.threads`: it runs a job only on a core the diarizer
//! lends while idle, when jobs wait that the own workers cannot take
//! (`actors::stage::Borrower`), and loads its model on its first job.

use std::sync::Arc;

use super::preprocessor::Audio16k;
use super::stage::{JobError, StageWork};
use super::{JobCtx, JobEvent};
use crate::audio::Samples;
use crate::cores::SpareCores;
use crate::result::PartialSegment;
use crate::runtime::DeviceUsed;
use crate::vad::SpeechDetector;
use crate::whisper::gate::SpeechMap;
use crate::whisper::{ModelLoader, Segment, SpeechToText, Transcript, WhisperError};

pub struct Transcriber {
    /// The served model (`whisper.model`), or how to load it on the first
    /// job (the extra worker's: `Transcriber::loading_on_first_job`).
    engine: Served,
    /// Loads another installed model for a job that names one.
    loader: Option<ModelLoader>,
    /// The last other model a job named (by its installed name), kept for
    /// the next (one at most per worker: memory stays bounded).
    other: Option<(String, Box<dyn SpeechToText>)>,
    /// The speech detector and its threshold (the regions' cores).
    vad: Option<(Box<dyn SpeechDetector + Send>, f32)>,
    /// Where the worker lends its core while it has no job.
    spare: Option<Arc<SpareCores>>,
}

/// The served model, loaded or to be loaded.
enum Served {
    Loaded(Box<dyn SpeechToText>),
    /// The loader and the served model's name.
    OnFirstJob(ModelLoader, String),
}

impl Transcriber {
    pub fn new(engine: Box<dyn SpeechToText>) -> Transcriber {
        Transcriber::serving(Served::Loaded(engine))
    }

    /// A transcriber that loads the served `model` with `loader` when its
    /// first job comes, and keeps it: for the extra worker that runs only on
    /// a borrowed core (`actors::stage::Borrower`), which costs no memory
    /// where jobs never wait for the transcriber.
    pub fn loading_on_first_job(loader: ModelLoader, model: &str) -> Transcriber {
        Transcriber::serving(Served::OnFirstJob(loader, model.to_string()))
    }

    fn serving(engine: Served) -> Transcriber {
        Transcriber {
            engine,
            loader: None,
            other: None,
            vad: None,
            spare: None,
        }
    }

    /// Lends the worker's core in `spare` while it waits for a job (the
    /// diarizer's segmentation and embeddings borrow it: `crate::cores`).
    pub fn lending_idle_core(mut self, spare: Option<Arc<SpareCores>>) -> Transcriber {
        self.spare = spare;
        self
    }

    /// Finds the speech of every job with `detector` (`threshold`: its speech probability threshold).
    pub fn with_speech_detector(
        mut self,
        detector: Option<Box<dyn SpeechDetector + Send>>,
        threshold: f32,
    ) -> Transcriber {
        self.vad = detector.map(|d| (d, threshold));
        self
    }

    /// The speech regions of `samples`, when the detector is on.
    fn speech(&mut self, samples: Samples) -> Result<Option<SpeechMap>, JobError> {
        let Some((detector, threshold)) = &mut self.vad else {
            return Ok(None);
        };
        let speech = detector.speech(samples)?;
        tracing::info!(
            regions = speech.regions.len(),
            seconds = speech.speech_seconds(),
            "speech found"
        );
        Ok(Some(SpeechMap::new(&speech, samples, *threshold)))
    }

    pub fn with_loader(mut self, loader: Option<ModelLoader>) -> Transcriber {
        self.loader = loader;
        self
    }

    /// The engine for a job that names `model` (None: the served one).
    fn engine_for(&mut self, model: Option<&str>) -> Result<&mut dyn SpeechToText, JobError> {
        let Some(name) = model else {
            if let Served::OnFirstJob(load, name) = &self.engine {
                tracing::info!(model = %name, "loading the served model for the extra worker");
                self.engine = Served::Loaded(load(name)?);
            }
            let Served::Loaded(engine) = &mut self.engine else {
                unreachable!("loaded above")
            };
            return Ok(engine.as_mut());
        };
        if self.other.as_ref().is_none_or(|(loaded, _)| loaded != name) {
            let loader = self.loader.as_ref().ok_or_else(|| {
                JobError::input(format!("this server runs only its own model, not '{name}'"))
            })?;
            self.other = None; // the previous one goes before the next is loaded
            tracing::info!(model = name, "loading a model a job names");
            // a setting the model cannot take (a language, a precision) is the
            // request's; a model that will not load is ours
            let loaded = loader(name).map_err(|e| match e {
                WhisperError::Settings(m) => JobError::input(m),
                e => JobError::from(e),
            })?;
            self.other = Some((name.to_string(), loaded));
        }
        let (_, engine) = self.other.as_mut().expect("loaded above");
        Ok(engine.as_mut())
    }
}

/// The transcript and what the aligner needs of the audio.
#[derive(Debug, Clone)]
pub struct Transcribed {
    pub transcript: Transcript,
    /// Duration of the original recording, seconds.
    pub duration: f64,
    /// Seconds trimmed from the start (added back to every time).
    pub offset: f64,
    pub model: String,
    pub device: DeviceUsed,
}

impl StageWork for Transcriber {
    type In = Audio16k;
    type Out = Transcribed;
    const NAME: &'static str = "transcription";
    const PROGRESS: (u8, &'static str) = (25, "Transcribing with Whisper");
    const KEEPS_FREED_PAGES: bool = true;

    fn lends_its_core(&self) -> Option<Arc<SpareCores>> {
        self.spare.clone()
    }

    fn process(&mut self, ctx: &mut JobCtx, audio: Audio16k) -> Result<Transcribed, JobError> {
        let (id, offset, events) = (ctx.id, audio.offset, &*ctx);
        // times on the original recording, as in the result
        let mut tell = |segments: &[Segment]| {
            let segments = segments
                .iter()
                .map(|s| {
                    let mut p = PartialSegment::from(s);
                    p.start += offset;
                    p.end += offset;
                    p
                })
                .collect();
            events.tell(JobEvent::Segments { id, segments })
        };
        let speech = self.speech(audio.samples.view())?;
        let overrides = &ctx.options.whisper;
        let engine = self.engine_for(overrides.model.as_deref())?;
        let transcript = engine
            .transcribe_live(
                audio.samples.view(),
                speech.as_ref(),
                Some(ctx.cancel.flag()),
                overrides,
                &mut tell,
            )
            .map_err(|e| match e {
                // a language or prompt this upload asked for
                WhisperError::Settings(m) if !overrides.is_empty() => JobError::input(m),
                WhisperError::Tokenizer(t) if !overrides.is_empty() => {
                    JobError::input(format!("the prompt cannot be tokenised: {t}"))
                }
                e => JobError::from(e),
            })?;
        tracing::info!(segments = transcript.segments.len(), language = %transcript.language, "transcribed");
        Ok(Transcribed {
            transcript,
            duration: audio.duration,
            offset: audio.offset,
            model: engine.model_name().to_string(),
            device: engine.device(),
        })
    }
}
