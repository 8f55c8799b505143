//! The HTTP handlers. Each answers from the registry; uploads are streamed
//! to `temp/{id}/` chunk by chunk, never held whole in memory.
//!
//! An upload is refused as early as its refusal is known: a bad key (401),
//! the key's rate (429), its query (400), its announced size (413), every
//! upload slot taken (503), a full queue or a key over its quota (429) all
//! before a byte of the body is read; a body that stalls or crawls is
//! dropped (408) and a full disk answered (507), with the temp folder gone.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::TryStreamExt;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use super::access::{Bucket, Caller};
use super::error::ApiError;
use super::AppState;
use crate::actors::FailureKind;
use crate::export::{self, Format, Names};
use crate::registry::{
    Admission, CreateJob, DeleteJob, GetJob, Job, JobOptions, JobStatus, ListJobs, RegistryError,
    Stats,
};
use crate::result::JobResult;

/// Multipart framing allowed on top of the file when checking Content-Length.
const MULTIPART_SLACK: u64 = 64 * 1024;
/// Largest non-file form field read (it is otherwise discarded).
const MAX_FIELD: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    pub num_speakers: Option<usize>,
    pub min_speakers: Option<usize>,
    pub max_speakers: Option<usize>,
}

impl UploadQuery {
    fn options(&self) -> Result<JobOptions, ApiError> {
        let bad = |m: &str| Err(ApiError::BadRequest(m.to_string()));
        for n in [self.num_speakers, self.min_speakers, self.max_speakers]
            .into_iter()
            .flatten()
        {
            if n == 0 || n > 64 {
                return bad("speaker counts must be between 1 and 64");
            }
        }
        if let (Some(a), Some(b)) = (self.min_speakers, self.max_speakers) {
            if a > b {
                return bad("min_speakers is larger than max_speakers");
            }
        }
        Ok(JobOptions {
            num_speakers: self.num_speakers,
            min_speakers: self.min_speakers,
            max_speakers: self.max_speakers,
        })
    }
}

/// The job id from the path: anything but a UUID is "not found", before
/// any lookup or file access.
fn job_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(raw).map_err(|_| ApiError::NotFound)
}

/// A file name as users gave it, made safe to store and show: its last path
/// component only, no control or bidirectional-override characters, at
/// most 200 characters; "upload" when nothing is left. (The audio itself is
/// stored as `temp/{id}/audio.<ext>`: the name never becomes a path.)
pub fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or("");
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{feff}')
    };
    let kept: String = base.chars().filter(|&c| !invisible(c)).take(200).collect();
    let kept = kept.trim();
    if kept.is_empty() {
        "upload".into()
    } else {
        kept.to_string()
    }
}

/// The job if the caller may see it; otherwise "not found" (never "forbidden":
/// another key's job ids are not confirmed).
async fn visible_job(state: &AppState, caller: &Caller, id: Uuid) -> Result<Job, ApiError> {
    state
        .registry
        .send(GetJob(id))
        .await??
        .filter(|job| caller.sees(job))
        .ok_or(ApiError::NotFound)
}

fn refused(e: RegistryError, retry_after: u64) -> ApiError {
    match e {
        RegistryError::QueueFull { .. } => ApiError::QueueFull { retry_after },
        RegistryError::OverQuota(message) => ApiError::OverQuota {
            message,
            retry_after,
        },
        e => e.into(),
    }
}

/// The next chunk of an upload, within the read timeout and above the
/// minimum average rate (checked once the first timeout's worth has passed).
async fn next_chunk<S, T, E>(
    stream: &mut S,
    started: Instant,
    received: u64,
    state: &AppState,
) -> Result<Option<T>, ApiError>
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
{
    let server = &state.config.server;
    let timeout = Duration::from_secs(server.upload_read_timeout_seconds);
    let elapsed = started.elapsed();
    if elapsed > timeout
        && (received as f64) < server.upload_min_bytes_per_second as f64 * elapsed.as_secs_f64()
    {
        return Err(ApiError::Timeout(format!(
            "the upload is too slow ({received} bytes in {:.0} s; at least {} bytes/s are needed)",
            elapsed.as_secs_f64(),
            server.upload_min_bytes_per_second
        )));
    }
    match tokio::time::timeout(timeout, stream.try_next()).await {
        Ok(r) => r.map_err(|e| ApiError::BadRequest(format!("upload interrupted: {e}"))),
        Err(_) => Err(ApiError::Timeout(format!(
            "the upload sent nothing for {} s",
            server.upload_read_timeout_seconds
        ))),
    }
}

/// Removes a half-written upload unless disarmed: its file and folder by
/// `unlink` and `rmdir`, which need no file descriptor (an upload that
/// failed because descriptors ran out must still leave nothing behind).
#[derive(Default)]
struct TempGuard {
    dir: Option<PathBuf>,
    file: Option<PathBuf>,
}

