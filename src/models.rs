//! `colloquy models add|list`: Whisper models a user brings.
//!
//! A CTranslate2 Whisper folder (what faster-whisper loads: `model.bin`,
//! `config.json`, `tokenizer.json`) is converted into the model cache by
//! `scripts/convert_whisper.py`, the same converter `make setup` runs. The
//! script is compiled into the binary, so `colloquy` finds it wherever it is
//! run from; it runs with the Python environment `make setup` created (onnx,
//! onnxruntime, numpy).
//!
//! The steps of `add`: check the folder, find the setup venv's python, write
//! the embedded script to a scratch folder, run it (`--ct2-dir DIR
//! --models-root ROOT [--model NAME] --lock`; it converts into a temporary
//! folder renamed into place when complete, holding the cache's lock as
//! `setup.sh` does), then read the installed model back.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::config::{default_cache_root, Config};
use crate::whisper::model::{
    installed_models, valid_model_name, InstalledModel, ModelConfig, ModelDir,
};

/// `scripts/convert_whisper.py`, compiled in.
pub const CONVERTER: &str = include_str!("../scripts/convert_whisper.py");

/// The files a CTranslate2 Whisper folder must hold.
const REQUIRED: [&str; 3] = ["model.bin", "config.json", "tokenizer.json"];

/// The setup venv's python: `<models root>/venv`, else the default cache's
/// (`$COLLOQUY_CACHE/v1` or `~/.cache/colloquy/v1`), where `make setup` puts it.
pub fn converter_python(config: &Config) -> anyhow::Result<PathBuf> {
    let mut candidates = vec![config.models_root().join("venv").join("bin").join("python")];
    let default = default_cache_root().join("venv").join("bin").join("python");
    if !candidates.contains(&default) {
        candidates.push(default);
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => {
            bail!(
            "the converter's Python environment is missing (looked for {}): run `make setup` first",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
        }
    }
}

/// Converts the CTranslate2 Whisper folder `src` into the model cache as
/// `whisper-<name>` (`name`: given, or derived from the folder's name by the
/// converter); the converter's progress goes to stderr.
pub fn add(config: &Config, src: &Path, name: Option<&str>) -> anyhow::Result<InstalledModel> {
    if !src.is_dir() {
        bail!("{}: not a directory", src.display());
    }
    let missing: Vec<&str> = REQUIRED
        .iter()
        .copied()
        .filter(|f| !src.join(f).is_file())
        .collect();
    if !missing.is_empty() {
        bail!(
            "{} is not a CTranslate2 Whisper folder: no {}",
            src.display(),
            missing.join(", ")
        );
    }
    if let Some(n) = name {
        if !valid_model_name(n) {
            bail!(crate::whisper::model::ModelError::BadName(n.to_string()));
        }
    }
    let python = converter_python(config)?;
    let root = config.models_root();
    std::fs::create_dir_all(&root).with_context(|| format!("cannot create {}", root.display()))?;
    let scratch = Scratch::new()?;
    let script = scratch.0.join("convert_whisper.py");
    std::fs::write(&script, CONVERTER)
        .with_context(|| format!("cannot write {}", script.display()))?;

    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .arg("--ct2-dir")
        .arg(src)
        .arg("--models-root")
        .arg(&root)
        .arg("--lock");
    if let Some(n) = name {
        cmd.arg("--model").arg(n);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    // progress lines are passed on; the last one names what was installed
    let mut installed = None;
    for line in BufReader::new(child.stdout.take().expect("stdout is piped")).lines() {
        let line = line?;
        match line.strip_prefix("installed: whisper-") {
            Some(n) => installed = Some(n.trim().to_string()),
            None => eprintln!("{line}"),
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!(
            "converting {} failed ({status}): see the converter's message above",
            src.display()
        );
    }
    let Some(installed) = installed else {
        bail!("the converter finished without naming the model it installed");
    };
    let dir = ModelDir::open(&root, &installed)?;
    Ok(InstalledModel {
        name: installed,
        dir: dir.dir,
        config: dir.config,
    })
}

/// One line per model: name, then its shapes.
pub fn describe(m: &InstalledModel) -> String {
    format!("{:<18} {}", m.name, shapes(&m.config))
}

/// `128 mels, d_model 1280, 32+4 layers, vocab 51866, multilingual (100 languages)`.
pub fn shapes(c: &ModelConfig) -> String {
    let langs = if c.multilingual {
        format!("multilingual ({} languages)", c.languages.len())
    } else {
        "English-only".into()
    };
    format!(
        "{} mels, d_model {}, {}+{} layers, {} heads, vocab {}, {langs}",
        c.n_mels, c.d_model, c.n_encoder_layers, c.n_decoder_layers, c.n_heads, c.n_vocab
    )
}

/// The installed models (see [`installed_models`]).
pub fn list(config: &Config) -> Vec<InstalledModel> {
    installed_models(&config.models_root())
}

/// A scratch folder under the system temp dir, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> anyhow::Result<Scratch> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("colloquy-convert-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_converter_is_the_script() {
        let on_disk = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/scripts/convert_whisper.py"
        ))
        .unwrap();
        assert_eq!(CONVERTER, on_disk);
        assert!(CONVERTER.contains("--ct2-dir"));
    }

    #[test]
    fn model_names_stay_inside_the_models_folder() {
        for ok in ["large-v3", "tiny.en", "distil-large-v3", "my_model.2", "X"] {
            assert!(valid_model_name(ok), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "a\\b",
            ".hidden",
            "-x",
            "a..b",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
