//! `POST /api/upload` (and the upload half of the OpenAI-compatible route):
//! the body is streamed to `temp/{id}/` chunk by chunk, never held whole in
//! memory, and the job is created once it is all on disk.
//!
//! An upload is refused as early as its refusal is known: a bad key (401),
//! the key's rate (429), its query (400), its announced size (413), every
//! upload slot taken (503), a full queue or a key over its quota (429) all
//! before a byte of the body is read; a body that stalls or crawls is
//! dropped (408) and a full disk answered (507), with the temp folder gone.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::access::{Bucket, Caller};
use super::error::{ApiError, ErrorBody};
use super::AppState;
use crate::registry::{CreateJob, Job, JobOptions, JobStatus, RegistryError};

/// Multipart framing allowed on top of the file when checking Content-Length.
const MULTIPART_SLACK: u64 = 64 * 1024;
/// Largest non-file form field read (it is otherwise discarded).
const MAX_FIELD: usize = 64 * 1024;
/// Form fields that carry a file inline (data URLs of reference clips), and
/// the largest of each taken: 4 MB of base64, 3 MB of audio, more than 10 s
/// of 48 kHz stereo WAV.
const INLINE_FILE_FIELDS: &[&str] = &["known_speaker_references[]", "known_speaker_references"];
const MAX_INLINE_FILE_FIELD: usize = 4 * 1024 * 1024;
/// Form fields (values) read at most, and their bytes all together: four
/// inline files and the rest.
const MAX_FIELDS: usize = 64;
const MAX_FIELDS_BYTES: usize = 4 * MAX_INLINE_FILE_FIELD + 1024 * 1024;

/// The largest value taken for the form field `name`.
fn field_limit(name: &str) -> usize {
    if INLINE_FILE_FIELDS.contains(&name) {
        MAX_INLINE_FILE_FIELD
    } else {
        MAX_FIELD
    }
}

/// Speaker-count hints, each 1 to 64 (unknown parameters are refused).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    /// Exactly this many speakers.
    #[param(minimum = 1, maximum = 64)]
    pub num_speakers: Option<usize>,
    #[param(minimum = 1, maximum = 64)]
    pub min_speakers: Option<usize>,
    #[param(minimum = 1, maximum = 64)]
    pub max_speakers: Option<usize>,
    /// POSTed the job's final record when it ends (also a form field).
    pub callback_url: Option<String>,
    /// Known speakers to look for, by id, comma-separated (`spk_...`); by
    /// default the whole library. At least that many speakers are looked for.
    pub known_speakers: Option<String>,
}

/// What an upload asks for besides its file.
#[derive(Debug, Clone, Default)]
pub struct Submission {
    pub options: JobOptions,
    pub callback_url: Option<String>,
    /// Other files the job needs (reference clips), by file name: written
    /// beside the audio before the job is created, removed with it.
    pub attachments: Vec<super::references::Attachment>,
}

impl Submission {
    pub fn options(options: JobOptions) -> Submission {
        Submission {
            options,
            ..Default::default()
        }
    }
}

/// The form of `POST /api/upload` (what [`receive`] reads: the first
/// `file` part with a file name; other parts are read and ignored).
#[derive(Debug, ToSchema)]
pub struct UploadForm {
    /// The audio; its file name's extension must be one of
    /// `server.allowed_extensions`.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
}

/// The body of a stored upload: its job is queued.
#[derive(Debug, Serialize, ToSchema)]
pub struct Uploaded {
    pub job_id: Uuid,
    /// Always `queued`.
    pub status: JobStatus,
    pub message: String,
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
            whisper: Default::default(),
            known_speakers: None,
            references: vec![],
        })
    }
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

/// The form's other fields (text, at most 64 KB each), by name; a name
/// given more than once (`timestamp_granularities[]`) keeps every value.
pub type Fields = HashMap<String, Vec<String>>;

