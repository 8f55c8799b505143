//! Decoding one 30 s window: the prompt, the logit filters faster-whisper
//! (CTranslate2) applies, greedy or sampled token choice, and the
//! temperature fallback with its compression-ratio and log-prob guards.

use std::io::Write;

use super::logits::{max_of, Exact, StepLogits, MARGIN};
use super::model::{Cross, EncodedWindow, ModelError, WhisperOnnx};
use super::tokenizer::WhisperTokenizer;

/// Per-window decoding settings (derived from `WhisperConfig`).
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: f32,
    pub log_prob_threshold: f32,
    pub no_speech_threshold: f32,
    pub without_timestamps: bool,
    /// Largest allowed first timestamp, in 0.02 s steps.
    pub max_initial_timestamp_index: Option<u32>,
    pub suppress_blank: bool,
    /// Tokens never generated (CTranslate2 `suppress_ids`).
    pub suppress_tokens: Vec<u32>,
    /// Tokens not allowed as the first generated token (`suppress_ids_begin`).
    pub suppress_tokens_begin: Vec<u32>,
    /// Longest total sequence (prompt + generated), the model's text context.
    pub max_length: usize,
}

impl DecodeOptions {
    /// Greedy decoding at temperature 0 with faster-whisper's default guards
    /// and timestamp rules (first timestamp at most 1 s), suppressing
    /// `suppress_tokens` always and `suppress_tokens_begin` first.
    pub fn greedy(
        suppress_tokens: Vec<u32>,
        suppress_tokens_begin: Vec<u32>,
        max_length: usize,
    ) -> DecodeOptions {
        DecodeOptions {
            temperatures: vec![0.0],
            compression_ratio_threshold: 2.4,
            log_prob_threshold: -1.0,
            no_speech_threshold: 0.6,
            without_timestamps: false,
            max_initial_timestamp_index: Some(50),
            suppress_blank: true,
            suppress_tokens,
            suppress_tokens_begin,
            max_length,
        }
    }
}

/// What decoding one window produced.
#[derive(Debug, Clone)]
pub struct WindowResult {
    /// Generated tokens without the prompt and without end-of-text.
    pub tokens: Vec<u32>,
    /// Probability of each generated token when it was chosen (same length as `tokens`).
    pub token_probs: Vec<f32>,
    pub avg_logprob: f64,
    pub no_speech_prob: f32,
    pub temperature: f32,
    pub compression_ratio: f64,
}

/// Applies Whisper's logit rules for the next token of a window whose
/// generated tokens so far are `generated`.
pub struct LogitFilter<'a> {
    pub opts: &'a DecodeOptions,
    pub eot: u32,
    pub no_timestamps: u32,
    pub timestamp_begin: u32,
}

