#!/usr/bin/env python3
"""`schemathesis` against `colloquy serve`'s own `/openapi.json` (make
openapi; run by `make test`).

Starts the real server with API keys on (an admin key made by `colloquy keys
create --admin`) on a temp storage folder, then:

1. fuzzing: `schemathesis run http://127.0.0.1:PORT/openapi.json` with the
   key, every phase (examples, coverage, fuzzing, stateful through the
   document's links), a fixed seed and OPENAPI_EXAMPLES (default 100) test
   cases per operation; checks: no 5xx, documented status codes, content
   types, headers and bodies (response_schema_conformance), and that an
   operation that needs a key refuses a request without one (ignored_auth).
   Its garbage uploads are answered 4xx, or become jobs that fail as bad
   input (422 from their results);
2. the job lifecycle, which garbage cannot reach: schemathesis's own
   Python API sends hand-picked cases (a real clip uploaded; status,
   results in every format, with names; a job that fails as bad input; a
   result asked for too early; /v1/audio/transcriptions with every
   response_format; keys created, listed, revoked; a job deleted) and
   validates each response against the document with the same checks;
3. the same fuzzing, half the examples, against a server with keys off
   (`server.auth = none`, loopback), sending no key.

Uploads are not rate-limited here (`server.uploads_per_minute = 0`), so that
each reaches the handler rather than 429. Ends with `openapi: PASS ...` or
`openapi: FAIL ...` (exit 1); schemathesis's own reports are kept in
target/openapi-schemathesis-{keys,none}.log.
"""

import json
import os
import re
import shutil
import subprocess
import tempfile

from suite import BIN, FORMATS, ROOT, Checks, Server, venv_python

PINS = ["schemathesis==4.32.5"]
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_headers_conformance,response_schema_conformance")
check = Checks()

LIFECYCLE = r"""
import json, sys, time
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance, response_headers_conformance, response_schema_conformance,
    status_code_conformance)

url, key, clip = sys.argv[1:4]
auth = {"Authorization": f"Bearer {key}"}
schema = schemathesis.openapi.from_url(url + "/openapi.json")
checks = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
seen = []

def call(path, method, expect, **kw):
    expect = expect if isinstance(expect, tuple) else (expect,)
    case = schema[path][method].Case(**kw)
    r = case.call(base_url=url, headers=auth, timeout=600)
    try:
        case.validate_response(r, checks=checks, headers=auth)
    except Exception as e:
        raise SystemExit(f"{method} {path} {kw.get('query') or ''}: {r.status_code}: {e}")
    if r.status_code not in expect:
        raise SystemExit(f"{method} {path} {kw}: {r.status_code}, not {expect}: {r.text[:300]}")
    seen.append(f"{method} {path} {r.status_code}")
    return r

def upload(data, **query):
    return call("/api/upload", "POST", 200, body={"file": data}, media_type="multipart/form-data",
                query=query).json()["job_id"]

def wait(job):
    for _ in range(1200):
        st = call("/api/status/{id}", "GET", 200, path_parameters={"id": job}).json()
        if st["status"] in ("completed", "failed"):
            return st
        time.sleep(0.1)
    raise SystemExit(f"job {job} did not finish")

audio = open(clip, "rb").read()
# a result asked for before its job ends: 202 with the job's progress (200
# only if the job was done already: both are validated)
slow = upload(audio, num_speakers=1)
call("/api/results/{id}", "GET", (202, 200), path_parameters={"id": slow})
good = upload(audio, min_speakers=1, max_speakers=2)
assert wait(slow)["status"] == "completed" and wait(good)["status"] == "completed"
for fmt in ["json", "txt", "srt", "vtt", "tsv", "rttm"]:
    call("/api/results/{id}", "GET", 200, path_parameters={"id": good}, query={"format": fmt})
    call("/api/results/{id}", "GET", 200, path_parameters={"id": good},
         query={"format": fmt, "names": json.dumps({"SPEAKER_00": "Dana"})})
call("/api/results/{id}", "GET", 400, path_parameters={"id": good}, query={"names": "[1]"})
bad = upload(b"RIFF\x24\x00\x00\x00WAVEnot really audio" * 10)
assert wait(bad)["status"] == "failed"
call("/api/results/{id}", "GET", 422, path_parameters={"id": bad})
call("/api/jobs", "GET", 200)
for fmt in ["json", "text", "srt", "vtt", "verbose_json", "diarized_json"]:
    call("/v1/audio/transcriptions", "POST", 200, media_type="multipart/form-data",
         body={"file": audio, "model": "whisper-1", "response_format": fmt,
               "timestamp_granularities[]": ["word", "segment"]})
call("/v1/audio/transcriptions", "POST", 400, media_type="multipart/form-data",
     body={"file": audio, "response_format": "yaml"})
call("/v1/audio/transcriptions", "POST", 422, media_type="multipart/form-data",
     body={"file": b"RIFF\x24\x00\x00\x00WAVEnot really audio" * 10})
call("/v1/models", "GET", 200)
made = call("/api/keys", "POST", 201, body={"name": "lifecycle", "admin": False}).json()
call("/api/keys", "GET", 200)
call("/api/keys/{id}", "DELETE", 200, path_parameters={"id": made["id"]})
call("/api/jobs/{id}", "DELETE", 200, path_parameters={"id": good})
call("/api/status/{id}", "GET", 404, path_parameters={"id": good})
call("/health", "GET", 200)
call("/docs/", "GET", 200)
print(json.dumps({"schemathesis": schemathesis.__version__, "cases": seen}))
"""


