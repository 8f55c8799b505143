//! `/api/speakers`: the caller's speaker library (`crate::speakers`), and
//! its changes carried into the caller's stored results by the registry
//! (no transcription runs again).
//!
//! - `GET /api/speakers`: the caller's known speakers (prints without
//!   their embeddings);
//! - `POST /api/speakers` `{"name", "job_id", "speaker"}`: the job's speaker
//!   (its label, e.g. `SPEAKER_01`) is `name`: its voice print joins the
//!   speaker called so (made when new) and the job's result shows the name;
//!   or a multipart form `name` + `file`: a reference clip of one voice
//!   (2 to 30 s), run as a job of one speaker through the same pipeline,
//!   its print kept and the job (audio, result) deleted;
//! - `PATCH /api/speakers/{id}` `{"name"}`: renamed, in every result too;
//! - `DELETE /api/speakers/{id}`: the speaker and all its prints are gone;
//!   results show the diarizer's labels again;
//! - `POST /api/speakers/{id}/merge` `{"from"}`: `from`'s prints join `id`,
//!   `from` is deleted, its results show `id`'s name.
//!
//! With keys, each key has its own library (admin keys too); without keys
//! there is one.

use actix_multipart::Multipart;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::access::{Bucket, Caller};
use super::error::{ApiError, ErrorBody};
use super::handlers::{job_id, visible_job};
use super::upload::{receive, Submission};
use super::AppState;
use crate::registry::{ChangeSpeakers, JobOptions, JobStatus, JobVoices, SpeakerChange};
use crate::speakers::{LibraryError, PrintSource, Speaker, SpeakerLibrary, CLIP_SECONDS};

impl From<LibraryError> for ApiError {
    fn from(e: LibraryError) -> Self {
        match e {
            LibraryError::NotFound => ApiError::NotFound,
            LibraryError::Invalid(m) => ApiError::BadRequest(m),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

/// Runs library work off the async threads (sled may touch the disk).
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(SpeakerLibrary) -> Result<T, LibraryError> + Send + 'static,
) -> Result<T, ApiError> {
    node(state)?;
    let library = state.speakers.clone();
    web::block(move || f(library))
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::from)
}

/// This node's own registry: the library lives beside it, on a node that
/// runs the pipeline (an API node of a cluster has neither).
pub fn node(state: &AppState) -> Result<&crate::jobs::local::LocalJobs, ApiError> {
    state.local.as_ref().ok_or_else(|| {
        ApiError::BadRequest(
            "known speakers are kept by a single-node server (cluster.role = all); \
             this is an API node of a cluster"
                .into(),
        )
    })
}

/// The caller's speaker `id`; another library's is "not found".
async fn own(state: &AppState, caller: &Caller, id: String) -> Result<Speaker, ApiError> {
    let owner = caller.owner();
    blocking(state, move |lib| lib.get(&id))
        .await?
        .filter(|s| s.owner == owner)
        .ok_or(ApiError::NotFound)
}

async fn carry(
    state: &AppState,
    caller: &Caller,
    change: SpeakerChange,
) -> Result<usize, ApiError> {
    Ok(node(state)?
        .registry
        .send(ChangeSpeakers {
            owner: caller.owner(),
            change,
        })
        .await??)
}

/// The caller's known speakers.
#[derive(Debug, Serialize, ToSchema)]
pub struct SpeakerList {
    pub total: usize,
    pub speakers: Vec<Speaker>,
}

/// `GET /api/speakers`.
#[utoipa::path(
    get,
    path = "/api/speakers",
    operation_id = "list_speakers",
    tag = "speakers",
    summary = "The caller's known speakers",
    responses(
        (status = 200, description = "Known speakers, by name (prints without their embeddings)", body = SpeakerList),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn list(state: web::Data<AppState>, caller: Caller) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let owner = caller.owner();
    let speakers: Vec<Speaker> = blocking(&state, move |lib| lib.list(owner.as_deref()))
        .await?
        .into_iter()
        .map(Speaker::public)
        .collect();
    Ok(HttpResponse::Ok().json(SpeakerList {
        total: speakers.len(),
        speakers,
    }))
}

/// A finished job's speaker to enrol.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Enrol {
    /// Who it is (1 to 80 characters). A name the library has already gets
    /// this voice print added.
    pub name: String,
    pub job_id: String,
    /// The speaker's label in that job's result (`SPEAKER_01`), or the name
    /// it shows now.
    pub speaker: String,
}

/// A reference clip to enrol (multipart form).
#[derive(Debug, ToSchema)]
#[allow(dead_code)]
pub struct EnrolClip {
    /// Who it is.
    pub name: String,
    /// 2 to 30 seconds of that one voice, in any format an upload takes.
    #[schema(format = Binary, content_media_type = "application/octet-stream")]
    pub file: String,
}

