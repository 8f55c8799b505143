//! Word timestamps from Whisper's own cross-attention, as openai-whisper's
//! `timing.py` and faster-whisper's `word_timestamps` compute them.
//!
//! For a decoded window, the finished text tokens are fed once more through
//! the decoder (`[sot sequence] <|notimestamps|> text <|endoftext|>`, no cache);
//! the decoder graph returns the scaled cross-attention scores of the model's
//! alignment heads. Per head: softmax over the window's audio frames,
//! normalisation over the tokens (zero mean, unit variance per frame), a
//! median filter of width 7 along time; then the mean over heads, and dynamic
//! time warping of tokens against frames (cost = -attention). A token's time
//! is the first frame the path reaches its row; tokens are merged into words
//! (at spaces, or at whole characters for languages written without spaces),
//! leading and trailing punctuation attached to the neighbouring word.
//!
//! Everything here is plain arithmetic on slices: the model call lives in
//! `model.rs`, the use per window in `transcribe.rs`.

use serde::{Deserialize, Serialize};

use super::logits::max_of;
use super::tokenizer::WhisperTokenizer;

/// Encoder positions per second (1500 per 30 s).
pub const FRAMES_PER_SECOND: f64 = 50.0;
/// Width of the median filter along time, in encoder positions.
pub const MEDIAN_FILTER_WIDTH: usize = 7;
/// Punctuation that joins the word after it.
pub const PREPEND_PUNCTUATIONS: &str = "\"'“¿([{-";
/// Punctuation that joins the word before it.
pub const APPEND_PUNCTUATIONS: &str = "\"'.。,，!！?？:：”)]}、";
const SENTENCE_END_MARKS: &str = ".。!！?？";
/// Languages written without spaces between words: split at whole characters.
const NO_SPACE_LANGUAGES: [&str; 6] = ["zh", "ja", "th", "lo", "my", "yue"];

/// One recognised word with its time in the audio (seconds) and the mean
/// probability of its tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Word {
    /// The word as Whisper wrote it, with its leading space and attached punctuation.
    pub word: String,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// A word of the DTW alignment, times relative to its window.
#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    pub tokens: Vec<u32>,
    pub start: f64,
    pub end: f64,
    pub probability: f32,
}

/// Softmax over the first `frames` columns of each row, in place on a copy:
/// `qk` is `[heads, tokens, stride]` (stride = the graph's 1500 positions);
/// returns `[heads, tokens, frames]`.
fn softmax_rows(qk: &[f32], heads: usize, tokens: usize, stride: usize, frames: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(heads * tokens * frames);
    for r in 0..heads * tokens {
        let row = &qk[r * stride..r * stride + frames];
        let max = max_of(row);
        let start = out.len();
        let mut sum = 0.0f32;
        for &v in row {
            let e = (v - max).exp();
            sum += e;
            out.push(e);
        }
        for v in &mut out[start..] {
            *v /= sum;
        }
    }
    out
}

/// Median filter of odd `width` along the last axis of `[rows, cols]`, with
/// reflect padding (torch `F.pad(mode="reflect")`); rows too short to reflect
/// are left as they are. Width 7 (Whisper's) runs a sorting network over 8
/// columns at a time, which compiles to vector minima and maxima; other
/// widths sort each window.
pub fn median_filter(x: &mut [f32], rows: usize, cols: usize, width: usize) {
    let pad = width / 2;
    if cols <= pad || width < 2 {
        return;
    }
    // room for a last block of 8 columns past the row's end
    let mut padded = vec![0.0f32; cols + 2 * pad + 8];
    let mut win = vec![0.0f32; width];
    for r in 0..rows {
        let row = &mut x[r * cols..(r + 1) * cols];
        padded[pad..pad + cols].copy_from_slice(row);
        // reflect: index -1 -> 1, cols -> cols - 2
        for i in 1..=pad {
            padded[pad - i] = row[i];
            padded[pad + cols - 1 + i] = row[cols - 1 - i];
        }
        if width == 7 {
            for c in (0..cols).step_by(8) {
                let m = median7_of_8(&padded[c..c + 14]);
                let n = (cols - c).min(8);
                row[c..c + n].copy_from_slice(&m[..n]);
            }
            continue;
        }
        for c in 0..cols {
            win.copy_from_slice(&padded[c..c + width]);
            win.sort_unstable_by(f32::total_cmp);
            row[c] = win[pad];
        }
    }
}

