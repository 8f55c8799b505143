#!/usr/bin/env python3
"""Live progress and metrics against the real `colloquy serve` with the real
models (run by `make test`).

- Follows a job through `GET /api/jobs/{id}/events` (Server-Sent Events,
  read as they arrive: no polling) on conv1 (../shared/data/synthetic;
  without it tests/data/two_voices.flac): the record first, the steps in
  order, transcript segments before the job ends, one `done` at the end;
  the partial text against the result's.
- A second job, once the first has taught the server its speed: its events
  carry `eta_seconds`; how far the first estimate was from the time the job
  really took is printed.
- `GET /metrics` parsed by `prometheus_client`'s text parsers (Prometheus
  and OpenMetrics), pinned, in a venv under target/: before and after the
  jobs, the counters moved by what ran.

Ends with `live: PASS ...` or `live: FAIL ...` (exit 1)."""

import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from suite import ROOT, Checks, Server, multipart, venv_python

PINS = ["prometheus_client==0.26.0"]
check = Checks()


def parse_metrics(text):
    """{(name, labels tuple): value}, parsed by prometheus_client (both
    parsers must accept the text)."""
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as prom
    strict = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in om(text) for s in f.samples}
    loose = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in prom(text) for s in f.samples}
    check("the Prometheus text parser reads what the OpenMetrics one reads", set(strict) <= set(loose) | set(),
          str(sorted(set(strict) - set(loose))[:5]))
    return strict


def scrape(srv):
    code, raw, headers = srv.request_raw("GET", "/metrics")
    check("/metrics answers 200 in the OpenMetrics text format",
          code == 200 and headers.get("content-type", "").startswith("application/openmetrics-text"),
          f"{code} {headers.get('content-type')}")
    return parse_metrics(raw.decode())


def value(m, name, **labels):
    return m.get((name, tuple(sorted(labels.items()))), 0.0)


def follow(srv, job_id):
    """Every event of the job's stream, with the second it arrived, until
    the server ends the stream."""
    c = http.client.HTTPConnection(*srv.addr, timeout=600)
    c.request("GET", f"/api/jobs/{job_id}/events", headers={"Accept": "text/event-stream"})
    r = c.getresponse()
    check("events: 200 text/event-stream", r.status == 200 and r.getheader("content-type") == "text/event-stream",
          f"{r.status} {r.getheader('content-type')}")
    events, event, data = [], None, ""
    while True:
        line = r.readline()
        if not line:
            break
        line = line.decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line == "":
            if event:
                events.append((event, json.loads(data), time.time()))
            event, data = None, ""
    c.close()
    return events


