//! Transcriber: the third stage.
//!
//! The role of the transcriber is to turn the audio into timed text with
//! Whisper. This includes the following steps:
//! - running `WhisperEngine::transcribe` (log-mel features, encoder and
//!   greedy decoder on ONNX Runtime, on the configured device with CPU
//!   fallback) on this worker's own engine, loaded once at start, stopping
//!   between 30 s windows when the job is cancelled;
//! - passing the audio on with the transcript (the diarizer needs it).

use super::preprocessor::Audio16k;
use super::stage::{JobError, StageWork};
use super::JobCtx;
use crate::runtime::DeviceUsed;
use crate::whisper::{Transcript, WhisperEngine};

pub struct Transcriber {
    engine: WhisperEngine,
}

impl Transcriber {
    pub fn new(engine: WhisperEngine) -> Transcriber {
        Transcriber { engine }
    }
}

/// The audio and its transcript.
#[derive(Debug, Clone)]
pub struct Transcribed {
    pub audio: Audio16k,
    pub transcript: Transcript,
    pub model: String,
    pub device: DeviceUsed,
}

impl StageWork for Transcriber {
    type In = Audio16k;
    type Out = Transcribed;
    const NAME: &'static str = "transcription";
    const PROGRESS: (u8, &'static str) = (25, "Transcribing with Whisper");

    fn process(&mut self, ctx: &mut JobCtx, audio: Audio16k) -> Result<Transcribed, JobError> {
        let transcript = self.engine.transcribe_until(&audio.samples, audio.speech.as_ref(), Some(ctx.cancel.flag()))?;
        tracing::info!(segments = transcript.segments.len(), language = %transcript.language, "transcribed");
        Ok(Transcribed {
            audio,
            transcript,
            model: self.engine.model_name().to_string(),
            device: self.engine.device(),
        })
    }
}
