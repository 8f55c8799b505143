//! The voice check: a change of speaker left inside a sentence (after the
//! edges were refined with the words) is checked against the speakers'
//! voices.
//!
//! People rarely hand over in mid-sentence, yet the diarization sometimes
//! changes speaker there: where its pieces of speech are cut on a grid, or
//! where the segmentation runs one person's turn into the next. For each
//! such change between speaker A (the words before it, back to the start
//! of the sentence) and speaker B (the words after it, to the end of the
//! sentence), both sides (their last and first 4 s at most) are embedded
//! (CAM++, as the diarization's pieces are) and compared with A's and B's voice prints: a side that sounds more
//! like the other speaker than like its own is given to that speaker, so
//! the sentence is one person's. Where both sides could move, the one whose
//! voice speaks more clearly for the move goes. A side shorter than the
//! embedding's minimum is not judged, and a change at an overlapped word
//! (two people at once) is left alone.

use super::Unit;
use crate::diarize::cluster::cosine;
use crate::diarize::engine::Voice;

/// Unit voice print of each (start, end) stretch in seconds (the
/// transcript's times), `None` where a stretch is too short.
pub type EmbedSpans<'a> = dyn FnMut(&[(f64, f64)]) -> Vec<Option<Vec<f32>>> + 'a;

/// The speakers' voice prints and a way to embed stretches of the
/// recording (the `Aligner`: CAM++ on the job's audio; tests: fakes).
pub struct VoiceCheck<'a> {
    pub voices: &'a [Voice],
    pub embed: &'a mut EmbedSpans<'a>,
}

/// Seconds of each side embedded, at most: the words next to the change.
const MAX_SIDE: f64 = 4.0;

/// One change of speaker inside a sentence: the words `lo..b` (speaker A)
/// and `b..=hi` (speaker B) of the sentence around it.
struct Change {
    lo: usize,
    b: usize,
    hi: usize,
}

/// The changes of speaker inside a sentence, each with the sentence's words
/// on either side of it (up to the neighbouring changes).
fn changes(units: &[Unit], speakers: &[String], overlapped: &[bool]) -> Vec<Change> {
    let n = units.len();
    let mut out = Vec::new();
    for b in 1..n {
        if speakers[b] == speakers[b - 1]
            || units[b - 1].ends_sentence()
            || overlapped[b - 1]
            || overlapped[b]
        {
            continue;
        }
        let mut lo = b - 1;
        while lo > 0 && speakers[lo - 1] == speakers[b - 1] && !units[lo - 1].ends_sentence() {
            lo -= 1;
        }
        let mut hi = b;
        while hi + 1 < n && speakers[hi + 1] == speakers[b] && !units[hi].ends_sentence() {
            hi += 1;
        }
        out.push(Change { lo, b, hi });
    }
    out
}

