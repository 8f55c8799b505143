//! The PostgreSQL job queue (`store::queue`, issue #15) against a real
//! server: a private cluster per test (`common::pg`), skipped with one line
//! when PostgreSQL is not installed. Waits poll for a condition with a
//! deadline; the only timed part is a lease's expiry, where it is the point.

mod common;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use colloquy::store::queue::{
    CancelOutcome, JobQueue, LeaseState, NewJob, Notice, Notifications, Outcome, QueueError,
    QueueOptions, QueueStatus,
};
use common::pg::PgServer;
use uuid::Uuid;

/// Long enough never to expire during a test that is not about expiry.
const LONG_TTL: Duration = Duration::from_secs(60);
const SHORT_TTL: Duration = Duration::from_secs(1);
/// How long a condition may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn connect(pg: &PgServer) -> JobQueue {
    connect_with(pg, QueueOptions::default()).await
}

async fn connect_with(pg: &PgServer, opts: QueueOptions) -> JobQueue {
    match JobQueue::connect(&pg.url(), opts).await {
        Ok(q) => q,
        Err(e) => panic!("connect: {e}"),
    }
}

fn new_job(n: usize) -> NewJob {
    let id = Uuid::new_v4();
    NewJob {
        id,
        owner: Some(format!("key-{}", n % 2)),
        filename: format!("meeting-{n}.wav"),
        audio_key: format!("uploads/{id}"),
        bytes: 1000 + n as i64,
        options: serde_json::json!({ "num_speakers": 2, "whisper": { "language": "en" } }),
        callback: None,
    }
}

fn completed(key: &str) -> Outcome {
    Outcome::Completed {
        result_key: key.to_string(),
        result_bytes: 42,
        duration: Some(12.5),
    }
}

/// Polls `f` every 50 ms until it gives Some, failing after [`DEADLINE`].
async fn poll_until<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The next notice that `want` accepts, skipping others; fails after [`DEADLINE`].
async fn notice(listener: &mut Notifications, want: impl Fn(&Notice) -> bool) -> Notice {
    let wait = async {
        loop {
            match listener.recv().await {
                Ok(Some(n)) if want(&n) => return n,
                Ok(_) => continue,
                Err(e) => panic!("listener: {e}"),
            }
        }
    };
    match tokio::time::timeout(DEADLINE, wait).await {
        Ok(n) => n,
        Err(_) => panic!("no notification within {DEADLINE:?}"),
    }
}

async fn get(q: &JobQueue, id: Uuid) -> colloquy::store::queue::Job {
    q.get(id).await.expect("get").expect("job exists")
}

