//! Every API error, and the one place that maps errors to HTTP statuses.
//! Bodies are JSON: `{"error": "<kind>", "message": "<text>"}` ([`ErrorBody`];
//! 202 "not ready" adds the job's progress: [`Pending`]).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::actors::FailureKind;
use crate::registry::{Job, JobStatus, RegistryError};

/// What went wrong, in one word: the `error` of every error body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    NotFound,
    BadRequest,
    UnsupportedType,
    TooLarge,
    QueueFull,
    NotReady,
    Unauthorized,
    Forbidden,
    RateLimited,
    OverQuota,
    Busy,
    Timeout,
    StorageFull,
    /// The job's file could not be processed (422).
    BadInput,
    /// The job failed through our fault (500).
    JobFailed,
    Internal,
}

/// The body of every API error.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorKind,
    /// For people: what happened and, where there is one, what to do.
    pub message: String,
}

/// The body of 202 from `GET /api/results/{id}`: the job has not ended yet.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Pending {
    /// Always `not_ready`.
    pub error: ErrorKind,
    pub message: String,
    pub job_id: Uuid,
    pub status: JobStatus,
    /// Percent done.
    pub progress: u8,
    /// The stage the job is in.
    pub step: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Unknown job, or an id that is not a UUID (never looked up on disk).
    #[error("job not found")]
    NotFound,
    #[error("{0}")]
    BadRequest(String),
    #[error("unsupported file type: {0}")]
    UnsupportedType(String),
    #[error("file too large: the limit is {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("too many jobs waiting; retry in {retry_after} s")]
    QueueFull { retry_after: u64 },
    /// No key, or a key that is unknown or revoked (401).
    #[error("{0}")]
    Unauthorized(String),
    /// A key without the right, a foreign Host or Origin (403).
    #[error("{0}")]
    Forbidden(String),
    /// Over a per-key rate limit (429 with Retry-After).
    #[error("too many requests: retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// Over a per-key limit on jobs waiting or bytes kept (429).
    #[error("{message}")]
    OverQuota { message: String, retry_after: u64 },
    /// Every upload slot is taken (503 with Retry-After).
    #[error("the server is receiving too many uploads; retry in {retry_after} s")]
    Busy { retry_after: u64 },
    /// An upload body that stalled or crawled (408).
    #[error("{0}")]
    Timeout(String),
    /// The storage folder is full (507).
    #[error("the server's storage is full; the upload was not kept")]
    StorageFull,
    /// Results asked for while the job is queued or processing (202).
    #[error("job is still {}", .0.status.as_str())]
    NotReady(Box<Job>),
    /// Results asked for a job that failed: 422 when its file was the
    /// cause, 500 when we were.
    #[error("{message}")]
    JobFailed { kind: FailureKind, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ApiError::NotFound => ErrorKind::NotFound,
            ApiError::BadRequest(_) => ErrorKind::BadRequest,
            ApiError::UnsupportedType(_) => ErrorKind::UnsupportedType,
            ApiError::TooLarge { .. } => ErrorKind::TooLarge,
            ApiError::QueueFull { .. } => ErrorKind::QueueFull,
            ApiError::NotReady(_) => ErrorKind::NotReady,
            ApiError::Unauthorized(_) => ErrorKind::Unauthorized,
            ApiError::Forbidden(_) => ErrorKind::Forbidden,
            ApiError::RateLimited { .. } => ErrorKind::RateLimited,
            ApiError::OverQuota { .. } => ErrorKind::OverQuota,
            ApiError::Busy { .. } => ErrorKind::Busy,
            ApiError::Timeout(_) => ErrorKind::Timeout,
            ApiError::StorageFull => ErrorKind::StorageFull,
            ApiError::JobFailed {
                kind: FailureKind::Input,
                ..
            } => ErrorKind::BadInput,
            ApiError::JobFailed { .. } => ErrorKind::JobFailed,
            ApiError::Internal(_) => ErrorKind::Internal,
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<actix::MailboxError> for ApiError {
    fn from(e: actix::MailboxError) -> Self {
        ApiError::Internal(format!("job registry unavailable: {e}"))
    }
}

impl From<std::io::Error> for ApiError {
    fn from(e: std::io::Error) -> Self {
        match e.raw_os_error() {
            Some(28) => ApiError::StorageFull,  // ENOSPC
            Some(122) => ApiError::StorageFull, // EDQUOT
            // EMFILE, ENFILE: out of file descriptors for now
            Some(24) | Some(23) => ApiError::Busy { retry_after: 5 },
            _ => ApiError::Internal(e.to_string()),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) | ApiError::UnsupportedType(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::QueueFull { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::NotReady(_) => StatusCode::ACCEPTED,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } | ApiError::OverQuota { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Busy { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::StorageFull => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::JobFailed {
                kind: FailureKind::Input,
                ..
            } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::JobFailed { .. } | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        let (error, message) = (self.kind(), self.to_string());
        match self {
            ApiError::QueueFull { retry_after }
            | ApiError::RateLimited { retry_after }
            | ApiError::OverQuota { retry_after, .. }
            | ApiError::Busy { retry_after } => {
                res.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::Unauthorized(_) => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer"));
            }
            ApiError::NotReady(job) => {
                return res.json(Pending {
                    error,
                    message,
                    job_id: job.job_id,
                    status: job.status,
                    progress: job.progress,
                    step: job.step.clone(),
                });
            }
            ApiError::TooLarge { .. } | ApiError::Timeout(_) => {
                // the rest of the body is not read: the connection cannot be reused
                res.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        res.json(ErrorBody { error, message })
    }
}
