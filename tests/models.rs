//! Whisper models a user brings (`colloquy models add|list`): the test writes
//! small random-weight CTranslate2 Whisper folders itself (model.bin,
//! config.json, tokenizer.json), of large-v3 shape (128 mel bins, vocabulary
//! 51866 with 100 languages, float16) and turbo shape (the same, with 4
//! decoder layers under a deeper encoder, int8 weights, and the older
//! spellings and empty config.json of early converters), at d_model 64 so
//! it is fast; converts them with the `colloquy` binary into a temporary
//! models root; checks model.json against openai-whisper's tokenizer rules;
//! then decodes two seconds of audio with the random weights through
//! `WhisperEngine` and checks that what comes out obeys Whisper's
//! timestamp and special-token rules.
//!
//! Needs the ONNX Runtime library and the converter's Python environment
//! that `make setup` installs (skipped without them, failed under `make test`);
//! no network and no ../shared.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use colloquy::config::Config;
use colloquy::whisper::decode::decode_once;
use colloquy::whisper::mel::{MelFrontEnd, N_FRAMES};
use colloquy::whisper::model::{ModelDir, SpecialTokens, WhisperOnnx};
use colloquy::whisper::tokenizer::WhisperTokenizer;
use colloquy::whisper::WhisperEngine;
use common::{repo_path, skip_unless_required};
use serde_json::{json, Value};

// ---------------------------------------------------------------------------
// openai-whisper's special tokens (whisper/tokenizer.py), written out again
// here as the reference the converter is checked against
// ---------------------------------------------------------------------------

const LANGUAGES: [&str; 100] = [
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
];

/// `get_encoding`'s special tokens in id order, starting at the size of the
/// base BPE vocabulary (50257 for "multilingual"): end-of-text, start, the
/// languages, the task and other specials, 1501 timestamps.
fn openai_specials(n_vocab: usize) -> Vec<String> {
    let base = 50257; // multilingual (n_vocab >= 51865)
    let n_languages = n_vocab - base - 2 - 6 - 1501;
    let mut s = vec![
        "<|endoftext|>".to_string(),
        "<|startoftranscript|>".to_string(),
    ];
    s.extend(LANGUAGES[..n_languages].iter().map(|l| format!("<|{l}|>")));
    for t in [
        "translate",
        "transcribe",
        "startoflm",
        "startofprev",
        "nospeech",
        "notimestamps",
    ] {
        s.push(format!("<|{t}|>"));
    }
    s.extend((0..1501).map(|i| format!("<|{:.2}|>", i as f64 * 0.02)));
    assert_eq!(base + s.len(), n_vocab);
    s
}

/// model.json's `tokens` as the reference rules give them.
fn reference_ids(n_vocab: usize) -> BTreeMap<&'static str, u64> {
    let specials = openai_specials(n_vocab);
    let id = |t: &str| 50257 + specials.iter().position(|s| s == t).unwrap() as u64;
    BTreeMap::from([
        ("eot", id("<|endoftext|>")),
        ("sot", id("<|startoftranscript|>")),
        ("lang_first", id("<|en|>")),
        ("translate", id("<|translate|>")),
        ("transcribe", id("<|transcribe|>")),
        ("sot_lm", id("<|startoflm|>")),
        ("sot_prev", id("<|startofprev|>")),
        ("no_speech", id("<|nospeech|>")),
        ("no_timestamps", id("<|notimestamps|>")),
        ("timestamp_begin", id("<|0.00|>")),
    ])
}

// ---------------------------------------------------------------------------
// A CTranslate2 Whisper folder with random weights
// ---------------------------------------------------------------------------

struct Shape {
    n_mels: usize,
    d: usize,
    encoder_layers: usize,
    decoder_layers: usize,
    n_vocab: usize,
    /// int8 linear and embedding weights with per-row scales (CTranslate2's
    /// int8_float16), else float16 everywhere.
    int8: bool,
    /// Variables under this prefix are stored as bfloat16 instead of float16.
    bf16_prefix: Option<&'static str>,
}

/// CTranslate2 model.bin (version 6, WhisperSpec revision 3), variables sorted by name.
struct ModelBin {
    vars: BTreeMap<String, (Vec<usize>, u8, Vec<u8>)>,
    /// Every weight as drawn, before float16/bfloat16/int8 storage.
    drawn: BTreeMap<String, Vec<f32>>,
    rng: fastrand::Rng,
    int8: bool,
    bf16_prefix: Option<&'static str>,
}

const F32: u8 = 0;
const I8: u8 = 1;
const I16: u8 = 2;
const F16: u8 = 4;
const BF16: u8 = 5;

