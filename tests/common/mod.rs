//! Shared helpers for the integration tests: loading the real models (or
//! skipping with a message when `make setup` has not run), test audio paths.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use colloquy::config::Config;

/// `make test` sets this so that missing models fail the run instead of skipping.
pub const REQUIRE_MODELS: &str = "COLLOQUY_REQUIRE_MODELS";

pub fn repo_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// `../shared/data/<rel>` beside the checkout, if present.
pub fn shared_data(rel: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data").join(rel);
    if p.exists() {
        Some(p)
    } else {
        eprintln!("skipping: {} is absent (the shared data set is not beside this checkout)", p.display());
        None
    }
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
    let model = config.models_root().join("models").join(format!("whisper-{}", config.whisper.model));
    let installed = model.join("manifest.json").exists() && config.onnxruntime_library().exists();
    if installed {
        return Some(config);
    }
    let msg = format!("models not installed under {} (run `make setup`)", config.models_root().display());
    if std::env::var_os(REQUIRE_MODELS).is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

pub fn config() -> Option<Config> {
    config_with(&[])
}
