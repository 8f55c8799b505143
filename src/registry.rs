//! The job registry: an actor that owns every job's state, persisted in sled.
//!
//! The role of the registry is to be the single source of truth about jobs
//! and to decide which of them run. This includes the following steps:
//! - creating a job for each upload (status `queued`, persisted and flushed
//!   before the upload is answered, so an acknowledged job is never lost);
//! - admitting queued jobs into the pipeline in upload order, at most
//!   `pipeline.max_active_jobs` at once; the others wait in the persistent
//!   queue, and past `server.max_queued_jobs` waiting jobs uploads get 429;
//! - recording progress, duration and failures reported by the stages;
//! - storing a finished job's result in `results/{id}.json` and removing its
//!   audio from `temp/{id}/` when the job ends (completed or failed);
//! - cancelling and deleting jobs (DELETE);
//! - on start, re-queueing jobs that were queued or processing when the
//!   previous process stopped (they start again from the beginning) and
//!   removing temp folders no live job owns;
//! - publishing each job's updates and partial segments to the clients that
//!   follow it live ([`feed`]), and estimating the seconds it has left
//!   ([`eta`]);
//! - calling back the `callback_url` of a job that ended, with retries
//!   ([`crate::callback`] makes each request, off the actor's thread).

mod callbacks;
pub use callbacks::callback_body;
pub mod eta;
pub mod feed;
mod speakers;
pub use speakers::{ChangeSpeakers, JobVoices, SpeakerChange};
mod types;
pub use types::*;

use std::collections::{HashMap, VecDeque};
use std::path::Path;

use actix::prelude::*;
use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use crate::actors::aligner::{Aligner, JobOutput};
use crate::actors::decoder::Decoder;
use crate::actors::diarizer::Diarizer;
use crate::actors::preprocessor::Preprocessor;
use crate::actors::stage::StageWork;
use crate::actors::transcriber::Transcriber;
use crate::actors::{ActorExitStatus, CancelToken, JobCtx, JobError, JobEvent, JobMsg};
use crate::callback::{self, Callback};
use crate::result::PerformanceMetrics;

/// The pipeline's stages as the estimates see them (`actors/mod.rs`).
const SHAPE: eta::Shape = eta::Shape {
    in_turn: &[Decoder::NAME, Preprocessor::NAME, Aligner::NAME],
    side_by_side: &[Transcriber::NAME, Diarizer::NAME],
};

/// Callbacks being delivered at once; more wait their turn.
const MAX_DELIVERIES: usize = 16;

/// Counts for `GET /health`.
#[derive(Debug, Clone, Serialize)]
pub struct RegistryStats {
    /// Jobs in the pipeline now.
    pub active_jobs: usize,
    /// Jobs waiting to be admitted (the queue depth).
    pub queued_jobs: usize,
    pub max_active_jobs: usize,
}

pub struct JobRegistry {
    db: sled::Db,
    jobs: sled::Tree,
    /// Every job's [`Summary`], as stored (admission and the counts read
    /// it instead of every record).
    index: std::cell::RefCell<HashMap<Uuid, Summary>>,
    storage: Storage,
    max_active: usize,
    max_queued: usize,
    /// The pipeline's first stage; None until `Attach`.
    entry: Option<Recipient<JobMsg<()>>>,
    /// Jobs in the pipeline, with their cancel tokens. A slot is freed only
    /// when the pipeline reports the job back (done, failed or dropped), so
    /// a cancelled job still counts until the stage holding it lets go.
    active: HashMap<Uuid, CancelToken>,
    /// Queued job ids, oldest first (mirror of the `queued` records).
    queue: VecDeque<Uuid>,
    /// Who waits for a job to end (`WatchJob`): told once, with the final record.
    watchers: HashMap<Uuid, Vec<tokio::sync::oneshot::Sender<Option<Job>>>>,
    /// Live updates for `GET /api/jobs/{id}/events`.
    feeds: feed::Feeds,
    /// Seconds of work per second of audio, per stage (kept in `speeds_tree`).
    speeds: eta::Speeds,
    speeds_tree: sled::Tree,
    callbacks: callback::Policy,
    /// Callbacks being delivered now.
    deliveries: usize,
    /// Job outcomes, durations and callbacks for `GET /metrics`.
    metrics: std::sync::Arc<crate::metrics::Metrics>,
}

