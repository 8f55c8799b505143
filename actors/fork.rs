//! Fork and join: transcription beside diarization.
//!
//! ```text
//!                      ┌─> Transcriber ─┐
//! Preprocessor -> Fork ┤                ├─> Join -> Aligner
//!                      └─> Diarizer ────┘
//! ```
//!
//! Role of the [`Fork`]: hand each preprocessed job to both branches (the
//! samples are shared, not copied), waiting until both have room: a full
//! branch holds the preprocessor back, so backpressure crosses the fork.
//!
//! Role of the [`Join`]: pair each job's two halves and pass them on to the
//! aligner as one, and be the two branches' reporter, so that it knows how
//! each branch ended each job:
//! 1. a half arrives: it waits for the other; with both, the job goes on
//!    (the branch waits until the aligner has room, as any stage does);
//! 2. a branch fails or drops the job (cancelled): the registry is told
//!    once, the other branch is stopped through the job's cancel flag, and
//!    a half already waiting, or arriving later, is dropped;
//! 3. once both branches are done with a job, one way or the other, nothing
//!    of it is kept. Progress is forwarded as one job's progress.

use std::collections::HashMap;

use actix::prelude::*;
use uuid::Uuid;

use super::diarizer::Diarized;
use super::preprocessor::Audio16k;
use super::transcriber::Transcribed;
use super::{ActorExitStatus, CancelToken, JobEvent, JobMsg};

/// What the aligner gets: both halves of one job.
#[derive(Debug)]
pub struct Joined {
    pub transcribed: Transcribed,
    pub diarized: Diarized,
}

/// The fork tells the join of each job it hands out (before either branch
/// can report on it), with the flag that stops the job's branches.
#[derive(Message)]
#[rtype(result = "()")]
struct Forked {
    id: Uuid,
    cancel: CancelToken,
}

pub struct Fork {
    transcriber: Recipient<JobMsg<Audio16k>>,
    diarizer: Recipient<JobMsg<Audio16k>>,
    join: Addr<Join>,
}

impl Fork {
    pub fn new(
        transcriber: Recipient<JobMsg<Audio16k>>,
        diarizer: Recipient<JobMsg<Audio16k>>,
        join: Addr<Join>,
    ) -> Fork {
        Fork {
            transcriber,
            diarizer,
            join,
        }
    }
}

impl Actor for Fork {
    type Context = Context<Self>;
}

impl Handler<JobMsg<Audio16k>> for Fork {
    type Result = AtomicResponse<Self, Result<(), ActorExitStatus>>;

