//! Long audio: 30 s windows placed by the last timestamp the model emitted
//! (faster-whisper's sequential seek loop), each decoded with fallback, cut
//! into segments at timestamp tokens.
//!
//! Batched (`whisper.batch_size` > 1, with speech regions from a voice
//! activity detector): the speech shared out into B lanes, each a seek loop
//! of its own over its speech, the lanes' windows decoded together with one
//! prompt and no previous-text conditioning; a window that fails the guards
//! at the first temperature goes on alone through the fallback.

use std::time::Instant;

use serde::Serialize;

use crate::audio::Samples;

use super::decode::{decode_batch, decode_with_fallback, DecodeOptions, Fallback, WindowResult};
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
    let consecutive: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
        .collect();
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
        out.push(RawSegment {
            start: time_offset,
            end: time_offset + duration,
            tokens: tokens.to_vec(),
        });
        (out, seek + segment_size)
    }
}

/// A stretch of the recording that batched mode transcribes with a seek
/// loop of its own, beside the other lanes: seconds, and the speech regions
/// (indices into the detector's sorted regions) inside it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lane {
    pub start: f64,
    pub end: f64,
    pub regions: std::ops::Range<usize>,
}

/// Speech regions (sorted, disjoint) shared out into at most `count` lanes
/// of about equal length, cut only in pauses between regions. A recording
/// shorter than `count` windows of `window` seconds gets one lane per
/// window's worth: a lane is worth its own row only when it holds a window.
pub fn lanes(regions: &[crate::vad::SpeechRegion], count: usize, window: f64) -> Vec<Lane> {
    let (Some(first), Some(last)) = (regions.first(), regions.last()) else {
        return Vec::new();
    };
    let span = last.end - first.start;
    let count = count.clamp(1, ((span / window).ceil() as usize).max(1));
    let mut out = Vec::with_capacity(count);
    let mut from = 0usize;
    for k in 1..=count {
        let to = if k == count {
            regions.len()
        } else {
            // the lane ends before the first region that starts past its share
            let target = first.start + span * k as f64 / count as f64;
            from + 1
                + regions[from + 1..]
                    .iter()
                    .position(|r| r.start >= target)
                    .unwrap_or(regions.len() - from - 1)
        };
        if to > from {
            out.push(Lane {
                start: regions[from].start,
                end: regions[to - 1].end,
                regions: from..to,
            });
            from = to;
        }
        if from >= regions.len() {
            break;
        }
    }
    out
}

/// A lane's next window (first mel frame, frames) from `seek` on: it starts
/// at `seek`, or at the next speech region when `seek` is in a pause, and
/// runs for 30 s at most, inside the lane and the `content_frames`. None
/// when no speech is left in the lane.
fn lane_window(
    lane: &Lane,
    regions: &[crate::vad::SpeechRegion],
    seek: usize,
    content_frames: usize,
) -> Option<(usize, usize)> {
    let at = seek as f64 * SECONDS_PER_FRAME;
    let next = regions[lane.regions.clone()].iter().find(|r| r.end > at)?;
    let first = seek.max((next.start / SECONDS_PER_FRAME).floor() as usize);
    let last = ((lane.end / SECONDS_PER_FRAME).ceil() as usize).min(content_frames);
    let size = last.saturating_sub(first).min(N_FRAMES);
    (size > 0).then_some((first, size))
}

/// The loudest sample of the window of `size` mel frames at frame `seek`.
fn window_peak(samples: Samples, seek: usize, size: usize) -> f32 {
    let window =
        samples.slice((seek * HOP).min(samples.len())..((seek + size) * HOP).min(samples.len()));
    window.iter().fold(0.0f32, |m, x| m.max(x.abs()))
}

/// The no-speech rule: a window the model thinks silent, and whose text is
/// improbable, gives no text.
fn is_silent(result: &WindowResult, opts: &DecodeOptions) -> bool {
    result.no_speech_prob > opts.no_speech_threshold
        && result.avg_logprob <= opts.log_prob_threshold as f64
}