#[test]
fn ten_jobs_two_workers_each_finished_once() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let q = connect(&pg).await;
        let mut ids = Vec::new();
        for n in 0..10 {
            ids.push(q.enqueue(new_job(n)).await.expect("enqueue"));
        }
        // Jobs held right now, and every successful finish, across workers.
        let held = Arc::new(Mutex::new(HashSet::new()));
        let finished = Arc::new(Mutex::new(Vec::new()));
        let workers: Vec<_> = ["w1", "w2"]
            .into_iter()
            .map(|w| {
                let (q, held, finished) = (q.clone(), held.clone(), finished.clone());
                tokio::spawn(async move {
                    // Leases until the queue is empty (nothing expires: long TTL).
                    while let Some(lease) = q.lease(w, LONG_TTL).await.expect("lease") {
                        let id = lease.id();
                        assert!(
                            held.lock().unwrap().insert(id),
                            "job {id} leased by two workers at once"
                        );
                        assert_eq!(lease.job.attempts, 1);
                        // Give the other worker a turn while this one holds it.
                        tokio::task::yield_now().await;
                        assert!(q
                            .progress(&lease, 50, "Transcribing")
                            .await
                            .expect("progress"));
                        tokio::task::yield_now().await;
                        assert_eq!(q.renew(&lease).await.expect("renew"), LeaseState::Held);
                        let key = format!("results/{id}.json");
                        assert!(held.lock().unwrap().remove(&id));
                        assert!(q.finish(&lease, completed(&key)).await.expect("finish"));
                        finished.lock().unwrap().push((w, id));
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.expect("worker task");
        }
        let finished = finished.lock().unwrap().clone();
        let per_job: HashMap<Uuid, usize> =
            finished.iter().fold(HashMap::new(), |mut m, (_, id)| {
                *m.entry(*id).or_default() += 1;
                m
            });
        assert_eq!(finished.len(), 10, "finished: {finished:?}");
        assert!(
            per_job.values().all(|n| *n == 1),
            "finished twice: {per_job:?}"
        );
        let by: HashMap<&str, usize> = finished.iter().fold(HashMap::new(), |mut m, (w, _)| {
            *m.entry(*w).or_default() += 1;
            m
        });
        eprintln!("jobs per worker: {by:?}");
        for id in ids {
            let job = get(&q, id).await;
            assert_eq!(job.status, QueueStatus::Completed);
            assert_eq!(job.attempts, 1);
            assert_eq!(job.progress, 100);
            assert_eq!(job.result_key, Some(format!("results/{id}.json")));
            assert!(job.lease_expires_at.is_none());
            let worker = finished.iter().find(|(_, j)| *j == id).map(|(w, _)| *w);
            assert_eq!(job.lease_owner.as_deref(), worker);
        }
        let stats = q.stats().await.expect("stats");
        assert_eq!((stats.queued, stats.processing), (0, 0));
    });
}

#[test]
fn an_expired_lease_goes_to_another_worker_and_the_late_result_is_discarded() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let q = connect(&pg).await;
        let id = q.enqueue(new_job(0)).await.expect("enqueue");
        let a = q
            .lease("a", SHORT_TTL)
            .await
            .expect("lease")
            .expect("a job");
        assert_eq!((a.id(), a.job.attempts), (id, 1));
        let first_expiry = a.job.lease_expires_at.expect("lease expiry");

        // Worker a renews while it works: the expiry moves forward.
        let renewing = {
            let (q, a) = (q.clone(), a.clone());
            tokio::spawn(async move {
                loop {
                    assert_eq!(q.renew(&a).await.expect("renew"), LeaseState::Held);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let renewed = poll_until("a renewal", || async {
            let job = get(&q, id).await;
            job.lease_expires_at.filter(|t| *t > first_expiry)
        })
        .await;
        assert!(q.progress(&a, 30, "Decoding").await.expect("progress"));

        // Killed: it renews no more. Worker b gets the job once the lease expires.
        renewing.abort();
        let _ = renewing.await;
        let b = poll_until("b's lease", || async {
            q.lease("b", LONG_TTL).await.expect("lease")
        })
        .await;
        assert_eq!((b.id(), b.job.attempts), (id, 2));
        assert_eq!(b.job.lease_owner.as_deref(), Some("b"));
        assert_ne!(b.token, a.token);
        assert_eq!(
            (b.job.progress, b.job.step.as_str()),
            (0, "Starting"),
            "a new attempt"
        );
        // Taken over only after a's last renewal ran out (the database's clock).
        let last_expiry_of_a = renewed.max(first_expiry);
        assert!(b.job.updated_at > last_expiry_of_a);

        // a comes back: everything it tries is refused, the row untouched.
        let before = get(&q, id).await;
        assert_eq!(q.renew(&a).await.expect("renew"), LeaseState::Lost);
        assert!(!q.progress(&a, 90, "Aligning").await.expect("progress"));
        assert!(!q.set_duration(&a, 99.0).await.expect("duration"));
        assert!(!q
            .finish(&a, completed("results/from-a"))
            .await
            .expect("finish"));
        assert_eq!(get(&q, id).await, before);

        // b finishes it, once.
        assert_eq!(q.renew(&b).await.expect("renew"), LeaseState::Held);
        assert!(q
            .finish(&b, completed("results/from-b"))
            .await
            .expect("finish"));
        assert!(!q
            .finish(&b, completed("results/again"))
            .await
            .expect("finish"));
        assert!(!q
            .finish(&a, completed("results/from-a"))
            .await
            .expect("finish"));
        let job = get(&q, id).await;
        assert_eq!(job.status, QueueStatus::Completed);
        assert_eq!(job.result_key.as_deref(), Some("results/from-b"));
        assert_eq!(job.attempts, 2);
        assert!(q.lease("c", LONG_TTL).await.expect("lease").is_none());
    });
}

#[test]
fn cancel_a_queued_job_at_once_and_a_processing_one_through_its_holder() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let q = connect(&pg).await;
        let mut listener = q.listen().await.expect("listen");

        // Queued: a listening worker hears of it, and cancel takes effect at once.
        let queued = q.enqueue(new_job(0)).await.expect("enqueue");
        notice(&mut listener, |n| *n == Notice::Queued(queued)).await;
        assert_eq!(
            q.cancel(queued).await.expect("cancel"),
            CancelOutcome::Cancelled
        );
        let job = get(&q, queued).await;
        assert_eq!(job.status, QueueStatus::Cancelled);
        assert!(job.finished_at.is_some());
        assert!(q.lease("w", LONG_TTL).await.expect("lease").is_none());
        assert_eq!(
            q.cancel(queued).await.expect("cancel"),
            CancelOutcome::AlreadyFinished(QueueStatus::Cancelled)
        );

        // Processing: the holder is notified, and its renewal says so.
        let running = q.enqueue(new_job(1)).await.expect("enqueue");
        let lease = q.lease("w", LONG_TTL).await.expect("lease").expect("a job");
        assert_eq!(lease.id(), running);
        assert_eq!(q.renew(&lease).await.expect("renew"), LeaseState::Held);
        assert_eq!(
            q.cancel(running).await.expect("cancel"),
            CancelOutcome::Requested
        );
        notice(&mut listener, |n| *n == Notice::CancelRequested(running)).await;
        let job = get(&q, running).await;
        assert_eq!(
            (job.status, job.cancel_requested),
            (QueueStatus::Processing, true)
        );
        assert_eq!(
            q.renew(&lease).await.expect("renew"),
            LeaseState::CancelRequested
        );
        assert!(q.finish(&lease, Outcome::Cancelled).await.expect("finish"));
        let job = get(&q, running).await;
        assert_eq!(job.status, QueueStatus::Cancelled);
        assert_eq!(job.step, "Cancelled");

        // Deleting a processing job: its holder hears of it and has lost the lease.
        let deleted = q.enqueue(new_job(2)).await.expect("enqueue");
        let lease = q.lease("w", LONG_TTL).await.expect("lease").expect("a job");
        assert_eq!(lease.id(), deleted);
        let gone = q.delete(deleted).await.expect("delete").expect("was there");
        assert_eq!(gone.status, QueueStatus::Processing);
        notice(&mut listener, |n| *n == Notice::CancelRequested(deleted)).await;
        assert_eq!(q.renew(&lease).await.expect("renew"), LeaseState::Lost);
        assert!(!q
            .finish(&lease, completed("results/x"))
            .await
            .expect("finish"));
        assert!(q.get(deleted).await.expect("get").is_none());

        assert_eq!(
            q.cancel(Uuid::new_v4()).await.expect("cancel"),
            CancelOutcome::NotFound
        );
    });
}

