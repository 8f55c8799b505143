#!/usr/bin/env python3
"""The official `openai` Python client, unchanged, against `colloquy serve`
(run by `make test`).

Starts the real server with API keys on (a key made by `colloquy keys
create`, given to the client as its api_key), points
`OpenAI(base_url=.../v1)` at it and calls
`client.audio.transcriptions.create(model="whisper-1", file=...)` on conv1
(../shared/data/synthetic; without it tests/data/two_voices.flac) with each
response format: json, text, srt, vtt, verbose_json (with word timestamps)
and diarized_json (two speakers, `num_speakers` through `extra_body`), a
`prompt` (applied: the text changes) and `language="de"` (400 on the
English-only model); then
`client.models.list()`, a wrong key (AuthenticationError) and a bad
response_format (BadRequestError). Each transcription is a job the server
lists. Ends with `openai: PASS ...` or `openai: FAIL ...` (exit 1).
"""

import json
import os
import shutil
import subprocess
import tempfile

from suite import BIN, ROOT, Checks, Server, venv_python

PINS = ["openai==3.60.0"]
check = Checks()

CLIENT = r"""
import json, sys, openai
url, key, path = sys.argv[1:4]
client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
out = {}
def run(fmt, **kw):
    with open(path, "rb") as f:
        return client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt, **kw)
out["json"] = run("json").text
out["text"] = run("text")
out["srt"] = run("srt")
out["vtt"] = run("vtt")
v = run("verbose_json", timestamp_granularities=["word", "segment"])
out["verbose"] = {"language": v.language, "duration": v.duration, "segments": len(v.segments or []),
                  "words": [(w.word, w.start, w.end) for w in (v.words or [])],
                  "stats": [(s.avg_logprob, len(s.tokens), s.compression_ratio) for s in (v.segments or [])]}
d = run("diarized_json", extra_body={"num_speakers": 2})
d = d if isinstance(d, dict) else d.model_dump()
out["diarized"] = [(s["speaker"], s["start"], s["end"], s["text"], s["type"]) for s in d["segments"]]
out["prompted"] = run("text", prompt="um, uh, so like, good morning, uh, thanks for joining")
try:
    run("json", language="de")
    out["german"] = "accepted"
except openai.BadRequestError as e:
    out["german"] = e.body
out["models"] = [m.id for m in client.models.list().data]
try:
    openai.OpenAI(base_url=url + "/v1", api_key="cq_wrong", max_retries=0).models.list()
    out["wrong_key"] = "accepted"
except openai.AuthenticationError as e:
    out["wrong_key"] = e.body
try:
    run("yaml")
    out["bad_format"] = "accepted"
except openai.BadRequestError as e:
    out["bad_format"] = e.body
print(json.dumps({"openai": openai.__version__, **out}))
"""


def main():
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.mp3")
    clip = conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac")
    py = venv_python("openai-venv", PINS)
    tmp = tempfile.mkdtemp(prefix="colloquy-openai-")
    storage = os.path.join(tmp, "storage")
    try:
        made = subprocess.run([BIN, "keys", "--storage", storage, "create", "--name", "openai-client"],
                              capture_output=True, text=True, check=True)
        key = made.stdout.strip().splitlines()[-1]
        srv = Server(storage, {"COLLOQUY__SERVER__AUTH": "keys"}, suite="openai")
        try:
            url = f"http://{srv.addr[0]}:{srv.addr[1]}"
            run = subprocess.run([py, "-c", CLIENT, url, key, clip], capture_output=True, text=True)
            check("the client ran", run.returncode == 0, run.stderr[-2000:])
            if run.returncode != 0:
                check.finish("openai", "the client failed")
            out = json.loads(run.stdout)
            code, listing, _ = srv.request("GET", "/api/jobs", headers={"Authorization": f"Bearer {key}"})
            jobs = listing.get("jobs", [])
        finally:
            srv.stop()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    text = out["json"].lower()
    check("json: the transcript", all(w in text for w in ["budget", "travel", "conference"]), out["json"][:200])
    check("text: the same text", out["text"].strip().lower() == text.strip(), out["text"][:200])
    check("srt: numbered cues", out["srt"].startswith("1\n00:00:") and " --> " in out["srt"], out["srt"][:120])
    check("vtt: WEBVTT with voices", out["vtt"].startswith("WEBVTT") and "<v Speaker " in out["vtt"], out["vtt"][:120])
    v = out["verbose"]
    words = v["words"]
    check("verbose_json: language, duration, segments", v["language"] == "en" and v["duration"] > 10 and v["segments"] > 0,
          str({k: v[k] for k in ("language", "duration", "segments")}))
    check("verbose_json: word timestamps in order, inside the audio",
          len(words) > 20 and all(0 <= s <= e <= v["duration"] + 0.01 for _, s, e in words)
          and all(a[1] <= b[1] for a, b in zip(words, words[1:])), str(words[:5]))
    check("verbose_json: each segment with its tokens and decoding statistics",
          v["stats"] and all(lp < 0 and n > 0 and cr > 0 for lp, n, cr in v["stats"]), str(v["stats"][:3]))
    d = out["diarized"]
    speakers = sorted({s for s, *_ in d})
    check("diarized_json: two speakers, typed segments in order",
          len(speakers) == 2 and all(t == "transcript.text.segment" for *_, t in d)
          and all(a[1] <= b[1] for a, b in zip(d, d[1:])), f"{speakers} {d[:2]}")
    check("prompt: applied to the request's job (the text changes, the words stay)",
          out["prompted"].strip().lower() != text.strip() and "budget" in out["prompted"].lower(),
          out["prompted"][:120])
    check("language: one the served English-only model cannot do is a 400 naming it",
          isinstance(out["german"], dict) and "English-only" in json.dumps(out["german"]), str(out["german"]))
    check("models: whisper-1 and the served model", "whisper-1" in out["models"] and len(out["models"]) >= 2,
          str(out["models"]))
    check("a wrong key: AuthenticationError in OpenAI's shape",
          isinstance(out["wrong_key"], dict) and "message" in out["wrong_key"], str(out["wrong_key"]))
    check("a bad response_format: BadRequestError", isinstance(out["bad_format"], dict), str(out["bad_format"]))
    check("every transcription is a listed, completed job", len(jobs) == 7
          and all(j["status"] == "completed" for j in jobs), str([j["status"] for j in jobs]))
    check.finish("openai", f"openai {out['openai']} client: json, text, srt, vtt, verbose_json ({len(words)} words), "
                 f"diarized_json ({len(d)} segments, {len(speakers)} speakers), models ({len(out['models'])}) on "
                 f"{os.path.basename(clip)}; a prompt applied, language=de refused; 7 jobs listed")


if __name__ == "__main__":
    main()