/// Seconds of detected speech in a window from which Whisper's no-speech
/// guess no longer silences it (`window_options`).
const HEARD_SPEECH: f64 = 1.0;

/// The decoding settings of the window of `size` frames at `seek`. Where
/// the voice activity detector heard `HEARD_SPEECH` seconds or more, the
/// no-speech rule is off: the detector is the better judge of speech, and
/// Whisper's no-speech probability runs high on hard conversational speech
/// (measured: a 30 s window of an AMI meeting dropped whole at 0.65, its
/// text improbable at the first temperature but kept at the second). The
/// window then goes through the temperature fallback like any other; text
/// outside the detected speech is dropped afterwards (`gate.rs`).
fn window_options<'o>(
    opts: &'o DecodeOptions,
    speech: Option<&[crate::vad::SpeechRegion]>,
    seek: usize,
    size: usize,
) -> std::borrow::Cow<'o, DecodeOptions> {
    let (t0, t1) = (
        seek as f64 * SECONDS_PER_FRAME,
        (seek + size) as f64 * SECONDS_PER_FRAME,
    );
    let heard = crate::vad::overlap_with_speech(t0, t1, speech.unwrap_or(&[]));
    if heard >= HEARD_SPEECH {
        std::borrow::Cow::Owned(DecodeOptions {
            no_speech_threshold: f32::INFINITY,
            ..opts.clone()
        })
    } else {
        std::borrow::Cow::Borrowed(opts)
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
    /// Windows decoded at once. 1: the sequential seek loop (faster-whisper's
    /// `transcribe`); more, with `speech`: that many lanes of speech, their windows batched.
    pub batch_size: usize,
    /// Tokens of a prompt given before the first window (faster-whisper's
    /// `initial_prompt`): the text before the first window in the seek
    /// loop, and before every window when batched.
    pub initial_prompt: Vec<u32>,
}

/// One recording's transcription: the model's parts, the audio and its
/// features, the settings, and where its randomness and timings go.
pub struct Job<'j, 'm> {
    pub model: &'j mut WhisperOnnx,
    pub tok: &'j WhisperTokenizer,
    pub samples: Samples<'j>,
    pub mel: &'j LogMel<'m>,
    pub opts: &'j DecodeOptions,
    pub loop_opts: &'j LoopOptions,
    pub rng: &'j mut fastrand::Rng,
    pub timings: &'j mut Timings,
    /// Told each window's segments as soon as they are decoded (before
    /// speech gating and before the other lanes': provisional text for a
    /// live view; the returned transcript is the result).
    pub partial: Option<&'j mut dyn FnMut(&[Segment])>,
}

/// Transcribes the whole of `mel`: batched over the speech regions when
/// `loop_opts` has them and a batch size above 1, else the seek loop.
pub fn transcribe_features(job: Job) -> Result<Vec<Segment>, ModelError> {
    let loop_opts = job.loop_opts;
    match loop_opts.speech.as_deref() {
        Some(regions) if loop_opts.batch_size > 1 => transcribe_batched(job, regions),
        _ => transcribe_sequential(job),
    }
}

