//! Speaker alignment: plain functions joining the transcript's segments with
//! the diarization's speaker turns (the Aligner actor only calls these).
//!
//! - Each segment gets the speaker whose turns overlap it the most.
//! - A segment that spans a speaker change is split at the change when each
//!   piece lasts at least `min_piece` seconds and gets at least one word.
//!   Whisper gives segment timing only (no word timestamps here), so the
//!   words are shared out in proportion to each piece's duration (by
//!   character count), each cut then moved to the nearest end of a sentence
//!   within reach: an approximation, exact at the piece boundaries only as
//!   far as the speaker turns are.
//! - Speaker turns: the diarization's turns in time order, with one speaker's
//!   consecutive turns merged across pauses shorter than `merge_gap`.

use serde::{Deserialize, Serialize};

use crate::audio::round_ms;
use crate::diarize::rttm::Turn;

/// Label given when the diarization found no speech at all.
pub const DEFAULT_SPEAKER: &str = "SPEAKER_00";

/// A transcript segment, as the aligner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
}

/// A segment with its speaker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlignedSegment {
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub speaker: String,
}

#[derive(Debug, Clone, Copy)]
pub struct AlignOptions {
    /// Shortest piece (seconds) a segment is split into at a speaker change.
    pub min_piece: f64,
    /// Pauses shorter than this between one speaker's turns are merged in speaker_turns.
    pub merge_gap: f64,
}

impl Default for AlignOptions {
    fn default() -> Self {
        AlignOptions { min_piece: 1.0, merge_gap: 0.5 }
    }
}

/// Length of the intersection of two intervals (0 when disjoint).
pub fn overlap(a0: f64, a1: f64, b0: f64, b1: f64) -> f64 {
    (a1.min(b1) - a0.max(b0)).max(0.0)
}

/// The speaker whose turns overlap `[start, end]` the most in total; when
/// none overlaps, the speaker of the nearest turn; None without turns.
pub fn speaker_for(start: f64, end: f64, turns: &[Turn]) -> Option<String> {
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
    // largest total; ties go to the speaker met first in time
    let mut best: Option<(&str, f64)> = None;
    for (s, o) in totals {
        if best.is_none_or(|(_, b)| o > b) {
            best = Some((s, o));
        }
    }
    if let Some((s, _)) = best {
        return Some(s.to_string());
    }
    let gap = |t: &Turn| if t.end < start { start - t.end } else { (t.start - end).max(0.0) };
    turns
        .iter()
        .min_by(|a, b| gap(a).total_cmp(&gap(b)))
        .map(|t| t.speaker.clone())
}

/// Runs of one speaker inside `[start, end]`, at 10 ms resolution: each
/// instant goes to the covering turn's speaker (with several, the one that
/// covers more of the segment; with none, the previous run's speaker). Runs
/// shorter than `min_piece` are absorbed by their neighbours.
pub fn speaker_runs(start: f64, end: f64, turns: &[Turn], min_piece: f64) -> Vec<(String, f64, f64)> {
    let Some(main) = speaker_for(start, end, turns) else { return Vec::new() };
    let step = 0.01;
    let n = (((end - start) / step).ceil() as usize).max(1);
    let covering: Vec<&Turn> = turns.iter().filter(|t| overlap(start, end, t.start, t.end) > 0.0).collect();
    let weight = |sp: &str| -> f64 {
        covering.iter().filter(|t| t.speaker == sp).map(|t| overlap(start, end, t.start, t.end)).sum()
    };
    let mut runs: Vec<(String, f64, f64)> = Vec::new();
    for i in 0..n {
        let t0 = start + i as f64 * step;
        let t1 = (t0 + step).min(end);
        let mid = 0.5 * (t0 + t1);
        let here = covering
            .iter()
            .filter(|t| t.start <= mid && mid < t.end)
            .max_by(|a, b| weight(&a.speaker).total_cmp(&weight(&b.speaker)))
            .map(|t| t.speaker.clone());
        let sp = here.or_else(|| runs.last().map(|r| r.0.clone())).unwrap_or_else(|| main.clone());
        match runs.last_mut() {
            Some(r) if r.0 == sp => r.2 = t1,
            _ => runs.push((sp, t0, t1)),
        }
    }
    // absorb short runs, shortest first, into the longer neighbour
    while runs.len() > 1 {
        let (i, len) = runs
            .iter()
            .enumerate()
            .map(|(i, r)| (i, r.2 - r.1))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        if len >= min_piece {
            break;
        }
        let into_prev = match (i.checked_sub(1), runs.get(i + 1)) {
            (Some(p), Some(next)) => (runs[p].2 - runs[p].1) >= (next.2 - next.1),
            (Some(_), None) => true,
            _ => false,
        };
        let r = runs.remove(i);
        if into_prev {
            runs[i - 1].2 = r.2;
        } else {
            runs[i].1 = r.1;
        }
        // neighbours of one speaker join
        let mut merged: Vec<(String, f64, f64)> = Vec::with_capacity(runs.len());
        for r in runs.drain(..) {
            match merged.last_mut() {
                Some(m) if m.0 == r.0 => m.2 = r.2,
                _ => merged.push(r),
            }
        }
        runs = merged;
    }
    runs
}

