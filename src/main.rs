//! The `colloquy` command line.

/// The process's allocator, for Rust and (its `malloc` and `free` exported
/// unprefixed) for ONNX Runtime's C++ alike: glibc's per-thread arenas kept
/// what the transcriber's and the diarizer's temporary buffers had freed, so
/// the whole pipeline on 45 minutes peaked at 1.37-1.85 GB of RSS against
/// 0.98-0.99 GB with jemalloc as set here (README "Memory").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options (the `MALLOC_CONF` environment variable still wins):
/// `oversize_threshold:0` serves large buffers (a window's encoder
/// temporaries, a batch's keys and values) from the ordinary arenas, whose
/// freed pages are reused for the next window and returned by decay, not
/// from a dedicated arena that returns them at once and faults them in again
/// (that cost 6-11% of the pipeline's time on long recordings).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
#[used]
pub static malloc_conf: MallocConf = MallocConf(c"oversize_threshold:0".as_ptr());

/// A C string pointer that may sit in a `static` (jemalloc reads it once).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[repr(transparent)]
pub struct MallocConf(*const std::ffi::c_char);

// SAFETY: the pointer is to a 'static C string literal, never written.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
unsafe impl Sync for MallocConf {}

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, Parser, Subcommand, ValueEnum};
use colloquy::config::Config;
use colloquy::vad::SpeechDetector;
use colloquy::whisper::gate::SpeechMap;
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

// Output of `transcribe`: the formats of `GET /api/results/{id}?format=`
// (`--whisper-only` prints json or txt).
use colloquy::export::Format;

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

/// Whisper settings a command line may override, shared by `transcribe` and `eval`.
#[derive(Args, Clone)]
struct WhisperArgs {
    /// Whisper model (overrides whisper.model): any installed one (`colloquy models list`).
    #[arg(long)]
    model: Option<String>,
    /// fp32 or int8 (overrides whisper.precision).
    #[arg(long)]
    precision: Option<String>,
    /// Language code or "auto" (overrides whisper.language).
    #[arg(long)]
    language: Option<String>,
    /// Windows decoded at once (lanes of speech), 1 for the sequential loop (overrides whisper.batch_size).
    #[arg(long)]
    batch_size: Option<u32>,
}

impl WhisperArgs {
    /// The configuration (file, environment) with these overrides laid over it.
    fn config(&self, file: Option<&std::path::Path>) -> anyhow::Result<Config> {
        let mut env: Vec<(String, String)> = std::env::vars().collect();
        for (key, v) in [
            ("MODEL", &self.model),
            ("PRECISION", &self.precision),
            ("LANGUAGE", &self.language),
        ] {
            if let Some(v) = v {
                env.push((format!("COLLOQUY__WHISPER__{key}"), format!("\"{v}\"")));
            }
        }
        if let Some(b) = self.batch_size {
            env.push(("COLLOQUY__WHISPER__BATCH_SIZE".to_string(), b.to_string()));
        }
        Ok(Config::load_with_env(file, env)?)
    }
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
        /// Overrides cluster.role: `all` (this one node), `api` (takes uploads
        /// into the PostgreSQL queue at cluster.database_url and the [blobs]
        /// store; no model) or `worker` (leases jobs from that queue).
        #[arg(long, value_enum)]
        role: Option<colloquy::config::Role>,
    },
    /// Transcribe audio files (the model is loaded once for all of them).
    Transcribe {
        /// Audio files: wav, flac, mp3, m4a/aac, ogg/vorbis, ...
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, value_enum, default_value = "txt")]
        format: Format,
        #[command(flatten)]
        whisper: WhisperArgs,
        #[command(flatten)]
        speakers: SpeakerArgs,
        /// Whisper alone, without the pipeline and speakers (per-file Whisper
        /// timings; what the bench compares with faster-whisper).
        #[arg(long, conflicts_with_all = ["num_speakers", "min_speakers", "max_speakers"])]
        whisper_only: bool,
    },
    /// Run the whole pipeline over a test set and score it: WER (words
    /// normalised: case, punctuation, numbers), DER (collar 0.25 s), cpWER,
    /// word timing at reference turn edges (when the result has words), speed
    /// and peak memory per file and in total; prints a table and writes a
    /// JSON report.
    ///
    /// e.g. colloquy eval --manifest ../shared/data/asr_manifest.tsv
    ///   --rttm ../shared/data/synthetic/conv1.rttm
    ///   --rttm ../shared/data/diarization/ami.rttm --uem ../shared/data/diarization/ami.uem
    Eval {
        /// Tab-separated manifest with columns id, path (relative to the
        /// manifest) and reference (text); repeatable.
        #[arg(long)]
        manifest: Vec<PathBuf>,
        /// Only the manifest rows whose `group` column is this.
        #[arg(long)]
        group: Option<String>,
        /// RTTM reference turns; a file id matches a manifest row by id or by
        /// audio file stem, or else names audio beside the RTTM (<id>.wav); repeatable.
        #[arg(long)]
        rttm: Vec<PathBuf>,
        /// UEM scored regions for DER; repeatable.
        #[arg(long)]
        uem: Vec<PathBuf>,
        /// STM speaker-attributed reference text (who said what) for cpWER,
        /// matched like RTTM ids (its turn times score word timing where
        /// there is no RTTM); repeatable.
        #[arg(long)]
        stm: Vec<PathBuf>,
        /// Give each job the reference's number of speakers (default: auto).
        #[arg(long)]
        oracle_speakers: bool,
        /// Jobs submitted at once (1: one after another, per-file wall time
        /// is the job's own; N: throughput, total wall = first submission to last result).
        #[arg(long, default_value_t = 1)]
        jobs: usize,
        /// Where the JSON report goes.
        #[arg(long, default_value = "eval-report.json")]
        report: PathBuf,
        #[command(flatten)]
        whisper: WhisperArgs,
    },
    /// Who spoke when: speaker turns of an audio file.
    Diarize {
        file: PathBuf,
        #[arg(long, value_enum, default_value = "rttm")]
        format: DiarizeFormat,
        #[command(flatten)]
        speakers: SpeakerArgs,
    },
    /// API keys (server.auth = "keys"), in the storage folder's database; the
    /// server must be stopped (while it runs, an admin key uses /api/keys).
    Keys {
        /// Overrides server.storage_dir.
        #[arg(long)]
        storage: Option<PathBuf>,
        #[command(subcommand)]
        action: KeysAction,
    },
    /// Whisper models in the model cache (models.dir): list them, or add one.
    Models {
        #[command(subcommand)]
        action: ModelsAction,
    },
}

