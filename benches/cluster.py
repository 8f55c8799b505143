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

    python3 benches/cluster.py [--jobs 6] [--workers 1,2,3] [--audio FILE] [--pin]

With --pin each worker runs on a core of its own (taskset): worker n on
core n, so one worker has one core and two workers two.
"""
import argparse
import os
import shutil
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
from cluster_nodes import Postgres, Skip, stage_uploads, start_worker  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=6)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--pin", action="store_true", help="each worker on a core of its own (taskset)")
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.wav")
    ap.add_argument("--audio", default=conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac"))
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="colloquy-cluster-")
    try:
        pg = Postgres(tmp)
    except Skip as e:
        sys.exit(f"cluster bench: skipped: {e}")
    rows = []
    try:
        blobs = os.path.join(tmp, "blobs")
        for count in [int(w) for w in args.workers.split(",")]:
            workers = [start_worker(tmp, pg, n, blobs, args.pin) for n in range(count)]
            try:
                ids, job_rows = stage_uploads(blobs, args.audio, args.jobs, "bench")
                t0 = time.monotonic()
                pg.insert_jobs(job_rows)
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
          + f" on {os.path.basename(args.audio)}, {args.jobs} jobs, {os.cpu_count()} cores"
          + (", each worker pinned to one core" if args.pin else ""))


if __name__ == "__main__":
    main()
