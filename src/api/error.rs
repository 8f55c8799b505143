//! Every API error, and the one place that maps errors to HTTP statuses.
//! Bodies are JSON: `{"error": "<kind>", "message": "<text>"}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

use crate::actors::FailureKind;
use crate::registry::{Job, RegistryError};

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
    #[error("job is still {}", serde_json::to_value(.0.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())]
    NotReady(Box<Job>),
    /// Results asked for a job that failed: 422 when its file was the
    /// cause, 500 when we were.
    #[error("{message}")]
    JobFailed { kind: FailureKind, message: String },
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    fn kind(&self) -> &'static str {
        match self {
            ApiError::NotFound => "not_found",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::UnsupportedType(_) => "unsupported_type",
            ApiError::TooLarge { .. } => "too_large",
            ApiError::QueueFull { .. } => "queue_full",
            ApiError::NotReady(_) => "not_ready",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::OverQuota { .. } => "over_quota",
            ApiError::Busy { .. } => "busy",
            ApiError::Timeout(_) => "timeout",
            ApiError::StorageFull => "storage_full",
            ApiError::JobFailed {
                kind: FailureKind::Input,
                ..
            } => "bad_input",
            ApiError::JobFailed { .. } => "job_failed",
            ApiError::Internal(_) => "internal",
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
        let mut body = json!({ "error": self.kind(), "message": self.to_string() });
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
                body["job_id"] = json!(job.job_id);
                body["status"] = json!(job.status);
                body["progress"] = json!(job.progress);
                body["step"] = json!(job.step);
            }
            ApiError::TooLarge { .. } | ApiError::Timeout(_) => {
                // the rest of the body is not read: the connection cannot be reused
                res.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        res.json(body)
    }
}
