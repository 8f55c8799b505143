//! The actor pipeline: one actix actor per stage, one file each.
//!
//! ```text
//!                                                        ┌─> Transcriber ─┐
//! JobRegistry --admit--> Decoder -> Preprocessor -> Fork ┤                ├─> Join -> Aligner --result--> JobRegistry
//!                                                        └─> Diarizer ────┘
//! ```
//!
//! Transcription and diarization run side by side on the same samples
//! ([`fork`]): one job's latency is the longer of the two, not their sum.
//!
//! Every stage is a [`stage::StageActor`] around a piece of synchronous work
//! (a [`stage::StageWork`]): the actor owns a bounded mailbox and hands each
//! job to the stage's own worker threads, which run the work off the async
//! executor and forward the output to the next stage with an awaited send.
//! A full mailbox downstream therefore stops the stage upstream (backpressure
//! up to the registry, which admits at most `pipeline.max_active_jobs`).
//! Stages hold only the next stage's address and the registry's (for
//! progress and failures); [`pipeline::Pipeline`] wires them from the last
//! back to the first and keeps every handle.

pub mod aligner;
pub mod decoder;
pub mod diarizer;
pub mod fork;
pub mod pipeline;
pub mod preprocessor;
pub mod stage;
pub mod transcriber;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix::Message;
use uuid::Uuid;

use crate::registry::JobOptions;

/// How a stage's worker ended, in the style of Unix exit codes: a send to a
/// stopped next stage becomes `DownstreamClosed`, so `?` works on sends.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorExitStatus {
    /// The input side closed after every job was handled.
    Success,
    /// Asked to stop.
    Quit,
    /// The next stage is gone; the job in hand could not be passed on.
    DownstreamClosed,
    /// The stage's own queue was closed under it.
    Killed,
    /// The stage cannot go on (e.g. its engine failed to load).
    Failure(String),
}

impl std::fmt::Display for ActorExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ActorExitStatus::Failure(m) => write!(f, "failure: {m}"),
            other => write!(
                f,
                "{}",
                serde_json::to_value(other)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default()
            ),
        }
    }
}

impl From<actix::MailboxError> for ActorExitStatus {
    fn from(_: actix::MailboxError) -> Self {
        ActorExitStatus::DownstreamClosed
    }
}

/// Whose fault a failed job is: the file the user sent (not audio, corrupt,
/// too long: the API answers 422 with the message) or ours (500).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    Input,
    Internal,
}

/// Why a job failed in a stage; the message is shown to the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub kind: FailureKind,
    pub message: String,
}

impl JobError {
    /// The user's input cannot be processed.
    pub fn input(message: impl Into<String>) -> JobError {
        JobError {
            kind: FailureKind::Input,
            message: message.into(),
        }
    }
    /// Our failure.
    pub fn internal(message: impl Into<String>) -> JobError {
        JobError {
            kind: FailureKind::Internal,
            message: message.into(),
        }
    }
}

/// Any other error (an engine's, I/O) is ours: a stage that can blame the
/// input says so with [`JobError::input`].
impl<E: std::fmt::Display> From<E> for JobError {
    fn from(e: E) -> Self {
        JobError::internal(e.to_string())
    }
}

/// Set by DELETE; every stage checks it before starting a job and before
/// passing it on, and drops a cancelled job; the Whisper and diarization
/// engines also check it between their units of work (a 30 s window, a batch
/// of windows or embeddings), so a running step stops soon after.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
    /// The flag itself, for an engine to check while it works.
    pub fn flag(&self) -> crate::runtime::StopFlag {
        self.0.clone()
    }
}

/// What travels with a job through every stage besides its payload.
#[derive(Debug, Clone)]
pub struct JobCtx {
    pub id: Uuid,
    /// The uploaded file (in `temp/{id}/`).
    pub audio_path: PathBuf,
    pub options: JobOptions,
    pub cancel: CancelToken,
    /// Seconds of work per stage, in order.
    pub timings: Vec<(&'static str, f64)>,
    /// When the registry admitted the job into the pipeline.
    pub admitted_at: Instant,
    /// Carries `job_id` onto every log line of the job's work.
    pub span: tracing::Span,
    /// The API key that uploaded the job (None without keys): whose
    /// speaker library names its speakers.
    pub owner: Option<String>,
    /// Where the stage working on the job reports (set by the stage's
    /// worker before its work runs): for events a stage tells while it
    /// works, such as partial segments.
    pub events: Option<actix::Recipient<JobEvent>>,
    /// Set by the stage handing the job on: the receiver calls
    /// [`JobCtx::taken`] once the job is its own.
    pub handover: Option<Handover>,
}

/// A job on its way from a stage's worker to the next stage. The sending
/// stage counts the job out once: when the receiver takes it, or, for a
/// receiver that does not say, when the send returns. So a job the registry
/// has completed is counted out by every stage it went through, and a job
/// waiting for room in a full queue is not counted yet.
#[derive(Clone)]
pub struct Handover {
    done: Arc<AtomicBool>,
    count: Arc<dyn Fn() + Send + Sync>,
}

impl Handover {
    pub fn new(count: impl Fn() + Send + Sync + 'static) -> Handover {
        Handover {
            done: Arc::new(AtomicBool::new(false)),
            count: Arc::new(count),
        }
    }

    /// Counts the job out, the first time only.
    pub fn complete(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            (self.count)();
        }
    }
}

impl std::fmt::Debug for Handover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handover")
            .field("done", &self.done.load(Ordering::SeqCst))
            .finish()
    }
}

impl JobCtx {
    pub fn new(id: Uuid, audio_path: PathBuf, options: JobOptions, cancel: CancelToken) -> JobCtx {
        JobCtx {
            span: tracing::info_span!("job", job_id = %id),
            id,
            audio_path,
            options,
            cancel,
            timings: Vec::new(),
            admitted_at: Instant::now(),
            owner: None,
            events: None,
            handover: None,
        }
    }

    /// The job is the receiver's now: the stage that handed it on counts it out.
    pub fn taken(&mut self) {
        if let Some(handover) = self.handover.take() {
            handover.complete();
        }
    }

    /// Tells the registry something while the job is being worked on,
    /// without waiting (a stage's work never blocks on the registry).
    pub fn tell(&self, event: JobEvent) {
        if let Some(events) = &self.events {
            events.do_send(event);
        }
    }
}

/// A job on its way from one stage to the next. Its reply only says that the
/// receiving stage has taken it into its queue: the sender does not wait for
/// the work to finish, only for room.
#[derive(Debug)]
pub struct JobMsg<T> {
    pub ctx: JobCtx,
    pub payload: T,
}

impl<T: Send + 'static> Message for JobMsg<T> {
    type Result = Result<(), ActorExitStatus>;
}

/// What stages tell the registry about a job (besides the final result,
/// which the last stage sends as its output).
#[derive(Debug, Clone, Message)]
#[rtype(result = "()")]
pub enum JobEvent {
    /// A stage started the job.
    Progress {
        id: Uuid,
        progress: u8,
        step: &'static str,
    },
    /// The audio's length is known (decoder).
    Duration { id: Uuid, seconds: f64 },
    /// Transcript segments just decoded, before the speakers are known
    /// (provisional; shown live, replaced by the result).
    Segments {
        id: Uuid,
        segments: Vec<crate::result::PartialSegment>,
    },
    /// A stage failed the job; the pipeline drops it.
    Failed {
        id: Uuid,
        stage: &'static str,
        error: JobError,
    },
    /// A stage dropped the job because it was cancelled.
    Dropped { id: Uuid, stage: &'static str },
}
