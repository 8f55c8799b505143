//! The OpenAI-compatible door: `POST /v1/audio/transcriptions` and
//! `GET /v1/models`, so the official `openai` clients (and tools built on
//! them) work unchanged with `base_url = http://host:8000/v1`.
//!
//! A transcription request is a job like any other: the upload goes through
//! the same checks and registry (listed in `/api/jobs`, durable across
//! restarts, cancellable with `DELETE /api/jobs/{id}`), and the answer comes
//! when the job ends (the registry tells the handler; nothing polls). Its
//! `x-colloquy-job-id` header names the job.
//!
//! Form fields: `file`, `model` (any value: `whisper-1`, OpenAI's
//! transcription model names and any other label mean the served model; an
//! installed model's own name picks it: each transcriber worker loads it on
//! the first job that names it and keeps the last one loaded),
//! `response_format` = json | text | srt | verbose_json | vtt |
//! diarized_json, `timestamp_granularities[]` = segment | word (verbose_json),
//! `known_speaker_names[]` + `known_speaker_references[]` (up to 4 names,
//! each with a data URL of 2 to 30 s of that voice: the speakers whose
//! voices match take the names), and Colloquy's `num_speakers`,
//! `min_speakers`, `max_speakers`.
//! `language`, `prompt` and `temperature` apply to the request's job (a
//! language the answering model does not know is a 400; the prompt is the text
//! before the first window; a temperature above 0 is the first one tried,
//! the configured ones above it the fallback). Errors use OpenAI's shape:
//! `{"error": {"message", "type", "param", "code"}}`.

use actix_multipart::Multipart;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use super::access::{Bucket, Caller};
use super::error::ApiError;
use super::handlers::{failure, typed_result};
use super::upload::{receive, Fields, Submission};
use super::AppState;
use crate::export::{self, Format, Names};
use crate::registry::{JobOptions, JobStatus};
use crate::whisper::Overrides;

/// Longest `prompt` taken (Whisper reads at most its last 223 tokens).
const MAX_PROMPT_CHARS: usize = 4000;
use crate::result::JobResult;

/// OpenAI's names that mean "the model this server runs".
const ALIASES: [&str; 4] = [
    "whisper-1",
    "gpt-4o-transcribe",
    "gpt-4o-mini-transcribe",
    "gpt-4o-transcribe-diarize",
];

/// An [`ApiError`] in OpenAI's error shape (same status codes).
#[derive(Debug)]
pub struct OpenAiError(pub ApiError, pub Option<&'static str>);

impl std::fmt::Display for OpenAiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl From<ApiError> for OpenAiError {
    fn from(e: ApiError) -> Self {
        OpenAiError(e, None)
    }
}

impl From<actix::MailboxError> for OpenAiError {
    fn from(e: actix::MailboxError) -> Self {
        OpenAiError(e.into(), None)
    }
}

/// OpenAI's error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorBody {
    pub error: OpenAiErrorDetail,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct OpenAiErrorDetail {
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, `permission_error`,
    /// `not_found_error`, `rate_limit_error` or `server_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The form field at fault, when one is.
    pub param: Option<&'static str>,
    /// Always null (OpenAI's field, kept for its clients).
    #[schema(value_type = Option<String>)]
    pub code: Option<()>,
}

fn invalid(message: impl Into<String>, param: &'static str) -> OpenAiError {
    OpenAiError(ApiError::BadRequest(message.into()), Some(param))
}

impl ResponseError for OpenAiError {
    fn status_code(&self) -> StatusCode {
        self.0.status_code()
    }

    fn error_response(&self) -> HttpResponse {
        let ours = self.0.error_response();
        let status = self.status_code();
        let kind = match status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let mut res = HttpResponse::build(status);
        for (name, value) in ours.headers() {
            if name != actix_web::http::header::CONTENT_TYPE {
                res.insert_header((name.clone(), value.clone()));
            }
        }
        res.json(OpenAiErrorBody {
            error: OpenAiErrorDetail {
                message: self.0.to_string(),
                kind,
                param: self.1,
                code: None,
            },
        })
    }
}

fn one<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .get(name)
        .and_then(|v| v.last())
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
}

fn count(fields: &Fields, name: &'static str) -> Result<Option<usize>, OpenAiError> {
    match one(fields, name) {
        None => Ok(None),
        Some(v) => match v.parse::<usize>() {
            Ok(n) if (1..=64).contains(&n) => Ok(Some(n)),
            _ => Err(invalid(
                format!("{name} must be a whole number from 1 to 64"),
                name,
            )),
        },
    }
}

