//! Speaker alignment, word by word: plain functions joining the transcript's
//! words with the diarization's speaker turns (the Aligner actor only calls
//! these).
//!
//! - Each word gets the speaker whose turns cover most of it; a word no turn
//!   covers gets the nearest turn's speaker. Where the diarization's frame
//!   activity has two or more people speaking through most of a word, the
//!   word is marked `overlapped` and goes to the speaker most active over its
//!   frames (on a tie, the one who was already speaking).
//! - Turn edges are refined with the words: a change of speaker inside a
//!   sentence moves to a nearby sentence end, clause mark or pause when that
//!   gives few words to the other speaker (`refine` weighs the two); a run
//!   of another speaker's words shorter than
//!   `min_run` inside one sentence is given back to the sentence's speaker.
//!   People rarely hand over mid-sentence, and the diarization's edges are
//!   less exact than the words' (a turn edge a second early would otherwise
//!   give the end of one person's sentence to the next).
//! - A change of speaker still inside a sentence is checked against the
//!   speakers' voices when the caller can embed the audio (`voices`): a side
//!   of the sentence that sounds more like the other speaker goes to them.
//! - `aligned_segments` are speaker-homogeneous utterances: each transcript
//!   segment cut at every change of speaker; every word carries its speaker.
//! - A segment without word timestamps is one unit: the speaker covering
//!   most of it.
//! - Speaker turns: the diarization's turns in time order, with one speaker's
//!   consecutive turns merged across pauses shorter than `merge_gap`.

use serde::{Deserialize, Serialize};

mod voices;
pub use voices::VoiceCheck;

use crate::diarize::reconstruct::SpeakerActivity;
use crate::diarize::rttm::Turn;
use crate::whisper::Word;

/// Label given when the diarization found no speech at all.
pub const DEFAULT_SPEAKER: &str = "SPEAKER_00";

/// A transcript segment, as the aligner takes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    #[serde(default)]
    pub words: Vec<Word>,
    /// Whisper's decoding statistics, passed through to the result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<Decoding>,
}

/// A word with its speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SpeakerWord {
    #[serde(flatten)]
    pub word: Word,
    pub speaker: String,
    /// Two or more people speak through most of this word.
    pub overlapped: bool,
}

/// A transcript segment with its words' speakers (the result's `segments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WordSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub words: Vec<SpeakerWord>,
    /// How Whisper decoded the segment (absent in results from before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding: Option<Decoding>,
}

/// Whisper's decoding statistics of one segment (OpenAI's `verbose_json`
/// segment fields).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Decoding {
    pub tokens: Vec<u32>,
    pub temperature: f32,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f32,
}

/// One speaker's utterance (the result's `aligned_segments`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AlignedSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub speaker: String,
    #[serde(default)]
    pub words: Vec<SpeakerWord>,
}

/// Both views of the aligned transcript.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Alignment {
    pub segments: Vec<WordSegment>,
    pub aligned: Vec<AlignedSegment>,
}

#[derive(Debug, Clone, Copy)]
pub struct AlignOptions {
    /// Pauses shorter than this between one speaker's turns are merged in speaker_turns.
    pub merge_gap: f64,
    /// A change of speaker inside a sentence with no pause costs as much as
    /// giving this many seconds of words to the other speaker: it moves to a
    /// sentence end, a clause mark or a pause that costs less.
    pub sentence_reach: f64,
    /// The cost (seconds of words) of a change of speaker at a clause mark or a pause.
    pub clause_penalty: f64,
    /// A gap between words of at least this many seconds is a pause.
    pub min_pause: f64,
    /// Runs of one speaker's words shorter than this (seconds) inside another
    /// speaker's sentence are given to that speaker.
    pub min_run: f64,
    /// A word is overlapped when at least this share of its frames has two or more speakers.
    pub overlap_share: f32,
    /// The voice check moves a side of a change inside a sentence when it is
    /// closer (cosine) to the other speaker's voice than to its own by more than this.
    pub voice_margin: f32,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions {
            merge_gap: 0.5,
            sentence_reach: 2.0,
            clause_penalty: 0.5,
            min_pause: 0.2,
            min_run: 0.5,
            overlap_share: 0.5,
            voice_margin: 0.0,
        }
    }
}

/// Length of the intersection of two intervals (0 when disjoint).
pub fn overlap(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    (a1.min(b1) - a0.max(b0)).max(0.0)
}

