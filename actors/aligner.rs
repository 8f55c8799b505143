//! Aligner: the last stage.
//!
//! The role of the aligner is to put speakers on the text and assemble the
//! job's result. This includes the following steps:
//! - giving each word the speaker whose turn covers it, refining turn edges
//!   with the words, checking a change of speaker left inside a sentence
//!   against the two speakers' voices (this worker's own voice embedder, on
//!   the job's audio) and cutting the transcript into one utterance per
//!   change of speaker (`crate::align`);
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
use crate::align::{
    align_with, count_speakers, speaker_turns, AlignOptions, TextSegment, VoiceCheck,
};
use crate::diarize::engine::Voice;
use crate::diarize::SpanEmbedder;
use crate::result::{JobResult, Provider};
use crate::speakers::{recognise_among, Print, PrintSource, Speaker, SpeakerLibrary};

/// A job's named reference clips as speakers to match (ids `ref_0`, `ref_1`,
/// ... in the order given; never stored).
fn reference_speakers(references: Vec<(String, Vec<f32>)>) -> Vec<Speaker> {
    let now = chrono::Utc::now();
    references
        .into_iter()
        .enumerate()
        .map(|(i, (name, embedding))| Speaker {
            id: format!("ref_{i}"),
            name,
            owner: None,
            prints: vec![Print {
                embedding,
                source: PrintSource::Clip {
                    filename: format!("known_speaker_references[{i}]"),
                    seconds: 0.0,
                },
                added_at: now,
            }],
            created_at: now,
            updated_at: now,
        })
        .collect()
}

pub struct Aligner {
    opts: AlignOptions,
    /// The speaker library, when there is one (the server's; none in the CLI).
    library: Option<SpeakerLibrary>,
    /// How alike a voice must be to take a known name (`speakers.match_threshold`).
    threshold: f32,
    /// Embeds stretches of a job's audio for the voice check; None: no check.
    embedder: Option<Box<dyn SpanEmbedder>>,
}

impl Aligner {
    pub fn new(opts: AlignOptions, library: Option<SpeakerLibrary>, threshold: f32) -> Aligner {
        Aligner {
            opts,
            library,
            threshold,
            embedder: None,
        }
    }

    /// Checks changes of speaker inside a sentence against the voices with `embedder`.
    pub fn with_voice_check(mut self, embedder: Option<Box<dyn SpanEmbedder>>) -> Aligner {
        self.embedder = embedder;
        self
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
                    references,
                    samples,
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
        // the voice check embeds stretches of the (trimmed) audio the
        // diarizer saw: times go back by the trimmed offset
        let mut failed = None;
        let mut embed = self.embedder.as_mut().map(|embedder| {
            |spans: &[(f64, f64)]| -> Vec<Option<Vec<f32>>> {
                let unshifted: Vec<(f64, f64)> = spans
                    .iter()
                    .map(|&(a, b)| (a - offset, b - offset))
                    .collect();
                embedder
                    .embed_spans(samples.view(), &unshifted)
                    .unwrap_or_else(|e| {
                        failed = Some(e);
                        vec![None; spans.len()]
                    })
            }
        });
        let check = embed.as_mut().map(|embed| VoiceCheck {
            voices: &diarization.voices,
            embed,
        });
        let alignment = align_with(&segments, &turns, Some(&activity), self.opts, check);
        if let Some(e) = failed {
            // the check only refines: the job keeps the alignment without it
            tracing::warn!(error = %e, "voice check skipped: the embedder failed");
        }
        drop(samples);
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
        let found = if !references.is_empty() {
            // voices named for this job alone: looked for instead of the library
            let people = reference_speakers(references);
            recognise_among(&diarization.voices, &people, self.threshold)
        } else if let Some(library) = &self.library {
            let only = ctx.options.known_speakers.as_deref();
            library.recognise(
                ctx.owner.as_deref(),
                &diarization.voices,
                only,
                self.threshold,
            )?
        } else {
            vec![]
        };
        for r in &found {
            tracing::info!(label = %r.label, speaker_id = %r.speaker_id, confidence = r.confidence, "known speaker");
            result.name_speaker(&r.label, &r.speaker_id, &r.name, r.confidence);
        }
        Ok(JobOutput {
            result,
            voices: diarization.voices,
        })
    }
}
