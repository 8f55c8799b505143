//! Decoder: the first stage.
//!
//! The role of the decoder is to turn the uploaded file into 16 kHz mono
//! samples. This includes the following steps:
//! - probing the container and codec with symphonia (wav, flac, mp3,
//!   m4a/aac, ogg/vorbis, mkv/webm, aiff, caf: whatever symphonia reads;
//!   Opus through libopus),
//!   reading packets from disk as it goes;
//! - down-mixing any channel count to mono and resampling to 16 kHz packet
//!   by packet (rubato), so memory follows the 16 kHz audio, not the source;
//! - failing the job with a clear message on corrupt or non-audio input,
//!   or on a recording longer than `pipeline.max_audio_seconds` (measured
//!   from its packets before decoding; the registry then removes its files);
//! - telling the registry the recording's duration.

use actix::Recipient;

use super::stage::{JobError, StageWork};
use super::{JobCtx, JobEvent};
use crate::audio::{load_16k_pcm16, DecodeLimits, MonoAudio, Pcm16};

pub struct Decoder {
    reporter: Recipient<JobEvent>,
    /// `pipeline.max_audio_seconds`: a longer recording fails before it is decoded.
    limits: DecodeLimits,
}

impl Decoder {
    pub fn new(reporter: Recipient<JobEvent>, limits: DecodeLimits) -> Decoder {
        Decoder { reporter, limits }
    }
}

impl StageWork for Decoder {
    type In = ();
    type Out = MonoAudio<Pcm16>;
    const NAME: &'static str = "decoding";
    const PROGRESS: (u8, &'static str) = (0, "Decoding audio");

    fn process(&mut self, ctx: &mut JobCtx, _: ()) -> Result<MonoAudio<Pcm16>, JobError> {
        // the user's file (unsupported, corrupt, too long) or our failure
        let audio = load_16k_pcm16(&ctx.audio_path, self.limits).map_err(|e| {
            if e.is_bad_input() {
                JobError::input(e.to_string())
            } else {
                JobError::internal(e.to_string())
            }
        })?;
        if audio.samples.is_empty() || audio.sample_rate == 0 {
            return Err(JobError::input("the file contains no audio samples"));
        }
        let seconds = audio.duration();
        tracing::info!(
            seconds,
            rate = audio.sample_rate,
            channels = audio.channels,
            "decoded"
        );
        // a small message; the registry answers at once
        let _ = futures::executor::block_on(self.reporter.send(JobEvent::Duration {
            id: ctx.id,
            seconds,
        }));
        Ok(audio)
    }
}