/// Total overlap of `[start, end]` with each speaker's turns, in order of first appearance.
fn coverage<'t>(start: f64, end: f64, turns: &'t [Turn]) -> Vec<(&'t str, f64)> {
    let mut totals: Vec<(&str, f64)> = Vec::new();
    for t in turns {
        let o = overlap(start, end, t.start, t.end);
        if o <= 0.0 {
            continue;
        }
        match totals.iter_mut().find(|(s, _)| *s == t.speaker) {
            Some((_, total)) => *total += o,
            None => totals.push((&t.speaker, o)),
        }
    }
    totals
}

/// The speaker whose turns overlap `[start, end]` the most in total; when
/// none overlaps, the speaker of the nearest turn; None without turns.
pub fn speaker_for(start: f64, end: f64, turns: &[Turn]) -> Option<String> {
    // largest total; ties go to the speaker met first in time
    let mut best: Option<(&str, f64)> = None;
    for (s, o) in coverage(start, end, turns) {
        if best.is_none_or(|(_, b)| o > b) {
            best = Some((s, o));
        }
    }
    if let Some((s, _)) = best {
        return Some(s.to_string());
    }
    let gap = |t: &Turn| {
        if t.end < start {
            start - t.end
        } else {
            (t.start - end).max(0.0)
        }
    };
    turns
        .iter()
        .min_by(|a, b| gap(a).total_cmp(&gap(b)))
        .map(|t| t.speaker.clone())
}

/// One thing to give a speaker: a word, or a whole segment without words.
struct Unit {
    start: f64,
    end: f64,
    text: String,
    segment: usize,
    word: Option<Word>,
}

impl Unit {
    fn ends_sentence(&self) -> bool {
        self.text
            .trim_end()
            .ends_with(['.', '?', '!', '。', '？', '！'])
    }
}

/// Speaker and overlap flag of one unit, `previous` being the speaker of the unit before.
fn attribute(
    u: &Unit,
    turns: &[Turn],
    activity: Option<&SpeakerActivity>,
    previous: Option<&str>,
    opts: &AlignOptions,
) -> (String, bool) {
    let cover = coverage(u.start, u.end, turns);
    if let Some(a) = activity.filter(|a| a.frames() > 0 && !a.speakers.is_empty()) {
        if cover.len() >= 2 && a.overlap_share(u.start, u.end) >= opts.overlap_share {
            // overlapped speech: the speaker most active over the word's frames
            let scores = a.mean_scores(u.start, u.end);
            let score_of = |s: &str| {
                a.speakers
                    .iter()
                    .position(|x| x == s)
                    .map(|i| scores[i])
                    .unwrap_or(0.0)
            };
            let best = cover
                .iter()
                .map(|(s, _)| score_of(s))
                .fold(f32::NEG_INFINITY, f32::max);
            let near_best: Vec<&str> = cover
                .iter()
                .map(|(s, _)| *s)
                .filter(|s| score_of(s) >= best - 0.1)
                .collect();
            let chosen = match previous {
                Some(p) if near_best.contains(&p) => p,
                _ => near_best
                    .iter()
                    .copied()
                    .max_by(|a, b| score_of(a).total_cmp(&score_of(b)))
                    .unwrap_or(near_best[0]),
            };
            return (chosen.to_string(), true);
        }
    }
    let speaker = speaker_for(u.start, u.end, turns)
        .or_else(|| previous.map(str::to_string))
        .unwrap_or_else(|| DEFAULT_SPEAKER.to_string());
    (speaker, false)
}