/// What a request asks for, checked before the job runs.
struct Request {
    format: OpenAiFormat,
    words: bool,
    /// An installed model other than the served one, named by `model`.
    model: Option<String>,
}

fn parse_request(state: &AppState, fields: &Fields) -> Result<Request, OpenAiError> {
    let asked = one(fields, "model").unwrap_or("whisper-1");
    let served = &state.config.whisper.model;
    let installed = crate::whisper::model::installed_models(&state.config.models_root());
    // another installed model's own name picks it; any other name (OpenAI's,
    // or a client's label) means the served model
    let chosen = (!ALIASES.contains(&asked) && asked != served)
        .then(|| installed.iter().find(|m| m.name == asked))
        .flatten();
    let model = chosen.map(|m| m.name.clone());
    let format = match one(fields, "response_format").unwrap_or("json") {
        "json" => OpenAiFormat::Json,
        "text" => OpenAiFormat::Text,
        "srt" => OpenAiFormat::Srt,
        "vtt" => OpenAiFormat::Vtt,
        "verbose_json" => OpenAiFormat::VerboseJson,
        "diarized_json" => OpenAiFormat::DiarizedJson,
        other => {
            return Err(invalid(
                format!("response_format '{other}' is not one of json, text, srt, verbose_json, vtt, diarized_json"),
                "response_format",
            ))
        }
    };
    let mut words = false;
    for g in fields
        .get("timestamp_granularities[]")
        .into_iter()
        .chain(fields.get("timestamp_granularities"))
        .flatten()
    {
        match g.trim() {
            "word" => words = true,
            "segment" => {}
            other => {
                return Err(invalid(
                    format!("timestamp_granularities: '{other}' is not segment or word"),
                    "timestamp_granularities",
                ))
            }
        }
    }
    if let Some(t) = one(fields, "temperature") {
        if !t.parse::<f32>().is_ok_and(|t| (0.0..=1.0).contains(&t)) {
            return Err(invalid(
                "temperature must be between 0 and 1",
                "temperature",
            ));
        }
    }
    if let Some(lang) = one(fields, "language") {
        if lang.len() > 8 || !lang.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
            return Err(invalid(
                format!("language '{lang}' is not a language code"),
                "language",
            ));
        }
        // the model that answers must know it (an English-only model: "en" only)
        let answering = model.as_deref().unwrap_or(served);
        if let Some(m) = installed.iter().find(|m| m.name == answering) {
            let c = &m.config;
            crate::whisper::check_language(answering, c.multilingual, &c.languages, lang)
                .map_err(|e| invalid(e, "language"))?;
        }
    }
    if one(fields, "prompt").is_some_and(|p| p.chars().count() > MAX_PROMPT_CHARS) {
        return Err(invalid(
            format!("prompt is longer than {MAX_PROMPT_CHARS} characters (Whisper reads its last 223 tokens)"),
            "prompt",
        ));
    }
    Ok(Request {
        format,
        words,
        model,
    })
}

/// Every value of a list field (`name[]`, or `name` repeated).
fn all(fields: &Fields, name: &str) -> Vec<String> {
    fields
        .get(&format!("{name}[]"))
        .into_iter()
        .chain(fields.get(name))
        .flatten()
        .cloned()
        .collect()
}

/// The job's options, and the reference clips to store beside its audio.
fn options(fields: &Fields) -> Result<Submission, OpenAiError> {
    let (references, attachments) = super::references::parse(
        &all(fields, "known_speaker_names"),
        &all(fields, "known_speaker_references"),
    )
    .map_err(|(message, param)| invalid(message, param))?;
    let mut o = JobOptions {
        num_speakers: count(fields, "num_speakers")?,
        min_speakers: count(fields, "min_speakers")?,
        max_speakers: count(fields, "max_speakers")?,
        // checked by parse_request
        whisper: Overrides {
            language: one(fields, "language").map(String::from),
            prompt: one(fields, "prompt")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from),
            temperature: one(fields, "temperature")
                .and_then(|t| t.parse::<f32>().ok())
                .filter(|t| *t > 0.0),
            // set from the checked request
            model: None,
        },
        known_speakers: None,
        references,
    };
    if let (Some(a), Some(b)) = (o.min_speakers, o.max_speakers) {
        if a > b {
            return Err(invalid(
                "min_speakers is larger than max_speakers",
                "min_speakers",
            ));
        }
    }
    if !o.references.is_empty() && o.num_speakers.is_none() && o.min_speakers.is_none() {
        // as with known_speakers on /api/upload: at least that many voices
        // are looked for, never above a max_speakers given with them
        o.min_speakers = Some(o.references.len().min(o.max_speakers.unwrap_or(64)));
    }
    Ok(Submission {
        options: o,
        attachments,
        ..Default::default()
    })
}