def main():
    if os.environ.get("COLLOQUY_LIVE_VENV") != "1":
        py = venv_python("live-venv", PINS)
        os.execve(py, [py, os.path.abspath(__file__)], {**os.environ, "COLLOQUY_LIVE_VENV": "1"})
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.mp3")
    clip = conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac")
    audio = open(clip, "rb").read()
    tmp = tempfile.mkdtemp(prefix="colloquy-live-")
    srv = Server(os.path.join(tmp, "storage"), suite="live")
    try:
        before = scrape(srv)
        code, up, _ = srv.upload(os.path.basename(clip), audio, "?num_speakers=2")
        check("upload", code == 200, str(up))
        first = up["job_id"]
        events = follow(srv, first)
        kinds = [e for e, _, _ in events]
        check("events: the record first", kinds[:1] == ["status"], str(kinds[:3]))
        check("events: one done, last", kinds.count("done") == 1 and kinds[-1] == "done", str(kinds[-3:]))
        segs = [d for e, d, _ in events if e == "segment"]
        done_at = kinds.index("done") if "done" in kinds else len(kinds)
        seg_at = kinds.index("segment") if "segment" in kinds else len(kinds)
        check("events: transcript segments before the end", segs and seg_at < done_at, str(kinds))
        statuses = [d for e, d, _ in events if e == "status"]
        steps = [s["step"] for s in statuses]
        progress = [s["progress"] for s in statuses]
        check("events: the steps in order, progress never back",
              any(s.startswith("Transcrib") for s in steps) and "Aligning speakers" in steps
              and steps[-1] == "Complete" and progress == sorted(progress), f"{steps} {progress}")
        done = events[-1][1] if events else {}
        check("events: done says completed", done.get("status") == "completed", str(done))
        # segments came before the speakers: their text is the result's
        code, result, _ = srv.request("GET", f"/api/results/{first}")
        words = lambda t: [w.strip(".,?!").lower() for w in t.split()]
        partial = words(" ".join(s["text"] for s in sorted(segs, key=lambda s: s["start"])))
        final = set(words(result.get("full_text", "")))
        shared = sum(w in final for w in partial) / max(1, len(partial))
        check("events: the partial text is the result's (90% of its words)", shared >= 0.9,
              f"{shared:.2f} of {len(partial)} words")
        first_seg = next(t for e, _, t in events if e == "segment")
        lead = events[-1][2] - first_seg

        # a second job: the server has measured its speed now
        t0 = time.time()
        code, up, _ = srv.upload(os.path.basename(clip), audio, "?num_speakers=2")
        second = up["job_id"]
        events2 = follow(srv, second)
        took = events2[-1][2] - t0 if events2 else 0
        etas = [(d["eta_seconds"], t) for e, d, t in events2 if e == "status" and d.get("eta_seconds")]
        check("events: a measured machine gives an ETA", etas and all(e > 0 for e, _ in etas), str(events2[:4]))
        eta_err = None
        if etas:
            eta, at = etas[0]
            eta_err = eta - (events2[-1][2] - at)
        after = scrape(srv)
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    moved = lambda name, **l: value(after, name, **l) - value(before, name, **l)
    check("metrics: jobs_finished_total{completed} +2", moved("colloquy_jobs_finished_total", outcome="completed") == 2,
          str(moved("colloquy_jobs_finished_total", outcome="completed")))
    check("metrics: jobs{status=completed} 2", value(after, "colloquy_jobs", status="completed") == 2, "")
    check("metrics: queue empty, nothing active",
          value(after, "colloquy_queue_depth") == 0 and value(after, "colloquy_active_jobs") == 0, "")
    # the preprocessor has nothing to do for 16 kHz audio without trimming or
    # normalising (the VAD runs in the transcriber): it passes the jobs on in
    # under a microsecond, so its busy seconds need not move
    for stage in ["decoding", "preprocessing", "transcription", "diarization", "alignment"]:
        busy = moved("colloquy_stage_busy_seconds_total", stage=stage)
        check(f"metrics: {stage} passed 2 jobs on" + ("" if stage == "preprocessing" else " and was busy"),
              moved("colloquy_stage_jobs_total", stage=stage, outcome="out") == 2
              and (stage == "preprocessing" or busy > 0),
              f"{moved('colloquy_stage_jobs_total', stage=stage, outcome='out')} out, {busy} s busy")
    check("metrics: job duration and real-time factor histograms counted 2",
          moved("colloquy_job_duration_seconds_count") == 2 and moved("colloquy_job_real_time_factor_count") == 2, "")
    check("metrics: audio seconds processed", moved("colloquy_audio_processed_seconds_total") > 10, "")
    check("metrics: uploads counted by route pattern",
          moved("colloquy_http_requests_total", route="/api/upload", method="POST", status="200") == 2, "")
    check("metrics: event streams counted under their pattern, not their ids",
          moved("colloquy_http_requests_total", route="/api/jobs/{id}/events", method="GET", status="200") == 2
          and not any("job_id" in str(k) or first in str(k) for k in after), "")
    rtf = value(after, "colloquy_job_real_time_factor_sum") / max(1, value(after, "colloquy_job_real_time_factor_count"))
    check.finish("live", f"{len(events)} events for {os.path.basename(clip)} ({len(segs)} partial segments, "
                 f"the first {lead:.2f} s before done); second job {took:.1f} s, first ETA off by "
                 f"{eta_err if eta_err is None else round(eta_err, 1)} s; mean real-time factor {rtf:.3f}; "
                 f"{len(after)} series")


if __name__ == "__main__":
    main()
