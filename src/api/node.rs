//! The cluster's nodes (issue #15).
//!
//! - `colloquy serve --role worker`: this node's registry and pipeline fed
//!   by the PostgreSQL queue ([`crate::worker`]), and one HTTP route,
//!   `/health`.
//! - `colloquy serve --role api`: every route of the single node, with jobs
//!   in the queue and files in the blob store ([`crate::jobs::cluster`]);
//!   no model is loaded.
//!
//! Each node's `/health` says its role and name, its stages (a worker's),
//! and what it sees of the others (the queue's depth, the nodes whose
//! heartbeat is recent).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

use crate::actors::pipeline::{Engines, PipelineCounters};
use crate::config::Config;
use crate::store::blobs::BlobStore;
use crate::store::queue::{JobQueue, QueueOptions, QueueStats};
use crate::worker::{Worker, WorkerOptions};

/// A cluster node's name and its view of the queue.
#[derive(Clone)]
pub struct ClusterView {
    pub id: String,
    pub queue: JobQueue,
}

struct NodeState {
    view: ClusterView,
    counters: PipelineCounters,
}

#[derive(Serialize)]
struct NodeHealth {
    status: &'static str,
    role: crate::config::Role,
    worker_id: String,
    /// This node's stages (workers alive, jobs in them).
    stages: std::collections::BTreeMap<String, crate::actors::stage::CountersSnapshot>,
    /// What the queue says of every node: depth, jobs running, recent heartbeats.
    queue: Option<QueueStats>,
    /// Why the queue could not be read, when it could not.
    queue_error: Option<String>,
}

async fn health(state: web::Data<NodeState>) -> HttpResponse {
    node_health(
        crate::config::Role::Worker,
        &state.view,
        Some(&state.counters),
    )
    .await
}

