//! Configuration: `config/default.toml` (compiled in) with a user file and
//! environment overrides laid over it. Unknown keys are rejected.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The documented defaults, compiled into the binary so it runs from anywhere.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");
/// Prefix of environment overrides: `COLLOQUY__SECTION__KEY=value`.
pub const ENV_PREFIX: &str = "COLLOQUY__";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config {origin}: {message}")]
    Invalid { origin: String, message: String },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub models: ModelsConfig,
    pub runtime: RuntimeConfig,
    pub whisper: WhisperConfig,
    pub diarization: DiarizationConfig,
    pub vad: VadConfig,
    pub speakers: SpeakersConfig,
    pub server: ServerConfig,
    pub pipeline: PipelineConfig,
    pub cluster: ClusterConfig,
    /// `[blobs]`: where a worker finds uploads and puts results.
    pub blobs: crate::store::blobs::BlobOptions,
}

/// A node's part among several (issue #15).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    serde::Serialize,
    Deserialize,
    clap::ValueEnum,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// One node: uploads, jobs and models here (sled and local folders).
    All,
    /// Takes uploads into the PostgreSQL queue and the blob store, answers
    /// reads from them; loads no model.
    Api,
    /// Leases jobs from the PostgreSQL queue and runs them here.
    Worker,
}

/// `[cluster]`: one node, or a worker among several over PostgreSQL and S3.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub role: Role,
    /// `postgres://user:password@host:port/database` (the job queue).
    pub database_url: String,
    /// This node's name among the workers; empty: host name and process id.
    pub worker_id: String,
    pub lease_seconds: f64,
    pub poll_seconds: f64,
}

/// `[speakers]`: known speakers (the speaker library).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakersConfig {
    /// Cosine between a recording's speaker and a known speaker's print at
    /// or above which the speaker takes the known name.
    pub match_threshold: f32,
}

/// `[server]`: the HTTP API, upload limits and where jobs are stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: String,
    pub port: u16,
    pub http_workers: usize,
    pub max_upload_bytes: u64,
    pub allowed_extensions: Vec<String>,
    pub storage_dir: String,
    pub max_queued_jobs: usize,
    pub retry_after_seconds: u64,
    pub auth: AuthMode,
    pub allowed_hosts: Vec<String>,
    pub cors_origins: Vec<String>,
    pub upload_read_timeout_seconds: u64,
    pub upload_min_bytes_per_second: u64,
    pub max_concurrent_uploads: usize,
    pub uploads_per_minute: u32,
    pub reads_per_minute: u32,
    pub max_queued_jobs_per_key: usize,
    pub max_stored_bytes_per_key: u64,
    pub max_event_streams: usize,
    pub callback_attempts: u32,
    pub callback_first_retry_seconds: f64,
    pub callback_max_retry_seconds: f64,
    pub callback_timeout_seconds: f64,
    pub callback_allowed_hosts: Vec<String>,
}

/// `server.auth`: who may use the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Anyone who reaches the port (only allowed on a loopback address).
    None,
    /// `Authorization: Bearer <key>` on every API route.
    Keys,
}

impl ServerConfig {
    /// How job callbacks are made.
    pub fn callback_policy(&self) -> crate::callback::Policy {
        let secs = |s: f64| std::time::Duration::from_secs_f64(s.clamp(0.0, 86_400.0));
        crate::callback::Policy {
            attempts: self.callback_attempts,
            first_backoff: secs(self.callback_first_retry_seconds),
            max_backoff: secs(self.callback_max_retry_seconds),
            timeout: secs(self.callback_timeout_seconds),
            allowed_hosts: self.callback_allowed_hosts.clone(),
        }
    }

