//! Local files through the engine, without HTTP: what `colloquy transcribe`,
//! `colloquy eval` and the pipeline bench use.
//!
//! Jobs take the same way as uploads (JobRegistry -> actor pipeline ->
//! result file), in a scratch storage folder of their own that is removed
//! when the runner is dropped. Must run inside an actix `System`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::actors::pipeline::{Engines, Pipeline};
use crate::actors::stage::CountersSnapshot;
use crate::api::{start_engine, AppState};
use crate::config::Config;
use crate::registry::{CreateJob, Job, JobOptions, JobStatus};

/// A finished job: its record (with `created_at` / `finished_at`) and result.
#[derive(Debug, Clone)]
pub struct Finished {
    pub job: Job,
    pub result: Value,
}

impl Finished {
    fn end(&self) -> DateTime<Utc> {
        self.job.finished_at.unwrap_or(self.job.updated_at)
    }

    /// Seconds from submission to the stored result.
    pub fn wall_seconds(&self) -> f64 {
        seconds(self.job.created_at, self.end())
    }

    /// Seconds from the first submission to the last stored result of
    /// jobs that ran together (0 for none).
    pub fn span_seconds(done: &[Finished]) -> f64 {
        let first = done.iter().map(|d| d.job.created_at).min();
        let last = done.iter().map(Finished::end).max();
        first.zip(last).map_or(0.0, |(a, b)| seconds(a, b))
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(0) as f64 / 1e6
}

pub struct LocalRunner {
    state: AppState,
    _pipeline: Pipeline,
    scratch: PathBuf,
}

impl LocalRunner {
    /// Starts a registry and a pipeline on `engines`, storing jobs in a new
    /// scratch folder under the system's temp directory; up to `max_queued`
    /// jobs may wait beyond `config.pipeline.max_active_jobs`.
    pub async fn start(
        mut config: Config,
        engines: Engines,
        max_queued: usize,
    ) -> anyhow::Result<LocalRunner> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let scratch =
            std::env::temp_dir().join(format!("colloquy-local-{}-{nanos}", std::process::id()));
        config.server.storage_dir = scratch.display().to_string();
        config.server.max_queued_jobs = config.server.max_queued_jobs.max(max_queued);
        let (state, pipeline) = match start_engine(&config, engines).await {
            Ok(v) => v,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&scratch);
                return Err(e);
            }
        };
        Ok(LocalRunner {
            state,
            _pipeline: pipeline,
            scratch,
        })
    }

    /// Queues a job for `path` (hard-linked, or copied, into the job's folder).
    pub async fn submit(&self, path: &Path, options: JobOptions) -> anyhow::Result<Uuid> {
        if !path.is_file() {
            anyhow::bail!("{}: no such file", path.display());
        }
        let id = Uuid::new_v4();
        // the CLI's runner is always this node's: files are hard-linked in
        let local = self
            .state
            .local
            .as_ref()
            .context("the local runner has its own registry")?;
        let dir = local.storage.temp_dir(id);
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
        let bytes = std::fs::metadata(dir.join(&audio_file))
            .map(|m| m.len())
            .unwrap_or(0);
        self.state
            .jobs
            .create(CreateJob {
                id,
                filename,
                audio_file,
                options,
                owner: None,
                quota: None,
                bytes,
                callback_url: None,
            })
            .await?;
        Ok(id)
    }

    /// Waits for job `id` to end (told by the registry, no polling); an
    /// error names the reason when it did not complete.
    pub async fn wait(&self, id: Uuid) -> anyhow::Result<Finished> {
        let Some(job) = self.state.jobs.watch(id).await? else {
            anyhow::bail!("job {id} was deleted")
        };
        if job.status != JobStatus::Completed {
            anyhow::bail!(
                "{}",
                job.error
                    .clone()
                    .unwrap_or_else(|| "the job did not complete".into())
            );
        }
        let text = self.state.jobs.result(id).await?;
        let result: Value = serde_json::from_slice(&text)?;
        Ok(Finished { job, result })
    }

    /// Every stage's counters now (cumulative since start).
    pub fn counters(&self) -> Vec<(&'static str, CountersSnapshot)> {
        self.state.counters.snapshot()
    }
}

impl Drop for LocalRunner {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.scratch);
    }
}
