//! Speech gating: the transcript held against the speech regions a voice
//! activity detector found (plain functions over intervals in seconds).
//!
//! Whisper writes text where nobody speaks (a "Thank you." on noise, a
//! "Hello." in near-silence) and its word times drift into the pauses around
//! speech. With the speech regions:
//! - a word that touches no speech is dropped, unless it lies within
//!   `tolerance` of a region (word times are not exact): then it is moved
//!   into that region's edge;
//! - a word that touches speech is clamped to it (no word spans a pause);
//! - the first word after a pause starts where the speech starts, the last
//!   word before a pause ends where it ends (the region's core: its frames
//!   above the detector's threshold, without the padding), when that moves
//!   the word edge by at most `max_snap` seconds (the aligner's edges then
//!   sit in the pauses, where changes of speaker happen);
//! - a segment left without words is dropped, its text rebuilt from the words
//!   kept; a segment without word timestamps is kept when it overlaps speech
//!   by at least `min_overlap` of its length.

use super::transcribe::Segment;
use super::Word;
use crate::vad::{clamp_to_speech, overlap_with_speech, SpeechRegion};

/// How far (seconds) a speech edge may move out to where its sound starts or ends.
const SOUND_REACH: f64 = 0.5;

/// Where the speech is: the detector's regions (sorted, disjoint) and their
/// cores (the same regions without padding, one per region).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpeechMap {
    pub regions: Vec<SpeechRegion>,
    pub cores: Vec<SpeechRegion>,
}