/// The medians of the 8 windows `w[k..k + 7]`, k = 0..8: the 8 windows
/// sorted side by side by a 16-comparator network for 7 inputs (each
/// comparator a vector minimum and maximum).
fn median7_of_8(w: &[f32]) -> [f32; 8] {
    #[inline(always)]
    fn lane(w: &[f32], i: usize) -> [f32; 8] {
        w[i..i + 8].try_into().expect("8 values")
    }
    #[inline(always)]
    fn cmp_swap(a: &mut [f32; 8], b: &mut [f32; 8]) {
        for k in 0..8 {
            let (x, y) = (a[k], b[k]);
            a[k] = if y < x { y } else { x };
            b[k] = if y < x { x } else { y };
        }
    }
    let [mut v0, mut v1, mut v2, mut v3, mut v4, mut v5, mut v6] =
        [0, 1, 2, 3, 4, 5, 6].map(|i| lane(w, i));
    cmp_swap(&mut v0, &mut v6);
    cmp_swap(&mut v2, &mut v3);
    cmp_swap(&mut v4, &mut v5);
    cmp_swap(&mut v0, &mut v2);
    cmp_swap(&mut v1, &mut v4);
    cmp_swap(&mut v3, &mut v6);
    cmp_swap(&mut v0, &mut v1);
    cmp_swap(&mut v2, &mut v5);
    cmp_swap(&mut v3, &mut v4);
    cmp_swap(&mut v1, &mut v2);
    cmp_swap(&mut v4, &mut v6);
    cmp_swap(&mut v2, &mut v3);
    cmp_swap(&mut v4, &mut v5);
    cmp_swap(&mut v1, &mut v2);
    cmp_swap(&mut v3, &mut v4);
    cmp_swap(&mut v5, &mut v6);
    v3
}

/// The alignment matrix `[tokens, frames]`: softmax per head over the first
/// `frames` positions, each (head, frame) normalised over the tokens, median
/// filtered along time, averaged over the heads.
pub fn attention_matrix(
    qk: &[f32],
    heads: usize,
    tokens: usize,
    stride: usize,
    frames: usize,
) -> Vec<f32> {
    let mut w = softmax_rows(qk, heads, tokens, stride, frames);
    for h in 0..heads {
        let block = &mut w[h * tokens * frames..(h + 1) * tokens * frames];
        // each frame's mean and standard deviation over the tokens, summed
        // token after token as before, but a whole row of frames at a time
        let mut mean = vec![0.0f64; frames];
        for row in block.chunks_exact(frames) {
            for (m, &v) in mean.iter_mut().zip(row) {
                *m += v as f64;
            }
        }
        for m in &mut mean {
            *m /= tokens as f64;
        }
        let mut var = vec![0.0f64; frames];
        for row in block.chunks_exact(frames) {
            for ((s, &v), &m) in var.iter_mut().zip(row).zip(&mean) {
                *s += (v as f64 - m).powi(2);
            }
        }
        let std: Vec<f64> = var.iter().map(|s| (s / tokens as f64).sqrt()).collect();
        for row in block.chunks_exact_mut(frames) {
            for ((v, &m), &sd) in row.iter_mut().zip(&mean).zip(&std) {
                // torch divides by a zero std too (NaN); a constant column carries no information: 0
                *v = if sd > 0.0 {
                    ((*v as f64 - m) / sd) as f32
                } else {
                    0.0
                };
            }
        }
        median_filter(block, tokens, frames, MEDIAN_FILTER_WIDTH);
    }
    let mut out = vec![0.0f32; tokens * frames];
    for h in 0..heads {
        for (o, v) in out
            .iter_mut()
            .zip(&w[h * tokens * frames..(h + 1) * tokens * frames])
        {
            *o += v / heads as f32;
        }
    }
    out
}