/// The form of `POST /v1/audio/transcriptions`: OpenAI's fields and
/// Colloquy's speaker counts (read by `parse_request` and `options`; other
/// fields are ignored).
#[derive(Debug, ToSchema)]
pub struct TranscriptionForm {
    /// The audio; its file name's extension must be one of
    /// `server.allowed_extensions`.
    #[schema(value_type = String, format = Binary)]
    pub file: Vec<u8>,
    /// `whisper-1`, OpenAI's transcription model names or any other label
    /// mean the served model; an installed model's own name picks it.
    #[schema(default = "whisper-1", nullable = false)]
    pub model: Option<String>,
    /// A language code (checked; the server's `whisper.language` is used).
    #[schema(nullable = false, pattern = r"^\s*[A-Za-z-]{0,8}\s*$")]
    pub language: Option<String>,
    /// Accepted and not used.
    #[schema(nullable = false)]
    pub prompt: Option<String>,
    #[schema(nullable = false)]
    pub response_format: Option<OpenAiFormat>,
    /// 0 to 1 (checked; the server's `whisper.temperatures` are used).
    #[schema(minimum = 0.0, maximum = 1.0, nullable = false)]
    pub temperature: Option<f32>,
    /// `word` adds `words` to `verbose_json`.
    #[schema(rename = "timestamp_granularities[]", nullable = false)]
    pub timestamp_granularities: Option<Vec<Granularity>>,
    #[schema(minimum = 1, maximum = 64, nullable = false)]
    pub num_speakers: Option<usize>,
    #[schema(minimum = 1, maximum = 64, nullable = false)]
    pub min_speakers: Option<usize>,
    #[schema(minimum = 1, maximum = 64, nullable = false)]
    pub max_speakers: Option<usize>,
    /// Names of up to 4 people to look for in this recording, one per
    /// `known_speaker_references[]` clip, in the same order: a speaker whose
    /// voice matches takes the name (in every format, `diarized_json`'s
    /// `speaker` too) instead of the speaker library's.
    #[schema(rename = "known_speaker_names[]", nullable = false, max_items = 4)]
    pub known_speaker_names: Option<Vec<String>>,
    /// Each name's reference clip: a base64 data URL of 2 to 30 s of that
    /// voice alone (`data:audio/wav;base64,...`; any format `file` takes).
    #[schema(rename = "known_speaker_references[]", nullable = false, max_items = 4)]
    pub known_speaker_references: Option<Vec<String>>,
}

/// `response_format` of a transcription request (default `json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OpenAiFormat {
    Json,
    Text,
    Srt,
    Vtt,
    VerboseJson,
    DiarizedJson,
}

/// A `timestamp_granularities[]` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Granularity {
    Segment,
    Word,
}

/// `response_format = json`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Transcription {
    pub text: String,
}

/// A segment of `verbose_json` (decoding statistics the result does not
/// keep are 0, `tokens` empty).
#[derive(Debug, Serialize, ToSchema)]
pub struct VerboseSegment {
    pub id: usize,
    pub seek: u64,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub tokens: Vec<u32>,
    pub temperature: f64,
    pub avg_logprob: f64,
    pub compression_ratio: f64,
    pub no_speech_prob: f64,
}

/// A word of `verbose_json` (with `timestamp_granularities[] = word`).
#[derive(Debug, Serialize, ToSchema)]
pub struct TimedWord {
    pub word: String,
    pub start: f64,
    pub end: f64,
}

/// `response_format = verbose_json`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerboseTranscription {
    /// Always `transcribe`.
    pub task: &'static str,
    pub language: String,
    pub duration: f64,
    pub text: String,
    pub segments: Vec<VerboseSegment>,
    /// Only with word granularity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub words: Option<Vec<TimedWord>>,
}

