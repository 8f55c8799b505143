//! The REST API (actix-web): routes, shared state and server start-up.
//!
//! | route | |
//! |---|---|
//! | `POST /api/upload?num_speakers=N` | multipart `file`; 200 `{job_id, status: "queued", message}`, 400, 413, 429 |
//! | `GET /api/status/{id}` | the job; 404 |
//! | `GET /api/results/{id}` | 200 result, 202 not ready, 404, 500 failed |
//! | `GET /api/jobs` | every job |
//! | `DELETE /api/jobs/{id}` | cancel + remove files; 404 |
//! | `GET /health` | models, devices, jobs, stage counters |
//! | `GET /`, `/app.js`, `/styles.css` | the web UI (`ui.rs`: `web/*` compiled in) |
//!
//! Handlers only talk to the registry actor; errors become HTTP statuses in
//! one place, `error.rs`.

pub mod error;
pub mod handlers;
pub mod ui;

use std::net::SocketAddr;

use actix::prelude::*;
use actix_web::{web, App, HttpServer};

use crate::actors::pipeline::{Devices, Engines, Pipeline, PipelineCounters};
use crate::config::Config;
use crate::registry::{Attach, JobRegistry, Storage};
use error::ApiError;

/// What every handler shares.
pub struct AppState {
    pub config: Config,
    pub registry: Addr<JobRegistry>,
    pub storage: Storage,
    pub counters: PipelineCounters,
    pub devices: Devices,
}

/// Registers the routes (also used by in-process tests).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.app_data(
        web::QueryConfig::default()
            .error_handler(|e, _| ApiError::BadRequest(e.to_string()).into()),
    )
    .app_data(web::PathConfig::default().error_handler(|_, _| ApiError::NotFound.into()))
    .route("/health", web::get().to(handlers::health))
    .route("/api/upload", web::post().to(handlers::upload))
    .route("/api/status/{id}", web::get().to(handlers::status))
    .route("/api/results/{id}", web::get().to(handlers::results))
    .route("/api/jobs", web::get().to(handlers::jobs))
    .route("/api/jobs/{id}", web::delete().to(handlers::delete))
    .configure(ui::routes);
}

/// Starts the registry, the pipeline and the job recovery inside the
/// running actix system; returns the shared state.
pub async fn start_engine(
    config: &Config,
    engines: Engines,
) -> anyhow::Result<(AppState, Pipeline)> {
    let storage = Storage::new(config.storage_root());
    let registry = JobRegistry::open(
        storage.clone(),
        config.pipeline.max_active_jobs,
        config.server.max_queued_jobs,
    )?;
    let registry = JobRegistry::start_in_arbiter(&Arbiter::new().handle(), move |_| registry);
    let pipeline = Pipeline::spawn(
        config,
        engines,
        registry.clone().recipient(),
        registry.clone().recipient(),
    );
    let recovered = registry.send(Attach(pipeline.entry())).await??;
    if recovered > 0 {
        tracing::info!(recovered, "re-queued jobs interrupted by the last stop");
    }
    let state = AppState {
        config: config.clone(),
        registry,
        storage,
        counters: pipeline.counters(),
        devices: pipeline.devices,
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
    let state = web::Data::new(state);
    let server = HttpServer::new({
        let state = state.clone();
        move || App::new().app_data(state.clone()).configure(routes)
    })
    .workers(config.server.http_workers.max(1))
    .bind((config.server.bind.as_str(), config.server.port))?;
    if let Some(addr) = server.addrs().first() {
        on_bound(*addr);
    }
    server.run().await?;
    Ok(())
}