impl JobRegistry {
    /// Opens (or creates) the database under `storage`.
    pub fn open(
        storage: Storage,
        max_active: usize,
        max_queued: usize,
    ) -> Result<JobRegistry, RegistryError> {
        storage.create_dirs()?;
        let db = sled::open(storage.database())?;
        let jobs = db.open_tree("jobs")?;
        let mut index = HashMap::new();
        for kv in jobs.iter() {
            let (_, v) = kv?;
            let job: Job = serde_json::from_slice(&v)?;
            index.insert(job.job_id, Summary::from(&job));
        }
        let speeds_tree = db.open_tree("stage_speeds")?;
        let speeds = match speeds_tree.get("speeds")? {
            Some(v) => serde_json::from_slice(&v).unwrap_or_default(),
            None => eta::Speeds::default(),
        };
        Ok(JobRegistry {
            db,
            jobs,
            index: std::cell::RefCell::new(index),
            storage,
            max_active,
            max_queued,
            entry: None,
            active: HashMap::new(),
            queue: VecDeque::new(),
            watchers: HashMap::new(),
            feeds: feed::Feeds::default(),
            speeds,
            speeds_tree,
            callbacks: callback::Policy::default(),
            deliveries: 0,
            metrics: Default::default(),
        })
    }

    /// How callbacks are made (default: [`callback::Policy::default`]).
    pub fn with_callbacks(mut self, policy: callback::Policy) -> JobRegistry {
        self.callbacks = policy;
        self
    }

    /// Where job outcomes are counted (shared with the API's `/metrics`).
    pub fn with_metrics(mut self, metrics: std::sync::Arc<crate::metrics::Metrics>) -> JobRegistry {
        self.metrics = metrics;
        self
    }

    /// The job as answers show it: with its estimated seconds left.
    fn view(&self, mut job: Job) -> Job {
        job.eta_seconds = None;
        if job.status != JobStatus::Processing {
            return job;
        }
        let (Some(duration), Some(started)) = (job.duration, job.started_at) else {
            return job;
        };
        if let Some(expected) = self.speeds.expected(&SHAPE, duration) {
            let elapsed = (Utc::now() - started).num_milliseconds().max(0) as f64 / 1000.0;
            let left = eta::remaining(expected, elapsed, job.progress);
            job.eta_seconds = Some((left * 10.0).round() / 10.0);
        }
        job
    }

    /// The database, shared with the key store ([`crate::auth::KeyStore`]).
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    fn load(&self, id: Uuid) -> Result<Option<Job>, RegistryError> {
        match self.jobs.get(id.as_bytes())? {
            Some(v) => Ok(Some(serde_json::from_slice(&v)?)),
            None => Ok(None),
        }
    }

    fn store(&self, job: &Job) -> Result<(), RegistryError> {
        self.jobs
            .insert(job.job_id.as_bytes(), serde_json::to_vec(job)?)?;
        self.index
            .borrow_mut()
            .insert(job.job_id, Summary::from(job));
        Ok(())
    }

    fn all(&self) -> Result<Vec<Job>, RegistryError> {
        let mut jobs = Vec::new();
        for kv in self.jobs.iter() {
            let (_, v) = kv?;
            jobs.push(serde_json::from_slice::<Job>(&v)?);
        }
        jobs.sort_by(|a, b| {
            a.created_at
                .cmp(&b.created_at)
                .then(a.job_id.cmp(&b.job_id))
        });
        Ok(jobs)
    }

    /// Applies `f` to a stored job (if it still exists) and stores it.
    fn update(&self, id: Uuid, f: impl FnOnce(&mut Job)) -> Result<Option<Job>, RegistryError> {
        let Some(mut job) = self.load(id)? else {
            return Ok(None);
        };
        f(&mut job);
        job.updated_at = Utc::now();
        self.store(&job)?;
        self.feeds.status(job.job_id, || self.view(job.clone()));
        Ok(Some(job))
    }

