//! Colloquy: speaker-attributed transcription on ONNX Runtime.
//!
//! Engines (`audio`, `whisper`, `diarize`, `vad`, `align`) are plain synchronous
//! code; the actor pipeline (`actors/`, one file per stage), the job
//! registry and the HTTP API build on them (see README.md).

#[path = "../actors/mod.rs"]
pub mod actors;
pub mod align;
pub mod alloc;
pub mod api;
pub mod audio;
pub mod auth;
pub mod callback;
pub mod config;
pub mod cores;
pub mod diarize;
pub mod eval;
pub mod export;
pub mod jobs;
pub mod local;
pub mod metrics;
pub mod models;
pub mod registry;
pub mod result;
pub mod runtime;
pub mod speakers;
pub mod store;
pub mod text;
pub mod vad;
pub mod whisper;
pub mod worker;
