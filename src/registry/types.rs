//! The registry's data: a job as stored and shown, what an upload asks of
//! the pipeline, where jobs' files live, a key's limits, and the errors.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::actors::FailureKind;
use crate::callback::Callback;

/// What an upload asks of the pipeline: speaker-count hints, and changes
/// to the configured decoding (the OpenAI-compatible route's).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobOptions {
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
    #[serde(default, skip_serializing_if = "crate::whisper::Overrides::is_empty")]
    pub whisper: crate::whisper::Overrides,
    /// Known speakers (library ids) to look for; None: the whole library.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_speakers: Option<Vec<String>>,
    /// Voices named for this job alone, each by a reference clip stored
    /// beside its audio (the OpenAI-compatible route's
    /// `known_speaker_names[]` + `known_speaker_references[]`): looked for
    /// instead of the library.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
}

/// A voice named for one job by a reference clip.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reference {
    pub name: String,
    /// The clip's file in the job's temp folder (`reference-0.wav`).
    pub file: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl JobStatus {
    /// The status as the API writes it (`queued`, `processing`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Queued => "queued",
            JobStatus::Processing => "processing",
            JobStatus::Completed => "completed",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Completed | JobStatus::Failed | JobStatus::Cancelled
        )
    }
}

/// One job, as stored and as `GET /api/status/{id}` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Job {
    pub job_id: Uuid,
    pub status: JobStatus,
    pub progress: u8,
    pub step: String,
    pub error: Option<String>,
    /// Whose fault a failure is: `input` (the file) or `internal` (ours).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<FailureKind>,
    /// The API key that created the job (its id); None without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Bytes uploaded (kept until the job ends).
    #[serde(default)]
    pub bytes: u64,
    /// Bytes of the stored result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_bytes: Option<u64>,
    /// The name the file was uploaded with (sanitised: no folders, no control characters).
    pub filename: String,
    /// Name of the stored audio inside `temp/{id}/`.
    pub audio_file: String,
    pub options: JobOptions,
    /// Seconds of audio, once decoded.
    pub duration: Option<f64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Times the job was admitted into the pipeline (2 after a restart interrupted it).
    pub attempts: u32,
    /// Seconds left, estimated from the audio's length and this machine's
    /// measured speed ([`crate::registry::eta`]); while processing, once the length is known.
    /// In answers only, never stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<f64>,
    /// Where the final record is POSTed when the job ends, and how that went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<Callback>,
}

/// Where jobs' files live.
#[derive(Debug, Clone)]
pub struct Storage {
    pub root: PathBuf,
}

impl Storage {
    pub fn new(root: impl Into<PathBuf>) -> Storage {
        Storage { root: root.into() }
    }
    pub fn temp_root(&self) -> PathBuf {
        self.root.join("temp")
    }
    pub fn temp_dir(&self, id: Uuid) -> PathBuf {
        self.temp_root().join(id.to_string())
    }
    pub fn results_root(&self) -> PathBuf {
        self.root.join("results")
    }
    pub fn result_path(&self, id: Uuid) -> PathBuf {
        self.results_root().join(format!("{id}.json"))
    }
    /// The job's speakers' voice prints (never served; for enrolling).
    pub fn voices_path(&self, id: Uuid) -> PathBuf {
        self.results_root().join(format!("{id}.voices.json"))
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("jobs.sled")
    }
    pub fn create_dirs(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.temp_root())?;
        std::fs::create_dir_all(self.results_root())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("job database: {0}")]
    Db(#[from] sled::Error),
    #[error("job record is unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("storage: {0}")]
    Io(#[from] std::io::Error),
    #[error("{waiting} jobs are already waiting")]
    QueueFull { waiting: usize },
    /// A key's own limits (jobs waiting, bytes kept).
    #[error("{0}")]
    OverQuota(String),
    /// A store behind the registry's seam failed (the job queue, the bucket).
    #[error("{0}")]
    Unavailable(String),
}

/// What one key may keep in the registry (`server.max_*_per_key`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub max_queued: usize,
    pub max_stored_bytes: u64,
}

/// Every status a stored job can have, counted from 0 (a deleted job
/// leaves no record, so `cancelled` is not among them).
pub fn zero_counts() -> std::collections::BTreeMap<String, usize> {
    [
        JobStatus::Queued,
        JobStatus::Processing,
        JobStatus::Completed,
        JobStatus::Failed,
    ]
    .iter()
    .map(|s| (s.as_str().to_string(), 0))
    .collect()
}

/// What admission and the counts need of a job, kept in memory for every
/// job (so neither reads every record).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    pub owner: Option<String>,
    pub status: JobStatus,
    pub bytes: u64,
    pub result_bytes: Option<u64>,
}

impl From<&Job> for Summary {
    fn from(job: &Job) -> Summary {
        Summary {
            owner: job.owner.clone(),
            status: job.status,
            bytes: job.bytes,
            result_bytes: job.result_bytes,
        }
    }
}

/// A key's limits against its jobs (`jobs`: that key's) and an upload of
/// `incoming` bytes: jobs waiting, and bytes kept (uploads of unfinished
/// jobs, results of finished ones).
pub fn check_quota(
    jobs: impl IntoIterator<Item = Summary>,
    quota: Quota,
    incoming: u64,
) -> Result<(), RegistryError> {
    let mut waiting = 0;
    let mut stored = incoming;
    for job in jobs {
        waiting += usize::from(job.status == JobStatus::Queued);
        stored += match job.status {
            JobStatus::Queued | JobStatus::Processing => job.bytes,
            _ => job.result_bytes.unwrap_or(0),
        };
    }
    if waiting >= quota.max_queued {
        return Err(RegistryError::OverQuota(format!(
            "this key already has {waiting} jobs waiting (its limit is {})",
            quota.max_queued
        )));
    }
    if stored > quota.max_stored_bytes {
        return Err(RegistryError::OverQuota(format!(
            "this key would keep {stored} bytes on the server (its limit is {}): \
             delete finished jobs to make room",
            quota.max_stored_bytes
        )));
    }
    Ok(())
}
