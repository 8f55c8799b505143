//! The `colloquy` command line.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use colloquy::config::Config;
use colloquy::whisper::{Transcript, WhisperEngine};
use serde_json::json;

#[derive(Parser)]
#[command(
    name = "colloquy",
    version,
    about = "Speaker-attributed transcription on ONNX Runtime"
)]
struct Cli {
    /// Configuration file laid over config/default.toml (also: COLLOQUY_CONFIG).
    #[arg(long, global = true, env = "COLLOQUY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Json,
    Txt,
}

#[derive(Clone, Copy, ValueEnum)]
enum DiarizeFormat {
    Rttm,
    Json,
}

/// Speaker-count hints, shared by `transcribe` and `diarize`.
#[derive(Args, Clone, Copy)]
struct SpeakerArgs {
    /// Exact number of speakers, when known.
    #[arg(long)]
    num_speakers: Option<usize>,
    /// At least this many speakers.
    #[arg(long)]
    min_speakers: Option<usize>,
    /// At most this many speakers.
    #[arg(long)]
    max_speakers: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the REST API (server.bind:server.port): uploads run through the
    /// actor pipeline; jobs persist across restarts.
    Serve {
        /// Overrides server.port (0 picks a free port; the address is printed).
        #[arg(long)]
        port: Option<u16>,
        /// Overrides server.storage_dir.
        #[arg(long)]
        storage: Option<PathBuf>,
    },
    /// Transcribe audio files (the model is loaded once for all of them).
    Transcribe {
        /// Audio files: wav, flac, mp3, m4a/aac, ogg/vorbis, ...
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "txt")]
        format: Format,
        /// Whisper model (overrides whisper.model): tiny.en or base.
        #[arg(long)]
        model: Option<String>,
        /// fp32 or int8 (overrides whisper.precision).
        #[arg(long)]
        precision: Option<String>,
        /// Language code or "auto" (overrides whisper.language).
        #[arg(long)]
        language: Option<String>,
        #[command(flatten)]
        speakers: SpeakerArgs,
        /// Whisper alone, without the pipeline and speakers (per-file Whisper
        /// timings; what the bench compares with faster-whisper).
        #[arg(long, conflicts_with_all = ["num_speakers", "min_speakers", "max_speakers"])]
        whisper_only: bool,
    },
    /// Who spoke when: speaker turns of an audio file.
    Diarize {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "rttm")]
        format: DiarizeFormat,
        #[command(flatten)]
        speakers: SpeakerArgs,
    },
}

fn main() -> ExitCode {
    let serving = std::env::args().nth(1).is_some_and(|a| a == "serve");
    // ONNX Runtime logs every arena allocation at info: keep it at warn
    let default_filter = if serving { "info,ort=warn" } else { "warn" };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("COLLOQUY_LOG")
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve { port, storage } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(port) = port {
                config.server.port = port;
            }
            if let Some(storage) = storage {
                config.server.storage_dir = storage.display().to_string();
            }
            serve(config)
        }
        Command::Transcribe {
            files,
            format,
            model,
            precision,
            language,
            speakers,
            whisper_only,
        } => {
            let mut env: Vec<(String, String)> = std::env::vars().collect();
            let mut set = |key: &str, v: Option<String>| {
                if let Some(v) = v {
                    env.push((format!("COLLOQUY__WHISPER__{key}"), format!("\"{v}\"")));
                }
            };
            set("MODEL", model);
            set("PRECISION", precision);
            set("LANGUAGE", language);
            let config = Config::load_with_env(cli.config.as_deref(), env)?;
            if whisper_only {
                transcribe(&config, &files, format)
            } else {
                let SpeakerArgs {
                    num_speakers,
                    min_speakers,
                    max_speakers,
                } = speakers;
                let options = colloquy::registry::JobOptions {
                    num_speakers,
                    min_speakers,
                    max_speakers,
                };
                transcribe_pipeline(config, &files, format, options)
            }
        }
        Command::Diarize {
            file,
            format,
            speakers,
        } => {
            let config = Config::load(cli.config.as_deref())?;
            let SpeakerArgs {
                num_speakers,
                min_speakers,
                max_speakers,
            } = speakers;
            let bounds = colloquy::diarize::SpeakerBounds {
                num_speakers,
                min_speakers,
                max_speakers,
            };
            diarize(&config, &file, format, bounds)
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let t0 = Instant::now();
    let engines = colloquy::actors::pipeline::Engines::load(&config)?;
    let devices = engines.devices();
    tracing::info!(seconds = t0.elapsed().as_secs_f64(), transcriber = %devices.transcriber, diarizer = %devices.diarizer, "models loaded");
    actix_rt::System::new().block_on(colloquy::api::serve(config, engines, |addr| {
        use std::io::Write;
        println!("colloquy listening on http://{addr}");
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, "listening");
    }))
}