/// Largest reference clip accepted (bytes): 30 s of 16-bit stereo 48 kHz WAV and more.
const MAX_CLIP_BYTES: u64 = 16 * 1024 * 1024;

/// `POST /api/speakers`: JSON (a job's speaker) or multipart (a clip).
#[utoipa::path(
    post,
    path = "/api/speakers",
    operation_id = "enrol_speaker",
    tag = "speakers",
    summary = "Name a finished job's speaker, or enrol a reference clip; the voice is recognised in later jobs",
    request_body(content(
        (Enrol = "application/json"),
        (EnrolClip = "multipart/form-data"),
    )),
    responses(
        (status = 201, description = "The known speaker (new, or with one more print)", body = Speaker),
        (status = 400, description = "A bad name, no such speaker in the job, a job that is not finished, or a clip that is not 2 to 30 s of audio", body = ErrorBody),
        (status = 408, description = "The clip's upload stalled", body = ErrorBody),
        (status = 413, description = "A clip over 16 MB, or of no announced length", body = ErrorBody),
        (status = 422, description = "The clip is not audio Colloquy reads", body = ErrorBody),
        (status = 503, description = "No upload slot free (`Retry-After`)", body = ErrorBody),
        (status = 507, description = "The server's storage is full", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such job, or another key's job", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn enrol(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        return enrol_clip(state, caller, req, payload).await;
    }
    state.limits.check(&caller, Bucket::Reads)?;
    let body = web::Json::<Enrol>::from_request(&req, &mut payload.into_inner())
        .await
        .map_err(|e| ApiError::BadRequest(format!("bad JSON body: {e}")))?;
    let Enrol {
        name,
        job_id: raw,
        speaker,
    } = body.into_inner();
    let id = job_id(&raw)?;
    let job = visible_job(&state, &caller, id).await?;
    if job.status != JobStatus::Completed {
        return Err(ApiError::BadRequest(format!(
            "job {id} is {}: speakers are named once it has completed",
            job.status.as_str()
        )));
    }
    let voices = node(&state)?
        .registry
        .send(JobVoices(id))
        .await??
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "job {id} has no voice prints (it ran before they were kept): upload it again"
            ))
        })?;
    // the label, or the name the result shows for it now
    let body = state.jobs.result(id).await?;
    let result = super::handlers::typed_result(&body)?;
    let label = result
        .known_speakers
        .iter()
        .find(|k| k.speaker == speaker)
        .map(|k| k.label.clone())
        .unwrap_or(speaker.clone());
    let voice = voices
        .into_iter()
        .find(|v| v.speaker == label)
        .ok_or_else(|| ApiError::BadRequest(format!("job {id} has no speaker {speaker:?}")))?;
    let owner = caller.owner();
    let source = PrintSource::Job {
        job_id: id,
        speaker: label.clone(),
    };
    let known = blocking(&state, move |lib| {
        lib.enrol(owner.as_deref(), &name, voice.embedding, source)
    })
    .await?;
    carry(
        &state,
        &caller,
        SpeakerChange::Named {
            job: id,
            label,
            speaker_id: known.id.clone(),
            name: known.name.clone(),
        },
    )
    .await?;
    Ok(HttpResponse::Created().json(known.public()))
}

/// A reference clip: uploaded as a job of one speaker (the same checks,
/// limits and pipeline as any upload), its print enrolled, the job deleted.
async fn enrol_clip(
    state: web::Data<AppState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Uploads)?;
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_none_or(|n| n > MAX_CLIP_BYTES) {
        return Err(ApiError::TooLarge {
            limit: MAX_CLIP_BYTES,
        });
    }
    let form = Multipart::new(req.headers(), payload.into_inner());
    let mut name = None;
    let job = receive(&state, &caller, &req, form, |fields| {
        let given = fields
            .get("name")
            .and_then(|v| v.last())
            .cloned()
            .unwrap_or_default();
        name = Some(crate::speakers::clean_name(&given)?);
        Ok(Submission::options(JobOptions {
            num_speakers: Some(1),
            ..Default::default()
        }))
    })
    .await?;
    let id = job.job_id;
    let name = name.unwrap_or_default();
    node(&state)?;
    let ended = state.jobs.watch(id).await?;
    // whatever happens next, the clip's job goes (no audio or result is kept)
    let outcome = enrol_ended(&state, &caller, ended, &name).await;
    state.jobs.delete(id).await?;
    Ok(HttpResponse::Created().json(outcome?.public()))
}