impl ModelBin {
    fn uniform(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n)
            .map(|_| (self.rng.f32() * 2.0 - 1.0) * scale)
            .collect()
    }

    fn raw(&mut self, name: &str, dims: &[usize], dtype: u8, data: Vec<u8>) {
        self.vars
            .insert(name.to_string(), (dims.to_vec(), dtype, data));
    }

    fn float(&mut self, name: &str, dims: &[usize], values: &[f32]) {
        assert_eq!(values.len(), dims.iter().product::<usize>());
        self.drawn.insert(name.to_string(), values.to_vec());
        if self.bf16_prefix.is_some_and(|p| name.starts_with(p)) {
            let bytes = values
                .iter()
                .flat_map(|&v| bf16_bits(v).to_le_bytes())
                .collect();
            return self.raw(name, dims, BF16, bytes);
        }
        let bytes = values
            .iter()
            .flat_map(|&v| f16_bits(v).to_le_bytes())
            .collect();
        self.raw(name, dims, F16, bytes);
    }

    /// A weight matrix: float16, or int8 with `<name>_scale` (round(w * 127 / row max)).
    fn matrix(&mut self, name: &str, rows: usize, cols: usize, scale: f32) {
        let w = self.uniform(rows * cols, scale);
        if !self.int8 {
            return self.float(name, &[rows, cols], &w);
        }
        self.drawn.insert(name.to_string(), w.clone());
        let mut q = Vec::with_capacity(w.len());
        let mut scales = Vec::with_capacity(rows);
        for row in w.chunks(cols) {
            let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = 127.0 / amax;
            scales.push(s);
            q.extend(row.iter().map(|v| (v * s).round() as i8 as u8));
        }
        self.raw(name, &[rows, cols], I8, q);
        let bytes = scales.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.raw(&format!("{name}_scale"), &[rows], F32, bytes);
    }

    fn linear(
        &mut self,
        prefix: &str,
        out: usize,
        inp: usize,
        zero_bias_rows: std::ops::Range<usize>,
    ) {
        self.matrix(
            &format!("{prefix}/weight"),
            out,
            inp,
            (3.0 / inp as f32).sqrt(),
        );
        let mut b = self.uniform(out, 0.02);
        b[zero_bias_rows].fill(0.0); // Whisper's keys have no bias
        self.float(&format!("{prefix}/bias"), &[out], &b);
    }

    fn layer_norm(&mut self, prefix: &str, d: usize) {
        let g: Vec<f32> = self.uniform(d, 0.1).iter().map(|v| 1.0 + v).collect();
        let b = self.uniform(d, 0.05);
        self.float(&format!("{prefix}/gamma"), &[d], &g);
        self.float(&format!("{prefix}/beta"), &[d], &b);
    }

    fn scalar(&mut self, name: &str, dtype: u8, v: i16) {
        let data = if dtype == I16 {
            v.to_le_bytes().to_vec()
        } else {
            vec![v as i8 as u8]
        };
        self.raw(name, &[], dtype, data);
    }

    fn whisper(shape: &Shape, seed: u64) -> ModelBin {
        let mut m = ModelBin {
            vars: BTreeMap::new(),
            drawn: BTreeMap::new(),
            rng: fastrand::Rng::with_seed(seed),
            int8: shape.int8,
            bf16_prefix: shape.bf16_prefix,
        };
        let (d, heads) = (shape.d, shape.d / 64);
        let conv1 = m.uniform(
            d * shape.n_mels * 3,
            (1.0 / (shape.n_mels * 3) as f32).sqrt(),
        );
        m.float("encoder/conv1/weight", &[d, shape.n_mels, 3], &conv1);
        let b = m.uniform(d, 0.02);
        m.float("encoder/conv1/bias", &[d], &b);
        let conv2 = m.uniform(d * d * 3, (1.0 / (d * 3) as f32).sqrt());
        m.float("encoder/conv2/weight", &[d, d, 3], &conv2);
        let b = m.uniform(d, 0.02);
        m.float("encoder/conv2/bias", &[d], &b);
        let pos = m.uniform(1500 * d, 0.1);
        m.float("encoder/position_encodings/encodings", &[1500, d], &pos);
        m.layer_norm("encoder/layer_norm", d);
        m.scalar("encoder/num_heads", I16, heads as i16);
        for i in 0..shape.encoder_layers {
            let p = format!("encoder/layer_{i}");
            m.layer_norm(&format!("{p}/self_attention/layer_norm"), d);
            m.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d, d..2 * d);
            m.linear(&format!("{p}/self_attention/linear_1"), d, d, 0..0);
            m.layer_norm(&format!("{p}/ffn/layer_norm"), d);
            m.linear(&format!("{p}/ffn/linear_0"), 4 * d, d, 0..0);
            m.linear(&format!("{p}/ffn/linear_1"), d, 4 * d, 0..0);
        }
        m.matrix("decoder/embeddings/weight", shape.n_vocab, d, 0.2);
        let pos = m.uniform(448 * d, 0.1);
        m.float("decoder/position_encodings/encodings", &[448, d], &pos);
        m.layer_norm("decoder/layer_norm", d);
        for i in 0..shape.decoder_layers {
            let p = format!("decoder/layer_{i}");
            m.layer_norm(&format!("{p}/self_attention/layer_norm"), d);
            m.linear(&format!("{p}/self_attention/linear_0"), 3 * d, d, d..2 * d);
            m.linear(&format!("{p}/self_attention/linear_1"), d, d, 0..0);
            m.layer_norm(&format!("{p}/attention/layer_norm"), d);
            m.linear(&format!("{p}/attention/linear_0"), d, d, 0..0);
            m.linear(&format!("{p}/attention/linear_1"), 2 * d, d, 0..d);
            m.linear(&format!("{p}/attention/linear_2"), d, d, 0..0);
            m.layer_norm(&format!("{p}/ffn/layer_norm"), d);
            m.linear(&format!("{p}/ffn/linear_0"), 4 * d, d, 0..0);
            m.linear(&format!("{p}/ffn/linear_1"), d, 4 * d, 0..0);
        }
        for (name, dtype, v) in [
            ("decoder/activation", I8, 3), // GELU (erf)
            ("decoder/alibi", I8, 0),
            ("decoder/alignment_heads", I16, 1),
            ("decoder/alignment_layer", I16, -1),
            ("decoder/num_heads", I16, heads as i16),
            ("decoder/pre_norm", I8, 1),
            ("decoder/scale_embeddings", I8, 0),
            ("decoder/start_from_zero_embedding", I8, 0),
        ] {
            m.scalar(name, dtype, v);
        }
        m
    }

    fn write(&self, path: &Path) {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(&(s.len() as u16 + 1).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend_from_slice(&6u32.to_le_bytes());
        string(&mut out, "WhisperSpec");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(&(self.vars.len() as u32).to_le_bytes());
        for (name, (dims, dtype, data)) in &self.vars {
            string(&mut out, name);
            out.push(dims.len() as u8);
            for &dim in dims {
                out.extend_from_slice(&(dim as u32).to_le_bytes());
            }
            out.push(*dtype);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
        }
        out.extend_from_slice(&1u32.to_le_bytes());
        string(&mut out, "decoder/projection/weight");
        string(&mut out, "decoder/embeddings/weight");
        std::fs::write(path, out).unwrap();
    }
}

