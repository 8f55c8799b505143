//! The real server (`colloquy serve`, real models) over HTTP: upload, poll,
//! results; the 400/404/413/202 paths; delete while processing; a kill -9
//! with one job processing and one queued, then a restart.
//!
//! Polling status in a bounded loop is the only waiting here.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::http::{multipart, read_response, request};
use common::{config, repo_path};
use serde_json::Value;

/// A `colloquy serve` process on a free port with its own storage folder.
struct Server {
    child: Child,
    addr: SocketAddr,
    storage: PathBuf,
}

impl Server {
    fn start(storage: &Path, env: &[(&str, &str)]) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_colloquy"));
        cmd.args([
            "serve",
            "--port",
            "0",
            "--storage",
            storage.to_str().unwrap(),
        ])
        .env("COLLOQUY__SERVER__BIND", "127.0.0.1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start colloquy serve");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("colloquy listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .parse()
            .unwrap();
        Server {
            child,
            addr,
            storage: storage.to_path_buf(),
        }
    }

    fn kill9(mut self) {
        self.child.kill().unwrap(); // SIGKILL
        self.child.wait().unwrap();
    }

    fn get(&self, path: &str) -> (u16, Value) {
        request(self.addr, "GET", path, &[], b"")
    }

    fn upload(&self, query: &str, name: &str, data: &[u8]) -> (u16, Value) {
        let (ct, body) = multipart(name, data);
        request(
            self.addr,
            "POST",
            &format!("/api/upload{query}"),
            &[("Content-Type", &ct)],
            &body,
        )
    }

