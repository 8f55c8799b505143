#!/usr/bin/env python3
"""`make test-cluster` (issue #15): a cluster as deployed, on this machine.
One `colloquy serve --role api` node and two `--role worker` nodes (the
real models, 3 s leases) over a private PostgreSQL (scripts/cluster_nodes.py)
and moto's S3 server, and what must hold:

1. 10 uploads through the api node's HTTP API (`POST /api/upload`), one
   worker killed with SIGKILL once it holds a job: every job completes
   exactly once (the killed worker's job taken over by the other, attempts
   2; every other leased once; one result blob per job), and the api node
   serves each result.
2. A DELETE through the api node reaches a job a worker is running: its row
   and every blob go, and the worker writes nothing after.
3. A client that drops an upload midway (multipart begun) leaves no object,
   no pending multipart upload and no row.
4. The api node killed (SIGKILL) and restarted mid-upload-stream: the client
   gets an error, no object or row is left, and the restarted node takes
   uploads. (The parts of the multipart upload the killed node had begun
   stay as a pending upload until the bucket's lifecycle rule aborts it:
   counted in the last line, README "Beyond one machine".)
5. `/health` of the api node: its role, the workers it sees.

Skipped, with one line, when PostgreSQL or moto cannot be had. Ends with
`cluster: PASS ...` or `cluster: FAIL ...` (exit 1).
"""
import http.client
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_nodes import ROOT, Moto, Postgres, Skip, start_node  # noqa: E402
from suite import Checks  # noqa: E402

DEADLINE = 180
check = Checks()
BOUNDARY = "colloquy-cluster-7f3e"


def wait(what, probe, want):
    t0 = time.monotonic()
    got = None
    while time.monotonic() - t0 < DEADLINE:
        got = probe()
        if got == want:
            return
        time.sleep(0.1)
    check(what, False, f"after {DEADLINE} s: {got!r}, not {want!r}")
    check.finish("cluster", "stopped waiting")


