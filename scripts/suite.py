"""What the server suites (make hostile, make chaos, make load) share: a
`colloquy serve` process on a private storage folder, a small HTTP client
over http.client, multipart bodies, and named checks that end in one
`<suite>: PASS|FAIL ...` line. Standard library only."""

import http.client
import json
import os
import resource
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.environ.get("COLLOQUY_BIN", os.path.join(ROOT, "target", "release", "colloquy"))
FORMATS = os.path.join(ROOT, "tests", "data", "formats")


class Checks:
    """Named pass/fail checks; failures are printed as they happen."""

    def __init__(self):
        self.passed = 0
        self.failures = []

    def __call__(self, name, ok, detail=""):
        if ok:
            self.passed += 1
        else:
            self.failures.append(f"{name}: {detail}")
            print(f"  FAIL {name}: {detail}", flush=True)
        return ok

    def total(self):
        return self.passed + len(self.failures)

    def finish(self, suite, figures):
        """The suite's last line; exit 1 on any failure."""
        if self.failures:
            print(f"{suite}: FAIL {len(self.failures)} of {self.total()} checks; {figures}")
            for f in self.failures:
                print(f"  - {f}")
            sys.exit(1)
        print(f"{suite}: PASS {self.total()} checks; {figures}")


class Server:
    """`colloquy serve` on a free port with `storage` (its log beside it as
    `<storage>.log`); `nofile` lowers its file descriptor limit; `env` adds
    COLLOQUY__... settings."""

    def __init__(self, storage, env=None, nofile=None, suite="server", port=0):
        self.storage = storage
        full_env = dict(os.environ)
        full_env.update({"COLLOQUY__SERVER__BIND": "127.0.0.1", "COLLOQUY_LOG": "warn"})
        full_env.update(env or {})

        def limit():
            if nofile:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.log = open(storage + ".log", "a")
        self.proc = subprocess.Popen(
            [BIN, "serve", "--port", str(port), "--storage", storage],
            stdout=subprocess.PIPE, stderr=self.log, env=full_env, preexec_fn=limit, text=True)
        line = self.proc.stdout.readline()
        prefix = "colloquy listening on http://"
        if not line.startswith(prefix):
            raise SystemExit(f"{suite}: FAIL the server did not start: {line!r} (see {storage}.log)")
        host, port = line.strip()[len(prefix):].rsplit(":", 1)
        self.addr = (host, int(port))

    def kill9(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()

    def alive(self):
        try:
            code, body, _ = self.request("GET", "/health")
            return self.proc.poll() is None and code == 200 and body.get("status") == "healthy"
        except OSError:
            return False

    def request_raw(self, method, path, body=b"", headers=None, timeout=60):
        """(status, body bytes, headers)."""
        c = http.client.HTTPConnection(*self.addr, timeout=timeout)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            c.close()

    def request(self, method, path, body=b"", headers=None, timeout=60):
        """(status, JSON body or {"raw": ...}, headers)."""
        status, raw, headers = self.request_raw(method, path, body, headers, timeout)
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"raw": raw[:200].decode("latin1")}
        return status, data, headers

    def upload(self, name, data, query="", headers=None, field="file"):
        ct, body = multipart(name, data, field)
        h = {"Content-Type": ct}
        h.update(headers or {})
        return self.request("POST", f"/api/upload{query}", body, h)

    def temp_entries(self):
        try:
            return sorted(os.listdir(os.path.join(self.storage, "temp")))
        except FileNotFoundError:
            return []

    def wait_jobs(self, ids, seconds=600):
        """Polls until every job is finished; returns {id: status record}."""
        deadline = time.time() + seconds
        done = {}
        while len(done) < len(ids) and time.time() < deadline:
            for i in ids:
                if i in done:
                    continue
                code, st, _ = self.request("GET", f"/api/status/{i}")
                if code == 200 and st.get("status") in ("completed", "failed"):
                    done[i] = st
            time.sleep(0.2)
        return done


def multipart(name, data, field="file"):
    b = "hostile-boundary-5b1c"
    head = (f'--{b}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode()
    return f"multipart/form-data; boundary={b}", head + data + f"\r\n--{b}--\r\n".encode()




def venv_python(name, pins):
    """The python of a venv under target/<name> with exactly `pins`
    installed (made again when the pins change)."""
    venv = os.path.join(ROOT, "target", name)
    py = os.path.join(venv, "bin", "python")
    stamp = os.path.join(venv, "pins.txt")
    if not (os.path.exists(py) and os.path.exists(stamp) and open(stamp).read() == "\n".join(pins)):
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", *pins], check=True)
        open(stamp, "w").write("\n".join(pins))
    return py