    fn flush(&self) {
        if let Err(e) = self.db.flush() {
            tracing::error!(error = %e, "job database flush failed");
        }
    }

    /// Tells the watchers of job `id` that it ended (with its record, None once deleted).
    fn notify(&mut self, id: Uuid) {
        let job = self.load(id).ok().flatten();
        self.feeds.end(id, job.as_ref());
        if let Some(watchers) = self.watchers.remove(&id) {
            for w in watchers {
                let _ = w.send(job.clone());
            }
        }
    }

    fn remove_temp(&self, id: Uuid) {
        remove_dir(&self.storage.temp_dir(id));
    }

    /// Re-queues jobs left queued or processing by the previous process and
    /// removes temp folders that belong to no live job. Returns how many
    /// were re-queued, and the ended jobs whose callbacks are not done.
    fn recover(&mut self) -> Result<(usize, Vec<Uuid>), RegistryError> {
        let mut recovered = 0;
        let mut pending_callbacks = Vec::new();
        let mut live = Vec::new();
        for job in self.all()? {
            match job.status {
                JobStatus::Queued | JobStatus::Processing => {
                    let was = job.status;
                    self.update(job.job_id, |j| {
                        j.status = JobStatus::Queued;
                        j.progress = 0;
                        j.step = "Queued (recovered after a restart)".into();
                    })?;
                    tracing::info!(job_id = %job.job_id, previous = ?was, "job re-queued after restart");
                    self.queue.push_back(job.job_id);
                    live.push(job.job_id.to_string());
                    recovered += 1;
                }
                _ if job.callback.as_ref().is_some_and(|c| !c.done) => {
                    pending_callbacks.push(job.job_id);
                }
                _ => {}
            }
        }
        if let Ok(dir) = std::fs::read_dir(self.storage.temp_root()) {
            for entry in dir.flatten() {
                if !live.contains(&entry.file_name().to_string_lossy().to_string()) {
                    tracing::info!(path = %entry.path().display(), "removing orphaned temp folder");
                    remove_dir(&entry.path());
                }
            }
        }
        self.flush();
        Ok((recovered, pending_callbacks))
    }

    /// Admits queued jobs while there is room in the pipeline.
    fn admit(&mut self, ctx: &mut Context<Self>) {
        let Some(entry) = self.entry.clone() else {
            return;
        };
        while self.active.len() < self.max_active {
            let Some(id) = self.queue.pop_front() else {
                break;
            };
            self.feeds.open(id);
            let job = match self.update(id, |j| {
                j.status = JobStatus::Processing;
                j.progress = 0;
                j.step = "Starting".into();
                j.started_at = Some(Utc::now());
                j.attempts += 1;
            }) {
                Ok(Some(job)) => job,
                Ok(None) => continue, // deleted meanwhile
                Err(e) => {
                    tracing::error!(job_id = %id, error = %e, "cannot admit job");
                    continue;
                }
            };
            let cancel = CancelToken::default();
            self.active.insert(id, cancel.clone());
            let audio = self.storage.temp_dir(id).join(&job.audio_file);
            let mut jctx = JobCtx::new(id, audio, job.options.clone(), cancel);
            jctx.owner = job.owner.clone();
            tracing::info!(job_id = %id, attempt = job.attempts, active = self.active.len(), "job admitted");
            // at most max_active sends are ever outstanding here
            ctx.spawn(
                entry
                    .send(JobMsg {
                        ctx: jctx,
                        payload: (),
                    })
                    .into_actor(self)
                    .map(move |res, act, ctx| {
                        let status = match res {
                            Ok(Ok(())) => return,
                            Ok(Err(status)) => status,
                            Err(e) => ActorExitStatus::from(e),
                        };
                        tracing::error!(job_id = %id, %status, "pipeline refused the job");
                        act.end_failed(
                            id,
                            JobError::internal(format!("the pipeline is not running ({status})")),
                            ctx,
                        );
                    }),
            );
        }
    }

