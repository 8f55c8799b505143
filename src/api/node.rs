//! `colloquy serve --role worker`: this node's registry and pipeline fed by
//! the PostgreSQL queue ([`crate::worker`]), and one HTTP route, `/health`:
//! the node's role and name, its stages, and what it sees of the others
//! (the queue's depth, the nodes whose heartbeat is recent).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use serde::Serialize;

use crate::actors::pipeline::{Engines, PipelineCounters};
use crate::config::Config;
use crate::store::blobs::BlobStore;
use crate::store::queue::{JobQueue, QueueOptions, QueueStats};
use crate::worker::{Worker, WorkerOptions};

struct NodeState {
    id: String,
    queue: JobQueue,
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
    let stages = state
        .counters
        .snapshot()
        .into_iter()
        .map(|(name, c)| (name.to_string(), c))
        .collect();
    let (queue, queue_error) = match state.queue.stats().await {
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
        role: crate::config::Role::Worker,
        worker_id: state.id.clone(),
        stages,
        queue,
        queue_error,
    })
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
    if config.cluster.database_url.is_empty() {
        anyhow::bail!(
            "a worker needs the job queue: set cluster.database_url (COLLOQUY__CLUSTER__DATABASE_URL=postgres://...)"
        );
    }
    let queue = JobQueue::connect(&config.cluster.database_url, QueueOptions::default()).await?;
    let blobs = BlobStore::open(&config.blobs)?;
    blobs.check().await?;
    let (state, _pipeline) = super::start_engine(&config, engines).await?;
    let id = worker_id(&config);
    let secs = |s: f64| Duration::from_secs_f64(s.max(0.1));
    let worker = Worker {
        queue: queue.clone(),
        blobs,
        registry: state.registry.clone(),
        storage: state.storage.clone(),
        opts: WorkerOptions {
            id: id.clone(),
            lease: secs(config.cluster.lease_seconds),
            max_jobs: config.pipeline.max_active_jobs,
            poll: secs(config.cluster.poll_seconds),
        },
    };
    let node = web::Data::new(NodeState {
        id: id.clone(),
        queue,
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