impl LogitFilter<'_> {
    pub fn apply(&self, logits: &mut [f32], generated: &[u32]) {
        self.apply_exact(logits, generated, Exact::NONE);
    }

    /// [`LogitFilter::apply`] on logits of which only the likeliest are
    /// exact ([`Exact`]): when the timestamps' mass and the likeliest text
    /// token come closer than the other logits' error could move them,
    /// every timestamp is made exact before they are compared.
    pub fn apply_exact(&self, logits: &mut [f32], generated: &[u32], exact: Exact<'_>) {
        let ninf = f32::NEG_INFINITY;
        for &t in &self.opts.suppress_tokens {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = ninf;
            }
        }
        if generated.is_empty() && self.opts.suppress_blank {
            for &t in &self.opts.suppress_tokens_begin {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = ninf;
                }
            }
        }
        if self.opts.without_timestamps {
            return;
        }
        let tb = self.timestamp_begin as usize;
        let vocab = logits.len();
        logits[self.no_timestamps as usize] = ninf;
        let mut check_timestamp_mass = false;
        if generated.is_empty() {
            // a window starts with a timestamp, no later than max_initial_timestamp
            logits[..tb].fill(ninf);
            if let Some(max_idx) = self.opts.max_initial_timestamp_index {
                let last_allowed = tb + max_idx as usize;
                if last_allowed + 1 < vocab {
                    logits[last_allowed + 1..].fill(ninf);
                }
            }
        } else {
            let last = *generated.last().unwrap();
            if last >= self.timestamp_begin {
                let penultimate = if generated.len() >= 2 {
                    generated[generated.len() - 2]
                } else {
                    last
                };
                if penultimate >= self.timestamp_begin {
                    // two timestamps in a row close a segment: text must follow
                    logits[tb..].fill(ninf);
                } else {
                    // an opening timestamp was seen: only its closing one or end-of-text
                    logits[..self.eot as usize].fill(ninf);
                    check_timestamp_mass = true;
                }
            } else {
                check_timestamp_mass = true;
            }
            // timestamps never go backwards; after a closing-timestamp pair they
            // must strictly increase so every segment has a length
            if let Some(&last_ts) = generated.iter().rev().find(|&&t| t >= self.timestamp_begin) {
                let closing_pending = last >= self.timestamp_begin
                    && generated.len() >= 2
                    && generated[generated.len() - 2] < self.timestamp_begin;
                let upto = if closing_pending {
                    last_ts as usize
                } else {
                    last_ts as usize + 1
                };
                logits[tb..upto.min(vocab)].fill(ninf);
            }
        }
        if check_timestamp_mass {
            // if the timestamps together are likelier than any text token, emit a timestamp
            let max_text = exact.near_max(logits, 0..tb);
            if (log_sum_exp(&logits[tb..]) - max_text).abs() < MARGIN / 2.0 {
                exact.all(logits, tb..vocab);
            }
            let lse_all = log_sum_exp(logits);
            let ts_mass = log_sum_exp(&logits[tb..]) - lse_all;
            let max_text = max_of(&logits[..tb]) - lse_all;
            if ts_mass.is_finite() && ts_mass > max_text {
                logits[..tb].fill(ninf);
            }
        }
    }
}

/// log(sum(exp(x))), -inf for an empty or all -inf slice (never NaN). Run
/// over the whole vocabulary for every row at every step, so the sum is
/// kept in 8 lanes with `exp_le0` (a libm `expf` call per logit and one
/// running sum were most of the decoder's own time beside ONNX Runtime).
pub fn log_sum_exp(x: &[f32]) -> f32 {
    const LANES: usize = 8;
    let max = max_of(x);
    if !max.is_finite() {
        return max;
    }
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..LANES {
            lanes[k] += exp_le0(c[k] - max);
        }
    }
    let s: f32 = lanes.iter().sum::<f32>() + rest.iter().map(|&v| exp_le0(v - max)).sum::<f32>();
    max + s.ln()
}

/// e^x for x <= 0, within 3e-7 relative (4 float steps) down to -87 (below,
/// and for -inf, about 1e-38 instead of 0: nothing beside the 1 a
/// log-sum-exp's largest term adds). Plain arithmetic, so a loop of it
/// compiles to vector instructions: x = n ln 2 + r with |r| <= ln 2 / 2,
/// e^r by its Taylor polynomial to r^6, 2^n put in the exponent bits.
#[inline(always)]
fn exp_le0(x: f32) -> f32 {
    // adding 1.5 * 2^23 rounds to an integer, kept in the low mantissa bits
    const ROUND: f32 = 12_582_912.0;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let x = if x > -87.0 { x } else { -87.0 };
    let t = x * std::f32::consts::LOG2_E + ROUND;
    let n = t - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let n = t.to_bits().wrapping_sub(ROUND.to_bits()) as i32;
    p * f32::from_bits(((n + 127) as u32) << 23)
}

/// Softmax probability of `index` under `logits`.
pub fn softmax_prob(logits: &[f32], index: usize) -> f32 {
    (logits[index] - log_sum_exp(logits)).exp()
}

/// zlib compression ratio of the text, the repetition guard faster-whisper uses.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes())
        .expect("writing to a Vec cannot fail");
    let compressed = enc.finish().expect("writing to a Vec cannot fail");
    text.len() as f64 / compressed.len() as f64
}

/// The first position of the largest value (0 for an empty or all -inf or
/// NaN slice).
fn argmax(x: &[f32]) -> usize {
    let max = max_of(x);
    x.iter().position(|&v| v == max).unwrap_or(0)
}

