//! The REST API (actix-web): routes, shared state and server start-up.
//!
//! | route | |
//! |---|---|
//! | `POST /api/upload?num_speakers=N` | multipart `file`; 200 `{job_id, status: "queued", message}`, 400, 408, 413, 429, 503, 507 |
//! | `GET /api/status/{id}` | the job; 404 |
//! | `GET /api/results/{id}?format=&names=` | 200 result (json, txt, srt, vtt, tsv, rttm: `crate::export`), 202 not ready, 404, 422 bad input, 500 failed |
//! | `GET /api/jobs` | the caller's jobs (every job for admin keys) |
//! | `DELETE /api/jobs/{id}` | cancel + remove files; 404 |
//! | `GET/POST /api/keys`, `DELETE /api/keys/{id}` | API keys (admin) |
//! | `POST /v1/audio/transcriptions`, `GET /v1/models` | OpenAI-compatible (`openai.rs`) |
//! | `GET /health` | models, devices, jobs, stage counters and workers |
//! | `GET /openapi.json`, `GET /docs/` | this API as OpenAPI 3.1 (`openapi.rs`), and Swagger UI on it |
//! | `GET /`, `/app.js`, `/styles.css` | the web UI (`ui.rs`: `web/*` compiled in) |
//!
//! Every `/api` route takes a [`access::Caller`]: with `server.auth =
//! "keys"` a request without a live key gets 401 before anything else, and
//! a key sees only its own jobs. [`guard`] refuses foreign Host names and
//! cross-origin writes before any route runs. Handlers reach jobs only
//! through the job store (`crate::jobs`); errors become HTTP statuses in
//! one place, `error.rs`.

pub mod access;
pub mod error;
pub mod events;
pub mod guard;
pub mod handlers;
pub mod keys;
pub mod node;
pub mod openai;
pub mod openapi;
pub mod references;
pub mod speakers;
pub mod ui;
pub mod upload;

use std::net::SocketAddr;
use std::sync::Arc;

use actix::prelude::*;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceFactory, ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};

use crate::actors::pipeline::{Devices, Engines, Pipeline, PipelineCounters};
use crate::auth::KeyStore;
use crate::config::Config;
use crate::jobs::local::LocalJobs;
use crate::registry::{Attach, JobRegistry, Storage};
use error::ApiError;

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    /// Where jobs live: this node's registry, or the cluster's queue and
    /// bucket (`crate::jobs`). Handlers reach jobs through it alone.
    pub jobs: Arc<dyn crate::jobs::JobStore + Send + Sync>,
    /// This node's own registry and folders when it runs the pipeline
    /// (`role = all`); None on an API node. The speaker library's changes
    /// to stored results need it.
    pub local: Option<LocalJobs>,
    /// This node's name and the cluster's queue, on an API node (its
    /// `/health` answers from the queue).
    pub cluster: Option<node::ClusterView>,
    pub counters: PipelineCounters,
    pub devices: Devices,
    pub keys: KeyStore,
    pub limits: access::RateLimits,
    pub boundary: guard::Boundary,
    /// One permit per upload being received (`server.max_concurrent_uploads`).
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// One permit per client following a job live (`server.max_event_streams`).
    pub event_streams: Arc<tokio::sync::Semaphore>,
    /// How job callbacks are made (URLs are checked at upload).
    pub callbacks: crate::callback::Policy,
    /// Shared with the registry; rendered by `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Known speakers (`/api/speakers`; the aligner reads it too).
    pub speakers: crate::speakers::SpeakerLibrary,
}

/// The whole application: routes, the boundary check, CORS for the listed
/// origins. `colloquy serve` and the in-process tests build the same one.
pub fn app(
    state: web::Data<AppState>,
) -> App<
    impl ServiceFactory<
        ServiceRequest,
        Config = (),
        Response = ServiceResponse<impl MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let origins = !state.config.server.cors_origins.is_empty();
    let boundary = state.boundary.clone();
    let cors = actix_cors::Cors::default()
        .allowed_origin_fn(move |origin, _| origin.to_str().is_ok_and(|o| boundary.lists_origin(o)))
        .allowed_methods(["GET", "POST", "PATCH", "DELETE"])
        .allowed_headers(["authorization", "content-type", "accept"])
        .expose_headers(["retry-after"])
        .max_age(600);
    App::new()
        .app_data(state)
        .configure(routes)
        .wrap(Condition::new(origins, cors))
        .wrap(from_fn(guard::check_request))
        .wrap(from_fn(handlers::count_request))
}

