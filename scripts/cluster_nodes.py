"""Nodes of a cluster on this machine, for the cluster test and bench: a
private PostgreSQL (initdb in a temp folder, a unix socket only, run as the
`postgres` user when we are root) and `colloquy serve --role worker`
processes leasing from it, their blobs in a local folder."""
import os
import shutil
import subprocess
import uuid

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


def start_worker(tmp, pg, n, blobs, pin=False, env_extra=None):
    storage = os.path.join(tmp, f"worker{n}")
    env = dict(os.environ,
               COLLOQUY__CLUSTER__DATABASE_URL=pg.url,
               COLLOQUY__CLUSTER__WORKER_ID=f"worker{n}",
               COLLOQUY__CLUSTER__POLL_SECONDS="0.5",
               COLLOQUY__BLOBS__ROOT=blobs,
               COLLOQUY__SERVER__STORAGE_DIR=storage,
               COLLOQUY__RUNTIME__INTRA_THREADS="1",
               COLLOQUY__PIPELINE__MAX_ACTIVE_JOBS="1", **(env_extra or {}))
    # --pin: worker n on core n alone (taskset), so each worker has one core
    cmd = (["taskset", "-c", str(n % os.cpu_count())] if pin else []) + [BIN, "serve", "--role", "worker", "--port", "0"]
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE,
                         stderr=open(os.path.join(tmp, f"worker{n}.log"), "w"), text=True)
    line = p.stdout.readline()
    if "listening" not in line:
        p.kill()
        raise RuntimeError(f"worker {n} did not start: {open(os.path.join(tmp, f'worker{n}.log')).read()[-2000:]}")
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
