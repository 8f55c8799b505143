//! Diarizer: the fourth stage.
//!
//! The role of the diarizer is to find who spoke when. This includes the
//! following steps:
//! - running `DiarizationEngine::diarize` (segmentation-3.0 windows, CAM++
//!   embeddings, clustering) on this worker's own engine, with the job's
//!   speaker-count hints (`num_speakers`, `min_speakers`, `max_speakers`),
//!   stopping between batches when the job is cancelled;
//! - dropping the audio: only the transcript and the turns go on.

use super::stage::{JobError, StageWork};
use super::transcriber::Transcribed;
use super::JobCtx;
use crate::diarize::{Diarization, DiarizationEngine, SpeakerBounds};
use crate::runtime::DeviceUsed;

pub struct Diarizer {
    engine: DiarizationEngine,
}

impl Diarizer {
    pub fn new(engine: DiarizationEngine) -> Diarizer {
        Diarizer { engine }
    }
}

/// Everything the aligner needs.
#[derive(Debug, Clone)]
pub struct Diarized {
    pub transcribed: Transcribed,
    pub diarization: Diarization,
    pub device: DeviceUsed,
}

impl StageWork for Diarizer {
    type In = Transcribed;
    type Out = Diarized;
    const NAME: &'static str = "diarization";
    const PROGRESS: (u8, &'static str) = (50, "Analyzing speakers");

    fn process(&mut self, ctx: &mut JobCtx, mut input: Transcribed) -> Result<Diarized, JobError> {
        let o = &ctx.options;
        let bounds = SpeakerBounds { num_speakers: o.num_speakers, min_speakers: o.min_speakers, max_speakers: o.max_speakers };
        let diarization = self.engine.diarize_until(&input.audio.samples, bounds, Some(ctx.cancel.flag()))?;
        tracing::info!(speakers = diarization.num_speakers, turns = diarization.turns.len(), "diarized");
        input.audio.samples = Default::default();
        Ok(Diarized { transcribed: input, diarization, device: self.engine.device })
    }
}