/// faster-whisper's sequential seek loop: each window starts where the
/// previous one's last complete segment ended, prompted with the text before.
fn transcribe_sequential(job: Job) -> Result<Vec<Segment>, ModelError> {
    let Job {
        model,
        tok,
        samples,
        mel,
        opts,
        loop_opts,
        rng,
        timings,
        mut partial,
    } = job;
    let sp = &tok.special;
    let content_frames = mel.n_frames.saturating_sub(1);
    let max_prompt = opts.max_length / 2 - 1;
    let mut seek = 0usize;
    let mut all_tokens: Vec<u32> = loop_opts.initial_prompt.clone();
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
        let peak = window_peak(samples, seek, segment_size);
        let no_speech = loop_opts.speech.as_deref().is_some_and(|sp| {
            !super::gate::any_speech(time_offset, time_offset + segment_duration, sp)
        });
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

        let window_opts = window_options(opts, loop_opts.speech.as_deref(), seek, segment_size);
        let t1 = Instant::now();
        let result = decode_with_fallback(
            model,
            tok,
            &encoded.active(),
            &prompt,
            &window_opts,
            rng,
            Fallback::default(),
        )?;
        timings.decoder += t1.elapsed().as_secs_f64();

        if is_silent(&result, &window_opts) {
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
        seek = next_window_seek(
            seek,
            segment_size,
            next_seek,
            &raw,
            loop_opts.speech.as_deref(),
        );
        let (mut kept, kept_probs) = keep_segments(tok, raw, &result)?;
        for seg in &kept {
            all_tokens.extend_from_slice(&seg.tokens);
        }
        if loop_opts.word_timestamps && !kept.is_empty() {
            let t2 = Instant::now();
            add_word_timestamps(
                model,
                tok,
                &encoded.active(),
                loop_opts,
                &mut kept,
                &kept_probs,
                time_offset,
                segment_size,
                &mut last_speech,
            )?;
            hold_in_window(&mut kept, time_offset, segment_size);
            timings.word_timing += t2.elapsed().as_secs_f64();
        }
        let before = segments.len();
        append_segments(&mut segments, kept);
        if let Some(tell) = partial.as_mut() {
            if segments.len() > before {
                tell(&segments[before..]);
            }
        }
        if !loop_opts.condition_on_previous_text
            || result.temperature > loop_opts.prompt_reset_on_temperature
        {
            prompt_reset_since = all_tokens.len();
        }
    }
    Ok(segments)
}