/// A cluster node's `/health`: 200 while the queue answers, else 503.
pub async fn node_health(
    role: crate::config::Role,
    view: &ClusterView,
    counters: Option<&PipelineCounters>,
) -> HttpResponse {
    let stages = counters
        .map(|c| c.snapshot())
        .unwrap_or_default()
        .into_iter()
        .map(|(name, c)| (name.to_string(), c))
        .collect();
    let (queue, queue_error) = match view.queue.stats().await {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mut res = if queue.is_some() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    res.json(NodeHealth {
        status: if queue.is_some() {
            "healthy"
        } else {
            "degraded"
        },
        role,
        worker_id: view.id.clone(),
        stages,
        queue,
        queue_error,
    })
}

/// Runs an API node until stopped: every route of [`super::routes`], with
/// uploads streamed into the blob store and jobs queued in PostgreSQL for
/// the workers; API keys in this node's own database (server.storage_dir).
pub async fn serve_api(config: Config, on_bound: impl FnOnce(SocketAddr)) -> anyhow::Result<()> {
    let (queue, blobs) = connect_stores(&config, "an API node").await?;
    let state = api_state(&config, queue, blobs)?;
    let view = state.cluster.clone();
    // this node's heartbeat, so that the others' /health see it
    if let Some(view) = view {
        actix::spawn(async move {
            loop {
                if let Err(e) = view.queue.heartbeat(&view.id, "api").await {
                    tracing::warn!(error = %e, "heartbeat not recorded");
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    tracing::info!("api node: jobs in the queue, files in the blob store; no model loaded");
    super::serve_state(&config, state, on_bound).await
}

/// An API node's shared state (also built by the in-process tests).
pub fn api_state(
    config: &Config,
    queue: JobQueue,
    blobs: BlobStore,
) -> anyhow::Result<super::AppState> {
    let storage = crate::registry::Storage::new(config.storage_root());
    storage.create_dirs()?;
    let db = sled::open(storage.database())?;
    let keys = crate::auth::KeyStore::open(&db).map_err(|e| anyhow::anyhow!(e))?;
    let speakers = crate::speakers::SpeakerLibrary::open(&db)?;
    let metrics = std::sync::Arc::new(crate::metrics::Metrics::default());
    let jobs = crate::jobs::cluster::ClusterJobs::start(
        queue.clone(),
        blobs,
        crate::jobs::cluster::Limits {
            max_queued: config.server.max_queued_jobs,
            max_bytes: config.server.max_upload_bytes,
        },
        config.server.callback_policy(),
        metrics.clone(),
    );
    Ok(super::AppState {
        config: config.clone(),
        jobs: std::sync::Arc::new(jobs),
        local: None,
        cluster: Some(ClusterView {
            id: worker_id(config),
            queue,
        }),
        counters: PipelineCounters(Vec::new()),
        devices: crate::actors::pipeline::Devices {
            transcriber: crate::runtime::DeviceUsed::Cpu,
            diarizer: crate::runtime::DeviceUsed::Cpu,
        },
        keys,
        limits: super::access::RateLimits::new(&config.server),
        boundary: super::guard::Boundary::new(&config.server),
        upload_slots: std::sync::Arc::new(tokio::sync::Semaphore::new(
            config.server.max_concurrent_uploads,
        )),
        event_streams: std::sync::Arc::new(tokio::sync::Semaphore::new(
            config.server.max_event_streams,
        )),
        callbacks: config.server.callback_policy(),
        metrics,
        speakers,
    })
}

/// The queue and the blob store of a cluster node (`who`, for the error),
/// failing at once, with the reason, when either is unreachable.
async fn connect_stores(config: &Config, who: &str) -> anyhow::Result<(JobQueue, BlobStore)> {
    if config.cluster.database_url.is_empty() {
        anyhow::bail!(
            "{who} needs the job queue: set cluster.database_url (COLLOQUY__CLUSTER__DATABASE_URL=postgres://...)"
        );
    }
    let queue = JobQueue::connect(&config.cluster.database_url, QueueOptions::default()).await?;
    let blobs = BlobStore::open(&config.blobs)?;
    blobs.check().await?;
    Ok((queue, blobs))
}

/// This node's name: `cluster.worker_id`, else host name and process id.
fn worker_id(config: &Config) -> String {
    if !config.cluster.worker_id.is_empty() {
        return config.cluster.worker_id.clone();
    }
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "worker".into());
    format!("{host}-{}", std::process::id())
}

/// Runs a worker node until stopped: connects to the queue and the blob
/// store (failing at once, with the reason, when either is unreachable),
/// leases jobs, and answers `/health` on server.bind:server.port.
pub async fn serve_worker(
    config: Config,
    engines: Engines,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let (queue, blobs) = connect_stores(&config, "a worker").await?;
    let (state, _pipeline) = super::start_engine(&config, engines).await?;
    let local = state
        .local
        .clone()
        .ok_or_else(|| anyhow::anyhow!("a worker runs its own pipeline"))?;
    let id = worker_id(&config);
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.1));
    let worker = Worker {
        queue: queue.clone(),
        blobs,
        registry: local.registry.clone(),
        storage: local.storage.clone(),
        opts: WorkerOptions {
            id: id.clone(),
            lease: secs(config.cluster.lease_seconds),
            max_jobs: config.pipeline.max_active_jobs,
            poll: secs(config.cluster.poll_seconds),
        },
    };
    let node = web::Data::new(NodeState {
        view: ClusterView {
            id: id.clone(),
            queue,
        },
        counters: state.counters.clone(),
    });
    let server = HttpServer::new(move || {
        App::new()
            .app_data(node.clone())
            .route("/health", web::get().to(health))
    })
    .workers(1)
    .bind((config.server.bind.as_str(), config.server.port))?;
    if let Some(addr) = server.addrs().first() {
        on_bound(*addr);
    }
    tracing::info!(worker_id = %id, "worker: leasing jobs");
    // SIGTERM/SIGINT stop the server; then the worker hands its jobs back
    let server = server.run();
    let handle = server.handle();
    let (stopped, on_stop) = tokio::sync::oneshot::channel::<()>();
    let served = actix::spawn(async move {
        let r = server.await;
        let _ = stopped.send(());
        r
    });
    let worked = worker
        .run_until(async {
            let _ = on_stop.await;
        })
        .await;
    if worked.is_err() {
        handle.stop(true).await;
    }
    served.await??;
    worked?;
    Ok(())
}
