//! The HTTP handlers that read jobs: status, results (every export
//! format), the job list, delete, health, metrics (and the middleware that
//! counts every request for them). Uploads are in `upload.rs`, live events
//! in `events.rs`.

use std::collections::BTreeMap;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::access::{Bucket, Caller};
use super::error::{ApiError, ErrorBody, Pending};
use super::AppState;
use crate::actors::pipeline::Devices;
use crate::actors::stage::CountersSnapshot;
use crate::actors::FailureKind;
use crate::config::AuthMode;
use crate::export::{self, Format, Names};
use crate::metrics::Scrape;
use crate::registry::{Job, JobStatus};
use crate::result::JobResult;

/// A failed job as the error its results answer with: 422 when its file
/// was the cause, 500 when we were (records from before error kinds were
/// kept count as ours).
pub fn failure(job: Job) -> ApiError {
    ApiError::JobFailed {
        kind: job.error_kind.unwrap_or(FailureKind::Internal),
        message: job.error.unwrap_or_else(|| "processing failed".into()),
    }
}

/// A stored result (`results/{id}.json`) as its type.
pub fn typed_result(body: &[u8]) -> Result<JobResult, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::Internal(format!("stored result unreadable: {e}")))
}

/// The job id from the path: anything but a UUID is "not found", before
/// any lookup or file access.
pub fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::NotFound)
}

/// The job if the caller may see it; otherwise "not found" (never "forbidden":
/// another key's job ids are not confirmed).
pub async fn visible_job(state: &AppState, caller: &Caller, id: Uuid) -> Result<Job, ApiError> {
    state
        .jobs
        .get(id)
        .await?
        .filter(|job| caller.sees(job))
        .ok_or(ApiError::NotFound)
}