impl SpeechMap {
    /// From a detector's answer on `samples`: the cores are the frames at
    /// or above `threshold`, widened to where their sound starts and ends
    /// (`vad::sound_edges`).
    pub fn new<'s>(
        speech: &crate::vad::Speech,
        samples: impl Into<crate::audio::Samples<'s>>,
        threshold: f32,
    ) -> SpeechMap {
        let cores = crate::vad::sound_edges(samples, &speech.cores(threshold), SOUND_REACH);
        SpeechMap {
            regions: speech.regions.clone(),
            cores,
        }
    }

    /// Regions that are their own cores (no padding known).
    pub fn from_regions(regions: Vec<SpeechRegion>) -> SpeechMap {
        SpeechMap {
            cores: regions.clone(),
            regions,
        }
    }

    /// Shifted by `dt` seconds.
    pub fn shifted(&self, dt: f64) -> SpeechMap {
        let sh = |v: &[SpeechRegion]| {
            v.iter()
                .map(|r| SpeechRegion::new(r.start + dt, r.end + dt))
                .collect()
        };
        SpeechMap {
            regions: sh(&self.regions),
            cores: sh(&self.cores),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct GateOptions {
    /// A word this close (seconds) to a speech region is moved into it rather than dropped.
    pub tolerance: f64,
    /// Largest move (seconds) of a word edge onto the edge of its speech region.
    pub max_snap: f64,
    /// A segment without words is kept when speech covers at least this share of it.
    pub min_overlap: f64,
}

impl GateOptions {
    pub fn from_config(v: &crate::config::VadConfig) -> GateOptions {
        GateOptions {
            tolerance: v.tolerance_ms as f64 / 1000.0,
            max_snap: v.max_snap_ms as f64 / 1000.0,
            ..GateOptions::default()
        }
    }
}

impl Default for GateOptions {
    fn default() -> Self {
        GateOptions {
            tolerance: 0.2,
            max_snap: 1.0,
            min_overlap: 0.2,
        }
    }
}

/// Whether any speech lies in `[start, end]`.
pub fn any_speech(start: f64, end: f64, speech: &[SpeechRegion]) -> bool {
    overlap_with_speech(start, end, speech) > 0.0
}

/// Index of the region a word belongs to after `place`, and its new times;
/// None when no region is near.
fn place(w: &Word, speech: &[SpeechRegion], tolerance: f64) -> Option<(usize, f64, f64)> {
    let first = speech.partition_point(|r| r.end <= w.start);
    if let Some((start, end)) = clamp_to_speech(w.start, w.end, speech) {
        // the region holding most of the word
        let touching =
            (first..speech.len()).take_while(|&i| speech[i].start < w.end.max(w.start + 1e-9));
        let o = |i: usize| overlap_with_speech(w.start, w.end, &speech[i..=i]);
        // (a zero-length word on a region's end edge overlaps nothing: that region holds it)
        let holding = speech
            .partition_point(|r| r.end < w.start)
            .min(speech.len() - 1);
        let home = touching
            .max_by(|&x, &y| o(x).total_cmp(&o(y)))
            .unwrap_or(holding);
        // a word never spans a pause: it is held to the region with most of it
        let (start, end) = (start.max(speech[home].start), end.min(speech[home].end));
        return Some((home, start, end.max(start)));
    }
    // no region touches it: the nearest one, when within tolerance
    let before = first.checked_sub(1).map(|i| (i, w.start - speech[i].end));
    let after = speech.get(first).map(|r| (first, r.start - w.end));
    let (i, d) = [before, after]
        .into_iter()
        .flatten()
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    if d > tolerance {
        return None;
    }
    let SpeechRegion { start: r0, end: r1 } = speech[i];
    let dur = (w.end - w.start).min(r1 - r0);
    if w.end <= r0 {
        Some((i, r0, r0 + dur))
    } else {
        Some((i, r1 - dur, r1))
    }
}

/// Holds the segments against the speech; see the module doc.
pub fn gate_segments(segments: Vec<Segment>, map: &SpeechMap, opts: GateOptions) -> Vec<Segment> {
    let speech = &map.regions[..];
    // place every word, remembering its region
    let mut placed: Vec<(Segment, Vec<(Word, usize)>)> = Vec::with_capacity(segments.len());
    for mut seg in segments {
        if seg.words.is_empty() {
            let len = (seg.end - seg.start).max(1e-9);
            if overlap_with_speech(seg.start, seg.end, speech) / len >= opts.min_overlap {
                placed.push((seg, Vec::new()));
            }
            continue;
        }
        let words: Vec<(Word, usize)> = std::mem::take(&mut seg.words)
            .into_iter()
            .filter_map(|w| {
                place(&w, speech, opts.tolerance).map(|(r, s, e)| {
                    (
                        Word {
                            start: s,
                            end: e,
                            ..w
                        },
                        r,
                    )
                })
            })
            .collect();
        if !words.is_empty() {
            placed.push((seg, words));
        }
    }
    // snap the edges of each region's first and last word
    let regions: Vec<usize> = placed
        .iter()
        .flat_map(|(_, ws)| ws.iter().map(|w| w.1))
        .collect();
    let mut k = 0;
    for (_, words) in placed.iter_mut() {
        for (w, r) in words.iter_mut() {
            let core = map.cores.get(*r).copied().unwrap_or(speech[*r]);
            if (k == 0 || regions[k - 1] != *r)
                && (w.start - core.start).abs() <= opts.max_snap
                && w.end > core.start
            {
                w.start = core.start;
            }
            if (k + 1 == regions.len() || regions[k + 1] != *r)
                && (core.end - w.end).abs() <= opts.max_snap
                && w.start < core.end
            {
                w.end = core.end;
            }
            w.start = crate::audio::round_ms(w.start);
            w.end = crate::audio::round_ms(w.end.max(w.start));
            k += 1;
        }
    }
    placed
        .into_iter()
        .map(|(mut seg, words)| {
            if !words.is_empty() {
                let kept: Vec<Word> = words.into_iter().map(|(w, _)| w).collect();
                seg.text = kept.iter().map(|w| w.word.as_str()).collect();
                seg.start = kept[0].start;
                // a segment keeps a length (one timestamp step at least)
                seg.end = kept[kept.len() - 1]
                    .end
                    .max(seg.start + super::tokenizer::TIME_PRECISION);
                seg.words = kept;
            }
            seg
        })
        .enumerate()
        .map(|(i, seg)| Segment { id: i + 1, ..seg })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(t: &str, s: f64, e: f64) -> Word {
        Word {
            word: t.into(),
            start: s,
            end: e,
            probability: 0.9,
        }
    }

    fn seg(words: Vec<Word>) -> Segment {
        Segment {
            id: 0,
            start: words.first().map_or(0.0, |w| w.start),
            end: words.last().map_or(0.0, |w| w.end),
            text: words.iter().map(|w| w.word.as_str()).collect(),
            tokens: vec![],
            avg_logprob: -0.2,
            no_speech_prob: 0.1,
            temperature: 0.0,
            compression_ratio: 1.2,
            words,
        }
    }

    fn map(spans: &[(f64, f64)]) -> SpeechMap {
        SpeechMap::from_regions(
            spans
                .iter()
                .map(|&(a, b)| SpeechRegion::new(a, b))
                .collect(),
        )
    }

    #[test]
    fn any_speech_in_sorted_regions() {
        let speech = map(&[(1.0, 2.0), (3.0, 5.0)]).regions;
        assert!(any_speech(4.9, 6.0, &speech));
        assert!(!any_speech(5.0, 6.0, &speech));
        assert!(!any_speech(0.0, 1.0, &speech));
    }

    #[test]
    fn text_where_nobody_speaks_is_dropped() {
        // "Hello." three times in near-silence, then real speech from 6.7 s
        let segs = vec![
            seg(vec![word(" Hello.", 0.0, 1.0)]),
            seg(vec![word(" Hello.", 2.0, 3.0)]),
            seg(vec![word(" Hello.", 4.0, 5.0)]),
            seg(vec![word(" Good", 6.8, 7.1), word(" morning.", 7.1, 7.6)]),
        ];
        let out = gate_segments(segs, &map(&[(6.7, 7.7)]), GateOptions::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, " Good morning.");
        assert_eq!(out[0].id, 1);
        // nothing at all without speech
        let out = gate_segments(
            vec![seg(vec![word(" you", 1.0, 2.0)])],
            &map(&[]),
            GateOptions::default(),
        );
        assert!(out.is_empty());
    }

    #[test]
    fn words_are_clamped_and_snapped_to_the_speech_edges() {
        // two stretches of speech with a pause 2.0-2.6; the DTW ran "early." into the pause
        // and started "No" late
        let segs = vec![seg(vec![
            word(" so", 0.4, 1.2),
            word(" early.", 1.2, 2.5),
            word(" No", 2.9, 3.1),
            word(" problem.", 3.1, 3.6),
        ])];
        let out = gate_segments(
            segs,
            &map(&[(0.3, 2.0), (2.6, 3.8)]),
            GateOptions::default(),
        );
        let times: Vec<(f64, f64)> = out[0].words.iter().map(|w| (w.start, w.end)).collect();
        assert_eq!(times, vec![(0.3, 1.2), (1.2, 2.0), (2.6, 3.1), (3.1, 3.8)]);
        assert_eq!((out[0].start, out[0].end), (0.3, 3.8));
        // a snap larger than max_snap is not made
        let segs = vec![seg(vec![word(" late", 2.0, 2.4)])];
        let out = gate_segments(
            segs,
            &map(&[(0.0, 3.0)]),
            GateOptions {
                max_snap: 1.0,
                ..Default::default()
            },
        );
        assert_eq!((out[0].words[0].start, out[0].words[0].end), (2.0, 3.0));
    }

    #[test]
    fn a_word_across_a_pause_is_held_to_the_region_with_most_of_it() {
        // "ask" timed from the end of one region across the pause into the next
        let m = map(&[(8.0, 10.5), (11.06, 12.65)]);
        let out = gate_segments(
            vec![seg(vec![
                word(" Americans", 9.7, 10.27),
                word(" ask", 10.23, 11.87),
            ])],
            &m,
            GateOptions {
                max_snap: 0.0,
                ..Default::default()
            },
        );
        let w = &out[0].words;
        assert_eq!((w[1].start, w[1].end), (11.06, 11.87));
        assert_eq!((w[0].start, w[0].end), (9.7, 10.27));
    }

    #[test]
    fn a_zero_length_word_on_a_region_edge_stays_in_that_region() {
        let segs = vec![seg(vec![word(" a", 0.5, 1.0), word(" b", 1.0, 1.0)])];
        let out = gate_segments(
            segs,
            &map(&[(0.5, 1.0), (1.5, 2.0)]),
            GateOptions::default(),
        );
        let w = &out[0].words[1];
        assert!(w.end <= 1.0 + 1e-9, "{w:?} pulled into the next region");
    }

    #[test]
    fn a_word_just_outside_speech_is_moved_in_and_segments_without_words_need_speech() {
        let segs = vec![seg(vec![word(" yes", 0.85, 0.95)])];
        let out = gate_segments(
            segs,
            &map(&[(1.0, 1.5)]),
            GateOptions {
                max_snap: 0.0,
                ..Default::default()
            },
        );
        let w = &out[0].words[0];
        assert!(
            (w.start - 1.0).abs() < 1e-9 && (w.end - 1.1).abs() < 1e-9,
            "{w:?}"
        );
        let mut plain = seg(vec![]);
        plain.start = 0.0;
        plain.end = 10.0;
        plain.text = " hm".into();
        assert!(gate_segments(
            vec![plain.clone()],
            &map(&[(9.5, 10.0)]),
            GateOptions::default()
        )
        .is_empty());
        assert_eq!(
            gate_segments(vec![plain], &map(&[(5.0, 10.0)]), GateOptions::default()).len(),
            1
        );
    }
}