    /// True when `bind` only accepts connections from this machine.
    pub fn binds_loopback(&self) -> bool {
        let host = self.bind.trim_start_matches('[').trim_end_matches(']');
        host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// `[pipeline]`: admission and the per-stage queues and threads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub max_active_jobs: usize,
    pub normalise: bool,
    pub trim_silence: bool,
    pub trim_threshold_db: f32,
    /// Longest recording accepted, in seconds; 0: no limit.
    pub max_audio_seconds: u64,
    /// The transcriber lends its core to the diarizer's segmentation and
    /// embeddings while it has no job, and the diarizer lends its core to an
    /// extra transcriber worker while jobs wait for transcription
    /// (`crate::cores`).
    pub lend_idle_cores: bool,
    pub decoder: StageConfig,
    pub preprocessor: StageConfig,
    pub transcriber: StageConfig,
    pub diarizer: StageConfig,
    pub aligner: StageConfig,
}

/// One stage: its bounded mailbox and how many worker threads (each with
/// its own engine instance) run its work.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StageConfig {
    pub mailbox: usize,
    pub threads: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub dir: String,
    pub onnxruntime: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Device {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub device: Device,
    pub cuda_device_id: i32,
    pub intra_threads: usize,
    pub inter_threads: usize,
    pub allow_spinning: bool,
    pub cpu_arena: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    Int8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    Transcribe,
    Translate,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhisperConfig {
    pub model: String,
    pub precision: Precision,
    pub language: String,
    pub task: Task,
    pub beam_size: usize,
    pub temperatures: Vec<f32>,
    pub compression_ratio_threshold: f32,
    pub log_prob_threshold: f32,
    pub no_speech_threshold: f32,
    pub condition_on_previous_text: bool,
    pub prompt_reset_on_temperature: f32,
    pub max_initial_timestamp: f32,
    pub suppress_blank: bool,
    pub silence_threshold_db: f32,
    pub seed: u64,
    pub word_timestamps: bool,
    pub batch_size: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiarizationConfig {
    pub window_step: f64,
    pub segmentation_batch: usize,
    pub embedding_batch: usize,
    pub min_embedding_duration: f64,
    pub embedding_piece: f64,
    pub piece_split_pause: f64,
    pub piece_reuse_overlap: f64,
    pub cluster_threshold: f64,
    pub min_cluster_size: usize,
    pub min_duration_on: f64,
    pub min_duration_off: f64,
    pub voice_check: bool,
    pub gpu: bool,
}

/// `[vad]`: silero voice activity detection and the rules that turn its
/// per-frame probabilities into speech regions (silero's `get_speech_timestamps`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VadConfig {
    pub enabled: bool,
    pub threshold: f32,
    pub min_speech_ms: u32,
    pub min_silence_ms: u32,
    pub speech_pad_ms: u32,
    pub max_speech_s: f64,
    pub max_snap_ms: u32,
    pub tolerance_ms: u32,
    pub threads: usize,
}

impl WhisperConfig {
    pub fn precision_name(&self) -> &'static str {
        match self.precision {
            Precision::Fp32 => "fp32",
            Precision::Int8 => "int8",
        }
    }
}

impl Config {
    /// Defaults, then `file` (if any), then `COLLOQUY__*` variables from the process environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// As [`Config::load`], with the environment given explicitly (tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let mut table = parse(DEFAULT_TOML, "config/default.toml")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            merge(&mut table, parse(&text, &path.display().to_string())?);
        }
        for (key, value) in env {
            let Some(rest) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            set_path(&mut table, &path, parse_env_value(&value)).map_err(|message| {
                ConfigError::Invalid {
                    origin: format!("from {key}"),
                    message,
                }
            })?;
        }
        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Invalid {
                    origin: "after merging".into(),
                    message: e.message().to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |message: String| {
            Err(ConfigError::Invalid {
                origin: "value".into(),
                message,
            })
        };
        if self.whisper.temperatures.is_empty() {
            return bad("whisper.temperatures must list at least one temperature".into());
        }
        let p = &self.pipeline;
        for (name, st) in [
            ("decoder", p.decoder),
            ("preprocessor", p.preprocessor),
            ("transcriber", p.transcriber),
            ("diarizer", p.diarizer),
            ("aligner", p.aligner),
        ] {
            if st.mailbox == 0 || st.threads == 0 {
                return bad(format!(
                    "pipeline.{name}.mailbox and .threads must be at least 1"
                ));
            }
        }
        if p.max_audio_seconds > 24 * 3600 {
            return bad(format!(
                "pipeline.max_audio_seconds must be 0 (no limit) or at most 86400 (24 h), not {}",
                p.max_audio_seconds
            ));
        }
        if p.max_active_jobs == 0 {
            return bad("pipeline.max_active_jobs must be at least 1".into());
        }
        let srv = &self.server;
        if srv.auth == AuthMode::None && !srv.binds_loopback() {
            return bad(format!(
                "server.auth = \"none\" is only allowed on a loopback address, not on {}: \
                 set server.auth = \"keys\" (COLLOQUY__SERVER__AUTH=keys) and create a key \
                 with `colloquy keys create --name NAME --admin`",
                srv.bind
            ));
        }
        if srv.callback_attempts == 0
            || !(srv.callback_timeout_seconds > 0.0)
            || !(srv.callback_first_retry_seconds >= 0.0)
            || srv.max_event_streams == 0
        {
            return bad(
                "server.callback_attempts, server.callback_timeout_seconds and \
                 server.max_event_streams must be above 0"
                    .into(),
            );
        }
        if srv.upload_read_timeout_seconds == 0 || srv.max_concurrent_uploads == 0 {
            return bad(
                "server.upload_read_timeout_seconds and server.max_concurrent_uploads must be at least 1"
                    .into(),
            );
        }
        if self.whisper.beam_size == 0 {
            return bad("whisper.beam_size must be at least 1".into());
        }
        if self.whisper.batch_size == 0 {
            return bad("whisper.batch_size must be at least 1".into());
        }
        let v = &self.vad;
        if !(v.threshold > 0.0 && v.threshold < 1.0) {
            return bad(format!(
                "vad.threshold must be between 0 and 1 (exclusive), not {}",
                v.threshold
            ));
        }
        if v.max_speech_s.is_nan() || v.max_speech_s < 0.0 {
            return bad("vad.max_speech_s must be 0 (no limit) or more".into());
        }
        if v.max_speech_s > 0.0 && v.max_speech_s * 1000.0 <= 2.0 * v.speech_pad_ms as f64 + 32.0 {
            return bad(
                "vad.max_speech_s must exceed twice vad.speech_pad_ms plus one 32 ms frame".into(),
            );
        }
        if v.threads == 0 {
            return bad("vad.threads must be at least 1".into());
        }
        Ok(())
    }

