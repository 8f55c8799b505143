//! Wiring: builds the stages from the last back to the first, so that each
//! stage is given only the address of the one after it, and keeps every
//! handle (addresses, counters, worker threads) in one struct.

use std::sync::Arc;

use actix::{Actor, Addr, Recipient};
use serde::Serialize;

use super::aligner::{Aligner, JobOutput};
use super::decoder::Decoder;
use super::diarizer::Diarizer;
use super::fork::{Fork, Join};
use super::preprocessor::Preprocessor;
use super::stage::{
    spawn_stage, spawn_stage_with, Borrower, CountersSnapshot, StageCounters, StageHandle,
};
use super::transcriber::Transcriber;
use super::{JobEvent, JobMsg};
use crate::align::AlignOptions;
use crate::audio::DecodeLimits;
use crate::config::Config;
use crate::cores::CorePools;
use crate::diarize::{
    engine::model_dir, DiarizationEngine, DiarizeError, SpanEmbedder, SpeakerDiarizer,
    VoiceEmbedder,
};
use crate::runtime::DeviceUsed;
use crate::vad::{SileroVad, SpeechDetector, VadError};
use crate::whisper::{ModelLoader, SpeechToText, WhisperEngine, WhisperError};

/// The models, loaded before anything starts (so that a missing model stops
/// the program at once, naming `make setup`): one engine per worker thread.
/// Behind traits, so that the pipeline's tests run on fakes.
pub struct Engines {
    pub whisper: Vec<Box<dyn SpeechToText>>,
    /// Loads another installed Whisper model for a job that names one (each
    /// transcriber worker keeps the last one it loaded); None: only the
    /// served model.
    pub whisper_loader: Option<ModelLoader>,
    pub diarization: Vec<Box<dyn SpeakerDiarizer>>,
    /// One speech detector per transcriber worker, and one more for the
    /// extra worker when cores are lent; empty when `vad.enabled` is off.
    pub vad: Vec<Box<dyn SpeechDetector + Send>>,
    /// One voice embedder per aligner worker (the voice check of changes of
    /// speaker inside a sentence); empty when `diarization.voice_check` is off.
    pub voices: Vec<Box<dyn SpanEmbedder>>,
    /// Where the transcriber's and the diarizer's workers lend their cores
    /// while idle (`pipeline.lend_idle_cores`): the diarization engines
    /// borrow the first, and the transcriber's extra worker the second.
    pub spare_cores: Option<CorePools>,
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

/// How the machine's cores are shared between the engines: ONNX Runtime's
/// intra-op threads for each engine's sessions.
///
/// Transcription and diarization run side by side, each stage on its own
/// worker threads, so the engines that can be busy at once are every
/// transcriber and every diarizer worker; with `runtime.intra_threads = 0`
/// (the default) the cores are split evenly between them (at least one
/// thread each), so that they do not fight over cores: one upload keeps
/// every core busy, many uploads do not oversubscribe them. A value above 0
/// is used for every engine as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ThreadBudget {
    pub cores: usize,
    /// Intra-op threads of each Whisper engine.
    pub whisper: usize,
    /// Intra-op threads of each diarization engine.
    pub diarization: usize,
    /// Intra-op threads of each aligner's voice embedder: the aligner runs
    /// after both branches are done with a job, so its short bursts of
    /// embeddings get the cores split between the aligner's workers only.
    pub voice_check: usize,
}

impl ThreadBudget {
    /// The budget for `config` on a machine with `cores` cores.
    pub fn plan(config: &Config, cores: usize) -> ThreadBudget {
        let fixed = config.runtime.intra_threads;
        if fixed > 0 {
            return ThreadBudget {
                cores,
                whisper: fixed,
                diarization: fixed,
                voice_check: fixed,
            };
        }
        let p = &config.pipeline;
        let engines = p.transcriber.threads + p.diarizer.threads;
        let each = (cores / engines).max(1);
        // cores left over by the even split go to Whisper (its decoder is the longer branch)
        let spare = cores.saturating_sub(each * engines) / p.transcriber.threads;
        ThreadBudget {
            cores,
            whisper: each + spare,
            diarization: each,
            voice_check: (cores / p.aligner.threads.max(1)).max(1),
        }
    }

