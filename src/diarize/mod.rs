//! Speaker diarization (who spoke when): plain synchronous code, no actors.
//! `DiarizationEngine::diarize` takes 16 kHz mono samples and returns
//! speaker turns; RTTM/UEM files and the DER scorer are here too.

pub mod cluster;
pub mod der;
pub mod embedder;
pub mod engine;
pub mod fbank;
pub mod powerset;
pub mod reconstruct;
pub mod rttm;

pub use cluster::SpeakerBounds;
pub use embedder::{SpanEmbedder, VoiceEmbedder};
pub use engine::{Diarization, DiarizationEngine, DiarizeError, SpeakerDiarizer};
