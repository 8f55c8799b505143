//! The HTTP handlers that read jobs: status, results (every export
//! format), the job list, delete, health, metrics (and the middleware that
//! counts every request for them). Uploads are in `upload.rs`, live events
//! in `events.rs`.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::access::{Bucket, Caller};
use super::error::ApiError;
use super::AppState;
use crate::actors::FailureKind;
use crate::export::{self, Format, Names};
use crate::metrics::Scrape;
use crate::registry::{CountJobs, DeleteJob, GetJob, Job, JobStatus, ListJobs, Stats};
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
        .registry
        .send(GetJob(id))
        .await??
        .filter(|job| caller.sees(job))
        .ok_or(ApiError::NotFound)
}

/// `GET /api/status/{id}`.
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResultsQuery {
    /// json (default), txt, srt, vtt, tsv, rttm.
    pub format: Option<Format>,
    /// Speaker names for the text formats, as a JSON object:
    /// `{"SPEAKER_00": "Dana"}` (the page's renames; nothing is stored).
    pub names: Option<String>,
}

/// `GET /api/results/{id}?format=srt&names={...}`: 200 with the result in
/// that format, 202 while queued or processing.
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
            let body = tokio::fs::read(state.storage.result_path(id)).await?;
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

/// `GET /api/jobs`: the caller's jobs (every job for an admin key or
/// without keys), oldest first.
pub async fn jobs(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let jobs = state
        .registry
        .send(ListJobs(caller.list_filter()))
        .await??;
    Ok(HttpResponse::Ok().json(json!({ "total": jobs.len(), "jobs": jobs })))
}

/// `DELETE /api/jobs/{id}`: cancels a running job and removes its files.
pub async fn delete(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let id = job_id(&path)?;
    visible_job(&state, &caller, id).await?;
    let job = state
        .registry
        .send(DeleteJob(id))
        .await??
        .ok_or(ApiError::NotFound)?;
    Ok(HttpResponse::Ok().json(json!({
        "job_id": id,
        "status": job.status,
        "message": "Job deleted",
    })))
}

/// `GET /health`. `whisper_models` lists every installed Whisper model
/// (read from the model cache on each request, so `colloquy models add`
/// shows up without a restart; `whisper_model` is the one this server runs).
pub async fn health(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.registry.send(Stats).await?;
    let root = state.config.models_root();
    let installed = web::block(move || crate::whisper::model::installed_models(&root))
        .await
        .unwrap_or_default();
    let whisper_models: Vec<serde_json::Value> = installed
        .iter()
        .map(|m| {
            let c = &m.config;
            json!({
                "name": m.name,
                "n_mels": c.n_mels,
                "d_model": c.d_model,
                "n_encoder_layers": c.n_encoder_layers,
                "n_decoder_layers": c.n_decoder_layers,
                "n_vocab": c.n_vocab,
                "multilingual": c.multilingual,
            })
        })
        .collect();
    let snapshot = state.counters.snapshot();
    // a stage whose worker threads have ended can take no more jobs
    let stopped: Vec<&str> = snapshot
        .iter()
        .filter(|(_, c)| c.workers_alive < c.workers)
        .map(|(name, _)| *name)
        .collect();
    let stages: serde_json::Map<String, serde_json::Value> = snapshot
        .into_iter()
        .map(|(name, c)| {
            (
                name.to_string(),
                serde_json::to_value(c).unwrap_or_default(),
            )
        })
        .collect();
    let mut res = if stopped.is_empty() {
        HttpResponse::Ok()
    } else {
        HttpResponse::ServiceUnavailable()
    };
    Ok(res.json(json!({
        "status": if stopped.is_empty() { "healthy" } else { "degraded" },
        "stopped_stages": stopped,
        "auth": state.config.server.auth,
        "models_ready": true,
        "runtime": "onnxruntime",
        "device": state.devices,
        "whisper_model": state.config.whisper.model,
        "whisper_models": whisper_models,
        "active_jobs": stats.active_jobs,
        "queued_jobs": stats.queued_jobs,
        "max_active_jobs": stats.max_active_jobs,
        "stages": stages,
    })))
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
pub async fn metrics(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let stats = state.registry.send(Stats).await?;
    let jobs = state.registry.send(CountJobs).await??;
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
