#!/usr/bin/env python3
"""make chaos: kill -9 at random moments, and a full disk.

Kills (CHAOS_KILLS, default 100): the real server (real models) runs on one
storage folder; before each kill the suite tops the jobs in flight up to 5
(at least one new upload each round, of a 4 s or a 10 s clip, some still
being sent when the kill comes), waits a random 0-6 s (so kills land in
uploads, decoding, transcription, diarization, alignment and result
writes; the steps of the jobs processing at each kill are counted), sends
SIGKILL and starts the server again on the same folder. Afterwards it lets the last
server finish and checks: every upload that was answered 200 completed, once
(one record, one result file, nothing left queued or processing); no job
appears twice; no temp folder and no half-written result (`*.tmp`) is left.

Disk full: a 24 MB tmpfs is the storage folder (needs root, as CI has);
uploads of 3 MB each until the disk is full must get 507 (never 500), leave
no partial file, and the jobs accepted before it must still be readable
after a restart.

Ends with one line: `chaos: PASS ...` or `chaos: FAIL ...` (exit 1).
"""

import os
import random
import shutil
import subprocess
import tempfile
import threading
import time
import wave

from suite import FORMATS, Checks, Server

check = Checks()
ENV = {"COLLOQUY__SERVER__UPLOADS_PER_MINUTE": "0"}


