//! Worker nodes (`colloquy::worker`, issue #15) against a real PostgreSQL
//! queue (`common::pg`: a private cluster, skipped with one line when
//! PostgreSQL is not installed) and a blob store on local disk; each node
//! is its own registry and actor pipeline with fake engines, all in one
//! actix system. Waits poll for a condition with a deadline; a lease's
//! expiry is the only timed part, where it is the point.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use colloquy::registry::JobOptions;
use colloquy::store::blobs::{upload_key, BlobOptions, BlobStore};
use colloquy::store::queue::{CancelOutcome, JobQueue, NewJob, QueueOptions, QueueStatus};
use colloquy::worker::{Worker, WorkerOptions};
use common::fakes;
use common::pg::PgServer;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

fn folder(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("colloquy-worker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A worker node: its own storage, registry and pipeline (fake engines,
/// `hook` in the transcriber), leasing from `url`.
async fn node(
    name: &str,
    url: &str,
    blobs: &BlobStore,
    engines: colloquy::actors::pipeline::Engines,
    lease: Duration,
) -> Worker {
    let mut config = fakes::config(&[]);
    config.server.storage_dir = folder(name).display().to_string();
    config.pipeline.max_active_jobs = 2;
    let (state, pipeline) = colloquy::api::start_engine(&config, engines)
        .await
        .expect("node");
    std::mem::forget(pipeline); // the node lives as long as the test's system
    Worker {
        queue: JobQueue::connect(url, QueueOptions::default())
            .await
            .expect("queue"),
        blobs: blobs.clone(),
        registry: state.registry.clone(),
        storage: state.storage.clone(),
        opts: WorkerOptions {
            id: name.to_string(),
            lease,
            max_jobs: 2,
            poll: Duration::from_millis(200),
        },
    }
}

/// Uploads a 1 s tone and queues its job, as an api node does.
async fn submit(queue: &JobQueue, blobs: &BlobStore, n: usize) -> Uuid {
    let id = Uuid::new_v4();
    let key = upload_key(id, "audio.wav");
    let audio = fakes::tone_wav(1.0);
    let bytes = audio.len() as i64;
    blobs.put_bytes(&key, audio.into()).await.unwrap();
    queue
        .enqueue(NewJob {
            id,
            owner: None,
            filename: format!("call-{n}.wav"),
            audio_key: key,
            bytes,
            options: serde_json::to_value(JobOptions::default()).unwrap(),
        })
        .await
        .unwrap()
}

/// Polls the queue until `id` is in `status`.
async fn wait_status(
    queue: &JobQueue,
    id: Uuid,
    status: QueueStatus,
) -> colloquy::store::queue::Job {
    let t0 = Instant::now();
    loop {
        let job = queue.get(id).await.unwrap().expect("job row");
        if job.status == status {
            return job;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "job {id} is {:?} (step {}), not {status:?}, after {DEADLINE:?}",
            job.status,
            job.step
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops a worker's loop as a kill would (its jobs' tasks go with it),
/// inside the runtime, so that its database connections close there.
async fn stop(run: tokio::task::JoinHandle<Result<(), colloquy::worker::WorkerError>>) {
    run.abort();
    let _ = run.await;
    // the aborted job tasks are dropped on the runtime's next turns
    tokio::task::yield_now().await;
}

fn local_blobs(name: &str) -> BlobStore {
    BlobStore::open(&BlobOptions {
        root: folder(name),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn ten_jobs_on_two_workers_all_complete_each_exactly_once() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url();
    actix_rt::System::new().block_on(async move {
        let blobs = local_blobs("ten-blobs");
        let queue = JobQueue::connect(&url, QueueOptions::default())
            .await
            .unwrap();
        let lease = Duration::from_secs(30);
        let a = node("ten-a", &url, &blobs, fakes::engines(None), lease).await;
        let b = node("ten-b", &url, &blobs, fakes::engines(None), lease).await;
        let workers = [
            tokio::task::spawn_local(a.run()),
            tokio::task::spawn_local(b.run()),
        ];
        let mut ids = Vec::new();
        for n in 0..10 {
            ids.push(submit(&queue, &blobs, n).await);
        }
        for &id in &ids {
            let job = wait_status(&queue, id, QueueStatus::Completed).await;
            assert_eq!(job.attempts, 1, "leased once: {job:?}");
            let key = job.result_key.clone().expect("result key");
            let result: serde_json::Value =
                serde_json::from_slice(&blobs.get_bytes(&key).await.unwrap()).unwrap();
            assert!(
                result["segments"].as_array().is_some_and(|s| !s.is_empty()),
                "{result}"
            );
            // one result blob: no second worker wrote one
            let written = blobs.list(&format!("results/{id}/")).await.unwrap();
            assert_eq!(written.len(), 1, "{written:?}");
        }
        let stats = queue.stats().await.unwrap();
        assert_eq!((stats.queued, stats.processing), (0, 0), "{stats:?}");
        let seen: Vec<&str> = stats.workers.iter().map(|w| w.id.as_str()).collect();
        assert!(
            seen.contains(&"ten-a") && seen.contains(&"ten-b"),
            "{seen:?}"
        );
        for w in workers {
            stop(w).await;
        }
        queue.close().await;
    });
}

#[test]
fn a_dead_workers_job_completes_on_another_and_a_cancel_reaches_a_running_job() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url();
    actix_rt::System::new().block_on(async move {
        let blobs = local_blobs("dead-blobs");
        let queue = JobQueue::connect(&url, QueueOptions::default())
            .await
            .unwrap();
        let lease = Duration::from_secs(1);

        // a worker takes the job, its pipeline holds it, then the worker dies
        let (release_a, hook_a) = fakes::held();
        let a = node("dead-a", &url, &blobs, fakes::engines(Some(hook_a)), lease).await;
        let a_run = tokio::task::spawn_local(a.run());
        let id = submit(&queue, &blobs, 0).await;
        let job = wait_status(&queue, id, QueueStatus::Processing).await;
        assert_eq!(job.lease_owner.as_deref(), Some("dead-a"));
        stop(a_run).await; // as kill -9: no renewal, no finish
                           // another worker takes it over once the lease lapses, and completes it
        let b = node("dead-b", &url, &blobs, fakes::engines(None), lease).await;
        let b_run = tokio::task::spawn_local(b.run());
        let job = wait_status(&queue, id, QueueStatus::Completed).await;
        assert_eq!(job.attempts, 2, "{job:?}");
        let written = blobs.list(&format!("results/{id}/")).await.unwrap();
        assert_eq!(
            written.len(),
            1,
            "only the second worker's result: {written:?}"
        );
        let _ = release_a.send(()); // the dead node's pipeline lets go; nothing is written
        stop(b_run).await;

        // a cancel reaches a job a worker is running
        let (release_c, hook_c) = fakes::held();
        let c = node(
            "cancel-c",
            &url,
            &blobs,
            fakes::engines(Some(hook_c)),
            lease,
        )
        .await;
        let c_run = tokio::task::spawn_local(c.run());
        let id = submit(&queue, &blobs, 1).await;
        wait_status(&queue, id, QueueStatus::Processing).await;
        assert_eq!(queue.cancel(id).await.unwrap(), CancelOutcome::Requested);
        let job = wait_status(&queue, id, QueueStatus::Cancelled).await;
        assert!(job.result_key.is_none(), "{job:?}");
        let _ = release_c.send(());
        stop(c_run).await;
        let written = blobs.list(&format!("results/{id}/")).await.unwrap();
        assert!(written.is_empty(), "{written:?}");
        queue.close().await;
    });
}

#[test]
fn a_worker_stopped_on_purpose_hands_its_job_back_and_bad_audio_fails_as_input() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url();
    actix_rt::System::new().block_on(async move {
        let blobs = local_blobs("handback-blobs");
        let queue = JobQueue::connect(&url, QueueOptions::default())
            .await
            .unwrap();
        // a long lease: the job comes back because it is handed back, not because it lapsed
        let lease = Duration::from_secs(60);
        let (release_a, hook_a) = fakes::held();
        let a = node(
            "handback-a",
            &url,
            &blobs,
            fakes::engines(Some(hook_a)),
            lease,
        )
        .await;
        let (stop_a, stopped) = tokio::sync::oneshot::channel::<()>();
        let a_run = tokio::task::spawn_local(a.run_until(async {
            let _ = stopped.await;
        }));
        let id = submit(&queue, &blobs, 0).await;
        wait_status(&queue, id, QueueStatus::Processing).await;
        stop_a.send(()).unwrap();
        a_run.await.unwrap().unwrap();
        let job = queue.get(id).await.unwrap().unwrap();
        assert_eq!(
            (job.status, job.attempts),
            (QueueStatus::Queued, 0),
            "back in the queue at once, its attempt not counted: {job:?}"
        );
        let _ = release_a.send(());

        let b = node("handback-b", &url, &blobs, fakes::engines(None), lease).await;
        let b_run = tokio::task::spawn_local(b.run());
        let job = wait_status(&queue, id, QueueStatus::Completed).await;
        assert_eq!(job.attempts, 1, "{job:?}");

        // a file that is not audio fails as the user's input, through the queue
        let bad = Uuid::new_v4();
        let key = upload_key(bad, "audio.wav");
        blobs
            .put_bytes(&key, b"this is not a wav file at all".to_vec().into())
            .await
            .unwrap();
        queue
            .enqueue(NewJob {
                id: bad,
                owner: None,
                filename: "notes.wav".into(),
                audio_key: key,
                bytes: 29,
                options: serde_json::to_value(JobOptions::default()).unwrap(),
            })
            .await
            .unwrap();
        let job = wait_status(&queue, bad, QueueStatus::Failed).await;
        assert_eq!(job.error_kind.as_deref(), Some("input"), "{job:?}");
        assert!(job.error.is_some_and(|e| !e.is_empty()));
        stop(b_run).await;
        queue.close().await;
    });
}

#[test]
fn a_worker_node_serves_health_with_its_role_and_the_queue() {
    let Some(pg) = PgServer::start() else { return };
    let mut config = fakes::config(&[]);
    config.cluster.role = colloquy::config::Role::Worker;
    config.cluster.database_url = pg.url();
    config.cluster.worker_id = "health-w".into();
    config.server.port = 0;
    config.server.storage_dir = folder("health-node").display().to_string();
    config.blobs.root = folder("health-blobs");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = actix_rt::System::new().block_on(colloquy::api::node::serve_worker(
            config,
            fakes::engines(None),
            move |addr| tx.send(addr).unwrap(),
        ));
    });
    let addr = rx.recv_timeout(DEADLINE).expect("the worker node serves");
    let t0 = Instant::now();
    loop {
        let (code, h) = common::http::request(addr, "GET", "/health", &[], b"");
        assert_eq!(code, 200, "{h}");
        assert_eq!(h["role"], "worker", "{h}");
        assert_eq!(h["worker_id"], "health-w", "{h}");
        assert_eq!(h["queue"]["queued"], 0, "{h}");
        assert!(h["stages"].as_object().is_some_and(|s| s.len() >= 5), "{h}");
        // the node's own heartbeat shows once its loop has started
        if h["queue"]["workers"]
            .as_array()
            .is_some_and(|w| w.iter().any(|w| w["id"] == "health-w"))
        {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "no heartbeat: {h}");
        std::thread::sleep(Duration::from_millis(50));
    }
    // a node without a queue to reach says so at start
    let mut config = fakes::config(&[]);
    config.cluster.role = colloquy::config::Role::Worker;
    let err = actix_rt::System::new()
        .block_on(colloquy::api::node::serve_worker(
            config,
            fakes::engines(None),
            |_| {},
        ))
        .unwrap_err();
    assert!(err.to_string().contains("cluster.database_url"), "{err}");
}
