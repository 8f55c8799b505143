//! Wiring: builds the stages from the last back to the first, so that each
//! stage is given only the address of the one after it, and keeps every
//! handle (addresses, counters, worker threads) in one struct.

use std::sync::Arc;

use actix::Recipient;
use serde::Serialize;

use super::aligner::{Aligner, JobOutput};
use super::decoder::Decoder;
use super::diarizer::Diarizer;
use super::preprocessor::Preprocessor;
use super::stage::{spawn_stage, CountersSnapshot, StageCounters, StageHandle};
use super::transcriber::Transcriber;
use super::{JobEvent, JobMsg};
use crate::align::AlignOptions;
use crate::config::Config;
use crate::diarize::{DiarizationEngine, DiarizeError};
use crate::runtime::DeviceUsed;
use crate::vad::{SileroVad, VadError};
use crate::whisper::{WhisperEngine, WhisperError};

/// The models, loaded before anything starts (so that a missing model stops
/// the program at once, naming `make setup`): one engine per worker thread.
pub struct Engines {
    pub whisper: Vec<WhisperEngine>,
    pub diarization: Vec<DiarizationEngine>,
    /// One speech detector per preprocessor worker; empty when `vad.enabled` is off.
    pub vad: Vec<SileroVad>,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineLoadError {
    #[error(transparent)]
    Whisper(#[from] WhisperError),
    #[error(transparent)]
    Diarization(#[from] DiarizeError),
    #[error(transparent)]
    Vad(#[from] VadError),
}

impl Engines {
    pub fn load(config: &Config) -> Result<Engines, EngineLoadError> {
        let p = &config.pipeline;
        let whisper = (0..p.transcriber.threads).map(|_| WhisperEngine::load(config)).collect::<Result<_, _>>()?;
        let diarization =
            (0..p.diarizer.threads).map(|_| DiarizationEngine::load(config)).collect::<Result<_, _>>()?;
        let vad = if config.vad.enabled {
            (0..p.preprocessor.threads).map(|_| SileroVad::load(config)).collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Engines { whisper, diarization, vad })
    }

    /// The devices the models really run on (after any CUDA -> CPU fallback).
    pub fn devices(&self) -> Devices {
        Devices {
            transcriber: self.whisper.first().map(|e| e.device()).unwrap_or(DeviceUsed::Cpu),
            diarizer: self.diarization.first().map(|e| e.device).unwrap_or(DeviceUsed::Cpu),
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Devices {
    pub transcriber: DeviceUsed,
    pub diarizer: DeviceUsed,
}

/// Every stage's handles.
pub struct Pipeline {
    pub decoder: StageHandle<Decoder>,
    pub preprocessor: StageHandle<Preprocessor>,
    pub transcriber: StageHandle<Transcriber>,
    pub diarizer: StageHandle<Diarizer>,
    pub aligner: StageHandle<Aligner>,
    pub devices: Devices,
}

/// Counters of every stage, in pipeline order, shareable with the HTTP layer.
#[derive(Clone)]
pub struct PipelineCounters(pub Vec<(&'static str, Arc<StageCounters>)>);

impl PipelineCounters {
    pub fn snapshot(&self) -> Vec<(&'static str, CountersSnapshot)> {
        self.0.iter().map(|(n, c)| (*n, c.snapshot())).collect()
    }
}

impl Pipeline {
    /// Starts the stages inside the running actix system. `sink` receives
    /// finished jobs and `reporter` progress and failures (both: the registry).
    pub fn spawn(
        config: &Config,
        engines: Engines,
        sink: Recipient<JobMsg<JobOutput>>,
        reporter: Recipient<JobEvent>,
    ) -> Pipeline {
        let p = &config.pipeline;
        let devices = engines.devices();
        let aligner = spawn_stage(
            (0..p.aligner.threads).map(|_| Aligner::new(AlignOptions::default())).collect(),
            p.aligner.mailbox,
            sink,
            reporter.clone(),
        );
        let diarizer = spawn_stage(
            engines.diarization.into_iter().map(Diarizer::new).collect(),
            p.diarizer.mailbox,
            aligner.recipient(),
            reporter.clone(),
        );
        let transcriber = spawn_stage(
            engines.whisper.into_iter().map(Transcriber::new).collect(),
            p.transcriber.mailbox,
            diarizer.recipient(),
            reporter.clone(),
        );
        let preprocessor = spawn_stage(
            {
                let mut vads = engines.vad.into_iter();
                (0..p.preprocessor.threads)
                    .map(|_| {
                        let pre = Preprocessor::new(p);
                        match vads.next() {
                            Some(v) => pre.with_speech_detector(Box::new(v), config.vad.threshold),
                            None => pre,
                        }
                    })
                    .collect()
            },
            p.preprocessor.mailbox,
            transcriber.recipient(),
            reporter.clone(),
        );
        let decoder = spawn_stage(
            (0..p.decoder.threads).map(|_| Decoder::new(reporter.clone())).collect(),
            p.decoder.mailbox,
            preprocessor.recipient(),
            reporter,
        );
        Pipeline { decoder, preprocessor, transcriber, diarizer, aligner, devices }
    }

    /// Where jobs enter.
    pub fn entry(&self) -> Recipient<JobMsg<()>> {
        self.decoder.recipient()
    }

    pub fn counters(&self) -> PipelineCounters {
        PipelineCounters(vec![
            ("decoding", self.decoder.counters.clone()),
            ("preprocessing", self.preprocessor.counters.clone()),
            ("transcription", self.transcriber.counters.clone()),
            ("diarization", self.diarizer.counters.clone()),
            ("alignment", self.aligner.counters.clone()),
        ])
    }
}
