//! The worker role (issue #15): a node that takes jobs from the PostgreSQL
//! queue and runs them through its own registry and actor pipeline.
//!
//! The role of the lease loop is to keep this node's pipeline fed from the
//! shared queue, and to make the shared queue the only truth about a job.
//! This includes the following steps:
//! - leasing a job when a slot is free (at most `max_jobs` at once), woken
//!   by the queue's notifications, polling as a fallback;
//! - streaming its audio (and any reference clips) down from the blob store
//!   into the local registry's temp folder, and running it there as a local
//!   job with the same id (the pipeline, its limits and its typed failures
//!   are the single-node ones);
//! - carrying the local job's progress, step, length, estimate and partial
//!   segments to the queue as its feed publishes them (API nodes read them
//!   there);
//! - renewing the lease every third of its lifetime, and at once when the
//!   queue notifies a cancel of the job; a requested cancel deletes the local job
//!   and ends the shared one `cancelled`; a lost lease (another worker took
//!   the job after this one stalled) drops the local job and writes nothing;
//! - when the local job ends: its result up to the blob store under a key
//!   of this lease alone (`results/{id}/{lease}.json`), then `finish`, which
//!   counts once: a worker that lost its lease meanwhile deletes its blob.
//!   The local job is removed either way.
//!
//! A killed worker renews nothing: its leases expire and other workers take
//! the jobs over from the beginning. A worker stopped on purpose
//! ([`Worker::run_until`]) hands its jobs back at once (`release`), so
//! another worker starts them without waiting for the leases to lapse.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use actix::Addr;
use uuid::Uuid;

use crate::actors::FailureKind;

use tokio::sync::broadcast::error::RecvError;

use crate::registry::feed::Update;
use crate::registry::{
    CreateJob, DeleteJob, JobOptions, JobRegistry, JobStatus, Storage, Subscribe, WatchJob,
};
use crate::result::PartialSegment;
use crate::store::blobs::{upload_key, BlobError, BlobStore};
use crate::store::queue::{JobQueue, Lease, LeaseState, Notice, Outcome, QueueError};
use tokio::sync::broadcast;

/// How a worker node leases.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// This node's name in leases and heartbeats (unique among the workers).
    pub id: String,
    /// A lease's lifetime: a job whose worker stopped renewing goes back to
    /// the queue this long after its last renewal.
    pub lease: Duration,
    /// Jobs held at once (the local pipeline's `max_active_jobs`).
    pub max_jobs: usize,
    /// How often the queue is asked when no notification came.
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    #[error("local registry: {0}")]
    Registry(String),
    #[error("local storage: {0}")]
    Io(#[from] std::io::Error),
}

/// The key of a result written under `lease` (one per lease, so a late
/// worker's result never overwrites the one that counted).
pub fn lease_result_key(lease: &Lease) -> String {
    format!("results/{}/{}.json", lease.job.id, lease.token)
}

/// The lease loop of one worker node; `registry` is this node's own (with
/// its pipeline attached), `storage` its local folders.
pub struct Worker {
    pub queue: JobQueue,
    pub blobs: BlobStore,
    pub registry: Addr<JobRegistry>,
    pub storage: Storage,
    pub opts: WorkerOptions,
}

/// The worker's one listener on the queue: a queued job wakes the lease
/// loop (`queued`), a cancel is told to the job it names (`cancels`).
/// Whenever it starts listening (again, after a lost connection)
/// notifications may have been missed, so it wakes the lease loop to poll.
async fn listen(
    queue: JobQueue,
    queued: Rc<tokio::sync::Notify>,
    cancels: broadcast::Sender<Uuid>,
    poll: Duration,
) {
    loop {
        if let Ok(mut notices) = queue.listen().await {
            queued.notify_one();
            while let Ok(Some(notice)) = notices.recv().await {
                match notice {
                    Notice::Queued(_) => queued.notify_one(),
                    Notice::CancelRequested(id) => {
                        let _ = cancels.send(id);
                    }
                    Notice::Updated(_) => {}
                }
            }
        }
        tokio::time::sleep(poll).await;
    }
}

/// What the queue's row shows of a local job, so that only changes are written.
#[derive(Default)]
struct Shown {
    progress: Option<(u8, String)>,
    duration: Option<f64>,
    eta: Option<f64>,
}

impl Shown {
    /// Writes what changed in `job` since the last call (a lease no
    /// longer held writes nothing: the next renewal finds out).
    async fn carry(&mut self, queue: &JobQueue, lease: &Lease, job: &crate::registry::Job) {
        let progress = Some((job.progress, job.step.clone()));
        let written = async {
            if progress != self.progress {
                queue.progress(lease, job.progress, &job.step).await?;
                self.progress = progress;
            }
            if let Some(seconds) = job.duration.filter(|d| Some(*d) != self.duration) {
                queue.set_duration(lease, seconds).await?;
                self.duration = Some(seconds);
            }
            if job.eta_seconds != self.eta {
                queue.estimate(lease, job.eta_seconds).await?;
                self.eta = job.eta_seconds;
            }
            Ok::<_, QueueError>(())
        };
        if let Err(e) = written.await {
            tracing::debug!(job_id = %lease.job.id, error = %e, "progress not queued");
        }
    }
}

