//! Long audio: 30 s windows placed by the last timestamp the model emitted
//! (faster-whisper's sequential seek loop), each decoded with fallback, cut
//! into segments at timestamp tokens.

use std::time::Instant;

use serde::Serialize;

use super::decode::{decode_with_fallback, DecodeOptions};
use super::mel::{LogMel, HOP, N_FRAMES, SAMPLE_RATE};
use super::model::{ModelError, WhisperOnnx};
use super::timing::{self, Word};
use super::tokenizer::{WhisperTokenizer, TIME_PRECISION};

/// Mel frames per output position of the encoder (conv stride 2).
const INPUT_STRIDE: usize = 2;
const SECONDS_PER_FRAME: f64 = HOP as f64 / SAMPLE_RATE as f64;

/// One transcribed segment, times in seconds from the start of the audio.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub id: usize,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f32,
    pub temperature: f32,
    pub compression_ratio: f64,
    /// The segment's words with their times (empty when word timestamps are off).
    pub words: Vec<Word>,
}

/// Time spent in each part of transcription, in seconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub features: f64,
    pub encoder: f64,
    pub decoder: f64,
    /// Word timestamps: the alignment pass through the decoder and the DTW.
    pub word_timing: f64,
    pub windows: usize,
}

/// A window's tokens cut at timestamps (before filtering empty ones).
#[derive(Debug, Clone, PartialEq)]
pub struct RawSegment {
    pub start: f64,
    pub end: f64,
    pub tokens: Vec<u32>,
}

/// Splits a window's generated tokens into segments at timestamp tokens and
/// returns them with the next seek position (in mel frames), as
/// faster-whisper's `_split_segments_by_timestamps`.
pub fn split_by_timestamps(
    tokens: &[u32],
    timestamp_begin: u32,
    time_offset: f64,
    segment_size: usize,
    segment_duration: f64,
    seek: usize,
) -> (Vec<RawSegment>, usize) {
    let is_ts = |t: u32| t >= timestamp_begin;
    let pos = |t: u32| (t - timestamp_begin) as usize;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let consecutive: Vec<usize> = (1..n).filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1])).collect();
    let mut out = Vec::new();
    if !consecutive.is_empty() {
        let mut slices = consecutive;
        if single_timestamp_ending {
            slices.push(n);
        }
        let mut last = 0;
        for &cur in &slices {
            let sliced = &tokens[last..cur];
            out.push(RawSegment {
                start: time_offset + pos(sliced[0]) as f64 * TIME_PRECISION,
                end: time_offset + pos(*sliced.last().unwrap()) as f64 * TIME_PRECISION,
                tokens: sliced.to_vec(),
            });
            last = cur;
        }
        let next_seek = if single_timestamp_ending {
            seek + segment_size
        } else {
            // the unfinished last segment is dropped: resume at its opening timestamp
            seek + pos(tokens[last - 1]) * INPUT_STRIDE
        };
        (out, next_seek)
    } else {
        let mut duration = segment_duration;
        if let Some(&last_ts) = tokens.iter().rev().find(|&&t| is_ts(t)) {
            if last_ts != timestamp_begin {
                duration = pos(last_ts) as f64 * TIME_PRECISION;
            }
        }
        out.push(RawSegment { start: time_offset, end: time_offset + duration, tokens: tokens.to_vec() });
        (out, seek + segment_size)
    }
}

/// Settings of the seek loop itself.
#[derive(Debug, Clone)]
pub struct LoopOptions {
    pub condition_on_previous_text: bool,
    pub prompt_reset_on_temperature: f32,
    /// The start-of-transcript sequence: `[sot]` or `[sot, language, task]`.
    pub sot_sequence: Vec<u32>,
    /// A window whose peak sample is below this linear level is silence:
    /// skipped without decoding (Whisper tends to hallucinate on digital silence).
    pub silence_peak: f32,
    /// Checked before each 30 s window: once set, the loop stops with `ModelError::Cancelled`.
    pub stop: Option<crate::runtime::StopFlag>,
    /// Word timestamps from the alignment heads' cross-attention (`timing.rs`).
    pub word_timestamps: bool,
    /// The language being transcribed (how words are split).
    pub language: String,
    /// Speech regions (sorted, seconds) when a voice activity detector ran:
    /// windows with no speech are not decoded.
    pub speech: Option<Vec<crate::vad::SpeechRegion>>,
}