#[derive(Subcommand)]
enum KeysAction {
    /// Create a key; the key itself is printed alone on the last line (it is
    /// stored only as a hash: copy it now).
    Create {
        #[arg(long)]
        name: String,
        /// An admin key sees every job and manages keys (POST /api/keys).
        #[arg(long)]
        admin: bool,
    },
    /// Every key: id, name, admin, created, revoked.
    List,
    /// Revoke a key (by id, or by name when only one live key has it).
    Revoke { key: String },
}

#[derive(Subcommand)]
enum ModelsAction {
    /// Convert a CTranslate2 Whisper folder (what faster-whisper loads:
    /// model.bin, config.json, tokenizer.json), e.g. faster-whisper-large-v3,
    /// into the model cache; then `--model NAME` or whisper.model = "NAME" uses it.
    /// Needs the Python environment `make setup` creates.
    Add {
        /// The CTranslate2 model folder.
        dir: PathBuf,
        /// Name to install it under (default: the folder's name without its
        /// faster-whisper prefix: faster-whisper-large-v3 -> large-v3).
        #[arg(long)]
        name: Option<String>,
    },
    /// The installed Whisper models with their shapes.
    List,
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
        Command::Serve {
            port,
            storage,
            role,
        } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(role) = role {
                config.cluster.role = role;
            }
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
            whisper,
            speakers,
            whisper_only,
        } => {
            let config = whisper.config(cli.config.as_deref())?;
            if whisper_only {
                if !matches!(format, Format::Json | Format::Txt) {
                    anyhow::bail!(
                        "--whisper-only prints json or txt (speakers are needed for the others)"
                    );
                }
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
                    ..Default::default()
                };
                transcribe_pipeline(config, &files, format, options)
            }
        }
        Command::Eval {
            manifest,
            group,
            rttm,
            uem,
            stm,
            oracle_speakers,
            jobs,
            report,
            whisper,
        } => {
            let config = whisper.config(cli.config.as_deref())?;
            let mut items = Vec::new();
            for m in &manifest {
                items.extend(colloquy::eval::read_manifest(m, group.as_deref())?);
            }
            for r in &rttm {
                colloquy::eval::attach_rttm(&mut items, r)?;
            }
            for u in &uem {
                colloquy::eval::attach_uem(&mut items, u)?;
            }
            for f in &stm {
                colloquy::eval::attach_stm(&mut items, f)?;
            }
            if items.is_empty() {
                anyhow::bail!(
                    "nothing to evaluate: give --manifest and/or --rttm (see colloquy eval --help)"
                );
            }
            let dup = colloquy::eval::duplicate_ids(&items);
            if !dup.is_empty() {
                anyhow::bail!("ids given more than once: {}", dup.join(", "));
            }
            eval(config, items, oracle_speakers, jobs.max(1), &report)
        }
        Command::Keys { storage, action } => {
            let mut config = Config::load(cli.config.as_deref())?;
            if let Some(storage) = storage {
                config.server.storage_dir = storage.display().to_string();
            }
            keys(&config, action)
        }
        Command::Models { action } => {
            let config = Config::load(cli.config.as_deref())?;
            match action {
                ModelsAction::Add { dir, name } => {
                    let m = colloquy::models::add(&config, &dir, name.as_deref())?;
                    println!("installed {}", colloquy::models::describe(&m));
                    println!(
                        "use it with --model {} or whisper.model = \"{}\"",
                        m.name, m.name
                    );
                }
                ModelsAction::List => {
                    let models = colloquy::models::list(&config);
                    if models.is_empty() {
                        eprintln!(
                            "no Whisper models in {}: run `make setup` or `colloquy models add DIR`",
                            config.models_root().join("models").display()
                        );
                    }
                    for m in &models {
                        let current = if m.name == config.whisper.model {
                            "  (whisper.model)"
                        } else {
                            ""
                        };
                        println!("{}{current}", colloquy::models::describe(m));
                    }
                }
            }
            Ok(())
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

/// `colloquy keys`: on the storage folder of a server that is not running
/// (sled locks its database; a running server has `/api/keys`).
fn keys(config: &Config, action: KeysAction) -> anyhow::Result<()> {
    let storage = colloquy::registry::Storage::new(config.storage_root());
    let store = colloquy::auth::KeyStore::open_folder(&storage.database())?;
    match action {
        KeysAction::Create { name, admin } => {
            let (key, token) = store.create(&name, admin)?;
            eprintln!(
                "created {} key {} ({}); it is shown only now:",
                if key.admin { "admin" } else { "user" },
                key.id,
                key.name
            );
            println!("{token}");
        }
        KeysAction::List => {
            for k in store.list()? {
                println!(
                    "{}\t{}\t{}\tcreated {}\t{}",
                    k.id,
                    k.name,
                    if k.admin { "admin" } else { "user" },
                    k.created_at.format("%Y-%m-%d %H:%M:%S"),
                    match k.revoked_at {
                        Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M:%S")),
                        None => "live".into(),
                    }
                );
            }
        }
        KeysAction::Revoke { key } => match store.revoke(&key)? {
            Some(k) => println!("revoked {} ({})", k.id, k.name),
            None => anyhow::bail!("no key with id or name '{key}'"),
        },
    }
    Ok(())
}

fn serve(config: Config) -> anyhow::Result<()> {
    let bound = |addr: std::net::SocketAddr| {
        use std::io::Write;
        println!("colloquy listening on http://{addr}");
        let _ = std::io::stdout().flush();
        tracing::info!(%addr, "listening");
    };
    match config.server.auth {
        colloquy::config::AuthMode::None => tracing::warn!(
            "API keys are off (server.auth = \"none\"): anyone on this machine can use the API. \
             To require keys: `colloquy keys create --name NAME --admin`, then serve with \
             COLLOQUY__SERVER__AUTH=keys"
        ),
        colloquy::config::AuthMode::Keys => {
            tracing::info!("API keys required (server.auth = \"keys\")")
        }
    }
    if config.cluster.role == colloquy::config::Role::Api {
        // no model: uploads go to the queue and the bucket
        return actix_rt::System::new()
            .block_on(async move { colloquy::api::node::serve_api(config, bound).await });
    }
    let t0 = Instant::now();
    let engines = colloquy::actors::pipeline::Engines::load(&config)?;
    let devices = engines.devices();
    tracing::info!(seconds = t0.elapsed().as_secs_f64(), transcriber = %devices.transcriber, diarizer = %devices.diarizer, "models loaded");
    actix_rt::System::new().block_on(async move {
        match config.cluster.role {
            colloquy::config::Role::All => colloquy::api::serve(config, engines, bound).await,
            colloquy::config::Role::Worker => {
                colloquy::api::node::serve_worker(config, engines, bound).await
            }
            colloquy::config::Role::Api => unreachable!("served above"),
        }
    })
}

fn diarize(
    config: &Config,
    path: &std::path::Path,
    format: DiarizeFormat,
    bounds: colloquy::diarize::SpeakerBounds,
) -> anyhow::Result<()> {
    let mut engine = colloquy::diarize::DiarizationEngine::load(config)?;
    let limits = colloquy::audio::DecodeLimits::max_seconds(config.pipeline.max_audio_seconds);
    let t0 = Instant::now();
    // 16-bit, as the service keeps a job's audio
    let audio = colloquy::audio::load_16k_pcm16(path, limits)
        .with_context(|| format!("{}", path.display()))?;
    // the engine's runs reuse what they free (colloquy::alloc)
    let _kept = colloquy::alloc::KeptPages::bind();
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
                "voices": d.voices,
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

/// Every input exists: checked before the models load, so a typo fails at once.
fn require_files<'a>(paths: impl IntoIterator<Item = &'a std::path::Path>) -> anyhow::Result<()> {
    match paths.into_iter().find(|p| !p.is_file()) {
        Some(p) => anyhow::bail!("{}: no such file", p.display()),
        None => Ok(()),
    }
}

fn eval(
    mut config: Config,
    items: Vec<colloquy::eval::EvalItem>,
    oracle_speakers: bool,
    jobs: usize,
    report_path: &std::path::Path,
) -> anyhow::Result<()> {
    use colloquy::eval::{peak_rss_mb, reset_peak_rss, score, table, totals, EvalReport};
    require_files(items.iter().map(|i| i.audio.as_path()))?;
    config.pipeline.max_active_jobs = jobs;
    let engines = colloquy::actors::pipeline::Engines::load(&config)?;
    let device = engines.devices().transcriber.to_string();
    let (whisper_model, whisper_precision) = (
        config.whisper.model.clone(),
        config.whisper.precision_name().to_string(),
    );
    let hint = |item: &colloquy::eval::EvalItem| {
        if oracle_speakers {
            item.reference_speakers()
        } else {
            None
        }
    };
    // each job's result with the peak RSS while it ran alone (None when jobs overlap)
    let done: Vec<(colloquy::local::Finished, Option<f64>)> =
        actix_rt::System::new().block_on(async {
            let runner = colloquy::local::LocalRunner::start(config, engines, items.len()).await?;
            let options = |item| colloquy::registry::JobOptions {
                num_speakers: hint(item),
                ..Default::default()
            };
            let mut done = Vec::new();
            if jobs == 1 {
                for item in &items {
                    reset_peak_rss();
                    let id = runner.submit(&item.audio, options(item)).await?;
                    let d = runner
                        .wait(id)
                        .await
                        .with_context(|| item.audio.display().to_string())?;
                    let peak = peak_rss_mb();
                    eprintln!(
                        "{}: {:.1}x",
                        item.id,
                        d.result["duration"].as_f64().unwrap_or(0.0) / d.wall_seconds()
                    );
                    done.push((d, peak));
                }
            } else {
                reset_peak_rss();
                let mut ids = Vec::new();
                for item in &items {
                    ids.push(runner.submit(&item.audio, options(item)).await?);
                }
                for (item, id) in items.iter().zip(ids) {
                    done.push((
                        runner
                            .wait(id)
                            .await
                            .with_context(|| item.audio.display().to_string())?,
                        None,
                    ));
                }
            }
            Ok::<_, anyhow::Error>(done)
        })?;
    let files: Vec<_> = items
        .iter()
        .zip(&done)
        .map(|(item, (d, peak))| {
            let mut r = score(item, &d.result, d.wall_seconds(), *peak);
            r.num_speakers_hint = hint(item);
            r
        })
        .collect();
    let wall = if jobs == 1 {
        files.iter().map(|f| f.wall_seconds).sum()
    } else {
        colloquy::local::Finished::span_seconds(
            &done.into_iter().map(|(d, _)| d).collect::<Vec<_>>(),
        )
    };
    let mut totals = totals(&files, wall);
    if jobs > 1 {
        totals.peak_rss_mb = peak_rss_mb();
    }
    let report = EvalReport {
        whisper_model,
        whisper_precision,
        device,
        jobs_at_once: jobs,
        der_collar: colloquy::eval::DER_COLLAR,
        files,
        totals,
    };
    print!("{}", table(&report));
    if let Some(dir) = report_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = report_path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_string_pretty(&report)?)?;
    std::fs::rename(&tmp, report_path)?;
    eprintln!("report: {}", report_path.display());
    Ok(())
}

