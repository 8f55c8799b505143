#!/usr/bin/env python3
"""Every export format of a two-speaker recording, read back by parsers that
are not ours (run by `make test`).

Starts the real server, transcribes conv1.mp3 from ../shared/data/synthetic
(or, without it, tests/data/two_voices.flac) with 2 speakers, and fetches
`GET /api/results/{id}?format=` json, txt, srt, vtt, tsv and rttm, with one
speaker renamed through `names`. Then:
- SRT with `pysrt`, VTT with `webvtt-py` (PyPI, pinned, in a venv under
  target/): every cue is one speaker's (the name before the text in SRT, the
  `<v>` voice in VTT), the cues' words in order are the result's words, at
  most two lines and ~7 s each, times in order;
- TSV with Python's `csv`: one row per word of the result, same times;
- TXT: one `[m:ss - m:ss] Name: text` paragraph per speaker turn;
- RTTM: ten fields per line, the result's speaker turns;
- JSON: the stored result.
Ends with `exports: PASS ...` or `exports: FAIL ...` (exit 1).
"""

import csv
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import urllib.parse

from suite import ROOT, Checks, Server, venv_python

PINS = ["pysrt==1.1.2", "webvtt-py==0.6.0"]
check = Checks()


# Runs inside the venv: parses the SRT and VTT files, prints JSON.
PARSE = r"""
import json, sys, pysrt, webvtt
srt = [{"start": c.start.ordinal / 1000, "end": c.end.ordinal / 1000, "lines": c.text.split("\n")}
       for c in pysrt.open(sys.argv[1], encoding="utf-8")]
vtt = [{"start": c.start_in_seconds, "end": c.end_in_seconds, "voice": c.voice, "text": c.text}
       for c in webvtt.read(sys.argv[2])]
print(json.dumps({"srt": srt, "vtt": vtt}))
"""


def first_difference(got, want):
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return f"at {i}: {a} != {b} ({len(got)} vs {len(want)})"
    return f"lengths {len(got)} vs {len(want)}"


def words_of(text):
    return re.sub(r"\s+", " ", text).strip().split(" ") if text.strip() else []


def main():
    conv1 = os.path.join(ROOT, "..", "shared", "data", "synthetic", "conv1.mp3")
    clip = conv1 if os.path.exists(conv1) else os.path.join(ROOT, "tests", "data", "two_voices.flac")
    py = venv_python("exports-venv", PINS)
    tmp = tempfile.mkdtemp(prefix="colloquy-exports-")
    try:
        srv = Server(os.path.join(tmp, "storage"), suite="exports")
        try:
            code, up, _ = srv.upload(os.path.basename(clip), open(clip, "rb").read(), query="?num_speakers=2")
            check("upload", code == 200, f"{code} {up}")
            job = srv.wait_jobs([up["job_id"]]).get(up["job_id"], {})
            check("job completed", job.get("status") == "completed", str(job))
            names = {"SPEAKER_00": "Dana Ng"}
            q = urllib.parse.quote(json.dumps(names))
            got = {}
            for fmt in ["json", "txt", "srt", "vtt", "tsv", "rttm"]:
                c = srv.request_raw("GET", f"/api/results/{up['job_id']}?format={fmt}&names={q}")
                check(f"{fmt}: 200", c[0] == 200, str(c[0]))
                got[fmt] = c[1].decode("utf-8")
        finally:
            srv.stop()
        result = json.loads(got["json"])
        label = {"SPEAKER_00": "Dana Ng"}
        name_of = lambda s: label.get(s) or f"Speaker {int(s.split('_')[1]) + 1}"
        words = [(w["word"].strip(), name_of(u["speaker"]), w["start"], w["end"])
                 for u in result["aligned_segments"] for w in u["words"] if w["word"].strip()]
        # the words as text shows them: Whisper's pieces joined ("10" + "%" is "10%")
        tokens = [(t, name_of(u["speaker"])) for u in result["aligned_segments"]
                  for t in words_of("".join(w["word"] for w in u["words"]))]
        check("the result has two speakers and words", result["num_speakers"] == 2 and len(words) > 20,
              f"{result['num_speakers']} speakers, {len(words)} words")
        for fmt, ext in [("srt", "srt"), ("vtt", "vtt")]:
            open(os.path.join(tmp, f"x.{ext}"), "w").write(got[fmt])
        parsed = json.loads(subprocess.run([py, "-c", PARSE, os.path.join(tmp, "x.srt"), os.path.join(tmp, "x.vtt")],
                                           capture_output=True, text=True, check=True).stdout)
        # SRT: "Name: words", one speaker per cue, the words in order
        srt_words, prev = [], -1.0
        for c in parsed["srt"]:
            first = c["lines"][0]
            name = next((n for n in ["Dana Ng", "Speaker 2"] if first.startswith(n + ": ")), None)
            check(f"srt cue at {c['start']}: a speaker's name", name is not None, first)
            if name is None:
                continue
            text = " ".join(c["lines"])[len(name) + 2:]
            srt_words += [(w, name) for w in words_of(text)]
            check(f"srt cue at {c['start']}: at most two lines, 7 s, in order",
                  len(c["lines"]) <= 2 and c["end"] - c["start"] <= 7.5 and c["start"] >= prev, str(c))
            prev = c["start"]
        check("srt: the cues' words are the result's words, each under its speaker",
              srt_words == tokens, first_difference(srt_words, tokens))
        vtt_words = [(w, c["voice"]) for c in parsed["vtt"] for w in words_of(c["text"])]
        check("vtt: voices and words are the result's", vtt_words == tokens,
              first_difference(vtt_words, tokens))
        check("vtt: as many cues as srt", len(parsed["vtt"]) == len(parsed["srt"]))
        rows = list(csv.DictReader(io.StringIO(got["tsv"]), delimiter="\t"))
        check("tsv: one row per word, same words, speakers and times",
              [(r["word"], r["speaker"], float(r["start"]), float(r["end"])) for r in rows]
              == [(w, n, round(s, 3), round(e, 3)) for w, n, s, e in words], f"{rows[:3]}")
        paras = [p for p in got["txt"].strip().split("\n\n")]
        check("txt: one paragraph per turn, [m:ss - m:ss] Name: text",
              all(re.match(r"^\[\d+:\d\d - \d+:\d\d\] (Dana Ng|Speaker 2): \S", p) for p in paras), got["txt"][:300])
        txt_words = [w for p in paras for w in words_of(p.split(": ", 1)[1])]
        texts = [t for u in result["aligned_segments"] for t in words_of(u["text"])]
        check("txt: every word of the utterances' text", txt_words == texts, first_difference(txt_words, texts))
        lines = [ln.split() for ln in got["rttm"].strip().splitlines()]
        turns = [(t["speaker"], round(t["start"], 3), round(t["end"] - t["start"], 3)) for t in result["speaker_turns"]]
        check("rttm: ten fields, the result's turns",
              all(len(ln) == 10 and ln[0] == "SPEAKER" for ln in lines)
              and [(ln[7], float(ln[3]), float(ln[4])) for ln in lines] == turns, f"{lines[:2]} vs {turns[:2]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    check.finish("exports", f"{os.path.basename(clip)}: {len(words)} words, {len(parsed['srt'])} SRT/VTT cues, "
                 f"{len(rows)} TSV rows, {len(paras)} TXT paragraphs, {len(lines)} RTTM turns")


if __name__ == "__main__":
    main()
