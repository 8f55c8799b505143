#!/usr/bin/env python3
"""How throughput grows with workers (issue #15): 1, 2, 3 worker nodes
(`colloquy serve --role worker`, real models, each with one ONNX Runtime
thread per engine and one job at a time) lease the same jobs from one
PostgreSQL queue, their audio and results in a local blob folder.

A private PostgreSQL cluster (initdb in a temp folder, a unix socket only)
is started and removed. For each worker count the queue gets JOBS copies
of the recording at once (rows inserted in one transaction, as an api node
would insert them; the audio put where the blob store reads it), and the
wall time from the insert to the last completion gives jobs per minute.
Every job must complete exactly once (attempts = 1). This machine has 2
cores, so beyond two workers the nodes share cores.

    python3 benches/cluster.py [--jobs 6] [--workers 1,2,3] [--audio FILE]
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "colloquy")


def pg_bin(name):
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(os.listdir("/usr/lib/postgresql"), reverse=True) if os.path.isdir("/usr/lib/postgresql") else []:
        p = os.path.join("/usr/lib/postgresql", d, "bin", name)
        if os.path.exists(p):
            return p
    sys.exit(f"cluster bench: skipped: PostgreSQL's {name} is not installed")


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

    def stop(self):
        subprocess.run(self.as_user + [pg_bin("pg_ctl"), "-D", self.data, "-m", "immediate", "stop"],
                       capture_output=True)


def start_worker(tmp, pg, n, blobs):
    storage = os.path.join(tmp, f"worker{n}")
    env = dict(os.environ,
               COLLOQUY__CLUSTER__DATABASE_URL=pg.url,
               COLLOQUY__CLUSTER__WORKER_ID=f"worker{n}",
               COLLOQUY__CLUSTER__POLL_SECONDS="0.5",
               COLLOQUY__BLOBS__ROOT=blobs,
               COLLOQUY__SERVER__STORAGE_DIR=storage,
               COLLOQUY__RUNTIME__INTRA_THREADS="1",
               COLLOQUY__PIPELINE__MAX_ACTIVE_JOBS="1")
    p = subprocess.Popen([BIN, "serve", "--role", "worker", "--port", "0"], env=env, stdout=subprocess.PIPE,
                         stderr=open(os.path.join(tmp, f"worker{n}.log"), "w"), text=True)
    line = p.stdout.readline()
    if "listening" not in line:
        p.kill()
        sys.exit(f"cluster bench: worker {n} did not start: {open(os.path.join(tmp, f'worker{n}.log')).read()[-2000:]}")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--workers", default="1,2,3")
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.wav")
    ap.add_argument("--audio", default=conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="colloquy-cluster-")
    pg = Postgres(tmp)
    rows = []
    try:
        blobs = os.path.join(tmp, "blobs")
        ext = os.path.splitext(args.audio)[1]
        for count in [int(w) for w in args.workers.split(",")]:
            workers = [start_worker(tmp, pg, n, blobs) for n in range(count)]
            try:
                ids = [str(uuid.uuid4()) for _ in range(args.jobs)]
                values = []
                for i in ids:
                    key = f"uploads/{i}/audio{ext}"
                    os.makedirs(os.path.join(blobs, os.path.dirname(key)), exist_ok=True)
                    shutil.copy(args.audio, os.path.join(blobs, key))
                    values.append(f"('{i}', 'bench{ext}', '{key}', {os.path.getsize(args.audio)})")
                t0 = time.monotonic()
                pg.sql("INSERT INTO jobs (id, filename, audio_key, bytes) VALUES " + ", ".join(values))
                while True:
                    done = pg.sql("SELECT count(*) FROM jobs WHERE status IN ('completed', 'failed', 'cancelled')")
                    if int(done) == len(ids):
                        break
                    if time.monotonic() - t0 > 1800:
                        sys.exit("cluster bench: jobs did not finish in 30 min")
                    time.sleep(0.2)
                wall = time.monotonic() - t0
                status = pg.sql("SELECT string_agg(DISTINCT status || '/' || attempts, ',') FROM jobs")
                if status != "completed/1":
                    sys.exit(f"cluster bench: FAIL: not every job completed exactly once ({status})")
                per_node = pg.sql("SELECT string_agg(n::text, '/' ORDER BY w) FROM "
                                  "(SELECT lease_owner AS w, count(*) AS n FROM jobs GROUP BY lease_owner) t")
                rows.append((count, wall, args.jobs / wall * 60, per_node))
                print(f"{count} worker(s): {args.jobs} jobs in {wall:.1f} s, {args.jobs / wall * 60:.1f} jobs/min "
                      f"(jobs per worker {per_node})", flush=True)
                pg.sql("TRUNCATE jobs")
            finally:
                for w in workers:
                    w.terminate()
                for w in workers:
                    w.wait(timeout=30)
    finally:
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    base = rows[0][2] if rows else 1
    print("cluster: " + "; ".join(f"{c} worker(s) {jpm:.1f} jobs/min ({jpm / base:.2f}x)" for c, _, jpm, _ in rows)
          + f" on {os.path.basename(args.audio)}, {args.jobs} jobs, {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
