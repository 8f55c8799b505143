//! ONNX Runtime: loading the shared library once per process and building
//! sessions with the configured threads and execution provider.
//!
//! The library is loaded at run time from the file `make setup` stages
//! (`ort`'s `load-dynamic`), never downloaded. ONNX Runtime allows a single
//! environment per process, so it lives in a `OnceLock`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use serde::Serialize;

use crate::config::{Device, RuntimeConfig};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("onnx runtime library not found at {0}: run `make setup` (or set models.onnxruntime)")]
    LibraryMissing(PathBuf),
    #[error("onnx runtime library at {path} could not be loaded: {reason}")]
    LibraryLoad { path: PathBuf, reason: String },
    #[error("model file {0} is missing: run `make setup`")]
    ModelMissing(PathBuf),
    #[error("onnx runtime: {0}")]
    Ort(String),
}

impl<R> From<ort::Error<R>> for RuntimeError {
    fn from(e: ort::Error<R>) -> Self {
        RuntimeError::Ort(e.to_string())
    }
}

static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads the ONNX Runtime library (first call wins) and returns the process environment.
pub fn environment(library: &Path) -> Result<&'static Environment, RuntimeError> {
    if !library.exists() && ENVIRONMENT.get().is_none() {
        return Err(RuntimeError::LibraryMissing(library.to_path_buf()));
    }
    let env = ENVIRONMENT.get_or_init(|| {
        let builder = ort::init_from(library).map_err(|e| e.to_string())?;
        builder
            .with_name("colloquy")
            .build()
            .map_err(|e| e.to_string())
    });
    env.as_ref().map_err(|reason| RuntimeError::LibraryLoad {
        path: library.to_path_buf(),
        reason: reason.clone(),
    })
}

/// A flag an engine checks between its units of work (a Whisper window, a
/// batch of diarization windows or embeddings): once set, the call returns
/// early with a "cancelled" error. The actors set it when a job is deleted.
pub type StopFlag = std::sync::Arc<std::sync::atomic::AtomicBool>;

/// True when `stop` is given and set.
pub fn stopped(stop: Option<&StopFlag>) -> bool {
    stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::SeqCst))
}

/// The execution provider a session really runs on (after any fallback).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeviceUsed {
    Cpu,
    Cuda,
}

impl std::fmt::Display for DeviceUsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceUsed::Cpu => "cpu",
            DeviceUsed::Cuda => "cuda",
        })
    }
}

/// Builds a session for `model` with the configured threads and device.
/// `device = "cuda"` registers the CUDA execution provider and falls back to
/// the CPU, with a warning, when it cannot be loaded.
pub fn session(
    env: &Environment,
    model: &Path,
    cfg: &RuntimeConfig,
) -> Result<(Session, DeviceUsed), RuntimeError> {
    if !model.exists() {
        return Err(RuntimeError::ModelMissing(model.to_path_buf()));
    }
    let mut builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(cfg.intra_threads)?
        .with_inter_threads(cfg.inter_threads)?
        .with_intra_op_spinning(cfg.allow_spinning)?;
    let mut used = DeviceUsed::Cpu;
    if cfg.device == Device::Cuda {
        let cuda = ort::ep::CUDA::default()
            .with_device_id(cfg.cuda_device_id)
            .build()
            .error_on_failure();
        builder = match builder.with_execution_providers([cuda]) {
            Ok(b) => {
                used = DeviceUsed::Cuda;
                b
            }
            Err(e) => {
                tracing::warn!(error = %e, model = %model.display(), "cuda execution provider unavailable, falling back to cpu");
                e.recover()
            }
        };
    }
    // after CUDA: ONNX Runtime gives each node to the first provider, in
    // the order registered, that can run it, and the CPU can run them all
    if !cfg.cpu_arena {
        // the arena keeps the largest buffers a session ever asked for
        builder = builder.with_execution_providers([ort::ep::CPU::default()
            .with_arena_allocator(false)
            .build()])?;
    }
    let session = builder.commit_from_file(model)?;
    Ok((session, used))
}
