//! The server's boundaries on fake engines (no models): the real HTTP stack
//! and registry, in this process, on a free port. API keys and per-key
//! isolation, Host and Origin checks, admission before the body, upload
//! timeouts, rate limits and quotas, bad input told from our failures,
//! file names cleaned.
//!
//! Jobs are held in a stage by a channel the test releases; the only waits
//! are bounded polls of a job's status and the upload read timeout (1 s).

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use colloquy::auth::KeyStore;
use colloquy::config::Config;
use common::fakes;
use common::http::{multipart, multipart_with, raw_request, read_response, request, EventStream};
use serde_json::Value;

struct Server {
    addr: SocketAddr,
    storage: PathBuf,
}

impl Server {
    /// Serves `config` (storage in a fresh folder named `name`) with `engines`.
    fn start(
        name: &str,
        mut config: Config,
        engines: colloquy::actors::pipeline::Engines,
    ) -> Server {
        let storage = storage(name);
        config.server.storage_dir = storage.display().to_string();
        config.server.port = 0;
        Server::start_at(storage, config, engines)
    }

    fn start_at(
        storage: PathBuf,
        config: Config,
        engines: colloquy::actors::pipeline::Engines,
    ) -> Server {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            actix_rt::System::new()
                .block_on(colloquy::api::serve(config, engines, move |addr| {
                    tx.send(addr).unwrap()
                }))
                .unwrap()
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server started");
        Server { addr, storage }
    }

    fn call(&self, method: &str, path: &str, key: Option<&str>) -> (u16, Value) {
        let auth = key.map(|k| format!("Bearer {k}"));
        let headers: Vec<(&str, &str)> = auth
            .as_deref()
            .map(|a| vec![("Authorization", a)])
            .unwrap_or_default();
        request(self.addr, method, path, &headers, b"")
    }

    fn upload(&self, key: Option<&str>, name: &str, data: &[u8]) -> (u16, Value) {
        self.upload_with(key, name, data, &[])
    }

    fn upload_with(
        &self,
        key: Option<&str>,
        name: &str,
        data: &[u8],
        extra: &[(&str, &str)],
    ) -> (u16, Value) {
        let (ct, body) = multipart(name, data);
        let auth = key.map(|k| format!("Bearer {k}"));
        let mut headers = vec![("Content-Type", ct.as_str())];
        if let Some(a) = &auth {
            headers.push(("Authorization", a));
        }
        headers.extend_from_slice(extra);
        request(self.addr, "POST", "/api/upload", &headers, &body)
    }

