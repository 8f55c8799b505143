"""Nodes of a cluster on this machine, for the cluster test and bench: a
private PostgreSQL (initdb in a temp folder, a unix socket only, run as the
`postgres` user when we are root), an S3-compatible server (moto's, from
the venv the Rust blob tests install, or installed here the same way), and
`colloquy serve --role api|worker` processes on them (or, for the bench,
workers with their blobs in a local folder)."""
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid

MOTO_VERSION = "5.2.5"  # as tests/common/s3.rs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "colloquy")


class Skip(Exception):
    """What the test needs is not on this machine."""


def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
        p = os.path.join("/usr/lib/postgresql", d, "bin", name)
        if os.path.exists(p):
            return p
    raise Skip(f"PostgreSQL's {name} is not installed")


class Postgres:
    def __init__(self, tmp):
        self.dir = os.path.join(tmp, "pg")
        os.makedirs(self.dir)
        self.port = 54000 + os.getpid() % 1000
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.dir, "postgres")
            os.chmod(tmp, 0o755)
        data = os.path.join(self.dir, "data")
        subprocess.run(self.as_user + [pg_bin("initdb"), "-D", data, "-U", "colloquy", "--auth=trust", "--no-sync"],
                       check=True, capture_output=True)
        opts = f"-p {self.port} -k {self.dir} -c listen_addresses='' -c fsync=off"
        subprocess.run(self.as_user + [pg_bin("pg_ctl"), "-D", data, "-w", "-l", os.path.join(self.dir, "log"),
                                       "-o", opts, "start"], check=True, capture_output=True)
        self.data = data
        self.url = f"postgres://colloquy@localhost/postgres?host={self.dir}&port={self.port}"

    def sql(self, query):
        out = subprocess.run([pg_bin("psql"), "-h", self.dir, "-p", str(self.port), "-U", "colloquy", "-d", "postgres",
                              "-At", "-v", "ON_ERROR_STOP=1", "-c", query], check=True, capture_output=True, text=True)
        return out.stdout.strip()

    def insert_jobs(self, rows):
        """Queues the jobs `stage_uploads` made, in one transaction (as an api node would)."""
        self.sql("INSERT INTO jobs (id, filename, audio_key, bytes) VALUES " + ", ".join(rows))

    def stop(self):
        subprocess.run(self.as_user + [pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True)


class Moto:
    """moto's S3 server on a free port, with one bucket; `env` is what a
    node needs to use it (COLLOQUY__BLOBS__...)."""

    def __init__(self, tmp, bucket="colloquy"):
        venv = os.path.expanduser("~/.cache/colloquy/moto-venv")
        marker = os.path.join(venv, f".colloquy-moto-{MOTO_VERSION}")
        if not os.path.exists(marker):
            shutil.rmtree(venv, ignore_errors=True)
            try:
                subprocess.run(["python3", "-m", "venv", venv], check=True, capture_output=True)
                subprocess.run([os.path.join(venv, "bin", "python"), "-m", "pip", "install", "--quiet",
                                f"moto[server]=={MOTO_VERSION}"], check=True, capture_output=True)
            except (OSError, subprocess.CalledProcessError) as e:
                raise Skip(f"moto's S3 server cannot be installed: {e}")
            open(marker, "w").close()
        with socket.socket() as so:
            so.bind(("127.0.0.1", 0))
            self.port = so.getsockname()[1]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([os.path.join(venv, "bin", "python"), "-m", "moto.server", "-H", "127.0.0.1",
                                      "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=open(os.path.join(tmp, "moto.log"), "w"))
        t0 = time.monotonic()
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=2).read()
                break
            except OSError:
                if time.monotonic() - t0 > 60 or self.proc.poll() is not None:
                    self.stop()
                    raise RuntimeError("moto's S3 server did not start")
                time.sleep(0.2)
        self.bucket = bucket
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint}/{bucket}", method="PUT"), timeout=10).read()
        self.env = {
            "COLLOQUY__BLOBS__BACKEND": "s3",
            "COLLOQUY__BLOBS__BUCKET": bucket,
            "COLLOQUY__BLOBS__ENDPOINT": self.endpoint,
            "COLLOQUY__BLOBS__ALLOW_HTTP": "true",
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
        }

    def keys(self, prefix=""):
        """The bucket's object keys under `prefix` (ListObjectsV2, one page)."""
        url = f"{self.endpoint}/{self.bucket}?list-type=2&max-keys=1000&prefix={prefix}"
        body = urllib.request.urlopen(url, timeout=10).read().decode()
        return sorted(re.findall(r"<Key>([^<]*)</Key>", body))

    def pending_uploads(self):
        """Multipart uploads begun and neither completed nor aborted (their keys)."""
        body = urllib.request.urlopen(f"{self.endpoint}/{self.bucket}?uploads", timeout=10).read().decode()
        return re.findall(r"<Upload>.*?<Key>([^<]*)</Key>", body, re.S)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def start_node(tmp, pg, name, role, env_extra=None, pin_core=None):
    """`colloquy serve --role ROLE` named `name`, on a free port; returns
    (process, "127.0.0.1:PORT"). Its log is tmp/NAME.log."""
    env = dict(os.environ,
               COLLOQUY__CLUSTER__DATABASE_URL=pg.url,
               COLLOQUY__CLUSTER__WORKER_ID=name,
               COLLOQUY__CLUSTER__POLL_SECONDS="0.5",
               COLLOQUY__SERVER__BIND="127.0.0.1",
               COLLOQUY__SERVER__STORAGE_DIR=os.path.join(tmp, name),
               COLLOQUY__RUNTIME__INTRA_THREADS="1",
               COLLOQUY__PIPELINE__MAX_ACTIVE_JOBS="1", **(env_extra or {}))
    cmd = (["taskset", "-c", str(pin_core)] if pin_core is not None else []) + \
        [BIN, "serve", "--role", role, "--port", "0"]
    log = os.path.join(tmp, f"{name}.log")
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=open(log, "a"), text=True)
    line = p.stdout.readline()
    if "listening" not in line:
        p.kill()
        raise RuntimeError(f"{name} did not start: {open(log).read()[-2000:]}")
    return p, line.strip().rsplit("http://", 1)[1]


def start_worker(tmp, pg, n, blobs, pin=False, env_extra=None):
    """Worker n, its blobs in the local folder `blobs`; --pin: on core n
    alone (taskset), so each worker has one core."""
    env = dict({"COLLOQUY__BLOBS__ROOT": blobs}, **(env_extra or {}))
    p, _ = start_node(tmp, pg, f"worker{n}", "worker", env, pin_core=n % os.cpu_count() if pin else None)
    return p


def stage_uploads(blobs, audio, n, name):
    """`n` copies of `audio` where the local blob store reads uploads; returns
    their job ids and the rows for `Postgres.insert_jobs`."""
    ext = os.path.splitext(audio)[1]
    ids, rows = [], []
    for _ in range(n):
        i = str(uuid.uuid4())
        key = f"uploads/{i}/audio{ext}"
        os.makedirs(os.path.join(blobs, os.path.dirname(key)), exist_ok=True)
        shutil.copy(audio, os.path.join(blobs, key))
        ids.append(i)
        rows.append(f"('{i}', '{name}{ext}', '{key}', {os.path.getsize(audio)})")
    return ids, rows
