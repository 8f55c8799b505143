//! Preprocessor: the second stage.
//!
//! The role of the preprocessor is to give the models the audio they take.
//! This includes the following steps:
//! - resampling to 16 kHz with rubato, for audio not already at 16 kHz (the
//!   decoder resamples as it decodes);
//! - normalising the peak to -1 dBFS (`pipeline.normalise`);
//! - optionally trimming leading and trailing silence
//!   (`pipeline.trim_silence`, off by default), remembering the offset so
//!   that the aligner shifts every timestamp back to the original file.
//!
//! The model features themselves (Whisper's log-mel, the diarization's
//! fbank) are computed inside the engines, on the thread that runs the model;
//! the speech regions (voice activity detection) in the transcriber, which
//! alone uses them, so that the diarizer starts on the samples at once.

use std::sync::Arc;

use super::stage::{JobError, StageWork};
use super::JobCtx;
use crate::audio::{resample, MonoAudio, Pcm16, Samples, TARGET_RATE};
use crate::config::PipelineConfig;

/// 16 kHz mono samples ready for the models.
#[derive(Debug, Clone)]
pub struct Audio16k {
    pub samples: Arc<Pcm16>,
    /// Duration of the original recording, seconds.
    pub duration: f64,
    /// Seconds cut from the start by trimming (added back to timestamps).
    pub offset: f64,
}

pub struct Preprocessor {
    normalise: bool,
    trim: Option<f32>,
}

impl Preprocessor {
    pub fn new(cfg: &PipelineConfig) -> Preprocessor {
        Preprocessor {
            normalise: cfg.normalise,
            trim: cfg
                .trim_silence
                .then(|| 10f32.powf(cfg.trim_threshold_db / 20.0)),
        }
    }
}

/// The gain that puts the peak of `samples` at -1 dBFS (None for silence).
pub fn normalising_gain(samples: Samples) -> Option<f32> {
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    (peak > 1e-6).then(|| 0.891 / peak) // -1 dBFS
}

/// The range of `samples` between the first and last sample above `level`,
/// widened by 0.2 s each side; None when nothing is above it.
pub fn trim_range<'s>(
    samples: impl Into<Samples<'s>>,
    level: f32,
    rate: u32,
) -> Option<(usize, usize)> {
    let samples: Samples = samples.into();
    let first = samples.iter().position(|s| s.abs() > level)?;
    let last = samples.len() - 1 - samples.iter().rev().position(|s| s.abs() > level)?;
    let pad = (rate as usize) / 5;
    Some((
        first.saturating_sub(pad),
        (last + 1 + pad).min(samples.len()),
    ))
}

impl StageWork for Preprocessor {
    type In = MonoAudio<Pcm16>;
    type Out = Audio16k;
    const NAME: &'static str = "preprocessing";
    const PROGRESS: (u8, &'static str) = (10, "Preprocessing audio");

    fn process(
        &mut self,
        _ctx: &mut JobCtx,
        audio: MonoAudio<Pcm16>,
    ) -> Result<Audio16k, JobError> {
        let duration = audio.duration();
        // the decoder resamples as it decodes; another rate is resampled here
        let mut samples = if audio.sample_rate == TARGET_RATE {
            audio.samples
        } else {
            let f32s = audio.samples.view().to_vec();
            Pcm16::from_f32(&resample(&f32s, audio.sample_rate, TARGET_RATE)?)
        };
        let mut offset = 0.0;
        if let Some(level) = self.trim {
            if let Some((a, b)) = trim_range(&samples, level, TARGET_RATE) {
                offset = a as f64 / TARGET_RATE as f64;
                samples.keep(a..b);
            }
        }
        if self.normalise {
            if let Some(gain) = normalising_gain(samples.view()) {
                samples.amplify(gain);
            }
        }
        Ok(Audio16k {
            samples: Arc::new(samples),
            duration,
            offset,
        })
    }
}

#[cfg(test)]
mod tests {
    //! The backpressure test: a preprocessor in front of a fake next stage
    //! that takes one job and then holds it until the test opens a gate.
    use std::sync::Mutex;

    use actix::prelude::*;
    use tokio::sync::Semaphore;
    use uuid::Uuid;

    use super::*;
    use crate::actors::stage::spawn_stage;
    use crate::actors::{CancelToken, JobEvent, JobMsg};
    use crate::registry::JobOptions;

    /// The fake next stage: accepts a job only when the gate gives a permit.
    struct Gate {
        permits: Arc<Semaphore>,
        received: Arc<Mutex<Vec<Uuid>>>,
        notify: Arc<tokio::sync::Notify>,
    }
    impl Actor for Gate {
        type Context = Context<Self>;
    }
    impl Handler<JobMsg<Audio16k>> for Gate {
        type Result = AtomicResponse<Self, Result<(), crate::actors::ActorExitStatus>>;
        fn handle(&mut self, msg: JobMsg<Audio16k>, _: &mut Context<Self>) -> Self::Result {
            let (permits, received, notify) = (
                self.permits.clone(),
                self.received.clone(),
                self.notify.clone(),
            );
            AtomicResponse::new(Box::pin(
                async move {
                    permits.acquire().await.unwrap().forget();
                    assert!(
                        (1595..=1605).contains(&msg.payload.samples.len()),
                        "0.1 s at 16 kHz"
                    );
                    received.lock().unwrap().push(msg.ctx.id);
                    notify.notify_waiters();
                    Ok(())
                }
                .into_actor(self),
            ))
        }
    }

