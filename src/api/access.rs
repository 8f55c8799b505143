//! Who is calling, and how much they may do: the API key behind a request
//! ([`Caller`], an extractor every `/api` handler takes) and the per-key rate
//! limits on uploads and reads (token buckets from `governor`).

use std::future::{ready, Ready};
use std::num::NonZeroU32;
use std::time::Duration;

use actix_web::dev::Payload;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota as RateQuota, RateLimiter};

use super::error::ApiError;
use super::AppState;
use crate::auth::ApiKey;
use crate::config::{AuthMode, ServerConfig};
use crate::registry::{Job, Quota};

/// The caller of an API route: the key it showed (`server.auth = "keys"`),
/// or nobody in particular (`"none"`, loopback only).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: Option<ApiKey>,
    /// The client's address (what rate limits count by without keys).
    pub client: String,
}

impl Caller {
    /// The owner recorded on the jobs this caller creates.
    pub fn owner(&self) -> Option<String> {
        self.key.as_ref().map(|k| k.id.clone())
    }

    /// Admin keys, and everyone when the server runs without keys.
    pub fn is_admin(&self) -> bool {
        self.key.as_ref().is_none_or(|k| k.admin)
    }

    /// Whether the caller may see (read, delete) this job.
    pub fn sees(&self, job: &Job) -> bool {
        match &self.key {
            None => true,
            Some(k) => k.admin || job.owner.as_deref() == Some(k.id.as_str()),
        }
    }

    /// The owner whose jobs a list shows: None = every job.
    pub fn list_filter(&self) -> Option<String> {
        self.key.as_ref().filter(|k| !k.admin).map(|k| k.id.clone())
    }

    /// The caller's own limits on jobs waiting and bytes kept (keys only).
    pub fn quota(&self, server: &ServerConfig) -> Option<Quota> {
        self.key.as_ref().map(|_| Quota {
            max_queued: server.max_queued_jobs_per_key,
            max_stored_bytes: server.max_stored_bytes_per_key,
        })
    }

    fn bucket(&self) -> String {
        match &self.key {
            Some(k) => k.id.clone(),
            None => self.client.clone(),
        }
    }

    fn identify(req: &HttpRequest) -> Result<Caller, ApiError> {
        let state = req
            .app_data::<web::Data<AppState>>()
            .ok_or_else(|| ApiError::Internal("no application state".into()))?;
        let client = req
            .peer_addr()
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        if state.config.server.auth == AuthMode::None {
            return Ok(Caller { key: None, client });
        }
        let token = bearer(req).ok_or_else(|| {
            ApiError::Unauthorized(
                "this server needs an API key: send `Authorization: Bearer <key>` \
                 (keys come from `colloquy keys create`)"
                    .into(),
            )
        })?;
        let key = state
            .keys
            .verify(token)
            .map_err(|e| ApiError::Internal(e.to_string()))?
            .ok_or_else(|| ApiError::Unauthorized("the API key is unknown or revoked".into()))?;
        Ok(Caller {
            key: Some(key),
            client,
        })
    }
}

/// The token of `Authorization: Bearer <token>` (scheme in any case).
fn bearer(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Caller, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(Caller::identify(req))
    }
}

/// Which bucket a request draws from.
#[derive(Debug, Clone, Copy)]
pub enum Bucket {
    Uploads,
    Reads,
}

/// The per-key token buckets (`server.uploads_per_minute`,
/// `server.reads_per_minute`; 0 = no limit). A minute's worth is the burst.
pub struct RateLimits {
    uploads: Option<DefaultKeyedRateLimiter<String>>,
    reads: Option<DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    pub fn new(server: &ServerConfig) -> RateLimits {
        let limiter =
            |n: u32| NonZeroU32::new(n).map(|n| RateLimiter::keyed(RateQuota::per_minute(n)));
        RateLimits {
            uploads: limiter(server.uploads_per_minute),
            reads: limiter(server.reads_per_minute),
        }
    }

    /// Takes one token from the caller's bucket, or says when to retry.
    pub fn check(&self, caller: &Caller, bucket: Bucket) -> Result<(), ApiError> {
        let limiter = match bucket {
            Bucket::Uploads => &self.uploads,
            Bucket::Reads => &self.reads,
        };
        let Some(limiter) = limiter else {
            return Ok(());
        };
        limiter.check_key(&caller.bucket()).map_err(|not_until| {
            let wait: Duration = not_until.wait_time_from(DefaultClock::default().now());
            ApiError::RateLimited {
                retry_after: wait.as_secs_f64().ceil().max(1.0) as u64,
            }
        })
    }
}