    fn handle(&mut self, mut msg: JobMsg<Audio16k>, _: &mut Context<Self>) -> Self::Result {
        msg.ctx.taken();
        self.join.do_send(Forked {
            id: msg.ctx.id,
            cancel: msg.ctx.cancel.clone(),
        });
        let JobMsg { ctx, payload } = msg;
        let to_diarizer = self.diarizer.send(JobMsg {
            ctx: ctx.clone(),
            payload: payload.clone(),
        });
        let to_transcriber = self.transcriber.send(JobMsg { ctx, payload });
        AtomicResponse::new(Box::pin(
            async move {
                let (t, d) = futures::join!(to_transcriber, to_diarizer);
                t??;
                d??;
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

/// One job between the fork and the join.
#[derive(Default)]
struct Pending {
    cancel: Option<CancelToken>,
    transcribed: Option<JobMsg<Transcribed>>,
    diarized: Option<JobMsg<Diarized>>,
    /// A branch failed or dropped the job: it is over, the registry knows.
    ended: bool,
    /// Branches done with the job (a half, a failure or a drop).
    settled: u8,
    /// A branch's start was reported.
    started: bool,
}

pub struct Join {
    next: Recipient<JobMsg<Joined>>,
    reporter: Recipient<JobEvent>,
    pending: HashMap<Uuid, Pending>,
}

impl Join {
    pub fn new(next: Recipient<JobMsg<Joined>>, reporter: Recipient<JobEvent>) -> Join {
        Join {
            next,
            reporter,
            pending: HashMap::new(),
        }
    }

    /// Jobs between the fork and the join now (tests check that none is left behind).
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// One branch is done with job `id`; forgets the job once both are.
    fn settle(&mut self, id: Uuid) -> &mut Pending {
        let p = self.pending.entry(id).or_default();
        p.settled += 1;
        p
    }

    fn forget_if_settled(&mut self, id: Uuid) {
        if self.pending.get(&id).is_some_and(|p| p.settled >= 2) {
            self.pending.remove(&id);
        }
    }

    /// Takes in a half (`put` stores it); both halves: the joined job.
    fn half(
        &mut self,
        id: Uuid,
        put: impl FnOnce(&mut Pending),
        waiting_for: &'static str,
    ) -> Option<JobMsg<Joined>> {
        let p = self.settle(id);
        if p.ended {
            // the job failed or was cancelled in the other branch: dropped
            self.forget_if_settled(id);
            return None;
        }
        put(p);
        if p.transcribed.is_none() || p.diarized.is_none() {
            self.reporter.do_send(JobEvent::Progress {
                id,
                progress: 50,
                step: waiting_for,
            });
            return None;
        }
        let (t, d) = (p.transcribed.take().unwrap(), p.diarized.take().unwrap());
        self.pending.remove(&id);
        let mut ctx = t.ctx;
        // both carry the timings from before the fork; the diarizer's own follow
        let shared = ctx
            .timings
            .iter()
            .zip(&d.ctx.timings)
            .take_while(|(a, b)| a.0 == b.0)
            .count();
        ctx.timings.extend(d.ctx.timings.into_iter().skip(shared));
        Some(JobMsg {
            ctx,
            payload: Joined {
                transcribed: t.payload,
                diarized: d.payload,
            },
        })
    }

    fn pass_on(
        &mut self,
        joined: Option<JobMsg<Joined>>,
    ) -> AtomicResponse<Self, Result<(), ActorExitStatus>> {
        let next = self.next.clone();
        AtomicResponse::new(Box::pin(
            async move {
                match joined {
                    Some(job) => next.send(job).await?,
                    None => Ok(()),
                }
            }
            .into_actor(self),
        ))
    }
}

impl Actor for Join {
    type Context = Context<Self>;
}

impl Handler<Forked> for Join {
    type Result = ();
    fn handle(&mut self, msg: Forked, _: &mut Context<Self>) {
        self.pending.entry(msg.id).or_default().cancel = Some(msg.cancel);
    }
}

impl Handler<JobMsg<Transcribed>> for Join {
    type Result = AtomicResponse<Self, Result<(), ActorExitStatus>>;
    fn handle(&mut self, mut msg: JobMsg<Transcribed>, _: &mut Context<Self>) -> Self::Result {
        msg.ctx.taken();
        let joined = self.half(
            msg.ctx.id,
            |p| p.transcribed = Some(msg),
            "Transcribed; analyzing speakers",
        );
        self.pass_on(joined)
    }
}

impl Handler<JobMsg<Diarized>> for Join {
    type Result = AtomicResponse<Self, Result<(), ActorExitStatus>>;
    fn handle(&mut self, mut msg: JobMsg<Diarized>, _: &mut Context<Self>) -> Self::Result {
        msg.ctx.taken();
        let joined = self.half(
            msg.ctx.id,
            |p| p.diarized = Some(msg),
            "Speakers found; transcribing",
        );
        self.pass_on(joined)
    }
}

impl Handler<JobEvent> for Join {
    type Result = ();
    fn handle(&mut self, event: JobEvent, _: &mut Context<Self>) {
        match event {
            JobEvent::Progress { id, .. } => {
                let p = self.pending.entry(id).or_default();
                if !p.started && !p.ended {
                    p.started = true;
                    self.reporter.do_send(JobEvent::Progress {
                        id,
                        progress: 25,
                        step: "Transcribing and analyzing speakers",
                    });
                }
            }
            JobEvent::Failed { id, .. } | JobEvent::Dropped { id, .. } => {
                let p = self.settle(id);
                if !p.ended {
                    p.ended = true;
                    p.transcribed = None;
                    p.diarized = None;
                    if let Some(cancel) = &p.cancel {
                        cancel.cancel(); // the other branch stops soon
                    }
                    self.reporter.do_send(event);
                }
                self.forget_if_settled(id);
            }
            other => self.reporter.do_send(other),
        }
    }
}

/// How many jobs are between the fork and the join.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PendingJobs;

impl Handler<PendingJobs> for Join {
    type Result = usize;
    fn handle(&mut self, _: PendingJobs, _: &mut Context<Self>) -> usize {
        self.pending()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::actors::JobCtx;
    use crate::diarize::Diarization;
    use crate::registry::JobOptions;
    use crate::runtime::DeviceUsed;
    use crate::whisper::Transcript;

    /// Records what reaches the aligner and the registry.
    #[derive(Clone, Default)]
    struct Seen(Arc<Mutex<Vec<String>>>);
    struct Recorder(Seen);
    impl Actor for Recorder {
        type Context = Context<Self>;
    }
    impl Handler<JobMsg<Joined>> for Recorder {
        type Result = Result<(), ActorExitStatus>;
        fn handle(&mut self, m: JobMsg<Joined>, _: &mut Context<Self>) -> Self::Result {
            let names: Vec<&str> = m.ctx.timings.iter().map(|t| t.0).collect();
            self.0
                 .0
                .lock()
                .unwrap()
                .push(format!("joined {}", names.join(",")));
            Ok(())
        }
    }
    impl Handler<JobEvent> for Recorder {
        type Result = ();
        fn handle(&mut self, e: JobEvent, _: &mut Context<Self>) {
            let line = match e {
                JobEvent::Progress { progress, step, .. } => format!("progress {progress} {step}"),
                JobEvent::Failed { stage, .. } => format!("failed {stage}"),
                JobEvent::Dropped { stage, .. } => format!("dropped {stage}"),
                JobEvent::Duration { .. } => "duration".into(),
                JobEvent::Segments { segments, .. } => format!("segments {}", segments.len()),
            };
            self.0 .0.lock().unwrap().push(line);
        }
    }

    fn ctx(cancel: &CancelToken, branch: &'static str) -> JobCtx {
        let mut c = JobCtx::new(
            Uuid::nil(),
            "unused".into(),
            JobOptions::default(),
            cancel.clone(),
        );
        c.timings = vec![("decoding", 0.1), ("preprocessing", 0.2), (branch, 1.0)];
        c
    }

    fn transcribed(cancel: &CancelToken) -> JobMsg<Transcribed> {
        let transcript = Transcript {
            language: "en".into(),
            duration: 1.0,
            segments: vec![],
            timings: Default::default(),
        };
        let payload = Transcribed {
            transcript,
            duration: 1.0,
            offset: 0.0,
            model: "fake".into(),
            device: DeviceUsed::Cpu,
        };
        JobMsg {
            ctx: ctx(cancel, "transcription"),
            payload,
        }
    }

    fn diarized(cancel: &CancelToken) -> JobMsg<Diarized> {
        let diarization = Diarization {
            turns: vec![],
            num_speakers: 0,
            voices: vec![],
            timings: Default::default(),
            activity: Default::default(),
        };
        JobMsg {
            ctx: ctx(cancel, "diarization"),
            payload: Diarized {
                diarization,
                device: DeviceUsed::Cpu,
                references: vec![],
                samples: Default::default(),
            },
        }
    }

    async fn start() -> (Addr<Join>, Seen, CancelToken) {
        let seen = Seen::default();
        let rec = Recorder(seen.clone()).start();
        let join = Join::new(rec.clone().recipient(), rec.recipient()).start();
        let cancel = CancelToken::default();
        join.send(Forked {
            id: Uuid::nil(),
            cancel: cancel.clone(),
        })
        .await
        .unwrap();
        (join, seen, cancel)
    }

    async fn settle(join: &Addr<Join>, seen: &Seen, n: usize) -> Vec<String> {
        // the recorder's mailbox is emptied once the join has nothing pending and n lines are in
        while join.send(PendingJobs).await.unwrap() > 0 || seen.0.lock().unwrap().len() < n {
            tokio::task::yield_now().await;
        }
        seen.0.lock().unwrap().clone()
    }

    #[actix::test]
    async fn both_halves_go_on_as_one_job_with_both_branches_timings() {
        let (join, seen, _) = start().await;
        join.send(JobEvent::Progress {
            id: Uuid::nil(),
            progress: 25,
            step: "Analyzing speakers",
        })
        .await
        .unwrap();
        join.send(JobEvent::Progress {
            id: Uuid::nil(),
            progress: 25,
            step: "Transcribing with Whisper",
        })
        .await
        .unwrap();
        join.send(diarized(&CancelToken::default()))
            .await
            .unwrap()
            .unwrap();
        join.send(transcribed(&CancelToken::default()))
            .await
            .unwrap()
            .unwrap();
        let lines = settle(&join, &seen, 3).await;
        assert_eq!(
            lines,
            [
                "progress 25 Transcribing and analyzing speakers",
                "progress 50 Speakers found; transcribing",
                "joined decoding,preprocessing,transcription,diarization",
            ]
        );
    }

    #[actix::test]
    async fn a_failed_branch_stops_the_other_and_its_late_half_is_dropped() {
        let (join, seen, cancel) = start().await;
        join.send(JobEvent::Failed {
            id: Uuid::nil(),
            stage: "diarization",
            error: "bad".into(),
        })
        .await
        .unwrap();
        assert!(cancel.is_cancelled(), "the transcriber is told to stop");
        join.send(transcribed(&cancel)).await.unwrap().unwrap();
        let lines = settle(&join, &seen, 1).await;
        assert_eq!(
            lines,
            ["failed diarization"],
            "the registry hears once; nothing reaches the aligner"
        );
    }

    #[actix::test]
    async fn a_cancelled_job_is_reported_once_and_a_waiting_half_is_let_go() {
        let (join, seen, cancel) = start().await;
        join.send(transcribed(&cancel)).await.unwrap().unwrap();
        cancel.cancel();
        join.send(JobEvent::Dropped {
            id: Uuid::nil(),
            stage: "diarization",
        })
        .await
        .unwrap();
        let lines = settle(&join, &seen, 2).await;
        assert_eq!(
            lines,
            [
                "progress 50 Transcribed; analyzing speakers",
                "dropped diarization"
            ]
        );
    }
}