/// Samples from softmax(logits / temperature).
fn sample(logits: &[f32], temperature: f32, rng: &mut fastrand::Rng) -> usize {
    let scaled: Vec<f32> = logits.iter().map(|&l| l / temperature).collect();
    let lse = log_sum_exp(&scaled);
    let mut u = rng.f32();
    let mut last_valid = argmax(logits);
    for (i, &l) in scaled.iter().enumerate() {
        if l == f32::NEG_INFINITY {
            continue;
        }
        last_valid = i;
        u -= (l - lse).exp();
        if u <= 0.0 {
            return i;
        }
    }
    last_valid
}

/// One decoding pass over a window.
pub struct Decoded {
    pub tokens: Vec<u32>,
    pub token_probs: Vec<f32>,
    pub sum_logprob: f64,
    pub no_speech_prob: f32,
}

/// The next token under `logits` (already filtered): the likeliest at
/// temperature 0, else sampled; with its log-probability.
fn choose(logits: &[f32], temperature: f32, rng: &mut fastrand::Rng) -> (u32, f32) {
    let next = if temperature > 0.0 {
        sample(logits, temperature, rng)
    } else {
        argmax(logits)
    };
    (next as u32, logits[next] - log_sum_exp(logits))
}

/// CTranslate2's cap on generated tokens: half the text context, and no
/// position past its end (the last token chosen is never fed back).
fn max_new_tokens(opts: &DecodeOptions, prompt_len: usize) -> usize {
    (opts.max_length / 2).min((opts.max_length + 1).saturating_sub(prompt_len))
}

/// What one sequence generated so far; one step of it is the same whether
/// the sequence is decoded alone or in a batch.
#[derive(Default)]
struct Generation {
    tokens: Vec<u32>,
    token_probs: Vec<f32>,
    sum_logprob: f64,
}

impl Generation {
    /// Filters `logits`, chooses the next token and counts its
    /// log-probability; None at end-of-text (which is not kept).
    fn step(
        &mut self,
        logits: &mut [f32],
        exact: Exact<'_>,
        filter: &LogitFilter<'_>,
        temperature: f32,
        rng: &mut fastrand::Rng,
    ) -> Option<u32> {
        // the rules compare the likeliest text token with the timestamps'
        // mass, which their likeliest make up: exact in both ranges first,
        // then near whatever the rules left at the top
        let tb = (filter.timestamp_begin as usize).min(logits.len());
        exact.near_max(logits, 0..tb);
        exact.near_max(logits, tb..logits.len());
        filter.apply_exact(logits, &self.tokens, exact);
        exact.near_max(logits, 0..logits.len());
        let (next, lp) = choose(logits, temperature, rng);
        self.sum_logprob += lp as f64;
        if next == filter.eot {
            return None;
        }
        self.tokens.push(next);
        self.token_probs.push(lp.exp());
        Some(next)
    }

    fn finish(self, no_speech_prob: f32) -> Decoded {
        Decoded {
            tokens: self.tokens,
            token_probs: self.token_probs,
            sum_logprob: self.sum_logprob,
            no_speech_prob,
        }
    }
}

/// The position of the start-of-transcript token in the prompt: the
/// no-speech probability is read from the logits there.
fn sot_position(prompt: &[u32], tok: &WhisperTokenizer) -> usize {
    prompt
        .iter()
        .position(|&t| t == tok.special.sot)
        .unwrap_or(prompt.len() - 1)
}

/// Decodes one window at one temperature.
///
/// The prompt is fed in up to its start-of-transcript token first: the
/// logits there give the no-speech probability (as CTranslate2 computes it);
/// the rest of the prompt (language, task, no-timestamps) follows.
pub fn decode_once(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    window: &Cross<'_>,
    prompt: &[u32],
    temperature: f32,
    opts: &DecodeOptions,
    rng: &mut fastrand::Rng,
) -> Result<Decoded, ModelError> {
    let mut one = decode_rows(
        model,
        tok,
        RowsCross::Shared(window),
        prompt,
        &[temperature],
        opts,
        rng,
    )?;
    Ok(one.remove(0))
}

