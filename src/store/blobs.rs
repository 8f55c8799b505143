//! Uploads and results as objects (local disk or S3): see `store`.
//!
//! The role of the blob store is to keep the bytes a job owns, its upload and
//! its result, where every node can reach them. This includes:
//! - streaming an upload in as it arrives ([`BlobStore::put_stream`]): the
//!   first part is buffered; a stream shorter than one part is written with
//!   one PUT, a longer one as a multipart upload whose parts go out while the
//!   next is read, so at most `part_size × (max_concurrency + 1)` bytes of it
//!   are in memory at a time;
//! - never leaving half an object behind: a stream that fails midway, or one
//!   that passes `max_bytes`, aborts its multipart upload (S3 drops the parts,
//!   local disk its staging file), and so does a `put_stream` future dropped
//!   midway (an actix handler whose client went away): the abort is spawned on
//!   the current tokio runtime;
//! - streaming a blob down to a local file for a worker ([`BlobStore::get_to_file`]),
//!   and small blobs (results) whole ([`BlobStore::put_bytes`], [`BlobStore::get_bytes`]).
//!
//! Keys are `/`-separated (`uploads/{job_id}/{name}`, `results/{job_id}.json`,
//! see [`upload_key`] and [`result_key`]), below the configured `prefix`.
//!
//! # Backends
//! `local`: a folder (`root`), through `object_store`'s `LocalFileSystem`,
//! which writes each object to a staging file beside it and renames it into
//! place, so a reader never sees half an object.
//!
//! `s3`: any S3-compatible server. Credentials, region and endpoint come first
//! from the standard AWS variables (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_ENDPOINT_URL`, …, read by `AmazonS3Builder::from_env`); what
//! [`BlobOptions`] sets explicitly overrides them. Without keys anywhere, the
//! instance's role (ECS/EKS/EC2 metadata) is used, as in the AWS SDKs.
//!
//! What no abort can cover: a process killed mid-upload leaves its started
//! multipart upload on S3 (the parts are invisible to readers and listings,
//! but billed). A bucket lifecycle rule `AbortIncompleteMultipartUpload`
//! (one day is plenty) removes those; set it on every bucket this uses.
//!
//! # Sync callers
//! The module is async; the engines' worker threads are not. Such a thread
//! keeps a [`tokio::runtime::Handle`] of a runtime that another thread is
//! driving (the actix system's, or a runtime made for blob IO) and calls
//! `handle.block_on(store.get_to_file(&key, &path))`. Never from one of that
//! runtime's own threads (tokio panics: blocking inside the runtime), and use
//! one runtime for one store: reqwest's pooled connections belong to the
//! runtime that opened them.

use std::fmt;
use std::path::{Path as FsPath, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Once};

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientConfigKey, ObjectStore, ObjectStoreExt, PutPayload, PutPayloadMut, RetryConfig,
    WriteMultipart,
};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

/// S3 rejects a multipart upload whose parts (all but the last) are smaller.
pub const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// Where blobs live and how to reach them (`[blobs]` in the config).
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BlobOptions {
    /// `"local"` (a folder on this machine: one node, or a shared mount) or
    /// `"s3"` (any S3-compatible server: AWS, MinIO, Garage, Ceph RGW…).
    pub backend: Backend,
    /// The folder of the `local` backend; created when missing.
    pub root: PathBuf,
    /// The bucket of the `s3` backend (it must exist: this never creates one).
    pub bucket: String,
    /// Keys are stored below this prefix (`colloquy/` lets one bucket serve
    /// several things); empty for none.
    pub prefix: String,
    /// The S3 endpoint, e.g. `http://minio:9000`; unset for AWS itself (or
    /// from `AWS_ENDPOINT_URL`).
    pub endpoint: Option<String>,
    /// The S3 region; unset to take `AWS_REGION`, else `us-east-1`. MinIO-like
    /// servers accept any.
    pub region: Option<String>,
    /// Path-style requests (`endpoint/bucket/key`) rather than virtual-hosted
    /// (`bucket.endpoint/key`). Unset: path-style when an endpoint is set
    /// (what MinIO-like servers expect), virtual-hosted on AWS.
    pub path_style: Option<bool>,
    /// Allow a plain `http://` endpoint (a server on the same host or
    /// network); otherwise only https is spoken.
    pub allow_http: bool,
    /// Explicit keys, overriding `AWS_ACCESS_KEY_ID` and friends. Prefer the
    /// environment (or the instance's role) to keys in a config file.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    /// Size of one multipart part (and of the first buffer: a smaller upload
    /// is one PUT). At least 5 MiB on S3; 10 000 parts of 8 MiB is 80 GB.
    pub part_size: usize,
    /// Parts of one upload in flight at once. Memory per upload stays below
    /// `part_size × (max_concurrency + 1)`.
    pub max_concurrency: usize,
    /// Retries of a failed request (with backoff) before the error is
    /// returned; 0 for none.
    pub max_retries: usize,
    /// No retry starts this many seconds after the first attempt.
    pub retry_timeout_secs: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    #[default]
    Local,
    S3,
}