/// `GET /api/status/{id}`.
#[utoipa::path(
    get,
    path = "/api/status/{id}",
    operation_id = "job_status",
    tag = "jobs",
    summary = "A job's status and progress",
    params(("id" = String, Path, description = "The job id (a UUID; anything else is 404)")),
    responses(
        (status = 200, description = "The job", body = Job),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such job, or another key's job", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn status(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let id = job_id(&path)?;
    let job = visible_job(&state, &caller, id).await?;
    Ok(HttpResponse::Ok().json(job))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResultsQuery {
    /// json (default), txt, srt, vtt, tsv, rttm.
    pub format: Option<Format>,
    /// Speaker names for the text formats, as a JSON object:
    /// `{"SPEAKER_00": "Dana"}` (the page's renames; nothing is stored).
    pub names: Option<String>,
}

/// `GET /api/results/{id}?format=srt&names={...}`: 200 with the result in
/// that format, 202 while queued or processing.
#[utoipa::path(
    get,
    path = "/api/results/{id}",
    operation_id = "job_results",
    tag = "jobs",
    summary = "A finished job's transcript, in any export format",
    params(
        ("id" = String, Path, description = "The job id (a UUID; anything else is 404)"),
        ResultsQuery,
    ),
    responses(
        (status = 200, description = "The result: `json` (default) is the JobResult; `txt` and `rttm` are text/plain, `srt` application/x-subrip, `vtt` text/vtt, `tsv` text/tab-separated-values", content(
            (JobResult = "application/json"),
            (String = "text/plain"),
            (String = "application/x-subrip"),
            (String = "text/vtt"),
            (String = "text/tab-separated-values"),
        )),
        (status = 202, description = "The job is queued or processing: ask again later", body = Pending),
        (status = 400, description = "A bad `format` or `names`, or an unknown query parameter", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such job, another key's job, or a cancelled one", body = ErrorBody),
        (status = 422, description = "The job failed because of its file (`bad_input`)", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
        (status = 500, description = "The job failed through the server's fault (`job_failed`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn results(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    query: web::Query<ResultsQuery>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let id = job_id(&path)?;
    let names: std::collections::HashMap<String, String> = match &query.names {
        Some(raw) => serde_json::from_str(raw).map_err(|e| {
            ApiError::BadRequest(format!(
                "names must be a JSON object of speaker labels to names: {e}"
            ))
        })?,
        None => Default::default(),
    };
    let job = visible_job(&state, &caller, id).await?;
    match job.status {
        JobStatus::Completed => {
            let body = state.jobs.result(id).await?;
            let format = query.format.unwrap_or(Format::Json);
            if format == Format::Json && names.is_empty() {
                return Ok(HttpResponse::Ok()
                    .content_type(format.content_type())
                    .body(body));
            }
            let result = typed_result(&body)?;
            let text = export::render(&result, format, &Names(names), export::stem(&job.filename));
            Ok(HttpResponse::Ok()
                .content_type(format.content_type())
                .body(text))
        }
        JobStatus::Queued | JobStatus::Processing => Err(ApiError::NotReady(Box::new(job))),
        JobStatus::Failed => Err(failure(job)),
        JobStatus::Cancelled => Err(ApiError::NotFound),
    }
}

/// The body of `GET /api/jobs`.
#[derive(Debug, Serialize, ToSchema)]
pub struct JobList {
    pub total: usize,
    /// Oldest first.
    pub jobs: Vec<Job>,
}

/// `GET /api/jobs`: the caller's jobs (every job for an admin key or
/// without keys), oldest first.
#[utoipa::path(
    get,
    path = "/api/jobs",
    operation_id = "list_jobs",
    tag = "jobs",
    summary = "The caller's jobs (every job for an admin key, or without keys)",
    responses(
        (status = 200, description = "The jobs, oldest first", body = JobList),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn jobs(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let jobs = state.jobs.list(caller.list_filter()).await?;
    Ok(HttpResponse::Ok().json(JobList {
        total: jobs.len(),
        jobs,
    }))
}

/// The body of `DELETE /api/jobs/{id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub job_id: Uuid,
    /// The job's status when it was deleted (`cancelled` if it was running).
    pub status: JobStatus,
    pub message: String,
}

/// `DELETE /api/jobs/{id}`: cancels a running job and removes its files.
#[utoipa::path(
    delete,
    path = "/api/jobs/{id}",
    operation_id = "delete_job",
    tag = "jobs",
    summary = "Cancel a job and remove its files and record",
    params(("id" = String, Path, description = "The job id (a UUID; anything else is 404)")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such job, or another key's job", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let id = job_id(&path)?;
    visible_job(&state, &caller, id).await?;
    let job = state.jobs.delete(id).await?.ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(Deleted {
        job_id: id,
        status: job.status,
        message: "Job deleted".into(),
    }))
}

/// `healthy`, or `degraded` when a stage has lost its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Healthy,
    Degraded,
}

/// An installed Whisper model's shape (`/health`'s `whisper_models`).
#[derive(Debug, Serialize, ToSchema)]
pub struct WhisperModelInfo {
    pub name: String,
    pub n_mels: usize,
    pub d_model: usize,
    pub n_encoder_layers: usize,
    pub n_decoder_layers: usize,
    pub n_vocab: usize,
    pub multilingual: bool,
}

/// The body of `GET /health`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    pub status: HealthStatus,
    /// This node's part (`cluster.role`): `all` here (uploads, jobs and
    /// models on this one node); a worker node answers with its own shape.
    pub role: crate::config::Role,
    /// Stages whose worker threads have ended (they take no more jobs).
    pub stopped_stages: Vec<String>,
    pub auth: AuthMode,
    pub models_ready: bool,
    pub runtime: String,
    pub device: Devices,
    /// The Whisper model this server runs.
    pub whisper_model: String,
    /// Every installed Whisper model.
    pub whisper_models: Vec<WhisperModelInfo>,
    pub active_jobs: usize,
    pub queued_jobs: usize,
    pub max_active_jobs: usize,
    /// Each stage's counters, by stage name.
    pub stages: BTreeMap<String, CountersSnapshot>,
}

/// `GET /health`. `whisper_models` lists every installed Whisper model
/// (read from the model cache on each request, so `colloquy models add`
/// shows up without a restart; `whisper_model` is the one this server runs).
#[utoipa::path(
    get,
    path = "/health",
    operation_id = "health",
    tag = "server",
    summary = "Models, devices, jobs and each stage's counters (no key needed)",
    responses(
        (status = 200, description = "Healthy", body = Health),
        (status = 503, description = "Degraded: a stage has lost its workers (`stopped_stages`)", body = Health),
        (status = 500, description = "The job registry does not answer", body = ErrorBody),
    ),
)]
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    if let (None, Some(view)) = (&state.local, &state.cluster) {
        // an API node: no model or stage here; what the queue says
        return Ok(super::node::node_health(crate::config::Role::Api, view, None).await);
    }
    let stats = state.jobs.stats().await?;
    let root = state.config.models_root();
    let installed = web::block(move || crate::whisper::model::installed_models(&root))
        .await
        .unwrap_or_default();
    let whisper_models = installed
        .iter()
        .map(|m| {
            let c = &m.config;
            WhisperModelInfo {
                name: m.name.clone(),
                n_mels: c.n_mels,
                d_model: c.d_model,
                n_encoder_layers: c.n_encoder_layers,
                n_decoder_layers: c.n_decoder_layers,
                n_vocab: c.n_vocab,
                multilingual: c.multilingual,
            }
        })
        .collect();
    let snapshot = state.counters.snapshot();
    // a stage whose worker threads have ended can take no more jobs
    let stopped_stages: Vec<String> = snapshot
        .iter()
        .filter(|(_, c)| c.workers_alive < c.workers)
        .map(|(name, _)| name.to_string())
        .collect();
    let stages = snapshot
        .into_iter()
        .map(|(name, c)| (name.to_string(), c))
        .collect();
    let (mut res, status) = if stopped_stages.is_empty() {
        (HttpResponse::Ok(), HealthStatus::Healthy)
    } else {
        (HttpResponse::ServiceUnavailable(), HealthStatus::Degraded)
    };
    Ok(res.json(Health {
        status,
        role: state.config.cluster.role,
        stopped_stages,
        auth: state.config.server.auth,
        models_ready: true,
        runtime: "onnxruntime".into(),
        device: state.devices,
        whisper_model: state.config.whisper.model.clone(),
        whisper_models,
        active_jobs: stats.active_jobs,
        queued_jobs: stats.queued_jobs,
        max_active_jobs: stats.max_active_jobs,
        stages,
    }))
}

