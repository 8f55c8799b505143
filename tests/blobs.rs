//! The blob store (issue #15) against a local folder and a real
//! S3-compatible server (moto's, see `common::s3`): round trips through
//! multipart uploads, streams that fail or are dropped midway, the size
//! limit, missing keys, buckets and endpoints. Nothing is mocked.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use colloquy::store::blobs::{
    upload_key, Backend, BlobError, BlobOptions, BlobStore, MIN_PART_SIZE,
};
use futures::{stream, Stream, StreamExt};

use common::s3::{self, S3Server};

const MIB: usize = 1024 * 1024;
const CHUNK: usize = 64 * 1024;

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("colloquy-blobs-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every file below `dir`.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                found.push(path);
            }
        }
    }
    found
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data);
    data
}

/// `data` as a client's body: `CHUNK`-sized pieces.
fn body(data: &[u8]) -> impl Stream<Item = Result<Bytes, io::Error>> {
    let pieces: Vec<_> = data
        .chunks(CHUNK)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(pieces)
}

/// `good` bytes, then the error of a client that went away.
fn cut_body(good: usize) -> impl Stream<Item = Result<Bytes, io::Error>> {
    body(&random_bytes(good, 7)).chain(stream::once(async {
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "client went away",
        ))
    }))
}

fn local_options(dir: &TempDir) -> BlobOptions {
    BlobOptions {
        backend: Backend::Local,
        root: dir.0.join("blobs"),
        // Small parts: the 20 MiB round trip is a multipart upload of many.
        part_size: MIB,
        ..BlobOptions::default()
    }
}

fn s3_options(server: &S3Server, bucket: &str) -> BlobOptions {
    BlobOptions {
        backend: Backend::S3,
        bucket: bucket.to_string(),
        prefix: "colloquy".to_string(),
        endpoint: Some(server.endpoint()),
        region: Some("us-east-1".to_string()),
        allow_http: true,
        access_key_id: Some("test".to_string()),
        secret_access_key: Some("test".to_string()),
        part_size: MIN_PART_SIZE,
        max_retries: 1,
        ..BlobOptions::default()
    }
}

/// A moto server with `bucket` created, or None (skipped).
fn s3_store(bucket: &str) -> Option<(S3Server, BlobStore)> {
    let server = s3::moto()?;
    server.create_bucket(bucket);
    let store = BlobStore::open(&s3_options(&server, bucket)).expect("open s3 store");
    Some((server, store))
}

/// Streams 20 MiB and a bit up in 64 KiB chunks and down to a file; then
/// list, exists, small blobs, delete. Returns the upload's entity tag.
async fn round_trip(store: &BlobStore, dir: &Path) -> Option<String> {
    let job = uuid::Uuid::new_v4();
    let key = upload_key(job, "meeting.wav");
    let data = random_bytes(20 * MIB + 123, 1);
    let written = store
        .put_stream(&key, body(&data), 64 * MIB as u64)
        .await
        .unwrap();
    assert_eq!(written, data.len() as u64);
    assert!(store.exists(&key).await.unwrap());

    let dest = dir.join("down.wav");
    let got = store.get_to_file(&key, &dest).await.unwrap();
    assert_eq!(got, data.len() as u64);
    assert!(
        std::fs::read(&dest).unwrap() == data,
        "downloaded bytes differ"
    );
    assert!(!dir.join("down.wav.part").exists());

    let result = colloquy::store::blobs::result_key(job);
    store
        .put_bytes(&result, Bytes::from_static(b"{\"text\":\"hello\"}"))
        .await
        .unwrap();
    assert_eq!(
        store.get_bytes(&result).await.unwrap(),
        Bytes::from_static(b"{\"text\":\"hello\"}")
    );

    let listed = store.list(&format!("uploads/{job}")).await.unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].size, data.len() as u64);
    let all: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(all, vec![result.clone(), key.clone()]);
    let e_tag = listed[0].e_tag.clone();

    store.delete(&key).await.unwrap();
    store.delete(&result).await.unwrap();
    assert!(!store.exists(&key).await.unwrap());
    assert!(store.list("").await.unwrap().is_empty());
    e_tag
}

