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
        registry: state.local.as_ref().unwrap().registry.clone(),
        storage: state.local.as_ref().unwrap().storage.clone(),
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
            callback: None,
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
                callback: None,
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

/// Serves `config`'s node (api or worker) on a thread of its own; its address.
fn spawn_node(config: colloquy::config::Config) -> std::net::SocketAddr {
    spawn_node_with(config, fakes::engines(None))
}

/// As [`spawn_node`], a worker with `engines`.
fn spawn_node_with(
    config: colloquy::config::Config,
    engines: colloquy::actors::pipeline::Engines,
) -> std::net::SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let role = config.cluster.role;
        let served = actix_rt::System::new().block_on(async move {
            let bound = move |addr| tx.send(addr).unwrap();
            match role {
                colloquy::config::Role::Api => colloquy::api::node::serve_api(config, bound).await,
                _ => colloquy::api::node::serve_worker(config, engines, bound).await,
            }
        });
        if let Err(e) = served {
            eprintln!("node stopped: {e:#}");
        }
    });
    rx.recv_timeout(DEADLINE).expect("the node serves")
}

/// A cluster node's config: `role`, named `name`, on `pg`, its blobs in
/// `blob_root`, on a free port, polling every 0.2 s.
fn node_config(
    pg: &PgServer,
    role: colloquy::config::Role,
    name: &str,
    blob_root: &std::path::Path,
) -> colloquy::config::Config {
    let mut config = fakes::config(&[]);
    config.cluster.role = role;
    config.cluster.database_url = pg.url();
    config.cluster.worker_id = name.into();
    config.cluster.poll_seconds = 0.2;
    config.server.port = 0;
    config.server.storage_dir = folder(name).display().to_string();
    config.blobs.root = blob_root.to_path_buf();
    config
}

