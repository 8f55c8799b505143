//! Aligner: the last stage.
//!
//! The role of the aligner is to put speakers on the text and assemble the
//! job's result. This includes the following steps:
//! - giving each word the speaker whose turn covers it, refining turn edges
//!   with the words and cutting the transcript into one utterance per change
//!   of speaker (`crate::align`);
//! - building speaker turns;
//! - naming the speakers the speaker library knows (`crate::speakers`:
//!   each speaker's voice print against the uploader's library);
//! - assembling the job's [`JobResult`] (segments, aligned_segments,
//!   full_text, language, duration, speaker_turns, provider), with
//!   timestamps shifted back by any trimmed leading silence.
//!
//! Its output goes to the job registry, which stores it and ends the job.

use super::diarizer::Diarized;
use super::fork::Joined;
use super::stage::{JobError, StageWork};
use super::JobCtx;
use crate::align::{align, count_speakers, speaker_turns, AlignOptions, TextSegment};
use crate::diarize::engine::Voice;
use crate::result::{JobResult, Provider};
use crate::speakers::SpeakerLibrary;

/// The speaker library and how alike a voice must be to take a known name.
#[derive(Clone)]
pub struct Known {
    pub library: SpeakerLibrary,
    pub threshold: f32,
}

pub struct Aligner {
    opts: AlignOptions,
    known: Option<Known>,
}

impl Aligner {
    pub fn new(opts: AlignOptions, known: Option<Known>) -> Aligner {
        Aligner { opts, known }
    }
}

/// A finished job's result (without `performance_metrics`, which the
/// registry completes), and its speakers' voice prints (kept apart from
/// the result, for enrolling them later).
#[derive(Debug, Clone)]
pub struct JobOutput {
    pub result: JobResult,
    pub voices: Vec<Voice>,
}

impl StageWork for Aligner {
    type In = Joined;
    type Out = JobOutput;
    const NAME: &'static str = "alignment";
    const PROGRESS: (u8, &'static str) = (75, "Aligning speakers");

    fn process(&mut self, ctx: &mut JobCtx, input: Joined) -> Result<JobOutput, JobError> {
        let Joined {
            transcribed,
            diarized:
                Diarized {
                    diarization,
                    device: diarizer_device,
                },
        } = input;
        let offset = transcribed.offset;
        let shift = |t: f64| crate::audio::round_ms(t + offset);
        let segments: Vec<TextSegment> = transcribed
            .transcript
            .segments
            .iter()
            .map(|s| TextSegment {
                start: shift(s.start),
                end: shift(s.end),
                text: s.text.clone(),
                words: s
                    .words
                    .iter()
                    .map(|w| crate::whisper::Word {
                        start: shift(w.start),
                        end: shift(w.end),
                        ..w.clone()
                    })
                    .collect(),
                decoding: Some(crate::align::Decoding {
                    tokens: s.tokens.clone(),
                    temperature: s.temperature,
                    avg_logprob: s.avg_logprob,
                    compression_ratio: s.compression_ratio,
                    no_speech_prob: s.no_speech_prob,
                }),
            })
            .collect();
        let mut turns = diarization.turns;
        for t in &mut turns {
            t.start += offset;
            t.end += offset;
        }
        let mut activity = diarization.activity;
        activity.shift(offset);
        let alignment = align(&segments, &turns, Some(&activity), self.opts);
        let speaker_turns = speaker_turns(&turns, self.opts.merge_gap);
        let mut result = JobResult {
            segments: alignment.segments,
            aligned_segments: alignment.aligned,
            full_text: transcribed.transcript.full_text(),
            language: transcribed.transcript.language.clone(),
            duration: transcribed.duration,
            num_speakers: count_speakers(&turns),
            speaker_turns,
            provider: Provider {
                runtime: "onnxruntime".into(),
                device: if transcribed.device == diarizer_device {
                    transcribed.device.to_string()
                } else {
                    "mixed".into()
                },
                transcriber_device: transcribed.device,
                diarizer_device,
                whisper_model: transcribed.model.clone(),
            },
            diarization_metrics: diarization.timings,
            performance_metrics: None,
            known_speakers: vec![],
        };
        if let Some(known) = &self.known {
            let only = ctx.options.known_speakers.as_deref();
            let found = known.library.recognise(
                ctx.owner.as_deref(),
                &diarization.voices,
                only,
                known.threshold,
            )?;
            for r in &found {
                tracing::info!(label = %r.label, speaker_id = %r.speaker_id, confidence = r.confidence, "known speaker");
                result.name_speaker(&r.label, &r.speaker_id, &r.name, r.confidence);
            }
        }
        Ok(JobOutput {
            result,
            voices: diarization.voices,
        })
    }
}