async fn cut_midway(store: &BlobStore) -> String {
    let key = upload_key(uuid::Uuid::new_v4(), "cut.wav");
    let err = store
        .put_stream(&key, cut_body(12 * MIB), 64 * MIB as u64)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Source(_)), "{err:?}");
    assert!(err.to_string().contains("client went away"), "{err}");
    assert!(!store.exists(&key).await.unwrap());
    key
}

async fn too_large(store: &BlobStore) -> String {
    let key = upload_key(uuid::Uuid::new_v4(), "big.wav");
    let data = random_bytes(12 * MIB, 3);
    let err = store
        .put_stream(&key, body(&data), 8 * MIB as u64)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BlobError::TooLarge { limit } if limit == 8 * MIB as u64),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "upload larger than the limit of 8388608 bytes"
    );
    assert!(!store.exists(&key).await.unwrap());
    // At the limit exactly is fine.
    let small = random_bytes(1000, 4);
    assert_eq!(
        store.put_stream(&key, body(&small), 1000).await.unwrap(),
        1000
    );
    store.delete(&key).await.unwrap();
    key
}

async fn missing(store: &BlobStore, dir: &Path) {
    let key = "results/no-such-job.json";
    let err = store.get_bytes(key).await.unwrap_err();
    assert!(
        matches!(&err, BlobError::NotFound { key: k } if k == key),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "blob results/no-such-job.json not found");
    let dest = dir.join("missing.wav");
    let err = store.get_to_file(key, &dest).await.unwrap_err();
    assert!(matches!(err, BlobError::NotFound { .. }), "{err:?}");
    assert!(!dest.exists() && !dir.join("missing.wav.part").exists());
    store.delete(key).await.unwrap();
    assert!(!store.exists(key).await.unwrap());
    assert!(store.list("uploads/nothing").await.unwrap().is_empty());
}

// ---- local disk -------------------------------------------------------------