/// Batched mode: the speech shared out into `batch_size` lanes (`lanes`),
/// each transcribed by a seek loop of its own, the lanes' windows encoded and
/// decoded together, one window per lane and round: a round's B windows
/// take one greedy pass at the first temperature (`decode_batch`). A window
/// starts where its lane's previous text ended, skipping pauses, so a window
/// whose text stops early is followed up by the next one (not by a window
/// of its own), and no window is spent on silence. Every window is prompted
/// with the start-of-transcript sequence alone (the rows of a batch share
/// one prompt: no previous-text conditioning, as faster-whisper's
/// `BatchedInferencePipeline`). The guards stay per window: a window that
/// fails them goes on alone through the fallback from the next temperature.
/// Segments, word timestamps and their post-processing are the seek loop's.
fn transcribe_batched(
    job: Job,
    regions: &[crate::vad::SpeechRegion],
) -> Result<Vec<Segment>, ModelError> {
    let Job {
        model,
        tok,
        samples,
        mel,
        opts,
        loop_opts,
        rng,
        timings,
        mut partial,
    } = job;
    let sp = &tok.special;
    let content_frames = mel.n_frames.saturating_sub(1);
    let lanes = lanes(
        regions,
        loop_opts.batch_size.max(1),
        N_FRAMES as f64 * SECONDS_PER_FRAME,
    );
    let mut prompt = Vec::new();
    if !loop_opts.initial_prompt.is_empty() {
        let max_prompt = opts.max_length / 2 - 1;
        let p = &loop_opts.initial_prompt;
        prompt.push(sp.sot_prev);
        prompt.extend_from_slice(&p[p.len().saturating_sub(max_prompt)..]);
    }
    prompt.extend_from_slice(&loop_opts.sot_sequence);
    if opts.without_timestamps {
        prompt.push(sp.no_timestamps);
    }
    let mut seeks: Vec<usize> = lanes
        .iter()
        .map(|l| (l.start / SECONDS_PER_FRAME).floor() as usize)
        .collect();
    let mut lane_segments: Vec<Vec<Segment>> = vec![Vec::new(); lanes.len()];
    let mut last_speech = vec![0.0f64; lanes.len()];
    loop {
        if crate::runtime::stopped(loop_opts.stop.as_ref()) {
            return Err(ModelError::Cancelled);
        }
        // each lane's next window; a window without sound is passed over
        let mut round: Vec<(usize, (usize, usize))> = Vec::with_capacity(lanes.len());
        for (i, lane) in lanes.iter().enumerate() {
            while let Some((seek, size)) = lane_window(lane, regions, seeks[i], content_frames) {
                if window_peak(samples, seek, size) >= loop_opts.silence_peak {
                    round.push((i, (seek, size)));
                    break;
                }
                seeks[i] = seek + size;
            }
        }
        if round.is_empty() {
            break;
        }
        let windows: Vec<(usize, usize)> = round.iter().map(|&(_, w)| w).collect();
        let row_opts: Vec<_> = windows
            .iter()
            .map(|&(seek, size)| window_options(opts, Some(regions), seek, size))
            .collect();
        let (encoded, results) =
            decode_round(model, tok, mel, &windows, &prompt, &row_opts, rng, timings)?;
        for (row, (&(lane, (seek, size)), result)) in round.iter().zip(results).enumerate() {
            let end = seek + size;
            let at = |frame: usize| frame as f64 * SECONDS_PER_FRAME;
            if is_silent(&result, &row_opts[row]) {
                tracing::debug!(
                    lane,
                    start = at(seek),
                    end = at(end),
                    no_speech = result.no_speech_prob,
                    "window without speech"
                );
                seeks[lane] = end;
                continue;
            }
            let (offset, duration) = (
                seek as f64 * SECONDS_PER_FRAME,
                size as f64 * SECONDS_PER_FRAME,
            );
            let (raw, next) = split_by_timestamps(
                &result.tokens,
                sp.timestamp_begin,
                offset,
                size,
                duration,
                seek,
            );
            seeks[lane] = next_window_seek(seek, size, next, &raw, Some(regions));
            tracing::debug!(
                lane,
                start = at(seek),
                end = at(end),
                next = at(seeks[lane]),
                temperature = result.temperature,
                "window decoded"
            );
            let (mut kept, kept_probs) = keep_segments(tok, raw, &result)?;
            if loop_opts.word_timestamps && !kept.is_empty() {
                let t2 = Instant::now();
                add_word_timestamps(
                    model,
                    tok,
                    &encoded.row(row),
                    loop_opts,
                    &mut kept,
                    &kept_probs,
                    offset,
                    size,
                    &mut last_speech[lane],
                )?;
                hold_in_window(&mut kept, offset, size);
                timings.word_timing += t2.elapsed().as_secs_f64();
            }
            if let Some(tell) = partial.as_mut() {
                if !kept.is_empty() {
                    tell(&kept);
                }
            }
            lane_segments[lane].extend(kept);
        }
    }
    let mut segments = Vec::new();
    for kept in lane_segments {
        append_segments(&mut segments, kept);
    }
    Ok(segments)
}

/// One encoder run over `windows` (first frame, frames) and the batched
/// greedy pass; a window whose result fails the guards (judged with its own
/// `row_opts`, which differ from the first row's in the no-speech rule at
/// most) is decoded again alone through the rest of the temperature fallback.
#[allow(clippy::too_many_arguments)]
fn decode_round(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    mel: &LogMel,
    windows: &[(usize, usize)],
    prompt: &[u32],
    row_opts: &[std::borrow::Cow<DecodeOptions>],
    rng: &mut fastrand::Rng,
    timings: &mut Timings,
) -> Result<(super::model::EncodedWindow, Vec<WindowResult>), ModelError> {
    let opts: &DecodeOptions = &row_opts[0];
    let mels: Vec<Vec<f32>> = windows
        .iter()
        .map(|&(seek, size)| mel.window(seek, size))
        .collect();
    let t0 = Instant::now();
    let mut encoded = model.encode_batch(&mels)?;
    timings.encoder += t0.elapsed().as_secs_f64();
    timings.windows += windows.len();

    let t1 = Instant::now();
    let first_temperature = opts.temperatures[0];
    let first = decode_batch(
        model,
        tok,
        &mut encoded,
        prompt,
        first_temperature,
        opts,
        rng,
    )?;
    let mut results = Vec::with_capacity(windows.len());
    for (row, decoded) in first.into_iter().enumerate() {
        let mut fallback = Fallback::default();
        let opts: &DecodeOptions = &row_opts[row];
        let result = match fallback.judge(decoded, first_temperature, tok, opts) {
            Some(result) => result,
            None => {
                let alone = encoded.row(row);
                decode_with_fallback(model, tok, &alone, prompt, opts, rng, fallback)?
            }
        };
        results.push(result);
    }
    timings.decoder += t1.elapsed().as_secs_f64();
    Ok((encoded, results))
}

