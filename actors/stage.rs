//! The machinery every stage shares: a bounded queue in front of dedicated
//! worker threads, an awaited send to the next stage, per-stage counters.
//!
//! Role of a [`StageActor`]: take jobs from the stage before it, one at a
//! time, into the stage's bounded queue, and report how the stage is doing.
//! Steps for each job:
//! 1. the actor's handler pushes the job into a bounded channel (capacity
//!    `mailbox`); while the channel is full the handler does not return, so
//!    the upstream sender (which awaits the reply) waits: that wait is the
//!    backpressure. The handler is atomic, so the actor takes no other
//!    message meanwhile;
//! 2. a worker thread (one per engine instance, `threads`) takes the job,
//!    reports progress, runs the [`StageWork`] (CPU/GPU work, off the async
//!    executor) and records busy seconds;
//! 3. the worker sends the output to the next stage and waits for it to be
//!    accepted, recording the seconds blocked on the next stage.
//!
//! A stage may have one extra worker ([`Borrower`], [`spawn_stage_with`])
//! that takes a job only on a core another stage lends while idle, when the
//! jobs waiting outnumber its own idle workers (`crate::cores`).
//!
//! Why a channel and not the actix mailbox alone: `Addr::send` to a full
//! actix mailbox still enqueues (each retry goes through a fresh, unparked
//! sender) and `do_send` never waits, so actix's mailbox capacity does not
//! bound anything by itself. The mailbox capacity is still set (from the
//! same config value), but the channel is what holds the bound.
//!
//! The channel is crossbeam's bounded multi-consumer one: every worker
//! blocks on its own clone of the receiver (no lock around a receiver, so a
//! worker stuck in a panic cannot hold the others up). The actor never
//! blocks its thread on it: it tries to send and, while the channel is
//! full, awaits a notification that a worker took a job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use actix::prelude::*;
use crossbeam_channel::{Receiver, Sender, TryRecvError, TrySendError};
use serde::Serialize;
use tokio::sync::Notify;

pub use super::JobError;
use super::{ActorExitStatus, Handover, JobCtx, JobEvent, JobMsg};
use crate::alloc::KeptPages;
use crate::cores::{Borrowed, SpareCores};

/// The synchronous work of one stage. One value per worker thread: it owns
/// its engine (model sessions) and is never shared.
pub trait StageWork: Send + 'static {
    type In: Send + 'static;
    type Out: Send + 'static;
    /// Stage name in counters, logs and per-stage timings.
    const NAME: &'static str;
    /// Progress (percent) and step text the job shows while in this stage.
    const PROGRESS: (u8, &'static str);
    /// The worker threads keep the pages they free until each job is done
    /// ([`crate::alloc::KeptPages`]): for stages that run models, whose
    /// every run frees and asks again for the same buffers.
    const KEEPS_FREED_PAGES: bool = false;
    fn process(&mut self, ctx: &mut JobCtx, input: Self::In) -> Result<Self::Out, JobError>;
    /// Where the worker lends its core while it waits for a job (None: it
    /// does not lend; see [`crate::cores`]).
    fn lends_its_core(&self) -> Option<Arc<SpareCores>> {
        None
    }
}

/// A stage's extra worker, which works only on a core it borrows: it takes
/// a job while `cores` has a lent core free and the jobs waiting in the
/// queue outnumber the stage's own idle workers (so a job that one of them
/// would take at once never goes to it), and holds the core until that job
/// is done. Its engine may be loaded on its first job, so that it costs no
/// memory where jobs never queue up.
pub struct Borrower<W: StageWork> {
    pub work: W,
    pub cores: Arc<SpareCores>,
}