/// f32 -> IEEE half, round to nearest even (values here are far from the
/// subnormal and overflow ranges; those flush to 0 / saturate to inf).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    let mant = b & 0x7f_ffff;
    if exp <= 0 {
        return sign;
    }
    if exp >= 31 {
        return sign | 0x7c00;
    }
    let mut h = ((exp as u32) << 10) | (mant >> 13);
    let rem = mant & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && h & 1 == 1) {
        h += 1;
    }
    sign | h as u16
}

/// f32 -> bfloat16 (the upper 16 bits), round to nearest even.
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// The first `rows` rows of initializer `name` of a converted ONNX graph
/// (read with the setup venv's `onnx`, external data included).
fn onnx_rows(python: &Path, graph: &Path, name: &str, rows: usize) -> Vec<Vec<f32>> {
    let code = "import json, sys, onnx\nfrom onnx import numpy_helper\n\
                m = onnx.load(sys.argv[1])\n\
                a = [numpy_helper.to_array(t) for t in m.graph.initializer if t.name == sys.argv[2]][0]\n\
                print(json.dumps(a.reshape(a.shape[0], -1)[:int(sys.argv[3])].tolist()))";
    let out = run_ok(
        Command::new(python)
            .args(["-c", code])
            .arg(graph)
            .arg(name)
            .arg(rows.to_string()),
    );
    serde_json::from_str(&out).unwrap()
}

/// The converted weights are the drawn ones, within what the storage type
/// keeps: `tolerance(row)` is the largest error allowed in that row.
fn assert_weights_kept(
    got: &[Vec<f32>],
    drawn: &[f32],
    tolerance: impl Fn(&[f32]) -> f32,
    what: &str,
) {
    let cols = got[0].len();
    for (r, row) in got.iter().enumerate() {
        let want = &drawn[r * cols..(r + 1) * cols];
        let tol = tolerance(want);
        for (c, (g, w)) in row.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol,
                "{what}[{r}][{c}]: {g} vs drawn {w} (tolerance {tol})"
            );
        }
    }
}

/// GPT-2's byte-level BPE alphabet: byte -> printable character.
fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (0x21..=0x7e)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}

