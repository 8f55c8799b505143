//! The job store of an API node (`role = api`): job rows in the PostgreSQL
//! queue, uploads streamed into the blob store (multipart above a part's
//! size), results read from it. Workers lease the jobs; this node only
//! writes new rows, reads them, cancels and deletes.
//!
//! One listener per node follows the queue's `updated` notifications and
//! wakes whoever waits on a job (the OpenAI route, event streams); each
//! waiter also re-reads the row every [`POLL`], so a lost notification
//! only delays it.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tokio::sync::{broadcast, mpsc};
use uuid::Uuid;

use super::{no_file, unavailable, Call, JobStore, Staging};
use crate::actors::FailureKind;
use crate::registry::feed::{Subscription, Update};
use crate::registry::{
    check_quota, zero_counts, CreateJob, Job, JobOptions, JobStatus, Quota, RegistryError,
    RegistryStats,
};
use crate::result::PartialSegment;
use crate::store::blobs::{upload_key, BlobError, BlobStore};
use crate::store::queue::{self, CancelOutcome, JobQueue, NewJob, Notice, QueueStatus};

/// How often a waiter re-reads its job when no notification came.
pub const POLL: Duration = Duration::from_secs(2);

/// Rows `list` reads at most.
const LIST_LIMIT: usize = 10_000;

/// An API node's limits on what it queues.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Jobs waiting to be leased, at most (`server.max_queued_jobs`).
    pub max_queued: usize,
    /// Upload size limit (`server.max_upload_bytes`).
    pub max_bytes: u64,
}

/// The queue, the bucket, and the wake-ups of this node's waiters.
#[derive(Clone)]
pub struct ClusterJobs {
    queue: JobQueue,
    blobs: BlobStore,
    limits: Limits,
    updates: broadcast::Sender<Uuid>,
}