#[test]
fn expired_leases_out_of_attempts_fail_and_cancelled_ones_end_cancelled() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let opts = QueueOptions {
            max_attempts: 1,
            ..QueueOptions::default()
        };
        let q = connect_with(&pg, opts).await;
        let poison = q.enqueue(new_job(0)).await.expect("enqueue");
        let cancelled = q.enqueue(new_job(1)).await.expect("enqueue");
        let a = q
            .lease("a", SHORT_TTL)
            .await
            .expect("lease")
            .expect("a job");
        let b = q
            .lease("b", SHORT_TTL)
            .await
            .expect("lease")
            .expect("a job");
        assert_eq!((a.id(), b.id()), (poison, cancelled));
        assert_eq!(
            q.cancel(cancelled).await.expect("cancel"),
            CancelOutcome::Requested
        );
        // Both workers die. The next worker to poll ends both jobs, leasing neither.
        let updates = q.listen_updates().await;
        let mut updates = updates.expect("listen");
        poll_until("both jobs reaped", || async {
            assert!(q.lease("c", LONG_TTL).await.expect("lease").is_none());
            let (p, c) = (get(&q, poison).await, get(&q, cancelled).await);
            (p.status.is_finished() && c.status.is_finished()).then_some(())
        })
        .await;
        let p = get(&q, poison).await;
        assert_eq!(p.status, QueueStatus::Failed);
        assert_eq!(p.error_kind.as_deref(), Some("internal"));
        assert!(p.error.is_some_and(|e| e.contains("stopped answering")));
        assert_eq!(get(&q, cancelled).await.status, QueueStatus::Cancelled);
        notice(&mut updates, |n| *n == Notice::Updated(poison)).await;
        assert!(!q
            .finish(&a, completed("results/late"))
            .await
            .expect("finish"));
        assert_eq!(q.renew(&b).await.expect("renew"), LeaseState::Lost);
    });
}