/// A byte-level BPE tokenizer.json that the `tokenizers` crate loads, with
/// Whisper's special tokens added at their ids: ids 0..255 are the byte
/// characters in GPT-2's order (so " " is 220, as in Whisper), a few merges,
/// then made-up words up to end-of-text. `old_spellings`: <|nocaptions|> for
/// <|nospeech|> and no timestamp tokens, as in the first tokenizer files.
fn tokenizer_json(n_vocab: usize, old_spellings: bool) -> Value {
    let chars = byte_chars();
    let mut order: Vec<u32> = (0x21..=0x7e)
        .chain(0xa1..=0xac)
        .chain(0xae..=0xff)
        .collect();
    order.extend((0..256).filter(|b| !order.contains(b)).collect::<Vec<_>>());
    let mut vocab = serde_json::Map::new();
    for (id, b) in order.iter().enumerate() {
        vocab.insert(chars[*b as usize].to_string(), json!(id));
    }
    // " -", " '" and " ♪" (whose UTF-8 starts with the byte shown as 'â') start
    // with one token, as in Whisper's vocabularies
    let merges = [
        "Ġ t", "h e", "Ġt he", "Ġ -", "Ġ '", "Ġ â", "Ġ a", "n d", "Ġa nd",
    ];
    for m in merges {
        vocab.insert(m.replace(' ', ""), json!(vocab.len()));
    }
    let eot = 50257usize;
    let mut i = 0usize;
    while vocab.len() < eot {
        let mut word = String::from("Ġq");
        let mut k = i;
        loop {
            word.push((b'a' + (k % 26) as u8) as char);
            k /= 26;
            if k == 0 {
                break;
            }
        }
        vocab.insert(word, json!(vocab.len()));
        i += 1;
    }
    let added: Vec<Value> = openai_specials(n_vocab)
        .into_iter()
        .enumerate()
        .filter(|(_, t)| !(old_spellings && t.starts_with("<|") && t[2..].starts_with(|c: char| c.is_ascii_digit())))
        .map(|(i, t)| {
            let t = if old_spellings && t == "<|nospeech|>" { "<|nocaptions|>".to_string() } else { t };
            json!({"id": eot + i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": null,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
                  "end_of_word_suffix": "", "fuse_unk": false, "vocab": vocab, "merges": merges},
    })
}

// ---------------------------------------------------------------------------
// Setting up, running the binary
// ---------------------------------------------------------------------------

/// A scratch folder removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("colloquy-models-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The real installation's ONNX Runtime library, or None (skip) when `make
/// setup` has not run; the converter's python must be reachable from `root`.
fn runtime_library(root: &Path) -> Option<PathBuf> {
    let real = Config::load(None).expect("config");
    let lib = real.onnxruntime_library();
    let python = colloquy::models::converter_python(&config(root, &lib, &[]));
    if lib.exists() && python.is_ok() {
        return Some(lib);
    }
    let msg = format!(
        "ONNX Runtime ({}) or the converter's venv is missing: run `make setup`",
        lib.display()
    );
    skip_unless_required(&msg);
    None
}

fn env_for(root: &Path, lib: &Path) -> Vec<(String, String)> {
    vec![
        ("COLLOQUY__MODELS__DIR".into(), root.display().to_string()),
        (
            "COLLOQUY__MODELS__ONNXRUNTIME".into(),
            lib.display().to_string(),
        ),
        // two of these tests run side by side on small machines
        ("COLLOQUY__RUNTIME__INTRA_THREADS".into(), "1".into()),
    ]
}

/// The configuration a user of `root` has, with `overrides` ("whisper.model", "x").
fn config(root: &Path, lib: &Path, overrides: &[(&str, &str)]) -> Config {
    let mut env: Vec<(String, String)> = std::env::vars()
        .filter(|(k, _)| !k.starts_with("COLLOQUY__"))
        .collect();
    env.extend(env_for(root, lib));
    for (k, v) in overrides {
        env.push((
            format!("COLLOQUY__{}", k.replace('.', "__").to_ascii_uppercase()),
            v.to_string(),
        ));
    }
    Config::load_with_env(None, env).expect("config")
}

fn colloquy(root: &Path, lib: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_colloquy"));
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("COLLOQUY__")) {
        cmd.env_remove(k);
    }
    cmd.envs(env_for(root, lib));
    cmd
}

fn run_ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
    )
    .unwrap()
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

// ---------------------------------------------------------------------------
// Whisper's rules on generated tokens
// ---------------------------------------------------------------------------

/// Tokens generated for one window (prompt and end-of-text excluded) obey the
/// logit rules: the first is a timestamp no later than `max_initial`; text
/// follows it; timestamps come at most two in a row, never go back, and the
/// first one after text is later than the one before; no special token other
/// than text and timestamps, nothing from `suppress`.
fn assert_whisper_rules(
    tokens: &[u32],
    sp: &SpecialTokens,
    suppress: &[u32],
    n_vocab: u32,
    max_initial: u32,
) {
    let is_ts = |t: u32| t >= sp.timestamp_begin;
    assert!(
        !tokens.is_empty(),
        "a window starts with a timestamp, so something is generated"
    );
    let first = tokens[0];
    assert!(
        is_ts(first) && first <= sp.timestamp_begin + max_initial,
        "first token {first} in {tokens:?}"
    );
    let mut last_ts: Option<u32> = None;
    for (i, &t) in tokens.iter().enumerate() {
        assert!(t < n_vocab, "{t} outside the vocabulary");
        assert!(
            t < sp.eot || is_ts(t),
            "special token {t} at {i} in {tokens:?}"
        );
        assert!(!suppress.contains(&t), "suppressed token {t} at {i}");
        if !is_ts(t) {
            continue;
        }
        let prev_ts = i > 0 && is_ts(tokens[i - 1]);
        if i == 1 {
            panic!("text must follow the first timestamp: {tokens:?}");
        }
        if prev_ts {
            assert!(
                i < 2 || !is_ts(tokens[i - 2]),
                "three timestamps in a row at {i}: {tokens:?}"
            );
            assert!(
                t >= last_ts.unwrap(),
                "a closing timestamp went back at {i}: {tokens:?}"
            );
        } else if let Some(l) = last_ts {
            assert!(
                t > l,
                "timestamp {t} after text is not later than {l} (at {i}): {tokens:?}"
            );
        }
        last_ts = Some(t);
    }
}