/// Files under `root` (recursively), as paths relative to it.
fn files_under(root: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                out.push(p.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn an_api_node_takes_uploads_into_the_queue_and_answers_every_job_route() {
    let Some(pg) = PgServer::start() else { return };
    let blob_root = folder("api-blobs");
    let cluster = |role, name: &str| {
        let mut config = node_config(&pg, role, name, &blob_root);
        config.server.max_upload_bytes = 200_000;
        // small parts: a refused upload has begun a multipart upload
        config.blobs.part_size = 16 * 1024;
        config.server.callback_first_retry_seconds = 0.05;
        config
    };
    let api = spawn_node(cluster(colloquy::config::Role::Api, "api-a"));
    let req = common::http::request;

    // health before any worker: the api node's role, the queue
    let (code, h) = req(api, "GET", "/health", &[], b"");
    assert_eq!((code, &h["role"]), (200, &serde_json::json!("api")), "{h}");
    assert_eq!(h["queue"]["queued"], 0, "{h}");

    // an upload is queued: its row is there, its audio in the bucket
    let audio = fakes::tone_wav(1.0);
    let (ct, body) = common::http::multipart("call.wav", &audio);
    let (code, up) = req(api, "POST", "/api/upload", &[("content-type", &ct)], &body);
    assert_eq!(code, 200, "{up}");
    let id = up["job_id"].as_str().unwrap().to_string();
    let (code, st) = req(api, "GET", &format!("/api/status/{id}"), &[], b"");
    assert_eq!(
        (code, &st["status"]),
        (200, &serde_json::json!("queued")),
        "{st}"
    );
    assert_eq!(st["filename"], "call.wav", "{st}");
    assert_eq!(st["bytes"], audio.len(), "{st}");
    assert_eq!(
        files_under(&blob_root),
        [format!("uploads/{id}/audio.wav")],
        "the audio, and nothing else, in the bucket"
    );
    let (code, pending) = req(api, "GET", &format!("/api/results/{id}"), &[], b"");
    assert_eq!(code, 202, "{pending}");

    // a worker joins and runs it; the api node answers from the queue and the bucket
    let _worker = spawn_node(cluster(colloquy::config::Role::Worker, "api-w"));
    let t0 = Instant::now();
    loop {
        let (_, st) = req(api, "GET", &format!("/api/status/{id}"), &[], b"");
        if st["status"] == "completed" {
            assert_eq!(st["progress"], 100, "{st}");
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "{st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (code, result) = req(api, "GET", &format!("/api/results/{id}"), &[], b"");
    assert_eq!(code, 200, "{result}");
    assert!(
        result["segments"].as_array().is_some_and(|s| !s.is_empty()),
        "{result}"
    );
    let (code, _, srt) = common::http::raw_request(
        api,
        "GET",
        &format!("/api/results/{id}?format=srt"),
        &[],
        b"",
    );
    let srt = String::from_utf8(srt).unwrap();
    assert_eq!(code, 200, "{srt}");
    assert!(srt.starts_with("1\n00:00:"), "{srt}");
    let (code, list) = req(api, "GET", "/api/jobs", &[], b"");
    assert_eq!(
        (code, &list["total"]),
        (200, &serde_json::json!(1)),
        "{list}"
    );
    assert_eq!(list["jobs"][0]["job_id"], id.as_str(), "{list}");
    // a late event stream gets the state, then `done`
    let mut events = common::http::EventStream::open(api, &format!("/api/jobs/{id}/events"), &[]);
    assert_eq!(events.status, 200);
    let first = events.next().expect("status");
    assert_eq!(
        (first.event.as_str(), &first.data["status"]),
        ("status", &serde_json::json!("completed"))
    );
    assert_eq!(events.next().expect("done").event, "done");
    assert!(events.next().is_none(), "the stream ends");

    // a callback is delivered by the api node, retried, recorded on the row
    let (url, bodies) = common::http::hook_receiver(vec![503, 200]);
    let (ct, body) = common::http::multipart_with("callback_url", &url, "hook.wav", &audio);
    let (code, up) = req(api, "POST", "/api/upload", &[("content-type", &ct)], &body);
    assert_eq!(code, 200, "{up}");
    let hooked = up["job_id"].as_str().unwrap().to_string();
    for attempt in 1..=2 {
        let b = bodies.recv_timeout(DEADLINE).expect("a callback");
        assert_eq!(b["event"], "job.completed", "attempt {attempt}: {b}");
        assert_eq!(b["job"]["job_id"], hooked.as_str(), "{b}");
    }
    let t0 = Instant::now();
    loop {
        let (_, st) = req(api, "GET", &format!("/api/status/{hooked}"), &[], b"");
        let cb = &st["callback"];
        if cb["done"] == true {
            assert_eq!(cb["attempts"], 2, "{st}");
            assert!(cb["delivered_at"].is_string(), "{st}");
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "{st}");
        std::thread::sleep(Duration::from_millis(50));
    }
    req(api, "DELETE", &format!("/api/jobs/{hooked}"), &[], b"");

    // the OpenAI route waits for its job through the queue
    let (ct, body) = common::http::multipart_with("model", "whisper-1", "memo.wav", &audio);
    let (code, tr) = req(
        api,
        "POST",
        "/v1/audio/transcriptions",
        &[("content-type", &ct)],
        &body,
    );
    assert_eq!(code, 200, "{tr}");
    assert!(tr["text"].as_str().is_some_and(|t| !t.is_empty()), "{tr}");

    // the node sees the worker; the metrics count from the queue
    let (_, h) = req(api, "GET", "/health", &[], b"");
    let seen: Vec<&str> = h["queue"]["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["id"].as_str())
        .collect();
    assert!(seen.contains(&"api-w") && seen.contains(&"api-a"), "{h}");
    let (_, _, metrics) = common::http::raw_request(api, "GET", "/metrics", &[], b"");
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("colloquy_jobs{status=\"completed\"} 2"),
        "{metrics}"
    );

    // delete: the row and every blob of the job go
    let (code, del) = req(api, "DELETE", &format!("/api/jobs/{id}"), &[], b"");
    assert_eq!(code, 200, "{del}");
    let (code, _) = req(api, "GET", &format!("/api/status/{id}"), &[], b"");
    assert_eq!(code, 404);
    assert!(
        !files_under(&blob_root).iter().any(|f| f.contains(&id)),
        "{:?}",
        files_under(&blob_root)
    );

    // refusals leave no blob and no row: too large midway, not audio by name
    let before = files_under(&blob_root);
    // under the limit plus the form's slack: refused midway, after parts were sent
    let big = vec![0u8; 250_000];
    let (ct, body) = common::http::multipart("long.wav", &big);
    let (code, e) = req(api, "POST", "/api/upload", &[("content-type", &ct)], &body);
    assert_eq!(code, 413, "{e}");
    let (ct, body) = common::http::multipart("notes.txt", b"hello");
    let (code, e) = req(api, "POST", "/api/upload", &[("content-type", &ct)], &body);
    assert_eq!(
        (code, &e["error"]),
        (400, &serde_json::json!("unsupported_type")),
        "{e}"
    );
    let t0 = Instant::now();
    while files_under(&blob_root) != before {
        assert!(
            t0.elapsed() < DEADLINE,
            "left behind: {:?}",
            files_under(&blob_root)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let (_, list) = req(api, "GET", "/api/jobs", &[], b"");
    assert_eq!(list["total"], 1, "only the OpenAI route's job: {list}");
    // the speaker library is a single node's: said so, not silently empty
    let (code, e) = req(api, "GET", "/api/speakers", &[], b"");
    assert_eq!(code, 400, "{e}");
    assert!(
        e["message"].as_str().unwrap().contains("single-node"),
        "{e}"
    );
}

#[test]
fn an_api_nodes_event_stream_carries_a_workers_partial_segments_before_the_end() {
    let Some(pg) = PgServer::start() else { return };
    let blob_root = folder("live-blobs");
    let cluster = |role, name: &str| {
        let mut config = node_config(&pg, role, name, &blob_root);
        // no renewal within the test: progress must travel with the feed
        config.cluster.lease_seconds = 120.0;
        config
    };
    let api = spawn_node(cluster(colloquy::config::Role::Api, "live-a"));
    // the worker's diarizer holds the job: its transcript is decoded, its end is not
    let (release, hook) = fakes::held();
    let engines = colloquy::actors::pipeline::Engines {
        whisper: vec![Box::new(fakes::FakeWhisper::new(None))],
        whisper_loader: None,
        diarization: vec![Box::new(fakes::FakeDiarizer { hook: Some(hook) })],
        vad: vec![],
        voices: vec![],
        spare_cores: None,
    };
    spawn_node_with(cluster(colloquy::config::Role::Worker, "live-w"), engines);
    let audio = fakes::tone_wav(1.0);
    let (ct, body) = common::http::multipart("live.wav", &audio);
    let (code, up) =
        common::http::request(api, "POST", "/api/upload", &[("content-type", &ct)], &body);
    assert_eq!(code, 200, "{up}");
    let id = up["job_id"].as_str().unwrap().to_string();
    let mut events = common::http::EventStream::open(api, &format!("/api/jobs/{id}/events"), &[]);
    assert_eq!(events.status, 200);
    let mut seen = Vec::new();
    let segment = loop {
        let e = events
            .next()
            .expect("the stream goes on until the job ends");
        assert_ne!(e.event, "done", "no segment before the end: {seen:?}");
        seen.push(e.event.clone());
        if e.event == "segment" {
            break e.data;
        }
    };
    assert_eq!(seen[0], "status", "{seen:?}");
    assert_eq!(segment["id"], 1, "{segment}");
    assert!(
        segment["text"]
            .as_str()
            .is_some_and(|t| t.contains("Hello")),
        "{segment}"
    );
    // the job has not ended while its text is out, and the api node shows
    // the worker's progress past transcription (no lease renewal carried it)
    let t0 = Instant::now();
    loop {
        let (_, st) = common::http::request(api, "GET", &format!("/api/status/{id}"), &[], b"");
        assert_eq!(st["status"], "processing", "{st}");
        if st["progress"].as_u64().is_some_and(|p| p >= 25) && st["duration"].is_number() {
            break;
        }
        assert!(
            t0.elapsed() < DEADLINE,
            "no progress through the queue: {st}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    release.send(()).unwrap();
    let done = loop {
        let e = events.next().expect("done");
        if e.event == "done" {
            break e.data;
        }
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert!(events.next().is_none(), "the stream ends");
}

#[test]
fn a_cancel_reaches_a_running_job_at_once_not_at_the_next_renewal() {
    let Some(pg) = PgServer::start() else { return };
    let url = pg.url();
    actix_rt::System::new().block_on(async move {
        let blobs = local_blobs("at-once-blobs");
        let queue = JobQueue::connect(&url, QueueOptions::default())
            .await
            .unwrap();
        // renewals every 40 s: longer than the deadline below
        let lease = Duration::from_secs(120);
        let (release, hook) = fakes::held();
        let w = node("at-once-w", &url, &blobs, fakes::engines(Some(hook)), lease).await;
        let run = tokio::task::spawn_local(w.run());
        let id = submit(&queue, &blobs, 0).await;
        wait_status(&queue, id, QueueStatus::Processing).await;
        assert_eq!(queue.cancel(id).await.unwrap(), CancelOutcome::Requested);
        let job = wait_status(&queue, id, QueueStatus::Cancelled).await;
        assert!(job.result_key.is_none(), "{job:?}");
        let _ = release.send(());
        stop(run).await;
        queue.close().await;
    });
}