    /// The directory holding `models/` and `onnxruntime/` (see `models.dir`).
    pub fn models_root(&self) -> PathBuf {
        if !self.models.dir.is_empty() {
            return expand_home(&self.models.dir);
        }
        default_cache_root()
    }

    /// The directory holding `temp/`, `results/` and the job database.
    pub fn storage_root(&self) -> PathBuf {
        expand_home(&self.server.storage_dir)
    }

    /// The runtime settings of the diarizer's models (segmentation, voice
    /// embeddings): `runtime`'s, on the CPU unless `diarization.gpu`.
    pub fn diarization_runtime(&self) -> RuntimeConfig {
        let mut rt = self.runtime.clone();
        if !self.diarization.gpu {
            rt.device = Device::Cpu;
        }
        rt
    }

    /// Path of the ONNX Runtime shared library.
    pub fn onnxruntime_library(&self) -> PathBuf {
        if !self.models.onnxruntime.is_empty() {
            return expand_home(&self.models.onnxruntime);
        }
        self.models_root()
            .join("onnxruntime")
            .join("libonnxruntime.so")
    }
}

/// `$COLLOQUY_CACHE/v1` or `~/.cache/colloquy/v1`: where `make setup` writes.
pub fn default_cache_root() -> PathBuf {
    let base = match std::env::var_os("COLLOQUY_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => home_dir().join(".cache").join("colloquy"),
    };
    base.join("v1")
}

fn home_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home_dir().join(rest),
        None => PathBuf::from(p),
    }
}

fn parse(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>()
        .map_err(|e| ConfigError::Invalid {
            origin: origin.to_string(),
            message: e.message().to_string(),
        })
}

/// Lays `over` onto `base`, recursing into tables.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    match path {
        [] => Err("empty key".into()),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => match table
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()))
        {
            toml::Value::Table(t) => set_path(t, rest, value),
            _ => Err(format!("{section} is not a section")),
        },
    }
}