/// Moves each change of speaker to the nearby boundary between words where
/// a change is most plausible, then gives short runs inside another
/// speaker's sentence back to that speaker.
///
/// A boundary's cost is the seconds of words a move there gives to the other
/// speaker, plus a penalty for where it falls: none at the end of a
/// sentence, `clause_penalty` at a clause mark (`,` `;` `:` `-`) or a pause of
/// `min_pause` or more, `sentence_reach` in the middle of a sentence with no
/// pause. The cheapest boundary between the neighbouring changes wins (the
/// change stays where it is on a tie).
fn refine(units: &[Unit], speakers: &mut [String], opts: &AlignOptions) {
    let n = units.len();
    // boundary b sits between unit b-1 and unit b (1..n)
    let penalty = |k: usize| -> f64 {
        let before = &units[k - 1];
        if before.ends_sentence() {
            0.0
        } else if before
            .text
            .trim_end()
            .ends_with([',', ';', ':', '-', '—', '，', '、'])
            || units[k].start - before.end >= opts.min_pause
        {
            opts.clause_penalty
        } else {
            opts.sentence_reach
        }
    };
    let dur = |u: &Unit| u.end - u.start;
    for b in 1..n {
        if speakers[b] == speakers[b - 1] || penalty(b) == 0.0 {
            continue;
        }
        // stay between the neighbouring changes of speaker
        let lo = (1..b)
            .rev()
            .find(|&k| speakers[k] != speakers[k - 1])
            .unwrap_or(0)
            + 1;
        let hi = (b + 1..n)
            .find(|&k| speakers[k] != speakers[k - 1])
            .unwrap_or(n);
        let (mut best, mut best_cost) = (b, penalty(b));
        let mut moved = 0.0;
        for k in (b + 1)..hi {
            moved += dur(&units[k - 1]);
            if moved >= best_cost {
                break;
            }
            if moved + penalty(k) < best_cost {
                (best, best_cost) = (k, moved + penalty(k));
            }
        }
        let mut moved = 0.0;
        for k in (lo..b).rev() {
            moved += dur(&units[k]);
            if moved >= best_cost {
                break;
            }
            if moved + penalty(k) < best_cost {
                (best, best_cost) = (k, moved + penalty(k));
            }
        }
        if best > b {
            let left = speakers[b - 1].clone();
            speakers[b..best].iter_mut().for_each(|s| *s = left.clone());
        } else if best < b {
            let right = speakers[b].clone();
            speakers[best..b]
                .iter_mut()
                .for_each(|s| *s = right.clone());
        }
    }
    // short runs inside one sentence of another speaker
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && speakers[j + 1] == speakers[i] {
            j += 1;
        }
        let inside = i > 0
            && j + 1 < n
            && speakers[i - 1] == speakers[j + 1]
            && !units[i - 1].ends_sentence()
            && !units[j].ends_sentence();
        if inside && units[j].end - units[i].start < opts.min_run {
            let s = speakers[i - 1].clone();
            speakers[i..=j].iter_mut().for_each(|x| *x = s.clone());
        }
        i = j + 1;
    }
}

/// Aligns transcript segments (with their words) with speaker turns and the
/// frame activity behind them.
pub fn align(
    segments: &[TextSegment],
    turns: &[Turn],
    activity: Option<&SpeakerActivity>,
    opts: AlignOptions,
) -> Alignment {
    align_with(segments, turns, activity, opts, None)
}

/// [`align`], with changes of speaker inside a sentence checked against the
/// speakers' voices where `voices` is given.
pub fn align_with(
    segments: &[TextSegment],
    turns: &[Turn],
    activity: Option<&SpeakerActivity>,
    opts: AlignOptions,
    voices: Option<VoiceCheck<'_>>,
) -> Alignment {
    let mut units: Vec<Unit> = Vec::new();
    for (i, seg) in segments.iter().enumerate() {
        if seg.words.is_empty() {
            units.push(Unit {
                start: seg.start,
                end: seg.end,
                text: seg.text.clone(),
                segment: i,
                word: None,
            });
        }
        for w in &seg.words {
            units.push(Unit {
                start: w.start,
                end: w.end,
                text: w.word.clone(),
                segment: i,
                word: Some(w.clone()),
            });
        }
    }
    let mut speakers: Vec<String> = Vec::with_capacity(units.len());
    let mut overlapped: Vec<bool> = Vec::with_capacity(units.len());
    for u in &units {
        let (s, o) = attribute(
            u,
            turns,
            activity,
            speakers.last().map(String::as_str),
            &opts,
        );
        speakers.push(s);
        overlapped.push(o);
    }
    refine(&units, &mut speakers, &opts);
    if let Some(check) = voices {
        voices::check(&units, &mut speakers, &overlapped, check, opts.voice_margin);
    }

    let mut out = Alignment::default();
    let mut k = 0;
    for (i, seg) in segments.iter().enumerate() {
        let mut words: Vec<SpeakerWord> = Vec::new();
        let mut utterances: Vec<AlignedSegment> = Vec::new();
        while k < units.len() && units[k].segment == i {
            let u = &units[k];
            let speaker = &speakers[k];
            let sw = u.word.clone().map(|w| SpeakerWord {
                word: w,
                speaker: speaker.clone(),
                overlapped: overlapped[k],
            });
            match utterances.last_mut() {
                Some(last) if &last.speaker == speaker => {
                    last.end = u.end;
                    last.text.push_str(&u.text);
                    last.words.extend(sw.clone());
                }
                _ => utterances.push(AlignedSegment {
                    start: u.start,
                    end: u.end,
                    text: u.text.clone(),
                    speaker: speaker.clone(),
                    words: sw.clone().into_iter().collect(),
                }),
            }
            words.extend(sw);
            k += 1;
        }
        out.segments.push(WordSegment {
            start: seg.start,
            end: seg.end,
            text: seg.text.clone(),
            words,
            decoding: seg.decoding.clone(),
        });
        out.aligned.extend(utterances);
    }
    out
}