    /// Refuses an upload when the queue is full, or when `owner` (with a
    /// quota) has too many jobs waiting or would keep too many bytes.
    fn admissible(
        &self,
        owner: Option<&str>,
        quota: Option<Quota>,
        incoming: u64,
    ) -> Result<(), RegistryError> {
        if self.queue.len() >= self.max_queued {
            return Err(RegistryError::QueueFull {
                waiting: self.queue.len(),
            });
        }
        let (Some(owner), Some(quota)) = (owner, quota) else {
            return Ok(());
        };
        let index = self.index.borrow();
        let mine = index
            .values()
            .filter(|j| j.owner.as_deref() == Some(owner))
            .cloned();
        check_quota(mine, quota, incoming)
    }

    fn end_failed(&mut self, id: Uuid, error: JobError, ctx: &mut Context<Self>) {
        let _ = self.update(id, |j| {
            j.status = JobStatus::Failed;
            j.step = "Failed".into();
            j.error = Some(error.message);
            j.error_kind = Some(error.kind);
            j.finished_at = Some(Utc::now());
        });
        self.remove_temp(id);
        self.flush();
        self.notify(id);
        self.metrics.finished("failed");
        self.active.remove(&id);
        self.call_back(id, ctx);
        self.admit(ctx);
    }

    fn finish(&mut self, ctx: JobCtx, output: JobOutput) -> Result<(), RegistryError> {
        let id = ctx.id;
        let Some(job) = self.load(id)? else {
            return Ok(());
        };
        let total: f64 = ctx.admitted_at.elapsed().as_secs_f64();
        let mut result = output.result;
        let duration = result.duration;
        result.performance_metrics = Some(PerformanceMetrics {
            total_duration: total,
            stages: ctx
                .timings
                .iter()
                .map(|(name, s)| (name.to_string(), *s))
                .collect(),
            queued_seconds: job
                .started_at
                .map(|s| (s - job.created_at).num_milliseconds() as f64 / 1000.0),
            speed: if total > 0.0 { duration / total } else { 0.0 },
        });
        self.speeds.learn(&ctx.timings, duration);
        if let Ok(v) = serde_json::to_vec(&self.speeds) {
            if let Err(e) = self.speeds_tree.insert("speeds", v) {
                tracing::warn!(error = %e, "cannot keep the stages' speeds");
            }
        }
        let path = self.storage.result_path(id);
        let tmp = path.with_extension("json.tmp");
        let body = serde_json::to_vec_pretty(&result)?;
        let voices = self.storage.voices_path(id);
        std::fs::write(
            voices.with_extension("json.tmp"),
            serde_json::to_vec(&output.voices)?,
        )?;
        std::fs::rename(voices.with_extension("json.tmp"), &voices)?;
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, &path)?;
        self.update(id, |j| {
            j.result_bytes = Some(body.len() as u64);
            j.status = JobStatus::Completed;
            j.progress = 100;
            j.step = "Complete".into();
            j.duration = Some(duration);
            j.finished_at = Some(Utc::now());
        })?;
        self.flush();
        self.remove_temp(id);
        self.notify(id);
        self.metrics.completed(total, duration);
        tracing::info!(job_id = %id, seconds = total, "job completed");
        tracing::info!(job_id = %id, "removed temp files");
        Ok(())
    }
}

fn remove_dir(path: &Path) {
    match std::fs::remove_dir_all(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove folder"),
    }
}

impl Actor for JobRegistry {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // stages report a few events per job, and jobs in flight are capped
        ctx.set_mailbox_capacity(64);
    }
}

/// Connects the pipeline; recovers interrupted jobs and starts admitting.
#[derive(Message)]
#[rtype(result = "Result<usize, RegistryError>")]
pub struct Attach(pub Recipient<JobMsg<()>>);

impl Handler<Attach> for JobRegistry {
    type Result = Result<usize, RegistryError>;
    fn handle(&mut self, msg: Attach, ctx: &mut Context<Self>) -> Self::Result {
        self.entry = Some(msg.0);
        let (n, pending_callbacks) = self.recover()?;
        for id in pending_callbacks {
            self.call_back(id, ctx);
        }
        self.admit(ctx);
        Ok(n)
    }
}