impl Drop for TempGuard {
    fn drop(&mut self) {
        if let Some(file) = self.file.take() {
            let _ = std::fs::remove_file(file);
        }
        if let Some(dir) = self.dir.take() {
            if std::fs::remove_dir(&dir).is_err() {
                if let Err(e) = std::fs::remove_dir_all(&dir) {
                    if e.kind() != std::io::ErrorKind::NotFound {
                        tracing::warn!(path = %dir.display(), error = %e, "cannot remove an upload's temp folder");
                    }
                }
            }
        }
    }
}

/// `POST /api/upload?num_speakers=N`: multipart form with a `file` field.
pub async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    mut form: Multipart,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Uploads)?;
    // the query is parsed here (not by an extractor) so that a bad key is 401 first
    let query = web::Query::<UploadQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let options = query.options()?;
    let server = &state.config.server;
    let limit = server.max_upload_bytes;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > limit + MULTIPART_SLACK) {
        tracing::info!(
            bytes = announced,
            limit,
            "upload refused: too large (announced)"
        );
        return Err(ApiError::TooLarge { limit });
    }
    let _slot = state
        .upload_slots
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy {
            retry_after: server.retry_after_seconds,
        })?;
    let (owner, quota) = (caller.owner(), caller.quota(server));
    state
        .registry
        .send(Admission {
            owner: owner.clone(),
            quota,
        })
        .await?
        .map_err(|e| refused(e, server.retry_after_seconds))?;
    let started = Instant::now();
    let mut received: u64 = 0;
    let id = Uuid::new_v4();
    let dir = state.storage.temp_dir(id);
    let mut guard = TempGuard::default();
    let mut stored: Option<(String, String, u64)> = None;
    while let Some(mut field) = next_chunk(&mut form, started, received, &state).await? {
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(clean_filename);
        let is_file = field.name() == Some("file") && stored.is_none();
        let Some(filename) = filename.filter(|_| is_file) else {
            // another field: read (bounded) and ignore
            let mut n = 0;
            while let Some(chunk) = next_chunk(&mut field, started, received, &state).await? {
                n += chunk.len();
                received += chunk.len() as u64;
                if n > MAX_FIELD {
                    return Err(ApiError::BadRequest("form field too large".into()));
                }
            }
            continue;
        };
        let ext = std::path::Path::new(&filename)
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        if !state
            .config
            .server
            .allowed_extensions
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&ext))
        {
            return Err(ApiError::UnsupportedType(format!(
                "'{filename}': accepted extensions are {}",
                state.config.server.allowed_extensions.join(", ")
            )));
        }
        tokio::fs::create_dir_all(&dir).await?;
        guard.dir = Some(dir.clone());
        let audio_file = format!("audio.{ext}");
        guard.file = Some(dir.join(&audio_file));
        let mut file = tokio::fs::File::create(dir.join(&audio_file)).await?;
        let mut written: u64 = 0;
        while let Some(chunk) = next_chunk(&mut field, started, received, &state).await? {
            written += chunk.len() as u64;
            received += chunk.len() as u64;
            if written > limit {
                tracing::info!(job_id = %id, limit, "upload refused: too large");
                return Err(ApiError::TooLarge { limit });
            }
            file.write_all(&chunk).await?;
        }
        file.flush().await?;
        file.sync_all().await?;
        stored = Some((filename, audio_file, written));
    }
    let Some((filename, audio_file, bytes)) = stored else {
        return Err(ApiError::BadRequest(
            "no `file` field with a file name in the form".into(),
        ));
    };
    if bytes == 0 {
        return Err(ApiError::BadRequest("the uploaded file is empty".into()));
    }
    let created = state
        .registry
        .send(CreateJob {
            id,
            filename,
            audio_file,
            options,
            owner,
            quota,
            bytes,
        })
        .await?;
    match created {
        Ok(job) => {
            (guard.dir, guard.file) = (None, None); // the job owns them now
            tracing::info!(job_id = %id, bytes, filename = %job.filename, "upload stored");
            Ok(HttpResponse::Ok().json(json!({
                "job_id": id,
                "status": "queued",
                "message": "File uploaded successfully. Processing started.",
            })))
        }
        Err(e) => Err(refused(e, server.retry_after_seconds)),
    }
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
            let result: JobResult = serde_json::from_slice(&body)
                .map_err(|e| ApiError::Internal(format!("stored result unreadable: {e}")))?;
            let stem = std::path::Path::new(&job.filename)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or("audio");
            let text = export::render(&result, format, &Names(names), stem);
            Ok(HttpResponse::Ok()
                .content_type(format.content_type())
                .body(text))
        }
        JobStatus::Queued | JobStatus::Processing => Err(ApiError::NotReady(Box::new(job))),
        JobStatus::Failed => Err(ApiError::JobFailed {
            // records from before error kinds were kept count as ours
            kind: job.error_kind.unwrap_or(FailureKind::Internal),
            message: job.error.unwrap_or_else(|| "processing failed".into()),
        }),
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