#[test]
fn migrations_apply_to_an_empty_database_once() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        use sqlx::Connection;
        let mut raw = sqlx::PgConnection::connect(&pg.url())
            .await
            .expect("raw connection");
        let tables =
            "SELECT to_regclass('jobs') IS NOT NULL AND to_regclass('workers') IS NOT NULL";
        let exists: bool = sqlx::query_scalar(tables)
            .fetch_one(&mut raw)
            .await
            .expect("query");
        assert!(!exists, "the database starts empty");

        // Two nodes starting at once, then one more: the schema is applied once.
        let url = pg.url();
        let (a, b) = tokio::join!(
            JobQueue::connect(&url, QueueOptions::default()),
            JobQueue::connect(&url, QueueOptions::default())
        );
        let (a, _b) = (a.expect("first connect"), b.expect("second connect"));
        let files = std::fs::read_dir(common::repo_path("migrations"))
            .expect("migrations folder")
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "sql"))
            .count() as i64;
        let applied = "SELECT count(*) FROM _sqlx_migrations WHERE success";
        let count: i64 = sqlx::query_scalar(applied)
            .fetch_one(&mut raw)
            .await
            .expect("query");
        assert_eq!(count, files);
        let exists: bool = sqlx::query_scalar(tables)
            .fetch_one(&mut raw)
            .await
            .expect("query");
        assert!(exists);

        let id = a.enqueue(new_job(0)).await.expect("enqueue");
        let _c = connect(&pg).await;
        let count: i64 = sqlx::query_scalar(applied)
            .fetch_one(&mut raw)
            .await
            .expect("query");
        assert_eq!(count, files);
        assert!(
            a.get(id).await.expect("get").is_some(),
            "data kept across connects"
        );
    });
}

