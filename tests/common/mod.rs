//! Shared helpers for the integration tests: loading the real models (or
//! skipping with a message when `make setup` has not run), test audio paths.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use colloquy::config::Config;

pub mod fakes;
pub mod http;
pub mod pg;
pub mod s3;

/// `make test` sets this so that missing models fail the run instead of skipping.
pub const REQUIRE_MODELS: &str = "COLLOQUY_REQUIRE_MODELS";

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `../shared/data/<rel>` beside the checkout, if present.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!(
            "skipping: {} is absent (the shared data set is not beside this checkout)",
            p.display()
        );
        None
    }
}

/// A test that lacks what `make setup` installs: skipped with `msg`, or
/// failed with it under `COLLOQUY_REQUIRE_MODELS` (what `make test` sets).
pub fn skip_unless_required(msg: &str) {
    if std::env::var_os(REQUIRE_MODELS).is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
}

/// The default config with `overrides` (`("whisper.model", "base")`-style
/// pairs) applied, or None (test skipped) when the models are not installed.
pub fn config_with(overrides: &[(&str, &str)]) -> Option<Config> {
    let mut env: Vec<(String, String)> = std::env::vars().collect();
    for (k, v) in overrides {
        let key = format!("COLLOQUY__{}", k.replace('.', "__").to_ascii_uppercase());
        env.push((key, v.to_string()));
    }
    let config = Config::load_with_env(None, env).expect("config");
    let model = config
        .models_root()
        .join("models")
        .join(format!("whisper-{}", config.whisper.model));
    let installed = model.join("manifest.json").exists() && config.onnxruntime_library().exists();
    if installed {
        return Some(config);
    }
    let msg = format!(
        "models not installed under {} (run `make setup`)",
        config.models_root().display()
    );
    skip_unless_required(&msg);
    None
}

pub fn config() -> Option<Config> {
    config_with(&[])
}

/// [`config_with`], and also None (skipped) when the VAD model is not
/// installed; a failure under `COLLOQUY_REQUIRE_MODELS`.
pub fn vad_config(overrides: &[(&str, &str)]) -> Option<Config> {
    let config = config_with(overrides)?;
    let dir = colloquy::vad::model_dir(&config.models_root());
    if dir.join("manifest.json").exists() {
        return Some(config);
    }
    let msg = format!(
        "VAD model not installed in {} (run `make setup`)",
        dir.display()
    );
    skip_unless_required(&msg);
    None
}

/// Pink noise (Paul Kellet's filter on seeded white noise) at `dbfs` RMS.
pub fn pink_noise(seconds: f64, dbfs: f64, seed: u64) -> Vec<f32> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut b = [0.0f64; 7];
    let mut x: Vec<f64> = (0..(seconds * 16_000.0) as usize)
        .map(|_| {
            let w = rng.f64() * 2.0 - 1.0;
            b[0] = 0.99886 * b[0] + w * 0.0555179;
            b[1] = 0.99332 * b[1] + w * 0.0750759;
            b[2] = 0.96900 * b[2] + w * 0.1538520;
            b[3] = 0.86650 * b[3] + w * 0.3104856;
            b[4] = 0.55000 * b[4] + w * 0.5329522;
            b[5] = -0.7616 * b[5] - w * 0.0168980;
            let pink = b.iter().sum::<f64>() + w * 0.5362;
            b[6] = w * 0.115926;
            pink
        })
        .collect();
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64).sqrt();
    let gain = 10f64.powf(dbfs / 20.0) / rms;
    x.iter_mut().for_each(|v| *v *= gain);
    x.into_iter().map(|v| v as f32).collect()
}

/// Greedy decoding at temperature 0 with faster-whisper's rules for the
/// model in `dir` (tests that drive the decoder directly).
pub fn greedy_options(
    dir: &colloquy::whisper::model::ModelDir,
) -> colloquy::whisper::decode::DecodeOptions {
    colloquy::whisper::decode::DecodeOptions::greedy(
        dir.ct2.suppress_ids.clone(),
        dir.ct2.suppress_ids_begin.clone(),
        dir.config.n_text_ctx,
    )
}

/// 16-bit PCM mono WAV bytes of `samples` (clamped to [-1, 1]).
pub fn wav_bytes(samples: &[f32], rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut w = Vec::with_capacity(44 + data_len as usize);
    w.extend_from_slice(b"RIFF");
    w.extend_from_slice(&(36 + data_len).to_le_bytes());
    w.extend_from_slice(b"WAVEfmt ");
    w.extend_from_slice(&16u32.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&1u16.to_le_bytes());
    w.extend_from_slice(&rate.to_le_bytes());
    w.extend_from_slice(&(rate * 2).to_le_bytes());
    w.extend_from_slice(&2u16.to_le_bytes());
    w.extend_from_slice(&16u16.to_le_bytes());
    w.extend_from_slice(b"data");
    w.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        w.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    w
}