impl Default for BlobOptions {
    fn default() -> Self {
        Self {
            backend: Backend::Local,
            root: PathBuf::from("data/blobs"),
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            path_style: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            part_size: 8 * 1024 * 1024,
            max_concurrency: 2,
            max_retries: 5,
            retry_timeout_secs: 60,
        }
    }
}

/// The secrets stay out of logs.
impl fmt::Debug for BlobOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |s: &Option<String>| s.as_ref().map(|_| "<redacted>");
        f.debug_struct("BlobOptions")
            .field("backend", &self.backend)
            .field("root", &self.root)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("path_style", &self.path_style)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("part_size", &self.part_size)
            .field("max_concurrency", &self.max_concurrency)
            .field("max_retries", &self.max_retries)
            .field("retry_timeout_secs", &self.retry_timeout_secs)
            .finish()
    }
}

/// What a blob operation can fail with: the caller's fault (`NotFound`,
/// `TooLarge`, `BadKey`, `Source`), the setup's (`Config`, `BucketMissing`),
/// or the store's (`Store`, `Io`: worth a retry later).
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob {key} not found")]
    NotFound { key: String },
    #[error("upload larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("invalid blob key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    /// The stream being stored failed (the client went away, the body was cut).
    #[error("upload stream failed: {0}")]
    Source(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("blob store configuration: {0}")]
    Config(String),
    #[error("bucket {bucket} does not exist")]
    BucketMissing { bucket: String },
    #[error(
        "blob store failed to {op} {}: {}",
        if key.is_empty() { "(all keys)" } else { key },
        with_causes(source)
    )]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("local file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One blob in a listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// The key, as passed to `put_*` (without the store's prefix).
    pub key: String,
    pub size: u64,
    pub last_modified: chrono::DateTime<chrono::Utc>,
    /// The server's entity tag (on S3, `"…-N"` for an object of N parts).
    pub e_tag: Option<String>,
}

/// `uploads/{job_id}/{name}`, with `name` reduced to a safe file name (its
/// last path component; characters other than letters, digits, `.`, `-`
/// and `_` replaced by `_`).
pub fn upload_key(job_id: uuid::Uuid, name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let mut safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if safe.trim_matches('.').is_empty() {
        safe = "upload".to_string();
    }
    format!("uploads/{job_id}/{safe}")
}

/// `results/{job_id}.json`.
pub fn result_key(job_id: uuid::Uuid) -> String {
    format!("results/{job_id}.json")
}

/// A local folder or an S3 bucket, below a prefix. Cheap to clone.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    backend: Backend,
    /// For messages: the bucket, or the local root.
    location: String,
    part_size: usize,
    max_concurrency: usize,
}