#[test]
fn rows_list_delete_heartbeats_and_stats() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let q = connect(&pg).await;
        let jobs: Vec<NewJob> = (0..3).map(new_job).collect();
        for job in &jobs {
            q.enqueue(job.clone()).await.expect("enqueue");
        }
        let job = get(&q, jobs[0].id).await;
        assert_eq!(job.filename, "meeting-0.wav");
        assert_eq!(job.audio_key, jobs[0].audio_key);
        assert_eq!(job.options, jobs[0].options);
        assert_eq!(
            (job.status, job.progress, job.attempts),
            (QueueStatus::Queued, 0, 0)
        );
        assert_eq!(job.step, "Queued");
        assert!(job.lease_owner.is_none() && job.started_at.is_none());

        // Newest first; one key's only; a limit.
        let all = q.list(None, 10).await.expect("list");
        let ids: Vec<Uuid> = all.iter().map(|j| j.id).collect();
        assert_eq!(ids.len(), 3);
        assert!(all.windows(2).all(|w| w[0].created_at >= w[1].created_at));
        let mine = q.list(Some("key-0"), 10).await.expect("list");
        assert!(!mine.is_empty() && mine.iter().all(|j| j.owner.as_deref() == Some("key-0")));
        assert_eq!(q.list(None, 1).await.expect("list").len(), 1);

        let lease = q
            .lease("w1", LONG_TTL)
            .await
            .expect("lease")
            .expect("a job");
        assert_eq!(lease.id(), jobs[0].id, "oldest first");
        assert_eq!(lease.job.step, "Starting");
        assert!(lease.job.started_at.is_some());
        assert!(q.set_duration(&lease, 61.5).await.expect("duration"));
        q.heartbeat("w1", "worker").await.expect("heartbeat");
        q.heartbeat("api-1", "api").await.expect("heartbeat");
        q.heartbeat("w1", "worker").await.expect("heartbeat");
        let stats = q.stats().await.expect("stats");
        assert_eq!((stats.queued, stats.processing), (2, 1));
        let seen: Vec<(&str, &str)> = stats
            .workers
            .iter()
            .map(|w| (w.id.as_str(), w.role.as_str()))
            .collect();
        assert_eq!(seen, [("api-1", "api"), ("w1", "worker")]);

        let failed = Outcome::Failed {
            error: "not an audio file".into(),
            kind: "input".into(),
        };
        assert!(q.finish(&lease, failed).await.expect("finish"));
        let job = get(&q, jobs[0].id).await;
        assert_eq!(job.status, QueueStatus::Failed);
        assert_eq!(job.error.as_deref(), Some("not an audio file"));
        assert_eq!(job.error_kind.as_deref(), Some("input"));
        assert_eq!(job.duration, Some(61.5));

        let gone = q
            .delete(jobs[1].id)
            .await
            .expect("delete")
            .expect("was there");
        assert_eq!(gone.id, jobs[1].id);
        assert!(q.delete(jobs[1].id).await.expect("delete").is_none());
        assert_eq!(q.list(None, 10).await.expect("list").len(), 2);
        let stats = q.stats().await.expect("stats");
        assert_eq!((stats.queued, stats.processing), (1, 0));
    });
}