def fuzz(st, url, key, examples, tmp, name):
    """One `schemathesis run` (with `key`, when given: then also
    ignored_auth); returns (operations, test cases) or None each."""
    cmd = [st, "run", f"{url}/openapi.json", "--checks", CHECKS + (",ignored_auth" if key else ""),
           "--max-examples", str(examples), "--seed", "13", "--workers", "1", "--request-timeout", "120",
           "--no-color"]
    if key:
        cmd += ["--header", f"Authorization: Bearer {key}"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp, timeout=1200)
    out = run.stdout + run.stderr
    with open(os.path.join(ROOT, "target", f"openapi-schemathesis-{name}.log"), "w") as f:
        f.write(out)
    ops = re.search(r"Operations:\s+(\d+) selected / (\d+) total", out)
    cases = re.search(r"Test cases:\s*\n\s*(\d+) generated, (.*)", out)
    check(f"{name}: schemathesis ran every operation", ops is not None and ops.group(1) == ops.group(2),
          out[-3000:])
    check(f"{name}: schemathesis found no failure", run.returncode == 0 and cases is not None
          and re.fullmatch(r"\d+ passed(, \d+ skipped)?", cases.group(2).strip()) is not None, out[-6000:])
    return (ops.group(1) if ops else "?"), (cases.group(1) if cases else "?")


def serve(storage, auth):
    # no upload rate limit: schemathesis sends hundreds of uploads a minute, and
    # each should reach the handler's checks rather than stop at 429
    return Server(storage, {"COLLOQUY__SERVER__AUTH": auth, "COLLOQUY__SERVER__UPLOADS_PER_MINUTE": "0"},
                  suite="openapi")


def main():
    clip = os.path.join(FORMATS, "clip.wav")
    examples = int(os.environ.get("OPENAPI_EXAMPLES", "100"))
    py = venv_python("schemathesis-venv", PINS)
    st = os.path.join(os.path.dirname(py), "schemathesis")
    tmp = tempfile.mkdtemp(prefix="colloquy-openapi-")
    lifecycle = {"cases": []}
    try:
        # keys on, an admin key: every operation, and keys enforced
        storage = os.path.join(tmp, "keys")
        made = subprocess.run([BIN, "keys", "--storage", storage, "create", "--name", "schemathesis", "--admin"],
                              capture_output=True, text=True, check=True)
        key = made.stdout.strip().splitlines()[-1]
        srv = serve(storage, "keys")
        try:
            url = f"http://{srv.addr[0]}:{srv.addr[1]}"
            ops, cases = fuzz(st, url, key, examples, tmp, "keys")
            life = subprocess.run([py, "-c", LIFECYCLE, url, key, clip], capture_output=True, text=True,
                                  cwd=tmp, timeout=1200)
            check("the job lifecycle conforms", life.returncode == 0, (life.stdout + life.stderr)[-3000:])
            if life.returncode == 0:
                lifecycle = json.loads(life.stdout)
            check("keys: the server is still healthy", srv.alive())
        finally:
            srv.stop()
        # keys off (loopback): the same document, no key sent
        srv = serve(os.path.join(tmp, "none"), "none")
        try:
            url = f"http://{srv.addr[0]}:{srv.addr[1]}"
            _, open_cases = fuzz(st, url, None, max(1, examples // 2), tmp, "none")
            check("none: the server is still healthy", srv.alive())
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    figures = (f"schemathesis {PINS[0].split('==')[1]}: {ops} operations; {cases} test cases with keys "
               f"({examples} examples each), {open_cases} without ({max(1, examples // 2)} each), seed 13; "
               f"{len(lifecycle['cases'])} lifecycle cases validated")
    check.finish("openapi", figures)


if __name__ == "__main__":
    main()