/// One speaker utterance of `diarized_json`.
#[derive(Debug, Serialize, ToSchema)]
pub struct DiarizedSegment {
    /// Always `transcript.text.segment`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// `seg_000`, `seg_001`, ...
    pub id: String,
    pub start: f64,
    pub end: f64,
    pub text: String,
    pub speaker: String,
}

/// `response_format = diarized_json`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DiarizedTranscription {
    /// Always `transcribe`.
    pub task: &'static str,
    pub duration: f64,
    pub text: String,
    pub segments: Vec<DiarizedSegment>,
}

/// The JSON answers of a transcription, by `response_format` (no extra
/// fields, so that each body matches exactly one of them).
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum TranscriptionJson {
    Json(Transcription),
    VerboseJson(VerboseTranscription),
    DiarizedJson(DiarizedTranscription),
}

/// `POST /v1/audio/transcriptions`.
#[utoipa::path(
    post,
    path = "/v1/audio/transcriptions",
    operation_id = "create_transcription",
    tag = "openai",
    summary = "OpenAI-compatible transcription (answered when its job ends)",
    request_body(content = TranscriptionForm, content_type = "multipart/form-data"),
    responses(
        (status = 200, description = "The transcript in `response_format`: json, verbose_json, diarized_json (application/json), text (text/plain), srt (application/x-subrip), vtt (text/vtt); the `x-colloquy-job-id` header names the job", content(
            (TranscriptionJson = "application/json"),
            (String = "text/plain"),
            (String = "application/x-subrip"),
            (String = "text/vtt"),
        ), headers(("x-colloquy-job-id" = String, description = "The job (listed in /api/jobs)")), links(
            ("status" = (operation_id = "job_status", parameters(("id" = "$response.header.x-colloquy-job-id")))),
            ("results" = (operation_id = "job_results", parameters(("id" = "$response.header.x-colloquy-job-id")))),
        )),
        (status = 400, description = "A bad form field (named in `param`), file type or model, or the job was cancelled", body = OpenAiErrorBody),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = OpenAiErrorBody),
        (status = 408, description = "The body stalled or crawled", body = OpenAiErrorBody),
        (status = 413, description = "Over `server.max_upload_bytes`", body = OpenAiErrorBody),
        (status = 422, description = "The file could not be processed", body = OpenAiErrorBody),
        (status = 429, description = "Over the key's upload rate, the queue full, or the key over its quota (`Retry-After`)", body = OpenAiErrorBody),
        (status = 500, description = "The job failed through the server's fault", body = OpenAiErrorBody),
        (status = 503, description = "Every upload slot is taken (`Retry-After`)", body = OpenAiErrorBody),
        (status = 507, description = "The server's storage is full", body = OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn transcriptions(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
    req: HttpRequest,
    form: Multipart,
) -> Result<HttpResponse, OpenAiError> {
    let caller = caller?;
    state.limits.check(&caller, Bucket::Uploads)?;
    let mut checked: Option<Request> = None;
    // the form field a refusal names (OpenAI's `param`), kept across `receive`
    let mut param: Option<&'static str> = None;
    let received = receive(&state, &caller, &req, form, |fields| {
        let parsed = parse_request(&state, fields).and_then(|r| Ok((r, options(fields)?)));
        match parsed {
            Ok((request, mut submission)) => {
                submission.options.whisper.model = request.model.clone();
                checked = Some(request);
                Ok(submission)
            }
            Err(OpenAiError(e, field)) => {
                param = field;
                Err(e)
            }
        }
    })
    .await;
    let job = received.map_err(|e| OpenAiError(e, param))?;
    let request = checked.ok_or_else(|| ApiError::Internal("request not checked".into()))?;
    let id = job.job_id;
    // the registry tells us when the job ends
    let Some(job) = state.jobs.watch(id).await.map_err(ApiError::from)? else {
        return Err(ApiError::BadRequest(format!("job {id} was cancelled")).into());
    };
    if job.status != JobStatus::Completed {
        return Err(failure(job).into());
    }
    let body = state.jobs.result(id).await.map_err(ApiError::from)?;
    let result = typed_result(&body)?;
    let mut res = HttpResponse::Ok();
    res.insert_header(("x-colloquy-job-id", id.to_string()));
    let names = Names::default();
    Ok(match request.format {
        OpenAiFormat::Json => res.json(TranscriptionJson::Json(Transcription {
            text: result.full_text.trim().to_string(),
        })),
        OpenAiFormat::Text => res
            .content_type("text/plain; charset=utf-8")
            .body(format!("{}\n", result.full_text.trim())),
        OpenAiFormat::Srt => res
            .content_type(Format::Srt.content_type())
            .body(export::render(&result, Format::Srt, &names, "audio")),
        OpenAiFormat::Vtt => res
            .content_type(Format::Vtt.content_type())
            .body(export::render(&result, Format::Vtt, &names, "audio")),
        OpenAiFormat::VerboseJson => res.json(TranscriptionJson::VerboseJson(verbose_json(
            &result,
            request.words,
        ))),
        OpenAiFormat::DiarizedJson => {
            res.json(TranscriptionJson::DiarizedJson(diarized_json(&result)))
        }
    })
}

/// OpenAI's `verbose_json`: segments with Whisper's decoding statistics
/// (0 and no tokens for results from before they were kept) and, with word
/// granularity, words.
fn verbose_json(r: &JobResult, words: bool) -> VerboseTranscription {
    let segments = r
        .segments
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let d = s.decoding.as_ref();
            VerboseSegment {
                id: i,
                seek: (s.start * 100.0).round() as u64,
                start: s.start,
                end: s.end,
                text: s.text.clone(),
                tokens: d.map(|d| d.tokens.clone()).unwrap_or_default(),
                temperature: d.map_or(0.0, |d| f64::from(d.temperature)),
                avg_logprob: d.map_or(0.0, |d| d.avg_logprob),
                compression_ratio: d.map_or(0.0, |d| d.compression_ratio),
                no_speech_prob: d.map_or(0.0, |d| f64::from(d.no_speech_prob)),
            }
        })
        .collect();
    let words = words.then(|| {
        r.segments
            .iter()
            .flat_map(|s| &s.words)
            .filter(|w| !w.word.word.trim().is_empty())
            .map(|w| TimedWord {
                word: w.word.word.trim().to_string(),
                start: w.word.start,
                end: w.word.end,
            })
            .collect()
    });
    VerboseTranscription {
        task: "transcribe",
        language: r.language.clone(),
        duration: r.duration,
        text: r.full_text.trim().to_string(),
        segments,
        words,
    }
}