/// Counts every request for `GET /metrics` by its route's pattern (never
/// the raw path: ids would make a series each), method and status; the
/// outermost middleware, so refusals by the boundary checks count too.
pub async fn count_request(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = std::time::Instant::now();
    let metrics = req
        .app_data::<web::Data<AppState>>()
        .map(|s| s.metrics.clone());
    let method: &'static str = match req.method().as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "other",
    };
    let res = next.call(req).await?;
    if let Some(metrics) = metrics {
        let route = res.request().match_pattern();
        metrics.http(
            route.as_deref().unwrap_or("other"),
            method,
            res.status().as_u16(),
            started.elapsed().as_secs_f64(),
        );
    }
    Ok(res)
}

/// `GET /metrics`: Prometheus / OpenMetrics text (`crate::metrics`).
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "server",
    summary = "Counters for Prometheus (OpenMetrics text)",
    responses(
        (status = 200, description = "Every series: HTTP requests, jobs by status, queue, per-stage counters, job duration and real-time-factor histograms", content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8", body = String),
    ),
)]
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.jobs.stats().await?;
    let jobs = state.jobs.counts().await?;
    let scrape = Scrape {
        jobs,
        queued_jobs: stats.queued_jobs,
        active_jobs: stats.active_jobs,
        max_active_jobs: stats.max_active_jobs,
        stages: state.counters.snapshot(),
    };
    Ok(HttpResponse::Ok()
        .content_type(crate::metrics::CONTENT_TYPE)
        .body(state.metrics.render(&scrape)))
}