    /// The budget on this machine.
    pub fn here(config: &Config) -> ThreadBudget {
        ThreadBudget::plan(
            config,
            std::thread::available_parallelism().map_or(1, |n| n.get()),
        )
    }
}

/// `config` with `threads` intra-op threads per session.
fn with_intra_threads(config: &Config, threads: usize) -> Config {
    let mut c = config.clone();
    c.runtime.intra_threads = threads;
    c
}

impl Engines {
    pub fn load(config: &Config) -> Result<Engines, EngineLoadError> {
        let p = &config.pipeline;
        let budget = ThreadBudget::here(config);
        tracing::info!(
            cores = budget.cores,
            whisper = budget.whisper,
            diarization = budget.diarization,
            voice_check = budget.voice_check,
            "intra-op threads per engine"
        );
        let (wcfg, dcfg) = (
            with_intra_threads(config, budget.whisper),
            with_intra_threads(config, budget.diarization),
        );
        let whisper = (0..p.transcriber.threads)
            .map(|_| WhisperEngine::load(&wcfg).map(|e| Box::new(e) as Box<dyn SpeechToText>))
            .collect::<Result<_, _>>()?;
        let base = wcfg.clone();
        let whisper_loader: ModelLoader = std::sync::Arc::new(move |name: &str| {
            let mut c = base.clone();
            c.whisper.model = name.to_string();
            WhisperEngine::load(&c).map(|e| Box::new(e) as Box<dyn SpeechToText>)
        });
        let spare_cores = p.lend_idle_cores.then(CorePools::default);
        let diarization = (0..p.diarizer.threads)
            .map(|_| {
                let engine = DiarizationEngine::load(&dcfg)?;
                let engine = match &spare_cores {
                    Some(pools) => {
                        engine.borrowing_idle_cores(&dcfg, pools.from_transcription.clone())?
                    }
                    None => engine,
                };
                Ok::<_, EngineLoadError>(Box::new(engine) as Box<dyn SpeakerDiarizer>)
            })
            .collect::<Result<_, _>>()?;
        let vad = if config.vad.enabled {
            let extra = usize::from(spare_cores.is_some());
            (0..p.transcriber.threads + extra)
                .map(|_| {
                    SileroVad::load(config).map(|v| Box::new(v) as Box<dyn SpeechDetector + Send>)
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        let voices = if config.diarization.voice_check {
            let vcfg = with_intra_threads(config, budget.voice_check);
            let dir = model_dir(&config.models_root());
            (0..p.aligner.threads)
                .map(|_| {
                    VoiceEmbedder::load(&vcfg, &dir).map(|e| Box::new(e) as Box<dyn SpanEmbedder>)
                })
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Engines {
            whisper_loader: Some(whisper_loader),
            whisper,
            diarization,
            vad,
            voices,
            spare_cores,
        })
    }

    /// The devices the models really run on (after any CUDA -> CPU fallback).
    pub fn devices(&self) -> Devices {
        Devices {
            transcriber: self
                .whisper
                .first()
                .map(|e| e.device())
                .unwrap_or(DeviceUsed::Cpu),
            diarizer: self
                .diarization
                .first()
                .map(|e| e.device())
                .unwrap_or(DeviceUsed::Cpu),
        }
    }
}

/// The device each engine really runs on (`/health`'s `device`).
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Devices {
    pub transcriber: DeviceUsed,
    pub diarizer: DeviceUsed,
}

/// Every stage's handles.
pub struct Pipeline {
    pub decoder: StageHandle<Decoder>,
    pub preprocessor: StageHandle<Preprocessor>,
    pub fork: Addr<Fork>,
    pub transcriber: StageHandle<Transcriber>,
    pub diarizer: StageHandle<Diarizer>,
    pub join: Addr<Join>,
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
        library: Option<crate::speakers::SpeakerLibrary>,
    ) -> Pipeline {
        let p = &config.pipeline;
        let devices = engines.devices();
        let aligner = spawn_stage(
            {
                let mut voices = engines.voices.into_iter();
                (0..p.aligner.threads)
                    .map(|_| {
                        Aligner::new(
                            AlignOptions::default(),
                            library.clone(),
                            config.speakers.match_threshold,
                        )
                        .with_voice_check(voices.next())
                    })
                    .collect()
            },
            p.aligner.mailbox,
            sink,
            reporter.clone(),
        );
        // the branches report to the join, which tells the registry
        let join = Join::new(aligner.recipient(), reporter.clone()).start();
        let pools = engines.spare_cores.as_ref();
        let diarizer = spawn_stage(
            engines
                .diarization
                .into_iter()
                .map(|e| {
                    Diarizer::new(e).lending_idle_core(pools.map(|p| p.from_diarization.clone()))
                })
                .collect(),
            p.diarizer.mailbox,
            join.clone().recipient(),
            join.clone().recipient(),
        );
        let mut vads = engines.vad.into_iter();
        let transcribers = engines
            .whisper
            .into_iter()
            .map(|e| {
                Transcriber::new(e)
                    .with_loader(engines.whisper_loader.clone())
                    .lending_idle_core(pools.map(|p| p.from_transcription.clone()))
                    .with_speech_detector(vads.next(), config.vad.threshold)
            })
            .collect();
        // jobs waiting for the transcriber while the diarizer has none: an
        // extra transcriber worker on the diarizer's core, its model loaded
        // on its first job
        let extra = pools
            .zip(engines.whisper_loader.clone())
            .map(|(pools, loader)| Borrower {
                work: Transcriber::loading_on_first_job(loader.clone(), &config.whisper.model)
                    .with_loader(Some(loader))
                    .with_speech_detector(vads.next(), config.vad.threshold),
                cores: pools.from_diarization.clone(),
            });
        let transcriber = spawn_stage_with(
            transcribers,
            extra,
            p.transcriber.mailbox,
            join.clone().recipient(),
            join.clone().recipient(),
        );
        let fork = Fork::new(transcriber.recipient(), diarizer.recipient(), join.clone()).start();
        let preprocessor = spawn_stage(
            (0..p.preprocessor.threads)
                .map(|_| Preprocessor::new(p))
                .collect(),
            p.preprocessor.mailbox,
            fork.clone().recipient(),
            reporter.clone(),
        );
        let decoder = spawn_stage(
            (0..p.decoder.threads)
                .map(|_| {
                    Decoder::new(
                        reporter.clone(),
                        DecodeLimits::max_seconds(p.max_audio_seconds),
                    )
                })
                .collect(),
            p.decoder.mailbox,
            preprocessor.recipient(),
            reporter,
        );
        Pipeline {
            decoder,
            preprocessor,
            fork,
            transcriber,
            diarizer,
            join,
            aligner,
            devices,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(intra: usize, transcribers: usize, diarizers: usize) -> Config {
        let mut c = Config::load_with_env(None, Vec::<(String, String)>::new()).unwrap();
        c.runtime.intra_threads = intra;
        c.pipeline.transcriber.threads = transcribers;
        c.pipeline.diarizer.threads = diarizers;
        c
    }

    #[test]
    fn the_cores_are_split_between_the_engines_that_run_at_once() {
        let b = |intra, t, d, cores| {
            let p = ThreadBudget::plan(&config(intra, t, d), cores);
            (p.whisper, p.diarization)
        };
        // one transcriber beside one diarizer: half the cores each
        assert_eq!(b(0, 1, 1, 2), (1, 1));
        assert_eq!(b(0, 1, 1, 16), (8, 8));
        // an odd core goes to Whisper
        assert_eq!(b(0, 1, 1, 3), (2, 1));
        // more workers than cores: one thread each, never zero
        assert_eq!(b(0, 2, 2, 2), (1, 1));
        assert_eq!(b(0, 2, 1, 12), (4, 4));
        // an explicit setting wins
        assert_eq!(b(3, 1, 1, 2), (3, 3));
    }

    #[test]
    fn the_aligners_voice_check_gets_the_cores_the_branches_left() {
        let v = |intra, aligners, cores| {
            let mut c = config(intra, 1, 1);
            c.pipeline.aligner.threads = aligners;
            ThreadBudget::plan(&c, cores).voice_check
        };
        assert_eq!(v(0, 1, 2), 2);
        assert_eq!(v(0, 2, 8), 4);
        assert_eq!(v(0, 4, 2), 1);
        assert_eq!(v(3, 1, 2), 3);
    }
}