impl BlobStore {
    /// Builds the store from `options`; reaches no server (see [`Self::check`]).
    pub fn open(options: &BlobOptions) -> Result<BlobStore, BlobError> {
        if options.max_concurrency == 0 {
            return Err(BlobError::Config(
                "max_concurrency must be at least 1".into(),
            ));
        }
        let (inner, location): (Arc<dyn ObjectStore>, String) = match options.backend {
            Backend::Local => {
                if options.part_size == 0 {
                    return Err(BlobError::Config("part_size must be above 0".into()));
                }
                std::fs::create_dir_all(&options.root).map_err(|source| BlobError::Io {
                    path: options.root.clone(),
                    source,
                })?;
                let fs = LocalFileSystem::new_with_prefix(&options.root)
                    .map_err(|e| BlobError::Config(format!("local root: {e}")))?;
                (Arc::new(fs), options.root.display().to_string())
            }
            Backend::S3 => (Arc::new(open_s3(options)?), options.bucket.clone()),
        };
        let prefix = options.prefix.trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            inner
        } else {
            let p = Path::parse(prefix).map_err(|e| BlobError::Config(format!("prefix: {e}")))?;
            Arc::new(PrefixStore::new(inner, p))
        };
        Ok(BlobStore {
            store,
            backend: options.backend,
            location,
            part_size: options.part_size,
            max_concurrency: options.max_concurrency,
        })
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Asks the server once (a listing of at most one key): for a startup
    /// check that the endpoint answers, the credentials work and the bucket
    /// exists.
    pub async fn check(&self) -> Result<(), BlobError> {
        let mut list = self.store.list(None);
        match list.next().await {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(self.map_err(Op::List, "", e)),
        }
    }

