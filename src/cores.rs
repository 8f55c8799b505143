//! Cores that an idle engine lends to a busy one.
//!
//! The pipeline splits the machine's cores between the engines that can run
//! at once (`actors::pipeline::ThreadBudget`): on 2 cores the transcriber
//! and the diarizer get one each. When one job is in flight and its
//! transcription ends first, the transcriber's core would wait for the
//! diarizer. The transcriber's worker *lends* its core while it waits for
//! work ([`SpareCores::lend`]), and the diarizer's segmentation and
//! embedding loops *borrow* it for second sessions of their models, one
//! batch at a time ([`run_batches`]). The core goes back when the
//! transcriber gets work: the borrower finishes the batch it holds and
//! takes no other. The other way round, when several jobs wait for the
//! transcriber while the diarizer has none, the diarizer's worker lends its
//! core and an extra transcriber worker borrows it for one whole job
//! ([`CorePools`]). Plain synchronous code, no actix.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The cores lent right now and how many of them are borrowed.
#[derive(Default)]
pub struct SpareCores {
    state: Mutex<Lending>,
    changed: Condvar,
}

#[derive(Default)]
struct Lending {
    lent: usize,
    borrowed: usize,
}

/// The two ways cores are lent on a machine whose engines have one share
/// each (`pipeline.lend_idle_cores`).
#[derive(Clone, Default)]
pub struct CorePools {
    /// Lent by the transcriber's workers while idle; borrowed by the
    /// diarization engines' second sessions, one batch at a time.
    pub from_transcription: std::sync::Arc<SpareCores>,
    /// Lent by the diarizer's workers while idle; borrowed by the
    /// transcriber's extra worker, one job at a time, while the jobs waiting
    /// for transcription outnumber the transcriber's idle workers
    /// (`actors::stage::Borrower`).
    pub from_diarization: std::sync::Arc<SpareCores>,
}

/// One core lent until this is dropped.
#[must_use = "the core is taken back when this is dropped"]
pub struct Lent<'a>(&'a SpareCores);

/// One lent core borrowed until this is dropped.
#[must_use = "the core is handed back when this is dropped"]
pub struct Borrowed<'a>(&'a SpareCores);

impl SpareCores {
    pub fn new() -> SpareCores {
        SpareCores::default()
    }

    fn state(&self) -> MutexGuard<'_, Lending> {
        // the state is two counters, consistent after every statement
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lends one core (an engine's share of the machine) until the guard
    /// is dropped.
    pub fn lend(&self) -> Lent<'_> {
        self.state().lent += 1;
        self.changed.notify_all();
        Lent(self)
    }

    /// Waits until a lent core is free and borrows it, or returns None as
    /// soon as `give_up` is set (after a [`SpareCores::wake`]).
    pub fn borrow(&self, give_up: &AtomicBool) -> Option<Borrowed<'_>> {
        self.borrow_when(give_up, || true)
    }

    /// As [`SpareCores::borrow`], and only while `wanted` holds: it is asked
    /// whenever a core is lent or handed back, and after each
    /// [`SpareCores::wake`] (whoever changes what it reads calls `wake`).
    pub fn borrow_when(
        &self,
        give_up: &AtomicBool,
        mut wanted: impl FnMut() -> bool,
    ) -> Option<Borrowed<'_>> {
        let mut s = self
            .changed
            .wait_while(self.state(), |s| {
                !give_up.load(Ordering::SeqCst) && (s.borrowed >= s.lent || !wanted())
            })
            .unwrap_or_else(|e| e.into_inner());
        if give_up.load(Ordering::SeqCst) {
            return None;
        }
        s.borrowed += 1;
        Some(Borrowed(self))
    }

    /// Sets `give_up` and wakes the borrowers waiting, so that those that
    /// wait on it return None.
    pub fn call_off(&self, give_up: &AtomicBool) {
        give_up.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Wakes every [`SpareCores::borrow`] waiting, to look at its `give_up`
    /// (and its condition) again.
    pub fn wake(&self) {
        let _s = self.state();
        self.changed.notify_all();
    }

    /// Cores lent now, and how many of them are borrowed.
    pub fn counts(&self) -> (usize, usize) {
        let s = self.state();
        (s.lent, s.borrowed)
    }
}

impl Drop for Lent<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.lent = s.lent.saturating_sub(1);
    }
}

impl Drop for Borrowed<'_> {
    fn drop(&mut self) {
        self.0.state().borrowed -= 1;
        self.0.changed.notify_all();
    }
}