/// Counters of one stage, read by tests and by `GET /health` alike.
#[derive(Debug, Default)]
pub struct StageCounters {
    /// Jobs taken into the stage's queue.
    pub jobs_in: AtomicU64,
    /// Jobs passed on to the next stage.
    pub jobs_out: AtomicU64,
    pub jobs_failed: AtomicU64,
    /// Cancelled jobs dropped by this stage.
    pub jobs_dropped: AtomicU64,
    /// Jobs in the queue, not started (gauge).
    pub queued: AtomicI64,
    /// Jobs being worked on (gauge).
    pub working: AtomicI64,
    /// Finished jobs waiting for the next stage to accept them (gauge).
    pub waiting_on_next: AtomicI64,
    pub busy_micros: AtomicU64,
    pub blocked_micros: AtomicU64,
    /// Worker threads started, and still running (gauge).
    pub workers: AtomicI64,
    pub workers_alive: AtomicI64,
    /// How each worker that ended did (`GET /health` shows them).
    pub worker_exits: std::sync::Mutex<Vec<String>>,
    /// Woken on every change (tests wait on it instead of sleeping).
    pub changed: Notify,
}

/// A point-in-time copy of [`StageCounters`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct CountersSnapshot {
    pub jobs_in: u64,
    pub jobs_out: u64,
    pub jobs_failed: u64,
    pub jobs_dropped: u64,
    pub queued: i64,
    pub working: i64,
    pub waiting_on_next: i64,
    pub busy_seconds: f64,
    pub blocked_seconds: f64,
    pub workers: i64,
    pub workers_alive: i64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub worker_exits: Vec<String>,
}

impl StageCounters {
    pub fn snapshot(&self) -> CountersSnapshot {
        CountersSnapshot {
            jobs_in: self.jobs_in.load(Ordering::SeqCst),
            jobs_out: self.jobs_out.load(Ordering::SeqCst),
            jobs_failed: self.jobs_failed.load(Ordering::SeqCst),
            jobs_dropped: self.jobs_dropped.load(Ordering::SeqCst),
            queued: self.queued.load(Ordering::SeqCst),
            working: self.working.load(Ordering::SeqCst),
            waiting_on_next: self.waiting_on_next.load(Ordering::SeqCst),
            busy_seconds: self.busy_micros.load(Ordering::SeqCst) as f64 / 1e6,
            blocked_seconds: self.blocked_micros.load(Ordering::SeqCst) as f64 / 1e6,
            workers: self.workers.load(Ordering::SeqCst),
            workers_alive: self.workers_alive.load(Ordering::SeqCst),
            worker_exits: self
                .worker_exits
                .lock()
                .map(|e| e.clone())
                .unwrap_or_default(),
        }
    }