    /// Collects progress reports.
    struct Reporter;
    impl Actor for Reporter {
        type Context = Context<Self>;
    }
    impl Handler<JobEvent> for Reporter {
        type Result = ();
        fn handle(&mut self, _: JobEvent, _: &mut Context<Self>) {}
    }

    fn job(rate: u32) -> JobMsg<MonoAudio<Pcm16>> {
        let ctx = JobCtx::new(
            Uuid::new_v4(),
            "unused".into(),
            JobOptions::default(),
            CancelToken::default(),
        );
        let samples: Vec<f32> = (0..rate / 10)
            .map(|i| (i as f32 * 0.05).sin() * 0.3)
            .collect();
        JobMsg {
            ctx,
            payload: MonoAudio {
                samples: Pcm16::from_f32(&samples),
                sample_rate: rate,
                channels: 1,
            },
        }
    }

    #[actix::test]
    async fn a_slow_next_stage_makes_upstream_wait_and_nothing_is_dropped() {
        const MAILBOX: usize = 2;
        const JOBS: usize = 8;
        let permits = Arc::new(Semaphore::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let notify = Arc::new(tokio::sync::Notify::new());
        let gate = Gate {
            permits: permits.clone(),
            received: received.clone(),
            notify: notify.clone(),
        }
        .start();
        let cfg = crate::config::Config::load_with_env(None, Vec::new())
            .unwrap()
            .pipeline;
        let stage = spawn_stage(
            vec![Preprocessor::new(&cfg)],
            MAILBOX,
            gate.recipient(),
            Reporter.start().recipient(),
        );

        // the upstream: sends every job in turn, awaiting each send
        let jobs: Vec<JobMsg<MonoAudio<Pcm16>>> = (0..JOBS)
            .map(|i| job(if i % 2 == 0 { 48_000 } else { 44_100 }))
            .collect();
        let ids: Vec<Uuid> = jobs.iter().map(|j| j.ctx.id).collect();
        let sent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let upstream = {
            let (addr, sent) = (stage.addr.clone(), sent.clone());
            actix::spawn(async move {
                for j in jobs {
                    addr.send(j).await.unwrap().unwrap();
                    sent.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            })
        };

        // process what can be processed: the worker finishes job 1 and
        // blocks on the closed gate, the queue fills with MAILBOX jobs
        let snap = stage
            .counters
            .wait_until(|c| c.waiting_on_next == 1 && c.queued == MAILBOX as i64)
            .await;
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        let snap_after = stage.counters.snapshot();
        assert_eq!(
            snap, snap_after,
            "nothing moves while the next stage is full"
        );
        assert_eq!(
            snap.jobs_in,
            1 + MAILBOX as u64,
            "one in hand, MAILBOX queued"
        );
        assert_eq!(snap.jobs_out, 0);
        assert_eq!(
            sent.load(std::sync::atomic::Ordering::SeqCst),
            1 + MAILBOX,
            "upstream waits on the next send"
        );
        assert!(received.lock().unwrap().is_empty());

        // open the gate: every job arrives, in order, none dropped
        permits.add_permits(JOBS);
        upstream.await.unwrap();
        let done = stage
            .counters
            .wait_until(|c| c.jobs_out == JOBS as u64)
            .await;
        assert_eq!(done.jobs_in, JOBS as u64);
        assert_eq!(done.jobs_failed + done.jobs_dropped, 0);
        assert_eq!(done.queued + done.working + done.waiting_on_next, 0);
        assert!(done.blocked_seconds > 0.0 && done.busy_seconds > 0.0);
        assert_eq!(*received.lock().unwrap(), ids);
    }

    #[test]
    fn normalise_and_trim() {
        let mut s = Pcm16::from_f32(&[0.0, 0.25, -0.5, 0.1]);
        let gain = normalising_gain(s.view()).unwrap();
        s.amplify(gain);
        assert!((s.view().get(2).unwrap() + 0.891).abs() < 1.0 / 32768.0);
        assert!(normalising_gain(Pcm16::from_f32(&[0.0; 4]).view()).is_none());
        let mut quiet = vec![0.0f32; 16_000 * 2];
        quiet[16_000] = 0.5;
        let (a, b) = trim_range(&quiet, 0.01, 16_000).unwrap();
        assert_eq!((a, b), (16_000 - 3200, 16_001 + 3200));
        assert_eq!(
            trim_range(&Pcm16::from_f32(&quiet), 0.01, 16_000),
            Some((a, b))
        );
        assert!(trim_range(&[0.0; 10], 0.01, 16_000).is_none());
    }
}