/// Decodes the first window of `samples` at temperature 0 (greedy) and 1
/// (sampled) with the model's own pieces, and checks the raw tokens.
fn decode_raw_windows(cfg: &Config, samples: &[f32]) {
    let dir = ModelDir::open(&cfg.models_root(), &cfg.whisper.model).unwrap();
    let mc = dir.config.clone();
    let mut model = WhisperOnnx::load(
        &cfg.onnxruntime_library(),
        &dir,
        cfg.whisper.precision,
        &cfg.runtime,
    )
    .unwrap();
    let tok = WhisperTokenizer::from_file(&dir.tokenizer_path(), mc.tokens.clone()).unwrap();
    let front = MelFrontEnd::new(mc.n_mels);
    let mel = front.compute(samples);
    let window = model.encode(&mel.window(0, N_FRAMES)).unwrap();
    let opts = common::greedy_options(&dir);
    let sp = &mc.tokens;
    let prompt = [sp.sot, mc.language_token("en").unwrap(), sp.transcribe];
    let mut rng = fastrand::Rng::with_seed(5);
    for temperature in [0.0, 1.0] {
        let d = decode_once(
            &mut model,
            &tok,
            &window.active(),
            &prompt,
            temperature,
            &opts,
            &mut rng,
        )
        .unwrap();
        let (tokens, sum_logprob, no_speech) = (d.tokens, d.sum_logprob, d.no_speech_prob);
        assert_eq!(
            d.token_probs.len(),
            tokens.len(),
            "one probability per token"
        );
        assert!(tokens.len() <= mc.n_text_ctx / 2, "{} tokens", tokens.len());
        assert!(
            sum_logprob.is_finite() && (0.0..=1.0).contains(&no_speech),
            "{sum_logprob} {no_speech}"
        );
        assert_whisper_rules(&tokens, sp, &opts.suppress_tokens, mc.n_vocab as u32, 50);
        // the text between timestamps decodes with the model's tokenizer
        tok.decode(&tokens).unwrap();
        let head = &tokens[..tokens.len().min(6)];
        eprintln!(
            "{} at T={temperature}: {} tokens, first {head:?}",
            mc.name,
            tokens.len()
        );
    }
}

/// Whisper through the engine (seek loop, fallback, segments) on two seconds
/// of speech: it must stop, and every segment's tokens obey the rules.
fn transcribe_two_seconds(cfg: &Config) -> colloquy::whisper::Transcript {
    let audio = colloquy::audio::load_16k_mono(
        &repo_path("tests/data/speech_en.flac"),
        colloquy::audio::DecodeLimits::NONE,
    )
    .unwrap();
    let samples = &audio.samples[..32_000];
    let mut engine =
        WhisperEngine::load(cfg).unwrap_or_else(|e| panic!("load {}: {e}", cfg.whisper.model));
    let t0 = std::time::Instant::now();
    let t = engine.transcribe(samples).unwrap();
    let dir = ModelDir::open(&cfg.models_root(), &cfg.whisper.model).unwrap();
    let sp = &dir.config.tokens;
    let mut last_end = 0.0;
    for s in &t.segments {
        assert!(s.start >= last_end - 1e-9 && s.end > s.start, "{s:?}");
        last_end = s.end;
        for &tk in &s.tokens {
            assert!(
                tk < sp.eot || tk >= sp.timestamp_begin,
                "special token {tk} in {s:?}"
            );
            assert!(
                !dir.ct2.suppress_ids.contains(&tk),
                "suppressed {tk} in {s:?}"
            );
        }
    }
    eprintln!(
        "{}: {} windows, {} segments, language {}, {:.2}s: {:?}",
        cfg.whisper.model,
        t.timings.windows,
        t.segments.len(),
        t.language,
        t0.elapsed().as_secs_f64(),
        t.full_text().chars().take(60).collect::<String>()
    );
    decode_raw_windows(cfg, samples);
    t
}

// ---------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------