#[test]
fn bad_url_or_server_down_is_a_clear_error() {
    runtime().block_on(async {
        let opts = QueueOptions {
            connect_timeout: Duration::from_secs(3),
            ..QueueOptions::default()
        };
        let cases = [
            "not a url",
            "mysql://root:hunter2@localhost/jobs",
            // Nothing listens on port 1 (TCP refused), nor in this folder.
            "postgres://colloquy:hunter2@127.0.0.1:1/postgres",
            "postgres://colloquy@localhost/postgres?host=/nonexistent-colloquy&port=5432",
        ];
        for url in cases {
            let started = Instant::now();
            match JobQueue::connect(url, opts.clone()).await {
                Ok(_) => panic!("{url}: connected"),
                Err(e @ QueueError::Connect { .. }) => {
                    assert_eq!(e.is_unavailable(), url != "not a url", "{e:?}");
                    let msg = e.to_string();
                    eprintln!("{url}: {msg}");
                    assert!(msg.starts_with("cannot connect to the job database at "));
                    assert!(!msg.contains("hunter2"), "password in {msg:?}");
                }
                Err(e) => panic!("{url}: not a connect error: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(3),
                "{url}: slow to fail"
            );
        }
    });

    // A server that goes away under a connected queue.
    let Some(mut pg) = PgServer::start() else {
        return;
    };
    runtime().block_on(async {
        let opts = QueueOptions {
            connect_timeout: Duration::from_secs(2),
            ..QueueOptions::default()
        };
        let q = connect_with(&pg, opts).await;
        let id = q.enqueue(new_job(0)).await.expect("enqueue");
        pg.stop();
        match q.get(id).await {
            Ok(job) => panic!("read {job:?} from a stopped server"),
            Err(e) => {
                eprintln!("server down: {e}");
                assert!(e.is_unavailable(), "{e:?}");
            }
        }
        assert!(q
            .lease("w", LONG_TTL)
            .await
            .is_err_and(|e| e.is_unavailable()));
        let again = JobQueue::connect(&pg.url(), QueueOptions::default()).await;
        assert!(again.is_err_and(|e| e.is_unavailable()));
    });
}

#[test]
fn an_estimate_travels_with_the_row_and_a_callback_is_claimed_by_one_node_once_its_job_ends() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let q = connect(&pg).await;
        let mut job = new_job(0);
        job.callback = Some(serde_json::json!({ "url": "http://hooks.test/x", "attempts": 0 }));
        let id = q.enqueue(job).await.expect("enqueue");
        let hold = Duration::from_secs(60);
        assert!(
            q.claim_callback(hold).await.unwrap().is_none(),
            "not before the job ends"
        );
        let lease = q.lease("w1", LONG_TTL).await.unwrap().expect("lease");
        // the holder's estimate of seconds left travels with the row
        assert!(q.estimate(&lease, Some(12.5)).await.unwrap());
        assert_eq!(get(&q, id).await.eta_seconds, Some(12.5));
        assert!(q.finish(&lease, completed("results/x.json")).await.unwrap());
        assert!(
            !q.estimate(&lease, Some(3.0)).await.unwrap(),
            "not once finished"
        );
        // two nodes claim at once: one gets it
        let (a, b) = tokio::join!(q.claim_callback(hold), q.claim_callback(hold));
        let claimed: Vec<_> = [a.unwrap(), b.unwrap()].into_iter().flatten().collect();
        assert_eq!(claimed.len(), 1, "{claimed:?}");
        assert_eq!(claimed[0].id, id);
        assert_eq!(
            claimed[0].callback.as_ref().unwrap()["url"],
            "http://hooks.test/x"
        );
        assert!(
            q.claim_callback(hold).await.unwrap().is_none(),
            "held while in flight"
        );
        // a failed attempt due again at once: claimed again
        let retry =
            serde_json::json!({ "url": "http://hooks.test/x", "attempts": 1, "last_error": "503" });
        assert!(q
            .record_callback(id, &retry, Some(Duration::ZERO))
            .await
            .unwrap());
        let again = q.claim_callback(hold).await.unwrap().expect("due again");
        assert_eq!(again.callback.unwrap()["attempts"], 1);
        // done: never claimed again
        let done = serde_json::json!({ "url": "http://hooks.test/x", "attempts": 2, "done": true });
        assert!(q.record_callback(id, &done, None).await.unwrap());
        assert!(q.claim_callback(Duration::ZERO).await.unwrap().is_none());
        assert_eq!(get(&q, id).await.callback.unwrap()["done"], true);
    });
}

#[test]
fn partial_segments_are_written_under_a_held_lease_and_go_when_the_job_ends_or_is_handed_back() {
    let Some(pg) = PgServer::start() else { return };
    runtime().block_on(async {
        let q = connect(&pg).await;
        let id = q.enqueue(new_job(0)).await.expect("enqueue");
        let seg = |n: i32| {
            (
                n,
                serde_json::json!({ "id": n, "start": 0.0, "end": 1.0, "text": format!("s{n}") }),
            )
        };
        let lease = q.lease("w1", LONG_TTL).await.unwrap().expect("lease");
        assert_eq!(q.add_segments(&lease, &[seg(1), seg(2)]).await.unwrap(), 2);
        assert_eq!(
            q.add_segments(&lease, &[seg(2), seg(3)]).await.unwrap(),
            1,
            "a seq stored once"
        );
        let after1: Vec<i32> = q
            .segments_after(id, 1)
            .await
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect();
        assert_eq!(after1, [2, 3]);
        // handed back: its text goes, and the next attempt starts afresh
        assert!(q.release(&lease).await.unwrap());
        assert!(q.segments_after(id, 0).await.unwrap().is_empty());
        assert_eq!(
            q.add_segments(&lease, &[seg(4)]).await.unwrap(),
            0,
            "not under a lease no longer held"
        );
        let again = q.lease("w2", LONG_TTL).await.unwrap().expect("lease again");
        assert_eq!(q.add_segments(&again, &[seg(1)]).await.unwrap(), 1);
        assert_eq!(q.segments_after(id, 0).await.unwrap().len(), 1);
        // finished: the result replaces them
        assert!(q.finish(&again, completed("results/y.json")).await.unwrap());
        assert!(q.segments_after(id, 0).await.unwrap().is_empty());
    });
}