    /// Polls the job's status until it is finished (bounded).
    fn wait_finished(&self, id: &str, key: Option<&str>) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (code, v) = self.call("GET", &format!("/api/status/{id}"), key);
            assert_eq!(code, 200, "{v}");
            if ["completed", "failed"].contains(&v["status"].as_str().unwrap_or("")) {
                return v;
            }
            assert!(Instant::now() < deadline, "job {id} did not finish: {v}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls the job's status until its callback is done (bounded).
    fn callback_when_done(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, st) = self.call("GET", &format!("/api/status/{id}"), None);
            if st["callback"]["done"] == true {
                return st["callback"].clone();
            }
            assert!(Instant::now() < deadline, "{st}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn temp_entries(&self) -> usize {
        std::fs::read_dir(self.storage.join("temp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

fn storage(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("colloquy-svc-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn id_of(v: &Value) -> String {
    v["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id in {v}"))
        .to_string()
}

/// Keys created in the storage folder before the server opens it, as
/// `colloquy keys create` does.
fn create_keys(storage: &std::path::Path, keys: &[(&str, bool)]) -> Vec<String> {
    let store = KeyStore::open_folder(&storage.join("jobs.sled")).unwrap();
    keys.iter()
        .map(|(name, admin)| store.create(name, *admin).unwrap().1)
        .collect()
}

#[test]
fn with_keys_every_api_route_needs_one_and_a_key_sees_only_its_own_jobs() {
    let storage = storage("keys");
    let tokens = create_keys(
        &storage,
        &[("admin", true), ("alice", false), ("bob", false)],
    );
    let (admin, alice, bob) = (&tokens[0], &tokens[1], &tokens[2]);
    let mut config = fakes::config(&[("server.auth", "keys")]);
    config.server.storage_dir = storage.display().to_string();
    config.server.port = 0;
    let srv = Server::start_at(storage, config, fakes::engines(None));

    let (code, up) = srv.upload(Some(alice), "a.wav", &fakes::tone_wav(2.0));
    assert_eq!(code, 200, "{up}");
    let id = id_of(&up);
    assert_eq!(srv.wait_finished(&id, Some(alice))["status"], "completed");

    // without a key (or with a wrong or malformed one) every API route is 401
    let routes = [
        ("GET", "/api/jobs".to_string()),
        ("GET", format!("/api/status/{id}")),
        ("GET", format!("/api/results/{id}")),
        ("DELETE", format!("/api/jobs/{id}")),
        ("GET", "/api/keys".to_string()),
        ("POST", "/api/upload".to_string()),
        ("POST", "/api/keys".to_string()),
    ];
    for (method, path) in &routes {
        for key in [None, Some("cq_0123"), Some("not-a-key")] {
            let (code, v) = srv.call(method, path, key);
            assert_eq!(code, 401, "{method} {path} with {key:?}: {v}");
            assert_eq!(v["error"], "unauthorized");
        }
    }
    // bob cannot see, read or delete alice's job: it does not exist for him
    for (method, path) in &routes[1..4] {
        let (code, v) = srv.call(method, path, Some(bob));
        assert_eq!(code, 404, "{method} {path} as bob: {v}");
    }
    let (_, list) = srv.call("GET", "/api/jobs", Some(bob));
    assert_eq!(list["total"], 0, "{list}");
    // alice sees it; the admin sees every job
    let (code, r) = srv.call("GET", &format!("/api/results/{id}"), Some(alice));
    assert_eq!(code, 200);
    assert_eq!(r["num_speakers"], 2);
    let (_, list) = srv.call("GET", "/api/jobs", Some(alice));
    assert_eq!(list["total"], 1);
    let (_, list) = srv.call("GET", "/api/jobs", Some(admin));
    assert_eq!(list["total"], 1);
    assert!(list["jobs"][0]["owner"]
        .as_str()
        .unwrap()
        .starts_with("key_"));
    // keys: admin only; a key made through the API works at once, and stops when revoked
    let (code, _) = srv.call("GET", "/api/keys", Some(alice));
    assert_eq!(code, 403);
    let body = br#"{"name": "carol"}"#;
    let auth = format!("Bearer {admin}");
    let (code, made) = request(
        srv.addr,
        "POST",
        "/api/keys",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    );
    assert_eq!(code, 201, "{made}");
    let carol = made["key"].as_str().unwrap().to_string();
    assert_eq!(made["admin"], false);
    assert!(made.get("hash").is_none());
    let (code, list) = srv.call("GET", "/api/keys", Some(admin));
    assert_eq!(code, 200);
    assert_eq!(list["total"], 4);
    assert!(!list.to_string().contains(&carol[3..]), "no token in lists");
    assert_eq!(srv.call("GET", "/api/jobs", Some(&carol)).0, 200);
    let carol_id = made["id"].as_str().unwrap();
    let (code, _) = srv.call("DELETE", &format!("/api/keys/{carol_id}"), Some(admin));
    assert_eq!(code, 200);
    assert_eq!(srv.call("GET", "/api/jobs", Some(&carol)).0, 401);
    // bob cannot delete it; alice can
    assert_eq!(
        srv.call("DELETE", &format!("/api/jobs/{id}"), Some(bob)).0,
        404
    );
    assert_eq!(
        srv.call("DELETE", &format!("/api/jobs/{id}"), Some(alice))
            .0,
        200
    );
}

#[test]
fn a_foreign_host_and_a_cross_origin_post_are_refused_and_leave_nothing() {
    let srv = Server::start("boundary", fakes::config(&[]), fakes::engines(None));
    let wav = fakes::tone_wav(1.0);
    let (code, v) = request(
        srv.addr,
        "GET",
        "/api/jobs",
        &[("Host", "evil.example")],
        b"",
    );
    assert_eq!(code, 403, "{v}");
    let (code, v) = request(srv.addr, "GET", "/", &[("Host", "evil.example:8000")], b"");
    assert_eq!(code, 403, "the page too: {v}");
    let (code, v) = srv.upload_with(None, "a.wav", &wav, &[("Origin", "http://evil.example")]);
    assert_eq!(code, 403, "{v}");
    let (code, _) = srv.upload_with(None, "a.wav", &wav, &[("Sec-Fetch-Site", "cross-site")]);
    assert_eq!(code, 403);
    let (_, list) = srv.call("GET", "/api/jobs", None);
    assert_eq!(list["total"], 0, "nothing was taken: {list}");
    assert_eq!(srv.temp_entries(), 0);
    // the server's own page may post
    let own = format!("http://{}", srv.addr);
    let (code, v) = srv.upload_with(None, "a.wav", &wav, &[("Origin", &own)]);
    assert_eq!(code, 200, "{v}");
    let (code, _) = request(srv.addr, "GET", "/api/jobs", &[("Host", "localhost")], b"");
    assert_eq!(code, 200);
}

#[test]
fn a_full_queue_and_a_key_over_quota_are_refused_before_the_body_is_sent() {
    let storage = storage("admission");
    let tokens = create_keys(&storage, &[("alice", false), ("bob", false)]);
    let (alice, bob) = (&tokens[0], &tokens[1]);
    let mut config = fakes::config(&[
        ("server.auth", "keys"),
        ("server.max_queued_jobs", "2"),
        ("server.max_queued_jobs_per_key", "1"),
        ("pipeline.max_active_jobs", "1"),
    ]);
    config.server.storage_dir = storage.display().to_string();
    config.server.port = 0;
    // the transcriber holds each job until the test lets it go
    let (release, hook) = fakes::held();
    let srv = Server::start_at(storage, config, fakes::engines(Some(hook)));
    let wav = fakes::tone_wav(1.0);
    let running = id_of(&srv.upload(Some(alice), "1.wav", &wav).1); // admitted, held
    let queued = id_of(&srv.upload(Some(alice), "2.wav", &wav).1); // alice's one waiting job

    // alice: over her quota. Only the head is sent; the answer comes without the body.
    let over = headers_only(srv.addr, alice, 100_000_000);
    assert_eq!(over.0, 429, "{}", over.1);
    assert!(
        over.1.to_ascii_lowercase().contains("retry-after"),
        "{}",
        over.1
    );
    assert!(over.2.contains("over_quota"), "{}", over.2);
    // bob may still queue one; then the server's queue (2) is full for everyone
    assert_eq!(srv.upload(Some(bob), "3.wav", &wav).0, 200);
    let full = headers_only(srv.addr, bob, 100_000_000);
    assert_eq!(full.0, 429, "{}", full.1);
    assert!(full.2.contains("queue_full"), "{}", full.2);
    assert_eq!(
        srv.temp_entries(),
        3,
        "only the three accepted uploads are kept"
    );

    for _ in 0..3 {
        release.send(()).unwrap();
    }
    assert_eq!(
        srv.wait_finished(&running, Some(alice))["status"],
        "completed"
    );
    assert_eq!(
        srv.wait_finished(&queued, Some(alice))["status"],
        "completed"
    );
}

/// Sends an upload's head announcing `length` bytes and no body; returns
/// the status, head and body of the answer.
fn headers_only(addr: SocketAddr, key: &str, length: u64) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/upload HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: multipart/form-data; boundary=xyz\r\nContent-Length: {length}\r\n\r\n"
    )
    .unwrap();
    let (code, head, body) = read_response(&mut s);
    (code, head, String::from_utf8_lossy(&body).to_string())
}

#[test]
fn a_stalled_upload_is_dropped_after_the_read_timeout_with_its_temp_folder() {
    let srv = Server::start(
        "stall",
        fakes::config(&[("server.upload_read_timeout_seconds", "1")]),
        fakes::engines(None),
    );
    let (ct, body) = multipart("a.wav", &fakes::tone_wav(1.0));
    let mut s = TcpStream::connect(srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /api/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
        srv.addr,
        body.len()
    )
    .unwrap();
    // half the body, then nothing: the file was opened in temp/
    s.write_all(&body[..body.len() / 2]).unwrap();
    let t0 = Instant::now();
    let (code, _, answer) = read_response(&mut s);
    assert_eq!(code, 408, "{}", String::from_utf8_lossy(&answer));
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(
        srv.temp_entries(),
        0,
        "the stalled upload's folder is removed"
    );
    // the server goes on
    assert_eq!(srv.upload(None, "b.wav", &fakes::tone_wav(1.0)).0, 200);
}

#[test]
fn uploads_over_the_rate_limit_get_429_with_retry_after() {
    let srv = Server::start(
        "rate",
        fakes::config(&[("server.uploads_per_minute", "2")]),
        fakes::engines(None),
    );
    let wav = fakes::tone_wav(1.0);
    assert_eq!(srv.upload(None, "a.wav", &wav).0, 200);
    assert_eq!(srv.upload(None, "b.wav", &wav).0, 200);
    let (ct, body) = multipart("c.wav", &wav);
    let (code, head, answer) = raw_request(
        srv.addr,
        "POST",
        "/api/upload",
        &[("Content-Type", &ct)],
        &body,
    );
    assert_eq!(code, 429, "{}", String::from_utf8_lossy(&answer));
    let retry: u64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("retry-after:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Retry-After");
    assert!((1..=60).contains(&retry), "{retry}");
    // reads have their own bucket
    assert_eq!(srv.call("GET", "/api/jobs", None).0, 200);
}

#[test]
fn a_file_that_is_not_audio_fails_as_bad_input_with_422_and_the_next_job_completes() {
    let srv = Server::start("badinput", fakes::config(&[]), fakes::engines(None));
    let (code, up) = srv.upload(None, "notes.wav", b"this is a text file, not a recording\n");
    assert_eq!(code, 200, "{up}");
    let id = id_of(&up);
    let job = srv.wait_finished(&id, None);
    assert_eq!(job["status"], "failed");
    assert_eq!(job["error_kind"], "input");
    let (code, r) = srv.call("GET", &format!("/api/results/{id}"), None);
    assert_eq!(code, 422, "{r}");
    assert_eq!(r["error"], "bad_input");
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("not a supported audio file"),
        "{r}"
    );
    let good = id_of(&srv.upload(None, "tone.wav", &fakes::tone_wav(1.0)).1);
    assert_eq!(srv.wait_finished(&good, None)["status"], "completed");
    assert_eq!(srv.temp_entries(), 0);
}

#[test]
fn file_names_are_stored_without_folders_or_invisible_characters() {
    let srv = Server::start("names", fakes::config(&[]), fakes::engines(None));
    let wav = fakes::tone_wav(1.0);
    for (given, kept) in [
        ("../../etc/passwd.wav", "passwd.wav"),
        // a quoted-string: `\\` on the wire is one backslash
        ("C:\\\\Users\\\\x\\\\call.wav", "call.wav"),
        ("a\u{202e}vaw.exe.wav", "avaw.exe.wav"),
    ] {
        let (code, up) = srv.upload(None, given, &wav);
        assert_eq!(code, 200, "{given}: {up}");
        let (_, job) = srv.call("GET", &format!("/api/status/{}", id_of(&up)), None);
        assert_eq!(job["filename"], kept, "{given}");
    }
    // path-like ids are 404 before any lookup
    for id in [
        "..%2F..%2Fjobs.sled",
        "%2e%2e",
        "00000000-0000-0000-0000-00000000000g",
    ] {
        assert_eq!(
            srv.call("GET", &format!("/api/status/{id}"), None).0,
            404,
            "{id}"
        );
    }
}

#[test]
fn health_shows_every_stages_workers_alive() {
    let srv = Server::start("health", fakes::config(&[]), fakes::engines(None));
    let (code, h) = srv.call("GET", "/health", None);
    assert_eq!(code, 200, "{h}");
    assert_eq!(h["status"], "healthy");
    assert_eq!(h["role"], "all");
    assert_eq!(h["auth"], "none");
    let stages = h["stages"].as_object().unwrap();
    assert!(stages.len() >= 5, "{h}");
    for (name, s) in stages {
        assert!(s["workers"].as_i64().unwrap() >= 1, "{name}");
        assert_eq!(s["workers_alive"], s["workers"], "{name}");
    }
}

#[test]
fn deleting_a_running_job_frees_its_slot_for_the_next_and_leaves_nothing() {
    let (release, hook) = fakes::held();
    let srv = Server::start(
        "cancel",
        fakes::config(&[("pipeline.max_active_jobs", "1")]),
        fakes::engines(Some(hook)),
    );
    let wav = fakes::tone_wav(1.0);
    let running = id_of(&srv.upload(None, "a.wav", &wav).1);
    let waiting = id_of(&srv.upload(None, "b.wav", &wav).1);
    // wait (bounded) until the first job is in the transcriber, held by the hook
    let deadline = Instant::now() + Duration::from_secs(60);
    while srv.call("GET", &format!("/api/status/{running}"), None).1["progress"]
        .as_u64()
        .unwrap_or(0)
        < 25
    {
        assert!(
            Instant::now() < deadline,
            "the first job never reached the transcriber"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let (_, st) = srv.call("GET", &format!("/api/status/{waiting}"), None);
    assert_eq!(st["status"], "queued", "one slot: the second job waits");
    let (code, d) = srv.call("DELETE", &format!("/api/jobs/{running}"), None);
    assert_eq!(code, 200, "{d}");
    assert_eq!(d["status"], "cancelled");
    assert_eq!(
        srv.call("GET", &format!("/api/status/{running}"), None).0,
        404
    );
    // the engine call in hand ends; the stage drops the job and the slot goes to the next
    release.send(()).unwrap();
    release.send(()).unwrap();
    assert_eq!(srv.wait_finished(&waiting, None)["status"], "completed");
    let (_, list) = srv.call("GET", "/api/jobs", None);
    assert_eq!(list["total"], 1, "{list}");
    assert_eq!(srv.temp_entries(), 0);
}

/// One fake Whisper and one fake diarizer held by `hook` (transcription
/// ends, and its segments are out, while the diarizer holds the job).
fn diarizer_held(hook: fakes::Hook) -> colloquy::actors::pipeline::Engines {
    colloquy::actors::pipeline::Engines {
        whisper: vec![Box::new(fakes::FakeWhisper::new(None))],
        diarization: vec![Box::new(fakes::FakeDiarizer { hook: Some(hook) })],
        vad: vec![],
        voices: vec![],
        spare_cores: None,
        whisper_loader: None,
    }
}

fn events(srv: &Server, id: &str) -> EventStream {
    let s = EventStream::open(srv.addr, &format!("/api/jobs/{id}/events"), &[]);
    assert_eq!(s.status, 200);
    s
}

#[test]
fn a_job_followed_live_streams_its_steps_partial_segments_before_the_end_then_one_done() {
    let (release, hook) = fakes::held();
    let srv = Server::start("events", fakes::config(&[]), diarizer_held(hook));
    let (code, up) = srv.upload(None, "a.wav", &fakes::tone_wav(2.0));
    assert_eq!(code, 200, "{up}");
    let id = id_of(&up);
    let mut early = events(&srv, &id);
    // the state at connection first, then the transcript while the diarizer holds the job
    let first = early.next().unwrap();
    assert_eq!(first.event, "status", "{first:?}");
    assert_eq!(first.data["job_id"], id.as_str());
    let mut steps = vec![first.data["step"].as_str().unwrap().to_string()];
    let segment = loop {
        let e = early.next().expect("the stream goes on while the job runs");
        match e.event.as_str() {
            "status" => steps.push(e.data["step"].as_str().unwrap().to_string()),
            "segment" => break e.data,
            other => panic!("{other} before any segment: {e:?}"),
        }
    };
    assert_eq!(segment["id"], 1);
    assert_eq!(segment["text"], "Hello there. Hi!");
    let (_, st) = srv.call("GET", &format!("/api/status/{id}"), None);
    assert_eq!(
        st["status"], "processing",
        "the segment came before the end"
    );
    // a client that connects now gets the record, then every segment so far
    let mut late = events(&srv, &id);
    let (a, b) = (late.next().unwrap(), late.next().unwrap());
    assert_eq!((a.event.as_str(), b.event.as_str()), ("status", "segment"));
    assert_eq!(b.data, segment);
    release.send(()).unwrap();
    let mut progress = vec![];
    let done = loop {
        let e = early.next().expect("a final event");
        match e.event.as_str() {
            "status" => {
                steps.push(e.data["step"].as_str().unwrap().to_string());
                progress.push(e.data["progress"].as_u64().unwrap());
            }
            "done" => break e.data,
            other => panic!("unexpected {other}: {e:?}"),
        }
    };
    assert_eq!(done["status"], "completed", "{done}");
    assert!(early.next().is_none(), "the stream ends after done");
    assert!(steps.iter().any(|s| s == "Aligning speakers"), "{steps:?}");
    assert_eq!(steps.last().map(String::as_str), Some("Complete"));
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    let rest: Vec<String> = std::iter::from_fn(|| late.next().map(|e| e.event)).collect();
    assert_eq!(rest.last().map(String::as_str), Some("done"), "{rest:?}");
    // a finished job: its record and done at once; unknown jobs are 404
    let mut after = events(&srv, &id);
    let (a, b) = (after.next().unwrap(), after.next().unwrap());
    assert_eq!((a.event.as_str(), b.event.as_str()), ("status", "done"));
    assert!(after.next().is_none());
    let other = uuid::Uuid::new_v4();
    let s = EventStream::open(srv.addr, &format!("/api/jobs/{other}/events"), &[]);
    assert_eq!(s.status, 404);
}

#[test]
fn a_followed_job_that_is_deleted_ends_its_stream_with_cancelled() {
    let (release, hook) = fakes::held();
    let srv = Server::start(
        "events-cancel",
        fakes::config(&[]),
        fakes::engines(Some(hook)),
    );
    let id = id_of(&srv.upload(None, "a.wav", &fakes::tone_wav(1.0)).1);
    let mut stream = events(&srv, &id);
    assert_eq!(stream.next().unwrap().event, "status");
    assert_eq!(srv.call("DELETE", &format!("/api/jobs/{id}"), None).0, 200);
    let done = std::iter::from_fn(|| stream.next())
        .find(|e| e.event == "done")
        .expect("done");
    assert_eq!(done.data["status"], "cancelled", "{done:?}");
    release.send(()).unwrap();
}

#[test]
fn status_carries_an_estimate_once_this_machine_has_measured_a_job() {
    let (release, hook) = fakes::held();
    let srv = Server::start("eta", fakes::config(&[]), fakes::engines(Some(hook)));
    let wav = fakes::tone_wav(2.0);
    let in_transcriber = |id: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let (_, st) = srv.call("GET", &format!("/api/status/{id}"), None);
            if st["progress"].as_u64().unwrap_or(0) >= 25 && st["duration"].is_number() {
                return st;
            }
            assert!(Instant::now() < deadline, "{st}");
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let first = id_of(&srv.upload(None, "a.wav", &wav).1);
    let st = in_transcriber(&first);
    assert!(
        st.get("eta_seconds").is_none(),
        "nothing measured yet: {st}"
    );
    release.send(()).unwrap();
    srv.wait_finished(&first, None);
    let second = id_of(&srv.upload(None, "b.wav", &wav).1);
    let st = in_transcriber(&second);
    let eta = st["eta_seconds"].as_f64().unwrap_or_else(|| panic!("{st}"));
    assert!(eta >= 1.0, "a running job has at least a second left: {st}");
    release.send(()).unwrap();
    let done = srv.wait_finished(&second, None);
    assert!(done.get("eta_seconds").is_none(), "{done}");
}

#[test]
fn a_callback_is_retried_with_backoff_until_delivered_and_recorded_on_the_job() {
    let srv = Server::start(
        "callback",
        fakes::config(&[("server.callback_first_retry_seconds", "0.05")]),
        fakes::engines(None),
    );
    let wav = fakes::tone_wav(1.0);
    // a bad URL is refused before the body is read
    let (ct, body) = multipart("a.wav", &wav);
    let (code, v) = request(
        srv.addr,
        "POST",
        "/api/upload?callback_url=file:///etc/passwd",
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(code, 400, "{v}");
    assert!(
        v["message"].as_str().unwrap().contains("http or https"),
        "{v}"
    );

    let (url, bodies) = common::http::hook_receiver(vec![503, 503, 200]);
    let (code, v) = request(
        srv.addr,
        "POST",
        &format!("/api/upload?callback_url={url}"),
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(code, 200, "{v}");
    let id = id_of(&v);
    for attempt in 1..=3 {
        let b = bodies.recv_timeout(Duration::from_secs(60)).unwrap();
        assert_eq!(b["event"], "job.completed", "attempt {attempt}: {b}");
        assert_eq!(b["job"]["job_id"], id.as_str());
        assert_eq!(b["job"]["status"], "completed");
    }
    let cb = srv.callback_when_done(&id);
    assert_eq!(cb["attempts"], 3, "{cb}");
    assert!(cb["delivered_at"].is_string(), "{cb}");
    assert!(cb.get("last_error").is_none(), "{cb}");

    // a receiver that refuses (404) is not asked again
    let (url, bodies) = common::http::hook_receiver(vec![404]);
    // as a form field this time
    let (ct, form) = multipart_with("callback_url", &url, "b.wav", &wav);
    let (code, v) = request(
        srv.addr,
        "POST",
        "/api/upload",
        &[("Content-Type", ct.as_str())],
        &form,
    );
    assert_eq!(code, 200, "{v}");
    let id = id_of(&v);
    bodies.recv_timeout(Duration::from_secs(60)).unwrap();
    let cb = srv.callback_when_done(&id);
    assert_eq!(cb["attempts"], 1, "{cb}");
    assert!(cb["last_error"].as_str().unwrap().contains("404"), "{cb}");
    assert!(cb.get("delivered_at").is_none(), "{cb}");
    assert!(
        bodies.recv_timeout(Duration::from_millis(300)).is_err(),
        "not asked again"
    );
}

fn json_call(srv: &Server, method: &str, path: &str, body: &Value) -> (u16, Value) {
    request(
        srv.addr,
        method,
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

fn speakers_of(srv: &Server, id: &str) -> Vec<String> {
    let (code, r) = srv.call("GET", &format!("/api/results/{id}"), None);
    assert_eq!(code, 200, "{r}");
    let mut names: Vec<String> = r["aligned_segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["speaker"].as_str().unwrap().to_string())
        .chain(
            r["speaker_turns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["speaker"].as_str().unwrap().to_string()),
        )
        .collect();
    names.sort();
    names.dedup();
    names
}

#[test]
fn a_named_speaker_is_recognised_later_and_renaming_or_deleting_it_relabels_results_without_transcribing(
) {
    let srv = Server::start("speakers", fakes::config(&[]), fakes::engines(None));
    let wav = fakes::tone_wav(2.0);
    let first = id_of(&srv.upload(None, "a.wav", &wav).1);
    srv.wait_finished(&first, None);
    assert_eq!(speakers_of(&srv, &first), ["SPEAKER_00", "SPEAKER_01"]);
    // bad requests: an unknown label, a job that does not exist
    let enrol = |name: &str, job: &str, speaker: &str| {
        json_call(
            &srv,
            "POST",
            "/api/speakers",
            &serde_json::json!({"name": name, "job_id": job, "speaker": speaker}),
        )
    };
    assert_eq!(enrol("Dana", &first, "SPEAKER_09").0, 400);
    assert_eq!(
        enrol("Dana", &uuid::Uuid::new_v4().to_string(), "SPEAKER_01").0,
        404
    );
    assert_eq!(enrol(" ", &first, "SPEAKER_01").0, 400);
    let (code, dana) = enrol("Dana", &first, "SPEAKER_01");
    assert_eq!(code, 201, "{dana}");
    let dana_id = dana["id"].as_str().unwrap().to_string();
    assert!(
        dana["prints"][0].get("embedding").is_none(),
        "prints are never shown: {dana}"
    );
    // the job's own result names her at once
    assert_eq!(speakers_of(&srv, &first), ["Dana", "SPEAKER_00"]);
    let (_, srt) = {
        let (c, _, b) = raw_request(
            srv.addr,
            "GET",
            &format!("/api/results/{first}?format=srt"),
            &[],
            b"",
        );
        (c, String::from_utf8(b).unwrap())
    };
    assert!(srt.contains("Dana: Hi!"), "{srt}");
    // a later job: her voice is recognised, the other is not
    let second = id_of(&srv.upload(None, "b.wav", &wav).1);
    srv.wait_finished(&second, None);
    assert_eq!(speakers_of(&srv, &second), ["Dana", "SPEAKER_00"]);
    let (_, r) = srv.call("GET", &format!("/api/results/{second}"), None);
    let known = &r["known_speakers"][0];
    assert_eq!(
        (known["label"].as_str(), known["speaker_id"].as_str()),
        (Some("SPEAKER_01"), Some(dana_id.as_str()))
    );
    assert!(
        known["speaker_confidence"].as_f64().unwrap() > 0.99,
        "{known}"
    );
    let before = r["performance_metrics"].clone();
    // renamed: every result follows, nothing runs again
    let (code, v) = json_call(
        &srv,
        "PATCH",
        &format!("/api/speakers/{dana_id}"),
        &serde_json::json!({"name": "Dana K."}),
    );
    assert_eq!(code, 200, "{v}");
    for id in [&first, &second] {
        assert_eq!(speakers_of(&srv, id), ["Dana K.", "SPEAKER_00"]);
    }
    let (_, r) = srv.call("GET", &format!("/api/results/{second}"), None);
    assert_eq!(r["performance_metrics"], before, "no new transcription");
    // known_speakers=unknown id: 400 before the body
    let (ct, body) = multipart("c.wav", &wav);
    let (code, v) = request(
        srv.addr,
        "POST",
        "/api/upload?known_speakers=spk_000000000000",
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(code, 400, "{v}");
    // deleted: the prints are gone, results show the labels again, later jobs too
    let (code, _) = srv.call("DELETE", &format!("/api/speakers/{dana_id}"), None);
    assert_eq!(code, 200);
    let (_, list) = srv.call("GET", "/api/speakers", None);
    assert_eq!(list["total"], 0, "{list}");
    for id in [&first, &second] {
        assert_eq!(speakers_of(&srv, id), ["SPEAKER_00", "SPEAKER_01"]);
    }
    let third = id_of(&srv.upload(None, "c.wav", &wav).1);
    srv.wait_finished(&third, None);
    assert_eq!(speakers_of(&srv, &third), ["SPEAKER_00", "SPEAKER_01"]);
    // merge: two names for one voice become one
    let (_, a) = enrol("Ari", &third, "SPEAKER_00");
    let (_, b) = enrol("Ari Two", &second, "SPEAKER_00");
    let (code, m) = json_call(
        &srv,
        "POST",
        &format!("/api/speakers/{}/merge", a["id"].as_str().unwrap()),
        &serde_json::json!({"from": b["id"]}),
    );
    assert_eq!(code, 200, "{m}");
    assert_eq!(m["prints"].as_array().unwrap().len(), 2);
    assert_eq!(speakers_of(&srv, &second), ["Ari", "SPEAKER_01"]);
    // deleting a job removes its voice prints file with its result
    let voices = srv
        .storage
        .join("results")
        .join(format!("{first}.voices.json"));
    assert!(voices.exists());
    assert_eq!(
        srv.call("DELETE", &format!("/api/jobs/{first}"), None).0,
        200
    );
    assert!(!voices.exists());
}

#[test]
fn a_reference_clip_enrols_a_voice_and_leaves_no_job_behind() {
    let srv = Server::start("speaker-clip", fakes::config(&[]), fakes::engines(None));
    let clip = |name: &str, seconds: f64| {
        let (ct, body) = multipart_with("name", name, "dana.wav", &fakes::tone_wav(seconds));
        request(
            srv.addr,
            "POST",
            "/api/speakers",
            &[("Content-Type", ct.as_str())],
            &body,
        )
    };
    let (code, v) = clip("Dana", 1.0);
    assert_eq!(code, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("2 to 30 s"), "{v}");
    assert_eq!(clip("", 3.0).0, 400, "a name is needed");
    let (code, dana) = clip("Dana", 3.0);
    assert_eq!(code, 201, "{dana}");
    assert_eq!(dana["prints"][0]["source"]["kind"], "clip", "{dana}");
    let (_, jobs) = srv.call("GET", "/api/jobs", None);
    assert_eq!(jobs["total"], 0, "the clips' jobs are gone: {jobs}");
    assert_eq!(srv.temp_entries(), 0);
    let results = std::fs::read_dir(srv.storage.join("results"))
        .unwrap()
        .count();
    assert_eq!(results, 0, "no result or print file kept");
    // the fakes' first voice is SPEAKER_00's: a later job names it
    let id = id_of(&srv.upload(None, "a.wav", &fakes::tone_wav(2.0)).1);
    srv.wait_finished(&id, None);
    assert_eq!(speakers_of(&srv, &id), ["Dana", "SPEAKER_01"]);
}

/// A multipart form: text fields, then the file.
fn form(fields: &[(&str, String)], filename: &str, data: &[u8]) -> (String, Vec<u8>) {
    let (ct, mut body) = multipart(filename, data);
    let head: String = fields
        .iter()
        .map(|(name, value)| {
            format!("--colloquy-test-boundary-7d9a\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
        })
        .collect();
    body.splice(0..0, head.into_bytes());
    (ct, body)
}

#[test]
fn openai_known_speaker_references_name_this_jobs_voices_without_touching_the_library() {
    use base64::Engine as _;
    let srv = Server::start("v1-references", fakes::config(&[]), fakes::engines(None));
    let clip = |seconds: f64| {
        format!(
            "data:audio/wav;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(fakes::tone_wav(seconds))
        )
    };
    let transcribe = |fields: &[(&str, String)]| {
        let (ct, body) = form(fields, "call.wav", &fakes::tone_wav(2.0));
        request(
            srv.addr,
            "POST",
            "/v1/audio/transcriptions",
            &[("Content-Type", ct.as_str())],
            &body,
        )
    };
    // refused before a job exists, naming the field at fault
    let (code, v) = transcribe(&[
        ("known_speaker_names[]", "Dana".into()),
        ("known_speaker_names[]", "Eli".into()),
        ("known_speaker_references[]", clip(3.0)),
    ]);
    assert_eq!(code, 400, "{v}");
    assert_eq!(v["error"]["param"], "known_speaker_names", "{v}");
    let (code, v) = transcribe(&[
        ("known_speaker_names[]", "Dana".into()),
        ("known_speaker_references[]", clip(1.0)),
    ]);
    assert_eq!(code, 400, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("2 to 30 s"),
        "{v}"
    );
    assert_eq!(srv.call("GET", "/api/jobs", None).1["total"], 0);
    assert_eq!(srv.temp_entries(), 0, "a refused request leaves no file");

    // the fakes' clip voice is their first speaker's: SPEAKER_00 is Dana
    let (code, v) = transcribe(&[
        ("response_format", "diarized_json".into()),
        ("known_speaker_names[]", "Dana".into()),
        ("known_speaker_references[]", clip(3.0)),
    ]);
    assert_eq!(code, 200, "{v}");
    let speakers: std::collections::BTreeSet<&str> = v["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["speaker"].as_str().unwrap())
        .collect();
    assert!(speakers.contains("Dana"), "{v}");
    assert!(!speakers.contains("SPEAKER_00"), "{v}");
    let (_, jobs) = srv.call("GET", "/api/jobs", None);
    let id = jobs["jobs"][0]["job_id"].as_str().unwrap().to_string();
    let (_, result) = srv.call("GET", &format!("/api/results/{id}"), None);
    let known = &result["known_speakers"][0];
    assert_eq!(known["label"], "SPEAKER_00", "{result}");
    assert_eq!(known["speaker"], "Dana", "{result}");
    assert_eq!(known["speaker_id"], "ref_0", "{result}");
    let (_, library) = srv.call("GET", "/api/speakers", None);
    assert_eq!(
        library["speakers"].as_array().map(Vec::len),
        Some(0),
        "the library is untouched: {library}"
    );
    assert_eq!(srv.temp_entries(), 0, "the clips go with the job's audio");
}

#[test]
fn relabel_names_an_enrolled_voice_in_earlier_stored_results_once() {
    let srv = Server::start("speaker-relabel", fakes::config(&[]), fakes::engines(None));
    let earlier: Vec<String> = (0..2)
        .map(|_| {
            let id = id_of(&srv.upload(None, "a.wav", &fakes::tone_wav(2.0)).1);
            srv.wait_finished(&id, None);
            id
        })
        .collect();
    // a clip's voice is the fakes' SPEAKER_00: enrolling it names no stored result
    let (ct, body) = multipart_with("name", "Dana", "dana.wav", &fakes::tone_wav(3.0));
    let (code, dana) = request(
        srv.addr,
        "POST",
        "/api/speakers",
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(code, 201, "{dana}");
    assert_eq!(speakers_of(&srv, &earlier[0]), ["SPEAKER_00", "SPEAKER_01"]);
    let path = format!("/api/speakers/{}/relabel", dana["id"].as_str().unwrap());
    let (code, v) = json_call(&srv, "POST", &path, &Value::Null);
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["results_changed"], 2, "{v}");
    for id in &earlier {
        assert_eq!(speakers_of(&srv, id), ["Dana", "SPEAKER_01"]);
        let (_, result) = srv.call("GET", &format!("/api/results/{id}"), None);
        assert_eq!(
            result["known_speakers"][0]["speaker_id"], dana["id"],
            "{result}"
        );
    }
    let (_, again) = json_call(&srv, "POST", &path, &Value::Null);
    assert_eq!(again["results_changed"], 0, "already named: {again}");
    let (code, _) = json_call(
        &srv,
        "POST",
        "/api/speakers/spk_000000000000/relabel",
        &Value::Null,
    );
    assert_eq!(code, 404);
}