/// Dynamic time warping over a `[n, m]` cost matrix (row-major): the path
/// from (0, 0) to (n-1, m-1) moving diagonally, down or right, with the
/// smallest total cost; ties resolved as openai-whisper's `dtw_cpu`. Returns
/// the path's row and column indices.
pub fn dtw(cost: &[f32], n: usize, m: usize) -> (Vec<usize>, Vec<usize>) {
    assert_eq!(cost.len(), n * m);
    let w = m + 1;
    let mut acc = vec![f64::INFINITY; (n + 1) * w];
    let mut trace = vec![-1i8; (n + 1) * w];
    acc[0] = 0.0;
    for j in 1..=m {
        for i in 1..=n {
            let c0 = acc[(i - 1) * w + j - 1];
            let c1 = acc[(i - 1) * w + j];
            let c2 = acc[i * w + j - 1];
            let (c, t) = if c0 < c1 && c0 < c2 {
                (c0, 0)
            } else if c1 < c0 && c1 < c2 {
                (c1, 1)
            } else {
                (c2, 2)
            };
            acc[i * w + j] = cost[(i - 1) * m + j - 1] as f64 + c;
            trace[i * w + j] = t;
        }
    }
    for j in 0..=m {
        trace[j] = 2;
    }
    for i in 0..=n {
        trace[i * w] = 1;
    }
    let (mut i, mut j) = (n, m);
    let mut rows = Vec::with_capacity(n + m);
    let mut cols = Vec::with_capacity(n + m);
    while i > 0 || j > 0 {
        rows.push(i.wrapping_sub(1));
        cols.push(j.wrapping_sub(1));
        match trace[i * w + j] {
            0 => {
                i -= 1;
                j -= 1;
            }
            1 => i -= 1,
            _ => j -= 1,
        }
    }
    rows.reverse();
    cols.reverse();
    // every cell of row 0 or column 0 but (0, 0) costs infinity, so the path
    // leaves through (1, 1) and no index above wraps
    (rows, cols)
}

