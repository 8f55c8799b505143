//! Diarizer: the other branch of the fork after the preprocessor.
//!
//! The role of the diarizer is to find who spoke when, while the
//! transcriber writes down what was said. This includes the following steps:
//! - running the diarizer (`DiarizationEngine::diarize_until` in service:
//!   segmentation-3.0 windows, CAM++ embeddings, clustering) on this
//!   worker's own engine, with the job's speaker-count hints
//!   (`num_speakers`, `min_speakers`, `max_speakers`), stopping between
//!   batches when the job is cancelled;
//! - passing on the turns and the frame-level activity, not the audio.

use super::preprocessor::Audio16k;
use super::stage::{JobError, StageWork};
use super::JobCtx;
use crate::diarize::{Diarization, SpeakerBounds, SpeakerDiarizer};
use crate::runtime::DeviceUsed;

pub struct Diarizer {
    engine: Box<dyn SpeakerDiarizer>,
}

impl Diarizer {
    pub fn new(engine: Box<dyn SpeakerDiarizer>) -> Diarizer {
        Diarizer { engine }
    }
}

/// Who spoke when, and where it was computed.
#[derive(Debug, Clone)]
pub struct Diarized {
    pub diarization: Diarization,
    pub device: DeviceUsed,
}

impl StageWork for Diarizer {
    type In = Audio16k;
    type Out = Diarized;
    const NAME: &'static str = "diarization";
    const PROGRESS: (u8, &'static str) = (25, "Analyzing speakers");

    fn process(&mut self, ctx: &mut JobCtx, audio: Audio16k) -> Result<Diarized, JobError> {
        let o = &ctx.options;
        let bounds = SpeakerBounds {
            num_speakers: o.num_speakers,
            min_speakers: o.min_speakers,
            max_speakers: o.max_speakers,
        };
        let diarization =
            self.engine
                .diarize_until(&audio.samples, bounds, Some(ctx.cancel.flag()))?;
        tracing::info!(
            speakers = diarization.num_speakers,
            turns = diarization.turns.len(),
            "diarized"
        );
        Ok(Diarized {
            diarization,
            device: self.engine.device(),
        })
    }
}
