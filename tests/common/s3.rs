//! A real S3-compatible server for the blob store's tests: moto's standalone
//! server (`moto[server]` from PyPI), installed once into a venv under
//! `~/.cache/colloquy/moto-venv` and started per test on a private port,
//! killed when the handle drops (on panic too).
//!
//! Without Python, venv or the package, the test is skipped with one
//! "skipped: …" line; `COLLOQUY_REQUIRE_S3=1` turns that into a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MOTO_VERSION: &str = "5.2.5";
pub const REQUIRE_S3: &str = "COLLOQUY_REQUIRE_S3";

/// A running moto server; killed on drop.
pub struct S3Server {
    child: Child,
    pub addr: SocketAddr,
}

impl S3Server {
    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Creates `bucket` (path-style PUT; moto takes any credentials).
    pub fn create_bucket(&self, bucket: &str) {
        let url = format!("{}/{bucket}", self.endpoint());
        ureq::put(&url)
            .send_empty()
            .unwrap_or_else(|e| panic!("create bucket {bucket}: {e}"));
    }

    /// The multipart uploads started in `bucket` and neither completed nor
    /// aborted (S3's ListMultipartUploads), as their keys.
    pub fn pending_uploads(&self, bucket: &str) -> Vec<String> {
        let url = format!("{}/{bucket}?uploads", self.endpoint());
        let body = ureq::get(&url)
            .call()
            .unwrap_or_else(|e| panic!("list multipart uploads: {e}"))
            .into_body()
            .read_to_string()
            .expect("list multipart uploads body");
        body.split("<Upload>")
            .skip(1)
            .map(|upload| {
                let key = upload.split("<Key>").nth(1).unwrap_or("");
                key.split("</Key>").next().unwrap_or("").to_string()
            })
            .collect()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh moto server, or None (skipped, with one line saying why) when it
/// cannot be installed here.
pub fn moto() -> Option<S3Server> {
    let venv = match installed_venv() {
        Ok(venv) => venv,
        Err(why) => {
            let msg = format!("no S3 server for this test: {why}");
            if std::env::var_os(REQUIRE_S3).is_some() {
                panic!("{msg} ({REQUIRE_S3} is set)");
            }
            eprintln!("skipped: {msg}");
            return None;
        }
    };
    let port = free_port();
    let mut child = Command::new(venv.join("bin/python"))
        .args([
            "-m",
            "moto.server",
            "-H",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start moto server");
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait().expect("moto server status") {
            panic!("moto server exited at start ({status}) on port {port}");
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
            && ureq::get(&format!("http://{addr}/")).call().is_ok()
        {
            return Some(S3Server { child, addr });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("moto server did not answer on port {port} within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local addr").port()
}

/// The venv with moto's server, installed on first use (one test at a
/// time); a marker file says the install finished.
fn installed_venv() -> Result<PathBuf, String> {
    static INSTALL: Mutex<()> = Mutex::new(());
    let _one = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let home = std::env::var_os("HOME").ok_or("HOME is not set")?;
    let cache = Path::new(&home).join(".cache/colloquy");
    let venv = cache.join("moto-venv");
    let marker = venv.join(format!(".colloquy-moto-{MOTO_VERSION}"));
    if marker.exists() {
        return Ok(venv);
    }
    if venv.exists() {
        std::fs::remove_dir_all(&venv).map_err(|e| format!("remove {}: {e}", venv.display()))?;
    }
    std::fs::create_dir_all(&cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    eprintln!(
        "installing moto[server]=={MOTO_VERSION} into {} (once)",
        venv.display()
    );
    let log = cache.join("moto-install.log");
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        &log,
        "python3 -m venv",
    )?;
    let spec = format!("moto[server]=={MOTO_VERSION}");
    run(
        Command::new(venv.join("bin/python")).args(["-m", "pip", "install", "--quiet", &spec]),
        &log,
        "pip install",
    )?;
    std::fs::write(&marker, b"").map_err(|e| format!("write {}: {e}", marker.display()))?;
    Ok(venv)
}

/// Runs `cmd` with its output in `log`; on failure, the log's last lines.
fn run(cmd: &mut Command, log: &Path, what: &str) -> Result<(), String> {
    let out = std::fs::File::create(log).map_err(|e| format!("create {}: {e}", log.display()))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .status()
        .map_err(|e| format!("{what}: {e}"))?;
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(3).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{what} failed ({status}; log {}): {}",
        log.display(),
        tail.join(" | ")
    ))
}
