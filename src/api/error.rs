//! Every API error, and the one place that maps errors to HTTP statuses.
//! Bodies are JSON: `{"error": "<kind>", "message": "<text>"}`.

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

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
    /// Results asked for while the job is queued or processing (202).
    #[error("job is still {}", serde_json::to_value(.0.status).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default())]
    NotReady(Box<Job>),
    /// Results asked for a job whose pipeline failed.
    #[error("{0}")]
    JobFailed(String),
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
            ApiError::JobFailed(_) => "job_failed",
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
        ApiError::Internal(e.to_string())
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
            ApiError::JobFailed(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        let mut body = json!({ "error": self.kind(), "message": self.to_string() });
        match self {
            ApiError::QueueFull { retry_after } => {
                res.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::NotReady(job) => {
                body["job_id"] = json!(job.job_id);
                body["status"] = json!(job.status);
                body["progress"] = json!(job.progress);
                body["step"] = json!(job.step);
            }
            ApiError::TooLarge { .. } => {
                // the rest of the body is not read: the connection cannot be reused
                res.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        res.json(body)
    }
}
