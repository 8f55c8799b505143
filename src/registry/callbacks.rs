//! The registry's part in job callbacks: when a job with a `callback_url`
//! ends, one attempt at a time is made off the actor's thread
//! ([`crate::callback::post`] on the blocking pool), each recorded on the
//! job, retried with back-off while worth it.

use actix::prelude::*;
use uuid::Uuid;

use super::{Job, JobRegistry, JobStatus, MAX_DELIVERIES};
use crate::callback::{self, Outcome};

/// What a callback POSTs: `{"event": "job.completed" | "job.failed", "job": {...}}`.
pub fn callback_body(job: &Job) -> Vec<u8> {
    let event = match job.status {
        JobStatus::Completed => "job.completed",
        JobStatus::Failed => "job.failed",
        _ => "job.ended",
    };
    serde_json::to_vec(&serde_json::json!({ "event": event, "job": job })).unwrap_or_default()
}

impl JobRegistry {
    /// Starts delivering the job's callback if it has one not yet done.
    pub(super) fn call_back(&mut self, id: Uuid, ctx: &mut Context<Self>) {
        let job = match self.load(id) {
            Ok(Some(job)) => job,
            _ => return,
        };
        let Some(cb) = job.callback.clone().filter(|c| !c.done) else {
            return;
        };
        if self.deliveries >= MAX_DELIVERIES {
            ctx.run_later(std::time::Duration::from_secs(1), move |act, ctx| {
                act.call_back(id, ctx)
            });
            return;
        }
        self.deliveries += 1;
        let body = callback_body(&job);
        let timeout = self.callbacks.timeout;
        tracing::info!(job_id = %id, url = %cb.url, attempt = cb.attempts + 1, "calling back");
        let attempt = tokio::task::spawn_blocking(move || callback::post(&cb.url, &body, timeout));
        ctx.spawn(attempt.into_actor(self).map(move |res, act, ctx| {
            act.deliveries -= 1;
            let outcome =
                res.unwrap_or_else(|e| Outcome::Retry(format!("the attempt did not run: {e}")));
            act.called_back(id, outcome, ctx);
        }));
    }

    /// Records an attempt's outcome; schedules the next one when worth it.
    fn called_back(&mut self, id: Uuid, outcome: Outcome, ctx: &mut Context<Self>) {
        let max = self.callbacks.attempts;
        let mut retry = None;
        self.metrics.callback(outcome.label());
        let updated = self.update(id, |j| {
            if let Some(cb) = j.callback.as_mut() {
                retry = cb.record(&outcome, max);
            }
        });
        if let Err(e) = updated {
            tracing::error!(job_id = %id, error = %e, "cannot record a callback attempt");
        }
        self.flush();
        match (&outcome, retry) {
            (Outcome::Delivered, _) => tracing::info!(job_id = %id, "callback delivered"),
            (_, Some(attempt)) => {
                let wait = self.callbacks.backoff(attempt);
                tracing::warn!(job_id = %id, ?outcome, retry_in = ?wait, "callback failed, will retry");
                ctx.run_later(wait, move |act, ctx| act.call_back(id, ctx));
            }
            _ => tracing::warn!(job_id = %id, ?outcome, "callback given up"),
        }
    }
}