def clip_of(seconds):
    """A WAV of `seconds`: the 4 s test clip repeated."""
    with wave.open(os.path.join(FORMATS, "clip.wav"), "rb") as w:
        params = w.getparams()
        frames = w.readframes(w.getnframes())
    want = int(seconds * params.framerate) * params.sampwidth
    data = (frames * (want // len(frames) + 1))[:want]
    path = tempfile.mktemp(suffix=".wav")
    with wave.open(path, "wb") as w:
        w.setparams(params)
        w.writeframes(data)
    body = open(path, "rb").read()
    os.remove(path)
    return body


def kills(tmp, rnd, count):
    storage = os.path.join(tmp, "storage")
    clips = [clip_of(4), clip_of(10)]
    moments = {}
    accepted = set()
    lock = threading.Lock()
    srv = Server(storage, ENV, suite="chaos")
    t0 = time.time()
    uploads_cut = 0

    def send(data):
        nonlocal uploads_cut
        try:
            code, body, _ = srv.upload("chaos.wav", data)
            if code == 200:
                with lock:
                    accepted.add(body["job_id"])
        except OSError:
            with lock:
                uploads_cut += 1  # cut by a kill: never acknowledged

    for k in range(count):
        # jobs in flight: those accepted and not finished
        try:
            code, listing, _ = srv.request("GET", "/api/jobs", timeout=10)
            live = sum(1 for j in listing.get("jobs", []) if j["status"] in ("queued", "processing"))
        except OSError:
            live = 0
        # at least one upload each round, so that some kills land in uploads
        senders = [threading.Thread(target=send, args=(rnd.choice(clips),)) for _ in range(max(1, 5 - live))]
        for t in senders:
            t.start()
        time.sleep(rnd.uniform(0, 6))
        try:
            _, listing, _ = srv.request("GET", "/api/jobs", timeout=5)
            steps = sorted({j["step"] for j in listing.get("jobs", []) if j["status"] == "processing"})
        except OSError:
            steps = []
        for step in steps or ["no job processing"]:
            moments[step] = moments.get(step, 0) + 1
        srv.kill9()
        for t in senders:
            t.join()
        srv = Server(storage, ENV, suite="chaos")
        if (k + 1) % 10 == 0:
            print(f"  {k + 1} kills, {len(accepted)} uploads acknowledged, {uploads_cut} cut, "
                  f"{time.time() - t0:.0f} s", flush=True)
    # let the last server finish everything
    deadline = time.time() + 900
    while time.time() < deadline:
        code, listing, _ = srv.request("GET", "/api/jobs")
        jobs = listing.get("jobs", [])
        if all(j["status"] in ("completed", "failed") for j in jobs):
            break
        time.sleep(1)
    code, listing, _ = srv.request("GET", "/api/jobs")
    jobs = listing.get("jobs", [])
    ids = [j["job_id"] for j in jobs]
    by_id = {j["job_id"]: j for j in jobs}
    check("no job listed twice", len(ids) == len(set(ids)), f"{len(ids)} records, {len(set(ids))} ids")
    missing = [i for i in accepted if i not in by_id]
    check("every acknowledged upload has its job", not missing, f"{len(missing)} lost: {missing[:3]}")
    unfinished = [i for i in accepted if by_id.get(i, {}).get("status") != "completed"]
    check("every acknowledged job completed", not unfinished,
          f"{len(unfinished)}: {[(i, by_id.get(i, {}).get('status'), by_id.get(i, {}).get('error')) for i in unfinished[:3]]}")
    results = os.listdir(os.path.join(storage, "results"))
    completed = [j["job_id"] for j in jobs if j["status"] == "completed"]
    check("one result file per completed job, none half-written",
          sorted(results) == sorted(f"{i}.json" for i in completed),
          f"{len(results)} files for {len(completed)} completed jobs; tmp: {[r for r in results if r.endswith('.tmp')]}")
    temp = os.listdir(os.path.join(storage, "temp"))
    check("no temp folder left", temp == [], str(temp))
    check("server up at the end", srv.alive())
    attempts = sorted(j.get("attempts", 0) for j in jobs)
    srv.stop()
    took = time.time() - t0
    print(f"  {count} kills in {took:.0f} s: {len(accepted)} acknowledged uploads, {uploads_cut} cut by a kill, "
          f"{len(jobs)} jobs ({len(completed)} completed), admissions per job up to {attempts[-1] if attempts else 0}",
          flush=True)
    print("  steps of the jobs processing at each kill: "
          + ", ".join(f"{k} {v}" for k, v in sorted(moments.items(), key=lambda kv: -kv[1])), flush=True)
    return count, len(accepted), len(completed), uploads_cut, took


def disk_full(tmp):
    mnt = os.path.join(tmp, "small")
    os.makedirs(mnt)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", mnt], capture_output=True, text=True)
    if r.returncode != 0:
        check("disk full: a 24 MB tmpfs could be mounted (needs root)", False, r.stderr.strip())
        return None
    storage = os.path.join(mnt, "storage")
    try:
        srv = Server(storage, ENV, suite="chaos")
        data = clip_of(95)  # about 3 MB
        codes = []
        accepted = []
        for _ in range(12):
            code, body, _ = srv.upload("big.wav", data)
            codes.append(code)
            if code == 200:
                accepted.append(body["job_id"])
        check("disk full: uploads past the space get 507", 507 in codes, str(codes))
        check("disk full: never 500", 500 not in codes, str(codes))
        time.sleep(1)
        # the refused uploads left nothing: every temp folder is an accepted job's
        temp = os.listdir(os.path.join(storage, "temp"))
        check("disk full: no partial upload left", set(temp) <= set(accepted), f"{temp} vs {accepted}")
        srv.kill9()
        srv = Server(storage, ENV, suite="chaos")
        code, listing, _ = srv.request("GET", "/api/jobs")
        listed = {j["job_id"] for j in listing.get("jobs", [])}
        check("disk full: after a restart every accepted job is still there", code == 200 and set(accepted) <= listed,
              f"{code} {len(listed)} listed, {len(accepted)} accepted")
        check("disk full: server up", srv.alive())
        srv.stop()
        print(f"  disk full: answers {codes}", flush=True)
        return codes
    finally:
        subprocess.run(["umount", "-l", mnt])


def main():
    rnd = random.Random(int(os.environ.get("CHAOS_SEED", "7")))
    count = int(os.environ.get("CHAOS_KILLS", "100"))
    tmp = tempfile.mkdtemp(prefix="colloquy-chaos-")
    try:
        print(f"{count} kill -9 while 5 jobs run", flush=True)
        n, acked, completed, cut, took = kills(tmp, rnd, count)
        print("disk full", flush=True)
        codes = disk_full(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish("chaos", f"{n} kills in {took:.0f} s: {acked} acknowledged uploads all completed once "
                 f"({completed} jobs completed, {cut} uploads cut by a kill); disk full: "
                 f"{codes.count(507) if codes else 'not run'} uploads answered 507")


if __name__ == "__main__":
    main()
