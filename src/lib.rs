//! Colloquy: speaker-attributed transcription on ONNX Runtime.
//!
//! Engines (`audio`, `whisper`) are plain synchronous code; the actor
//! pipeline, job registry and HTTP API build on them (see README.md).

pub mod audio;
pub mod config;
pub mod diarize;
pub mod runtime;
pub mod text;
pub mod whisper;
