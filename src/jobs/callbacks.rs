//! Callbacks of jobs in the cluster's queue, delivered by the API nodes:
//! each node claims due callbacks from the queue (one node per attempt),
//! POSTs them off its threads ([`crate::callback::post`] on the blocking
//! pool, at most [`MAX_DELIVERIES`] at once) and records each attempt on
//! the row, with the single node's back-off and attempt limit. A node that
//! dies mid-attempt leaves the callback to be claimed again once its claim
//! lapses: at least once, as webhooks go.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, Semaphore};

use super::cluster::job_of;
use crate::callback::{self, Callback, Outcome, Policy};
use crate::registry::callback_body;
use crate::store::queue::JobQueue;

/// Callbacks being delivered at once by one node.
pub const MAX_DELIVERIES: usize = 16;

/// Claims and delivers until the system stops; woken by any job's update
/// (`updates`), else every `poll`.
pub async fn deliver_forever(
    queue: JobQueue,
    policy: Policy,
    metrics: Arc<crate::metrics::Metrics>,
    mut updates: broadcast::Receiver<uuid::Uuid>,
    poll: Duration,
) {
    let slots = Arc::new(Semaphore::new(MAX_DELIVERIES));
    // a claim outlives the attempt: its timeout and a margin
    let hold = policy.timeout + Duration::from_secs(30);
    loop {
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let job = match queue.claim_callback(hold).await {
                Ok(Some(row)) => row,
                Ok(None) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "callbacks: the queue does not answer");
                    break;
                }
            };
            let (queue, policy, metrics) = (queue.clone(), policy.clone(), metrics.clone());
            actix::spawn(async move {
                deliver(&queue, &policy, &metrics, job).await;
                drop(permit);
            });
        }
        let _ = tokio::time::timeout(poll, updates.recv()).await;
    }
}

/// One attempt at a claimed job's callback, recorded on its row.
async fn deliver(
    queue: &JobQueue,
    policy: &Policy,
    metrics: &crate::metrics::Metrics,
    row: crate::store::queue::Job,
) {
    let id = row.id;
    let job = job_of(row);
    let Some(mut cb): Option<Callback> = job.callback.clone() else {
        return;
    };
    let body = callback_body(&job);
    let (url, timeout) = (cb.url.clone(), policy.timeout);
    tracing::info!(job_id = %id, url = %url, attempt = cb.attempts + 1, "calling back");
    let outcome = tokio::task::spawn_blocking(move || callback::post(&url, &body, timeout))
        .await
        .unwrap_or_else(|e| Outcome::Retry(format!("the attempt did not run: {e}")));
    metrics.callback(outcome.label());
    let retry = cb.record(&outcome, policy.attempts);
    let next = retry.map(|attempt| policy.backoff(attempt));
    let record = serde_json::to_value(&cb).unwrap_or_default();
    match queue.record_callback(id, &record, next).await {
        Ok(_) => match (&outcome, next) {
            (Outcome::Delivered, _) => tracing::info!(job_id = %id, "callback delivered"),
            (_, Some(wait)) => {
                tracing::warn!(job_id = %id, ?outcome, retry_in = ?wait, "callback failed, will retry")
            }
            _ => tracing::warn!(job_id = %id, ?outcome, "callback given up"),
        },
        // the claim lapses and another attempt is made: at least once
        Err(e) => tracing::error!(job_id = %id, error = %e, "cannot record a callback attempt"),
    }
}
