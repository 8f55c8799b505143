//! The job store over PostgreSQL: see `store`.
//!
//! The role of the queue is to let any number of API nodes add jobs and any
//! number of worker nodes run them, each job run to its end once, with the
//! database as the only thing they share. This includes the following steps:
//! - on connect, applying the schema in `migrations/` (embedded at build
//!   time; sqlx records what ran and serialises concurrent starts with an
//!   advisory lock, so connecting again changes nothing);
//! - [`enqueue`](JobQueue::enqueue): a job as a `queued` row;
//! - [`lease`](JobQueue::lease): a worker takes the oldest queued job (or one
//!   whose lease expired: its worker was killed) with `FOR UPDATE SKIP
//!   LOCKED`, so concurrent workers never wait on or take the same row. The
//!   lease has an expiry (the database's clock, not the workers') and a
//!   fresh token;
//! - [`renew`](JobQueue::renew) and [`progress`](JobQueue::progress) while
//!   it works: both match the token, so they fail once the job was taken
//!   over, and renewal reports a requested cancel;
//! - [`finish`](JobQueue::finish): also matched on the token and on the
//!   status still being `processing`, so a job ends exactly once and a late
//!   result from a worker that lost its lease is discarded;
//! - [`cancel`](JobQueue::cancel), [`delete`](JobQueue::delete), reads for
//!   the API, worker heartbeats and [`stats`](JobQueue::stats);
//! - notifications (a trigger in the schema sends them at commit) through
//!   [`listen`](JobQueue::listen), so an idle worker wakes when a job is
//!   queued and a busy one stops when its job is cancelled. They are a
//!   shortcut, not a guarantee: callers also poll.
//!
//! A lease is lost when another worker takes the job over (or the job is
//! reaped or deleted), not at the instant it expires: until then, the
//! holder's renewal and result still count, since no one else has started.
//!
//! A job whose lease expired `max_attempts` times is failed rather than
//! leased again (a file that kills its worker must not kill them all), and
//! an expired job whose cancel was requested is cancelled; both happen in
//! [`lease`](JobQueue::lease), so whichever worker polls next cleans up.

mod types;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, Row};
use uuid::Uuid;

use types::job_columns;
pub use types::{
    CancelOutcome, Job, Lease, LeaseState, NewJob, Notice, Outcome, QueueStats, QueueStatus,
    WorkerSeen,
};

/// The schema, from `migrations/` (new files there need a rebuild to be seen).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Notification channels (sent by the `colloquy_jobs_notify` trigger).
pub const CHANNEL_QUEUED: &str = "colloquy_job_queued";
pub const CHANNEL_CANCEL: &str = "colloquy_job_cancel";
pub const CHANNEL_UPDATED: &str = "colloquy_job_updated";

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The URL is invalid, or the server cannot be reached or refused us.
    #[error("cannot connect to the job database at {target}: {source}")]
    Connect {
        /// The URL without its password.
        target: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("job database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("job database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("job {id}: unreadable row: {what}")]
    Corrupt { id: Uuid, what: String },
}

impl QueueError {
    /// The database cannot be reached now (down, unreachable, or every
    /// connection busy): worth a retry, and a 503 rather than a 500.
    pub fn is_unavailable(&self) -> bool {
        let e = match self {
            QueueError::Connect { source, .. } | QueueError::Db(source) => source,
            QueueError::Migrate(_) | QueueError::Corrupt { .. } => return false,
        };
        matches!(
            e,
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed
        )
    }
}

/// How a node uses the database.
#[derive(Debug, Clone)]
pub struct QueueOptions {
    /// Connections in the pool, shared by everything on the node. A listener
    /// holds one more of its own.
    pub max_connections: u32,
    /// How long connecting, and an operation waiting for a free connection,
    /// may take before failing.
    pub connect_timeout: Duration,
    /// Leases a job may take: when the last one expires, the job fails
    /// instead of being leased again.
    pub max_attempts: u32,
    /// A node counts in [`QueueStats::workers`] while its last heartbeat is
    /// at most this old; keep it a few heartbeat intervals long.
    pub worker_window: Duration,
}