/// Would an upload of this key be taken now? Asked before the body is
/// read, so a full queue or a key over its quota costs the client nothing.
#[derive(Message)]
#[rtype(result = "Result<(), RegistryError>")]
pub struct Admission {
    pub owner: Option<String>,
    pub quota: Option<Quota>,
}

impl Handler<Admission> for JobRegistry {
    type Result = Result<(), RegistryError>;
    fn handle(&mut self, msg: Admission, _: &mut Context<Self>) -> Self::Result {
        self.admissible(msg.owner.as_deref(), msg.quota, 0)
    }
}

/// A new upload, already on disk in `temp/{id}/{audio_file}`.
#[derive(Message)]
#[rtype(result = "Result<Job, RegistryError>")]
pub struct CreateJob {
    pub id: Uuid,
    pub filename: String,
    pub audio_file: String,
    pub options: JobOptions,
    /// The key that uploads it (None without keys).
    pub owner: Option<String>,
    /// Its limits, checked again now that the size is known.
    pub quota: Option<Quota>,
    pub bytes: u64,
    /// Where to POST the final record when the job ends (already checked).
    pub callback_url: Option<String>,
}

impl Handler<CreateJob> for JobRegistry {
    type Result = Result<Job, RegistryError>;
    fn handle(&mut self, msg: CreateJob, ctx: &mut Context<Self>) -> Self::Result {
        self.admissible(msg.owner.as_deref(), msg.quota, msg.bytes)?;
        let now = Utc::now();
        let job = Job {
            job_id: msg.id,
            status: JobStatus::Queued,
            progress: 0,
            step: "Queued".into(),
            error: None,
            error_kind: None,
            owner: msg.owner,
            bytes: msg.bytes,
            result_bytes: None,
            filename: msg.filename,
            audio_file: msg.audio_file,
            options: msg.options,
            duration: None,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            attempts: 0,
            eta_seconds: None,
            callback: msg.callback_url.map(|url| Callback {
                url,
                ..Callback::default()
            }),
        };
        self.store(&job)?;
        self.db.flush()?;
        tracing::info!(job_id = %job.job_id, filename = %job.filename, "job queued");
        self.queue.push_back(job.job_id);
        self.admit(ctx);
        Ok(job)
    }
}

#[derive(Message)]
#[rtype(result = "Result<Option<Job>, RegistryError>")]
pub struct GetJob(pub Uuid);

impl Handler<GetJob> for JobRegistry {
    type Result = Result<Option<Job>, RegistryError>;
    fn handle(&mut self, msg: GetJob, _: &mut Context<Self>) -> Self::Result {
        Ok(self.load(msg.0)?.map(|job| self.view(job)))
    }
}

/// Every job, oldest first; `Some(owner)`: only that key's.
#[derive(Message)]
#[rtype(result = "Result<Vec<Job>, RegistryError>")]
pub struct ListJobs(pub Option<String>);

impl Handler<ListJobs> for JobRegistry {
    type Result = Result<Vec<Job>, RegistryError>;
    fn handle(&mut self, msg: ListJobs, _: &mut Context<Self>) -> Self::Result {
        let mut jobs = self.all()?;
        if let Some(owner) = msg.0 {
            jobs.retain(|j| j.owner.as_deref() == Some(owner.as_str()));
        }
        Ok(jobs.into_iter().map(|job| self.view(job)).collect())
    }
}

/// Cancels the job if it runs, removes its record and files. Replies with
/// the job as it was (status `cancelled` if it was running or queued).
#[derive(Message)]
#[rtype(result = "Result<Option<Job>, RegistryError>")]
pub struct DeleteJob(pub Uuid);

impl Handler<DeleteJob> for JobRegistry {
    type Result = Result<Option<Job>, RegistryError>;
    fn handle(&mut self, msg: DeleteJob, _: &mut Context<Self>) -> Self::Result {
        let id = msg.0;
        let Some(mut job) = self.load(id)? else {
            return Ok(None);
        };
        if let Some(cancel) = self.active.get(&id) {
            cancel.cancel();
        }
        self.queue.retain(|q| *q != id);
        self.jobs.remove(id.as_bytes())?;
        self.index.borrow_mut().remove(&id);
        self.db.flush()?;
        self.remove_temp(id);
        for file in [self.storage.result_path(id), self.storage.voices_path(id)] {
            match std::fs::remove_file(file) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.into()),
            }
        }
        if !job.status.is_finished() {
            job.status = JobStatus::Cancelled;
            job.step = "Cancelled".into();
            self.metrics.finished("cancelled");
        }
        tracing::info!(job_id = %id, status = ?job.status, "job deleted");
        self.notify(id);
        Ok(Some(job))
    }
}