    /// Stores `stream` at `key` as it arrives; returns the bytes written.
    /// More than `max_bytes` is [`BlobError::TooLarge`]; a failing stream is
    /// [`BlobError::Source`]; either way (and when this future is dropped
    /// midway) nothing stays behind: see the module's doc.
    pub async fn put_stream<S, E>(
        &self,
        key: &str,
        stream: S,
        max_bytes: u64,
    ) -> Result<u64, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>>,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let path = self.path(key)?;
        let mut stream = pin!(stream);
        let mut first = PutPayloadMut::new();
        // Set once the first part is full; aborts the upload unless taken.
        let mut upload = AbortOnDrop(None);
        let mut written: u64 = 0;
        let result = loop {
            let chunk = match stream.next().await {
                None => break Ok(()),
                Some(Err(e)) => break Err(BlobError::Source(e.into())),
                Some(Ok(chunk)) => chunk,
            };
            written += chunk.len() as u64;
            if written > max_bytes {
                break Err(BlobError::TooLarge { limit: max_bytes });
            }
            match upload.0.as_mut() {
                Some(writer) => {
                    // Backpressure: no more than max_concurrency parts in flight.
                    if let Err(e) = writer.wait_for_capacity(self.max_concurrency).await {
                        break Err(self.map_err(Op::Put, key, e));
                    }
                    writer.put(chunk);
                }
                None => {
                    first.push(chunk);
                    if first.content_length() >= self.part_size {
                        let started = match self.store.put_multipart(&path).await {
                            Ok(u) => u,
                            Err(e) => break Err(self.map_err(Op::Put, key, e)),
                        };
                        let mut writer =
                            WriteMultipart::new_with_chunk_size(started, self.part_size);
                        let buffered: PutPayload = std::mem::take(&mut first).into();
                        for part in buffered {
                            writer.put(part);
                        }
                        upload.0 = Some(writer);
                    }
                }
            }
        };
        if let Err(e) = result {
            if let Some(writer) = upload.0.take() {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key, error = %abort, "blob upload abort failed");
                }
            }
            return Err(e);
        }
        match upload.0.take() {
            // `finish` aborts the upload itself when a part or the completion fails.
            Some(writer) => writer
                .finish()
                .await
                .map_err(|e| self.map_err(Op::Put, key, e))?,
            None => self
                .store
                .put(&path, first.into())
                .await
                .map_err(|e| self.map_err(Op::Put, key, e))?,
        };
        Ok(written)
    }

    /// Stores `bytes` at `key` in one request (results, small blobs).
    pub async fn put_bytes(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let path = self.path(key)?;
        self.store
            .put(&path, bytes.into())
            .await
            .map_err(|e| self.map_err(Op::Put, key, e))?;
        Ok(())
    }

    /// Streams the blob at `key` into a new file at `dest` (through
    /// `dest.part`, renamed when complete: a failure leaves neither); returns
    /// the bytes written.
    pub async fn get_to_file(&self, key: &str, dest: &FsPath) -> Result<u64, BlobError> {
        let path = self.path(key)?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.map_err(Op::Get, key, e))?;
        let mut part = dest.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let io = |path: &FsPath| {
            let path = path.to_path_buf();
            move |source| BlobError::Io { path, source }
        };
        let result = async {
            let mut file = tokio::fs::File::create(&part).await.map_err(io(&part))?;
            let mut stream = got.into_stream();
            let mut written = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| self.map_err(Op::Get, key, e))?;
                file.write_all(&chunk).await.map_err(io(&part))?;
                written += chunk.len() as u64;
            }
            file.flush().await.map_err(io(&part))?;
            drop(file);
            tokio::fs::rename(&part, dest).await.map_err(io(dest))?;
            Ok(written)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&part).await;
        }
        result
    }

    /// The blob at `key`, whole (results, small blobs).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes, BlobError> {
        let path = self.path(key)?;
        let got = self
            .store
            .get(&path)
            .await
            .map_err(|e| self.map_err(Op::Get, key, e))?;
        got.bytes().await.map_err(|e| self.map_err(Op::Get, key, e))
    }

    /// Removes the blob at `key`; a missing one is not an error.
    pub async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let path = self.path(key)?;
        match self.store.delete(&path).await {
            Ok(()) => Ok(()),
            Err(e) => match self.map_err(Op::Delete, key, e) {
                BlobError::NotFound { .. } => Ok(()),
                e => Err(e),
            },
        }
    }

    /// Whether a blob is stored at `key`.
    pub async fn exists(&self, key: &str) -> Result<bool, BlobError> {
        let path = self.path(key)?;
        // A HEAD's 404 has no body to tell a missing bucket from a missing
        // key: a missing bucket reads as `false` here (`check` tells).
        match self.store.head(&path).await {
            Ok(_) => Ok(true),
            Err(e) => match self.map_err(Op::Head, key, e) {
                BlobError::NotFound { .. } => Ok(false),
                e => Err(e),
            },
        }
    }

    /// The blobs whose keys start with the path `prefix` (whole segments:
    /// `uploads/abc` lists `uploads/abc/…`, not `uploads/abcd`), by key.
    pub async fn list(&self, prefix: &str) -> Result<Vec<BlobMeta>, BlobError> {
        let trimmed = prefix.trim_end_matches('/');
        let path = if trimmed.is_empty() {
            None
        } else {
            Some(self.path(trimmed)?)
        };
        let mut found: Vec<BlobMeta> = self
            .store
            .list(path.as_ref())
            .map_ok(|meta| BlobMeta {
                key: meta.location.to_string(),
                size: meta.size,
                last_modified: meta.last_modified,
                e_tag: meta.e_tag,
            })
            .try_collect()
            .await
            .map_err(|e| self.map_err(Op::List, prefix, e))?;
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    fn path(&self, key: &str) -> Result<Path, BlobError> {
        let bad = |reason: String| BlobError::BadKey {
            key: key.to_string(),
            reason,
        };
        if key.is_empty() || key.starts_with('/') || key.ends_with('/') {
            return Err(bad("empty, or a leading or trailing /".into()));
        }
        // `#` marks the local backend's staging files, which its listings skip.
        if key.contains('#') {
            return Err(bad("contains #".into()));
        }
        Path::parse(key).map_err(|e| bad(e.to_string()))
    }

    /// S3 says `NoSuchBucket` in the body of its 404s (but a HEAD's has
    /// none); else a 404 is the key's, except for a write or a listing,
    /// which can only miss the bucket.
    fn map_err(&self, op: Op, key: &str, source: object_store::Error) -> BlobError {
        let not_found = matches!(source, object_store::Error::NotFound { .. });
        if self.backend == Backend::S3
            && (says_no_such_bucket(&source) || (not_found && matches!(op, Op::Put | Op::List)))
        {
            return BlobError::BucketMissing {
                bucket: self.location.clone(),
            };
        }
        if not_found {
            return BlobError::NotFound {
                key: key.to_string(),
            };
        }
        BlobError::Store {
            op: op.as_str(),
            key: key.to_string(),
            source,
        }
    }
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
    Head,
    Delete,
    List,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Put => "put",
            Op::Get => "get",
            Op::Head => "head",
            Op::Delete => "delete",
            Op::List => "list",
        }
    }
}

