//! Diarizer: the other branch of the fork after the preprocessor.
//!
//! The role of the diarizer is to find who spoke when, while the
//! transcriber writes down what was said. This includes the following steps:
//! - running the diarizer (`DiarizationEngine::diarize_until` in service:
//!   segmentation-3.0 windows, CAM++ embeddings, clustering) on this
//!   worker's own engine, with the job's speaker-count hints
//!   (`num_speakers`, `min_speakers`, `max_speakers`), stopping between
//!   batches when the job is cancelled;
//! - making a voice print of each reference clip named for the job (the
//!   OpenAI route's `known_speaker_references[]`, stored beside the audio):
//!   the clip diarized as one speaker, like a clip enrolled in the library;
//! - passing on the turns, the frame-level activity and the prints, and the
//!   shared audio for the aligner's voice check;
//! - lending its core while it has no job (`pipeline.lend_idle_cores`),
//!   for the transcriber's extra worker when jobs wait for transcription.

use std::sync::Arc;

use super::preprocessor::Audio16k;
use super::stage::{JobError, StageWork};
use super::JobCtx;
use crate::audio::{load_16k_mono, DecodeLimits, Pcm16};
use crate::cores::SpareCores;
use crate::diarize::{Diarization, SpeakerBounds, SpeakerDiarizer};
use crate::runtime::DeviceUsed;
use crate::speakers::CLIP_SECONDS;

pub struct Diarizer {
    engine: Box<dyn SpeakerDiarizer>,
    /// Where the worker lends its core while it has no job.
    spare: Option<Arc<SpareCores>>,
}

impl Diarizer {
    pub fn new(engine: Box<dyn SpeakerDiarizer>) -> Diarizer {
        Diarizer {
            engine,
            spare: None,
        }
    }

    /// Lends the worker's core in `spare` while it waits for a job (the
    /// transcriber's extra worker borrows it: `crate::cores::CorePools`).
    pub fn lending_idle_core(mut self, spare: Option<Arc<SpareCores>>) -> Diarizer {
        self.spare = spare;
        self
    }
}

/// Who spoke when, and where it was computed.
#[derive(Debug, Clone)]
pub struct Diarized {
    pub diarization: Diarization,
    pub device: DeviceUsed,
    /// The job's named reference clips' voice prints (name, unit embedding).
    pub references: Vec<(String, Vec<f32>)>,
    /// The job's audio (shared with the transcriber, not copied), for the
    /// aligner's voice check.
    pub samples: std::sync::Arc<Pcm16>,
}

impl Diarizer {
    /// The voice print of each of the job's reference clips.
    fn reference_prints(&mut self, ctx: &JobCtx) -> Result<Vec<(String, Vec<f32>)>, JobError> {
        let mut out = Vec::new();
        for r in &ctx.options.references {
            let path = ctx.audio_path.with_file_name(&r.file);
            let limits = DecodeLimits::max_seconds(CLIP_SECONDS.1.ceil() as u64);
            let clip = load_16k_mono(&path, limits).map_err(|e| {
                let m = format!("the reference clip for '{}': {e}", r.name);
                if e.is_bad_input() {
                    JobError::input(m)
                } else {
                    JobError::internal(m)
                }
            })?;
            let one = SpeakerBounds {
                num_speakers: Some(1),
                ..Default::default()
            };
            let d =
                self.engine
                    .diarize_until((&clip.samples).into(), one, Some(ctx.cancel.flag()))?;
            let voice = d.voices.into_iter().next().ok_or_else(|| {
                JobError::input(format!(
                    "no voice was found in the reference clip for '{}'",
                    r.name
                ))
            })?;
            out.push((r.name.clone(), voice.embedding));
        }
        Ok(out)
    }
}

impl StageWork for Diarizer {
    type In = Audio16k;
    type Out = Diarized;
    const NAME: &'static str = "diarization";
    const PROGRESS: (u8, &'static str) = (25, "Analyzing speakers");
    const KEEPS_FREED_PAGES: bool = true;

    fn lends_its_core(&self) -> Option<Arc<SpareCores>> {
        self.spare.clone()
    }

    fn process(&mut self, ctx: &mut JobCtx, audio: Audio16k) -> Result<Diarized, JobError> {
        let o = &ctx.options;
        let bounds = SpeakerBounds {
            num_speakers: o.num_speakers,
            min_speakers: o.min_speakers,
            max_speakers: o.max_speakers,
        };
        let diarization =
            self.engine
                .diarize_until(audio.samples.view(), bounds, Some(ctx.cancel.flag()))?;
        tracing::info!(
            speakers = diarization.num_speakers,
            turns = diarization.turns.len(),
            "diarized"
        );
        let references = self.reference_prints(ctx)?;
        Ok(Diarized {
            diarization,
            device: self.engine.device(),
            references,
            samples: audio.samples,
        })
    }
}