impl Default for QueueOptions {
    fn default() -> Self {
        QueueOptions {
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            max_attempts: 3,
            worker_window: Duration::from_secs(60),
        }
    }
}

/// A node's handle on the queue (cheap to clone: a connection pool).
#[derive(Debug, Clone)]
pub struct JobQueue {
    pool: PgPool,
    /// For listeners, which reconnect by themselves.
    connect: PgConnectOptions,
    opts: QueueOptions,
}

impl JobQueue {
    /// Connects, applies the migrations not yet applied, and opens the pool.
    ///
    /// Fails fast when the server is down (the caller decides whether to
    /// retry); later operations wait up to `connect_timeout` for a connection.
    pub async fn connect(url: &str, opts: QueueOptions) -> Result<JobQueue, QueueError> {
        let connect_error = |source| QueueError::Connect {
            target: redact(url),
            source,
        };
        let connect = PgConnectOptions::from_str(url)
            .map_err(connect_error)?
            .application_name("colloquy");
        let mut conn = tokio::time::timeout(opts.connect_timeout, connect.connect())
            .await
            .map_err(|_| {
                connect_error(sqlx::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {:?}", opts.connect_timeout),
                )))
            })?
            .map_err(connect_error)?;
        MIGRATOR.run(&mut conn).await?;
        conn.close().await?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.connect_timeout)
            .connect_lazy_with(connect.clone());
        tracing::info!(target = %redact(url), "job queue connected");
        Ok(JobQueue {
            pool,
            connect,
            opts,
        })
    }

    /// Adds a queued job (and wakes a listening worker).
    pub async fn enqueue(&self, job: NewJob) -> Result<Uuid, QueueError> {
        sqlx::query(
            "INSERT INTO jobs (id, owner, filename, audio_key, bytes, options, callback) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(job.id)
        .bind(&job.owner)
        .bind(&job.filename)
        .bind(&job.audio_key)
        .bind(job.bytes)
        .bind(&job.options)
        .bind(&job.callback)
        .execute(&self.pool)
        .await?;
        Ok(job.id)
    }

    /// Takes the oldest job waiting for a worker, if any: a queued one, or
    /// one whose lease expired. It becomes `processing`, held by `worker`
    /// until now + `ttl` unless renewed, its attempts counted, its progress
    /// back to 0 (a new attempt starts from the beginning).
    ///
    /// None can also mean that another worker took the row this one was
    /// about to lock (PostgreSQL's `LIMIT` with a locking clause): callers
    /// poll anyway, so the next call finds the next job.
    pub async fn lease(&self, worker: &str, ttl: Duration) -> Result<Option<Lease>, QueueError> {
        self.reap().await?;
        let token = Uuid::new_v4();
        let sql = concat!(
            "UPDATE jobs SET status = 'processing', attempts = attempts + 1, \
                 lease_owner = $1, lease_token = $2, \
                 lease_expires_at = now() + make_interval(secs => $3), \
                 progress = 0, step = 'Starting', \
                 started_at = coalesce(started_at, now()), updated_at = now() \
             WHERE id = ( \
                 SELECT id FROM jobs \
                 WHERE status = 'queued' \
                    OR (status = 'processing' AND lease_expires_at < now() \
                        AND NOT cancel_requested AND attempts < $4) \
                 ORDER BY created_at, id \
                 LIMIT 1 \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            job_columns!()
        );
        let row = sqlx::query(sql)
            .bind(worker)
            .bind(token)
            .bind(ttl.as_secs_f64())
            .bind(self.max_attempts())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let job = Job::from_row(&row)?;
        tracing::debug!(job_id = %job.id, worker, attempts = job.attempts, "job leased");
        Ok(Some(Lease {
            job,
            worker: worker.to_string(),
            token,
            ttl,
        }))
    }

    /// Ends the expired leases that must not be leased again: cancelled
    /// when a cancel was requested, failed when out of attempts.
    async fn reap(&self) -> Result<(), QueueError> {
        let reaped = sqlx::query(
            "UPDATE jobs SET \
                 status = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'failed' END, \
                 step = CASE WHEN cancel_requested THEN 'Cancelled' ELSE 'Failed' END, \
                 error = CASE WHEN cancel_requested THEN error \
                     ELSE format('its worker stopped answering %s times', attempts) END, \
                 error_kind = CASE WHEN cancel_requested THEN error_kind ELSE 'internal' END, \
                 lease_token = NULL, lease_expires_at = NULL, \
                 finished_at = now(), updated_at = now() \
             WHERE id IN ( \
                 SELECT id FROM jobs \
                 WHERE status = 'processing' AND lease_expires_at < now() \
                   AND (cancel_requested OR attempts >= $1) \
                 FOR UPDATE SKIP LOCKED) \
             RETURNING id, status",
        )
        .bind(self.max_attempts())
        .fetch_all(&self.pool)
        .await?;
        for row in reaped {
            let id: Uuid = row.try_get("id")?;
            let status: String = row.try_get("status")?;
            tracing::warn!(job_id = %id, status, "job's lease expired for good");
        }
        Ok(())
    }

    /// Extends the lease by its TTL, if still held.
    pub async fn renew(&self, lease: &Lease) -> Result<LeaseState, QueueError> {
        let row = sqlx::query(
            "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3) \
             WHERE id = $1 AND lease_token = $2 AND status = 'processing' \
             RETURNING cancel_requested",
        )
        .bind(lease.id())
        .bind(lease.token)
        .bind(lease.ttl.as_secs_f64())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            None => LeaseState::Lost,
            Some(row) if row.try_get::<bool, _>("cancel_requested")? => LeaseState::CancelRequested,
            Some(_) => LeaseState::Held,
        })
    }

    /// Records progress (0 to 100, clamped) and the step being worked on.
    /// False when the lease is no longer held (nothing was written).
    pub async fn progress(&self, lease: &Lease, pct: u8, step: &str) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET progress = $3, step = $4, updated_at = now() \
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'",
        )
        .bind(lease.id())
        .bind(lease.token)
        .bind(i16::from(pct.min(100)))
        .bind(step)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records the holder's estimate of seconds left. False when the lease
    /// is no longer held.
    pub async fn estimate(&self, lease: &Lease, eta: Option<f64>) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET eta_seconds = $3 \
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'",
        )
        .bind(lease.id())
        .bind(lease.token)
        .bind(eta)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Hands a held job back to the queue at once (a worker stopping on
    /// purpose): queued again for any worker, as if this lease had not been
    /// taken (its attempt not counted). False when the lease was not held,
    /// or a cancel was requested (the lease then lapses and the job ends
    /// cancelled).
    pub async fn release(&self, lease: &Lease) -> Result<bool, QueueError> {
        // one statement: its attempt number comes back, its partial text goes
        let row = sqlx::query(
            "WITH released AS ( \
                 UPDATE jobs SET status = 'queued', progress = 0, step = 'Queued', \
                 attempts = greatest(attempts - 1, 0), lease_token = NULL, lease_expires_at = NULL, \
                 updated_at = now() \
                 WHERE id = $1 AND lease_token = $2 AND status = 'processing' \
                 AND NOT cancel_requested RETURNING id), \
             cleared AS (DELETE FROM job_segments WHERE job_id IN (SELECT id FROM released)) \
             SELECT count(*) AS n FROM released",
        )
        .bind(lease.id())
        .bind(lease.token)
        .fetch_one(&self.pool)
        .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n == 1)
    }

    /// Records the audio's length once decoded (false: lease not held).
    pub async fn set_duration(&self, lease: &Lease, seconds: f64) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET duration = $3, updated_at = now() \
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'",
        )
        .bind(lease.id())
        .bind(lease.token)
        .bind(seconds)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Ends the job with `outcome`. True exactly once per job: false (and
    /// the row unchanged) when this lease was lost or the job already ended.
    pub async fn finish(&self, lease: &Lease, outcome: Outcome) -> Result<bool, QueueError> {
        let (status, step, error, kind, result_key, result_bytes, duration) = match outcome {
            Outcome::Completed {
                result_key,
                result_bytes,
                duration,
            } => (
                QueueStatus::Completed,
                "Completed",
                None,
                None,
                Some(result_key),
                Some(result_bytes),
                duration,
            ),
            Outcome::Failed { error, kind } => (
                QueueStatus::Failed,
                "Failed",
                Some(error),
                Some(kind),
                None,
                None,
                None,
            ),
            Outcome::Cancelled => (
                QueueStatus::Cancelled,
                "Cancelled",
                None,
                None,
                None,
                None,
                None,
            ),
        };
        let done = sqlx::query(
            "UPDATE jobs SET status = $3, step = $4, error = $5, error_kind = $6, \
                 result_key = $7, result_bytes = $8, duration = coalesce($9, duration), \
                 progress = CASE WHEN $3 = 'completed' THEN 100 ELSE progress END, \
                 lease_token = NULL, lease_expires_at = NULL, \
                 finished_at = now(), updated_at = now() \
             WHERE id = $1 AND lease_token = $2 AND status = 'processing'",
        )
        .bind(lease.id())
        .bind(lease.token)
        .bind(status.as_str())
        .bind(step)
        .bind(error)
        .bind(kind)
        .bind(result_key)
        .bind(result_bytes)
        .bind(duration)
        .execute(&self.pool)
        .await?;
        let finished = done.rows_affected() == 1;
        if finished {
            // the stored result replaces the partial text
            sqlx::query("DELETE FROM job_segments WHERE job_id = $1")
                .bind(lease.id())
                .execute(&self.pool)
                .await?;
            tracing::info!(job_id = %lease.id(), status = status.as_str(), "job finished");
        } else {
            tracing::warn!(
                job_id = %lease.id(),
                worker = %lease.worker,
                "result discarded: lease lost or job already finished"
            );
        }
        Ok(finished)
    }

    /// Cancels a queued job at once; asks the holder of a processing one to
    /// stop (it finishes the job as cancelled, or the reaper does once its
    /// lease expires).
    pub async fn cancel(&self, id: Uuid) -> Result<CancelOutcome, QueueError> {
        let row = sqlx::query(
            "UPDATE jobs SET \
                 status = CASE WHEN status = 'queued' THEN 'cancelled' ELSE status END, \
                 step = CASE WHEN status = 'queued' THEN 'Cancelled' ELSE step END, \
                 finished_at = CASE WHEN status = 'queued' THEN now() ELSE finished_at END, \
                 cancel_requested = cancel_requested OR status = 'processing', \
                 updated_at = now() \
             WHERE id = $1 AND status IN ('queued', 'processing') \
             RETURNING status",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        if let Some(row) = row {
            let status: String = row.try_get("status")?;
            return Ok(if status == QueueStatus::Cancelled.as_str() {
                CancelOutcome::Cancelled
            } else {
                CancelOutcome::Requested
            });
        }
        Ok(match self.get(id).await? {
            None => CancelOutcome::NotFound,
            Some(job) => CancelOutcome::AlreadyFinished(job.status),
        })
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let sql = concat!("SELECT ", job_columns!(), " FROM jobs WHERE id = $1");
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Jobs newest first, at most `limit`; only `owner`'s when given.
    pub async fn list(&self, owner: Option<&str>, limit: usize) -> Result<Vec<Job>, QueueError> {
        let sql = concat!(
            "SELECT ",
            job_columns!(),
            " FROM jobs WHERE $1::text IS NULL OR owner = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2"
        );
        let rows = sqlx::query(sql)
            .bind(owner)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(Job::from_row).collect()
    }

    /// Removes the job's row; returns it as it was. A holder finds its lease
    /// lost (and is notified on the cancel channel). The blobs it names are
    /// the caller's to remove.
    pub async fn delete(&self, id: Uuid) -> Result<Option<Job>, QueueError> {
        let sql = concat!("DELETE FROM jobs WHERE id = $1 RETURNING ", job_columns!());
        let row = sqlx::query(sql).bind(id).fetch_optional(&self.pool).await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Records that the node `worker` (`role`: api, worker, ...) is alive.
    pub async fn heartbeat(&self, worker: &str, role: &str) -> Result<(), QueueError> {
        sqlx::query(
            "INSERT INTO workers (id, role, seen_at) VALUES ($1, $2, now()) \
             ON CONFLICT (id) DO UPDATE SET role = excluded.role, seen_at = excluded.seen_at",
        )
        .bind(worker)
        .bind(role)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Adds partial segments (`(seq, segment JSON)`, seq from 1 in arrival
    /// order) decoded under `lease`, under the job's current attempt; the
    /// rows written: none when the lease is no longer held. A seq already
    /// stored is left as it is.
    pub async fn add_segments(
        &self,
        lease: &Lease,
        segments: &[(i32, serde_json::Value)],
    ) -> Result<u64, QueueError> {
        let (seqs, bodies): (Vec<i32>, Vec<serde_json::Value>) = segments.iter().cloned().unzip();
        let done = sqlx::query(
            "INSERT INTO job_segments (job_id, attempt, seq, segment) \
             SELECT j.id, j.attempts, s.seq, s.segment \
             FROM jobs j, unnest($3::int4[], $4::jsonb[]) AS s(seq, segment) \
             WHERE j.id = $1 AND j.lease_token = $2 AND j.status = 'processing' \
             ON CONFLICT DO NOTHING",
        )
        .bind(lease.id())
        .bind(lease.token)
        .bind(&seqs)
        .bind(&bodies)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// The partial segments of the job's current attempt after `after`
    /// (seq order).
    pub async fn segments_after(
        &self,
        id: Uuid,
        after: i32,
    ) -> Result<Vec<(i32, serde_json::Value)>, QueueError> {
        let rows = sqlx::query(
            "SELECT s.seq, s.segment FROM job_segments s JOIN jobs j ON j.id = s.job_id \
             WHERE s.job_id = $1 AND s.attempt = j.attempts AND s.seq > $2 ORDER BY s.seq",
        )
        .bind(id)
        .bind(after)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, r.try_get("segment")?)))
            .collect::<Result<Vec<_>, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// Claims an ended job whose callback is due (completed or failed, not
    /// done, its next attempt's time come): its next attempt is pushed
    /// `hold` ahead, so no other node makes the attempt meanwhile; a node
    /// that dies mid-attempt leaves it to be claimed again after `hold`.
    pub async fn claim_callback(&self, hold: Duration) -> Result<Option<Job>, QueueError> {
        let sql = concat!(
            "UPDATE jobs SET callback_due = now() + make_interval(secs => $1) \
             WHERE id = (SELECT id FROM jobs \
                 WHERE callback IS NOT NULL AND status IN ('completed', 'failed') \
                   AND NOT coalesce((callback->>'done')::boolean, false) \
                   AND coalesce(callback_due, '-infinity') <= now() \
                 ORDER BY callback_due NULLS FIRST, finished_at \
                 LIMIT 1 FOR UPDATE SKIP LOCKED) \
             RETURNING ",
            job_columns!()
        );
        let row = sqlx::query(sql)
            .bind(hold.as_secs_f64())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(Job::from_row).transpose()
    }

    /// Records a callback attempt: the job's new callback record, and when
    /// the next attempt may be made (None: no more).
    pub async fn record_callback(
        &self,
        id: Uuid,
        callback: &serde_json::Value,
        next_in: Option<Duration>,
    ) -> Result<bool, QueueError> {
        let done = sqlx::query(
            "UPDATE jobs SET callback = $2, \
                 callback_due = CASE WHEN $3::float8 IS NULL THEN NULL \
                                     ELSE now() + make_interval(secs => $3) END \
             WHERE id = $1",
        )
        .bind(id)
        .bind(callback)
        .bind(next_in.map(|d| d.as_secs_f64()))
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// How many jobs have each status (statuses without a job are left out).
    pub async fn count_by_status(&self) -> Result<Vec<(QueueStatus, usize)>, QueueError> {
        let rows = sqlx::query("SELECT status, count(*) AS n FROM jobs GROUP BY status")
            .fetch_all(&self.pool)
            .await?;
        let mut counts = Vec::with_capacity(rows.len());
        for row in rows {
            let status: String = row.try_get("status")?;
            let n: i64 = row.try_get("n")?;
            if let Some(status) = QueueStatus::parse(&status) {
                counts.push((status, usize::try_from(n).unwrap_or(0)));
            }
        }
        Ok(counts)
    }

    pub async fn stats(&self) -> Result<QueueStats, QueueError> {
        let row = sqlx::query(
            "SELECT count(*) FILTER (WHERE status = 'queued') AS queued, \
                    count(*) FILTER (WHERE status = 'processing') AS processing \
             FROM jobs WHERE status IN ('queued', 'processing')",
        )
        .fetch_one(&self.pool)
        .await?;
        let workers = sqlx::query(
            "SELECT id, role, seen_at FROM workers \
             WHERE seen_at > now() - make_interval(secs => $1) ORDER BY id",
        )
        .bind(self.opts.worker_window.as_secs_f64())
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|w| {
            Ok(WorkerSeen {
                id: w.try_get("id")?,
                role: w.try_get("role")?,
                seen_at: w.try_get("seen_at")?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
        Ok(QueueStats {
            queued: row.try_get("queued")?,
            processing: row.try_get("processing")?,
            workers,
        })
    }

    /// What a worker waits on: jobs queued and cancels requested.
    pub async fn listen(&self) -> Result<Notifications, QueueError> {
        self.listen_to(&[CHANNEL_QUEUED, CHANNEL_CANCEL]).await
    }

    /// What an API node following jobs live waits on: any change of status,
    /// progress or step.
    pub async fn listen_updates(&self) -> Result<Notifications, QueueError> {
        self.listen_to(&[CHANNEL_UPDATED]).await
    }

    async fn listen_to(&self, channels: &[&str]) -> Result<Notifications, QueueError> {
        // A pool of its own: the listener keeps its connection for good (and
        // reopens it when lost), which must not starve the shared pool.
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.opts.connect_timeout)
            .max_lifetime(None)
            .idle_timeout(None)
            .connect_lazy_with(self.connect.clone());
        let mut listener = PgListener::connect_with(&pool).await?;
        listener.listen_all(channels.iter().copied()).await?;
        Ok(Notifications { listener })
    }

    /// Closes the pool's connections (waiting for those in use).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    fn max_attempts(&self) -> i32 {
        i32::try_from(self.opts.max_attempts).unwrap_or(i32::MAX)
    }
}

/// Notifications on the channels a listener asked for.
pub struct Notifications {
    listener: PgListener,
}

impl Notifications {
    /// The next notification. `None` when the connection was lost (and is
    /// reopened on the next call): notifications may have been missed, so
    /// poll the queue before waiting again.
    pub async fn recv(&mut self) -> Result<Option<Notice>, QueueError> {
        loop {
            let Some(n) = self.listener.try_recv().await? else {
                return Ok(None);
            };
            let Ok(id) = Uuid::parse_str(n.payload()) else {
                tracing::warn!(
                    channel = n.channel(),
                    payload = n.payload(),
                    "notification without a job id ignored"
                );
                continue;
            };
            match n.channel() {
                CHANNEL_QUEUED => return Ok(Some(Notice::Queued(id))),
                CHANNEL_CANCEL => return Ok(Some(Notice::CancelRequested(id))),
                CHANNEL_UPDATED => return Ok(Some(Notice::Updated(id))),
                other => tracing::warn!(
                    channel = other,
                    "notification on an unknown channel ignored"
                ),
            }
        }
    }
}

/// The URL with its password hidden, for errors and logs.
fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "(an invalid URL)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redact_hides_the_password_only() {
        assert_eq!(
            redact("postgres://colloquy:s3cret@db:5432/jobs"),
            "postgres://colloquy:***@db:5432/jobs"
        );
        assert_eq!(redact("postgres://db/jobs"), "postgres://db/jobs");
        assert_eq!(redact("not a url"), "(an invalid URL)");
    }

    #[test]
    fn status_names_round_trip() {
        for s in [
            QueueStatus::Queued,
            QueueStatus::Processing,
            QueueStatus::Completed,
            QueueStatus::Failed,
            QueueStatus::Cancelled,
        ] {
            assert_eq!(QueueStatus::parse(s.as_str()), Some(s));
            assert_eq!(
                serde_json::to_value(s).ok(),
                Some(serde_json::json!(s.as_str()))
            );
        }
        assert_eq!(QueueStatus::parse("done"), None);
    }
}