#[test]
fn large_v3_shape_is_added_under_its_folder_name_and_decodes() {
    let scratch = Scratch::new("v3");
    let root = scratch.0.join("cache");
    let Some(lib) = runtime_library(&root) else {
        return;
    };
    let n_vocab = 51866;
    let src = scratch.0.join("faster-whisper-large-v3");
    std::fs::create_dir_all(&src).unwrap();
    // float16, with the convolutions in bfloat16 to cover that storage too
    let shape = Shape {
        n_mels: 128,
        d: 64,
        encoder_layers: 2,
        decoder_layers: 2,
        n_vocab,
        int8: false,
        bf16_prefix: Some("encoder/conv"),
    };
    let bin = ModelBin::whisper(&shape, 1);
    bin.write(&src.join("model.bin"));
    let suppress: Vec<u64> = vec![
        1, 2, 7, 8, 9, 10, 14, 25, 26, 27, 28, 29, 31, 58, 59, 60, 61, 62, 63, 90, 91, 92, 93, 359,
        503, 522, 542, 873, 50254, 50258, 50359, 50360, 50361, 50362, 50363,
    ];
    std::fs::write(
        src.join("config.json"),
        json!({"alignment_heads": [[1, 0]], "lang_ids": (50259..50359).collect::<Vec<_>>(),
               "suppress_ids": suppress, "suppress_ids_begin": [220, 50257]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        src.join("tokenizer.json"),
        tokenizer_json(n_vocab, false).to_string(),
    )
    .unwrap();
    std::fs::write(
        src.join("preprocessor_config.json"),
        r#"{"feature_size": 128, "sampling_rate": 16000}"#,
    )
    .unwrap();
    std::fs::write(src.join("vocabulary.json"), "[]").unwrap(); // faster-whisper folders have one; not needed

    let t0 = std::time::Instant::now();
    let out = run_ok(colloquy(&root, &lib).args(["models", "add", src.to_str().unwrap()]));
    eprintln!("models add: {:.1}s\n{out}", t0.elapsed().as_secs_f64());
    assert!(
        out.contains("installed large-v3") && out.contains("128 mels"),
        "{out}"
    );

    let dir = root.join("models/whisper-large-v3");
    let mj = read_json(&dir.join("model.json"));
    assert_eq!(mj["name"], "whisper-large-v3");
    let dims = (
        mj["n_mels"].as_u64(),
        mj["n_vocab"].as_u64(),
        mj["d_model"].as_u64(),
    );
    assert_eq!(dims, (Some(128), Some(51866), Some(64)));
    assert_eq!(
        (
            mj["n_encoder_layers"].as_u64(),
            mj["n_decoder_layers"].as_u64()
        ),
        (Some(2), Some(2))
    );
    assert_eq!(mj["multilingual"], true);
    // large-v3's ids, as openai-whisper's tokenizer gives them
    let want: BTreeMap<&str, u64> = BTreeMap::from([
        ("eot", 50257),
        ("sot", 50258),
        ("lang_first", 50259),
        ("translate", 50359),
        ("transcribe", 50360),
        ("sot_lm", 50361),
        ("sot_prev", 50362),
        ("no_speech", 50363),
        ("no_timestamps", 50364),
        ("timestamp_begin", 50365),
    ]);
    assert_eq!(want, reference_ids(n_vocab));
    let got: BTreeMap<&str, u64> = want
        .keys()
        .map(|&k| (k, mj["tokens"][k].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want);
    let langs: Vec<&str> = mj["languages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert_eq!(langs, LANGUAGES.to_vec(), "100 languages, yue last");
    assert_eq!(
        mj["alignment_heads"],
        json!([[1, 0]]),
        "config.json's heads"
    );
    assert_eq!(
        ids(&read_json(&dir.join("ct2_config.json"))["suppress_ids"]),
        suppress
    );
    let manifest = read_json(&dir.join("manifest.json"));
    assert_eq!(manifest["model"], "whisper-large-v3");
    assert!(
        manifest["source"]["files"]["model.bin"].is_string(),
        "{manifest}"
    );
    assert!(
        manifest["source"]["files"]["preprocessor_config.json"].is_string(),
        "{manifest}"
    );

    // the weights came through: bfloat16 convolutions, float16 embeddings
    let python = colloquy::models::converter_python(&config(&root, &lib, &[])).unwrap();
    let amax = |row: &[f32]| row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let conv1 = onnx_rows(&python, &dir.join("encoder.onnx"), "conv1.weight", 4);
    assert_eq!(conv1[0].len(), 128 * 3);
    assert_weights_kept(
        &conv1,
        &bin.drawn["encoder/conv1/weight"],
        |r| amax(r) / 128.0,
        "conv1 (bf16)",
    );
    let emb = onnx_rows(&python, &dir.join("decoder.onnx"), "decoder.embeddings", 4);
    assert_weights_kept(
        &emb,
        &bin.drawn["decoder/embeddings/weight"],
        |r| amax(r) / 1024.0,
        "embeddings (f16)",
    );

    let list = run_ok(colloquy(&root, &lib).args(["models", "list"]));
    assert!(
        list.starts_with("large-v3") && list.contains("128 mels") && list.contains("2+2 layers"),
        "{list}"
    );

    // adding the same folder again finds it converted
    let t0 = std::time::Instant::now();
    let again = run_ok(colloquy(&root, &lib).args(["models", "add", src.to_str().unwrap()]));
    assert!(again.contains("installed large-v3"), "{again}");
    eprintln!("models add again: {:.1}s", t0.elapsed().as_secs_f64());

    let cfg = config(
        &root,
        &lib,
        &[("whisper.model", "large-v3"), ("whisper.language", "en")],
    );
    let t = transcribe_two_seconds(&cfg);
    assert_eq!(t.language, "en");
}

#[test]
fn turbo_shape_with_int8_weights_and_an_old_config_is_added_and_decodes() {
    let scratch = Scratch::new("turbo");
    let root = scratch.0.join("cache");
    let Some(lib) = runtime_library(&root) else {
        return;
    };
    let n_vocab = 51866;
    let src = scratch.0.join("whisper-turbo-int8");
    std::fs::create_dir_all(&src).unwrap();
    let shape = Shape {
        n_mels: 128,
        d: 64,
        encoder_layers: 6,
        decoder_layers: 4,
        n_vocab,
        int8: true,
        bf16_prefix: None,
    };
    let bin = ModelBin::whisper(&shape, 2);
    bin.write(&src.join("model.bin"));
    // an early converter's config.json, and <|nocaptions|> without timestamp tokens
    std::fs::write(
        src.join("config.json"),
        r#"{"alignment_heads": null, "lang_ids": null, "suppress_ids": null, "suppress_ids_begin": null}"#,
    )
    .unwrap();
    let tokenizer = tokenizer_json(n_vocab, true);
    std::fs::write(src.join("tokenizer.json"), tokenizer.to_string()).unwrap();

    // names that would leave the models folder are refused before anything runs
    for bad in ["../escape", "a/b", "..", ".hidden"] {
        let out = colloquy(&root, &lib)
            .args(["models", "add", src.to_str().unwrap(), "--name", bad])
            .output()
            .unwrap();
        assert!(!out.status.success());
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("not a model name"),
            "{bad}: {out:?}"
        );
    }
    assert!(!scratch.0.join("escape").exists() && !root.join("models").exists());
    // a folder without the CTranslate2 files
    let out = colloquy(&root, &lib)
        .args(["models", "add", scratch.0.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not a CTranslate2 Whisper folder"),
        "{out:?}"
    );

    let t0 = std::time::Instant::now();
    let out = run_ok(
        colloquy(&root, &lib)
            .args([
                "models",
                "add",
                src.to_str().unwrap(),
                "--name",
                "turbo-test",
            ])
            // weights beside the graphs, as for models over 2 GB
            .env("COLLOQUY_CONVERT_EXTERNAL_DATA", "1"),
    );
    eprintln!("models add: {:.1}s\n{out}", t0.elapsed().as_secs_f64());
    assert!(
        out.contains("installed turbo-test") && out.contains("6+4 layers"),
        "{out}"
    );

    let dir = root.join("models/whisper-turbo-test");
    // another folder with other files does not replace it (the same files would be "already converted")
    let copy = scratch.0.join("copy");
    std::fs::create_dir_all(&copy).unwrap();
    for f in ["model.bin", "config.json", "tokenizer.json"] {
        std::fs::copy(src.join(f), copy.join(f)).unwrap();
    }
    std::fs::write(copy.join("config.json"), r#"{"alignment_heads": [[3, 0]]}"#).unwrap();
    let out = colloquy(&root, &lib)
        .args([
            "models",
            "add",
            copy.to_str().unwrap(),
            "--name",
            "turbo-test",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already installed from"),
        "{err}"
    );

    let mj = read_json(&dir.join("model.json"));
    assert_eq!(
        (mj["n_mels"].as_u64(), mj["n_vocab"].as_u64()),
        (Some(128), Some(51866))
    );
    assert_eq!(
        (
            mj["n_encoder_layers"].as_u64(),
            mj["n_decoder_layers"].as_u64()
        ),
        (Some(6), Some(4))
    );
    let want = reference_ids(n_vocab);
    let got: BTreeMap<&str, u64> = want
        .keys()
        .map(|&k| (k, mj["tokens"][k].as_u64().unwrap()))
        .collect();
    assert_eq!(got, want, "<|nocaptions|> is the no-speech token");
    // openai-whisper's default heads: every head of the second half of the decoder layers
    assert_eq!(mj["alignment_heads"], json!([[2, 0], [3, 0]]));
    // what config.json lacked, filled in by openai-whisper's defaults
    let ct2 = read_json(&dir.join("ct2_config.json"));
    assert_eq!(ids(&ct2["lang_ids"]), (50259..50359).collect::<Vec<u64>>());
    assert_eq!(ids(&ct2["suppress_ids_begin"]), vec![220, 50257]);
    let suppress = ids(&ct2["suppress_ids"]);
    let vocab = &tokenizer["model"]["vocab"];
    for t in ["#", "(", "\"", "Ġ-", "Ġ'"] {
        let id = vocab[t].as_u64().unwrap();
        assert!(suppress.contains(&id), "{t} ({id}) not in {suppress:?}");
    }
    assert!(
        !suppress.contains(&220) && !suppress.contains(&vocab["a"].as_u64().unwrap()),
        "{suppress:?}"
    );
    for k in [
        "translate",
        "transcribe",
        "sot",
        "sot_prev",
        "sot_lm",
        "no_speech",
    ] {
        assert!(suppress.contains(&want[k]), "{k}");
    }
    let manifest = read_json(&dir.join("manifest.json"));
    for f in [
        "encoder.onnx",
        "encoder.onnx.data",
        "decoder.onnx",
        "decoder.onnx.data",
        "decoder.int8.onnx",
        "projection.f32",
    ] {
        assert!(
            manifest["outputs"][f].is_string() && dir.join(f).is_file(),
            "{f}: {manifest}"
        );
    }

    // int8 weights dequantized with their per-row scales
    let python = colloquy::models::converter_python(&config(&root, &lib, &[])).unwrap();
    let amax = |row: &[f32]| row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let emb = onnx_rows(&python, &dir.join("decoder.onnx"), "decoder.embeddings", 4);
    assert_weights_kept(
        &emb,
        &bin.drawn["decoder/embeddings/weight"],
        |r| amax(r) / 127.0 * 0.51,
        "embeddings (int8)",
    );
    let conv1 = onnx_rows(&python, &dir.join("encoder.onnx"), "conv1.weight", 4);
    assert_weights_kept(
        &conv1,
        &bin.drawn["encoder/conv1/weight"],
        |r| amax(r) / 1024.0,
        "conv1 (f16)",
    );

    let cfg = config(
        &root,
        &lib,
        &[
            ("whisper.model", "turbo-test"),
            ("whisper.language", "auto"),
        ],
    );
    let t = transcribe_two_seconds(&cfg);
    assert!(LANGUAGES.contains(&t.language.as_str()), "{}", t.language);
    // its int8 conversion is written, but not offered: it was never
    // measured against fp32 (benches/int8_parity.py)
    let int8 = config(
        &root,
        &lib,
        &[
            ("whisper.model", "turbo-test"),
            ("whisper.precision", "int8"),
        ],
    );
    let refused = WhisperEngine::load(&int8)
        .err()
        .expect("int8 of an unmeasured model is refused")
        .to_string();
    assert!(
        refused.contains("not offered for model 'turbo-test'") && refused.contains("fp32"),
        "{refused}"
    );
}

/// `whisper.model` names any installed model; a missing one lists them;
/// `GET /health` lists them all. Uses the real installation's converted
/// models, linked into a scratch models root under other names.
#[test]
fn health_and_a_missing_model_list_the_installed_models() {
    let real = Config::load(None).expect("config");
    let real_root = real.models_root();
    let tiny = real_root.join("models/whisper-tiny.en");
    if !tiny.join("manifest.json").exists() || !real_root.join("models/diarization").is_dir() {
        let msg = format!(
            "models not installed under {} (run `make setup`)",
            real_root.display()
        );
        skip_unless_required(&msg);
        return;
    }
    let lib = real.onnxruntime_library();
    let scratch = Scratch::new("health");
    let root = scratch.0.join("cache");
    std::fs::create_dir_all(root.join("models")).unwrap();
    for (link, target) in [
        ("whisper-tiny.en", tiny.clone()),
        ("whisper-my.model", tiny.clone()),
        ("diarization", real_root.join("models/diarization")),
        ("vad", real_root.join("models/vad")),
    ] {
        std::os::unix::fs::symlink(target, root.join("models").join(link)).unwrap();
    }

    match WhisperEngine::load(&config(&root, &lib, &[("whisper.model", "large-v9")])) {
        Ok(_) => panic!("a model that is not installed loaded"),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("'large-v9' is not installed"), "{msg}");
            assert!(msg.contains("installed: my.model, tiny.en"), "{msg}");
            assert!(
                msg.contains("colloquy models add") && msg.contains("make setup"),
                "{msg}"
            );
        }
    }
    match WhisperEngine::load(&config(
        &root,
        &lib,
        &[("whisper.model", "../models/whisper-tiny.en")],
    )) {
        Ok(_) => panic!("a path was taken for a model name"),
        Err(e) => assert!(e.to_string().contains("not a model name"), "{e}"),
    }
    let list = run_ok(colloquy(&root, &lib).args(["models", "list"]));
    assert!(
        list.starts_with("my.model") && list.contains("\ntiny.en") && list.contains("80 mels"),
        "{list}"
    );

    let mut child = colloquy(&root, &lib)
        .args([
            "serve",
            "--port",
            "0",
            "--storage",
            scratch.0.join("storage").to_str().unwrap(),
        ])
        .env("COLLOQUY__SERVER__BIND", "127.0.0.1")
        .env("COLLOQUY__WHISPER__MODEL", "my.model")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let health = line
        .trim()
        .strip_prefix("colloquy listening on http://")
        .map(|addr| {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            write!(
                s,
                "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
            )
            .unwrap();
            let mut resp = String::new();
            s.read_to_string(&mut resp).unwrap();
            resp
        });
    let _ = child.kill();
    let _ = child.wait();
    let resp = health.unwrap_or_else(|| panic!("serve did not start: {line:?}"));
    let body: Value = serde_json::from_str(resp.split("\r\n\r\n").nth(1).unwrap()).unwrap();
    assert_eq!(body["whisper_model"], "my.model");
    let models = body["whisper_models"].as_array().unwrap();
    let names: Vec<&str> = models.iter().map(|m| m["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["my.model", "tiny.en"], "{body}");
    assert_eq!(body["whisper_models"][1]["n_mels"], 80);
    assert_eq!(body["whisper_models"][1]["multilingual"], false);
}