fn transcribe_pipeline(
    config: Config,
    files: &[PathBuf],
    format: Format,
    options: colloquy::registry::JobOptions,
) -> anyhow::Result<()> {
    require_files(files.iter().map(PathBuf::as_path))?;
    let engines = colloquy::actors::pipeline::Engines::load(&config)?;
    let outputs: Vec<serde_json::Value> = actix_rt::System::new().block_on(async {
        let runner = colloquy::local::LocalRunner::start(config, engines, files.len()).await?;
        let mut ids = Vec::new();
        for path in files {
            ids.push(runner.submit(path, options.clone()).await?);
        }
        let mut outputs = Vec::new();
        for (path, id) in files.iter().zip(ids) {
            let mut v = runner
                .wait(id)
                .await
                .with_context(|| format!("{}", path.display()))?
                .result;
            v["file"] = json!(path.display().to_string());
            outputs.push(v);
        }
        Ok::<_, anyhow::Error>(outputs)
    })?;
    for v in outputs {
        if format == Format::Json {
            println!("{v}");
            continue;
        }
        let file = v["file"].as_str().unwrap_or_default().to_string();
        if files.len() > 1 {
            println!("# {file}");
        }
        let result: colloquy::result::JobResult = serde_json::from_value(v)?;
        print!(
            "{}",
            colloquy::export::render(
                &result,
                format,
                &colloquy::export::Names::default(),
                colloquy::export::stem(&file)
            )
        );
    }
    Ok(())
}

