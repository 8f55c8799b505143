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
`client.models.list()`, `model="base"` (another installed model: its job
runs on base), a wrong key (AuthenticationError) and a bad
response_format (BadRequestError). Each transcription is a job the server
lists. Ends with `openai: PASS ...` or `openai: FAIL ...` (exit 1).
"""

import json
import os
import shutil
import subprocess
import tempfile

from suite import BIN, ROOT, Checks, Server, venv_python

PINS = ["openai==3.60.0", "soundfile==0.14.0", "numpy==2.4.6"]
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
# another installed model's own name picks it (its job's result names the model)
out["picked"] = None
if "base" in out["models"]:
    with open(path, "rb") as f:
        r = client.audio.transcriptions.with_raw_response.create(model="base", file=f, response_format="json")
    out["picked"] = {"job": r.headers.get("x-colloquy-job-id"), "text": r.parse().text}
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

# known_speaker_names[] + known_speaker_references[] (OpenAI's diarizing
# model's fields): argv = url, key, audio, then name and clip path pairs
KNOWN = r"""
import base64, json, sys, openai
url, key, path, *pairs = sys.argv[1:]
client = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=600)
names, clips = pairs[0::2], pairs[1::2]
refs = ["data:audio/wav;base64," + base64.b64encode(open(c, "rb").read()).decode() for c in clips]
with open(path, "rb") as f:
    d = client.audio.transcriptions.create(model="gpt-4o-transcribe-diarize", file=f, response_format="diarized_json",
                                           chunking_strategy="auto", known_speaker_names=names,
                                           known_speaker_references=refs)
d = d if isinstance(d, dict) else d.model_dump()
print(json.dumps([(s["speaker"], s["start"], s["end"]) for s in d["segments"]]))
"""


def rttm_turns(path, file_id):
    turns = []
    for line in open(path):
        p = line.split()
        if len(p) > 7 and p[0] == "SPEAKER" and p[1] == file_id:
            turns.append((float(p[3]), float(p[3]) + float(p[4]), p[7]))
    return turns


CUT = r"""
import sys, soundfile
src, start, seconds, dst = sys.argv[1:5]
info = soundfile.info(src)
assert info.samplerate == 16000 and info.channels == 1, f"{src}: not 16 kHz mono"
a = int(float(start) * 16000)
audio, _ = soundfile.read(src, start=a, stop=a + int(float(seconds) * 16000), dtype="float32")
soundfile.write(dst, audio, 16000, subtype="PCM_16")
"""


def cut(py, src, start, seconds, dst):
    """`seconds` of `src` (16 kHz mono) from `start` as WAV (soundfile, in the check's venv)."""
    subprocess.run([py, "-c", CUT, src, str(start), str(seconds), dst], check=True)


def known_case(py, tmp):
    """The recording, (name, clip) pairs, and the reference turns to score
    against: AMI dev01 with its two speakers' clips cut from dev00 (the same
    people in another excerpt), else tests/data/two_voices.flac with clips
    cut from itself (no reference to score against)."""
    data = os.path.join(ROOT, "..", "shared", "data", "diarization")
    if os.path.exists(os.path.join(data, "ami_dev01.wav")):
        rttm = os.path.join(data, "ami.rttm")
        pairs = []
        for name in ("MEE009", "MEE012"):
            # the speaker's longest turn in dev00, inside its edges (no overlap there)
            a, b, _ = max((t for t in rttm_turns(rttm, "ami_dev00") if t[2] == name), key=lambda t: t[1] - t[0])
            clip = os.path.join(tmp, f"{name}.wav")
            cut(py, os.path.join(data, "ami_dev00.wav"), a + 0.3, min(10.0, b - a - 0.6), clip)
            pairs.append((name, clip))
        return os.path.join(data, "ami_dev01.wav"), pairs, rttm_turns(rttm, "ami_dev01")
    flac = os.path.join(ROOT, "tests", "data", "two_voices.flac")
    rttm = os.path.join(ROOT, "tests", "data", "two_voices.rttm")
    pairs = []
    for a, b, name in rttm_turns(rttm, "two_voices"):
        if name not in dict(pairs) and b - a >= 2.5:
            clip = os.path.join(tmp, f"{name}.wav")
            cut(py, flac, a + 0.1, b - a - 0.2, clip)
            pairs.append((name, clip))
    return flac, pairs, None


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
            audio, pairs, ref_turns = known_case(py, tmp)
            args = [a for p in pairs for a in p]
            known = subprocess.run([py, "-c", KNOWN, url, key, audio, *args], capture_output=True, text=True)
            check("known speakers: the client ran", known.returncode == 0, known.stderr[-2000:])
            named = json.loads(known.stdout) if known.returncode == 0 else []
            auth = {"Authorization": f"Bearer {key}"}
            code, listing, _ = srv.request("GET", "/api/jobs", headers=auth)
            jobs = listing.get("jobs", [])
            picked = out.get("picked")
            if picked:
                _, picked["result"], _ = srv.request("GET", f"/api/results/{picked['job']}", headers=auth)
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
    names = [n for n, _ in pairs]
    shown = {s for s, *_ in named}
    check(f"known_speaker_names[] {names} with their clips: the matching voices carry the names",
          bool(shown & set(names)), str(named[:4]))
    share = ""
    if ref_turns:
        # each named segment against the reference speaker who covers most of it
        def truth(a, b):
            cover = {}
            for s0, s1, who in ref_turns:
                cover[who] = cover.get(who, 0.0) + max(0.0, min(b, s1) - max(a, s0))
            return max(cover, key=cover.get) if cover and max(cover.values()) > 0 else None
        scored = [(name, truth(a, b), b - a) for name, a, b in named if name in names]
        right = sum(d for n, t, d in scored if n == t)
        total = sum(d for *_, d in scored) or 1.0
        share = f", {right / total:.0%} of the named seconds right"
        check(f"both names used, each mostly on its own person's speech ({right / total:.0%} of the named seconds)",
              shown >= set(names) and right / total >= 0.7, str(named))
    picked = out.get("picked")
    if picked:
        served = (picked.get("result") or {}).get("provider", {}).get("whisper_model")
        check("model=base (installed, not the served one) picks it: its job ran on base",
              served == "whisper-base" and "budget" in picked["text"].lower(), f"{served} {picked['text'][:120]}")
    listed = 8 + (1 if picked else 0)
    check("every transcription is a listed, completed job", len(jobs) == listed
          and all(j["status"] == "completed" for j in jobs), str([j["status"] for j in jobs]))
    check.finish("openai", f"openai {out['openai']} client: json, text, srt, vtt, verbose_json ({len(words)} words), "
                 f"diarized_json ({len(d)} segments, {len(speakers)} speakers), models ({len(out['models'])}) on "
                 f"{os.path.basename(clip)}; a prompt applied, language=de refused; known speakers named by clips in "
                 f"{os.path.basename(audio)} ({', '.join(sorted(shown))}{share}); "
                 f"{'model=base picked base; ' if picked else ''}{listed} jobs listed")


if __name__ == "__main__":
    main()