/// Splits `text` into `weights.len()` word groups whose character counts
/// follow `weights`, each cut then moved to the nearest end of a sentence
/// (a word ending in `.`, `?` or `!`) when one is within reach (a third of
/// the words, at least 4): people rarely hand over mid-sentence, and the
/// duration share alone puts a few words of one speaker on the other. None
/// when there are fewer words than groups.
fn share_words(text: &str, weights: &[f64]) -> Option<Vec<String>> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let n = words.len();
    let groups = weights.len();
    if n < groups || groups == 0 {
        return None;
    }
    // proportional cuts: cuts[k] is the index of the first word of group k + 1
    let total_w: f64 = weights.iter().sum();
    let chars: Vec<usize> = words.iter().map(|w| w.len() + 1).collect();
    let total_c: usize = chars.iter().sum();
    let mut cuts = Vec::with_capacity(groups - 1);
    let (mut acc_w, mut acc_c, mut next) = (0.0, 0usize, 0usize);
    for (k, w) in weights[..groups - 1].iter().enumerate() {
        acc_w += w;
        let target = acc_w / total_w * total_c as f64;
        let first = next;
        // at least one word, and leave one for each later group
        while n - next > groups - 1 - k && (next == first || (acc_c as f64 + chars[next] as f64 / 2.0) <= target) {
            acc_c += chars[next];
            next += 1;
        }
        cuts.push(next);
    }
    let reach = (n / 3).max(4);
    let sentence_end = |j: usize| words[j - 1].ends_with(['.', '?', '!']);
    let mut prev = 0;
    for k in 0..cuts.len() {
        let (lo, hi) = (prev + 1, n - (cuts.len() - k));
        let want = cuts[k].clamp(lo, hi);
        let snapped = (lo..=hi)
            .filter(|&j| sentence_end(j) && j.abs_diff(want) <= reach)
            .min_by_key(|&j| (j.abs_diff(want), j));
        cuts[k] = snapped.unwrap_or(want);
        prev = cuts[k];
    }
    let mut out = Vec::with_capacity(groups);
    let mut start = 0;
    for &c in cuts.iter().chain(std::iter::once(&n)) {
        out.push(words[start..c].join(" "));
        start = c;
    }
    Some(out)
}