#[tokio::test]
async fn local_round_trip() {
    let dir = TempDir::new();
    let store = BlobStore::open(&local_options(&dir)).unwrap();
    store.check().await.unwrap();
    round_trip(&store, &dir.0).await;
    assert_eq!(files_under(&dir.0.join("blobs")), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn local_cut_stream_leaves_nothing() {
    let dir = TempDir::new();
    let store = BlobStore::open(&local_options(&dir)).unwrap();
    cut_midway(&store).await;
    // Cut before the first part was full: nothing was ever written.
    let key = upload_key(uuid::Uuid::new_v4(), "short.wav");
    let err = store
        .put_stream(&key, cut_body(100_000), u64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Source(_)), "{err:?}");
    assert_eq!(files_under(&dir.0.join("blobs")), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn local_too_large_leaves_nothing() {
    let dir = TempDir::new();
    let store = BlobStore::open(&local_options(&dir)).unwrap();
    too_large(&store).await;
    assert_eq!(files_under(&dir.0.join("blobs")), Vec::<PathBuf>::new());
}

#[tokio::test]
async fn local_missing_keys() {
    let dir = TempDir::new();
    let store = BlobStore::open(&local_options(&dir)).unwrap();
    missing(&store, &dir.0).await;
}

#[tokio::test]
async fn local_prefix_and_bad_keys() {
    let dir = TempDir::new();
    let options = BlobOptions {
        prefix: "/colloquy/".to_string(),
        ..local_options(&dir)
    };
    let store = BlobStore::open(&options).unwrap();
    store
        .put_bytes("results/a.json", Bytes::from_static(b"{}"))
        .await
        .unwrap();
    assert!(dir.0.join("blobs/colloquy/results/a.json").exists());
    let keys: Vec<String> = store
        .list("")
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(keys, vec!["results/a.json".to_string()]);
    for bad in ["", "/abs", "dir/", "a/../b", "a#1"] {
        let err = store.put_bytes(bad, Bytes::new()).await.unwrap_err();
        assert!(matches!(err, BlobError::BadKey { .. }), "{bad:?}: {err:?}");
    }
}

#[test]
fn upload_keys_are_safe() {
    let job = uuid::Uuid::nil();
    let j = "00000000-0000-0000-0000-000000000000";
    assert_eq!(upload_key(job, "talk.wav"), format!("uploads/{j}/talk.wav"));
    assert_eq!(
        upload_key(job, "../../etc/passwd"),
        format!("uploads/{j}/passwd")
    );
    assert_eq!(
        upload_key(job, "C:\\a b#1.mp3"),
        format!("uploads/{j}/a_b_1.mp3")
    );
    assert_eq!(upload_key(job, ".."), format!("uploads/{j}/upload"));
    assert_eq!(upload_key(job, ""), format!("uploads/{j}/upload"));
}

/// How a sync worker thread calls the store: `Handle::block_on` on a
/// runtime another thread drives.
#[test]
fn sync_caller_through_a_runtime_handle() {
    let dir = TempDir::new();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        handle_tx.send(rt.handle().clone()).unwrap();
        rt.block_on(async { stop_rx.await.ok() });
    });
    let handle = handle_rx.recv().unwrap();
    let store = BlobStore::open(&local_options(&dir)).unwrap();
    let data = random_bytes(3 * MIB, 5);
    handle
        .block_on(store.put_stream("uploads/x/a.wav", body(&data), u64::MAX))
        .unwrap();
    let dest = dir.0.join("a.wav");
    handle
        .block_on(store.get_to_file("uploads/x/a.wav", &dest))
        .unwrap();
    assert!(std::fs::read(&dest).unwrap() == data);
    stop_tx.send(()).unwrap();
    driver.join().unwrap();
}

// ---- S3 (moto) -----------------------------------------------------------------

#[tokio::test]
async fn s3_round_trip_in_parts() {
    let Some((server, store)) = s3_store("round") else {
        return;
    };
    let dir = TempDir::new();
    let e_tag = round_trip(&store, &dir.0).await.expect("an entity tag");
    // S3's tag of a multipart object ends in its number of parts:
    // 20 MiB + 123 bytes in parts of 5 MiB is five.
    assert!(e_tag.trim_matches('"').ends_with("-5"), "{e_tag}");
    assert!(server.pending_uploads("round").is_empty());
    missing(&store, &dir.0).await;
    // A small stream is one plain PUT (no part count in its tag).
    let key = "uploads/x/small.wav";
    store
        .put_stream(key, body(&[1u8; 1000]), 1000)
        .await
        .unwrap();
    let tag = store.list("uploads/x").await.unwrap()[0]
        .e_tag
        .clone()
        .unwrap();
    assert!(!tag.contains('-'), "{tag}");
}

#[tokio::test]
async fn s3_cut_stream_aborts_the_upload() {
    let Some((server, store)) = s3_store("cut") else {
        return;
    };
    cut_midway(&store).await;
    assert_eq!(server.pending_uploads("cut"), Vec::<String>::new());
    assert!(store.list("").await.unwrap().is_empty());
}

#[tokio::test]
async fn s3_too_large_aborts_the_upload() {
    let Some((server, store)) = s3_store("large") else {
        return;
    };
    too_large(&store).await;
    assert_eq!(server.pending_uploads("large"), Vec::<String>::new());
    assert!(store.list("").await.unwrap().is_empty());
}

/// The handler's future dropped midway (its client went away): the
/// multipart upload it started is aborted in the background.
#[tokio::test]
async fn s3_dropped_upload_is_aborted() {
    let Some((server, store)) = s3_store("dropped") else {
        return;
    };
    let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
    let mut sent_tx = Some(sent_tx);
    let data = random_bytes(12 * MIB, 6);
    let n = data.len().div_ceil(CHUNK);
    let mut i = 0;
    // 12 MiB, then a client that never sends again.
    let stalled = body(&data)
        .inspect(move |_| {
            i += 1;
            if i == n {
                sent_tx.take().unwrap().send(()).unwrap();
            }
        })
        .chain(stream::pending());
    let put = store.put_stream("uploads/x/dropped.wav", stalled, u64::MAX);
    tokio::select! {
        r = put => panic!("a stalled upload finished: {r:?}"),
        _ = sent_rx => {}
    }
    // The upload had started (past the first part), and the future is gone.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let pending = server.pending_uploads("dropped");
        if pending.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "upload not aborted: {pending:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!store.exists("uploads/x/dropped.wav").await.unwrap());
}

#[tokio::test]
async fn s3_missing_bucket_is_a_clear_error() {
    let Some(server) = s3::moto() else { return };
    let store = BlobStore::open(&s3_options(&server, "nobucket")).unwrap();
    let err = store.check().await.unwrap_err();
    assert!(
        matches!(&err, BlobError::BucketMissing { bucket } if bucket == "nobucket"),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("bucket nobucket does not exist"),
        "{err}"
    );
    let err = store
        .put_bytes("results/a.json", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::BucketMissing { .. }), "{err:?}");
    let data = random_bytes(6 * MIB, 8);
    let err = store
        .put_stream("uploads/x/a.wav", body(&data), u64::MAX)
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::BucketMissing { .. }), "{err:?}");
    let err = store.get_bytes("results/a.json").await.unwrap_err();
    assert!(matches!(err, BlobError::BucketMissing { .. }), "{err:?}");
    let err = store.list("").await.unwrap_err();
    assert!(matches!(err, BlobError::BucketMissing { .. }), "{err:?}");
    let err = store.delete("results/a.json").await.unwrap_err();
    assert!(matches!(err, BlobError::BucketMissing { .. }), "{err:?}");
}