fn diarize(
    config: &Config,
    path: &std::path::Path,
    format: DiarizeFormat,
    bounds: colloquy::diarize::SpeakerBounds,
) -> anyhow::Result<()> {
    let mut engine = colloquy::diarize::DiarizationEngine::load(config)?;
    let t0 = Instant::now();
    let audio =
        colloquy::audio::load_16k_mono(path).with_context(|| format!("{}", path.display()))?;
    let d = engine
        .diarize(&audio.samples, bounds)
        .with_context(|| format!("{}", path.display()))?;
    let wall = t0.elapsed().as_secs_f64();
    match format {
        DiarizeFormat::Rttm => {
            let id = path.file_stem().and_then(|s| s.to_str()).unwrap_or("audio");
            print!("{}", colloquy::diarize::rttm::write_rttm(id, &d.turns));
        }
        DiarizeFormat::Json => {
            let out = json!({
                "file": path.display().to_string(),
                "duration": audio.duration(),
                "num_speakers": d.num_speakers,
                "turns": d.turns,
                "provider": { "runtime": "onnxruntime", "device": engine.device },
                "performance_metrics": {
                    "total_seconds": wall,
                    "segmentation_seconds": d.timings.segmentation,
                    "embedding_seconds": d.timings.embeddings,
                    "clustering_seconds": d.timings.clustering,
                    "windows": d.timings.windows,
                    "embeddings": d.timings.embedded,
                    "speed": audio.duration() / wall,
                },
            });
            println!("{out}");
        }
    }
    Ok(())
}

/// A private storage folder for one CLI run, removed when dropped.
struct ScratchStorage(PathBuf);