/// Transcribes the whole of `mel`.
pub fn transcribe_features(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    samples: &[f32],
    mel: &LogMel,
    opts: &DecodeOptions,
    loop_opts: &LoopOptions,
    rng: &mut fastrand::Rng,
    timings: &mut Timings,
) -> Result<Vec<Segment>, ModelError> {
    let sp = &tok.special;
    let content_frames = mel.n_frames.saturating_sub(1);
    let max_prompt = opts.max_length / 2 - 1;
    let mut seek = 0usize;
    let mut all_tokens: Vec<u32> = Vec::new();
    let mut prompt_reset_since = 0usize;
    let mut segments = Vec::new();
    let mut last_speech = 0.0f64;
    while seek < content_frames {
        if crate::runtime::stopped(loop_opts.stop.as_ref()) {
            return Err(ModelError::Cancelled);
        }
        let time_offset = seek as f64 * SECONDS_PER_FRAME;
        let segment_size = N_FRAMES.min(content_frames - seek);
        let segment_duration = segment_size as f64 * SECONDS_PER_FRAME;
        let window_samples = &samples[(seek * HOP).min(samples.len())..((seek + segment_size) * HOP).min(samples.len())];
        let peak = window_samples.iter().fold(0.0f32, |m, x| m.max(x.abs()));
        let no_speech = loop_opts
            .speech
            .as_deref()
            .is_some_and(|sp| !super::gate::any_speech(time_offset, time_offset + segment_duration, sp));
        if peak < loop_opts.silence_peak || no_speech {
            seek += segment_size;
            continue;
        }
        let window = mel.window(seek, segment_size);

        let t0 = Instant::now();
        let encoded = model.encode(&window)?;
        timings.encoder += t0.elapsed().as_secs_f64();
        timings.windows += 1;

        let previous = &all_tokens[prompt_reset_since..];
        let mut prompt = Vec::new();
        if !previous.is_empty() {
            prompt.push(sp.sot_prev);
            prompt.extend_from_slice(&previous[previous.len().saturating_sub(max_prompt)..]);
        }
        prompt.extend_from_slice(&loop_opts.sot_sequence);
        if opts.without_timestamps {
            prompt.push(sp.no_timestamps);
        }

        let t1 = Instant::now();
        let result = decode_with_fallback(model, tok, &encoded, &prompt, opts, rng)?;
        timings.decoder += t1.elapsed().as_secs_f64();

        let silent = result.no_speech_prob > opts.no_speech_threshold
            && result.avg_logprob <= opts.log_prob_threshold as f64;
        if silent {
            seek += segment_size;
            continue;
        }
        let (raw, next_seek) = split_by_timestamps(
            &result.tokens,
            sp.timestamp_begin,
            time_offset,
            segment_size,
            segment_duration,
            seek,
        );
        seek = next_seek;
        let mut kept: Vec<Segment> = Vec::new();
        let mut kept_probs: Vec<&[f32]> = Vec::new();
        let mut offset = 0usize;
        for r in raw {
            let probs = &result.token_probs[offset.min(result.token_probs.len())..(offset + r.tokens.len()).min(result.token_probs.len())];
            offset += r.tokens.len();
            let text = tok.decode(&r.tokens).map_err(|e| ModelError::Runtime(crate::runtime::RuntimeError::Ort(e.to_string())))?;
            // as faster-whisper, plus: a segment without a single letter or
            // digit (". . ." on noise) carries no words and is dropped
            if r.start == r.end || !text.chars().any(char::is_alphanumeric) {
                continue;
            }
            all_tokens.extend_from_slice(&r.tokens);
            kept_probs.push(probs);
            kept.push(Segment {
                id: 0,
                start: r.start,
                end: r.end,
                text,
                tokens: r.tokens,
                avg_logprob: result.avg_logprob,
                no_speech_prob: result.no_speech_prob,
                temperature: result.temperature,
                compression_ratio: result.compression_ratio,
                words: Vec::new(),
            });
        }
        if loop_opts.word_timestamps && !kept.is_empty() {
            let t2 = Instant::now();
            let window_end = time_offset + segment_duration;
            add_word_timestamps(model, tok, &encoded, loop_opts, &mut kept, &kept_probs, time_offset, segment_size, &mut last_speech)?;
            for seg in &mut kept {
                // never outside the window, never backwards
                for w in &mut seg.words {
                    w.start = crate::audio::round_ms(w.start.clamp(time_offset, window_end));
                    w.end = crate::audio::round_ms(w.end.clamp(w.start, window_end));
                }
                // inside the window, one timestamp step long at least (a
                // segment timed past the end of the audio ends at its end)
                seg.end = seg.end.clamp(time_offset, window_end);
                seg.start = seg.start.clamp(time_offset, window_end).min(seg.end - TIME_PRECISION).max(time_offset);
            }
            timings.word_timing += t2.elapsed().as_secs_f64();
        }
        for mut seg in kept {
            seg.id = segments.len() + 1;
            // times never go backwards: a window that starts again before
            // the end of text timed past its content (seen with weak models)
            // starts its segments after it
            let floor = segments.last().map_or(0.0, |p: &Segment| p.end);
            seg.start = crate::audio::round_ms(seg.start.max(floor));
            seg.end = crate::audio::round_ms(seg.end.max(seg.start + TIME_PRECISION));
            for w in &mut seg.words {
                w.start = w.start.clamp(seg.start, seg.end);
                w.end = w.end.clamp(w.start, seg.end);
            }
            segments.push(seg);
        }
        if !loop_opts.condition_on_previous_text || result.temperature > loop_opts.prompt_reset_on_temperature {
            prompt_reset_since = all_tokens.len();
        }
    }
    Ok(segments)
}

