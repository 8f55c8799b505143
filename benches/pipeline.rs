//! Pipelined throughput of the actor pipeline (`make bench`, issue #6).
//!
//! One engine set, one pipeline; a warm-up job first (not counted). Then:
//! (a) one job alone: seconds per stage;
//! (b) for N = 1, 2, 4, 8: the same N jobs one after another (each submitted
//!     when the previous one has its result), then N submitted at once;
//!     jobs per minute of each, the speed-up, and per stage the share of the
//!     wall time it was busy and the seconds it waited on the next stage.
//! Wall times come from the jobs' own records (submission to stored result),
//! model loading excluded. The configuration is the usual one (file given
//! with COLLOQUY_CONFIG, COLLOQUY__* overrides), except
//! `pipeline.max_active_jobs`, which is raised to the largest N.
//!
//!     cargo bench --bench pipeline -- [--clip FILE] [--ns 1,2,4,8] [--num-speakers N] [--json FILE]
//!
//! Default clip: ../shared/data/synthetic/conv1.wav (34.7 s, 2 speakers), or
//! the project's own tests/data/two_voices.flac when the shared data is absent.

use std::path::{Path, PathBuf};

use anyhow::Context;
use colloquy::actors::pipeline::{Engines, ThreadBudget};
use colloquy::actors::stage::CountersSnapshot;
use colloquy::config::Config;
use colloquy::local::{Finished, LocalRunner};
use colloquy::registry::JobOptions;
use serde_json::{json, Value};