/// Waits for a job to end: the receiver gets its final record (completed,
/// failed), or None when the job is deleted or unknown. Nothing polls.
#[derive(Message)]
#[rtype(result = "tokio::sync::oneshot::Receiver<Option<Job>>")]
pub struct WatchJob(pub Uuid);

impl Handler<WatchJob> for JobRegistry {
    type Result = MessageResult<WatchJob>;
    fn handle(&mut self, msg: WatchJob, _: &mut Context<Self>) -> Self::Result {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.load(msg.0) {
            Ok(Some(job)) if !job.status.is_finished() => {
                self.watchers.entry(msg.0).or_default().push(tx)
            }
            Ok(job) => {
                let _ = tx.send(job);
            }
            Err(e) => {
                tracing::error!(job_id = %msg.0, error = %e, "cannot read job");
                let _ = tx.send(None);
            }
        }
        MessageResult(rx)
    }
}

/// Follows a job live: its record now (with its estimate) and, unless it
/// has ended, its partial segments so far and a receiver of every later
/// update. None: no such job.
#[derive(Message)]
#[rtype(result = "Result<Option<(Job, Option<feed::Subscription>)>, RegistryError>")]
pub struct Subscribe(pub Uuid);

impl Handler<Subscribe> for JobRegistry {
    type Result = MessageResult<Subscribe>;
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.load(msg.0).map(|found| {
            found.map(|job| {
                let live = (!job.status.is_finished()).then(|| self.feeds.subscribe(msg.0));
                (self.view(job), live)
            })
        }))
    }
}

/// How many jobs the registry holds, by status (`GET /metrics`; from the
/// in-memory summaries, not the records).
#[derive(Message)]
#[rtype(result = "Result<std::collections::BTreeMap<String, usize>, RegistryError>")]
pub struct CountJobs;

impl Handler<CountJobs> for JobRegistry {
    type Result = Result<std::collections::BTreeMap<String, usize>, RegistryError>;
    fn handle(&mut self, _: CountJobs, _: &mut Context<Self>) -> Self::Result {
        let mut counts = zero_counts();
        for job in self.index.borrow().values() {
            *counts.entry(job.status.as_str().to_string()).or_default() += 1;
        }
        Ok(counts)
    }
}

#[derive(Message)]
#[rtype(result = "RegistryStats")]
pub struct Stats;

impl Handler<Stats> for JobRegistry {
    type Result = MessageResult<Stats>;
    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(RegistryStats {
            active_jobs: self.active.len(),
            queued_jobs: self.queue.len(),
            max_active_jobs: self.max_active,
        })
    }
}

impl Handler<JobEvent> for JobRegistry {
    type Result = ();
    fn handle(&mut self, event: JobEvent, ctx: &mut Context<Self>) {
        match event {
            JobEvent::Progress { id, progress, step } => {
                if self.active.get(&id).is_some_and(|c| !c.is_cancelled()) {
                    tracing::info!(job_id = %id, progress, step, "progress");
                    // never backwards within an attempt (the branches report in any order)
                    let _ = self.update(id, |j| {
                        j.progress = j.progress.max(progress);
                        j.step = step.to_string();
                    });
                }
            }
            JobEvent::Duration { id, seconds } => {
                let _ = self.update(id, |j| j.duration = Some(seconds));
            }
            JobEvent::Segments { id, segments } => {
                if !self.active.get(&id).is_some_and(|c| !c.is_cancelled()) {
                    return;
                }
                // transcription runs from 25% to 75%, as far as it has decoded
                if let Some(end) = self.feeds.segments(id, segments) {
                    let _ = self.update(id, |j| {
                        if let Some(d) = j.duration.filter(|d| *d > 0.0) {
                            let at = 25.0 + 50.0 * (end / d).clamp(0.0, 1.0);
                            j.progress = j.progress.max((at as u8).min(74));
                        }
                    });
                }
            }
            JobEvent::Failed { id, stage, error } => {
                tracing::warn!(job_id = %id, stage, error = %error.message, kind = ?error.kind, "job failed");
                self.end_failed(id, error, ctx);
            }
            JobEvent::Dropped { id, stage } => {
                tracing::info!(job_id = %id, stage, "cancelled job left the pipeline");
                self.remove_temp(id);
                self.active.remove(&id);
                self.admit(ctx);
            }
        }
    }
}

