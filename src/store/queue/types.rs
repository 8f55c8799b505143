//! The queue's rows as types: a job as stored, what an upload adds, a
//! worker's lease, how a job ends, and the notifications listeners get.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::postgres::PgRow;
use sqlx::Row;
use uuid::Uuid;

use super::QueueError;

/// A job's status, as the `jobs.status` column (and the API) writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueStatus {
    Queued,
    Processing,
    Completed,
    Failed,
    Cancelled,
}

impl QueueStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueStatus::Queued => "queued",
            QueueStatus::Processing => "processing",
            QueueStatus::Completed => "completed",
            QueueStatus::Failed => "failed",
            QueueStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<QueueStatus> {
        Some(match s {
            "queued" => QueueStatus::Queued,
            "processing" => QueueStatus::Processing,
            "completed" => QueueStatus::Completed,
            "failed" => QueueStatus::Failed,
            "cancelled" => QueueStatus::Cancelled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(
            self,
            QueueStatus::Completed | QueueStatus::Failed | QueueStatus::Cancelled
        )
    }
}

/// One row of `jobs` (see `migrations/` for what each column means).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Job {
    pub id: Uuid,
    pub owner: Option<String>,
    pub filename: String,
    pub audio_key: String,
    pub bytes: i64,
    /// Opaque to the queue: the registry's `JobOptions` as JSON.
    pub options: serde_json::Value,
    pub status: QueueStatus,
    /// 0 to 100.
    pub progress: u8,
    pub step: String,
    pub error: Option<String>,
    pub error_kind: Option<String>,
    pub duration: Option<f64>,
    pub attempts: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested: bool,
    pub result_key: Option<String>,
    pub result_bytes: Option<i64>,
    /// The callback's record (`crate::callback::Callback` as JSON), when
    /// the upload asked for one.
    pub callback: Option<serde_json::Value>,
    /// Seconds left, as the holding worker estimates them (while processing).
    pub eta_seconds: Option<f64>,
}

/// The columns [`Job::from_row`] reads, for `SELECT`/`RETURNING` lists
/// (`lease_token` is left out: it never leaves the queue but in a [`Lease`]).
/// A macro, so that `concat!` makes each query a literal (sqlx takes only
/// `&'static str` queries without an audit wrapper).
macro_rules! job_columns {
    () => {
        "id, owner, filename, audio_key, bytes, options, status, progress, step, error, \
         error_kind, duration, attempts, created_at, updated_at, started_at, finished_at, \
         lease_owner, lease_expires_at, cancel_requested, result_key, result_bytes, callback, eta_seconds"
    };
}
pub(super) use job_columns;

impl Job {
    pub(super) fn from_row(row: &PgRow) -> Result<Job, QueueError> {
        let id: Uuid = row.try_get("id")?;
        let status: String = row.try_get("status")?;
        let status = QueueStatus::parse(&status).ok_or_else(|| QueueError::Corrupt {
            id,
            what: format!("unknown status {status:?}"),
        })?;
        let progress: i16 = row.try_get("progress")?;
        let progress = u8::try_from(progress)
            .ok()
            .filter(|p| *p <= 100)
            .ok_or_else(|| QueueError::Corrupt {
                id,
                what: format!("progress {progress} out of 0..=100"),
            })?;
        Ok(Job {
            id,
            owner: row.try_get("owner")?,
            filename: row.try_get("filename")?,
            audio_key: row.try_get("audio_key")?,
            bytes: row.try_get("bytes")?,
            options: row.try_get("options")?,
            status,
            progress,
            step: row.try_get("step")?,
            error: row.try_get("error")?,
            error_kind: row.try_get("error_kind")?,
            duration: row.try_get("duration")?,
            attempts: row.try_get("attempts")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            started_at: row.try_get("started_at")?,
            finished_at: row.try_get("finished_at")?,
            lease_owner: row.try_get("lease_owner")?,
            lease_expires_at: row.try_get("lease_expires_at")?,
            cancel_requested: row.try_get("cancel_requested")?,
            result_key: row.try_get("result_key")?,
            result_bytes: row.try_get("result_bytes")?,
            callback: row.try_get("callback")?,
            eta_seconds: row.try_get("eta_seconds")?,
        })
    }
}

/// What an upload adds to the queue. The id is the caller's (the API
/// answers with it, and the blob store may already hold `audio_key` under it).
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: Uuid,
    pub owner: Option<String>,
    pub filename: String,
    pub audio_key: String,
    pub bytes: i64,
    pub options: serde_json::Value,
    /// The callback's first record (its url), when the upload asked for one.
    pub callback: Option<serde_json::Value>,
}

/// A worker's hold on one job, from [`lease`](super::JobQueue::lease) until
/// it finishes the job or loses the lease. Every write through it checks
/// the token, so a holder whose lease another worker took over changes
/// nothing.
#[derive(Debug, Clone)]
pub struct Lease {
    /// The job as it was when leased (status processing, attempts counted).
    pub job: Job,
    pub worker: String,
    /// Fresh for each lease of the job.
    pub token: Uuid,
    /// How long each renewal extends the lease.
    pub ttl: Duration,
}

impl Lease {
    pub fn id(&self) -> Uuid {
        self.job.id
    }
}

/// What a renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours, extended by the lease's TTL.
    Held,
    /// Still ours (extended, so the holder can wind down), but the job was
    /// cancelled: stop and finish it with [`Outcome::Cancelled`].
    CancelRequested,
    /// Another worker took the job over, or it was finished, reaped or
    /// deleted: stop, and expect any write to be discarded.
    Lost,
}

/// How a worker ends a job it holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed {
        result_key: String,
        result_bytes: i64,
        /// Seconds of audio, if not reported before.
        duration: Option<f64>,
    },
    Failed {
        error: String,
        /// `input` or `internal` (the registry's `FailureKind`).
        kind: String,
    },
    /// Stopped on request (after [`LeaseState::CancelRequested`]).
    Cancelled,
}

/// What [`cancel`](super::JobQueue::cancel) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued: cancelled now, never to be leased.
    Cancelled,
    /// It is being processed: its holder is told (NOTIFY, and its next
    /// renewal says [`LeaseState::CancelRequested`]) and finishes it.
    Requested,
    /// It had already ended with this status; nothing changed.
    AlreadyFinished(QueueStatus),
    NotFound,
}

/// A node seen through its heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WorkerSeen {
    pub id: String,
    pub role: String,
    pub seen_at: DateTime<Utc>,
}

/// Counts for `/health` and `/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QueueStats {
    /// Jobs waiting for a worker (the queue's depth).
    pub queued: i64,
    pub processing: i64,
    /// Nodes whose last heartbeat is within `QueueOptions::worker_window`.
    pub workers: Vec<WorkerSeen>,
}

/// A notification from the database (payload: the job's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A job became queued: lease now rather than at the next poll.
    Queued(Uuid),
    /// Cancel was requested for a processing job, or it was deleted: its
    /// holder stops.
    CancelRequested(Uuid),
    /// Status, progress or step changed.
    Updated(Uuid),
}