/// Runs `count` independent batches and returns their results in order,
/// with the batches the helper ran (in the order it ran them).
/// The calling thread runs them with `main`, one after another; with a
/// `helper`, a second thread takes the next batch with the helper's own
/// function whenever it can borrow a lent core, one batch per borrow. That
/// thread is on a kept-pages arena of its own ([`crate::alloc::KeptPages`]),
/// as model batches run there.
/// `stop` is asked before each batch of the calling thread. A batch's
/// result does not depend on which thread ran it, when both functions
/// compute the same thing.
pub fn run_batches<T, E, M, H>(
    count: usize,
    mut main: M,
    helper: Option<(H, &SpareCores)>,
    stop: impl Fn() -> Result<(), E>,
) -> Result<(Vec<T>, Vec<usize>), E>
where
    T: Send,
    E: Send,
    M: FnMut(usize) -> Result<T, E>,
    H: FnMut(usize) -> Result<T, E> + Send,
{
    let next = AtomicUsize::new(0);
    let done = AtomicBool::new(false);
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    let mut main_loop = || -> Result<Vec<(usize, T)>, E> {
        let mut out = Vec::new();
        loop {
            stop()?;
            let b = next.fetch_add(1, Ordering::SeqCst);
            if b >= count {
                return Ok(out);
            }
            out.push((b, main(b)?));
        }
    };
    let (mine, theirs): (_, Result<Vec<(usize, T)>, E>) = match helper {
        None => (main_loop(), Ok(Vec::new())),
        Some((mut help, spare)) => std::thread::scope(|s| {
            let (next, done) = (&next, &done);
            let helper = s.spawn(move || -> Result<Vec<(usize, T)>, E> {
                // it runs model batches: it keeps the pages it frees, as the
                // engines' own threads do (crate::alloc), until it ends
                let _kept = crate::alloc::KeptPages::bind();
                let mut out = Vec::new();
                while let Some(_core) = spare.borrow(done) {
                    let b = next.fetch_add(1, Ordering::SeqCst);
                    if b >= count {
                        break;
                    }
                    out.push((b, help(b)?));
                }
                Ok(out)
            });
            // the helper stops waiting once the calling thread is done, by
            // an error or a panic too (the scope joins it before unwinding)
            let finished = Finished(done, spare);
            let mine = main_loop();
            drop(finished);
            let theirs = match helper.join() {
                Ok(r) => r,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            (mine, theirs)
        }),
    };
    let (mine, theirs) = (mine?, theirs?);
    let helped = theirs.iter().map(|(b, _)| *b).collect();
    for (b, r) in mine.into_iter().chain(theirs) {
        results[b] = Some(r);
    }
    let results = results
        .into_iter()
        .map(|r| r.expect("every batch was run by one of the threads"))
        .collect();
    Ok((results, helped))
}

/// Sets `done` and wakes the borrowers when dropped.
struct Finished<'a>(&'a AtomicBool, &'a SpareCores);

impl Drop for Finished<'_> {
    fn drop(&mut self) {
        self.1.call_off(self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::Arc;

    /// `count` batches, `main` on the calling thread and `helper` on the
    /// lent core that `spare` must hold: the calling thread waits at its
    /// first batch until the helper has run one, so both are seen to work.
    fn both_working<T: Send>(
        spare: &SpareCores,
        count: usize,
        main: impl Fn(usize) -> T,
        helper: impl Fn(usize) -> T + Send,
    ) -> (Vec<T>, Vec<usize>) {
        let (tx, rx) = mpsc::channel();
        let mut waited = false;
        run_batches(
            count,
            |b| {
                if !waited {
                    rx.recv().unwrap();
                    waited = true;
                }
                Ok::<_, ()>(main(b))
            },
            Some((
                move |b: usize| {
                    let _ = tx.send(());
                    Ok(helper(b))
                },
                spare,
            )),
            || Ok(()),
        )
        .unwrap()
    }

    #[test]
    fn a_borrow_waits_for_a_lent_core_and_ends_with_it() {
        let spare = Arc::new(SpareCores::new());
        let give_up = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (spare, give_up) = (spare.clone(), give_up.clone());
            std::thread::spawn(move || {
                let got = spare.borrow(&give_up).is_some();
                tx.send(got).unwrap();
            })
        };
        // nothing lent: the borrower waits (it cannot have answered yet)
        assert!(rx.try_recv().is_err());
        let lent = spare.lend();
        assert!(rx.recv().unwrap(), "borrowed once a core was lent");
        waiter.join().unwrap();
        assert_eq!(spare.counts(), (1, 0), "the borrow ended with its thread");
        drop(lent);
        assert_eq!(spare.counts(), (0, 0));
        // giving up ends a wait with nothing
        let waiter = {
            let (spare, give_up) = (spare.clone(), give_up.clone());
            std::thread::spawn(move || spare.borrow(&give_up).is_some())
        };
        spare.call_off(&give_up);
        assert!(!waiter.join().unwrap());
    }

    #[test]
    fn a_conditional_borrow_waits_for_its_condition_too() {
        let spare = Arc::new(SpareCores::new());
        let (wanted, never) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let _lent = spare.lend();
        let (asked_tx, asked) = mpsc::channel();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let (spare, wanted, never) = (spare.clone(), wanted.clone(), never.clone());
            std::thread::spawn(move || {
                let got = spare.borrow_when(&never, || {
                    asked_tx.send(()).unwrap();
                    wanted.load(Ordering::SeqCst)
                });
                tx.send(got.is_some()).unwrap();
            })
        };
        // a core is lent, but the condition does not hold: no borrow (the
        // condition is asked under the lock that `counts` takes too)
        asked.recv().unwrap();
        assert_eq!(spare.counts(), (1, 0));
        // a wake asks it again
        spare.wake();
        asked.recv().unwrap();
        assert_eq!(spare.counts(), (1, 0));
        wanted.store(true, Ordering::SeqCst);
        spare.wake();
        assert!(rx.recv().unwrap(), "borrowed once the condition held");
        waiter.join().unwrap();
        assert_eq!(spare.counts(), (1, 0), "handed back with its thread");
    }

    #[test]
    fn one_lent_core_serves_one_borrower_at_a_time() {
        let spare = SpareCores::new();
        let never = AtomicBool::new(false);
        let _lent = spare.lend();
        let first = spare.borrow(&never).expect("a core is lent");
        assert_eq!(spare.counts(), (1, 1));
        let give_up = AtomicBool::new(true);
        assert!(spare.borrow(&give_up).is_none(), "the only core is taken");
        drop(first);
        assert!(spare.borrow(&never).is_some());
    }

    #[test]
    fn batches_come_back_in_order_with_or_without_a_helper() {
        let spare = SpareCores::new();
        let (alone, helped): (Vec<usize>, _) = run_batches(
            10,
            |b| Ok::<_, ()>(b * b),
            None::<(fn(usize) -> _, _)>,
            || Ok(()),
        )
        .unwrap();
        assert_eq!(alone, (0..10).map(|b| b * b).collect::<Vec<_>>());
        assert!(helped.is_empty());
        // a core lent for the whole run: the helper takes batches as well
        let _lent = spare.lend();
        let (both, helped) = both_working(&spare, 200, |b| (b * b, "main"), |b| (b * b, "helper"));
        assert_eq!(
            both.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..200).map(|b| b * b).collect::<Vec<_>>()
        );
        assert!(both.iter().any(|r| r.1 == "helper"));
        assert!(both.iter().any(|r| r.1 == "main"));
        // the batches it names as the helper's are those the helper ran
        let mut helped = helped;
        helped.sort_unstable();
        let by_helper: Vec<usize> = (0..200).filter(|&b| both[b].1 == "helper").collect();
        assert_eq!(helped, by_helper);
        assert_eq!(spare.counts(), (1, 0), "the helper handed its core back");
    }

    #[test]
    fn no_lent_core_means_the_helper_runs_nothing() {
        let spare = SpareCores::new();
        let (r, helped) = run_batches(
            50,
            |b| Ok::<_, ()>((b, "main")),
            Some((|b: usize| Ok((b, "helper")), &spare)),
            || Ok(()),
        )
        .unwrap();
        assert!(r.iter().all(|x| x.1 == "main"));
        assert!(helped.is_empty());
        assert_eq!(r.len(), 50);
    }

    #[test]
    fn an_error_or_a_stop_on_either_side_is_returned() {
        let spare = SpareCores::new();
        let _lent = spare.lend();
        let main_fails = run_batches(
            20,
            |b| if b >= 5 { Err("main") } else { Ok(b) },
            Some((|_b: usize| Err("helper"), &spare)),
            || Ok(()),
        );
        assert!(main_fails.is_err());
        let stopped = run_batches(20, Ok::<usize, &str>, None::<(fn(usize) -> _, _)>, || {
            Err("stopped")
        });
        assert_eq!(stopped.map(|r| r.0), Err("stopped"));
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn the_helper_thread_keeps_the_pages_it_frees() {
        let spare = SpareCores::new();
        let _lent = spare.lend();
        let (r, _) = both_working(
            &spare,
            50,
            |_| None,
            |_| Some(crate::alloc::this_thread_keeps_freed_pages()),
        );
        let helped: Vec<bool> = r.into_iter().flatten().collect();
        assert!(!helped.is_empty());
        assert!(helped.iter().all(|&k| k));
    }

    #[test]
    fn a_panic_on_the_calling_thread_does_not_leave_the_helper_waiting() {
        // no core lent: the helper waits to borrow one, and must stop
        // waiting when the calling thread panics, or the scope never ends
        let spare = SpareCores::new();
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_batches(
                3,
                |_| -> Result<usize, ()> { panic!("an engine bug") },
                Some((|b: usize| Ok(b), &spare)),
                || Ok(()),
            )
        }));
        assert!(r.is_err(), "the panic reached the caller");
        assert_eq!(spare.counts(), (0, 0));
    }
}