async fn enrol_ended(
    state: &AppState,
    caller: &Caller,
    ended: Option<crate::registry::Job>,
    name: &str,
) -> Result<Speaker, ApiError> {
    let job = ended.ok_or_else(|| ApiError::BadRequest("the clip's job was cancelled".into()))?;
    if job.status != JobStatus::Completed {
        return Err(super::handlers::failure(job));
    }
    let seconds = job.duration.unwrap_or(0.0);
    if !(CLIP_SECONDS.0..=CLIP_SECONDS.1).contains(&seconds) {
        return Err(ApiError::BadRequest(format!(
            "a reference clip is {} to {} s of one voice; this one is {seconds:.1} s",
            CLIP_SECONDS.0, CLIP_SECONDS.1
        )));
    }
    let voice = node(state)?
        .registry
        .send(JobVoices(job.job_id))
        .await??
        .and_then(|v| v.into_iter().next())
        .ok_or_else(|| ApiError::BadRequest("no voice was found in the clip".into()))?;
    let owner = caller.owner();
    let source = PrintSource::Clip {
        filename: job.filename.clone(),
        seconds,
    };
    let name = name.to_string();
    blocking(state, move |lib| {
        lib.enrol(owner.as_deref(), &name, voice.embedding, source)
    })
    .await
}

/// A new name.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    pub name: String,
}

/// `PATCH /api/speakers/{id}`.
#[utoipa::path(
    patch,
    path = "/api/speakers/{id}",
    operation_id = "rename_speaker",
    tag = "speakers",
    summary = "Rename a known speaker (in every stored result too)",
    params(("id" = String, Path, description = "The speaker's id (`spk_...`)")),
    request_body = Rename,
    responses(
        (status = 200, description = "The renamed speaker", body = Speaker),
        (status = 400, description = "A bad name", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such speaker in the caller's library", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn rename(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Rename>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let id = path.into_inner();
    own(&state, &caller, id.clone()).await?;
    let name = body.into_inner().name;
    let moved = id.clone();
    let renamed = blocking(&state, move |lib| lib.rename(&moved, &name)).await?;
    carry(
        &state,
        &caller,
        SpeakerChange::Renamed {
            id: id.clone(),
            new_id: id,
            name: renamed.name.clone(),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(renamed.public()))
}

/// `DELETE /api/speakers/{id}`.
#[utoipa::path(
    delete,
    path = "/api/speakers/{id}",
    operation_id = "delete_speaker",
    tag = "speakers",
    summary = "Forget a known speaker and every voice print of them",
    params(("id" = String, Path, description = "The speaker's id (`spk_...`)")),
    responses(
        (status = 200, description = "The speaker as it was (results show the diarizer's labels again)", body = Speaker),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such speaker in the caller's library", body = ErrorBody),
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
    let id = path.into_inner();
    own(&state, &caller, id.clone()).await?;
    let moved = id.clone();
    let gone = blocking(&state, move |lib| lib.delete(&moved))
        .await?
        .ok_or(ApiError::NotFound)?;
    carry(&state, &caller, SpeakerChange::Deleted { id }).await?;
    Ok(HttpResponse::Ok().json(gone.public()))
}

/// The speaker whose prints join.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Merge {
    pub from: String,
}

/// `POST /api/speakers/{id}/merge`.
#[utoipa::path(
    post,
    path = "/api/speakers/{id}/merge",
    operation_id = "merge_speakers",
    tag = "speakers",
    summary = "Merge another known speaker into this one",
    params(("id" = String, Path, description = "The speaker that stays (`spk_...`)")),
    request_body = Merge,
    responses(
        (status = 200, description = "The speaker with both's prints", body = Speaker),
        (status = 400, description = "A speaker merged into itself", body = ErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "Either speaker is not in the caller's library", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn merge(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
    body: web::Json<Merge>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let into = path.into_inner();
    let from = body.into_inner().from;
    own(&state, &caller, into.clone()).await?;
    own(&state, &caller, from.clone()).await?;
    let (a, b) = (into.clone(), from.clone());
    let merged = blocking(&state, move |lib| lib.merge(&a, &b)).await?;
    carry(
        &state,
        &caller,
        SpeakerChange::Renamed {
            id: from,
            new_id: into,
            name: merged.name.clone(),
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(merged.public()))
}

/// What `POST /api/speakers/{id}/relabel` changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Relabelled {
    pub speaker: Speaker,
    /// Stored results where one of the job's speakers took the name now.
    pub results_changed: usize,
}

/// `POST /api/speakers/{id}/relabel`.
#[utoipa::path(
    post,
    path = "/api/speakers/{id}/relabel",
    operation_id = "relabel_speaker",
    tag = "speakers",
    summary = "Look for a known speaker in every stored result and name them where the voice matches (no transcription runs again)",
    params(("id" = String, Path, description = "The speaker's id (`spk_...`)")),
    responses(
        (status = 200, description = "The speaker, and how many results now carry the name", body = Relabelled),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such speaker in the caller's library", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn relabel(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let speaker = own(&state, &caller, path.into_inner()).await?;
    let results_changed = carry(
        &state,
        &caller,
        SpeakerChange::Recognised {
            speaker: speaker.clone(),
            threshold: state.config.speakers.match_threshold,
        },
    )
    .await?;
    Ok(HttpResponse::Ok().json(Relabelled {
        speaker: speaker.public(),
        results_changed,
    }))
}