/// An environment value as TOML (`2`, `true`, `[0.0, 0.2]`), else as a plain string.
fn parse_env_value(raw: &str) -> toml::Value {
    format!("v = {raw}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_parse() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert_eq!(c.whisper.model, "tiny.en");
        assert_eq!(c.whisper.precision, Precision::Fp32);
        assert_eq!(c.runtime.device, Device::Cpu);
        assert_eq!(c.whisper.temperatures.len(), 6);
    }

    #[test]
    fn every_default_key_is_documented() {
        // each key line in default.toml has a comment line directly above it or
        // above a run of keys; here: no key is the first line after a blank line
        let lines: Vec<&str> = DEFAULT_TOML.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with('[') {
                continue;
            }
            let prev = lines[i - 1].trim();
            assert!(prev.starts_with('#'), "key without a comment: {t}");
        }
    }

    #[test]
    fn vad_defaults_and_checks() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert!(c.vad.enabled);
        assert_eq!(c.vad.threshold, 0.25);
        assert_eq!(
            (
                c.vad.min_speech_ms,
                c.vad.min_silence_ms,
                c.vad.speech_pad_ms
            ),
            (100, 300, 200)
        );
        assert_eq!(c.vad.max_speech_s, 0.0);
        assert_eq!(c.vad.threads, 1);
        for (key, value, complaint) in [
            ("THRESHOLD", "1.5", "vad.threshold"),
            ("THRESHOLD", "0", "vad.threshold"),
            ("MAX_SPEECH_S", "-1.0", "vad.max_speech_s"),
            ("MAX_SPEECH_S", "0.4", "vad.max_speech_s"),
            ("THREADS", "0", "vad.threads"),
        ] {
            let env = vec![(format!("COLLOQUY__VAD__{key}"), value.to_string())];
            let err = Config::load_with_env(None, env).unwrap_err().to_string();
            assert!(err.contains(complaint), "{key}={value}: {err}");
        }
        let env = vec![(
            "COLLOQUY__VAD__MAX_SPEECH_S".to_string(),
            "30.0".to_string(),
        )];
        assert_eq!(
            Config::load_with_env(None, env).unwrap().vad.max_speech_s,
            30.0
        );
    }

    #[test]
    fn max_audio_seconds_default_and_checks() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert_eq!(c.pipeline.max_audio_seconds, 14400);
        let with = |v: &str| {
            Config::load_with_env(
                None,
                vec![(
                    "COLLOQUY__PIPELINE__MAX_AUDIO_SECONDS".to_string(),
                    v.to_string(),
                )],
            )
        };
        assert_eq!(with("0").unwrap().pipeline.max_audio_seconds, 0);
        assert_eq!(with("86400").unwrap().pipeline.max_audio_seconds, 86400);
        let err = with("86401").unwrap_err().to_string();
        assert!(err.contains("pipeline.max_audio_seconds"), "{err}");
        assert!(with("-1").is_err());
    }

    #[test]
    fn opus_webm_and_mkv_uploads_are_accepted() {
        let c = Config::load_with_env(None, no_env()).unwrap();
        for ext in ["opus", "webm", "mkv"] {
            assert!(
                c.server.allowed_extensions.iter().any(|e| e == ext),
                "{ext}"
            );
        }
    }

    #[test]
    fn env_overrides_and_types() {
        let env = vec![
            ("COLLOQUY__WHISPER__MODEL".to_string(), "base".to_string()),
            (
                "COLLOQUY__RUNTIME__INTRA_THREADS".to_string(),
                "4".to_string(),
            ),
            (
                "COLLOQUY__WHISPER__TEMPERATURES".to_string(),
                "[0.0]".to_string(),
            ),
            ("UNRELATED".to_string(), "x".to_string()),
        ];
        let c = Config::load_with_env(None, env).unwrap();
        assert_eq!(c.whisper.model, "base");
        assert_eq!(c.runtime.intra_threads, 4);
        assert_eq!(c.whisper.temperatures, vec![0.0]);
    }

    #[test]
    fn the_diarizer_runs_on_the_gpu_only_when_asked() {
        let env = |gpu: &str| {
            vec![
                ("COLLOQUY__RUNTIME__DEVICE".to_string(), "cuda".to_string()),
                ("COLLOQUY__DIARIZATION__GPU".to_string(), gpu.to_string()),
            ]
        };
        let c = Config::load_with_env(None, env("false")).unwrap();
        assert_eq!(c.runtime.device, Device::Cuda);
        assert_eq!(c.diarization_runtime().device, Device::Cpu);
        // everything else as the runtime's
        assert_eq!(c.diarization_runtime().cpu_arena, c.runtime.cpu_arena);
        let c = Config::load_with_env(None, env("true")).unwrap();
        assert_eq!(c.diarization_runtime().device, Device::Cuda);
        let c = Config::load_with_env(None, no_env()).unwrap();
        assert!(!c.diarization.gpu);
        assert_eq!(c.diarization_runtime().device, Device::Cpu);
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let env = vec![("COLLOQUY__WHISPER__MODLE".to_string(), "base".to_string())];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains("modle"), "{err}");

        let dir = std::env::temp_dir().join(format!("colloquy-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[whisper]\nprecision = \"int8\"\n[nosuch]\nx = 1\n").unwrap();
        let err = Config::load_with_env(Some(&file), no_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("nosuch"), "{err}");
        std::fs::write(&file, "[whisper]\nprecision = \"int8\"\n").unwrap();
        let c = Config::load_with_env(Some(&file), no_env()).unwrap();
        assert_eq!(c.whisper.precision, Precision::Int8);
        assert_eq!(
            c.whisper.model, "tiny.en",
            "keys the file leaves out keep their defaults"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_values_are_explained() {
        let env = vec![("COLLOQUY__RUNTIME__DEVICE".to_string(), "tpu".to_string())];
        let err = Config::load_with_env(None, env).unwrap_err().to_string();
        assert!(err.contains("tpu") || err.contains("variant"), "{err}");
    }
}