fn transcribe(config: &Config, files: &[PathBuf], format: Format) -> anyhow::Result<()> {
    // the engines' runs reuse what they free (colloquy::alloc)
    let kept = colloquy::alloc::KeptPages::bind();
    let t_load = Instant::now();
    let mut engine = WhisperEngine::load(config)?;
    let mut vad = if config.vad.enabled {
        Some(colloquy::vad::SileroVad::load(config)?)
    } else {
        None
    };
    let load_s = t_load.elapsed().as_secs_f64();
    let limits = colloquy::audio::DecodeLimits::max_seconds(config.pipeline.max_audio_seconds);
    for path in files {
        // what the last file freed goes back to the system
        if let Some(kept) = &kept {
            kept.release();
        }
        let t0 = Instant::now();
        // 16-bit, as the service keeps a job's audio
        let audio = colloquy::audio::load_16k_pcm16(path, limits)
            .with_context(|| format!("{}", path.display()))?;
        let decode_s = t0.elapsed().as_secs_f64();
        let t_vad = Instant::now();
        let speech = match vad.as_mut() {
            Some(v) => Some(SpeechMap::new(
                &v.speech(audio.samples.view())?,
                &audio.samples,
                config.vad.threshold,
            )),
            None => None,
        };
        let vad_s = t_vad.elapsed().as_secs_f64();
        let transcript = engine
            .transcribe_until(&audio.samples, speech.as_ref(), None)
            .with_context(|| format!("{}", path.display()))?;
        let wall = t0.elapsed().as_secs_f64();
        match format {
            Format::Txt => print_txt(&transcript, files.len() > 1, path),
            Format::Json | Format::Srt | Format::Vtt | Format::Tsv | Format::Rttm => {
                let out = json!({
                    "file": path.display().to_string(),
                    "language": transcript.language,
                    "duration": transcript.duration,
                    "full_text": transcript.full_text(),
                    "segments": transcript.segments.iter().map(|s| json!({
                        "start": s.start, "end": s.end, "text": s.text,
                        "avg_logprob": s.avg_logprob, "no_speech_prob": s.no_speech_prob,
                        "temperature": s.temperature, "compression_ratio": s.compression_ratio,
                        "words": s.words,
                    })).collect::<Vec<_>>(),
                    "provider": { "runtime": "onnxruntime", "device": engine.device(), "model": engine.model_name(),
                                  "precision": config.whisper.precision_name(), "batch_size": engine.batch_size() },
                    "performance_metrics": {
                        "model_load_seconds": load_s,
                        "decode_audio_seconds": decode_s,
                        "features_seconds": transcript.timings.features,
                        "encoder_seconds": transcript.timings.encoder,
                        "decoder_seconds": transcript.timings.decoder,
                        "word_timing_seconds": transcript.timings.word_timing,
                        "vad_seconds": vad_s,
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
