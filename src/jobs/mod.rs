//! The job store seam (issue #15): the one interface the API and the CLI
//! use for jobs, whichever store holds them.
//!
//! - [`local::LocalJobs`]: this node's sled registry and local folders
//!   (`role = all`, the default; the pipeline runs here).
//! - [`cluster::ClusterJobs`]: the PostgreSQL queue and the blob store
//!   (`role = api`: no model here; workers lease the jobs).
//!
//! An upload's files arrive through a [`Staging`] (a temp folder, or
//! streamed into the bucket); [`JobStore::create`] turns them into a job.
//! Dropping a staging that was not kept removes whatever it wrote, so a
//! refused or broken upload leaves nothing behind in either store.

pub mod callbacks;
pub mod cluster;
pub mod local;

use std::collections::BTreeMap;

use bytes::Bytes;
use futures::future::LocalBoxFuture;
use uuid::Uuid;

use crate::registry::feed::Subscription;
use crate::registry::{CreateJob, Job, Quota, RegistryError, RegistryStats};

/// A boxed future of a store call (actix handlers run on one thread each).
pub type Call<'a, T> = LocalBoxFuture<'a, Result<T, RegistryError>>;

/// Where jobs live: the API's and the CLI's only way to them.
pub trait JobStore {
    /// Would an upload of this key be taken now (queue depth, quota)?
    /// Asked before the body is read.
    fn admit(&self, owner: Option<String>, quota: Option<Quota>) -> Call<'_, ()>;
    /// Somewhere for the files of the upload that becomes job `id`.
    fn staging(&self, id: Uuid) -> Box<dyn Staging>;
    /// The job for an upload whose files are staged (and kept).
    fn create(&self, job: CreateJob) -> Call<'_, Job>;
    fn get(&self, id: Uuid) -> Call<'_, Option<Job>>;
    /// Every job, oldest first; only `owner`'s when given.
    fn list(&self, owner: Option<String>) -> Call<'_, Vec<Job>>;
    /// Cancels the job if it runs and removes its record and files; the
    /// job as it was (status `cancelled` if it had not ended).
    fn delete(&self, id: Uuid) -> Call<'_, Option<Job>>;
    /// A completed job's stored result (the `JobResult` as JSON).
    fn result(&self, id: Uuid) -> Call<'_, Bytes>;
    /// Resolves when the job ends: its final record, or None once deleted.
    fn watch(&self, id: Uuid) -> Call<'_, Option<Job>>;
    /// The job now and, unless it has ended, its later updates.
    fn follow(&self, id: Uuid) -> Call<'_, Option<(Job, Option<Subscription>)>>;
    /// Jobs by status (every status, 0 included).
    fn counts(&self) -> Call<'_, BTreeMap<String, usize>>;
    fn stats(&self) -> Call<'_, RegistryStats>;
}

/// One upload's files while they arrive. Dropped without [`keep`]
/// (refused, broken, the client gone): everything written goes.
///
/// [`keep`]: Staging::keep
pub trait Staging {
    /// Starts the file `name` (a name of ours: `audio.wav`, `reference-0.wav`).
    fn create<'a>(&'a mut self, name: &'a str) -> LocalBoxFuture<'a, std::io::Result<()>>;
    /// Appends to the file being written.
    fn write(&mut self, chunk: Bytes) -> LocalBoxFuture<'_, std::io::Result<()>>;
    /// Completes the file being written (durable once this returns).
    fn close(&mut self) -> LocalBoxFuture<'_, std::io::Result<()>>;
    /// The job owns the files now.
    fn keep(&mut self);
}

/// A staging's write or close with no file open (a caller's mistake).
fn no_file() -> std::io::Error {
    std::io::Error::other("no staged file is open")
}

/// A store failure that is not the registry's own (the queue, the bucket).
pub fn unavailable(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("{what}: {e}"))
}
