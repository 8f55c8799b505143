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
    /// The recording's speakers that carry a known speaker's name (the
    /// speaker library's), with the label the diarizer gave them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub known_speakers: Vec<KnownSpeaker>,
}

/// A speaker of the recording recognised as (or named) a known speaker:
/// every `speaker` field of the result that was `label` reads `name`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct KnownSpeaker {
    /// The diarizer's label (`SPEAKER_00`).
    pub label: String,
    /// The name shown in `speaker` everywhere in the result.
    pub speaker: String,
    /// The speaker library's id.
    pub speaker_id: String,
    /// The cosine that matched (1 when a user named this speaker).
    pub speaker_confidence: f32,
}

impl JobResult {
    /// Every `speaker` field (words, segments' words, utterances, turns)
    /// that reads `from` reads `to`.
    fn rename_everywhere(&mut self, from: &str, to: &str) {
        if from == to {
            return;
        }
        let fix = |s: &mut String| {
            if s == from {
                *s = to.to_string();
            }
        };
        for seg in &mut self.segments {
            seg.words.iter_mut().for_each(|w| fix(&mut w.speaker));
        }
        for u in &mut self.aligned_segments {
            fix(&mut u.speaker);
            u.words.iter_mut().for_each(|w| fix(&mut w.speaker));
        }
        self.speaker_turns
            .iter_mut()
            .for_each(|t| fix(&mut t.speaker));
    }

    /// What `label` is shown as now.
    fn shown(&self, label: &str) -> String {
        self.known_speakers
            .iter()
            .find(|k| k.label == label)
            .map_or_else(|| label.to_string(), |k| k.speaker.clone())
    }

    /// Puts a known speaker on `label` (replacing whoever was there, and
    /// taking the person off any other label of this recording). True when
    /// the result changed.
    pub fn name_speaker(
        &mut self,
        label: &str,
        speaker_id: &str,
        name: &str,
        confidence: f32,
    ) -> bool {
        let before = self.known_speakers.clone();
        // a person is one speaker of a recording
        if let Some(other) = self
            .known_speakers
            .iter()
            .find(|k| k.speaker_id == speaker_id && k.label != label)
            .map(|k| k.label.clone())
        {
            self.forget_label(&other);
        }
        let was = self.shown(label);
        self.known_speakers.retain(|k| k.label != label);
        self.known_speakers.push(KnownSpeaker {
            label: label.to_string(),
            speaker: name.to_string(),
            speaker_id: speaker_id.to_string(),
            speaker_confidence: confidence,
        });
        self.known_speakers.sort_by(|a, b| a.label.cmp(&b.label));
        self.rename_everywhere(&was, name);
        self.known_speakers != before
    }

    fn forget_label(&mut self, label: &str) {
        let was = self.shown(label);
        self.known_speakers.retain(|k| k.label != label);
        self.rename_everywhere(&was, label);
    }

    /// A known speaker was renamed, merged into another (`id` becomes
    /// `new_id`) or deleted (`change` None: the labels come back). True when
    /// the result changed.
    pub fn update_known(&mut self, id: &str, change: Option<(&str, &str)>) -> bool {
        let labels: Vec<String> = self
            .known_speakers
            .iter()
            .filter(|k| k.speaker_id == id)
            .map(|k| k.label.clone())
            .collect();
        for label in &labels {
            match change {
                Some((new_id, name)) => {
                    let confidence = self
                        .known_speakers
                        .iter()
                        .find(|k| &k.label == label)
                        .map_or(1.0, |k| k.speaker_confidence);
                    self.name_speaker(label, new_id, name, confidence);
                }
                None => self.forget_label(label),
            }
        }
        !labels.is_empty()
    }
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