impl ClusterJobs {
    /// Starts the notification listener and the callback deliveries on
    /// the current actix system.
    pub fn start(
        queue: JobQueue,
        blobs: BlobStore,
        limits: Limits,
        callbacks: crate::callback::Policy,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
    ) -> Self {
        let (updates, _) = broadcast::channel(1024);
        actix::spawn(super::callbacks::deliver_forever(
            queue.clone(),
            callbacks,
            metrics,
            updates.subscribe(),
            POLL,
        ));
        let tx = updates.clone();
        let q = queue.clone();
        actix::spawn(async move {
            loop {
                match q.listen_updates().await {
                    Ok(mut n) => loop {
                        match n.recv().await {
                            Ok(Some(Notice::Updated(id))) => {
                                let _ = tx.send(id);
                            }
                            Ok(Some(_)) => {}
                            // lost: waiters poll meanwhile; listen again
                            Ok(None) | Err(_) => break,
                        }
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "queue notifications unavailable; polling")
                    }
                }
                tokio::time::sleep(POLL).await;
            }
        });
        ClusterJobs {
            queue,
            blobs,
            limits,
            updates,
        }
    }

    /// The job's next change: until its row changes (notified) or [`POLL`].
    async fn next_change(&self, id: Uuid, rx: &mut broadcast::Receiver<Uuid>) {
        let wait = async {
            loop {
                match rx.recv().await {
                    Ok(got) if got == id => return,
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout(POLL, wait).await;
    }

    /// The job's partial segments after `after`, and the last seq read.
    async fn segments_after(
        &self,
        id: Uuid,
        after: i32,
    ) -> Result<(Vec<PartialSegment>, i32), RegistryError> {
        let rows = self
            .queue
            .segments_after(id, after)
            .await
            .map_err(queue_err)?;
        let upto = rows.last().map_or(after, |(seq, _)| *seq);
        let segments = rows
            .into_iter()
            .filter_map(|(_, s)| serde_json::from_value(s).ok())
            .collect();
        Ok((segments, upto))
    }

    /// The queue's depth, then the key's quota with `incoming` more bytes.
    async fn admissible(
        &self,
        owner: Option<String>,
        quota: Option<Quota>,
        incoming: u64,
    ) -> Result<(), RegistryError> {
        let stats = self.queue.stats().await.map_err(queue_err)?;
        let waiting = usize::try_from(stats.queued).unwrap_or(usize::MAX);
        if waiting >= self.limits.max_queued {
            return Err(RegistryError::QueueFull { waiting });
        }
        let (Some(owner), Some(quota)) = (owner, quota) else {
            return Ok(());
        };
        let mine: Vec<Job> = self
            .queue
            .list(Some(&owner), LIST_LIMIT)
            .await
            .map_err(queue_err)?
            .into_iter()
            .map(job_of)
            .collect();
        check_quota(mine.iter().map(Into::into), quota, incoming)
    }

    async fn remove_blobs(&self, id: Uuid) -> Result<(), BlobError> {
        for prefix in [format!("uploads/{id}/"), format!("results/{id}/")] {
            for blob in self.blobs.list(&prefix).await? {
                self.blobs.delete(&blob.key).await?;
            }
        }
        Ok(())
    }
}

fn queue_err(e: queue::QueueError) -> RegistryError {
    unavailable("job queue", e)
}

fn blob_err(e: BlobError) -> RegistryError {
    unavailable("blob store", e)
}

/// A queue row as the API shows a job.
pub fn job_of(row: queue::Job) -> Job {
    let status = match row.status {
        QueueStatus::Queued => JobStatus::Queued,
        QueueStatus::Processing => JobStatus::Processing,
        QueueStatus::Completed => JobStatus::Completed,
        QueueStatus::Failed => JobStatus::Failed,
        QueueStatus::Cancelled => JobStatus::Cancelled,
    };
    let error_kind = row.error_kind.as_deref().map(|k| match k {
        "input" => FailureKind::Input,
        _ => FailureKind::Internal,
    });
    let audio_file = row
        .audio_key
        .rsplit('/')
        .next()
        .unwrap_or_default()
        .to_string();
    let options: JobOptions = serde_json::from_value(row.options).unwrap_or_else(|e| {
        tracing::warn!(job_id = %row.id, error = %e, "job options unreadable");
        JobOptions::default()
    });
    Job {
        job_id: row.id,
        status,
        progress: row.progress,
        step: row.step,
        error: row.error,
        error_kind,
        owner: row.owner,
        bytes: u64::try_from(row.bytes).unwrap_or(0),
        result_bytes: row.result_bytes.and_then(|b| u64::try_from(b).ok()),
        filename: row.filename,
        audio_file,
        options,
        duration: row.duration,
        created_at: row.created_at,
        updated_at: row.updated_at,
        started_at: row.started_at,
        finished_at: row.finished_at,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        eta_seconds: row.eta_seconds.filter(|_| status == JobStatus::Processing),
        callback: row.callback.and_then(|c| serde_json::from_value(c).ok()),
    }
}

impl JobStore for ClusterJobs {
    fn admit(&self, owner: Option<String>, quota: Option<Quota>) -> Call<'_, ()> {
        async move { self.admissible(owner, quota, 0).await }.boxed_local()
    }

    fn staging(&self, id: Uuid) -> Box<dyn Staging> {
        Box::new(BlobStaging {
            id,
            blobs: self.blobs.clone(),
            max_bytes: self.limits.max_bytes,
            open: None,
            written: Vec::new(),
            kept: false,
        })
    }

    fn create(&self, job: CreateJob) -> Call<'_, Job> {
        async move {
            self.admissible(job.owner.clone(), job.quota, job.bytes)
                .await?;
            let options = serde_json::to_value(&job.options)?;
            self.queue
                .enqueue(NewJob {
                    id: job.id,
                    owner: job.owner,
                    filename: job.filename,
                    audio_key: upload_key(job.id, &job.audio_file),
                    bytes: i64::try_from(job.bytes).unwrap_or(i64::MAX),
                    options,
                    callback: job
                        .callback_url
                        .map(|url| {
                            serde_json::to_value(crate::callback::Callback {
                                url,
                                ..Default::default()
                            })
                        })
                        .transpose()?,
                })
                .await
                .map_err(queue_err)?;
            let row = self.queue.get(job.id).await.map_err(queue_err)?;
            row.map(job_of)
                .ok_or_else(|| unavailable("job queue", "the new job's row is gone"))
        }
        .boxed_local()
    }

    fn get(&self, id: Uuid) -> Call<'_, Option<Job>> {
        async move { Ok(self.queue.get(id).await.map_err(queue_err)?.map(job_of)) }.boxed_local()
    }

    fn list(&self, owner: Option<String>) -> Call<'_, Vec<Job>> {
        async move {
            let rows = self
                .queue
                .list(owner.as_deref(), LIST_LIMIT)
                .await
                .map_err(queue_err)?;
            // the queue lists newest first; the API oldest first
            Ok(rows.into_iter().rev().map(job_of).collect())
        }
        .boxed_local()
    }

    fn delete(&self, id: Uuid) -> Call<'_, Option<Job>> {
        async move {
            let outcome = self.queue.cancel(id).await.map_err(queue_err)?;
            if outcome == CancelOutcome::NotFound {
                return Ok(None);
            }
            let Some(row) = self.queue.delete(id).await.map_err(queue_err)? else {
                return Ok(None);
            };
            let mut job = job_of(row);
            if !job.status.is_finished() {
                job.status = JobStatus::Cancelled;
                job.step = "Cancelled".into();
            }
            // the holder, if any, finds its lease lost and writes nothing more
            self.remove_blobs(id).await.map_err(blob_err)?;
            tracing::info!(job_id = %id, status = ?job.status, "job deleted");
            Ok(Some(job))
        }
        .boxed_local()
    }

    fn result(&self, id: Uuid) -> Call<'_, Bytes> {
        async move {
            let row = self.queue.get(id).await.map_err(queue_err)?;
            let key = row.and_then(|r| r.result_key).ok_or_else(|| {
                RegistryError::Io(std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("job {id} has no stored result"),
                ))
            })?;
            self.blobs.get_bytes(&key).await.map_err(blob_err)
        }
        .boxed_local()
    }

    fn watch(&self, id: Uuid) -> Call<'_, Option<Job>> {
        async move {
            let mut rx = self.updates.subscribe();
            loop {
                match self.queue.get(id).await.map_err(queue_err)?.map(job_of) {
                    None => return Ok(None),
                    Some(job) if job.status == JobStatus::Cancelled => return Ok(None),
                    Some(job) if job.status.is_finished() => return Ok(Some(job)),
                    Some(_) => self.next_change(id, &mut rx).await,
                }
            }
        }
        .boxed_local()
    }

    fn follow(&self, id: Uuid) -> Call<'_, Option<(Job, Option<Subscription>)>> {
        async move {
            let mut rx = self.updates.subscribe();
            let Some(job) = self.queue.get(id).await.map_err(queue_err)?.map(job_of) else {
                return Ok(None);
            };
            if job.status.is_finished() {
                return Ok(Some((job, None)));
            }
            // the partial text so far (the worker's, through the queue)
            let (segments, mut seq) = self.segments_after(id, 0).await?;
            // a task of this stream's own: each change of the row and each
            // new segment, then the end
            let (tx, updates) = broadcast::channel(64);
            let me = self.clone();
            let mut last = job.clone();
            actix::spawn(async move {
                loop {
                    me.next_change(id, &mut rx).await;
                    if tx.receiver_count() == 0 {
                        return; // the client left
                    }
                    let now = match me.queue.get(id).await {
                        Ok(row) => row.map(job_of),
                        Err(_) => continue,
                    };
                    if now.as_ref().is_some_and(|j| j.attempts != last.attempts) {
                        seq = 0; // leased again: its text starts afresh
                    }
                    if let Ok((new, upto)) = me.segments_after(id, seq).await {
                        seq = upto;
                        if !new.is_empty() {
                            let _ = tx.send(Update::Segments(new));
                        }
                    }
                    match now {
                        None => {
                            let _ = tx.send(Update::End(None));
                            return;
                        }
                        Some(job) if job.status.is_finished() => {
                            let _ = tx.send(Update::End(Some(Box::new(job))));
                            return;
                        }
                        Some(job) if job != last => {
                            last = job.clone();
                            let _ = tx.send(Update::Status(Box::new(job)));
                        }
                        Some(_) => {}
                    }
                }
            });
            Ok(Some((job, Some(Subscription { segments, updates }))))
        }
        .boxed_local()
    }

    fn counts(&self) -> Call<'_, BTreeMap<String, usize>> {
        async move {
            let mut counts = zero_counts();
            for (status, n) in self.queue.count_by_status().await.map_err(queue_err)? {
                counts.insert(status.as_str().to_string(), n);
            }
            Ok(counts)
        }
        .boxed_local()
    }

    fn stats(&self) -> Call<'_, RegistryStats> {
        async move {
            let s = self.queue.stats().await.map_err(queue_err)?;
            Ok(RegistryStats {
                active_jobs: usize::try_from(s.processing).unwrap_or(0),
                queued_jobs: usize::try_from(s.queued).unwrap_or(0),
                max_active_jobs: 0,
            })
        }
        .boxed_local()
    }
}