/// Decodes the B windows of `windows` at one temperature, all with the same
/// `prompt`, as B runs of [`decode_once`] would, in one decoder run per step.
///
/// There is no attention mask, so the rows must stay the same length: they
/// share the prompt, and a row that ends (end-of-text or the length cap)
/// leaves the batch: its rows of the self-attention cache are dropped, its
/// cross-attention keys and values move behind the rows still decoding
/// ([`EncodedWindow::keep`]: kept, for its word timestamps or fallback),
/// and the others go on.
/// Batching turns each step's matrix-vector products (the output projection
/// over the vocabulary above all) into matrix products: that is the speed-up.
pub fn decode_batch(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    windows: &mut EncodedWindow,
    prompt: &[u32],
    temperature: f32,
    opts: &DecodeOptions,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Decoded>, ModelError> {
    let temperatures = vec![temperature; windows.batch()];
    decode_rows(
        model,
        tok,
        RowsCross::Windows(windows),
        prompt,
        &temperatures,
        opts,
        rng,
    )
}

/// The cross-attention keys and values the rows of a batched decode read.
pub enum RowsCross<'w, 'c> {
    /// A window per row (a finished row's moves behind the rows still
    /// decoding, [`EncodedWindow::keep`]).
    Windows(&'w mut EncodedWindow),
    /// One window that every row reads (the decoder graph's cross-attention
    /// products broadcast it): a window sampled at several temperatures.
    Shared(&'w Cross<'c>),
}

impl RowsCross<'_, '_> {
    fn decode(
        &self,
        model: &mut WhisperOnnx,
        tokens: &[u32],
        cache: &mut super::model::KvCache,
    ) -> Result<StepLogits, ModelError> {
        match self {
            RowsCross::Windows(w) => model.decode(tokens, cache, &w.active()),
            RowsCross::Shared(c) => model.decode(tokens, cache, c),
        }
    }
}

/// Decodes one row per temperature of `temperatures` (row i at
/// `temperatures[i]`), all with the same `prompt`, reading `cross`, in one
/// decoder run per step; a row that ends (end-of-text or the length cap)
/// leaves the batch and the others go on (no attention mask: the rows stay
/// the same length).
pub fn decode_rows(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    mut cross: RowsCross<'_, '_>,
    prompt: &[u32],
    temperatures: &[f32],
    opts: &DecodeOptions,
    rng: &mut fastrand::Rng,
) -> Result<Vec<Decoded>, ModelError> {
    let sp = &tok.special;
    let batch = temperatures.len();
    if batch == 0 {
        return Ok(Vec::new());
    }
    let sot_pos = sot_position(prompt, tok);
    let mut cache = model.new_batch_cache(batch)?;
    let mut logits = cross.decode(model, &prompt[..=sot_pos].repeat(batch), &mut cache)?;
    let no_speech: Vec<f32> = logits
        .rows_mut()
        .map(|(l, exact)| {
            exact.near_max(l, 0..l.len());
            exact.token(l, sp.no_speech as usize);
            softmax_prob(l, sp.no_speech as usize)
        })
        .collect();
    if sot_pos + 1 < prompt.len() {
        logits = cross.decode(model, &prompt[sot_pos + 1..].repeat(batch), &mut cache)?;
    }
    let filter = LogitFilter {
        opts,
        eot: sp.eot,
        no_timestamps: sp.no_timestamps,
        timestamp_begin: sp.timestamp_begin,
    };
    let mut generations: Vec<Generation> = (0..batch).map(|_| Generation::default()).collect();
    // the original row of each row still in the batch
    let mut active: Vec<usize> = (0..batch).collect();
    let max_new = max_new_tokens(opts, prompt.len());
    for step in 0..max_new {
        let mut keep = Vec::with_capacity(active.len());
        let mut next_tokens = Vec::with_capacity(active.len());
        for (position, (&row, (row_logits, exact))) in
            active.iter().zip(logits.rows_mut()).enumerate()
        {
            let t = temperatures[row];
            if let Some(next) = generations[row].step(row_logits, exact, &filter, t, rng) {
                keep.push(position);
                next_tokens.push(next);
            }
        }
        if keep.is_empty() || step + 1 == max_new {
            break;
        }
        if keep.len() < active.len() {
            cache.retain_rows(&keep)?;
            if let RowsCross::Windows(w) = &mut cross {
                w.keep(&keep);
            }
            active = keep.iter().map(|&p| active[p]).collect();
        }
        logits = cross.decode(model, &next_tokens, &mut cache)?;
    }
    Ok(generations
        .into_iter()
        .zip(no_speech)
        .map(|(g, ns)| g.finish(ns))
        .collect())
}

/// The temperature fallback's state for one window: the results of the
/// temperatures tried so far (`opts.temperatures` in order), all of which
/// failed the guards.
#[derive(Default)]
pub struct Fallback {
    failed: Vec<WindowResult>,
    /// Indices into `failed` of the results that were not too repetitive.
    below_cr: Vec<usize>,
}

impl Fallback {
    /// How many temperatures were tried (the next one is `opts.temperatures[tried()]`).
    pub fn tried(&self) -> usize {
        self.failed.len()
    }

    /// Judges one temperature's result as faster-whisper's
    /// `generate_with_fallback`: returned when it passes the compression-ratio
    /// and log-prob guards or the window looks like silence; else kept for
    /// the final choice (None: try the next temperature).
    pub fn judge(
        &mut self,
        decoded: Decoded,
        temperature: f32,
        tok: &WhisperTokenizer,
        opts: &DecodeOptions,
    ) -> Option<WindowResult> {
        let Decoded {
            tokens,
            token_probs,
            sum_logprob,
            no_speech_prob,
        } = decoded;
        let avg_logprob = sum_logprob / (tokens.len() as f64 + 1.0);
        let text = tok
            .decode(&tokens)
            .map(|t| t.trim().to_string())
            .unwrap_or_default();
        let cr = compression_ratio(&text);
        let result = WindowResult {
            tokens,
            token_probs,
            avg_logprob,
            no_speech_prob,
            temperature,
            compression_ratio: cr,
        };
        let mut needs_fallback = false;
        if cr > opts.compression_ratio_threshold as f64 {
            needs_fallback = true;
        } else {
            self.below_cr.push(self.failed.len());
        }
        if avg_logprob < opts.log_prob_threshold as f64 {
            needs_fallback = true;
        }
        if no_speech_prob > opts.no_speech_threshold && avg_logprob < opts.log_prob_threshold as f64
        {
            needs_fallback = false; // silence
        }
        if !needs_fallback {
            return Some(result);
        }
        self.failed.push(result);
        None
    }

    /// Every temperature failed: the most probable result, preferring
    /// non-repetitive ones, labelled with the last temperature.
    pub fn best(mut self, opts: &DecodeOptions) -> WindowResult {
        let last_temperature = *opts.temperatures.last().unwrap();
        let pool: Vec<usize> = if self.below_cr.is_empty() {
            (0..self.failed.len()).collect()
        } else {
            self.below_cr
        };
        let best = pool
            .into_iter()
            .max_by(|&a, &b| {
                self.failed[a]
                    .avg_logprob
                    .total_cmp(&self.failed[b].avg_logprob)
            })
            .expect("at least one temperature");
        let mut chosen = self.failed.swap_remove(best);
        chosen.temperature = last_temperature;
        chosen
    }
}

/// Decodes one window with temperature fallback, as faster-whisper's
/// `generate_with_fallback`: a result that is too repetitive (compression
/// ratio) or too improbable (average log-prob) is decoded again at the next
/// temperature, unless the window looks like silence. Starts after the
/// temperatures `tried` already judged (`Fallback::default()`: none; a
/// window whose batched decode at the first temperature failed the guards
/// goes on alone from the second).
pub fn decode_with_fallback(
    model: &mut WhisperOnnx,
    tok: &WhisperTokenizer,
    window: &Cross<'_>,
    prompt: &[u32],
    opts: &DecodeOptions,
    rng: &mut fastrand::Rng,
    mut tried: Fallback,
) -> Result<WindowResult, ModelError> {
    let temps = &opts.temperatures;
    while tried.tried() < temps.len().min(ONE_AT_A_TIME) {
        let temperature = temps[tried.tried()];
        let decoded = decode_once(model, tok, window, prompt, temperature, opts, rng)?;
        if let Some(result) = tried.judge(decoded, temperature, tok, opts) {
            return Ok(result);
        }
    }
    let rest = &temps[tried.tried().min(temps.len())..];
    let decoded = decode_rows(
        model,
        tok,
        RowsCross::Shared(window),
        prompt,
        rest,
        opts,
        rng,
    )?;
    for (decoded, &temperature) in decoded.into_iter().zip(rest) {
        if let Some(result) = tried.judge(decoded, temperature, tok, opts) {
            return Ok(result);
        }
    }
    Ok(tried.best(opts))
}

/// Temperatures of the fallback tried one after the other (0 and 0.2 by
/// default); a window that fails the guards at all of them is mostly noise
/// or a repetition loop that fails at every temperature, and its remaining
/// temperatures are sampled together, one row each in one batched decode
/// reading the window's keys and values once, then judged in order, as one
/// by one. On long45.wav a window that failed every temperature cost five
/// decodes of up to 224 tokens alone (README "Whisper on ONNX Runtime").
const ONE_AT_A_TIME: usize = 2;

#[cfg(test)]
mod tests {
    use super::*;

    const TB: u32 = 20;
    const EOT: u32 = 10;
    const NO_TS: u32 = 19;
    const VOCAB: usize = 40;

    fn opts() -> DecodeOptions {
        DecodeOptions {
            max_initial_timestamp_index: Some(5),
            ..DecodeOptions::greedy(vec![3], vec![4, EOT], 448)
        }
    }

    fn filtered(generated: &[u32], base: &[f32]) -> Vec<f32> {
        let o = opts();
        let f = LogitFilter {
            opts: &o,
            eot: EOT,
            no_timestamps: NO_TS,
            timestamp_begin: TB,
        };
        let mut l = base.to_vec();
        f.apply(&mut l, generated);
        l
    }

    fn allowed(l: &[f32]) -> Vec<usize> {
        l.iter()
            .enumerate()
            .filter(|(_, v)| v.is_finite())
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let l = filtered(&[], &vec![0.0; VOCAB]);
        assert_eq!(allowed(&l), (20..=25).collect::<Vec<_>>());
    }

    #[test]
    fn after_a_timestamp_pair_text_must_follow() {
        // <|0.00|> text <|1.00|> <|1.00|> -> two timestamps in a row: no timestamp next
        let l = filtered(&[20, 5, 25, 25], &vec![0.0; VOCAB]);
        assert!(allowed(&l).iter().all(|&t| t < TB as usize));
        assert!(
            !allowed(&l).contains(&3),
            "suppressed token stays suppressed"
        );
    }

    #[test]
    fn after_an_opening_timestamp_only_its_close_or_eot() {
        // text then one timestamp: only eot or a timestamp >= the last one
        let mut base = vec![0.0; VOCAB];
        base[EOT as usize] = 5.0; // make eot likelier than the timestamps together
        let l = filtered(&[20, 5, 6, 24], &base);
        let a = allowed(&l);
        // no text token and no timestamp before the opening one; the special
        // ids between end-of-text and the timestamps are left to suppress_tokens
        assert!(
            a.iter()
                .all(|&t| t >= EOT as usize && !(TB as usize..24).contains(&t)),
            "{a:?}"
        );
        assert!(
            a.contains(&24),
            "the closing timestamp may equal the last one"
        );
        assert!(a.contains(&(EOT as usize)));
    }

    #[test]
    fn timestamps_do_not_go_backwards_and_segments_have_length() {
        // <|0.00|> text <|0.40|> <|0.40|> text: next timestamp must be > 0.40
        let l = filtered(&[20, 5, 22, 22, 6], &vec![0.0; VOCAB]);
        let a = allowed(&l);
        assert!(!a.contains(&20) && !a.contains(&22), "{a:?}");
        assert!(a.contains(&23));
    }

    #[test]
    fn timestamp_mass_beats_text_forces_timestamp() {
        let mut base = vec![-10.0; VOCAB];
        base[5] = 0.0; // best text token
        for t in 20..VOCAB {
            base[t] = -0.5; // each timestamp less likely than token 5, together far likelier
        }
        let l = filtered(&[20, 6], &base);
        assert!(allowed(&l).iter().all(|&t| t >= TB as usize));
    }

    #[test]
    fn no_timestamp_mass_check_is_nan_free_when_all_timestamps_masked() {
        let mut o = opts();
        o.max_initial_timestamp_index = None;
        let f = LogitFilter {
            opts: &o,
            eot: EOT,
            no_timestamps: NO_TS,
            timestamp_begin: TB,
        };
        let mut l = vec![0.0; VOCAB];
        // last timestamp is the very last id: every timestamp gets masked
        f.apply(&mut l, &[20, 5, (VOCAB - 1) as u32, (VOCAB - 1) as u32, 6]);
        assert!(l.iter().all(|v| !v.is_nan()));
        assert!(allowed(&l).contains(&5));
    }

    #[test]
    fn without_timestamps_only_suppression_applies() {
        let mut o = opts();
        o.without_timestamps = true;
        let f = LogitFilter {
            opts: &o,
            eot: EOT,
            no_timestamps: NO_TS,
            timestamp_begin: TB,
        };
        let mut l = vec![0.0; VOCAB];
        f.apply(&mut l, &[]);
        let a = allowed(&l);
        assert!(!a.contains(&3) && !a.contains(&4) && !a.contains(&(EOT as usize)));
        assert!(a.contains(&25) && a.contains(&5));
    }

    #[test]
    fn compression_ratio_flags_repetition() {
        let normal = "And so my fellow Americans, ask not what your country can do for you.";
        let looped = "I don't know. ".repeat(20);
        assert!(compression_ratio(normal) < 2.4);
        assert!(compression_ratio(&looped) > 2.4);
    }

    #[test]
    fn argmax_is_the_first_of_the_largest() {
        let mut rng = fastrand::Rng::with_seed(5);
        for len in 1..70 {
            // few distinct values, so the largest often comes more than once
            let x: Vec<f32> = (0..len).map(|_| rng.u8(..6) as f32).collect();
            let mut first = 0;
            for (i, &v) in x.iter().enumerate() {
                if v > x[first] {
                    first = i;
                }
            }
            assert_eq!(argmax(&x), first, "{x:?}");
        }
        assert_eq!(argmax(&[f32::NEG_INFINITY; 4]), 0);
    }

    #[test]
    fn exp_le0_is_expf_to_float_precision() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 * i as f32 / 200_000.0;
            let exact = (x as f64).exp();
            worst = worst.max(((exp_le0(x) as f64) - exact).abs() / exact);
        }
        assert!(worst < 3e-7, "largest relative error {worst}");
        assert!(exp_le0(f32::NEG_INFINITY) < 1e-37);
        assert_eq!(exp_le0(0.0), 1.0);
    }

    #[test]
    fn log_sum_exp_matches_double_precision() {
        let mut rng = fastrand::Rng::with_seed(11);
        for len in [1usize, 7, 8, 9, 1501, 51864] {
            let mut x: Vec<f32> = (0..len).map(|_| rng.f32() * 40.0 - 30.0).collect();
            if len > 1 {
                x[len / 2] = f32::NEG_INFINITY;
            }
            let max = x
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, |m, v| m.max(v as f64));
            let exact = max + x.iter().map(|&v| (v as f64 - max).exp()).sum::<f64>().ln();
            let got = log_sum_exp(&x) as f64;
            assert!(
                (got - exact).abs() < 1e-5 * exact.abs().max(1.0),
                "len {len}: {got} against {exact}"
            );
        }
    }

    #[test]
    fn log_sum_exp_is_stable() {
        assert_eq!(log_sum_exp(&[f32::NEG_INFINITY; 3]), f32::NEG_INFINITY);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f32.ln())).abs() < 1e-3);
        assert!((softmax_prob(&[0.0, 0.0, 0.0, 0.0], 2) - 0.25).abs() < 1e-6);
    }
}