/// No server at the endpoint: an error that says so, after the retries.
#[tokio::test]
async fn s3_unreachable_endpoint_is_a_clear_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let options = BlobOptions {
        backend: Backend::S3,
        bucket: "any".to_string(),
        endpoint: Some(format!("http://127.0.0.1:{port}")),
        region: Some("us-east-1".to_string()),
        allow_http: true,
        access_key_id: Some("test".to_string()),
        secret_access_key: Some("test".to_string()),
        max_retries: 0,
        ..BlobOptions::default()
    };
    let store = BlobStore::open(&options).unwrap();
    let err = store.check().await.unwrap_err();
    assert!(
        matches!(err, BlobError::Store { op: "list", .. }),
        "{err:?}"
    );
    eprintln!("unreachable endpoint: {err}");
    let err = store
        .put_bytes("results/a.json", Bytes::new())
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Store { op: "put", .. }), "{err:?}");
    let err = store.get_bytes("results/a.json").await.unwrap_err();
    assert!(matches!(err, BlobError::Store { op: "get", .. }), "{err:?}");
}

#[test]
fn s3_bad_options_are_config_errors() {
    let base = BlobOptions {
        backend: Backend::S3,
        bucket: "b".to_string(),
        endpoint: Some("http://127.0.0.1:9".to_string()),
        region: Some("us-east-1".to_string()),
        access_key_id: Some("test".to_string()),
        secret_access_key: Some("test".to_string()),
        ..BlobOptions::default()
    };
    let cases = [
        BlobOptions {
            bucket: String::new(),
            ..base.clone()
        },
        BlobOptions {
            part_size: MIN_PART_SIZE - 1,
            ..base.clone()
        },
        BlobOptions {
            max_concurrency: 0,
            ..base.clone()
        },
        // A plain http endpoint without allow_http.
        base.clone(),
    ];
    for options in cases {
        let err = BlobStore::open(&options).unwrap_err();
        assert!(matches!(err, BlobError::Config(_)), "{err:?}");
    }
    let text = format!(
        "{:?}",
        BlobOptions {
            secret_access_key: Some("hunter2".to_string()),
            ..base
        }
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn options_from_toml() {
    let options: BlobOptions = toml::from_str(
        r#"
        backend = "s3"
        bucket = "colloquy"
        endpoint = "http://minio:9000"
        allow_http = true
        "#,
    )
    .unwrap();
    assert_eq!(options.backend, Backend::S3);
    assert_eq!(options.path_style, None);
    assert!(toml::from_str::<BlobOptions>("bucket_name = \"x\"").is_err());
}

/// The futures can be spawned on a multi-threaded runtime (`tokio::spawn`)
/// when the stream is `Send`.
#[test]
fn futures_are_send() {
    fn send<T: Send>(_: T) {}
    let dir = TempDir::new();
    let store = BlobStore::open(&local_options(&dir)).unwrap();
    send(store.put_stream("a/b", body(&[0u8; 10]), 10));
    send(store.get_to_file("a/b", &dir.0));
    send(store.list(""));
    send(store.check());
}
