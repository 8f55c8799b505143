#!/usr/bin/env python3
"""`make test-cluster` (issue #15): worker processes with the real models on
one PostgreSQL queue, as deployed, and what must hold when one dies.

A private PostgreSQL (scripts/cluster_nodes.py) and two `colloquy serve
--role worker` processes (3 s leases, blobs in a local folder) take 10 jobs
queued at once; once the first worker holds a job it is killed with
SIGKILL. Every job must complete exactly once: the killed worker's job is
taken over by the other (attempts 2), every other job is leased once, and
each job has one result blob. Then a cancel set on a job the surviving
worker is running ends it `cancelled` with no result, and that worker's
/health names its role and sees the queue. Skipped, with one line, when
PostgreSQL is not installed. Ends with `cluster: PASS ...` or
`cluster: FAIL ...` (exit 1).
"""
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_nodes import ROOT, Postgres, Skip, stage_uploads, start_worker  # noqa: E402
from suite import Checks  # noqa: E402

DEADLINE = 120
check = Checks()


def wait(pg, query, want, what):
    t0 = time.monotonic()
    while time.monotonic() - t0 < DEADLINE:
        got = pg.sql(query)
        if got == want:
            return True
        time.sleep(0.05)
    check(what, False, f"after {DEADLINE} s: {pg.sql(query)!r}, not {want!r}")
    check.finish("cluster", "stopped waiting")


def main():
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.wav")
    audio = conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac")
    tmp = tempfile.mkdtemp(prefix="colloquy-cluster-test-")
    try:
        pg = Postgres(tmp)
    except Skip as e:
        print(f"cluster: skipped: {e}")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    blobs = os.path.join(tmp, "blobs")
    fast = {"COLLOQUY__CLUSTER__LEASE_SECONDS": "3"}
    workers = []
    try:
        workers = [start_worker(tmp, pg, n, blobs, env_extra=fast) for n in range(2)]

        def queue(n):
            ids, rows = stage_uploads(blobs, audio, n, "call")
            pg.insert_jobs(rows)
            return ids

        ids = queue(10)
        wait(pg, "SELECT count(*) > 0 FROM jobs WHERE status = 'processing' AND lease_owner = 'worker0'", "t",
             "worker0 holds a job")
        killed = pg.sql("SELECT string_agg(id::text, ',') FROM jobs WHERE status = 'processing' "
                        "AND lease_owner = 'worker0'").split(",")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        wait(pg, "SELECT count(*) FROM jobs WHERE status = 'completed'", "10", "all 10 jobs complete")
        rows = [r.split("|") for r in pg.sql("SELECT id, status, attempts, lease_owner, result_key FROM jobs").splitlines()]
        check("10 jobs, all completed", len(rows) == 10 and all(r[1] == "completed" for r in rows), str(rows))
        relet = [r for r in rows if r[0] in killed]
        check(f"the killed worker's job{'s' if len(killed) > 1 else ''} taken over by the other (attempts 2)",
              len(relet) == len(killed) >= 1 and all(r[2] == "2" and r[3] == "worker1" for r in relet), str(relet))
        others = [r for r in rows if r[0] not in killed]
        check("every other job leased once", all(r[2] == "1" for r in others), str(others))
        blob_counts = {i: len(os.listdir(os.path.join(blobs, "results", i)))
                       if os.path.isdir(os.path.join(blobs, "results", i)) else 0 for i in ids}
        duplicates = sum(n - 1 for n in blob_counts.values() if n > 1)
        check("one result blob per job (no duplicates)", all(n == 1 for n in blob_counts.values()), str(blob_counts))
        for r in rows[:1]:
            with open(os.path.join(blobs, r[4])) as f:
                result = json.load(f)
            check("a result holds the transcript", len(result.get("segments", [])) > 0, str(result)[:200])

        # a cancel reaches a job the surviving worker runs
        (job,) = queue(1)
        wait(pg, f"SELECT status FROM jobs WHERE id = '{job}'", "processing", "the job is running")
        pg.sql(f"UPDATE jobs SET cancel_requested = true WHERE id = '{job}'")
        wait(pg, f"SELECT status || '/' || coalesce(result_key, '-') FROM jobs WHERE id = '{job}'", "cancelled/-",
             "the cancel reaches the running job")
        check("a cancel reaches a running job: cancelled, no result", True)

        port = None
        for line in open(os.path.join(tmp, "worker1.log")):
            if "listening" in line and "addr=" in line:
                port = line.rsplit("addr=", 1)[1].split()[0].strip()
        with urllib.request.urlopen(f"http://{port}/health", timeout=10) as r:
            health = json.load(r)
        seen = sorted(w["id"] for w in health["queue"]["workers"])
        check("the worker's /health: its role, name and the queue", health["role"] == "worker"
              and health["worker_id"] == "worker1" and health["queue"]["queued"] == 0 and "worker1" in seen,
              json.dumps(health)[:300])
    finally:
        for w in workers:
            if w.poll() is None:
                w.terminate()
                w.wait(timeout=30)
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish("cluster", f"10 jobs on 2 worker processes ({os.path.basename(audio)}); 1 killed with SIGKILL "
                 f"holding {len(killed)} job(s): re-leased {len(relet)}, all 10 completed, duplicates {duplicates}; "
                 f"a cancel reached a running job")


if __name__ == "__main__":
    main()