struct Args {
    clip: PathBuf,
    ns: Vec<usize>,
    num_speakers: Option<usize>,
    json: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let shared = root.join("../shared/data/synthetic/conv1.wav");
    let mut a = Args {
        clip: if shared.exists() {
            shared
        } else {
            root.join("tests/data/two_voices.flac")
        },
        ns: vec![1, 2, 4, 8],
        num_speakers: Some(2),
        json: root.join("target/bench/pipeline.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--clip" => a.clip = PathBuf::from(value()?),
            "--ns" => {
                a.ns = value()?
                    .split(',')
                    .map(|n| n.trim().parse())
                    .collect::<Result<_, _>>()?;
            }
            "--num-speakers" => {
                let v = value()?;
                a.num_speakers = if v == "auto" { None } else { Some(v.parse()?) };
            }
            "--json" => a.json = PathBuf::from(value()?),
            "--bench" => {} // added by `cargo bench`
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    anyhow::ensure!(
        !a.ns.is_empty() && a.ns.iter().all(|&n| n > 0),
        "--ns: positive numbers"
    );
    Ok(a)
}

/// Per stage: (busy seconds, seconds blocked on the next stage) between two snapshots.
fn deltas(
    a: &[(&'static str, CountersSnapshot)],
    b: &[(&'static str, CountersSnapshot)],
) -> Vec<(&'static str, f64, f64)> {
    a.iter()
        .zip(b)
        .map(|((name, x), (_, y))| {
            (
                *name,
                y.busy_seconds - x.busy_seconds,
                y.blocked_seconds - x.blocked_seconds,
            )
        })
        .collect()
}

/// One job, submitted and waited for.
async fn one(runner: &LocalRunner, clip: &Path, options: &JobOptions) -> anyhow::Result<Finished> {
    let id = runner.submit(clip, options.clone()).await?;
    runner.wait(id).await
}

fn stage_json(stages: &[(&'static str, f64, f64)], wall: f64) -> Value {
    Value::Object(
        stages
            .iter()
            .map(|(name, busy, blocked)| {
                (name.to_string(), json!({"busy_seconds": busy, "busy_share": busy / wall, "blocked_seconds": blocked}))
            })
            .collect(),
    )
}

fn main() -> anyhow::Result<()> {
    let args = args()?;
    let mut config = Config::load(
        std::env::var_os("COLLOQUY_CONFIG")
            .as_deref()
            .map(Path::new),
    )?;
    config.pipeline.max_active_jobs = *args.ns.iter().max().unwrap();
    let engines = Engines::load(&config).context("loading the models (run `make setup`)")?;
    let device = engines.devices().transcriber.to_string();
    let budget = ThreadBudget::here(&config);
    let options = JobOptions {
        num_speakers: args.num_speakers,
        ..Default::default()
    };
    let audio_seconds = colloquy::audio::decode_file(&args.clip)?.duration();
    println!(
        "clip {} ({audio_seconds:.1} s), whisper {} {}, intra-op threads per engine {:?}, device {}",
        args.clip.display(),
        config.whisper.model,
        config.whisper.precision_name(),
        budget,
        device
    );
    let max_n = *args.ns.iter().max().unwrap();
    let report = actix_rt::System::new().block_on(async {
        let runner = LocalRunner::start(config.clone(), engines, max_n).await?;
        one(&runner, &args.clip, &options).await?; // warm-up

        // (a) one job alone
        let c0 = runner.counters();
        let done = one(&runner, &args.clip, &options).await?;
        let stages = deltas(&c0, &runner.counters());
        let wall = done.wall_seconds();
        println!("\n(a) one job: {wall:.2} s wall, {:.1}x real time", audio_seconds / wall);
        println!("{:<16} {:>9} {:>7}", "stage", "seconds", "share");
        for (name, busy, _) in &stages {
            println!("{name:<16} {busy:>9.3} {:>6.1}%", 100.0 * busy / wall);
        }
        let single = json!({"wall_seconds": wall, "speed": audio_seconds / wall, "stages": stage_json(&stages, wall)});

        // (b) N one after another, then N at once
        println!("\n(b) N jobs one after another vs N submitted at once");
        println!(
            "{:>3} {:>10} {:>10} {:>10} {:>10} {:>8}   busy share / blocked s per stage (at once)",
            "N", "seq s", "at once s", "seq j/min", "once j/min", "speed-up"
        );
        let mut rows = Vec::new();
        for &n in &args.ns {
            let mut seq = Vec::new();
            for _ in 0..n {
                seq.push(one(&runner, &args.clip, &options).await?);
            }
            let seq_wall: f64 = seq.iter().map(Finished::wall_seconds).sum();
            let c0 = runner.counters();
            let mut ids = Vec::new();
            for _ in 0..n {
                ids.push(runner.submit(&args.clip, options.clone()).await?);
            }
            let mut par = Vec::new();
            for id in ids {
                par.push(runner.wait(id).await?);
            }
            let stages = deltas(&c0, &runner.counters());
            let par_wall = Finished::span_seconds(&par);
            let per_min = |w: f64| 60.0 * n as f64 / w;
            let shares: Vec<String> = stages
                .iter()
                .map(|(name, busy, blocked)| format!("{name} {:.0}%/{blocked:.1}", 100.0 * busy / par_wall))
                .collect();
            println!(
                "{n:>3} {seq_wall:>10.2} {par_wall:>10.2} {:>10.1} {:>10.1} {:>7.2}x   {}",
                per_min(seq_wall),
                per_min(par_wall),
                seq_wall / par_wall,
                shares.join(", ")
            );
            rows.push(json!({
                "n": n,
                "sequential_seconds": seq_wall,
                "at_once_seconds": par_wall,
                "sequential_jobs_per_minute": per_min(seq_wall),
                "at_once_jobs_per_minute": per_min(par_wall),
                "speed_up": seq_wall / par_wall,
                "stages_at_once": stage_json(&stages, par_wall),
            }));
        }
        Ok::<_, anyhow::Error>(json!({
            "clip": args.clip.display().to_string(),
            "audio_seconds": audio_seconds,
            "whisper_model": config.whisper.model,
            "whisper_precision": config.whisper.precision_name(),
            "threads": budget,
            "device": device,
            "one_job": single,
            "throughput": rows,
        }))
    })?;
    if let Some(dir) = args.json.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&args.json, serde_json::to_string_pretty(&report)?)?;
    println!("\nreport: {}", args.json.display());
    Ok(())
}