/// `e`'s message with what its sources add to it: object_store's stops at
/// "error sending request", the reason ("Connection refused", a DNS or TLS
/// failure) is further down.
fn with_causes(e: &object_store::Error) -> String {
    let mut text = e.to_string();
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        let cause = err.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
        next = err.source();
    }
    text
}

/// object_store keeps its HTTP error type private, but its message carries
/// the server's error body, and S3's error codes are a stable API.
fn says_no_such_bucket(e: &object_store::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        if err.to_string().contains("<Code>NoSuchBucket</Code>") {
            return true;
        }
        next = err.source();
    }
    false
}

fn open_s3(options: &BlobOptions) -> Result<object_store::aws::AmazonS3, BlobError> {
    if options.bucket.is_empty() {
        return Err(BlobError::Config("the s3 backend needs a bucket".into()));
    }
    if options.part_size < MIN_PART_SIZE {
        return Err(BlobError::Config(format!(
            "part_size {} is below S3's minimum of {MIN_PART_SIZE} bytes",
            options.part_size
        )));
    }
    install_tls_provider();
    let mut b = AmazonS3Builder::from_env().with_bucket_name(&options.bucket);
    if let Some(endpoint) = &options.endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(region) = &options.region {
        b = b.with_region(region);
    }
    if let Some(key) = &options.access_key_id {
        b = b.with_access_key_id(key);
    }
    if let Some(secret) = &options.secret_access_key {
        b = b.with_secret_access_key(secret);
    }
    if let Some(token) = &options.session_token {
        b = b.with_token(token);
    }
    let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
    let path_style = options.path_style.unwrap_or(endpoint.is_some());
    b = b.with_virtual_hosted_style_request(!path_style);
    if options.allow_http {
        b = b.with_allow_http(true);
    }
    // Else reqwest refuses each request with "URL scheme is not allowed".
    let allow_http = AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp);
    if let Some(endpoint) = endpoint.as_ref().filter(|e| e.starts_with("http://")) {
        let allowed = b.get_config_value(&allow_http).unwrap_or_default();
        if !matches!(
            allowed.to_ascii_lowercase().as_str(),
            "1" | "true" | "on" | "yes" | "y"
        ) {
            return Err(BlobError::Config(format!(
                "endpoint {endpoint} is plain http: set allow_http = true (or AWS_ALLOW_HTTP=true)"
            )));
        }
    }
    b = b.with_retry(RetryConfig {
        max_retries: options.max_retries,
        retry_timeout: std::time::Duration::from_secs(options.retry_timeout_secs),
        ..RetryConfig::default()
    });
    b.build()
        .map_err(|e| BlobError::Config(format!("s3 bucket {}: {e}", options.bucket)))
}

/// reqwest's rustls is built without a bundled provider (see Cargo.toml):
/// ring's becomes the process default, unless one is installed already.
fn install_tls_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Aborts a started multipart upload when dropped still holding it: the
/// `put_stream` future was dropped midway. Needs a tokio runtime to spawn on
/// (without one the upload is left to the bucket's lifecycle rule).
struct AbortOnDrop(Option<WriteMultipart>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(writer) = self.0.take() else { return };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                handle.spawn(async move {
                    if let Err(e) = writer.abort().await {
                        tracing::warn!(error = %e, "blob upload abort failed");
                    }
                });
            }
            Err(_) => tracing::warn!("blob upload dropped outside a runtime: not aborted"),
        }
    }
}
