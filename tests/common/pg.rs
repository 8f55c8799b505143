//! A private PostgreSQL server for one test: a fresh cluster in a temporary
//! folder, reached over a unix socket in that folder (no TCP at all, so it
//! can clash with nothing), stopped and removed when the guard is dropped,
//! a panicking test included.
//!
//! The binaries are looked for in `COLLOQUY_PG_BIN` when set (and only
//! there), else on PATH, then in `/usr/lib/postgresql/*/bin` (Debian's
//! layout); when absent and running as root, `apt-get install -y
//! postgresql` is tried once. Otherwise the test is skipped with one line
//! (a failure under `COLLOQUY_REQUIRE_POSTGRES`).
//!
//! initdb and the server refuse to run as root: as root they run as the
//! `postgres` user (Debian's package creates it; else a system user
//! `colloquy-pg` is created) through `runuser`, and the folder is given to
//! that user. The test itself connects as the cluster's superuser
//! `colloquy`, trusted over the socket.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Set (to anything) to fail the tests that need PostgreSQL when it is not
/// installed, instead of skipping them.
pub const REQUIRE_POSTGRES: &str = "COLLOQUY_REQUIRE_POSTGRES";

/// The folder holding initdb and pg_ctl, when not on PATH nor in Debian's
/// place (and nothing is installed when it is set).
pub const PG_BIN: &str = "COLLOQUY_PG_BIN";

pub struct PgServer {
    /// The temporary folder: the cluster in `data/`, the socket, the log.
    dir: PathBuf,
    bin: PathBuf,
    /// Who runs initdb and the server (None: this process's user).
    run_as: Option<String>,
    /// Only names the socket file (`.s.PGSQL.<port>`): TCP is off.
    port: u16,
    running: bool,
}

impl PgServer {
    /// A new cluster, started; None when PostgreSQL is not installed (the
    /// skip is printed). Panics when it is installed but will not start.
    pub fn start() -> Option<PgServer> {
        let bin = match bin_dir() {
            Ok(bin) => bin.clone(),
            Err(why) => {
                let msg = format!("skipped: PostgreSQL not installed ({why})");
                if std::env::var_os(REQUIRE_POSTGRES).is_some() {
                    panic!("{msg}");
                }
                eprintln!("{msg}");
                return None;
            }
        };
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "colloquy-pg-{}-{}-{:04x}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            fastrand::u16(..)
        ));
        std::fs::create_dir_all(&dir).expect("temporary folder for PostgreSQL");
        let run_as = if is_root() {
            let user = server_user();
            let (uid, gid) = user_ids(&user);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                .expect("give the temporary folder to the server's user");
            Some(user)
        } else {
            None
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or(55432);
        // From here on, Drop removes the folder whatever happens.
        let mut server = PgServer {
            dir,
            bin,
            run_as,
            port,
            running: false,
        };
        let data = server.data();
        let out = server.run(
            "initdb",
            &[
                "-D",
                path_str(&data),
                "-U",
                "colloquy",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        check(&out, "initdb");
        let options = format!(
            "-p {} -k {} -c listen_addresses='' -c fsync=off -c synchronous_commit=off \
             -c full_page_writes=off",
            server.port,
            path_str(&server.dir)
        );
        let log = server.dir.join("postgres.log");
        let out = server.run(
            "pg_ctl",
            &[
                "-D",
                path_str(&data),
                "-l",
                path_str(&log),
                "-o",
                &options,
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if !out.status.success() {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!(
                "PostgreSQL did not start: {}{}\n{log}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        server.running = true;
        Some(server)
    }

    /// The URL of the cluster's `postgres` database, as its superuser.
    pub fn url(&self) -> String {
        format!(
            "postgres://colloquy@localhost/postgres?host={}&port={}",
            path_str(&self.dir),
            self.port
        )
    }

    /// Stops the server now (connections are cut); the folder stays until drop.
    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        let data = self.data();
        let out = self.run(
            "pg_ctl",
            &["-D", path_str(&data), "-m", "immediate", "-w", "stop"],
        );
        if !out.status.success() {
            eprintln!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Runs one of the PostgreSQL binaries, as the server's user.
    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        cmd.args(args)
            .current_dir(&self.dir)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()))
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("cannot remove {}: {e}", self.dir.display());
        }
    }
}

/// The folder holding initdb, pg_ctl and postgres; found (or installed) once.
fn bin_dir() -> Result<&'static PathBuf, &'static String> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os(PG_BIN) {
            let bin = PathBuf::from(bin);
            return match bin.join("initdb").is_file() {
                true => Ok(bin),
                false => Err(format!("no initdb in {PG_BIN}={}", bin.display())),
            };
        }
        if let Some(bin) = find_bin() {
            return Ok(bin);
        }
        let not_found = "initdb is not on PATH nor in /usr/lib/postgresql/*/bin";
        if !is_root() {
            return Err(format!("{not_found}; not root, so not installing it"));
        }
        eprintln!("PostgreSQL not found: trying apt-get install -y postgresql");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "-q", "postgresql"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        let installed = install()
            || (Command::new("apt-get")
                .args(["update", "-q"])
                .status()
                .is_ok_and(|s| s.success())
                && install());
        match find_bin() {
            Some(bin) => Ok(bin),
            None if installed => Err(format!("{not_found}, even after apt-get install")),
            None => Err(format!(
                "{not_found}, and apt-get install postgresql failed"
            )),
        }
    })
    .as_ref()
}

fn find_bin() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join("initdb"))
        .find(|p| p.is_file());
    if let Some(initdb) = on_path {
        // /usr/local/bin/initdb may be a link into the real folder, where
        // pg_ctl finds `postgres` beside itself.
        let real = std::fs::canonicalize(&initdb).unwrap_or(initdb);
        return real.parent().map(Path::to_path_buf);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// The user the server runs as when the tests run as root.
fn server_user() -> String {
    for user in ["postgres", "colloquy-pg"] {
        if id(user, "-u").is_some() {
            return user.to_string();
        }
    }
    let status = Command::new("useradd")
        .args([
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "colloquy-pg",
        ])
        .status();
    // Another test may have created it meanwhile: look again either way.
    if id("colloquy-pg", "-u").is_none() {
        panic!("running as root, and no user to run PostgreSQL as (useradd: {status:?})");
    }
    "colloquy-pg".to_string()
}

fn user_ids(user: &str) -> (u32, u32) {
    match (id(user, "-u"), id(user, "-g")) {
        (Some(uid), Some(gid)) => (uid, gid),
        _ => panic!("cannot read the ids of user {user}"),
    }
}

fn id(user: &str, flag: &str) -> Option<u32> {
    let out = Command::new("id").args([flag, user]).output().ok()?;
    if !out.status.success() {
        return None;
    }
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn check(out: &Output, what: &str) {
    if !out.status.success() {
        panic!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}