/// Seconds of speech after a window's text from which the next window starts
/// at the text's end (`untranscribed_rest`).
const MIN_REST_SPEECH: f64 = 0.5;

/// Where a seek loop's next window starts after the window of `size` frames
/// at `seek`: at `next_seek` (from `split_by_timestamps`: after the last
/// complete segment), or earlier, at the end of the text, when speech goes
/// on after it (`untranscribed_rest`, with the detector's `speech`); after
/// the window when neither moves forward.
fn next_window_seek(
    seek: usize,
    size: usize,
    next_seek: usize,
    raw: &[RawSegment],
    speech: Option<&[crate::vad::SpeechRegion]>,
) -> usize {
    let rest = speech.and_then(|sp| untranscribed_rest(seek, size, raw, sp));
    let next = rest.map_or(next_seek, |(from, _)| next_seek.min(from));
    if next > seek {
        next
    } else {
        seek + size
    }
}

/// The part of a window after the end of its text (first frame, frames),
/// when speech regions lie there for `MIN_REST_SPEECH` seconds or more:
/// Whisper often ends its text early, with a closing timestamp, when speech
/// goes on near the end of a window; the seek loop would then go on after
/// the window and lose that speech, and a lane goes on from where the text
/// ended instead. None when nothing was written (silence, or no segment) or
/// the text reaches the end.
fn untranscribed_rest(
    seek: usize,
    size: usize,
    raw: &[RawSegment],
    regions: &[crate::vad::SpeechRegion],
) -> Option<(usize, usize)> {
    let covered = raw.last()?.end;
    let end = seek + size;
    // a rest starts after its window's start: every rest is shorter
    let from = ((covered / SECONDS_PER_FRAME).round().max(0.0) as usize).max(seek + 1);
    if from >= end {
        return None;
    }
    let (t0, t1) = (
        from as f64 * SECONDS_PER_FRAME,
        end as f64 * SECONDS_PER_FRAME,
    );
    let speech = crate::vad::overlap_with_speech(t0, t1, regions);
    (speech >= MIN_REST_SPEECH).then_some((from, end - from))
}