/// Aborts its task when dropped.
struct StopOnDrop(tokio::task::JoinHandle<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The leases this worker holds now (its job tasks add and remove them).
type Held = RefCell<HashMap<Uuid, Lease>>;

impl Worker {
    /// Leases and runs jobs until the future is dropped (or the queue fails
    /// for good); each job runs as a task of its own on the current thread
    /// (inside actix's system), owned by this future: dropping it stops every
    /// renewal, as a killed process would.
    pub async fn run(self) -> Result<(), WorkerError> {
        self.run_until(std::future::pending()).await
    }

    /// As [`run`](Self::run), until `stop` resolves: then it leases no more,
    /// stops its jobs and hands each back to the queue.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), WorkerError> {
        let me = Rc::new(self);
        let held: Rc<Held> = Rc::default();
        let mut jobs = tokio::task::JoinSet::new();
        // jobs queued wake the lease loop; cancels are told at once to the
        // job they name
        let queued = Rc::new(tokio::sync::Notify::new());
        let (cancels, _) = broadcast::channel::<Uuid>(64);
        let _listening = StopOnDrop(tokio::task::spawn_local(listen(
            me.queue.clone(),
            queued.clone(),
            cancels.clone(),
            me.opts.poll,
        )));
        let leasing = me
            .clone()
            .lease_loop(held.clone(), &mut jobs, &queued, cancels);
        let outcome = tokio::select! {
            r = leasing => r,
            _ = stop => Ok(()),
        };
        // the job tasks stop here; their leases go back to the queue
        jobs.shutdown().await;
        let leases: Vec<Lease> = held.borrow_mut().drain().map(|(_, l)| l).collect();
        for lease in leases {
            let id = lease.job.id;
            me.drop_local(id).await;
            match me.queue.release(&lease).await {
                Ok(true) => tracing::info!(job_id = %id, "handed back to the queue"),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(job_id = %id, error = %e, "not handed back: its lease will lapse")
                }
            }
        }
        outcome
    }

    async fn lease_loop(
        self: Rc<Self>,
        held: Rc<Held>,
        jobs: &mut tokio::task::JoinSet<()>,
        queued: &tokio::sync::Notify,
        cancels: broadcast::Sender<Uuid>,
    ) -> Result<(), WorkerError> {
        let me = self;
        let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(me.opts.max_jobs.max(1)));
        loop {
            while jobs.try_join_next().is_some() {}
            me.queue.heartbeat(&me.opts.id, "worker").await?;
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .map_err(|e| WorkerError::Registry(e.to_string()))?;
            match me.queue.lease(&me.opts.id, me.opts.lease).await? {
                Some(lease) => {
                    let worker = me.clone();
                    let held = held.clone();
                    let id = lease.job.id;
                    // held from now: a stop before the task first runs hands it back too
                    held.borrow_mut().insert(id, lease.clone());
                    let cancelled = cancels.subscribe();
                    jobs.spawn_local(async move {
                        if let Err(e) = worker.run_one(lease, cancelled).await {
                            tracing::error!(job_id = %id, error = %e, "job not carried through");
                        }
                        held.borrow_mut().remove(&id);
                        drop(permit);
                    });
                }
                None => {
                    drop(permit);
                    // until a job is queued (notified) or the poll interval passes
                    let _ = tokio::time::timeout(me.opts.poll, queued.notified()).await;
                }
            }
        }
    }

    /// One leased job: down, through the local pipeline, up, finished.
    async fn run_one(
        &self,
        lease: Lease,
        mut cancelled: broadcast::Receiver<Uuid>,
    ) -> Result<(), WorkerError> {
        let id = lease.job.id;
        let options: JobOptions = serde_json::from_value(lease.job.options.clone())
            .map_err(|e| WorkerError::Registry(format!("job {id}'s options: {e}")))?;
        // a job that ran here before (this worker restarted) starts again
        self.drop_local(id).await;
        let dir = self.storage.temp_dir(id);
        tokio::fs::create_dir_all(&dir).await?;
        let ext = std::path::Path::new(&lease.job.audio_key)
            .extension()
            .and_then(|e| e.to_str())
            .unwrap_or("audio")
            .to_string();
        let audio_file = format!("audio.{ext}");
        let fetched = async {
            self.blobs
                .get_to_file(&lease.job.audio_key, &dir.join(&audio_file))
                .await?;
            for r in &options.references {
                self.blobs
                    .get_to_file(&upload_key(id, &r.file), &dir.join(&r.file))
                    .await?;
            }
            Ok::<_, BlobError>(())
        }
        .await;
        if let Err(e) = fetched {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            let outcome = Outcome::Failed {
                error: format!("the job's audio could not be fetched: {e}"),
                kind: "internal".into(),
            };
            self.queue.finish(&lease, outcome).await?;
            return Err(e.into());
        }
        let created = self
            .registry
            .send(CreateJob {
                id,
                filename: lease.job.filename.clone(),
                audio_file,
                options,
                owner: lease.job.owner.clone(),
                quota: None,
                bytes: lease.job.bytes.max(0) as u64,
                callback_url: None,
            })
            .await
            .map_err(|e| WorkerError::Registry(e.to_string()))?;
        if let Err(e) = created {
            let _ = tokio::fs::remove_dir_all(&dir).await;
            return Err(WorkerError::Registry(e.to_string()));
        }
        // its progress and partial segments go up to the queue as they come,
        // while this function runs (API nodes read them there)
        let _live = self.forward_live(&lease);
        let mut ended = self
            .registry
            .send(WatchJob(id))
            .await
            .map_err(|e| WorkerError::Registry(e.to_string()))?;
        let mut tick = tokio::time::interval(self.opts.lease / 3);
        tick.tick().await; // the first tick is now
        let finished = loop {
            // renew on the tick, and at once when a cancel names this job
            let renew = tokio::select! {
                job = &mut ended => break job.ok().flatten(),
                _ = tick.tick() => true,
                told = cancelled.recv() => match told {
                    Ok(got) => got == id,
                    Err(RecvError::Lagged(_)) => true,
                    Err(RecvError::Closed) => {
                        tick.tick().await;
                        true
                    }
                },
            };
            if !renew {
                continue;
            }
            match self.queue.renew(&lease).await? {
                LeaseState::Held => {}
                LeaseState::CancelRequested => {
                    self.drop_local(id).await;
                    self.queue.finish(&lease, Outcome::Cancelled).await?;
                    tracing::info!(job_id = %id, "cancelled through the queue");
                    return Ok(());
                }
                LeaseState::Lost => {
                    self.drop_local(id).await;
                    tracing::warn!(job_id = %id, "lease lost: another worker has the job");
                    return Ok(());
                }
            }
        };
        let outcome = match finished {
            Some(job) if job.status == JobStatus::Completed => {
                let body = tokio::fs::read(self.storage.result_path(id)).await?;
                let key = lease_result_key(&lease);
                let bytes = body.len() as i64;
                self.blobs.put_bytes(&key, body.into()).await?;
                Outcome::Completed {
                    result_key: key,
                    result_bytes: bytes,
                    duration: job.duration,
                }
            }
            Some(job) => Outcome::Failed {
                error: job.error.unwrap_or_else(|| "the job failed".into()),
                kind: match job.error_kind {
                    Some(FailureKind::Input) => "input".into(),
                    _ => "internal".into(),
                },
            },
            // deleted locally (this node stopping): the lease lapses and
            // another worker takes the job
            None => return Ok(()),
        };
        let result_key = match &outcome {
            Outcome::Completed { result_key, .. } => Some(result_key.clone()),
            _ => None,
        };
        let counted = self.queue.finish(&lease, outcome).await?;
        if !counted {
            tracing::warn!(job_id = %id, "result discarded: the lease was lost before it was in");
            if let Some(key) = result_key {
                self.blobs.delete(&key).await?;
            }
        }
        self.drop_local(id).await;
        Ok(())
    }

    /// A task that copies the local job's updates to the queue as its feed
    /// publishes them: progress, step, length and estimate, and the partial
    /// segments (all so far, then each as it comes); stopped when dropped.
    fn forward_live(&self, lease: &Lease) -> StopOnDrop {
        let id = lease.job.id;
        let registry = self.registry.clone();
        let queue = self.queue.clone();
        let lease = lease.clone();
        let task = tokio::task::spawn_local(async move {
            let up = |segments: &[PartialSegment]| {
                let rows: Vec<(i32, serde_json::Value)> = segments
                    .iter()
                    .filter_map(|s| {
                        Some((i32::try_from(s.id).ok()?, serde_json::to_value(s).ok()?))
                    })
                    .collect();
                let (queue, lease) = (queue.clone(), lease.clone());
                async move {
                    if rows.is_empty() {
                        return;
                    }
                    if let Err(e) = queue.add_segments(&lease, &rows).await {
                        tracing::debug!(job_id = %lease.job.id, error = %e, "partial segments not queued");
                    }
                }
            };
            let mut shown = Shown::default();
            // (re)subscribing gives the state now and every segment so far:
            // stored ones are kept as they are
            'subscribe: loop {
                let Ok(Ok(Some((job, Some(mut sub))))) = registry.send(Subscribe(id)).await else {
                    return;
                };
                shown.carry(&queue, &lease, &job).await;
                up(&sub.segments).await;
                loop {
                    match sub.updates.recv().await {
                        Ok(Update::Segments(segments)) => up(&segments).await,
                        Ok(Update::Status(job)) => shown.carry(&queue, &lease, &job).await,
                        Ok(Update::End(_)) | Err(RecvError::Closed) => return,
                        Err(RecvError::Lagged(_)) => continue 'subscribe,
                    }
                }
            }
        });
        StopOnDrop(task)
    }

    /// Removes the local job (record, audio, result), if any.
    async fn drop_local(&self, id: Uuid) {
        if let Ok(Err(e)) = self.registry.send(DeleteJob(id)).await {
            tracing::warn!(job_id = %id, error = %e, "local job not removed");
        }
    }
}