/// OpenAI's `diarized_json`: one segment per speaker utterance.
fn diarized_json(r: &JobResult) -> DiarizedTranscription {
    let segments = r
        .aligned_segments
        .iter()
        .enumerate()
        .map(|(i, u)| DiarizedSegment {
            kind: "transcript.text.segment",
            id: format!("seg_{i:03}"),
            start: u.start,
            end: u.end,
            text: u.text.trim().to_string(),
            speaker: u.speaker.clone(),
        })
        .collect();
    DiarizedTranscription {
        task: "transcribe",
        duration: r.duration,
        text: r.full_text.trim().to_string(),
        segments,
    }
}

/// One model of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Model {
    pub id: String,
    /// Always `model`.
    pub object: &'static str,
    /// Always 0.
    pub created: u64,
    /// Always `colloquy`.
    pub owned_by: &'static str,
}

/// The body of `GET /v1/models`.
#[derive(Debug, Serialize, ToSchema)]
pub struct ModelList {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<Model>,
}

/// `GET /v1/models`: the served model, OpenAI's aliases for it, and every
/// installed model.
#[utoipa::path(
    get,
    path = "/v1/models",
    operation_id = "list_models",
    tag = "openai",
    summary = "The served model, OpenAI's aliases for it, every installed model",
    responses(
        (status = 200, description = "The models", body = ModelList),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = OpenAiErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = OpenAiErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn models(
    state: web::Data<AppState>,
    caller: Result<Caller, ApiError>,
) -> Result<HttpResponse, OpenAiError> {
    let caller = caller?;
    state.limits.check(&caller, Bucket::Reads)?;
    let root = state.config.models_root();
    let installed = web::block(move || crate::whisper::model::installed_models(&root))
        .await
        .unwrap_or_default();
    let mut ids: Vec<String> = vec![state.config.whisper.model.clone()];
    ids.extend(ALIASES.iter().map(|a| a.to_string()));
    for m in installed {
        if !ids.contains(&m.name) {
            ids.push(m.name);
        }
    }
    let data = ids
        .into_iter()
        .map(|id| Model {
            id,
            object: "model",
            created: 0,
            owned_by: "colloquy",
        })
        .collect();
    Ok(HttpResponse::Ok().json(ModelList {
        object: "list",
        data,
    }))
}
