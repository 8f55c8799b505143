//! A finished job's result, as types: built once by the aligner (the
//! transcript with its speakers), completed by the registry (the job's
//! timings), stored as `results/{id}.json` and served by
//! `GET /api/results/{id}`; every export format renders from it
//! ([`crate::export`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::align::{AlignedSegment, WordSegment};
use crate::diarize::engine::DiarizeTimings;
use crate::diarize::rttm::Turn;
use crate::runtime::DeviceUsed;

/// The body of `GET /api/results/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobResult {
    /// Whisper's segments, each word with its speaker.
    pub segments: Vec<WordSegment>,
    /// One speaker's utterance each, cut where the speaker changes.
    pub aligned_segments: Vec<AlignedSegment>,
    pub full_text: String,
    pub language: String,
    /// Seconds of audio.
    pub duration: f64,
    pub num_speakers: usize,
    /// Who spoke when (the diarization's turns, close ones merged).
    pub speaker_turns: Vec<Turn>,
    pub provider: Provider,
    #[serde(default)]
    pub diarization_metrics: DiarizeTimings,
    /// Set by the registry when it stores the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub performance_metrics: Option<PerformanceMetrics>,
}

/// What ran the job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Provider {
    pub runtime: String,
    /// `cpu`, `cuda`, or `mixed` when the engines ran on different devices.
    pub device: String,
    pub transcriber_device: DeviceUsed,
    pub diarizer_device: DeviceUsed,
    pub whisper_model: String,
}

/// How long the job took.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PerformanceMetrics {
    /// Seconds from admission to the stored result.
    pub total_duration: f64,
    /// Seconds of work per stage.
    pub stages: BTreeMap<String, f64>,
    /// Seconds the job waited in the queue before admission.
    pub queued_seconds: Option<f64>,
    /// Seconds of audio per second of processing.
    pub speed: f64,
}

/// A transcript segment as soon as its window is decoded, before the
/// speakers are known: provisional text for a live view (the job's events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PartialSegment {
    /// Arrival order within the job, from 1 (numbered by the registry).
    pub id: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
}

impl From<&crate::whisper::Segment> for PartialSegment {
    fn from(s: &crate::whisper::Segment) -> Self {
        PartialSegment {
            id: 0,
            start: s.start,
            end: s.end,
            text: s.text.trim().to_string(),
        }
    }
}
