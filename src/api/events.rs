//! `GET /api/jobs/{id}/events`: a job followed live, as Server-Sent Events.
//!
//! Events, each `data` a JSON object:
//! - `status`: the job's record (status, progress, step, `eta_seconds`):
//!   first the state at connection, then on every change;
//! - `segment`: a transcript segment as soon as its window is decoded,
//!   before the speakers are known (`id` numbers them in arrival order;
//!   provisional: the result replaces them). A client that connects late
//!   gets every segment so far after the first `status`;
//! - `done`: once, when the job has ended (its final record: `completed`,
//!   `failed` with `error` and `error_kind`, or `cancelled`); then the
//!   stream ends. A finished job answers `status` and `done` at once.
//!
//! A comment line every 15 s keeps idle connections open through proxies.
//! Nothing polls: the registry publishes every update ([`crate::registry::feed`]).
//! Streams are bounded by `server.max_event_streams` (503 beyond it); a
//! client that falls behind the feed is sent the state afresh (segments
//! again, with the same ids).

use std::time::Duration;

use std::sync::Arc;

use actix_web::web::Bytes;
use actix_web::{web, HttpResponse};
use serde::Serialize;
use serde_json::json;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::OwnedSemaphorePermit;
use uuid::Uuid;

use super::access::{Bucket, Caller};
use super::error::{ApiError, ErrorBody};
use super::handlers::{job_id, visible_job};
use super::AppState;
use crate::jobs::JobStore;
use crate::registry::feed::{Subscription, Update};
use crate::registry::Job;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The name of an event of the stream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EventName {
    /// `data`: the job's record (a Job).
    Status,
    /// `data`: a PartialSegment.
    Segment,
    /// `data`: the final record (a Job; `{"job_id", "status": "cancelled"}` once deleted).
    Done,
}

/// One Server-Sent Event of `GET /api/jobs/{id}/events`, as a client's
/// parser sees it (the wire format is `event:`/`data:` lines).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StreamEvent {
    pub event: EventName,
    /// JSON text: a Job for `status` and `done`, a PartialSegment for `segment`.
    pub data: String,
    /// Milliseconds a client waits before reconnecting (sent once, first).
    pub retry: Option<u64>,
}

/// One event, framed.
fn frame(event: &str, data: &impl Serialize) -> Bytes {
    let data = serde_json::to_string(data).unwrap_or_else(|_| "{}".into());
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The final event of a job that ended (None: deleted).
fn done(id: Uuid, job: Option<&Job>) -> Bytes {
    match job {
        Some(job) => frame("done", job),
        None => frame("done", &json!({ "job_id": id, "status": "cancelled" })),
    }
}

/// Where a stream is.
struct Follow {
    id: Uuid,
    jobs: Arc<dyn JobStore + Send + Sync>,
    /// Frames ready to go, oldest first.
    ready: std::collections::VecDeque<Bytes>,
    /// None once the job has ended (the stream ends when `ready` is empty).
    live: Option<tokio::sync::broadcast::Receiver<Update>>,
    _permit: OwnedSemaphorePermit,
}

impl Follow {
    /// Queues the state at subscription: the record, the segments so far,
    /// and `done` when the job has already ended.
    fn start(&mut self, job: &Job, live: Option<Subscription>) {
        self.ready.push_back(frame("status", job));
        match live {
            Some(sub) => {
                for s in &sub.segments {
                    self.ready.push_back(frame("segment", s));
                }
                self.live = Some(sub.updates);
            }
            None => {
                self.ready.push_back(done(self.id, Some(job)));
                self.live = None;
            }
        }
    }

    async fn resubscribe(&mut self) {
        match self.jobs.follow(self.id).await {
            Ok(Some((job, live))) => self.start(&job, live),
            Ok(None) => {
                self.ready.push_back(done(self.id, None));
                self.live = None;
            }
            _ => self.live = None,
        }
    }

    /// The next frame; None ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if let Some(f) = self.ready.pop_front() {
                return Some(f);
            }
            let rx = self.live.as_mut()?;
            match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
                Err(_) => return Some(Bytes::from_static(b": keep-alive\n\n")),
                Ok(Ok(Update::Status(job))) => return Some(frame("status", &job)),
                Ok(Ok(Update::Segments(segments))) => {
                    self.ready
                        .extend(segments.iter().map(|s| frame("segment", s)));
                }
                Ok(Ok(Update::End(job))) => {
                    self.live = None;
                    return Some(done(self.id, job.as_deref()));
                }
                Ok(Err(RecvError::Lagged(n))) => {
                    tracing::debug!(job_id = %self.id, missed = n, "event stream fell behind");
                    self.resubscribe().await;
                }
                // the registry is gone (shutting down)
                Ok(Err(RecvError::Closed)) => self.live = None,
            }
        }
    }
}

/// `GET /api/jobs/{id}/events`.
#[utoipa::path(
    get,
    path = "/api/jobs/{id}/events",
    operation_id = "job_events",
    tag = "jobs",
    summary = "A job followed live (Server-Sent Events)",
    description = "Events `status` (the job's record: first the state at connection, then on every \
        change), `segment` (a PartialSegment: transcript text as soon as its window is decoded, \
        before the speakers are known; every segment so far right after the first `status`) and \
        `done` (once, the final record), then the stream ends. A comment line every 15 s keeps \
        the connection open.",
    params(("id" = String, Path, description = "The job id (a UUID; anything else is 404)")),
    responses(
        (status = 200, description = "The event stream", content_type = "text/event-stream", body = StreamEvent),
        (status = 401, description = "No live API key (`server.auth = keys`)", body = ErrorBody),
        (status = 404, description = "No such job, or another key's job", body = ErrorBody),
        (status = 429, description = "Over the key's read rate (`Retry-After`)", body = ErrorBody),
        (status = 503, description = "`server.max_event_streams` streams already open (`Retry-After`)", body = ErrorBody),
    ),
    security(("api_key" = [])),
)]
pub async fn events(
    state: web::Data<AppState>,
    caller: Caller,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    state.limits.check(&caller, Bucket::Reads)?;
    let id = job_id(&path)?;
    visible_job(&state, &caller, id).await?;
    let permit = state
        .event_streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::Busy {
            retry_after: state.config.server.retry_after_seconds,
        })?;
    let (job, live) = state.jobs.follow(id).await?.ok_or(ApiError::NotFound)?;
    let mut follow = Follow {
        id,
        jobs: state.jobs.clone(),
        ready: Default::default(),
        live: None,
        _permit: permit,
    };
    follow
        .ready
        .push_back(Bytes::from_static(b"retry: 2000\n\n"));
    follow.start(&job, live);
    let stream = futures::stream::unfold(follow, |mut f| async move {
        let frame = f.next().await?;
        Some((Ok::<_, actix_web::Error>(frame), f))
    });
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(stream))
}