/// Gives a side of each change inside a sentence to the other speaker where
/// it sounds more like them (see the module's notes). `margin`: how much
/// closer (cosine) to the other voice a side must be to move.
pub(super) fn check(
    units: &[Unit],
    speakers: &mut [String],
    overlapped: &[bool],
    check: VoiceCheck<'_>,
    margin: f32,
) {
    let found = changes(units, speakers, overlapped);
    if found.is_empty() {
        return;
    }
    // each side up to MAX_SIDE seconds next to the change: a long sentence
    // costs no more than a short one
    let spans: Vec<(f64, f64)> = found
        .iter()
        .flat_map(|c| {
            let (left_end, right_start) = (units[c.b - 1].end, units[c.b].start);
            [
                (units[c.lo].start.max(left_end - MAX_SIDE), left_end),
                (right_start, units[c.hi].end.min(right_start + MAX_SIDE)),
            ]
        })
        .collect();
    let prints = (check.embed)(&spans);
    let voice = |s: &str| check.voices.iter().find(|v| v.speaker == s);
    for (c, sides) in found.iter().zip(prints.chunks(2)) {
        let (a, b) = (speakers[c.b - 1].clone(), speakers[c.b].clone());
        // an earlier move may have changed these words already
        if speakers[c.lo..c.b].iter().any(|s| *s != a)
            || speakers[c.b..=c.hi].iter().any(|s| *s != b)
        {
            continue;
        }
        let (Some(va), Some(vb)) = (voice(&a), voice(&b)) else {
            continue;
        };
        // how much more the side sounds like the other speaker than its own
        let leaning = |side: &Option<Vec<f32>>, own: &Voice, other: &Voice| {
            side.as_ref()
                .map(|e| cosine(e, &other.embedding) - cosine(e, &own.embedding))
        };
        let (left, right) = (leaning(&sides[0], va, vb), leaning(&sides[1], vb, va));
        tracing::trace!(
            at = units[c.b].start,
            ?left,
            ?right,
            "voice check: a change inside a sentence"
        );
        let (left, right) = (left.filter(|&m| m > margin), right.filter(|&m| m > margin));
        let moved = match (left, right) {
            (Some(l), Some(r)) if l > r => (c.lo..c.b, b, l),
            (_, Some(r)) => (c.b..c.hi + 1, a, r),
            (Some(l), None) => (c.lo..c.b, b, l),
            (None, None) => continue,
        };
        let (words, to, leaning) = moved;
        tracing::debug!(
            from = units[words.start].start,
            to = units[words.end - 1].end,
            speaker = %to,
            leaning,
            "voice check: words moved to the other speaker"
        );
        speakers[words].fill(to);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::align::tests::{seg_of, speakers_of, turn};
    use crate::align::{align_with, AlignOptions, Alignment};
    use crate::diarize::rttm::Turn;

    fn voice(speaker: &str, e: [f32; 2]) -> Voice {
        Voice {
            speaker: speaker.into(),
            embedding: e.to_vec(),
            pieces: 1,
        }
    }

    /// Who really speaks when: a stretch's print is the mix of the true
    /// speakers' voices (A = [1, 0], B = [0, 1]) over it; under 1 s: none.
    fn truth_embedder(b_from: f64) -> impl FnMut(&[(f64, f64)]) -> Vec<Option<Vec<f32>>> {
        move |spans: &[(f64, f64)]| {
            spans
                .iter()
                .map(|&(a, b)| {
                    if b - a < 1.0 {
                        return None;
                    }
                    let in_b = (b - a.max(b_from)).max(0.0) as f32;
                    let in_a = (b.min(b_from) - a).max(0.0) as f32;
                    let n = (in_a * in_a + in_b * in_b).sqrt();
                    Some(vec![in_a / n, in_b / n])
                })
                .collect()
        }
    }

    fn run(turns: &[Turn], b_from: f64, calls: &mut Vec<(f64, f64)>) -> Alignment {
        let segments = [
            // 0.3 s words, a 0.7 s pause after "morning,"
            seg_of(
                "Good morning, thanks for joining the call so early.",
                0.0,
                0.3,
                &[(1, 0.7)],
            ),
            seg_of(
                "No problem at all I wanted to go over the budget.",
                3.6,
                0.3,
                &[],
            ),
        ];
        let voices = [voice("A", [1.0, 0.0]), voice("B", [0.0, 1.0])];
        let mut truth = truth_embedder(b_from);
        let mut embed = |spans: &[(f64, f64)]| {
            calls.extend_from_slice(spans);
            truth(spans)
        };
        let check = VoiceCheck {
            voices: &voices,
            embed: &mut embed,
        };
        align_with(&segments, turns, None, AlignOptions::default(), Some(check))
    }

    fn said(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(s, t)| (s.to_string(), t.to_string()))
            .collect()
    }

    #[test]
    fn a_side_that_sounds_like_the_other_speaker_goes_to_them() {
        // the diarization hands over at 1.8 s, inside A's first sentence
        let turns = [turn("A", 0.0, 1.8), turn("B", 1.8, 6.6)];
        let mut calls = Vec::new();
        let a = run(&turns, 3.6, &mut calls);
        assert_eq!(
            speakers_of(&a),
            said(&[
                ("A", "Good morning, thanks for joining the call so early."),
                ("B", "No problem at all I wanted to go over the budget."),
            ])
        );
        assert_eq!(calls.len(), 2, "both sides of the one change: {calls:?}");
        assert!(a.aligned[0].words.iter().all(|w| w.speaker == "A"));
    }

    #[test]
    fn a_real_change_inside_a_sentence_stays() {
        // B really takes over after "Good morning," (an interruption)
        let turns = [turn("A", 0.0, 1.8), turn("B", 1.8, 6.6)];
        let a = run(&turns, 0.8, &mut Vec::new());
        assert_eq!(
            speakers_of(&a),
            said(&[
                ("A", "Good morning,"),
                ("B", "thanks for joining the call so early."),
                ("B", "No problem at all I wanted to go over the budget."),
            ])
        );
    }

    #[test]
    fn the_start_of_a_sentence_that_sounds_like_the_next_speaker_goes_to_them() {
        // B speaks the whole second sentence; the diarization gives its first
        // words (over 1 s of them) to A
        let turns = [turn("A", 0.0, 5.0), turn("B", 5.0, 6.6)];
        let a = run(&turns, 3.5, &mut Vec::new());
        assert_eq!(
            speakers_of(&a),
            said(&[
                ("A", "Good morning, thanks for joining the call so early."),
                ("B", "No problem at all I wanted to go over the budget."),
            ])
        );
    }

    #[test]
    fn changes_at_sentence_ends_are_not_checked() {
        let turns = [turn("A", 0.0, 3.5), turn("B", 3.5, 6.6)];
        let mut calls = Vec::new();
        let a = run(&turns, 3.5, &mut calls);
        assert!(calls.is_empty(), "nothing to check: {calls:?}");
        assert_eq!(a.aligned.len(), 2);
    }

    #[test]
    fn sides_too_short_to_embed_are_not_judged() {
        // B says everything, but the diarization gives A "Good morning,"
        // (0.6 s): too short to tell whose voice it is, so it stays
        let turns = [turn("A", 0.0, 1.8), turn("B", 1.8, 7.2)];
        let mut calls = Vec::new();
        let a = run(&turns, 0.0, &mut calls);
        assert_eq!(calls.len(), 2);
        assert!(calls[0].1 - calls[0].0 < 1.0, "{calls:?}");
        assert_eq!(
            speakers_of(&a)[0],
            ("A".to_string(), "Good morning,".to_string()),
            "left as the diarization says"
        );
    }

    #[test]
    fn changes_at_overlapped_words_or_sentence_ends_are_left_alone() {
        let unit = |text: &str, start: f64| Unit {
            start,
            end: start + 0.5,
            text: text.into(),
            segment: 0,
            word: None,
        };
        let units = [
            unit(" one", 0.0),
            unit(" two", 0.5),
            unit(" three.", 1.0),
            unit(" four", 1.5),
            unit(" five", 2.0),
            unit(" six.", 2.5),
        ];
        let speakers: Vec<String> = ["A", "B", "B", "A", "A", "B"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let found = changes(&units, &speakers, &[false; 6]);
        // A|B after "one" and A|B after "five"; "three." ends a sentence
        let at: Vec<(usize, usize, usize)> = found.iter().map(|c| (c.lo, c.b, c.hi)).collect();
        assert_eq!(at, [(0, 1, 2), (3, 5, 5)]);
        let overlapped = [false, true, false, false, false, false];
        let found = changes(&units, &speakers, &overlapped);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].b, 5);
    }
}