impl Drop for ScratchStorage {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `colloquy transcribe`: the files go through the same actor pipeline as
/// uploads (registry on a private scratch storage, all files submitted at
/// once so they overlap across stages); each result is printed in file order.
fn transcribe_pipeline(
    mut config: Config,
    files: &[PathBuf],
    format: Format,
    options: colloquy::registry::JobOptions,
) -> anyhow::Result<()> {
    use colloquy::registry::{CreateJob, GetJob, JobStatus};
    for f in files {
        if !f.is_file() {
            anyhow::bail!("{}: no such file", f.display());
        }
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let scratch = ScratchStorage(
        std::env::temp_dir().join(format!("colloquy-cli-{}-{nanos}", std::process::id())),
    );
    config.server.storage_dir = scratch.0.display().to_string();
    // more queued jobs than files is never needed
    config.server.max_queued_jobs = config.server.max_queued_jobs.max(files.len());
    let engines = colloquy::actors::pipeline::Engines::load(&config)?;
    let outputs: Vec<serde_json::Value> = actix_rt::System::new().block_on(async {
        let (state, _pipeline) = colloquy::api::start_engine(&config, engines).await?;
        let mut ids = Vec::new();
        for path in files {
            let id = uuid::Uuid::new_v4();
            let dir = state.storage.temp_dir(id);
            std::fs::create_dir_all(&dir)?;
            let ext = path
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("bin")
                .to_ascii_lowercase();
            let audio_file = format!("audio.{ext}");
            if std::fs::hard_link(path, dir.join(&audio_file)).is_err() {
                std::fs::copy(path, dir.join(&audio_file))
                    .with_context(|| format!("{}", path.display()))?;
            }
            let filename = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("audio")
                .to_string();
            state
                .registry
                .send(CreateJob {
                    id,
                    filename,
                    audio_file,
                    options: options.clone(),
                })
                .await??;
            ids.push(id);
        }
        let mut outputs = Vec::new();
        for (path, id) in files.iter().zip(ids) {
            let job = loop {
                match state.registry.send(GetJob(id)).await?? {
                    Some(job) if job.status.is_finished() => break job,
                    Some(_) => actix_rt::time::sleep(std::time::Duration::from_millis(20)).await,
                    None => anyhow::bail!("{}: the job disappeared", path.display()),
                }
            };
            if job.status != JobStatus::Completed {
                anyhow::bail!(
                    "{}: {}",
                    path.display(),
                    job.error
                        .unwrap_or_else(|| "the job did not complete".into())
                );
            }
            let text = std::fs::read(state.storage.result_path(id))?;
            let mut v: serde_json::Value = serde_json::from_slice(&text)?;
            v["file"] = json!(path.display().to_string());
            outputs.push(v);
        }
        Ok::<_, anyhow::Error>(outputs)
    })?;
    for v in outputs {
        match format {
            Format::Json => println!("{v}"),
            Format::Txt => {
                if files.len() > 1 {
                    println!("# {}", v["file"].as_str().unwrap_or_default());
                }
                for s in v["aligned_segments"].as_array().into_iter().flatten() {
                    println!(
                        "[{} --> {}] {}: {}",
                        clock(s["start"].as_f64().unwrap_or(0.0)),
                        clock(s["end"].as_f64().unwrap_or(0.0)),
                        s["speaker"].as_str().unwrap_or("?"),
                        s["text"].as_str().unwrap_or_default().trim()
                    );
                }
            }
        }
    }
    drop(scratch);
    Ok(())
}

fn transcribe(config: &Config, files: &[PathBuf], format: Format) -> anyhow::Result<()> {
    let t_load = Instant::now();
    let mut engine = WhisperEngine::load(config)?;
    let load_s = t_load.elapsed().as_secs_f64();
    for path in files {
        let t0 = Instant::now();
        let audio =
            colloquy::audio::load_16k_mono(path).with_context(|| format!("{}", path.display()))?;
        let decode_s = t0.elapsed().as_secs_f64();
        let transcript = engine
            .transcribe(&audio.samples)
            .with_context(|| format!("{}", path.display()))?;
        let wall = t0.elapsed().as_secs_f64();
        match format {
            Format::Txt => print_txt(&transcript, files.len() > 1, path),
            Format::Json => {
                let out = json!({
                    "file": path.display().to_string(),
                    "language": transcript.language,
                    "duration": transcript.duration,
                    "full_text": transcript.full_text(),
                    "segments": transcript.segments.iter().map(|s| json!({
                        "start": s.start, "end": s.end, "text": s.text,
                        "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob,
                        "temperature": s.temperature, "compression_ratio": s.compression_ratio,
                    })).collect::<Vec<_>>(),
                    "provider": { "runtime": "onnxruntime", "device": engine.device(), "model": engine.model_name(),
                                  "precision": config.whisper.precision_name() },
                    "performance_metrics": {
                        "model_load_seconds": load_s,
                        "decode_audio_seconds": decode_s,
                        "features_seconds": transcript.timings.features,
                        "encoder_seconds": transcript.timings.encoder,
                        "decoder_seconds": transcript.timings.decoder,
                        "windows": transcript.timings.windows,
                        "total_seconds": wall,
                        "speed": transcript.duration / wall,
                    },
                });
                println!("{out}");
            }
        }
    }
    Ok(())
}

fn print_txt(t: &Transcript, with_name: bool, path: &std::path::Path) {
    if with_name {
        println!("# {}", path.display());
    }
    for s in &t.segments {
        println!(
            "[{} --> {}] {}",
            clock(s.start),
            clock(s.end),
            s.text.trim()
        );
    }
}

fn clock(t: f64) -> String {
    let ms = (t * 1000.0).round() as u64;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}