def call(addr, method, path, body=None, headers=None):
    host, port = addr.split(":")
    c = http.client.HTTPConnection(host, int(port), timeout=120)
    c.request(method, path, body=body, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    try:
        return r.status, json.loads(data)
    except ValueError:
        return r.status, data.decode(errors="replace")


def form(filename, data):
    head = (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return head, f"\r\n--{BOUNDARY}--\r\n".encode()


def upload(addr, path):
    with open(path, "rb") as f:
        data = f.read()
    head, tail = form(os.path.basename(path), data)
    return call(addr, "POST", "/api/upload", head + data + tail,
                {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"})


def half_upload(addr, total, sent):
    """Starts an upload announcing `total` bytes of audio and sends `sent`
    of them; returns the open socket (the caller drops it or the server)."""
    head, tail = form("long.wav", b"")
    length = len(head) + total + len(tail)
    host, port = addr.split(":")
    s = socket.create_connection((host, int(port)), timeout=30)
    s.sendall((f"POST /api/upload HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {length}\r\n"
               f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n\r\n").encode() + head)
    chunk = b"\0" * 65536
    left = sent
    while left > 0:
        s.sendall(chunk[:min(left, len(chunk))])
        left -= min(left, len(chunk))
    return s


def rows(pg):
    return [r.split("|") for r in pg.sql("SELECT id, status, attempts, lease_owner, coalesce(result_key, '') "
                                         "FROM jobs ORDER BY created_at").splitlines() if r]


def main():
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.wav")
    audio = conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac")
    tmp = tempfile.mkdtemp(prefix="colloquy-cluster-test-")
    try:
        pg = Postgres(tmp)
        s3 = Moto(tmp)
    except Skip as e:
        print(f"cluster: skipped: {e}")
        shutil.rmtree(tmp, ignore_errors=True)
        return
    # S3's smallest part: an upload above 5 MB is sent as a multipart upload
    env = dict(s3.env, COLLOQUY__BLOBS__PART_SIZE=str(5 * 1024 * 1024))
    fast = dict(env, COLLOQUY__CLUSTER__LEASE_SECONDS="3")
    nodes = []
    killed, relet, duplicates, pending_after_kill = [], [], 0, []
    try:
        api, api_addr = start_node(tmp, pg, "api0", "api", env)
        nodes.append(api)
        workers = []
        for n in range(2):
            w, _ = start_node(tmp, pg, f"worker{n}", "worker", fast)
            workers.append(w)
            nodes.append(w)

        # 1. ten uploads through the api node; a worker killed mid-job
        ids = []
        for _ in range(10):
            code, body = upload(api_addr, audio)
            check("an upload through the api node is queued", code == 200 and body.get("status") == "queued",
                  f"{code} {body}")
            ids.append(body.get("job_id"))
        wait("worker0 holds a job", lambda: pg.sql(
            "SELECT count(*) > 0 FROM jobs WHERE status = 'processing' AND lease_owner = 'worker0'"), "t")
        killed = pg.sql("SELECT string_agg(id::text, ',') FROM jobs WHERE status = 'processing' "
                        "AND lease_owner = 'worker0'").split(",")
        workers[0].send_signal(signal.SIGKILL)
        workers[0].wait(timeout=30)
        wait("all 10 jobs complete", lambda: pg.sql("SELECT count(*) FROM jobs WHERE status = 'completed'"), "10")
        got = rows(pg)
        check("10 jobs, all completed", len(got) == 10 and all(r[1] == "completed" for r in got), str(got))
        relet = [r for r in got if r[0] in killed]
        check(f"the killed worker's job{'s' if len(killed) > 1 else ''} taken over by the other (attempts 2)",
              len(relet) == len(killed) >= 1 and all(r[2] == "2" and r[3] == "worker1" for r in relet), str(relet))
        others = [r for r in got if r[0] not in killed]
        check("every other job leased once", all(r[2] == "1" for r in others), str(others))
        blob_counts = {i: len(s3.keys(f"results/{i}/")) for i in ids}
        duplicates = sum(n - 1 for n in blob_counts.values() if n > 1)
        check("one result blob per job in the bucket (no duplicates)", all(n == 1 for n in blob_counts.values()),
              str(blob_counts))
        code, result = call(api_addr, "GET", f"/api/results/{ids[0]}")
        check("the api node serves a result from the bucket", code == 200 and len(result.get("segments", [])) > 0,
              f"{code} {str(result)[:200]}")
        code, srt = call(api_addr, "GET", f"/api/results/{ids[-1]}?format=srt")
        check("... in any export format", code == 200 and "-->" in srt, f"{code} {str(srt)[:200]}")
        code, listed = call(api_addr, "GET", "/api/jobs")
        check("the api node lists the 10 jobs", code == 200 and listed.get("total") == 10, f"{code} {listed}")

        # 2. a DELETE through the api node reaches a job a worker runs
        code, body = upload(api_addr, audio)
        job = body.get("job_id")
        wait("the job is running", lambda: pg.sql(f"SELECT status FROM jobs WHERE id = '{job}'"), "processing")
        code, body = call(api_addr, "DELETE", f"/api/jobs/{job}")
        check("DELETE of a running job through the api node", code == 200 and body.get("status") == "cancelled",
              f"{code} {body}")
        wait("the worker lets the job go", lambda: pg.sql("SELECT count(*) FROM jobs WHERE status = 'processing'"),
             "0")
        time.sleep(1.0)  # a worker that had finished first would have written by now
        check("no row and no blob of the deleted job", pg.sql(f"SELECT count(*) FROM jobs WHERE id = '{job}'") == "0"
              and not s3.keys(f"uploads/{job}/") and not s3.keys(f"results/{job}/"),
              f"{s3.keys(f'uploads/{job}/')} {s3.keys(f'results/{job}/')}")

        # 3. a client that drops its upload midway, multipart begun
        objects = s3.keys("uploads/")
        sock = half_upload(api_addr, 16 * 1024 * 1024, 11 * 1024 * 1024)
        time.sleep(0.5)
        sock.close()
        wait("a dropped upload's multipart upload is aborted", lambda: len(s3.pending_uploads()), 0)
        check("a dropped upload leaves no object and no row",
              s3.keys("uploads/") == objects and pg.sql("SELECT count(*) FROM jobs") == "10", str(s3.keys("uploads/")))

        # 4. the api node killed and restarted mid-upload-stream
        sock = half_upload(api_addr, 16 * 1024 * 1024, 11 * 1024 * 1024)
        time.sleep(0.5)
        api.send_signal(signal.SIGKILL)
        api.wait(timeout=30)
        client_error = None
        try:
            sock.sendall(b"\0" * (5 * 1024 * 1024))
            sock.settimeout(10)
            answer = sock.recv(100)
            client_error = None if answer else "the connection was closed"
        except OSError as e:
            client_error = str(e) or type(e).__name__
        sock.close()
        check("the client of the killed api node sees an error", client_error is not None, "it got an answer")
        api, api_addr = start_node(tmp, pg, "api0", "api", env)
        nodes.append(api)
        pending_after_kill = s3.pending_uploads()
        check("no object and no row from the killed upload",
              s3.keys("uploads/") == objects and pg.sql("SELECT count(*) FROM jobs") == "10", str(s3.keys("uploads/")))
        code, body = upload(api_addr, audio)
        check("the restarted api node takes uploads", code == 200, f"{code} {body}")
        wait("... and its job completes", lambda: pg.sql(
            f"SELECT status FROM jobs WHERE id = '{body.get('job_id')}'"), "completed")

        # 5. the api node's /health
        with urllib.request.urlopen(f"http://{api_addr}/health", timeout=10) as r:
            health = json.load(r)
        seen = sorted(w["id"] for w in health["queue"]["workers"])
        check("the api node's /health: its role and the worker it sees",
              health["role"] == "api" and health["queue"]["queued"] == 0 and "worker1" in seen and "api0" in seen,
              json.dumps(health)[:300])
    finally:
        for n in nodes:
            if n.poll() is None:
                n.terminate()
                n.wait(timeout=30)
        s3.stop()
        pg.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish("cluster", f"1 api + 2 worker processes on PostgreSQL and S3 (moto), 10 uploads of "
                 f"{os.path.basename(audio)}; 1 worker killed with SIGKILL holding {len(killed)} job(s): re-leased "
                 f"{len(relet)}, all 10 completed, duplicates {duplicates}; a DELETE reached a running job; "
                 f"the api node killed mid-upload: no object or row left ({len(pending_after_kill)} multipart "
                 f"upload(s) pending for the bucket's lifecycle rule)")


if __name__ == "__main__":
    main()