/// The pipeline's sink: a finished job's result.
impl Handler<JobMsg<JobOutput>> for JobRegistry {
    type Result = Result<(), ActorExitStatus>;
    fn handle(&mut self, mut msg: JobMsg<JobOutput>, ctx: &mut Context<Self>) -> Self::Result {
        msg.ctx.taken();
        let id = msg.ctx.id;
        let cancelled = self.active.get(&id).is_none_or(|c| c.is_cancelled());
        if cancelled {
            self.remove_temp(id);
        } else if let Err(e) = self.finish(msg.ctx, msg.payload) {
            tracing::error!(job_id = %id, error = %e, "cannot store the result");
            self.end_failed(
                id,
                JobError::internal(format!("cannot store the result: {e}")),
                ctx,
            );
            return Ok(());
        }
        self.active.remove(&id);
        if !cancelled {
            self.call_back(id, ctx);
        }
        self.admit(ctx);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A pipeline entry that only records the jobs it is given.
    struct Entry(Arc<Mutex<Vec<Uuid>>>);

    impl Actor for Entry {
        type Context = Context<Self>;
    }

    impl Handler<JobMsg<()>> for Entry {
        type Result = Result<(), ActorExitStatus>;
        fn handle(&mut self, msg: JobMsg<()>, _: &mut Context<Self>) -> Self::Result {
            self.0.lock().unwrap().push(msg.ctx.id);
            Ok(())
        }
    }

    /// The registry at `storage` opened again in this process: sled's
    /// flusher thread may hold the dropped database's file lock for a
    /// moment, so this waits for it (a restarted process finds the lock
    /// gone with the old one).
    fn reopen(storage: &Storage) -> JobRegistry {
        let mut tries = 0;
        loop {
            match JobRegistry::open(storage.clone(), 1, 10) {
                Ok(r) => return r,
                Err(RegistryError::Db(e))
                    if tries < 200 && e.to_string().contains("acquire lock") =>
                {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(e) => panic!("{e}"),
            }
        }
    }

    fn record(id: Uuid, status: JobStatus, minute: i64) -> Job {
        let at = chrono::DateTime::<Utc>::from_timestamp(1_700_000_000 + minute * 60, 0).unwrap();
        Job {
            job_id: id,
            status,
            progress: 50,
            step: "Analyzing speakers".into(),
            error: None,
            error_kind: None,
            owner: Some("key_1".into()),
            bytes: 10,
            result_bytes: None,
            filename: "a.wav".into(),
            audio_file: "audio.wav".into(),
            options: JobOptions::default(),
            duration: None,
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            attempts: 1,
            eta_seconds: None,
            callback: None,
        }
    }

    #[actix_rt::test]
    async fn counts_and_quotas_come_from_summaries_rebuilt_at_open() {
        let dir =
            std::env::temp_dir().join(format!("colloquy-registry-index-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let storage = Storage::new(&dir);
        {
            let before = JobRegistry::open(storage.clone(), 1, 10).unwrap();
            for (n, status) in [JobStatus::Queued, JobStatus::Completed, JobStatus::Failed]
                .into_iter()
                .enumerate()
            {
                let mut job = record(Uuid::new_v4(), status, n as i64);
                job.owner = Some("k1".into());
                job.bytes = 100;
                before.store(&job).unwrap();
            }
            before.flush();
        }
        let reopened = reopen(&storage);
        let quota = |max_queued| Quota {
            max_queued,
            max_stored_bytes: 1_000,
        };
        // k1 has one job waiting: a limit of 1 refuses, 2 admits; k2 has none
        assert!(matches!(
            reopened.admissible(Some("k1"), Some(quota(1)), 0),
            Err(RegistryError::OverQuota(_))
        ));
        assert!(reopened.admissible(Some("k1"), Some(quota(2)), 0).is_ok());
        assert!(reopened.admissible(Some("k2"), Some(quota(1)), 0).is_ok());
        let registry = reopened.start();
        let counts = registry.send(CountJobs).await.unwrap().unwrap();
        let got: Vec<(&str, usize)> = counts.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            got,
            [
                ("completed", 1),
                ("failed", 1),
                ("processing", 0),
                ("queued", 1)
            ]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[actix_rt::test]
    async fn a_restart_requeues_interrupted_jobs_in_order_and_removes_orphan_temp_folders() {
        let root =
            std::env::temp_dir().join(format!("colloquy-registry-recover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let storage = Storage::new(root.clone());
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let orphan = Uuid::new_v4();
        {
            // what a killed process left: one job processing, one queued, one done
            let before = JobRegistry::open(storage.clone(), 1, 10).unwrap();
            before.store(&record(a, JobStatus::Processing, 0)).unwrap();
            before.store(&record(b, JobStatus::Queued, 1)).unwrap();
            before.store(&record(c, JobStatus::Completed, 2)).unwrap();
            before.flush();
            for id in [a, b, orphan] {
                std::fs::create_dir_all(storage.temp_dir(id)).unwrap();
            }
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let entry = Entry(seen.clone()).start();
        let registry = reopen(&storage).start();
        let recovered = registry
            .send(Attach(entry.recipient()))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(recovered, 2);
        let stats = registry.send(Stats).await.unwrap();
        assert_eq!((stats.active_jobs, stats.queued_jobs), (1, 1));
        // the oldest first: a is admitted again (second attempt), b waits
        let job = |id| registry.send(GetJob(id));
        let ja = job(a).await.unwrap().unwrap().unwrap();
        assert_eq!((ja.status, ja.attempts), (JobStatus::Processing, 2));
        let jb = job(b).await.unwrap().unwrap().unwrap();
        assert_eq!(jb.status, JobStatus::Queued);
        assert_eq!(jb.step, "Queued (recovered after a restart)");
        assert_eq!(jb.owner.as_deref(), Some("key_1"), "the owner survives");
        assert_eq!(
            job(c).await.unwrap().unwrap().unwrap().status,
            JobStatus::Completed
        );
        // the entry is reached through a spawned send: wait for it without a clock
        while seen.lock().unwrap().is_empty() {
            actix_rt::task::yield_now().await;
        }
        assert_eq!(*seen.lock().unwrap(), vec![a]);
        assert!(storage.temp_dir(a).exists() && storage.temp_dir(b).exists());
        assert!(!storage.temp_dir(orphan).exists(), "no live job owns it");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[actix_rt::test]
    async fn watchers_are_told_when_a_job_ends_without_polling() {
        let root =
            std::env::temp_dir().join(format!("colloquy-registry-watch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let registry = JobRegistry::open(Storage::new(root.clone()), 1, 10)
            .unwrap()
            .start();
        // unknown job: told at once
        assert!(registry
            .send(WatchJob(Uuid::new_v4()))
            .await
            .unwrap()
            .await
            .unwrap()
            .is_none());
        // a queued job (no pipeline attached): the watcher waits, then hears of the delete
        let id = Uuid::new_v4();
        let created = CreateJob {
            id,
            filename: "a.wav".into(),
            audio_file: "audio.wav".into(),
            options: JobOptions::default(),
            owner: None,
            quota: None,
            bytes: 1,
            callback_url: None,
        };
        registry.send(created).await.unwrap().unwrap();
        let mut told = registry.send(WatchJob(id)).await.unwrap();
        assert!(
            told.try_recv().is_err(),
            "nothing to tell while the job waits"
        );
        registry.send(DeleteJob(id)).await.unwrap().unwrap();
        assert!(
            told.await.unwrap().is_none(),
            "a deleted job ends with no record"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }
}