/// Word timestamps for the segments one window kept (openai-whisper's
/// `add_word_timestamps`): one alignment pass over all their text tokens,
/// DTW, words shared out to the segments by token count, then each
/// segment's bounds and first/last words made consistent.
#[allow(clippy::too_many_arguments)]
fn add_word_timestamps(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    encoded: &super::model::EncodedWindow,
    loop_opts: &LoopOptions,
    segments: &mut [Segment],
    probs: &[&[f32]],
    time_offset: f64,
    segment_size: usize,
    last_speech: &mut f64,
) -> Result<(), ModelError> {
    let sp = &tok.special;
    let mut text_tokens: Vec<u32> = Vec::new();
    let mut text_probs: Vec<f32> = Vec::new();
    let mut per_segment: Vec<usize> = Vec::with_capacity(segments.len());
    for (seg, p) in segments.iter().zip(probs) {
        let before = text_tokens.len();
        for (i, &t) in seg.tokens.iter().enumerate() {
            if tok.is_text(t) {
                text_tokens.push(t);
                text_probs.push(p.get(i).copied().unwrap_or(0.0));
            }
        }
        per_segment.push(text_tokens.len() - before);
    }
    if text_tokens.is_empty() {
        return Ok(());
    }
    let mut seq = loop_opts.sot_sequence.clone();
    seq.push(sp.no_timestamps);
    seq.extend_from_slice(&text_tokens);
    seq.push(sp.eot);
    // the text context bounds the sequence the decoder can take
    if seq.len() > model.config.n_text_ctx {
        return Ok(());
    }
    let (qk, heads, stride) = model.alignment_scores(&seq, encoded)?;
    let frames = segment_size / INPUT_STRIDE;
    let mut alignment = timing::find_alignment(
        &qk,
        heads,
        stride,
        loop_opts.sot_sequence.len(),
        &text_tokens,
        &text_probs,
        frames,
        tok,
        &loop_opts.language,
    );
    let median = timing::median_duration(&alignment);
    timing::truncate_long_words_at_sentence_ends(&mut alignment, median * 2.0);
    timing::merge_punctuations(&mut alignment);
    let mut word_index = 0;
    for (seg, &n_tokens) in segments.iter_mut().zip(&per_segment) {
        let mut saved = 0usize;
        let mut words = Vec::new();
        while word_index < alignment.len() && saved < n_tokens {
            let t = &alignment[word_index];
            if !t.word.is_empty() {
                words.push(Word {
                    word: t.word.clone(),
                    start: time_offset + t.start,
                    end: time_offset + t.end,
                    probability: t.probability,
                });
            }
            saved += t.tokens.len();
            word_index += 1;
        }
        if !words.is_empty() {
            let (start, end) = timing::fit_segment_words(&mut words, seg.start, seg.end, *last_speech, median);
            // a segment keeps a length: when its words collapse onto one
            // instant (the alignment found no spread), its timestamps stand
            if end > start {
                seg.start = start;
                seg.end = end;
            }
            *last_speech = seg.end;
        }
        seg.words = words;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u32 = 50363;

    fn ts(sec: f64) -> u32 {
        TB + (sec / 0.02).round() as u32
    }

    #[test]
    fn pairs_of_timestamps_cut_segments_and_seek_to_the_last_closed_one() {
        // <0.00> a b <2.00><2.40> c <5.00><5.20> d   (last segment unfinished)
        let toks = vec![ts(0.0), 1, 2, ts(2.0), ts(2.4), 3, ts(5.0), ts(5.2), 4];
        let (segs, seek) = split_by_timestamps(&toks, TB, 10.0, 3000, 30.0, 1000);
        assert_eq!(segs.len(), 2);
        assert_eq!((segs[0].start, segs[0].end), (10.0, 12.0));
        assert_eq!(segs[0].tokens, vec![ts(0.0), 1, 2, ts(2.0)]);
        assert!((segs[1].start - 12.4).abs() < 1e-9 && (segs[1].end - 15.0).abs() < 1e-9);
        // resume where the last complete segment closed, <5.00>: 250 positions * 2 frames
        assert_eq!(seek, 1000 + 250 * 2);
    }

    #[test]
    fn single_timestamp_ending_consumes_the_window() {
        let toks = vec![ts(0.0), 1, ts(3.0), ts(3.0), 2, ts(6.5)];
        let (segs, seek) = split_by_timestamps(&toks, TB, 0.0, 2500, 25.0, 0);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].tokens, vec![ts(3.0), 2, ts(6.5)]);
        assert!((segs[1].end - 6.5).abs() < 1e-9);
        assert_eq!(seek, 2500);
    }

    #[test]
    fn no_consecutive_timestamps_gives_one_segment() {
        let toks = vec![ts(0.0), 1, 2, 3, ts(4.0)];
        let (segs, seek) = split_by_timestamps(&toks, TB, 30.0, 3000, 30.0, 3000);
        assert_eq!(segs.len(), 1);
        assert_eq!((segs[0].start, segs[0].end), (30.0, 34.0));
        assert_eq!(seek, 6000);
        // without any timestamp the segment spans the window
        let (segs, _) = split_by_timestamps(&[1, 2], TB, 0.0, 1100, 11.0, 0);
        assert_eq!((segs[0].start, segs[0].end), (0.0, 11.0));
    }
}