/// The diarization's turns in time order, one speaker's consecutive turns
/// merged across pauses shorter than `merge_gap`.
pub fn speaker_turns(turns: &[Turn], merge_gap: f64) -> Vec<Turn> {
    let mut sorted: Vec<Turn> = turns.iter().filter(|t| t.end > t.start).cloned().collect();
    sorted.sort_by(|a, b| a.start.total_cmp(&b.start));
    let mut out: Vec<Turn> = Vec::with_capacity(sorted.len());
    for t in sorted {
        match out.last_mut() {
            Some(last) if last.speaker == t.speaker && t.start - last.end < merge_gap => {
                last.end = last.end.max(t.end)
            }
            _ => out.push(t),
        }
    }
    out
}

/// Number of distinct speakers in `turns`.
pub fn count_speakers(turns: &[Turn]) -> usize {
    let mut names: Vec<&str> = turns.iter().map(|t| t.speaker.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    names.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn turn(s: &str, a: f64, b: f64) -> Turn {
        Turn {
            speaker: s.into(),
            start: a,
            end: b,
        }
    }

    fn w(text: &str, a: f64, b: f64) -> Word {
        Word {
            word: text.into(),
            start: a,
            end: b,
            probability: 0.9,
        }
    }

    /// A segment of words laid end to end from `start`, `dur` seconds each,
    /// with `pause` seconds after each word whose index is listed.
    pub(super) fn seg_of(text: &str, start: f64, dur: f64, pauses: &[(usize, f64)]) -> TextSegment {
        let mut t = start;
        let mut words = Vec::new();
        for (i, x) in text.split(' ').enumerate() {
            words.push(w(&format!(" {x}"), t, t + dur));
            t += dur + pauses.iter().find(|p| p.0 == i).map(|p| p.1).unwrap_or(0.0);
        }
        TextSegment {
            start,
            end: t,
            text: format!(" {text}"),
            words,
            decoding: None,
        }
    }

    pub(super) fn speakers_of(a: &Alignment) -> Vec<(String, String)> {
        a.aligned
            .iter()
            .map(|s| (s.speaker.clone(), s.text.trim().to_string()))
            .collect()
    }

    #[test]
    fn overlap_of_intervals() {
        assert_eq!(overlap(0.0, 2.0, 1.0, 3.0), 1.0);
        assert_eq!(overlap(0.0, 1.0, 2.0, 3.0), 0.0);
        assert_eq!(overlap(0.0, 5.0, 1.0, 2.0), 1.0);
    }

    #[test]
    fn largest_overlap_wins_summed_per_speaker() {
        let turns = [
            turn("A", 0.0, 1.0),
            turn("B", 1.0, 2.5),
            turn("A", 2.5, 3.2),
        ];
        // A: 1.0 + 0.7 = 1.7 > B: 1.5
        assert_eq!(speaker_for(0.0, 3.2, &turns).as_deref(), Some("A"));
        assert_eq!(speaker_for(1.1, 2.4, &turns).as_deref(), Some("B"));
    }

    #[test]
    fn no_overlap_takes_the_nearest_turn_and_no_turns_the_default() {
        let turns = [turn("A", 0.0, 1.0), turn("B", 5.0, 6.0)];
        assert_eq!(speaker_for(4.0, 4.5, &turns).as_deref(), Some("B"));
        assert_eq!(speaker_for(1.2, 1.5, &turns).as_deref(), Some("A"));
        assert_eq!(speaker_for(1.0, 2.0, &[]), None);
        let seg = TextSegment {
            start: 0.0,
            end: 1.0,
            text: " hi".into(),
            words: vec![],
            decoding: None,
        };
        let out = align(&[seg], &[], None, AlignOptions::default());
        assert_eq!(out.aligned[0].speaker, DEFAULT_SPEAKER);
        assert!(
            out.segments[0].words.is_empty(),
            "a segment without word times has no words"
        );
    }

    #[test]
    fn each_word_gets_its_speaker_and_utterances_never_mix_speakers() {
        // one Whisper segment over a clean change at a sentence end
        let seg = seg_of("Are you there? Yes I am.", 0.0, 0.5, &[(2, 0.4)]);
        let turns = [turn("A", 0.0, 1.6), turn("B", 1.8, 3.5)];
        let out = align(&[seg], &turns, None, AlignOptions::default());
        assert_eq!(
            speakers_of(&out),
            vec![
                ("A".into(), "Are you there?".into()),
                ("B".into(), "Yes I am.".into())
            ]
        );
        for u in &out.aligned {
            assert!(u.words.iter().all(|x| x.speaker == u.speaker), "{u:?}");
        }
        assert_eq!((out.aligned[1].start, out.aligned[1].end), (1.9, 3.4));
        let per_word: Vec<&str> = out.segments[0]
            .words
            .iter()
            .map(|x| x.speaker.as_str())
            .collect();
        assert_eq!(per_word, vec!["A", "A", "A", "B", "B", "B"]);
    }

    #[test]
    fn a_change_inside_a_sentence_moves_to_the_sentence_end() {
        // conv1's first lines: the diarization starts B at 1.8 s, in the middle of A's sentence
        let seg = seg_of(
            "Good morning, thanks for joining the call so early. No problem.",
            0.0,
            0.35,
            &[(8, 0.5)],
        );
        let turns = [turn("A", 0.0, 1.8), turn("B", 1.8, 5.0)];
        let out = align(&[seg], &turns, None, AlignOptions::default());
        assert_eq!(
            speakers_of(&out),
            vec![
                (
                    "A".into(),
                    "Good morning, thanks for joining the call so early.".into()
                ),
                ("B".into(), "No problem.".into())
            ]
        );
        // the same change moves back when the sentence end is behind it
        let seg = seg_of("Right. So we agreed on the plan", 0.0, 0.4, &[(0, 0.3)]);
        let turns = [turn("A", 0.0, 1.2), turn("B", 1.2, 4.0)];
        let out = align(&[seg], &turns, None, AlignOptions::default());
        assert_eq!(
            speakers_of(&out),
            vec![
                ("A".into(), "Right.".into()),
                ("B".into(), "So we agreed on the plan".into())
            ]
        );
    }

    #[test]
    fn a_change_at_a_clause_mark_stays_when_the_sentence_end_is_far() {
        // realmix1: one reader ends "... thereunder. In this regard," and the next begins
        // "unless ..."; Whisper joined them in one sentence, the diarization is right
        let seg = seg_of(
            "under. In this regard, unless to be rather cold",
            0.0,
            0.4,
            &[],
        );
        let turns = [turn("A", 0.0, 1.6), turn("B", 1.6, 4.0)];
        let out = align(&[seg], &turns, None, AlignOptions::default());
        assert_eq!(
            speakers_of(&out),
            vec![
                ("A".into(), "under. In this regard,".into()),
                ("B".into(), "unless to be rather cold".into())
            ]
        );
    }

    #[test]
    fn without_a_sentence_end_the_change_moves_to_the_longest_pause() {
        // words 0-3 by A, a 0.6 s pause, then B; the diarization changes 0.5 s late
        let seg = seg_of(
            "one two three four five six seven eight",
            0.0,
            0.3,
            &[(3, 0.6)],
        );
        let turns = [turn("A", 0.0, 2.3), turn("B", 2.3, 5.0)];
        let out = align(&[seg], &turns, None, AlignOptions::default());
        assert_eq!(
            speakers_of(&out),
            vec![
                ("A".into(), "one two three four".into()),
                ("B".into(), "five six seven eight".into())
            ]
        );
        // beyond reach, the diarization's change stands
        let opts = AlignOptions {
            sentence_reach: 0.2,
            ..Default::default()
        };
        let out = align(
            &[seg_of(
                "one two three four five six seven eight",
                0.0,
                0.3,
                &[(3, 0.6)],
            )],
            &turns,
            None,
            opts,
        );
        assert_eq!(out.aligned[0].text.trim(), "one two three four five six");
    }

    #[test]
    fn a_short_run_inside_a_sentence_goes_back_to_its_speaker() {
        let seg = seg_of("we should ask the team about it", 0.0, 0.3, &[]);
        // B covers only "the" (0.9-1.2 s): a diarization blip, not a turn
        let turns = [
            turn("A", 0.0, 0.9),
            turn("B", 0.9, 1.2),
            turn("A", 1.2, 3.0),
        ];
        let opts = AlignOptions {
            sentence_reach: 0.0,
            ..Default::default()
        };
        let out = align(&[seg], &turns, None, opts);
        assert_eq!(out.aligned.len(), 1, "{out:?}");
        assert_eq!(out.aligned[0].speaker, "A");
        // a reply that is its own sentence stays
        let segs = [
            seg_of("So we agree.", 0.0, 0.3, &[]),
            seg_of("Yes.", 1.0, 0.3, &[]),
            seg_of("Good then.", 1.5, 0.3, &[]),
        ];
        let turns = [
            turn("A", 0.0, 0.95),
            turn("B", 0.95, 1.35),
            turn("A", 1.35, 2.5),
        ];
        let out = align(&segs, &turns, None, AlignOptions::default());
        assert_eq!(
            out.aligned
                .iter()
                .map(|u| u.speaker.as_str())
                .collect::<Vec<_>>(),
            vec!["A", "B", "A"]
        );
    }

    #[test]
    fn overlapped_words_are_marked_and_decided_by_frame_activity() {
        // frames of 0.1 s from 0.05; A active 0-2 s, B active 1-3 s; A stronger in 1.0-1.5
        let frames = 30;
        let mut scores = vec![0.0f32; frames * 2];
        let mut count = vec![0u8; frames];
        for g in 0..frames {
            let t = 0.05 + g as f64 * 0.1;
            let a = if t < 2.0 {
                if (1.0..1.5).contains(&t) {
                    1.0
                } else {
                    0.95
                }
            } else {
                0.0
            };
            let b = if t >= 1.0 {
                if (1.0..1.5).contains(&t) {
                    0.5
                } else {
                    1.0
                }
            } else {
                0.0
            };
            scores[g * 2] = a;
            scores[g * 2 + 1] = b;
            count[g] = (a > 0.0) as u8 + (b > 0.0) as u8;
        }
        let act = SpeakerActivity {
            frame_step: 0.1,
            first_center: 0.05,
            speakers: vec!["A".into(), "B".into()],
            scores,
            count,
        };
        let turns = [turn("A", 0.0, 2.0), turn("B", 1.0, 3.0)];
        let seg = TextSegment {
            start: 0.0,
            end: 3.0,
            text: " one two three four".into(),
            words: vec![
                w(" one", 0.2, 0.8),
                w(" two", 1.0, 1.5),
                w(" three", 1.6, 1.9),
                w(" four", 2.2, 2.8),
            ],
            decoding: None,
        };
        let out = align(&[seg], &turns, Some(&act), AlignOptions::default());
        let got: Vec<(&str, bool)> = out.segments[0]
            .words
            .iter()
            .map(|x| (x.speaker.as_str(), x.overlapped))
            .collect();
        // "two": A more active; "three": both near-equal -> A, who was speaking
        assert_eq!(
            got,
            vec![("A", false), ("A", true), ("A", true), ("B", false)]
        );
    }

    #[test]
    fn speaker_turns_merge_short_pauses_and_sort() {
        let turns = [
            turn("B", 5.0, 6.0),
            turn("A", 0.0, 1.0),
            turn("A", 1.2, 2.0),
            turn("A", 3.0, 4.0),
        ];
        let st = speaker_turns(&turns, 0.5);
        assert_eq!(
            st,
            vec![
                turn("A", 0.0, 2.0),
                turn("A", 3.0, 4.0),
                turn("B", 5.0, 6.0)
            ]
        );
        assert_eq!(count_speakers(&turns), 2);
    }

    #[test]
    fn words_serialise_flat_with_their_speaker() {
        let sw = SpeakerWord {
            word: w(" hi", 1.0, 1.25),
            speaker: "SPEAKER_01".into(),
            overlapped: false,
        };
        let v = serde_json::to_value(&sw).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"word": " hi", "start": 1.0, "end": 1.25, "probability": 0.9f32, "speaker": "SPEAKER_01", "overlapped": false})
        );
    }
}