/// Registers the routes (also used by in-process tests).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()))
    .route("/health", web::get().to(handlers::health))
    .route("/metrics", web::get().to(handlers::metrics))
    .route("/api/upload", web::post().to(upload::upload))
    .route("/api/status/{id}", web::get().to(handlers::status))
    .route("/api/results/{id}", web::get().to(handlers::results))
    .route("/api/jobs", web::get().to(handlers::jobs))
    .route("/api/jobs/{id}", web::delete().to(handlers::delete))
    .route("/api/jobs/{id}/events", web::get().to(events::events))
    .route(
        "/v1/audio/transcriptions",
        web::post().to(openai::transcriptions),
    )
    .route("/v1/models", web::get().to(openai::models))
    .route("/api/speakers", web::get().to(speakers::list))
    .route("/api/speakers", web::post().to(speakers::enrol))
    .route("/api/speakers/{id}", web::patch().to(speakers::rename))
    .route("/api/speakers/{id}", web::delete().to(speakers::delete))
    .route("/api/speakers/{id}/merge", web::post().to(speakers::merge))
    .route(
        "/api/speakers/{id}/relabel",
        web::post().to(speakers::relabel),
    )
    .route("/api/keys", web::get().to(keys::list))
    .route("/api/keys", web::post().to(keys::create))
    .route("/api/keys/{id}", web::delete().to(keys::revoke))
    .app_data(
        web::JsonConfig::default()
            .limit(64 * 1024)
            .error_handler(|e, _| ApiError::BadRequest(format!("bad JSON body: {e}")).into()),
    )
    .configure(openapi::routes)
    .configure(ui::routes);
}

/// Starts the registry, the pipeline and the job recovery inside the
/// running actix system; returns the shared state.
pub async fn start_engine(
    config: &Config,
    engines: Engines,
) -> anyhow::Result<(AppState, Pipeline)> {
    let storage = Storage::new(config.storage_root());
    let metrics = Arc::new(crate::metrics::Metrics::default());
    let registry = JobRegistry::open(
        storage.clone(),
        config.pipeline.max_active_jobs,
        config.server.max_queued_jobs,
    )?
    .with_callbacks(config.server.callback_policy())
    .with_metrics(metrics.clone());
    let keys = KeyStore::open(registry.db()).map_err(|e| anyhow::anyhow!(e))?;
    let speakers = crate::speakers::SpeakerLibrary::open(registry.db())?;
    let registry = JobRegistry::start_in_arbiter(&Arbiter::new().handle(), move |_| registry);
    let pipeline = Pipeline::spawn(
        config,
        engines,
        registry.clone().recipient(),
        registry.clone().recipient(),
        Some(speakers.clone()),
    );
    let recovered = registry.send(Attach(pipeline.entry())).await??;
    if recovered > 0 {
        tracing::info!(recovered, "re-queued jobs interrupted by the last stop");
    }
    let local = LocalJobs { registry, storage };
    let state = AppState {
        config: config.clone(),
        jobs: Arc::new(local.clone()),
        local: Some(local),
        cluster: None,
        counters: pipeline.counters(),
        devices: pipeline.devices,
        keys,
        limits: access::RateLimits::new(&config.server),
        boundary: guard::Boundary::new(&config.server),
        upload_slots: Arc::new(tokio::sync::Semaphore::new(
            config.server.max_concurrent_uploads,
        )),
        event_streams: Arc::new(tokio::sync::Semaphore::new(config.server.max_event_streams)),
        callbacks: config.server.callback_policy(),
        metrics,
        speakers,
    };
    Ok((state, pipeline))
}

/// `colloquy serve`: runs until stopped (SIGINT/SIGTERM). `on_bound` gets
/// the address really bound (with port 0, the one picked).
pub async fn serve(
    config: Config,
    engines: Engines,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let (state, _pipeline) = start_engine(&config, engines).await?;
    serve_state(&config, state, on_bound).await
}

/// Serves `state`'s routes until stopped.
pub async fn serve_state(
    config: &Config,
    state: AppState,
    on_bound: impl FnOnce(SocketAddr),
) -> anyhow::Result<()> {
    let state = web::Data::new(state);
    let server = HttpServer::new({
        let state = state.clone();
        move || app(state.clone())
    })
    .workers(config.server.http_workers.max(1))
    // headers must arrive within 5 s of the connection (slow-header clients)
    .client_request_timeout(std::time::Duration::from_secs(5))
    .bind((config.server.bind.as_str(), config.server.port))?;
    if let Some(addr) = server.addrs().first() {
        on_bound(*addr);
    }
    server.run().await?;
    Ok(())
}