    /// Polls the job's status until `done` holds (bounded).
    fn wait_status(&self, id: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..2400 {
            let (code, v) = self.get(&format!("/api/status/{id}"));
            assert_eq!(code, 200, "{v}");
            if done(&v) {
                return v;
            }
            assert_ne!(v["status"], "failed", "{v}");
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("job {id} did not get there in 120 s");
    }

    fn wait_completed(&self, id: &str) -> Value {
        self.wait_status(id, |v| v["status"] == "completed")
    }

    fn temp_entries(&self) -> usize {
        std::fs::read_dir(self.storage.join("temp"))
            .map(|d| d.count())
            .unwrap_or(0)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn storage(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("colloquy-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// speech_en.flac three times over (about 30 s): long enough to catch a job
/// while it is processing.
fn long_clip() -> Vec<u8> {
    let a = colloquy::audio::load_16k_mono(
        &repo_path("tests/data/speech_en.flac"),
        colloquy::audio::DecodeLimits::NONE,
    )
    .unwrap();
    let mut s = Vec::new();
    for _ in 0..3 {
        s.extend_from_slice(&a.samples);
    }
    common::wav_bytes(&s, 16_000)
}

fn id_of(v: &Value) -> String {
    v["job_id"]
        .as_str()
        .unwrap_or_else(|| panic!("no job_id in {v}"))
        .to_string()
}

#[test]
fn upload_poll_results_and_the_error_paths() {
    if config().is_none() {
        return;
    }
    let dir = storage("main");
    let srv = Server::start(&dir, &[]);

    let (code, h) = srv.get("/health");
    assert_eq!(code, 200);
    assert_eq!(h["models_ready"], true);
    assert_eq!(h["device"]["transcriber"], "cpu");
    assert!(h["stages"]["transcription"]["jobs_in"].is_u64(), "{h}");
    let models = h["whisper_models"]
        .as_array()
        .unwrap_or_else(|| panic!("{h}"));
    assert!(
        models
            .iter()
            .any(|m| m["name"] == h["whisper_model"] && m["n_mels"].is_u64()),
        "{h}"
    );

    let flac = std::fs::read(repo_path("tests/data/speech_en.flac")).unwrap();
    let (code, up) = srv.upload("?num_speakers=1", "speech_en.flac", &flac);
    assert_eq!(code, 200, "{up}");
    assert_eq!(up["status"], "queued");
    let id = id_of(&up);
    let st = srv.wait_completed(&id);
    assert_eq!(
        (st["progress"].as_u64(), st["step"].as_str()),
        (Some(100), Some("Complete"))
    );
    assert_eq!(st["filename"], "speech_en.flac");
    assert!((st["duration"].as_f64().unwrap() - 9.83).abs() < 0.05);

    let (code, r) = srv.get(&format!("/api/results/{id}"));
    assert_eq!(code, 200);
    let text = r["full_text"].as_str().unwrap().to_lowercase();
    assert!(
        text.contains("thank you for coming to the meeting"),
        "{text}"
    );
    assert_eq!(r["language"], "en");
    assert_eq!(r["num_speakers"], 1);
    let aligned = r["aligned_segments"].as_array().unwrap();
    assert!(
        !aligned.is_empty() && aligned.iter().all(|s| s["speaker"] == "SPEAKER_00"),
        "{r}"
    );
    assert!(!r["segments"].as_array().unwrap().is_empty());
    assert!(!r["speaker_turns"].as_array().unwrap().is_empty());
    assert_eq!(r["provider"]["runtime"], "onnxruntime");
    assert_eq!(r["provider"]["device"], "cpu");
    let stages = &r["performance_metrics"]["stages"];
    for s in [
        "decoding",
        "preprocessing",
        "transcription",
        "diarization",
        "alignment",
    ] {
        assert!(stages[s].as_f64().is_some(), "no {s} timing: {r}");
    }
    assert!(r["performance_metrics"]["total_duration"].as_f64().unwrap() > 0.0);
    assert_eq!(srv.temp_entries(), 0, "audio removed when the job ends");
    assert!(dir.join("results").join(format!("{id}.json")).exists());

    let (code, jobs) = srv.get("/api/jobs");
    assert_eq!(code, 200);
    assert!(jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|j| j["job_id"] == id.as_str()));

    // 400: not an accepted type, no file, bad query; nothing stored
    let (code, e) = srv.upload("", "notes.txt", b"hello");
    assert_eq!(
        (code, e["error"].as_str()),
        (400, Some("unsupported_type")),
        "{e}"
    );
    let (code, e) = request(
        srv.addr,
        "POST",
        "/api/upload",
        &[("Content-Type", "multipart/form-data; boundary=x")],
        b"--x--\r\n",
    );
    assert_eq!(code, 400, "{e}");
    let (code, _) = srv.upload("?num_speakers=two", "a.wav", b"RIFF");
    assert_eq!(code, 400);
    assert_eq!(srv.temp_entries(), 0);

    // a file that is not audio fails its job with a clear error, files removed
    let (code, up) = srv.upload(
        "",
        "fake.mp3",
        b"this is not audio at all, just text in an mp3 name",
    );
    assert_eq!(code, 200);
    let bad = id_of(&up);
    let st = srv.wait_status(&bad, |v| {
        v["status"] == "failed" || v["status"] == "completed"
    });
    assert_eq!(st["status"], "failed");
    assert!(
        st["error"]
            .as_str()
            .unwrap()
            .contains("not a supported audio file"),
        "{st}"
    );
    assert_eq!(st["error_kind"], "input");
    // the user's file, not our failure: 422, not 500
    let (code, e) = srv.get(&format!("/api/results/{bad}"));
    assert_eq!(code, 422, "{e}");
    assert_eq!(e["error"], "bad_input");
    assert_eq!(srv.temp_entries(), 0);

    // 404: unknown ids, and ids that are not UUIDs (never looked up on disk)
    let unknown = "0b6f3a1c-5a7e-4d2b-9f64-0d6a1f1e2c3b";
    for path in [
        format!("/api/status/{unknown}"),
        format!("/api/results/{unknown}"),
        "/api/status/not-a-uuid".to_string(),
        "/api/results/..%2F..%2Fjobs.sled".to_string(),
        "/api/results/abc.json".to_string(),
    ] {
        let (code, e) = srv.get(&path);
        assert_eq!(code, 404, "{path}: {e}");
    }
    let (code, _) = request(
        srv.addr,
        "DELETE",
        &format!("/api/jobs/{unknown}"),
        &[],
        b"",
    );
    assert_eq!(code, 404);
    let (code, _) = request(srv.addr, "DELETE", "/api/jobs/..", &[], b"");
    assert_eq!(code, 404);

    // DELETE of a finished job removes its result
    let (code, d) = request(srv.addr, "DELETE", &format!("/api/jobs/{id}"), &[], b"");
    assert_eq!((code, d["status"].as_str()), (200, Some("completed")));
    assert!(!dir.join("results").join(format!("{id}.json")).exists());
    assert_eq!(srv.get(&format!("/api/status/{id}")).0, 404);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn too_large_uploads_get_413_without_the_body_being_read() {
    if config().is_none() {
        return;
    }
    let dir = storage("limit");
    let srv = Server::start(&dir, &[("COLLOQUY__SERVER__MAX_UPLOAD_BYTES", "100000")]);

    // announced 10 GB, nothing of the body sent: the answer comes anyway
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=b\r\nContent-Length: 10000000000\r\n\r\n",
        srv.addr
    );
    s.write_all(head.as_bytes()).unwrap();
    let (code, _, body) = read_response(&mut s);
    assert_eq!(code, 413);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"], "too_large");

    // streamed past the limit (chunked, no length announced): 413, nothing kept
    let (_, body) = multipart("big.wav", &vec![0u8; 300_000]);
    let mut s = TcpStream::connect(srv.addr).unwrap();
    let head = format!(
        "POST /api/upload HTTP/1.1\r\nHost: {}\r\nContent-Type: multipart/form-data; boundary=colloquy-test-boundary-7d9a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        srv.addr
    );
    s.write_all(head.as_bytes()).unwrap();
    for chunk in body.chunks(16 * 1024) {
        if s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .is_err()
            || s.write_all(chunk).is_err()
            || s.write_all(b"\r\n").is_err()
        {
            break; // the server answered and closed: the rest is not read
        }
    }
    let _ = s.write_all(b"0\r\n\r\n");
    let (code, _, _) = read_response(&mut s);
    assert_eq!(code, 413);
    assert_eq!(srv.temp_entries(), 0);
    let (_, jobs) = srv.get("/api/jobs");
    assert_eq!(jobs["total"], 0);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn delete_while_processing_cancels_and_removes_files_and_202_while_waiting() {
    if config().is_none() {
        return;
    }
    let dir = storage("delete");
    let srv = Server::start(&dir, &[("COLLOQUY__PIPELINE__MAX_ACTIVE_JOBS", "1")]);
    let clip = long_clip();
    let (_, a) = srv.upload("", "long.wav", &clip);
    let (_, b) = srv.upload(
        "?num_speakers=1",
        "speech_en.flac",
        &std::fs::read(repo_path("tests/data/speech_en.flac")).unwrap(),
    );
    let (a, b) = (id_of(&a), id_of(&b));
    srv.wait_status(&a, |v| v["status"] == "processing");
    // b waits behind a (one job admitted at a time): results are not ready
    let (code, r) = srv.get(&format!("/api/results/{b}"));
    assert_eq!(code, 202, "{r}");
    assert_eq!(r["status"], "queued");

    let (code, d) = request(srv.addr, "DELETE", &format!("/api/jobs/{a}"), &[], b"");
    assert_eq!(
        (code, d["status"].as_str()),
        (200, Some("cancelled")),
        "{d}"
    );
    assert!(!dir.join("temp").join(&a).exists(), "audio removed at once");
    assert_eq!(srv.get(&format!("/api/status/{a}")).0, 404);
    assert_eq!(srv.get(&format!("/api/results/{a}")).0, 404);

    // the pipeline lets go of a and goes on with b
    srv.wait_completed(&b);
    let (_, h) = srv.get("/health");
    let stages = h["stages"].as_object().unwrap();
    let count = |key: &str| -> Vec<(&str, u64)> {
        let mut c: Vec<(&str, u64)> = stages
            .iter()
            .map(|(name, s)| (name.as_str(), s[key].as_u64().unwrap()))
            .filter(|&(_, n)| n > 0)
            .collect();
        c.sort();
        c
    };
    // a was dropped, never failed, by the stage that held it when it was
    // cancelled: one before the fork, or both branches, which hold it at once
    assert_eq!(count("jobs_failed"), vec![], "{h}");
    let dropped = count("jobs_dropped");
    assert!(
        [
            vec![("decoding", 1)],
            vec![("preprocessing", 1)],
            vec![("diarization", 1), ("transcription", 1)],
        ]
        .contains(&dropped),
        "{h}"
    );
    assert_eq!(h["active_jobs"], 0);
    assert!(!dir.join("results").join(format!("{a}.json")).exists());
    assert_eq!(srv.temp_entries(), 0);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kill_9_with_one_job_processing_and_one_queued_then_restart_completes_both() {
    if config().is_none() {
        return;
    }
    let dir = storage("restart");
    let env = [("COLLOQUY__PIPELINE__MAX_ACTIVE_JOBS", "1")];
    let srv = Server::start(&dir, &env);
    let clip = long_clip();
    let (_, a) = srv.upload("", "first.wav", &clip);
    let (_, b) = srv.upload(
        "?num_speakers=1",
        "second.flac",
        &std::fs::read(repo_path("tests/data/speech_en.flac")).unwrap(),
    );
    let (a, b) = (id_of(&a), id_of(&b));
    srv.wait_status(&a, |v| v["status"] == "processing");
    assert_eq!(srv.get(&format!("/api/status/{b}")).1["status"], "queued");
    srv.kill9();

    let srv = Server::start(&dir, &env);
    let sa = srv.wait_completed(&a);
    let sb = srv.wait_completed(&b);
    assert_eq!(sa["attempts"], 2, "the interrupted job ran again: {sa}");
    assert_eq!(sb["attempts"], 1, "{sb}");
    let (code, r) = srv.get(&format!("/api/results/{a}"));
    assert_eq!(code, 200);
    assert!(r["full_text"]
        .as_str()
        .unwrap()
        .to_lowercase()
        .contains("summer trip"));
    assert_eq!(
        srv.temp_entries(),
        0,
        "temp is empty once every job is done"
    );
    drop(srv);

    // a third start still serves the finished jobs
    let srv = Server::start(&dir, &env);
    assert_eq!(srv.get(&format!("/api/results/{b}")).0, 200);
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two voices and a word Whisper gets right in them: the shared synthetic
/// conversation when present, else the project's own two-voice clip
/// (tests/data/two_voices.flac, made by scripts/make_test_audio.sh).
fn two_speaker_clip() -> (String, Vec<u8>, &'static str) {
    match common::shared_data("synthetic/conv1.mp3") {
        Some(p) => ("conv1.mp3".into(), std::fs::read(p).unwrap(), "budget"),
        None => (
            "two_voices.flac".into(),
            std::fs::read(repo_path("tests/data/two_voices.flac")).unwrap(),
            "appointment",
        ),
    }
}

#[test]
fn two_speakers_with_a_num_speakers_hint() {
    if config().is_none() {
        return;
    }
    let (name, data, word) = two_speaker_clip();
    let dir = storage("two");
    let srv = Server::start(&dir, &[]);
    let (code, up) = srv.upload("?num_speakers=2", &name, &data);
    assert_eq!(code, 200, "{up}");
    let id = id_of(&up);
    srv.wait_completed(&id);
    let (_, r) = srv.get(&format!("/api/results/{id}"));
    assert_eq!(r["num_speakers"], 2, "{r}");
    let aligned = r["aligned_segments"].as_array().unwrap();
    let mut speakers: Vec<&str> = aligned
        .iter()
        .map(|s| s["speaker"].as_str().unwrap())
        .collect();
    speakers.sort();
    speakers.dedup();
    assert_eq!(speakers, ["SPEAKER_00", "SPEAKER_01"], "{r}");
    assert!(
        r["full_text"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains(word),
        "{r}"
    );
    drop(srv);
    let _ = std::fs::remove_dir_all(&dir);
}