/// Aligns transcript segments with speaker turns.
pub fn align(segments: &[TextSegment], turns: &[Turn], opts: AlignOptions) -> Vec<AlignedSegment> {
    let mut out = Vec::with_capacity(segments.len());
    for seg in segments {
        let runs = speaker_runs(seg.start, seg.end, turns, opts.min_piece);
        if runs.len() > 1 {
            let weights: Vec<f64> = runs.iter().map(|r| r.2 - r.1).collect();
            if let Some(groups) = share_words(&seg.text, &weights) {
                let lead = if seg.text.starts_with(' ') { " " } else { "" };
                for ((speaker, s, e), text) in runs.into_iter().zip(groups) {
                    // split points are computed on a 10 ms grid: reported to the millisecond like every timestamp
                    out.push(AlignedSegment { start: round_ms(s), end: round_ms(e), text: format!("{lead}{text}"), speaker });
                }
                continue;
            }
        }
        let speaker = match runs.into_iter().next() {
            Some((s, _, _)) => s,
            None => speaker_for(seg.start, seg.end, turns).unwrap_or_else(|| DEFAULT_SPEAKER.to_string()),
        };
        out.push(AlignedSegment { start: seg.start, end: seg.end, text: seg.text.clone(), speaker });
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
            Some(last) if last.speaker == t.speaker && t.start - last.end < merge_gap => last.end = last.end.max(t.end),
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

    fn turn(s: &str, a: f64, b: f64) -> Turn {
        Turn { speaker: s.into(), start: a, end: b }
    }

    fn seg(a: f64, b: f64, text: &str) -> TextSegment {
        TextSegment { start: a, end: b, text: text.into() }
    }

    #[test]
    fn overlap_of_intervals() {
        assert_eq!(overlap(0.0, 2.0, 1.0, 3.0), 1.0);
        assert_eq!(overlap(0.0, 1.0, 2.0, 3.0), 0.0);
        assert_eq!(overlap(0.0, 5.0, 1.0, 2.0), 1.0);
    }

    #[test]
    fn largest_overlap_wins_summed_per_speaker() {
        let turns = [turn("A", 0.0, 1.0), turn("B", 1.0, 2.5), turn("A", 2.5, 3.2)];
        // A: 1.0 + 0.7 = 1.7 > B: 1.5
        assert_eq!(speaker_for(0.0, 3.2, &turns).as_deref(), Some("A"));
        assert_eq!(speaker_for(1.1, 2.4, &turns).as_deref(), Some("B"));
    }

    #[test]
    fn no_overlap_takes_the_nearest_turn_and_no_turns_none() {
        let turns = [turn("A", 0.0, 1.0), turn("B", 5.0, 6.0)];
        assert_eq!(speaker_for(4.0, 4.5, &turns).as_deref(), Some("B"));
        assert_eq!(speaker_for(1.2, 1.5, &turns).as_deref(), Some("A"));
        assert_eq!(speaker_for(1.0, 2.0, &[]), None);
        let out = align(&[seg(0.0, 1.0, " hi")], &[], AlignOptions::default());
        assert_eq!(out[0].speaker, DEFAULT_SPEAKER);
    }

    #[test]
    fn segment_spanning_a_change_is_split_at_the_change() {
        let turns = [turn("A", 0.0, 3.0), turn("B", 3.0, 6.0)];
        let out = align(&[seg(0.0, 6.0, " one two three four five six")], &turns, AlignOptions::default());
        assert_eq!(out.len(), 2, "{out:?}");
        assert_eq!(out[0].speaker, "A");
        assert_eq!(out[1].speaker, "B");
        assert!((out[0].end - 3.0).abs() < 0.011 && (out[1].start - 3.0).abs() < 0.011);
        assert_eq!(out[0].start, 0.0);
        assert!((out[1].end - 6.0).abs() < 1e-9);
        assert_eq!(out[0].text, " one two three");
        assert_eq!(out[1].text, " four five six");
    }

    #[test]
    fn short_intrusions_and_one_word_segments_are_not_split() {
        // B covers only 0.4 s: below min_piece, absorbed
        let turns = [turn("A", 0.0, 2.8), turn("B", 2.8, 3.2), turn("A", 3.2, 6.0)];
        let out = align(&[seg(0.0, 6.0, " a b c d e f")], &turns, AlignOptions::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].speaker, "A");
        // a long change but a single word: cannot split
        let turns = [turn("A", 0.0, 3.0), turn("B", 3.0, 6.0)];
        let out = align(&[seg(0.0, 6.0, " hello")], &turns, AlignOptions::default());
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn gaps_inside_a_segment_keep_the_previous_speaker() {
        let turns = [turn("A", 0.0, 2.0), turn("B", 4.0, 6.0)];
        let runs = speaker_runs(0.0, 6.0, &turns, 1.0);
        assert_eq!(runs.len(), 2);
        assert_eq!(runs[0].0, "A");
        assert!((runs[0].2 - 4.0).abs() < 0.011, "{runs:?}");
    }

    #[test]
    fn words_are_shared_by_duration_with_one_at_least() {
        let g = share_words("a b c d", &[3.0, 1.0]).unwrap();
        assert_eq!(g, vec!["a b c", "d"]);
        let g = share_words("alpha beta", &[0.1, 5.0]).unwrap();
        assert_eq!(g, vec!["alpha", "beta"]);
        assert!(share_words("one", &[1.0, 1.0]).is_none());
        let g = share_words("a b c d e f g h", &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(g.iter().map(|s| s.split(' ').count()).sum::<usize>(), 8);
    }

    #[test]
    fn cuts_move_to_the_nearest_end_of_a_sentence() {
        // conv1's first segment: the duration share cuts after "thanks for"
        let text = "Good morning, thanks for joining the call so early. No problem. I wanted to go over the budget before the meeting on Thursday.";
        let g = share_words(text, &[2.6, 5.6]).unwrap();
        assert_eq!(g[0], "Good morning, thanks for joining the call so early.");
        assert_eq!(g[1], "No problem. I wanted to go over the budget before the meeting on Thursday.");
        let g = share_words("Mostly because the conference moved to a different city this year. Okay, then we should ask the team.", &[2.0, 2.3]).unwrap();
        assert_eq!(g[1], "Okay, then we should ask the team.");
        // no sentence end within reach: the duration share stands
        let g = share_words("a b c d e f g h i j k l m n o p. q", &[1.0, 1.0]).unwrap();
        assert_eq!(g, vec!["a b c d e f g h i", "j k l m n o p. q"]);
        // every group keeps a word
        let g = share_words("One. Two. Three.", &[1.0, 1.0, 1.0]).unwrap();
        assert_eq!(g, vec!["One.", "Two.", "Three."]);
    }

    #[test]
    fn speaker_turns_merge_short_pauses_and_sort() {
        let turns = [turn("B", 5.0, 6.0), turn("A", 0.0, 1.0), turn("A", 1.2, 2.0), turn("A", 3.0, 4.0)];
        let st = speaker_turns(&turns, 0.5);
        assert_eq!(st, vec![turn("A", 0.0, 2.0), turn("A", 3.0, 4.0), turn("B", 5.0, 6.0)]);
        assert_eq!(count_speakers(&turns), 2);
    }
}