    fn add(&self, counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    fn gauge(&self, gauge: &AtomicI64, delta: i64) {
        gauge.fetch_add(delta, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Waits (without a clock) until `cond` holds on a snapshot.
    pub async fn wait_until(
        &self,
        mut cond: impl FnMut(&CountersSnapshot) -> bool,
    ) -> CountersSnapshot {
        loop {
            let notified = self.changed.notified();
            let snap = self.snapshot();
            if cond(&snap) {
                return snap;
            }
            notified.await;
        }
    }
}

/// The actor in front of a stage's workers.
pub struct StageActor<W: StageWork> {
    mailbox: usize,
    queue: Sender<JobMsg<W::In>>,
    /// Notified each time a worker takes a job out of `queue` (room for one more).
    room: Arc<Notify>,
    counters: Arc<StageCounters>,
    /// The extra worker's cores, woken for each job queued, and its stop.
    borrower: Option<(Arc<SpareCores>, Arc<AtomicBool>)>,
}

impl<W: StageWork> Drop for StageActor<W> {
    fn drop(&mut self) {
        // the extra worker waits on the cores, not on the queue
        if let Some((cores, stop)) = &self.borrower {
            cores.call_off(stop);
        }
    }
}

impl<W: StageWork> Actor for StageActor<W> {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(self.mailbox);
    }
}

impl<W: StageWork> Handler<JobMsg<W::In>> for StageActor<W> {
    type Result = AtomicResponse<Self, Result<(), ActorExitStatus>>;

    fn handle(&mut self, msg: JobMsg<W::In>, _ctx: &mut Self::Context) -> Self::Result {
        let (queue, room, counters) =
            (self.queue.clone(), self.room.clone(), self.counters.clone());
        let borrower = self.borrower.as_ref().map(|(cores, _)| cores.clone());
        AtomicResponse::new(Box::pin(
            async move {
                // waits while the queue is full: the caller's send is pending meanwhile
                let mut msg = msg;
                let handover = msg.ctx.handover.take();
                loop {
                    match queue.try_send(msg) {
                        Ok(()) => break,
                        Err(TrySendError::Full(back)) => {
                            msg = back;
                            // a take since the last wait left a permit: no wake-up is lost
                            room.notified().await;
                        }
                        Err(TrySendError::Disconnected(_)) => return Err(ActorExitStatus::Killed),
                    }
                }
                if let Some(handover) = handover {
                    handover.complete();
                }
                counters.add(&counters.jobs_in, 1);
                counters.gauge(&counters.queued, 1);
                if let Some(cores) = borrower {
                    // one more job waiting: the extra worker looks again
                    cores.wake();
                }
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

/// Every handle of a running stage.
pub struct StageHandle<W: StageWork> {
    pub addr: Addr<StageActor<W>>,
    pub counters: Arc<StageCounters>,
    pub workers: Vec<JoinHandle<ActorExitStatus>>,
}

impl<W: StageWork> StageHandle<W> {
    pub fn recipient(&self) -> Recipient<JobMsg<W::In>> {
        self.addr.clone().recipient()
    }
}

/// Starts a stage (inside a running actix system): one worker thread per
/// value in `works`, a queue of `mailbox` jobs, output to `next`, progress
/// and failures to `reporter`.
pub fn spawn_stage<W: StageWork>(
    works: Vec<W>,
    mailbox: usize,
    next: Recipient<JobMsg<W::Out>>,
    reporter: Recipient<JobEvent>,
) -> StageHandle<W> {
    spawn_stage_with(works, None, mailbox, next, reporter)
}

/// [`spawn_stage`], with an extra worker that works only on a borrowed core.
pub fn spawn_stage_with<W: StageWork>(
    works: Vec<W>,
    borrower: Option<Borrower<W>>,
    mailbox: usize,
    next: Recipient<JobMsg<W::Out>>,
    reporter: Recipient<JobEvent>,
) -> StageHandle<W> {
    assert!(!works.is_empty() && mailbox > 0);
    let (tx, rx) = crossbeam_channel::bounded::<JobMsg<W::In>>(mailbox);
    let room = Arc::new(Notify::new());
    let counters = Arc::new(StageCounters::default());
    let count = works.len() + usize::from(borrower.is_some());
    counters.workers.store(count as i64, Ordering::SeqCst);
    counters.workers_alive.store(count as i64, Ordering::SeqCst);
    // the stage's own workers waiting for a job
    let idle = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let borrowing = borrower.as_ref().map(|b| (b.cores.clone(), stop.clone()));
    let works = works
        .into_iter()
        .map(|w| (w, None))
        .chain(borrower.map(|b| (b.work, Some((b.cores, stop)))));
    let workers = works
        .enumerate()
        .map(|(i, (work, borrows))| {
            let (rx, room, next, reporter, counters) =
                (rx.clone(), room.clone(), next.clone(), reporter.clone(), counters.clone());
            let idle = idle.clone();
            let name = match borrows {
                None => format!("{}-{i}", W::NAME),
                Some(_) => format!("{}-lent", W::NAME),
            };
            std::thread::Builder::new()
                .name(name)
                .spawn(move || {
                    let kept = if W::KEEPS_FREED_PAGES {
                        KeptPages::bind()
                    } else {
                        None
                    };
                    let takes = match &borrows {
                        None => Takes::Own(&idle),
                        Some((cores, stop)) => Takes::Borrowing {
                            cores,
                            idle: &idle,
                            stop,
                        },
                    };
                    let status = worker_loop(
                        work,
                        takes,
                        rx,
                        &room,
                        next,
                        reporter,
                        counters.clone(),
                        kept.as_ref(),
                    );
                    tracing::info!(stage = W::NAME, worker = i, exit = %status, "stage worker ended");
                    if let Ok(mut exits) = counters.worker_exits.lock() {
                        exits.push(format!("worker {i}: {status}"));
                    }
                    counters.gauge(&counters.workers_alive, -1);
                    status
                })
                .expect("spawn stage worker thread")
        })
        .collect();
    let addr = StageActor::<W> {
        mailbox,
        queue: tx,
        room,
        counters: counters.clone(),
        borrower: borrowing,
    }
    .start();
    StageHandle {
        addr,
        counters,
        workers,
    }
}

fn micros(t: Instant) -> u64 {
    t.elapsed().as_micros() as u64
}

fn report(reporter: &Recipient<JobEvent>, event: JobEvent) -> Result<(), ActorExitStatus> {
    futures::executor::block_on(reporter.send(event))?;
    Ok(())
}

/// How a worker takes its jobs.
enum Takes<'a> {
    /// As soon as one waits; `idle` counts the workers waiting.
    Own(&'a AtomicUsize),
    /// Only on a core borrowed from `cores`, while the jobs waiting
    /// outnumber the `idle` own workers, until `stop`.
    Borrowing {
        cores: &'a SpareCores,
        idle: &'a AtomicUsize,
        stop: &'a AtomicBool,
    },
}

impl<'a> Takes<'a> {
    /// The next job, and the core borrowed for it; None once the stage stops
    /// (every sender gone and the queue empty, or the stop of an extra worker).
    fn next<T>(
        &self,
        rx: &Receiver<T>,
        lender: Option<&SpareCores>,
    ) -> Option<(T, Option<Borrowed<'a>>)> {
        match *self {
            Takes::Own(idle) => {
                // counted idle before looking, so that the extra worker
                // leaves a job alone that this one is about to take
                idle.fetch_add(1, Ordering::SeqCst);
                let msg = rx.try_recv().or_else(|_| {
                    // no job waiting: the core is lent until one comes
                    let _lent = lender.map(SpareCores::lend);
                    rx.recv()
                });
                idle.fetch_sub(1, Ordering::SeqCst);
                msg.ok().map(|m| (m, None))
            }
            Takes::Borrowing { cores, idle, stop } => loop {
                let core = cores.borrow_when(stop, || rx.len() > idle.load(Ordering::SeqCst))?;
                match rx.try_recv() {
                    Ok(msg) => return Some((msg, Some(core))),
                    // an own worker took it first: the core goes back
                    Err(TryRecvError::Empty) => continue,
                    Err(TryRecvError::Disconnected) => return None,
                }
            },
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn worker_loop<W: StageWork>(
    mut work: W,
    takes: Takes<'_>,
    rx: Receiver<JobMsg<W::In>>,
    room: &Notify,
    next: Recipient<JobMsg<W::Out>>,
    reporter: Recipient<JobEvent>,
    counters: Arc<StageCounters>,
    kept: Option<&KeptPages>,
) -> ActorExitStatus {
    let lender = work.lends_its_core();
    loop {
        // the core an extra worker borrowed is handed back when its job is done
        let Some((JobMsg { mut ctx, payload }, core)) = takes.next(&rx, lender.as_deref()) else {
            return ActorExitStatus::Success;
        };
        room.notify_one();
        counters.gauge(&counters.queued, -1);
        let span = ctx.span.clone();
        let _entered = span.enter();
        let id = ctx.id;
        if ctx.cancel.is_cancelled() {
            tracing::info!(stage = W::NAME, "job cancelled, dropped");
            counters.add(&counters.jobs_dropped, 1);
            if let Err(status) = report(&reporter, JobEvent::Dropped { id, stage: W::NAME }) {
                return status;
            }
            continue;
        }
        let (progress, step) = W::PROGRESS;
        if let Err(status) = report(&reporter, JobEvent::Progress { id, progress, step }) {
            return status;
        }
        tracing::info!(stage = W::NAME, progress, step, "stage started");
        counters.gauge(&counters.working, 1);
        ctx.events = Some(reporter.clone());
        let t0 = Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| work.process(&mut ctx, payload)));
        let busy = t0.elapsed().as_secs_f64();
        drop(core); // not held while the next stage makes it wait
        if let Some(kept) = kept {
            kept.release();
        }
        counters.busy_micros.fetch_add(micros(t0), Ordering::SeqCst);
        counters.gauge(&counters.working, -1);
        ctx.timings.push((W::NAME, busy));
        let out = match result {
            Ok(Ok(out)) => out,
            // an engine that stopped because the job was cancelled: dropped, not failed
            Ok(Err(_)) if ctx.cancel.is_cancelled() => {
                tracing::info!(stage = W::NAME, "job cancelled while running, dropped");
                counters.add(&counters.jobs_dropped, 1);
                if let Err(status) = report(&reporter, JobEvent::Dropped { id, stage: W::NAME }) {
                    return status;
                }
                continue;
            }
            Ok(Err(error)) => {
                tracing::warn!(stage = W::NAME, error = %error.message, kind = ?error.kind, "job failed");
                counters.add(&counters.jobs_failed, 1);
                if let Err(status) = report(
                    &reporter,
                    JobEvent::Failed {
                        id,
                        stage: W::NAME,
                        error,
                    },
                ) {
                    return status;
                }
                continue;
            }
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(stage = W::NAME, panic = %what, "stage panicked");
                counters.add(&counters.jobs_failed, 1);
                let error = JobError::internal(format!("internal error in {}: {what}", W::NAME));
                // the engines keep no state across calls: the worker goes on
                if let Err(status) = report(
                    &reporter,
                    JobEvent::Failed {
                        id,
                        stage: W::NAME,
                        error,
                    },
                ) {
                    return status;
                }
                continue;
            }
        };
        tracing::info!(stage = W::NAME, seconds = busy, "stage done");
        if ctx.cancel.is_cancelled() {
            counters.add(&counters.jobs_dropped, 1);
            if let Err(status) = report(&reporter, JobEvent::Dropped { id, stage: W::NAME }) {
                return status;
            }
            continue;
        }
        counters.gauge(&counters.waiting_on_next, 1);
        // counted out when the next stage takes the job: the last stage's
        // next is the registry, which completes the job before `send`
        // returns here
        let handover = {
            let counters = counters.clone();
            Handover::new(move || counters.add(&counters.jobs_out, 1))
        };
        ctx.handover = Some(handover.clone());
        let t1 = Instant::now();
        let sent = futures::executor::block_on(next.send(JobMsg { ctx, payload: out }));
        counters
            .blocked_micros
            .fetch_add(micros(t1), Ordering::SeqCst);
        counters.gauge(&counters.waiting_on_next, -1);
        match sent {
            Ok(Ok(())) => handover.complete(),
            Ok(Err(status)) => return status,
            Err(e) => return e.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use uuid::Uuid;

    use super::*;
    use crate::actors::{CancelToken, JobCtx, JobEvent, JobMsg};
    use crate::registry::JobOptions;

    /// Fails every job; cancels the ones marked first, as a delete arriving
    /// while an engine runs would.
    struct Stopping;
    impl StageWork for Stopping {
        type In = bool;
        type Out = ();
        const NAME: &'static str = "stopping";
        const PROGRESS: (u8, &'static str) = (25, "Working");
        fn process(&mut self, ctx: &mut JobCtx, cancel_first: bool) -> Result<(), JobError> {
            if cancel_first {
                ctx.cancel.cancel();
            }
            Err(JobError::internal("stopped"))
        }
    }

    /// Puts a new job with `payload` into the stage's queue.
    async fn submit<W: StageWork>(stage: &StageHandle<W>, payload: W::In) {
        let ctx = JobCtx::new(
            Uuid::new_v4(),
            "unused".into(),
            JobOptions::default(),
            CancelToken::default(),
        );
        stage
            .addr
            .send(JobMsg { ctx, payload })
            .await
            .unwrap()
            .unwrap();
    }

    struct Sink;
    impl Actor for Sink {
        type Context = Context<Self>;
    }
    impl Handler<JobMsg<()>> for Sink {
        type Result = Result<(), ActorExitStatus>;
        fn handle(&mut self, _: JobMsg<()>, _: &mut Context<Self>) -> Self::Result {
            Ok(())
        }
    }

    struct Events(Arc<Mutex<Vec<String>>>);
    impl Actor for Events {
        type Context = Context<Self>;
    }
    impl Handler<JobEvent> for Events {
        type Result = ();
        fn handle(&mut self, e: JobEvent, _: &mut Context<Self>) {
            match e {
                JobEvent::Failed { .. } => self.0.lock().unwrap().push("failed".into()),
                JobEvent::Dropped { .. } => self.0.lock().unwrap().push("dropped".into()),
                _ => {}
            }
        }
    }

    #[actix::test]
    async fn an_engine_error_after_a_cancel_drops_the_job_instead_of_failing_it() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let stage = spawn_stage(
            vec![Stopping],
            2,
            Sink.start().recipient(),
            Events(events.clone()).start().recipient(),
        );
        for cancel_first in [true, false] {
            submit(&stage, cancel_first).await;
        }
        let done = stage
            .counters
            .wait_until(|c| c.jobs_dropped + c.jobs_failed == 2)
            .await;
        assert_eq!(
            (done.jobs_dropped, done.jobs_failed, done.jobs_out),
            (1, 1, 0)
        );
        // the reports reach the registry in order
        while events.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*events.lock().unwrap(), ["dropped", "failed"]);
    }

    /// Passes every job on.
    struct Passing;
    impl StageWork for Passing {
        type In = ();
        type Out = ();
        const NAME: &'static str = "passing";
        const PROGRESS: (u8, &'static str) = (50, "Passing");
        fn process(&mut self, _: &mut JobCtx, _: ()) -> Result<(), JobError> {
            Ok(())
        }
    }

    /// A next stage that, like the registry, takes each job and then acts on
    /// it (completes it), noting the sending stage's `jobs_out` at that
    /// moment, as a scrape of `/metrics` right after completion would.
    struct Watching {
        counters: Arc<std::sync::OnceLock<Arc<StageCounters>>>,
        seen: Arc<Mutex<Vec<u64>>>,
    }
    impl Actor for Watching {
        type Context = Context<Self>;
    }
    impl Handler<JobMsg<()>> for Watching {
        type Result = Result<(), ActorExitStatus>;
        fn handle(&mut self, mut msg: JobMsg<()>, _: &mut Context<Self>) -> Self::Result {
            msg.ctx.taken();
            let out = self.counters.get().expect("set").snapshot().jobs_out;
            self.seen.lock().unwrap().push(out);
            Ok(())
        }
    }

    #[actix::test]
    async fn a_job_is_counted_out_by_the_time_the_next_stage_has_it() {
        let counters = Arc::new(std::sync::OnceLock::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let next = Watching {
            counters: counters.clone(),
            seen: seen.clone(),
        };
        let stage = spawn_stage(
            vec![Passing],
            2,
            next.start().recipient(),
            Events(Arc::default()).start().recipient(),
        );
        counters.set(stage.counters.clone()).ok();
        for _ in 0..3 {
            submit(&stage, ()).await;
        }
        while seen.lock().unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*seen.lock().unwrap(), [1, 2, 3]);
        let done = stage.counters.wait_until(|c| c.waiting_on_next == 0).await;
        assert_eq!((done.jobs_in, done.jobs_out, done.jobs_failed), (3, 3, 0));
    }

    /// Notes whether its worker thread keeps the pages it frees.
    struct Noting<const KEEPS: bool>(Arc<Mutex<Vec<bool>>>);
    impl<const KEEPS: bool> StageWork for Noting<KEEPS> {
        type In = ();
        type Out = ();
        const NAME: &'static str = "noting";
        const PROGRESS: (u8, &'static str) = (50, "Noting");
        const KEEPS_FREED_PAGES: bool = KEEPS;
        fn process(&mut self, _: &mut JobCtx, _: ()) -> Result<(), JobError> {
            let keeps = crate::alloc::this_thread_keeps_freed_pages();
            self.0.lock().unwrap().push(keeps);
            Ok(())
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[actix::test]
    async fn only_stages_that_run_models_keep_the_pages_their_workers_free() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keeping = spawn_stage(
            vec![Noting::<true>(seen.clone()), Noting::<true>(seen.clone())],
            2,
            Sink.start().recipient(),
            Events(Arc::default()).start().recipient(),
        );
        for _ in 0..2 {
            submit(&keeping, ()).await;
        }
        keeping.counters.wait_until(|c| c.jobs_out == 2).await;
        let plain = spawn_stage(
            vec![Noting::<false>(seen.clone())],
            2,
            Sink.start().recipient(),
            Events(Arc::default()).start().recipient(),
        );
        submit(&plain, ()).await;
        plain.counters.wait_until(|c| c.jobs_out == 1).await;
        assert_eq!(*seen.lock().unwrap(), [true, true, false]);
    }

    /// Lends its worker's core in `spare` while idle; notes the lending
    /// counts while it works.
    struct Lending {
        spare: Arc<crate::cores::SpareCores>,
        seen: Arc<Mutex<Vec<(usize, usize)>>>,
    }
    impl StageWork for Lending {
        type In = ();
        type Out = ();
        const NAME: &'static str = "lending";
        const PROGRESS: (u8, &'static str) = (50, "Lending");
        fn lends_its_core(&self) -> Option<Arc<crate::cores::SpareCores>> {
            Some(self.spare.clone())
        }
        fn process(&mut self, _: &mut JobCtx, _: ()) -> Result<(), JobError> {
            self.seen.lock().unwrap().push(self.spare.counts());
            Ok(())
        }
    }

    #[actix::test]
    async fn a_worker_lends_its_core_only_while_it_has_no_job() {
        let spare = Arc::new(crate::cores::SpareCores::new());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stage = spawn_stage(
            vec![Lending {
                spare: spare.clone(),
                seen: seen.clone(),
            }],
            2,
            Sink.start().recipient(),
            Events(Arc::default()).start().recipient(),
        );
        // idle from the start: its core is lent
        while spare.counts() != (1, 0) {
            tokio::task::yield_now().await;
        }
        for _ in 0..2 {
            submit(&stage, ()).await;
        }
        stage.counters.wait_until(|c| c.jobs_out == 2).await;
        // while working, nothing was lent
        assert_eq!(*seen.lock().unwrap(), [(0, 0), (0, 0)]);
        // and idle again afterwards
        while spare.counts() != (1, 0) {
            tokio::task::yield_now().await;
        }
    }

    /// Notes who started each job; a job with a gate waits for it to open
    /// (or close); lends its core in `own` while idle, when given one.
    struct Gated {
        who: &'static str,
        own: Option<Arc<crate::cores::SpareCores>>,
        log: Arc<Mutex<Vec<(&'static str, u32)>>>,
    }
    type Gate = Option<std::sync::mpsc::Receiver<()>>;
    impl StageWork for Gated {
        type In = (u32, Gate);
        type Out = ();
        const NAME: &'static str = "gated";
        const PROGRESS: (u8, &'static str) = (50, "Gated");
        fn lends_its_core(&self) -> Option<Arc<crate::cores::SpareCores>> {
            self.own.clone()
        }
        fn process(&mut self, _: &mut JobCtx, (job, gate): (u32, Gate)) -> Result<(), JobError> {
            self.log.lock().unwrap().push((self.who, job));
            if let Some(gate) = gate {
                let _ = gate.recv();
            }
            Ok(())
        }
    }

    /// A job whose work waits until the returned sender is dropped.
    fn gated(job: u32) -> ((u32, Gate), std::sync::mpsc::Sender<()>) {
        let (tx, rx) = std::sync::mpsc::channel();
        ((job, Some(rx)), tx)
    }

    #[actix::test]
    async fn the_extra_worker_takes_a_job_only_on_a_lent_core_when_the_own_workers_are_busy() {
        let (own, cores) = (
            Arc::new(crate::cores::SpareCores::new()),
            Arc::new(crate::cores::SpareCores::new()),
        );
        let log = Arc::new(Mutex::new(Vec::new()));
        let worker = |who, own| Gated {
            who,
            own,
            log: log.clone(),
        };
        let stage = spawn_stage_with(
            vec![worker("own", Some(own.clone()))],
            Some(Borrower {
                work: worker("extra", None),
                cores: cores.clone(),
            }),
            2,
            Sink.start().recipient(),
            Events(Arc::default()).start().recipient(),
        );
        assert_eq!(stage.counters.snapshot().workers, 2);
        let started = |n: usize| {
            let log = log.clone();
            async move {
                while log.lock().unwrap().len() < n {
                    tokio::task::yield_now().await;
                }
            }
        };
        // the own worker is busy and a job waits, but no core is lent: the
        // extra worker cannot take it, the own worker does once free
        let (job, open1) = gated(1);
        submit(&stage, job).await;
        started(1).await;
        submit(&stage, (2, None)).await;
        drop(open1);
        stage.counters.wait_until(|c| c.jobs_out == 2).await;
        // a core lent while the own worker is busy and a job waits: the extra
        // worker borrows it for that job, and hands it back after
        let (job, open3) = gated(3);
        submit(&stage, job).await;
        started(3).await;
        let lent = cores.lend();
        let (job, open4) = gated(4);
        submit(&stage, job).await;
        started(4).await;
        assert_eq!(
            cores.counts(),
            (1, 1),
            "the extra worker holds the lent core"
        );
        drop(open4);
        stage.counters.wait_until(|c| c.jobs_out == 3).await;
        while cores.counts() != (1, 0) {
            tokio::task::yield_now().await;
        }
        drop(open3);
        stage.counters.wait_until(|c| c.jobs_out == 4).await;
        // a core still lent, but the own worker is idle: the job is its own
        while own.counts() != (1, 0) {
            tokio::task::yield_now().await;
        }
        submit(&stage, (5, None)).await;
        stage.counters.wait_until(|c| c.jobs_out == 5).await;
        assert_eq!(
            *log.lock().unwrap(),
            [("own", 1), ("own", 2), ("own", 3), ("extra", 4), ("own", 5)]
        );
        assert_eq!(cores.counts(), (1, 0));
        drop(lent);
        // the stage stops: the extra worker, waiting on the cores, ends too
        let counters = stage.counters.clone();
        drop(stage);
        counters.wait_until(|c| c.workers_alive == 0).await;
    }

    /// A registry that goes away after its first message.
    struct Vanishing;
    impl Actor for Vanishing {
        type Context = Context<Self>;
    }
    impl Handler<JobEvent> for Vanishing {
        type Result = ();
        fn handle(&mut self, _: JobEvent, ctx: &mut Context<Self>) {
            ctx.stop();
        }
    }

    #[actix::test]
    async fn a_worker_that_ends_is_counted_with_its_exit_for_health() {
        let stage = spawn_stage(
            vec![Stopping],
            2,
            Sink.start().recipient(),
            Vanishing.start().recipient(),
        );
        assert_eq!(stage.counters.snapshot().workers_alive, 1);
        submit(&stage, false).await;
        // the progress report stops the registry; the failure report then finds it gone
        let snap = stage.counters.wait_until(|c| c.workers_alive == 0).await;
        assert_eq!(snap.workers, 1);
        assert_eq!(snap.worker_exits, ["worker 0: downstream_closed"]);
    }
}