/// The segments of one window worth keeping, with each one's token
/// probabilities (a slice of `result.token_probs`): as faster-whisper, a
/// segment of no length is dropped; and a segment without a single letter
/// or digit (". . ." on noise) carries no words and is dropped too.
fn keep_segments<'r>(
    tok: &WhisperTokenizer,
    raw: Vec<RawSegment>,
    result: &'r WindowResult,
) -> Result<(Vec<Segment>, Vec<&'r [f32]>), ModelError> {
    let mut kept: Vec<Segment> = Vec::new();
    let mut kept_probs: Vec<&[f32]> = Vec::new();
    let n_probs = result.token_probs.len();
    let mut offset = 0usize;
    for r in raw {
        let probs =
            &result.token_probs[offset.min(n_probs)..(offset + r.tokens.len()).min(n_probs)];
        offset += r.tokens.len();
        let text = tok
            .decode(&r.tokens)
            .map_err(|e| ModelError::Runtime(crate::runtime::RuntimeError::Ort(e.to_string())))?;
        if r.start == r.end || !text.chars().any(char::is_alphanumeric) {
            continue;
        }
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
    Ok((kept, kept_probs))
}

/// Words and segments held inside the window that starts at `time_offset`
/// and is `segment_size` frames long, after `add_word_timestamps`.
fn hold_in_window(kept: &mut [Segment], time_offset: f64, segment_size: usize) {
    let window_end = time_offset + segment_size as f64 * SECONDS_PER_FRAME;
    for seg in kept {
        // never outside the window, never backwards
        for w in &mut seg.words {
            w.start = crate::audio::round_ms(w.start.clamp(time_offset, window_end));
            w.end = crate::audio::round_ms(w.end.clamp(w.start, window_end));
        }
        // inside the window, one timestamp step long at least (a
        // segment timed past the end of the audio ends at its end)
        seg.end = seg.end.clamp(time_offset, window_end);
        seg.start = seg
            .start
            .clamp(time_offset, window_end)
            .min(seg.end - TIME_PRECISION)
            .max(time_offset);
    }
}

/// Appends one window's segments to the transcript: numbered, and times
/// never going backwards (a window that starts again before the end of
/// text timed past its content, seen with weak models, starts its segments
/// after it).
fn append_segments(segments: &mut Vec<Segment>, kept: Vec<Segment>) {
    for mut seg in kept {
        seg.id = segments.len() + 1;
        let floor = segments.last().map_or(0.0, |p: &Segment| p.end);
        seg.start = crate::audio::round_ms(seg.start.max(floor));
        seg.end = crate::audio::round_ms(seg.end.max(seg.start + TIME_PRECISION));
        for w in &mut seg.words {
            w.start = w.start.clamp(seg.start, seg.end);
            w.end = w.end.clamp(w.start, seg.end);
        }
        segments.push(seg);
    }
}

/// Word timestamps for the segments one window kept (openai-whisper's
/// `add_word_timestamps`): one alignment pass over all their text tokens,
/// DTW, words shared out to the segments by token count, then each
/// segment's bounds and first/last words made consistent.
#[allow(clippy::too_many_arguments)]
fn add_word_timestamps(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    encoded: &super::model::Cross<'_>,
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
            let (start, end) =
                timing::fit_segment_words(&mut words, seg.start, seg.end, *last_speech, median);
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

    fn region(start: f64, end: f64) -> crate::vad::SpeechRegion {
        crate::vad::SpeechRegion::new(start, end)
    }

    #[test]
    fn speech_is_shared_out_into_lanes_cut_in_pauses() {
        // 0..120 s of speech in 30 regions of 3 s with 1 s pauses
        let regions: Vec<_> = (0..30)
            .map(|i| region(i as f64 * 4.0, i as f64 * 4.0 + 3.0))
            .collect();
        let l = lanes(&regions, 4, 30.0);
        assert_eq!(l.len(), 4);
        // every region in exactly one lane, in order, each lane cut between regions
        assert_eq!(l[0].regions.start, 0);
        assert_eq!(l[3].regions.end, 30);
        for pair in l.windows(2) {
            assert_eq!(pair[0].regions.end, pair[1].regions.start);
            assert!(pair[0].end < pair[1].start);
        }
        for lane in &l {
            assert_eq!(
                (lane.start, lane.end),
                (
                    regions[lane.regions.start].start,
                    regions[lane.regions.end - 1].end
                )
            );
            // about a quarter of 119 s each
            assert!((lane.end - lane.start - 29.0).abs() <= 4.0, "{lane:?}");
        }
        // 45 s of speech holds two windows' worth: two lanes, not eight
        assert_eq!(lanes(&regions[..12], 8, 30.0).len(), 2);
        // one long region cannot be cut: one lane
        assert_eq!(
            lanes(&[region(0.0, 100.0)], 8, 30.0),
            vec![Lane {
                start: 0.0,
                end: 100.0,
                regions: 0..1
            }]
        );
        assert!(lanes(&[], 8, 30.0).is_empty());
    }

    #[test]
    fn a_lanes_windows_skip_its_pauses_and_stay_inside_it() {
        // 0.01 s per frame
        let regions = [region(1.0, 5.0), region(20.0, 60.0), region(80.0, 81.0)];
        let lane = Lane {
            start: 1.0,
            end: 60.0,
            regions: 0..2,
        };
        assert_eq!(
            lane_window(&lane, &regions, 100, 10_000),
            Some((100, N_FRAMES))
        );
        // from inside the pause after the first region: the second region's start
        assert_eq!(
            lane_window(&lane, &regions, 600, 10_000),
            Some((2000, N_FRAMES))
        );
        // the lane's end (not the next lane's region) bounds the window
        assert_eq!(
            lane_window(&lane, &regions, 4500, 10_000),
            Some((4500, 1500))
        );
        // and the audio's end
        assert_eq!(lane_window(&lane, &regions, 4500, 5000), Some((4500, 500)));
        // no speech left in the lane
        assert_eq!(lane_window(&lane, &regions, 6000, 10_000), None);
    }

    #[test]
    fn where_the_detector_heard_speech_whispers_no_speech_guess_does_not_silence_a_window() {
        let opts = DecodeOptions::greedy(vec![], vec![], 448);
        let doubtful = WindowResult {
            tokens: vec![1, 2],
            token_probs: vec![0.3, 0.3],
            avg_logprob: -1.4,
            no_speech_prob: 0.65,
            temperature: 0.0,
            compression_ratio: 1.0,
        };
        // window 10..40 s (0.01 s frames)
        let speech = [region(12.0, 12.5), region(30.0, 31.2)];
        assert!(is_silent(
            &doubtful,
            &window_options(&opts, None, 1000, 3000)
        ));
        // 0.5 s of speech in the window: still Whisper's call
        assert!(is_silent(
            &doubtful,
            &window_options(&opts, Some(&speech[..1]), 1000, 3000)
        ));
        // 1.7 s heard: the window is decoded, not dropped
        let heard = window_options(&opts, Some(&speech), 1000, 3000);
        assert!(!is_silent(&doubtful, &heard));
        // the rest of the settings are the same
        assert_eq!(heard.log_prob_threshold, opts.log_prob_threshold);
        assert_eq!(
            heard.max_initial_timestamp_index,
            opts.max_initial_timestamp_index
        );
    }

    #[test]
    fn speech_after_the_end_of_a_windows_text_is_decoded_again() {
        let raw = |end: f64| {
            vec![RawSegment {
                start: 10.0,
                end,
                tokens: vec![1],
            }]
        };
        // window 10..40 s; speech 10..25 and 33..36: text ending at 24 s left 3 s of speech out
        let regions = [region(10.0, 25.0), region(33.0, 36.0)];
        assert_eq!(
            untranscribed_rest(1000, 3000, &raw(24.0), &regions),
            Some((2400, 1600))
        );
        // text up to 35.8 s: 0.2 s of speech (the region's padding) is no rest
        assert_eq!(untranscribed_rest(1000, 3000, &raw(35.8), &regions), None);
        // text to the end, or nothing written (silence): nothing to decode again
        assert_eq!(untranscribed_rest(1000, 3000, &raw(40.0), &regions), None);
        assert_eq!(untranscribed_rest(1000, 3000, &[], &regions), None);
        // a rest always starts after its window's start (no endless loop)
        assert_eq!(
            untranscribed_rest(1000, 3000, &raw(10.0), &regions),
            Some((1001, 2999))
        );
    }

    #[test]
    fn the_next_window_starts_where_the_text_ended_when_speech_goes_on() {
        let raw = vec![RawSegment {
            start: 10.0,
            end: 24.0,
            tokens: vec![1],
        }];
        let regions = [region(10.0, 25.0), region(33.0, 36.0)];
        // window 10..40 s, text closed at 24 s and the window consumed (3000 frames on)
        assert_eq!(
            next_window_seek(1000, 3000, 4000, &raw, Some(&regions)),
            2400
        );
        // without speech regions: the seek loop's own rule
        assert_eq!(next_window_seek(1000, 3000, 4000, &raw, None), 4000);
        // an unfinished segment from 22 s: already before the text's end
        assert_eq!(
            next_window_seek(1000, 3000, 2200, &raw, Some(&regions)),
            2200
        );
        // no step forward: after the window
        assert_eq!(next_window_seek(1000, 3000, 1000, &[], None), 4000);
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