/// Splits text tokens into words: a new word starts at a token that decodes
/// with a leading space, at punctuation, or at a special token; tokens of one
/// character split over several tokens stay together. For languages written
/// without spaces every whole character sequence is its own word.
pub fn split_to_word_tokens(
    decode: &dyn Fn(&[u32]) -> String,
    tokens: &[u32],
    first_special: u32,
    language: &str,
) -> (Vec<String>, Vec<Vec<u32>>) {
    // whole characters first (byte-level BPE can cut a character in two)
    let mut subwords: Vec<String> = Vec::new();
    let mut subword_tokens: Vec<Vec<u32>> = Vec::new();
    let mut current: Vec<u32> = Vec::new();
    for &t in tokens {
        current.push(t);
        let decoded = if t >= first_special {
            String::from("<|special|>")
        } else {
            decode(&current)
        };
        if !decoded.contains('\u{FFFD}') {
            subwords.push(decoded);
            subword_tokens.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        subwords.push(decode(&current));
        subword_tokens.push(current);
    }
    if NO_SPACE_LANGUAGES.contains(&language) {
        return (subwords, subword_tokens);
    }
    let mut words: Vec<String> = Vec::new();
    let mut word_tokens: Vec<Vec<u32>> = Vec::new();
    for (sub, toks) in subwords.into_iter().zip(subword_tokens) {
        let special = toks[0] >= first_special;
        let with_space = sub.starts_with(' ');
        let trimmed = sub.trim();
        let punctuation = !trimmed.is_empty() && trimmed.chars().all(|c| c.is_ascii_punctuation());
        if special || with_space || punctuation || words.is_empty() {
            words.push(sub);
            word_tokens.push(toks);
        } else {
            words.last_mut().unwrap().push_str(&sub);
            word_tokens.last_mut().unwrap().extend(toks);
        }
    }
    (words, word_tokens)
}

/// Attaches punctuation to its word (openai-whisper's `merge_punctuations`):
/// opening marks that stand alone join the following word, closing marks the
/// preceding one; the emptied entries stay, with no text and no tokens.
pub fn merge_punctuations(words: &mut [WordTiming]) {
    if words.len() < 2 {
        return;
    }
    let (mut i, mut j) = (words.len() as isize - 2, words.len() - 1);
    while i >= 0 {
        let iu = i as usize;
        let prev = &words[iu];
        if prev.word.starts_with(' ')
            && PREPEND_PUNCTUATIONS.contains(prev.word.trim())
            && !prev.word.trim().is_empty()
        {
            let (pw, pt) = (
                std::mem::take(&mut words[iu].word),
                std::mem::take(&mut words[iu].tokens),
            );
            let f = &mut words[j];
            f.word = pw + &f.word;
            f.tokens = pt.into_iter().chain(f.tokens.drain(..)).collect();
        } else {
            j = iu;
        }
        i -= 1;
    }
    let (mut i, mut j) = (0usize, 1usize);
    while j < words.len() {
        let appendable =
            !words[j].word.is_empty() && APPEND_PUNCTUATIONS.contains(words[j].word.as_str());
        if !words[i].word.ends_with(' ') && appendable {
            let (fw, ft) = (
                std::mem::take(&mut words[j].word),
                std::mem::take(&mut words[j].tokens),
            );
            words[i].word.push_str(&fw);
            words[i].tokens.extend(ft);
        } else {
            i = j;
        }
        j += 1;
    }
}

/// Word timings of one window from its alignment-head scores.
///
/// `qk` is `[heads, seq, stride]` for the sequence
/// `sot_sequence + [no_timestamps] + text_tokens + [eot]` (`seq` positions);
/// `frames` is the number of encoder positions holding the window's audio
/// (content mel frames / 2); `token_probs` the probability of each text token
/// (for each word's mean). Times are seconds from the window start.
#[allow(clippy::too_many_arguments)]
pub fn find_alignment(
    qk: &[f32],
    heads: usize,
    stride: usize,
    sot_len: usize,
    text_tokens: &[u32],
    token_probs: &[f32],
    frames: usize,
    tok: &WhisperTokenizer,
    language: &str,
) -> Vec<WordTiming> {
    let seq = sot_len + 1 + text_tokens.len() + 1;
    if text_tokens.is_empty() || frames == 0 || heads == 0 {
        return Vec::new();
    }
    assert_eq!(
        qk.len(),
        heads * seq * stride,
        "alignment scores of another shape"
    );
    let frames = frames.min(stride);
    let matrix = attention_matrix(qk, heads, seq, stride, frames);
    // rows of <|notimestamps|> and the text tokens (each predicts the next token)
    let rows = text_tokens.len() + 1;
    let sub = &matrix[sot_len * frames..(sot_len + rows) * frames];
    let neg: Vec<f32> = sub.iter().map(|v| -v).collect();
    let (text_idx, time_idx) = dtw(&neg, rows, frames);

    let eot = tok.special.eot;
    let mut with_eot = text_tokens.to_vec();
    with_eot.push(eot);
    let decode = |ids: &[u32]| tok.decode(ids).unwrap_or_default();
    let (words, word_tokens) = split_to_word_tokens(&decode, &with_eot, eot, language);
    if word_tokens.len() <= 1 {
        return Vec::new();
    }
    // the first frame the path reaches each row
    let mut jump_times = Vec::with_capacity(rows);
    let mut last_row = usize::MAX;
    for (&r, &c) in text_idx.iter().zip(&time_idx) {
        if r != last_row {
            jump_times.push(c as f64 / FRAMES_PER_SECOND);
            last_row = r;
        }
    }
    let mut boundaries = vec![0usize];
    for t in &word_tokens[..word_tokens.len() - 1] {
        boundaries.push(boundaries.last().unwrap() + t.len());
    }
    let mut out = Vec::with_capacity(words.len() - 1);
    for k in 0..boundaries.len() - 1 {
        let (a, b) = (boundaries[k], boundaries[k + 1]);
        let probs = &token_probs[a.min(token_probs.len())..b.min(token_probs.len())];
        let probability = if probs.is_empty() {
            0.0
        } else {
            probs.iter().sum::<f32>() / probs.len() as f32
        };
        out.push(WordTiming {
            word: words[k].clone(),
            tokens: word_tokens[k].clone(),
            start: jump_times[a.min(jump_times.len() - 1)],
            end: jump_times[b.min(jump_times.len() - 1)],
            probability,
        });
    }
    out
}

/// The median word duration (at most 0.7 s) of an alignment, 0 without words.
pub fn median_duration(words: &[WordTiming]) -> f64 {
    let mut d: Vec<f64> = words
        .iter()
        .map(|w| w.end - w.start)
        .filter(|&d| d != 0.0)
        .collect();
    if d.is_empty() {
        return 0.0;
    }
    d.sort_by(f64::total_cmp);
    let n = d.len();
    let med = if n % 2 == 1 {
        d[n / 2]
    } else {
        0.5 * (d[n / 2 - 1] + d[n / 2])
    };
    med.min(0.7)
}

/// openai-whisper's guard against long words at sentence boundaries: a word
/// longer than twice the median that is a sentence mark, or follows one, is
/// cut to that length.
pub fn truncate_long_words_at_sentence_ends(words: &mut [WordTiming], max_duration: f64) {
    for i in 1..words.len() {
        if words[i].end - words[i].start > max_duration {
            if SENTENCE_END_MARKS.contains(words[i].word.as_str()) && !words[i].word.is_empty() {
                words[i].end = words[i].start + max_duration;
            } else if SENTENCE_END_MARKS.contains(words[i - 1].word.as_str())
                && !words[i - 1].word.is_empty()
            {
                words[i].start = words[i].end - max_duration;
            }
        }
    }
}

/// Segment bounds and word times made consistent, as openai-whisper's
/// `add_word_timestamps` does per segment: a first word that runs long after
/// a pause is cut to the median length, and the segment's own start/end win
/// when the first/last word overshoots them by more than 0.5 s; otherwise the
/// segment takes its words' bounds. Returns the new (start, end).
pub fn fit_segment_words(
    words: &mut [Word],
    seg_start: f64,
    seg_end: f64,
    last_speech: f64,
    median: f64,
) -> (f64, f64) {
    let (mut start, mut end) = (seg_start, seg_end);
    if words.is_empty() {
        return (start, end);
    }
    let max_duration = median * 2.0;
    let first_long = words[0].end - words[0].start > max_duration
        || (words.len() > 1 && words[1].end - words[0].start > max_duration * 2.0);
    if words[0].end - last_speech > median * 4.0 && first_long {
        if words.len() > 1 && words[1].end - words[1].start > max_duration {
            let boundary = (words[1].end / 2.0).max(words[1].end - max_duration);
            words[0].end = boundary;
            words[1].start = boundary;
        }
        words[0].start = (words[0].end - max_duration).max(0.0);
    }
    if start < words[0].end && start - 0.5 > words[0].start {
        words[0].start = (words[0].end - median).min(start).max(0.0);
    } else {
        start = words[0].start;
    }
    let last = words.len() - 1;
    if end > words[last].start && end + 0.5 < words[last].end {
        words[last].end = (words[last].start + median).max(end);
    } else {
        end = words[last].end;
    }
    (start, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dtw_follows_the_cheap_diagonal_band() {
        // 3 tokens x 6 frames: token 0 cheap at frames 0-1, token 1 at 2-3, token 2 at 4-5
        let mut cost = vec![1.0f32; 18];
        for (t, fs) in [(0, [0, 1]), (1, [2, 3]), (2, [4, 5])] {
            for f in fs {
                cost[t * 6 + f] = -1.0;
            }
        }
        let (rows, cols) = dtw(&cost, 3, 6);
        assert_eq!(rows, vec![0, 0, 1, 1, 2, 2]);
        assert_eq!(cols, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn dtw_path_is_monotonic_and_complete() {
        let (n, m) = (4, 9);
        let cost: Vec<f32> = (0..n * m).map(|k| ((k * 7919) % 13) as f32 - 6.0).collect();
        let (rows, cols) = dtw(&cost, n, m);
        assert_eq!((rows[0], cols[0]), (0, 0));
        assert_eq!(
            (*rows.last().unwrap(), *cols.last().unwrap()),
            (n - 1, m - 1)
        );
        for k in 1..rows.len() {
            let (dr, dc) = (rows[k] - rows[k - 1], cols[k] - cols[k - 1]);
            assert!(dr <= 1 && dc <= 1 && dr + dc >= 1, "step {k}: {dr} {dc}");
        }
    }

    #[test]
    fn median_filter_reflects_at_the_edges() {
        let mut x = vec![5.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0, 0.0];
        median_filter(&mut x, 1, 8, 3);
        // [0 5 0 0 9 0 0 0 0 0] windows of 3 -> medians
        assert_eq!(x, vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        let mut y = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        median_filter(&mut y, 1, 5, 3);
        assert_eq!(y, vec![2.0, 2.0, 3.0, 4.0, 4.0]);
        let mut short = vec![3.0, 1.0];
        median_filter(&mut short, 1, 2, 7);
        assert_eq!(short, vec![3.0, 1.0], "too short to reflect: unchanged");
    }

    #[test]
    fn the_width_7_network_gives_each_windows_median() {
        // every 0/1 input of 7: a network that sorts these sorts everything
        for bits in 0u32..128 {
            let w: Vec<f32> = (0..14).map(|i| ((bits >> (i % 7)) & 1) as f32).collect();
            let m = median7_of_8(&w);
            for (k, &got) in m.iter().enumerate() {
                let mut win = w[k..k + 7].to_vec();
                win.sort_by(f32::total_cmp);
                assert_eq!(got, win[3], "bits {bits:07b} window {k}");
            }
        }
        // whole rows of every length from 4 (the shortest that reflects) on,
        // against the reflect-pad-and-sort definition
        let mut rng = fastrand::Rng::with_seed(7);
        for cols in 4..40 {
            let rows = 3;
            let x: Vec<f32> = (0..rows * cols).map(|_| rng.f32() * 4.0 - 2.0).collect();
            let mut got = x.clone();
            median_filter(&mut got, rows, cols, 7);
            for r in 0..rows {
                let row = &x[r * cols..(r + 1) * cols];
                let at = |j: isize| {
                    let j = if j < 0 {
                        -j
                    } else if j >= cols as isize {
                        2 * (cols as isize - 1) - j
                    } else {
                        j
                    };
                    row[j as usize]
                };
                for c in 0..cols {
                    let mut win: Vec<f32> = (c as isize - 3..=c as isize + 3).map(at).collect();
                    win.sort_by(f32::total_cmp);
                    assert_eq!(got[r * cols + c], win[3], "cols {cols} row {r} col {c}");
                }
            }
        }
    }

    #[test]
    fn attention_matrix_normalises_over_tokens() {
        // one head, 2 tokens, 3 frames (stride 4: the last column is outside the window)
        let qk = vec![10.0, 0.0, 0.0, 99.0, 0.0, 0.0, 10.0, 99.0];
        let m = attention_matrix(&qk, 1, 2, 4, 3);
        // frame 0: token 0 attends, token 1 not -> +1 / -1; frame 1 equal -> 0
        assert!(
            (m[0] - 1.0).abs() < 1e-3 && (m[3] + 1.0).abs() < 1e-3,
            "{m:?}"
        );
        assert!(m[2] < 0.0 && m[5] > 0.0, "{m:?}");
    }

    fn wt(word: &str, tokens: &[u32], s: f64, e: f64) -> WordTiming {
        WordTiming {
            word: word.into(),
            tokens: tokens.to_vec(),
            start: s,
            end: e,
            probability: 1.0,
        }
    }

    #[test]
    fn punctuation_joins_its_word() {
        let mut w = vec![
            wt(" \"", &[1], 0.0, 0.1),
            wt(" Hello", &[2], 0.1, 0.5),
            wt(",", &[3], 0.5, 0.6),
            wt(" world", &[4], 0.6, 1.0),
            wt(".", &[5], 1.0, 1.1),
            wt("\"", &[6], 1.1, 1.2),
        ];
        merge_punctuations(&mut w);
        let kept: Vec<(&str, &[u32])> = w
            .iter()
            .filter(|x| !x.word.is_empty())
            .map(|x| (x.word.as_str(), x.tokens.as_slice()))
            .collect();
        assert_eq!(
            kept,
            vec![
                (" \" Hello,", &[1, 2, 3][..]),
                (" world.\"", &[4, 5, 6][..])
            ]
        );
        // every token is still somewhere
        assert_eq!(w.iter().map(|x| x.tokens.len()).sum::<usize>(), 6);
    }

    #[test]
    fn words_split_at_spaces_punctuation_and_whole_characters() {
        // a toy decoder: token ids map to pieces; 7 and 8 are the two halves of "é"
        let piece = |t: u32| match t {
            1 => " And",
            2 => " so",
            3 => ",",
            4 => " fell",
            5 => "ow",
            6 => " caf",
            _ => "",
        };
        let decode = |ids: &[u32]| -> String {
            if ids == [7] || ids == [8] {
                return "\u{FFFD}".into();
            }
            ids.iter()
                .map(|&t| {
                    if t == 7 || t == 8 {
                        "é".to_string()
                    } else {
                        piece(t).to_string()
                    }
                })
                .collect::<String>()
                .replace("éé", "é")
        };
        let (words, toks) =
            split_to_word_tokens(&decode, &[1, 2, 3, 4, 5, 6, 7, 8, 100], 100, "en");
        assert_eq!(
            words,
            vec![" And", " so", ",", " fellow", " café", "<|special|>"]
        );
        assert_eq!(
            toks,
            vec![
                vec![1],
                vec![2],
                vec![3],
                vec![4, 5],
                vec![6, 7, 8],
                vec![100]
            ]
        );
        let (words, _) = split_to_word_tokens(&decode, &[4, 5, 100], 100, "ja");
        assert_eq!(
            words.len(),
            3,
            "no-space languages keep every whole-character piece"
        );
    }

    #[test]
    fn long_words_are_cut_at_sentence_ends() {
        let mut w = vec![
            wt(" Yes", &[1], 0.0, 0.3),
            wt(".", &[2], 0.3, 3.0),
            wt(" No", &[3], 3.0, 6.0),
        ];
        truncate_long_words_at_sentence_ends(&mut w, 0.6);
        assert!((w[1].end - 0.9).abs() < 1e-9);
        assert!((w[2].start - 5.4).abs() < 1e-9);
        let m = median_duration(&[
            wt("a", &[], 0.0, 0.2),
            wt("b", &[], 0.2, 0.6),
            wt("c", &[], 0.6, 2.0),
        ]);
        assert!((m - 0.4).abs() < 1e-9, "{m}");
        assert_eq!(
            median_duration(&[wt("a", &[], 0.0, 2.0)]),
            0.7,
            "capped at 0.7 s"
        );
    }

    #[test]
    fn segment_takes_its_words_bounds_unless_a_word_overshoots() {
        let word = |s: f64, e: f64| Word {
            word: " x".into(),
            start: s,
            end: e,
            probability: 1.0,
        };
        let mut w = vec![word(1.1, 1.4), word(1.5, 2.0)];
        assert_eq!(fit_segment_words(&mut w, 1.0, 2.2, 0.0, 0.4), (1.1, 2.0));
        // the first word starts a second before the segment: the segment start wins
        let mut w = vec![word(0.2, 1.4), word(1.5, 2.0)];
        let (s, _) = fit_segment_words(&mut w, 1.0, 2.0, 1.3, 0.4);
        assert_eq!(s, 1.0);
        assert!((w[0].start - 1.0).abs() < 1e-9);
    }
}