/// Receives an upload's `file` into `temp/{id}/` and creates its job, with
/// the options `options` makes of the form's other fields (called once the
/// whole body is read). Every refusal of the module doc, in that order.
pub async fn receive(
    state: &AppState,
    caller: &Caller,
    req: &HttpRequest,
    mut form: Multipart,
    submission: impl FnOnce(&Fields) -> Result<Submission, ApiError>,
) -> Result<Job, ApiError> {
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
        .jobs
        .admit(owner.clone(), quota)
        .await
        .map_err(|e| refused(e, server.retry_after_seconds))?;
    let started = Instant::now();
    let mut received: u64 = 0;
    let id = Uuid::new_v4();
    // whatever was stored goes when this is dropped before the job owns it
    let mut staging = state.jobs.staging(id);
    let mut stored: Option<(String, String, u64)> = None;
    let mut fields = Fields::new();
    let (mut field_count, mut field_bytes) = (0usize, 0usize);
    while let Some(mut field) = next_chunk(&mut form, started, received, state).await? {
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(clean_filename);
        let is_file = field.name() == Some("file") && stored.is_none();
        let Some(filename) = filename.filter(|_| is_file) else {
            // another field: read (bounded), kept as text
            let name = field.name().unwrap_or_default().to_string();
            let mut value = Vec::new();
            while let Some(chunk) = next_chunk(&mut field, started, received, state).await? {
                received += chunk.len() as u64;
                value.extend_from_slice(&chunk);
                if value.len() > field_limit(&name) {
                    return Err(ApiError::BadRequest(format!(
                        "form field too large (`{}` is over {} KB)",
                        name.chars().take(64).collect::<String>(),
                        field_limit(&name) / 1024
                    )));
                }
                if field_bytes + value.len() > MAX_FIELDS_BYTES {
                    return Err(ApiError::BadRequest(format!(
                        "the form's fields are over {} MB all together",
                        MAX_FIELDS_BYTES / (1024 * 1024)
                    )));
                }
            }
            field_bytes += value.len();
            field_count += 1;
            if field_count > MAX_FIELDS {
                return Err(ApiError::BadRequest(format!(
                    "more than {MAX_FIELDS} form fields"
                )));
            }
            fields
                .entry(name)
                .or_default()
                .push(String::from_utf8_lossy(&value).into_owned());
            continue;
        };
        let ext = std::path::Path::new(&filename)
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .unwrap_or_default();
        if !server
            .allowed_extensions
            .iter()
            .any(|a| a.eq_ignore_ascii_case(&ext))
        {
            return Err(ApiError::UnsupportedType(format!(
                "'{filename}': accepted extensions are {}",
                server.allowed_extensions.join(", ")
            )));
        }
        let audio_file = format!("audio.{ext}");
        staging.create(&audio_file).await?;
        let mut written: u64 = 0;
        while let Some(chunk) = next_chunk(&mut field, started, received, state).await? {
            written += chunk.len() as u64;
            received += chunk.len() as u64;
            if written > limit {
                tracing::info!(job_id = %id, limit, "upload refused: too large");
                return Err(ApiError::TooLarge { limit });
            }
            staging.write(chunk).await?;
        }
        staging.close().await?;
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
    let Submission {
        options,
        callback_url,
        attachments,
    } = submission(&fields)?;
    drop(fields);
    for (name, bytes) in attachments {
        // the names are ours (`reference-0.wav`), never the user's
        debug_assert!(!name.contains(['/', '\\']) && name != audio_file);
        staging.create(&name).await?;
        staging.write(bytes.into()).await?;
        staging.close().await?;
    }
    let job = state
        .jobs
        .create(CreateJob {
            id,
            filename,
            audio_file,
            options,
            owner,
            quota,
            bytes,
            callback_url,
        })
        .await
        .map_err(|e| refused(e, server.retry_after_seconds))?;
    staging.keep(); // the job owns them now
    tracing::info!(job_id = %id, bytes, filename = %job.filename, "upload stored");
    Ok(job)
}

/// `POST /api/upload?num_speakers=N`: multipart form with a `file` field.
#[utoipa::path(
    post,
    path = "/api/upload",
    operation_id = "upload",
    tag = "jobs",
    summary = "Upload audio; its transcription runs as a job",
    params(UploadQuery),
    request_body(content = UploadForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "Stored and queued", body = Uploaded, links(
            ("status" = (operation_id = "job_status", parameters(("id" = "$response.body#/job_id")))),
            ("results" = (operation_id = "job_results", parameters(("id" = "$response.body#/job_id")))),
            ("delete" = (operation_id = "delete_job", parameters(("id" = "$response.body#/job_id")))),
        )),
        (status = 400, description = "A bad query, form or file type, or an empty file", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 408, description = "The body stalled or crawled (`server.upload_read_timeout_seconds`)", body = ErrorBody),
        (status = 413, description = "Over `server.max_upload_bytes`", body = ErrorBody),
        (status = 429, description = "Over the key's upload rate, the queue full, or the key over its quota (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "Every upload slot is taken (`Retry-After`)", body = ErrorBody),
        (status = 507, description = "The server's storage is full", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn upload(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    form: Multipart,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Uploads)?;
    // the query is parsed here (not by an extractor) so that a bad key is 401 first
    let query = web::Query::<UploadQuery>::from_query(req.query_string())
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mut options = query.options()?;
    if let Some(raw) = &query.known_speakers {
        let ids: Vec<String> = raw
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        let library = state.speakers.clone();
        let owner = caller.owner();
        let wanted = ids.clone();
        let unknown: Vec<String> = web::block(move || -> Result<Vec<String>, String> {
            let mine = library.list(owner.as_deref()).map_err(|e| e.to_string())?;
            Ok(wanted
                .into_iter()
                .filter(|id| !mine.iter().any(|s| &s.id == id))
                .collect())
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::Internal)?;
        if ids.is_empty() || !unknown.is_empty() {
            return Err(ApiError::BadRequest(format!(
                "known_speakers: {} (ids from GET /api/speakers, comma-separated)",
                if ids.is_empty() {
                    "no speaker ids".to_string()
                } else {
                    format!("unknown {}", unknown.join(", "))
                }
            )));
        }
        if options.num_speakers.is_none() && options.min_speakers.is_none() {
            // never above a max_speakers given with it
            let most = options.max_speakers.unwrap_or(64);
            options.min_speakers = Some(ids.len().min(most));
        }
        options.known_speakers = Some(ids);
    }
    // a bad callback_url in the query is refused before the body is read
    let policy = &state.callbacks;
    if let Some(url) = &query.callback_url {
        policy.check_url(url).map_err(ApiError::BadRequest)?;
    }
    let job = receive(&state, &caller, &req, form, |fields| {
        let field = fields
            .get("callback_url")
            .and_then(|v| v.last())
            .filter(|v| !v.is_empty());
        let callback_url = match (&query.callback_url, field) {
            (Some(q), _) => Some(q.clone()),
            (None, Some(f)) => {
                policy.check_url(f).map_err(ApiError::BadRequest)?;
                Some(f.clone())
            }
            (None, None) => None,
        };
        Ok(Submission {
            options,
            callback_url,
            ..Default::default()
        })
    })
    .await?;
    Ok(HttpResponse::Ok().json(Uploaded {
        job_id: job.job_id,
        status: JobStatus::Queued,
        message: "File uploaded successfully. Processing started.".into(),
    }))
}
