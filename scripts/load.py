#!/usr/bin/env python3
"""make load: 50 uploads at once and about 1000 status reads a second for 60 s.

Starts the real server (real models) on a private storage folder, sends 50
uploads of a 4 s clip at the same moment (one thread each), then runs `wrk`
(Debian's package, installed when missing) for LOAD_SECONDS (default 60)
reading `GET /api/status/{id}` of those jobs round-robin from 16 connections,
each pausing 10 ms between requests (wrk's `delay()`: 1000-1500
requests a second on loopback), while the pipeline works through the 50 jobs.

Passes when every upload is answered 200, every read 200 (no socket errors,
no other status), and every job completes. Prints wrk's request rate and
status-read latencies (p50, p90, p99, max) and the uploads' latencies.

The per-key read and upload rate limits are off for this run (the server's
capacity is measured, not the limiter's); everything else is the default
config. Ends with one line: `load: PASS ...` or `load: FAIL ...`.
"""

import datetime
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time

from suite import FORMATS, Checks, Server

check = Checks()
ENV = {"COLLOQUY__SERVER__UPLOADS_PER_MINUTE": "0", "COLLOQUY__SERVER__READS_PER_MINUTE": "0"}
UPLOADS = 50
SECONDS = int(os.environ.get("LOAD_SECONDS", "60"))

LUA = """
local ids = {}
for line in io.lines("%(ids)s") do ids[#ids + 1] = line end
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/api/status/" .. ids[(n %% #ids) + 1])
end
delay = function() return 10 end
local bad = 0
response = function(status, headers, body)
  if status ~= 200 then bad = bad + 1 end
end
done = function(summary, latency, requests)
  io.write(string.format("LOAD requests=%%d errors_connect=%%d errors_read=%%d errors_write=%%d errors_timeout=%%d errors_status=%%d duration_us=%%d\\n",
    summary.requests, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status, summary.duration))
  io.write(string.format("LAT p50_us=%%d p90_us=%%d p99_us=%%d max_us=%%d\\n",
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def wrk_binary():
    path = shutil.which("wrk")
    if path:
        return path
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    print("installing wrk (Debian) ...", flush=True)
    subprocess.run(sudo + ["apt-get", "update", "-qq"], check=True)
    subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "wrk"], check=True,
                   env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, stdout=subprocess.DEVNULL)
    return shutil.which("wrk")


def stamp(iso):
    """Seconds since the epoch of the registry's RFC 3339 times (nanoseconds cut to micro)."""
    m = re.match(r"(.*T\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-].*)$", iso)
    frac = (m.group(2) or ".0")[:7]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return datetime.datetime.fromisoformat(m.group(1) + frac + tz).timestamp()


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def main():
    wrk = wrk_binary()
    check("wrk is installed", bool(wrk))
    tmp = tempfile.mkdtemp(prefix="colloquy-load-")
    clip = open(os.path.join(FORMATS, "clip.wav"), "rb").read()
    try:
        srv = Server(os.path.join(tmp, "storage"), ENV, suite="load")
        results = [None] * UPLOADS
        start = threading.Barrier(UPLOADS)

        def send(i):
            start.wait()
            t = time.time()
            try:
                code, body, _ = srv.upload(f"load-{i}.wav", clip)
            except OSError as e:
                code, body = 0, {"error": str(e)}
            results[i] = (code, body, time.time() - t)

        threads = [threading.Thread(target=send, args=(i,)) for i in range(UPLOADS)]
        t0 = time.time()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        codes = [r[0] for r in results]
        check(f"{UPLOADS} concurrent uploads all 200", codes.count(200) == UPLOADS,
              str({c: codes.count(c) for c in set(codes)}))
        ids = [r[1]["job_id"] for r in results if r[0] == 200]
        upload_s = [r[2] for r in results]
        idfile = os.path.join(tmp, "ids.txt")
        with open(idfile, "w") as f:
            f.write("\n".join(ids) + "\n")
        lua = os.path.join(tmp, "status.lua")
        with open(lua, "w") as f:
            f.write(LUA % {"ids": idfile})
        url = f"http://{srv.addr[0]}:{srv.addr[1]}"
        out = subprocess.run([wrk, "-t", "2", "-c", "16", "-d", f"{SECONDS}s", "--timeout", "5s",
                              "-s", lua, url], capture_output=True, text=True)
        print(out.stdout, flush=True)
        m = re.search(r"LOAD requests=(\d+) errors_connect=(\d+) errors_read=(\d+) errors_write=(\d+) "
                      r"errors_timeout=(\d+) errors_status=(\d+) duration_us=(\d+)", out.stdout)
        lat = re.search(r"LAT p50_us=(\d+) p90_us=(\d+) p99_us=(\d+) max_us=(\d+)", out.stdout)
        check("wrk ran", m is not None and lat is not None, out.stderr[-500:])
        if m is None or lat is None:
            check.finish("load", "wrk did not report")
        requests, *errors, duration = (int(x) for x in m.groups())
        rate = requests / (duration / 1e6)
        check("no read failed (connect, read, write, timeout, non-200)", sum(errors) == 0, str(errors))
        check("1000 reads a second or more", rate >= 1000, f"{rate:.0f}/s")
        p50, p90, p99, pmax = (int(x) / 1000 for x in lat.groups())
        done = srv.wait_jobs(ids, seconds=900)
        statuses = [d["status"] for d in done.values()]
        check("every job completed", len(done) == len(ids) and all(s == "completed" for s in statuses),
              f"{statuses.count('completed')} of {len(ids)}")
        ends = [stamp(d["finished_at"]) for d in done.values() if d.get("finished_at")]
        jobs_s = (max(ends) - t0) if ends else float("nan")
        check("server up", srv.alive())
        srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish("load", f"{UPLOADS} concurrent uploads: all 200, p50 {percentile(upload_s, 50) * 1000:.0f} ms, "
                 f"max {max(upload_s) * 1000:.0f} ms; {requests} status reads in {duration / 1e6:.0f} s "
                 f"({rate:.0f}/s), 0 errors, p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms, "
                 f"max {pmax:.1f} ms; all {len(ids)} jobs completed, the last {jobs_s:.0f} s after the uploads began")


if __name__ == "__main__":
    main()