/// The put of one file into the bucket, fed chunk by chunk.
struct Put {
    key: String,
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    task: tokio::task::JoinHandle<Result<u64, BlobError>>,
}

/// An upload's files streamed into `uploads/{id}/`: each file is one
/// `put_stream` (multipart above a part's size) fed through a short
/// channel, so a slow bucket slows the client. Dropped without `keep`:
/// a put in flight is aborted (its multipart upload with it) and the
/// files already stored are deleted.
struct BlobStaging {
    id: Uuid,
    blobs: BlobStore,
    max_bytes: u64,
    open: Option<Put>,
    written: Vec<String>,
    kept: bool,
}

fn io_err(e: BlobError) -> std::io::Error {
    std::io::Error::other(e.to_string())
}

impl Staging for BlobStaging {
    fn create<'a>(&'a mut self, name: &'a str) -> LocalBoxFuture<'a, std::io::Result<()>> {
        async move {
            let key = upload_key(self.id, name);
            let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
            let blobs = self.blobs.clone();
            let (k, max) = (key.clone(), self.max_bytes);
            let task = tokio::task::spawn_local(async move {
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|item| (item, rx))
                });
                blobs.put_stream(&k, stream, max).await
            });
            self.written.push(key.clone());
            self.open = Some(Put { key, tx, task });
            Ok(())
        }
        .boxed_local()
    }

    fn write(&mut self, chunk: Bytes) -> LocalBoxFuture<'_, std::io::Result<()>> {
        async move {
            let put = self.open.as_mut().ok_or_else(no_file)?;
            if put.tx.send(Ok(chunk)).await.is_err() {
                // the put ended early: its error says why
                let put = self.open.take().ok_or_else(no_file)?;
                drop(put.tx);
                return Err(match put.task.await {
                    Ok(Err(e)) => io_err(e),
                    Ok(Ok(_)) => std::io::Error::other("the blob upload ended early"),
                    Err(e) => std::io::Error::other(e.to_string()),
                });
            }
            Ok(())
        }
        .boxed_local()
    }

    fn close(&mut self) -> LocalBoxFuture<'_, std::io::Result<()>> {
        async move {
            let put = self.open.take().ok_or_else(no_file)?;
            drop(put.tx);
            match put.task.await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(io_err(e)),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            }
        }
        .boxed_local()
    }

    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for BlobStaging {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        if let Some(put) = self.open.take() {
            // dropping the put's future aborts its multipart upload
            put.task.abort();
            tracing::debug!(key = %put.key, "blob upload abandoned");
        }
        let keys = std::mem::take(&mut self.written);
        if keys.is_empty() {
            return;
        }
        let blobs = self.blobs.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    for key in keys {
                        if let Err(e) = blobs.delete(&key).await {
                            tracing::warn!(key, error = %e, "cannot remove a refused upload's blob");
                        }
                    }
                });
            }
            Err(_) => tracing::warn!("upload blobs dropped outside a runtime: not removed"),
        }
    }
}
