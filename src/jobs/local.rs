//! The single-node job store: the sled registry actor and this node's
//! folders (`temp/{id}/` for uploads, `results/{id}.json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use actix::Addr;
use bytes::Bytes;
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::{no_file, Call, JobStore, Staging};
use crate::registry::feed::Subscription;
use crate::registry::{
    Admission, CountJobs, CreateJob, DeleteJob, GetJob, Job, JobRegistry, ListJobs, Quota,
    RegistryError, RegistryStats, Stats, Storage, Subscribe, WatchJob,
};

/// The registry actor and the folders it keeps jobs in.
#[derive(Clone)]
pub struct LocalJobs {
    pub registry: Addr<JobRegistry>,
    pub storage: Storage,
}

fn mailbox(e: actix::MailboxError) -> RegistryError {
    super::unavailable("job registry", e)
}

impl JobStore for LocalJobs {
    fn admit(&self, owner: Option<String>, quota: Option<Quota>) -> Call<'_, ()> {
        async move {
            self.registry
                .send(Admission { owner, quota })
                .await
                .map_err(mailbox)?
        }
        .boxed_local()
    }

    fn staging(&self, id: Uuid) -> Box<dyn Staging> {
        Box::new(LocalStaging {
            dir: self.storage.temp_dir(id),
            file: None,
            written: Vec::new(),
            kept: false,
        })
    }

    fn create(&self, job: CreateJob) -> Call<'_, Job> {
        async move { self.registry.send(job).await.map_err(mailbox)? }.boxed_local()
    }

    fn get(&self, id: Uuid) -> Call<'_, Option<Job>> {
        async move { self.registry.send(GetJob(id)).await.map_err(mailbox)? }.boxed_local()
    }

    fn list(&self, owner: Option<String>) -> Call<'_, Vec<Job>> {
        async move { self.registry.send(ListJobs(owner)).await.map_err(mailbox)? }.boxed_local()
    }

    fn delete(&self, id: Uuid) -> Call<'_, Option<Job>> {
        async move { self.registry.send(DeleteJob(id)).await.map_err(mailbox)? }.boxed_local()
    }

    fn result(&self, id: Uuid) -> Call<'_, Bytes> {
        async move {
            Ok(Bytes::from(
                tokio::fs::read(self.storage.result_path(id)).await?,
            ))
        }
        .boxed_local()
    }

    fn watch(&self, id: Uuid) -> Call<'_, Option<Job>> {
        async move {
            let told = self.registry.send(WatchJob(id)).await.map_err(mailbox)?;
            Ok(told.await.ok().flatten())
        }
        .boxed_local()
    }

    fn follow(&self, id: Uuid) -> Call<'_, Option<(Job, Option<Subscription>)>> {
        async move { self.registry.send(Subscribe(id)).await.map_err(mailbox)? }.boxed_local()
    }

    fn counts(&self) -> Call<'_, BTreeMap<String, usize>> {
        async move { self.registry.send(CountJobs).await.map_err(mailbox)? }.boxed_local()
    }

    fn stats(&self) -> Call<'_, RegistryStats> {
        async move { self.registry.send(Stats).await.map_err(mailbox) }.boxed_local()
    }
}

/// An upload's files in `temp/{id}/`, removed on drop unless kept.
struct LocalStaging {
    dir: PathBuf,
    file: Option<tokio::fs::File>,
    written: Vec<PathBuf>,
    kept: bool,
}

impl Staging for LocalStaging {
    fn create<'a>(&'a mut self, name: &'a str) -> LocalBoxFuture<'a, std::io::Result<()>> {
        async move {
            // the names are ours (`audio.wav`, `reference-0.wav`), never the user's
            debug_assert!(!name.contains(['/', '\\']));
            tokio::fs::create_dir_all(&self.dir).await?;
            let path = self.dir.join(name);
            self.written.push(path.clone());
            self.file = Some(tokio::fs::File::create(path).await?);
            Ok(())
        }
        .boxed_local()
    }

    fn write(&mut self, chunk: Bytes) -> LocalBoxFuture<'_, std::io::Result<()>> {
        async move {
            let file = self.file.as_mut().ok_or_else(no_file)?;
            file.write_all(&chunk).await
        }
        .boxed_local()
    }

    fn close(&mut self) -> LocalBoxFuture<'_, std::io::Result<()>> {
        async move {
            let mut file = self.file.take().ok_or_else(no_file)?;
            file.flush().await?;
            file.sync_all().await
        }
        .boxed_local()
    }

    fn keep(&mut self) {
        self.kept = true;
    }
}

impl Drop for LocalStaging {
    fn drop(&mut self) {
        if self.kept {
            return;
        }
        self.file = None;
        for path in self.written.drain(..) {
            let _ = std::fs::remove_file(path);
        }
        if std::fs::remove_dir(&self.dir).is_err() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %self.dir.display(), error = %e, "cannot remove an upload's temp folder");
                }
            }
        }
    }
}
